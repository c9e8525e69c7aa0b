// `--precision fp32|bf16|fp16` (issue 12 item 3, issue 15 item 2; docs/PERFORMANCE.md "bf16",
// docs/CUDA.md "Precision on the GPU"): one check and one switch for train, eval, search, features
// and bench. On the CPU bf16 is allowed only where the CPU has AVX512_BF16 or AMX (and the bf16
// kernels exist); anywhere else it is an error that says why, never a silent fp32 run or a slow
// emulation. fp16 runs on the GPU only (`--device cuda`), with dynamic loss scaling in the training
// step. bf16 / fp16 mean what torch.autocast does: GEMMs and convolutions take 16-bit operands with
// fp32 accumulation; master weights, Adam, losses, softmaxes and normalisations stay fp32.
// The CPU's precision (setKernels) and the CUDA backends' (setDevicePrecision) are separate
// process-wide switches: a run on `--device cuda` sets the GPU's and leaves the CPU at fp32.
import { addon, DwcError } from './native.js';

export type Precision = 'fp32' | 'bf16' | 'fp16';
export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16', 'fp16'];

const onGpu = (device: string | undefined): boolean => device !== undefined && /^cuda(:\d+)?$/.test(device);

type DevicePrecisionFn = (p?: string) => string;
function devicePrecisionFn(): DevicePrecisionFn | undefined {
  const f = addon().setDevicePrecision;
  return typeof f === 'function' ? (f as DevicePrecisionFn) : undefined;
}

/**
 * Returns the precision to run (fp32 when not given) on `device` ('cpu' when not given); throws a
 * DwcError naming the reason otherwise: an unknown name, fp16 without a CUDA device, bf16 on a CPU
 * without the bf16 kernels. (Whether the CUDA device exists is checked where the model is made.)
 */
export function checkPrecision(precision: string | undefined, device?: string): Precision {
  const p = precision ?? 'fp32';
  if (!(PRECISIONS as readonly string[]).includes(p)) {
    throw new DwcError(`'--precision' must be fp32, bf16 or fp16, got '${p}'`, 'DWC_BAD_ARGUMENT');
  }
  if (onGpu(device)) {
    if (p !== 'fp32' && !devicePrecisionFn()) throw new DwcError(`--precision ${p} on ${device}: this addon has no GPU precision switch (rebuild it)`, 'DWC_UNSUPPORTED');
    return p as Precision;
  }
  if (p === 'fp16') {
    throw new DwcError(`--precision fp16 runs on the GPU only (fp16 GEMMs with dynamic loss scaling): give --device cuda (or cuda:N), or use bf16 / fp32 on the CPU`, 'DWC_BAD_ARGUMENT');
  }
  const why = addon().precisionCheck(p);
  if (why) throw new DwcError(`--precision ${p}: ${why}`, 'DWC_UNSUPPORTED');
  return p as Precision;
}

/** The CUDA backends' GEMM precision now (fp32 on an addon without the switch). */
export function currentDevicePrecision(): Precision {
  return (devicePrecisionFn()?.() as Precision | undefined) ?? 'fp32';
}

/**
 * The process-wide compute precision now: the GPU's when it is not fp32 (a `--device cuda` run at
 * bf16 / fp16), else the CPU's (fp32 on an addon without the precision switch).
 */
export function currentPrecision(): Precision {
  const d = currentDevicePrecision();
  if (d !== 'fp32') return d;
  return (addon().setKernels().precision as Precision | undefined) ?? 'fp32';
}

/**
 * Checks `precision` for `device` (checkPrecision) and makes it the process-wide compute precision
 * of every later GEMM and convolution there: the CPU's (addon().setKernels({precision})) or, on a
 * CUDA device, the GPU's (addon().setDevicePrecision). Returns the precision that was set before
 * there, so that a library call can put it back. fp32 on an addon without the switch is a no-op.
 */
export function usePrecision(precision: string | undefined, device?: string): Precision {
  const p = checkPrecision(precision, device);
  if (onGpu(device)) {
    const set = devicePrecisionFn();
    const before = (set?.() as Precision | undefined) ?? 'fp32';
    if (p !== before) set!(p);
    return before;
  }
  const before = (addon().setKernels().precision as Precision | undefined) ?? 'fp32';
  if (p !== before) addon().setKernels({ precision: p as 'fp32' | 'bf16' });
  return before;
}

/** Runs `fn` with `precision` set on `device` (usePrecision), then puts the earlier precision back. */
export async function withPrecision<T>(precision: string | undefined, fn: () => Promise<T>, device?: string): Promise<T> {
  const before = usePrecision(precision, device);
  try {
    return await fn();
  } finally {
    if (onGpu(device)) {
      if (currentDevicePrecision() !== before) devicePrecisionFn()!(before);
    } else if (((addon().setKernels().precision as Precision | undefined) ?? 'fp32') !== before) {
      addon().setKernels({ precision: before as 'fp32' | 'bf16' });
    }
  }
}

/**
 * What a cache key of computed vectors (CLIP features, gallery embeddings) adds for the precision
 * now: nothing at fp32 (keys of earlier runs stay valid), {precision} otherwise.
 */
export function precisionKey(): { precision?: Precision } {
  const p = currentPrecision();
  return p === 'fp32' ? {} : { precision: p };
}
