// Small typed helpers over the native Tensor class and the op dispatcher.
import { addon, DwcError, type DType, type NativeTensor, type OpInputs, type OpOptions } from './native.js';

export type Tensor = NativeTensor;

/** Native errors come back as plain Errors with a `code`; give them our class. */
export function asDwcError(err: unknown): unknown {
  const e = err as Error & { code?: string };
  if (e && typeof e.code === 'string' && e.code.startsWith('DWC_') && !(e instanceof DwcError)) {
    return new DwcError(e.message, e.code);
  }
  return err;
}

/** A float32 (default) or int32 tensor with a copy of `data` (zeros if omitted). */
export function tensor(data: ArrayLike<number> | Float32Array | Int32Array | undefined, shape: number[], dtype: DType = 'float32'): Tensor {
  const T = addon().Tensor;
  try {
    if (data === undefined) return new T(dtype, shape);
    const typed =
      dtype === 'float32'
        ? data instanceof Float32Array
          ? data
          : Float32Array.from(data as ArrayLike<number>)
        : data instanceof Int32Array
          ? data
          : Int32Array.from(data as ArrayLike<number>);
    return new T(dtype, shape, typed);
  } catch (err) {
    throw asDwcError(err);
  }
}

export function runOp(name: string, inputs: OpInputs = {}, options: OpOptions = {}): Record<string, Tensor> {
  try {
    return addon().runOp(name, inputs, options);
  } catch (err) {
    throw asDwcError(err);
  }
}

export async function runOpAsync(name: string, inputs: OpInputs = {}, options: OpOptions = {}): Promise<Record<string, Tensor>> {
  try {
    return await addon().runOpAsync(name, inputs, options);
  } catch (err) {
    throw asDwcError(err);
  }
}
