// Trace files (spec §13): one training iteration (spec §6) on given weights and inputs, with
// every output, loss, gradient and updated parameter written for comparison with a reference.
import { DwcError } from './native.js';
import { DwcModel, inferDims, type Batch, type ModelOptions, type StreamStep } from './model.js';
import { readSafetensors, writeSafetensors, type StTensor } from './safetensors.js';

export interface TraceOptions {
  /** false = --no-dropout */
  dropout?: boolean;
  /** false = --unmasked (reference behaviour, spec §10) */
  masked?: boolean;
  /** spec §10: the other stream's L_mut targets from the 'target' (default) or 'reference' image */
  mutualTarget?: 'reference' | 'target';
  detachSoftLabels?: boolean;
  seed?: number;
}

export interface TraceResult {
  tensors: Map<string, StTensor>;
  ignoredWeights: string[];
}

function input(inputs: Map<string, StTensor>, name: string, dtype: 'F32' | 'I32', rank: number, required: boolean, path: string): StTensor | undefined {
  const t = inputs.get(name);
  if (!t) {
    if (required) throw new DwcError(`${path}: missing input '${name}'`, 'DWC_BAD_ARGUMENT');
    return undefined;
  }
  if (t.dtype !== dtype) throw new DwcError(`${path}: input '${name}' has dtype ${t.dtype}, expected ${dtype}`, 'DWC_BAD_ARGUMENT');
  if (t.shape.length !== rank) throw new DwcError(`${path}: input '${name}' has shape [${t.shape.join(', ')}], expected a ${rank}-D tensor`, 'DWC_BAD_ARGUMENT');
  return t;
}

