// `clip trace` (issue #13): embeddings, logits, the CLIP loss and the gradient of every trainable
// tensor of a weight file, in eval mode, written as safetensors for comparison with PyTorch.
import { DwcError } from '../native.js';
import { readSafetensors, writeSafetensors, type StTensor } from '../safetensors.js';
import { Clip, type ClipLoadOptions } from './model.js';

export interface ClipTraceSummary {
  out: string;
  tensors: number;
  n: number;
  loss: number;
  naming: string;
  ignoredWeights: string[];
}

function idsOf(t: StTensor | undefined): Int32Array {
  if (!t) throw new DwcError("clip trace: the inputs file has no 'input_ids' [N, ctx] tensor", 'DWC_FORMAT');
  if (t.dtype === 'I32') return t.data as Int32Array;
  if (t.dtype === 'I64') {
    const a = t.data as BigInt64Array;
    const o = new Int32Array(a.length);
    for (let i = 0; i < a.length; i++) {
      if (a[i] < -2147483648n || a[i] > 2147483647n) throw new DwcError(`clip trace: 'input_ids' holds ${a[i]} at index ${i}, outside int32`, 'DWC_FORMAT');
      o[i] = Number(a[i]);
    }
    return o;
  }
  throw new DwcError(`clip trace: 'input_ids' has dtype ${t.dtype}; expected I32 or I64`, 'DWC_FORMAT');
}

export async function runClipTrace(weights: string, inputs: string, out: string, opts: ClipLoadOptions = {}): Promise<ClipTraceSummary> {
  const clip = Clip.load(weights, opts);
  const inp = readSafetensors(inputs).tensors;
  const px = inp.get('pixel_values');
  if (!px) throw new DwcError("clip trace: the inputs file has no 'pixel_values' [N, 3, R, R] tensor", 'DWC_FORMAT');
  if (px.dtype !== 'F32') throw new DwcError(`clip trace: 'pixel_values' has dtype ${px.dtype}; expected F32`, 'DWC_FORMAT');
  const R = clip.resolution;
  const shapeOk = px.shape.length === 4 && px.shape[1] === 3 && px.shape[2] === R && px.shape[3] === R;
  if (!shapeOk) throw new DwcError(`clip trace: 'pixel_values' has shape [${px.shape}], expected [N, 3, ${R}, ${R}]`, 'DWC_BAD_ARGUMENT');
  const idsT = inp.get('input_ids');
  const ids = idsOf(idsT);
  const ctx = clip.contextLength;
  if (!idsT || idsT.shape.length !== 2 || idsT.shape[1] !== ctx || idsT.shape[0] !== px.shape[0])
    throw new DwcError(`clip trace: 'input_ids' has shape [${idsT?.shape}], expected [${px.shape[0]}, ${ctx}]`, 'DWC_BAD_ARGUMENT');
  const r = await clip.trace(px.data as Float32Array, ids);
  const N = px.shape[0];
  const E = clip.embedDim;
  const t = new Map<string, StTensor>();
  t.set('image_embeds', { dtype: 'F32', shape: [N, E], data: r.imageEmbeds });
  t.set('text_embeds', { dtype: 'F32', shape: [N, E], data: r.textEmbeds });
  t.set('logits_per_image', { dtype: 'F32', shape: [N, N], data: r.logitsPerImage });
  t.set('loss', { dtype: 'F32', shape: [1], data: Float32Array.from([r.loss]) });
  for (const [name, g] of r.grads) t.set(`grad.${name}`, g);
  writeSafetensors(out, t, { naming: clip.naming, activation: clip.arch.activation });
  return { out, tensors: t.size, n: N, loss: r.loss, naming: clip.naming, ignoredWeights: clip.ignored };
}
