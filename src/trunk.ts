// CNN trunks (issue 5, spec §4, §12, §13): parameter lists and torchvision-named weight files.
// A ResNet-50 checkpoint converted once from torchvision (or timm) is a safetensors file whose
// names are torchvision's, either bare (`layer1.0.conv1.weight`) or under the model prefix
// (`local.img_model.layer1.0.conv1.weight`); `fc.*` and other extra entries are ignored. A
// missing or misshaped trunk weight is an error naming it.
import { DwcError } from './native.js';
import { readSafetensors, toFloat32 as floatValues } from './safetensors.js';
import type { StFile, StTensor } from './safetensors.js';
import { runOp, tensor } from './tensor.js';
import type { Tensor } from './tensor.js';

export const TRUNK_PREFIX = 'local.img_model.';

/** Which trunk: `small` (width 32, C = outChannels) or `resnet50` (base width 64, blocks 3,4,6,3). */
export interface TrunkSpec {
  kind: 'small' | 'resnet50';
  width?: number;
  outChannels?: number;
  layers?: [number, number, number, number];
}

export interface TrunkParam {
  name: string; // without prefix, torchvision naming
  shape: number[];
  trainable: boolean;
  isCounter: boolean; // num_batches_tracked (int64 in PyTorch checkpoints)
}

/** Inputs and options of the trunk ops (`trunk_param_names`, `trunk_forward_backward`). */
export function trunkOpArgs(spec: TrunkSpec): { inputs: Record<string, Tensor>; attrs: Record<string, number> } {
  if (spec.kind !== 'small' && spec.kind !== 'resnet50') throw new DwcError(`trunk: unknown kind '${String(spec.kind)}' (expected 'small' or 'resnet50')`, 'DWC_BAD_ARGUMENT');
  const attrs: Record<string, number> = { kind: spec.kind === 'small' ? 0 : 1 };
  if (spec.width !== undefined) attrs.width = spec.width;
  if (spec.outChannels !== undefined) attrs.out_channels = spec.outChannels;
  const inputs: Record<string, Tensor> = {};
  if (spec.layers) inputs.layers = tensor(Int32Array.from(spec.layers), [4], 'int32');
  return { inputs, attrs };
}

/** The trunk's parameters in declaration (torchvision state_dict) order. */
export function trunkParams(spec: TrunkSpec): TrunkParam[] {
  const { inputs, attrs } = trunkOpArgs(spec);
  const out = runOp('trunk_param_names', inputs, attrs);
  const params: TrunkParam[] = [];
  for (const [k, v] of Object.entries(out)) {
    if (!k.startsWith('offset:')) continue;
    const info = v.toArray() as Int32Array;
    const name = k.slice(7);
    params.push({ name, shape: out[name].shape, trainable: info[2] === 1, isCounter: info[3] === 1, offset: info[0] } as TrunkParam & { offset: number });
  }
  params.sort((a, b) => (a as TrunkParam & { offset: number }).offset - (b as TrunkParam & { offset: number }).offset);
  for (const p of params) delete (p as Partial<TrunkParam & { offset: number }>).offset;
  for (const t of Object.values(out)) t.release();
  return params;
}

function toFloat32(t: StTensor): Float32Array {
  if (t.data instanceof Float32Array) return t.data;
  if (t.data instanceof BigInt64Array) return Float32Array.from(t.data, (v) => Number(v));
  if (t.dtype === 'F16' || t.dtype === 'BF16') return floatValues(t); // 16-bit words, not numbers
  return Float32Array.from(t.data as ArrayLike<number>);
}

/**
 * Reads the trunk's weights from a torchvision-named safetensors file (or an already parsed one).
 * Returns name (without prefix) -> values, for every parameter of `spec`, running statistics and
 * num_batches_tracked included.
 */
export function loadTrunkWeights(file: string | StFile, spec: TrunkSpec, prefix = TRUNK_PREFIX): Map<string, Float32Array> {
  const st = typeof file === 'string' ? readSafetensors(file) : file;
  const where = typeof file === 'string' ? file : '<safetensors>';
  const out = new Map<string, Float32Array>();
  for (const p of trunkParams(spec)) {
    const t = st.tensors.get(prefix + p.name) ?? st.tensors.get(p.name);
    if (!t) throw new DwcError(`${where}: missing trunk weight '${prefix}${p.name}' (shape [${p.shape}])`, 'DWC_FORMAT');
    const numel = p.shape.reduce((a, b) => a * b, 1);
    const sameShape = t.shape.length === p.shape.length && t.shape.every((d, i) => d === p.shape[i]);
    const scalarOk = p.shape.length === 0 && t.shape.reduce((a, b) => a * b, 1) === 1;
    if (!sameShape && !scalarOk)
      throw new DwcError(`${where}: trunk weight '${prefix}${p.name}' has shape [${t.shape}], expected [${p.shape}]`, 'DWC_FORMAT');
    const data = toFloat32(t);
    if (data.length !== numel) throw new DwcError(`${where}: trunk weight '${prefix}${p.name}' has ${data.length} values, expected ${numel}`, 'DWC_FORMAT');
    for (let i = 0; i < data.length; i++)
      if (!Number.isFinite(data[i])) throw new DwcError(`${where}: trunk weight '${prefix}${p.name}' has a non-finite value at ${i}`, 'DWC_FORMAT');
    out.set(p.name, data);
  }
  return out;
}

/** `param.<name>` inputs for `trunk_forward_backward` from loaded weights. */
export function trunkParamInputs(weights: Map<string, Float32Array>, spec: TrunkSpec): Record<string, Tensor> {
  const shapes = new Map(trunkParams(spec).map((p) => [p.name, p.shape]));
  const inputs: Record<string, Tensor> = {};
  for (const [name, data] of weights) {
    const shape = shapes.get(name);
    if (!shape) throw new DwcError(`trunk: '${name}' is not a parameter of the ${spec.kind} trunk`, 'DWC_BAD_ARGUMENT');
    inputs[`param.${name}`] = tensor(data, shape.length ? shape : [1]);
  }
  return inputs;
}