/** Runs one iteration on in-memory weights/inputs; returns the trace tensors (spec §13 names). */
export async function traceIteration(weights: Map<string, StTensor>, inputs: Map<string, StTensor>, opts: TraceOptions = {}, inputsPath = 'inputs'): Promise<TraceResult> {
  const dims = inferDims(new Map([...weights].map(([k, v]) => [k, v.shape])));
  const mt = opts.mutualTarget ?? 'target';
  if (mt !== 'reference' && mt !== 'target') throw new DwcError(`trace: option 'mutualTarget' must be 'reference' or 'target', got '${String(mt)}'`, 'DWC_BAD_ARGUMENT');
  const mo: ModelOptions = {
    dropout: opts.dropout === false ? 0 : 0.5,
    masked: opts.masked !== false,
    mutualTargetReference: mt === 'reference',
    detachSoftLabels: !!opts.detachSoftLabels,
    seed: opts.seed ?? 0,
    // the reference runs the local trunk in steps 1 and 4 (its BN running stats: 4 updates)
    referenceTrunkSteps: dims.trunk !== undefined,
  };
  const model = new DwcModel(dims, mo);
  const { ignored } = model.setParams(weights);
  const hasLocal = dims.C !== undefined;
  // with a trunk in the weights (local.img_model.*) the local stream reads images, else maps
  const useImages = dims.trunk !== undefined && !inputs.has('local.fmap');
  if (hasLocal && !dims.trunk && !inputs.has('local.fmap') && inputs.has('local.images'))
    throw new DwcError(`${inputsPath}: 'local.images' needs a CNN trunk in the weights (local.img_model.*); give 'local.fmap' and 'local.fmap_target' instead`, 'DWC_BAD_ARGUMENT');

  const eImg = input(inputs, 'global.e_img', 'F32', 2, true, inputsPath)!;
  const B = eImg.shape[0];
  const batch: Batch = {
    B,
    eImg: eImg.data as Float32Array,
    eTxt: input(inputs, 'global.e_txt', 'F32', 2, true, inputsPath)!.data as Float32Array,
    eTarget: input(inputs, 'global.e_target', 'F32', 2, true, inputsPath)!.data as Float32Array,
    labels: input(inputs, 'labels', 'I32', 1, true, inputsPath)!.data as Int32Array,
  };
  if (hasLocal && useImages) {
    const img = input(inputs, 'local.images', 'F32', 4, true, inputsPath)!;
    const imgT = input(inputs, 'local.images_target', 'F32', 4, true, inputsPath)!;
    const tokens = input(inputs, 'local.tokens', 'I32', 2, true, inputsPath)!;
    const lengths = input(inputs, 'local.lengths', 'I32', 1, false, inputsPath);
    if (img.shape[1] !== 3) throw new DwcError(`${inputsPath}: input 'local.images' has shape [${img.shape.join(', ')}], expected [B, 3, Hi, Wi]`, 'DWC_BAD_ARGUMENT');
    if (imgT.shape.join() !== img.shape.join()) throw new DwcError(`${inputsPath}: input 'local.images_target' has shape [${imgT.shape.join(', ')}], expected [${img.shape.join(', ')}] (as 'local.images')`, 'DWC_BAD_ARGUMENT');
    Object.assign(batch, {
      images: img.data,
      imagesTarget: imgT.data,
      Hi: img.shape[2],
      Wi: img.shape[3],
      tokens: tokens.data,
      L: tokens.shape[1],
      lengths: lengths?.data,
    });
  } else if (hasLocal) {
    const fmap = input(inputs, 'local.fmap', 'F32', 4, true, inputsPath)!;
    const tokens = input(inputs, 'local.tokens', 'I32', 2, true, inputsPath)!;
    const lengths = input(inputs, 'local.lengths', 'I32', 1, false, inputsPath);
    Object.assign(batch, {
      fmap: fmap.data,
      fmapTarget: input(inputs, 'local.fmap_target', 'F32', 4, true, inputsPath)!.data,
      H: fmap.shape[2],
      W: fmap.shape[3],
      tokens: tokens.data,
      L: tokens.shape[1],
      lengths: lengths?.data,
    });
    if (fmap.shape[1] !== dims.C) throw new DwcError(`${inputsPath}: input 'local.fmap' has ${fmap.shape[1]} channels but the weights give C = ${dims.C}`, 'DWC_BAD_ARGUMENT');
  }
  const r = await model.trainStep(batch);

  const out = new Map<string, StTensor>();
  const D = dims.D;
  const put = (s: string, st: StreamStep) => {
    out.set(`${s}.query`, { dtype: 'F32', shape: [B, D], data: st.query });
    out.set(`${s}.target`, { dtype: 'F32', shape: [B, D], data: st.target });
    out.set(`${s}.weight`, { dtype: 'F32', shape: [B], data: st.weight });
    out.set(`loss.${s}.contrastive`, { dtype: 'F32', shape: [1], data: Float32Array.of(st.contrastive) });
    out.set(`loss.${s}.mutual`, { dtype: 'F32', shape: [1], data: Float32Array.of(st.mutual) });
  };
  if (r.global) put('global', r.global);
  if (r.local) put('local', r.local);
  const infos = model.params();
  // Each stream's gradients stay in its buffer after its step (spec §13: before the Adam step).
  for (const p of infos) if (p.trainable) out.set(`grad.${p.name}`, { dtype: 'F32', shape: p.shape, data: model.getGrad(p.name) });
  for (const [k, v] of model.checkpointTensors()) if (!k.startsWith('optim.')) out.set(`param.${k}`, v);
  return { tensors: out, ignoredWeights: ignored };
}

/** `dwc-native trace`: reads W and X, writes Y (atomically). */
export async function runTrace(weightsPath: string, inputsPath: string, outPath: string, opts: TraceOptions = {}): Promise<TraceResult> {
  const w = readSafetensors(weightsPath);
  const x = readSafetensors(inputsPath);
  let r: TraceResult;
  try {
    r = await traceIteration(w.tensors, x.tensors, opts, inputsPath);
  } catch (e) {
    if (e instanceof DwcError && e.message.startsWith('parameters do not match')) throw new DwcError(`${weightsPath}: ${e.message}`, e.code);
    if (e instanceof DwcError && e.message.startsWith('weights:')) throw new DwcError(`${weightsPath}: ${e.message.slice(9)}`, e.code);
    throw e;
  }
  writeSafetensors(outPath, r.tensors, { format: 'dwc-native trace' });
  return r;
}
