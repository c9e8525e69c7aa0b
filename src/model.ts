// Typed facade over the native DWC model (native/model/trainer.h): create from dims + options,
// parameters by name (spec §9), one training iteration (spec §6), eval embeddings (spec §7),
// safetensors checkpoints with optimizer state.
import { addon, DwcError } from './native.js';
import { readSafetensors, writeSafetensors, type StTensor } from './safetensors.js';
import { asDwcError } from './tensor.js';

/** Sizes of a model (spec §12). Without C/E/vocab the model has only the global stream; without
 *  Dc only the local stream. `trunk` adds the local.img_model.* CNN trunk (images -> fmap),
 *  `encoder` the trainable pooled encoder global.img_enc/txt_enc (images or the local trunk's
 *  maps, tokens -> e_*): 'shared' pools the local trunk's maps (no gradient into them), 'small'
 *  runs an own small trunk global.img_enc.trunk.* (needed without the local stream). */
export interface ModelDims {
  Dc?: number;
  D: number;
  C?: number;
  E?: number;
  vocab?: number;
  trunk?: 'small' | 'resnet50';
  /** reduced trunks: ResNet base width (64) / small-trunk stem width (32), ResNet blocks per stage (3,4,6,3) */
  trunkWidth?: number;
  trunkLayers?: [number, number, number, number];
  encoder?: 'small' | 'shared' | 'clip';
  /** encoder 'clip' (docs/MODEL.md §16, native/model/clip_encoder.h): the unfrozen CLIP's architecture (as ClipModel takes it; Dc = its embedDim)
   *  and the most CLIP BPE pieces per vocabulary word of its token table global.clip.token_map [vocab + 1, clipPieces] (default 8) */
  clip?: Record<string, unknown>;
  clipPieces?: number;
  /** encoder 'small': its trunk's width (default C, else 256); word-embedding dim (default E, else 128) */
  encChannels?: number;
  encE?: number;
  /** encoder: GeM over each window of a g×g grid of the map, concatenated (default 1: one global GeM) */
  encGrid?: number;
}

/** Options and ablations (spec §5, §6, §10). Defaults in brackets. */
export interface ModelOptions {
  masked?: boolean; // [true] mask padded tokens; false = reference behaviour
  mutualTargetReference?: boolean; // [false] other stream's targets from the reference image
  detachSoftLabels?: boolean; // [false] detach softmax(t tᵀ/τ) in the SSG
  dropout?: number; // [0.5] 0 = off
  globalDropout?: number; // [dropout] the global stream's own dropout (docs/EXPERIMENTS.md "The global half")
  textRelu?: boolean; // [true] ReLU in the global text projection f_T (false: f_T = norm(Dropout(W e_T + b)), docs/MODEL.md §3)
  noSsg?: boolean; // α = 0
  noEditors?: boolean; // editor gates fixed to 1
  fixedW?: boolean; // combiner w fixed to 0.5
  noMutual?: boolean; // L_mut dropped (the no-gradient partner forwards are skipped too)
  alpha?: number; // [0.2]
  tau?: number; // [0.07]
  mutualScale?: number; // [10]
  mutualWeightGlobal?: number; // [1] weight of L_mut in the global stream's loss (spec §5)
  mutualWeightLocal?: number; // [1] … in the local stream's loss
  lr?: number; // [1e-4]
  localLrFactor?: number; // [1] the local stream's (and its trunk's) Adam step is lr × this
  encoderLrFactor?: number; // [1] encoder 'clip': the CLIP's Adam step is lr × this (its own rate, docs/MODEL.md §16)
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number; // [1e-6]
  fixedWValue?: number; // [0.5] w of the global stream under fixedW (1 = image-only, 0 = text-only)
  seed?: number; // [0] initialisation and dropout masks
  /** ['cpu'] where the kernels run and the model's memory lives: 'cpu', 'cuda' (= 'cuda:0') or 'cuda:N'; an unavailable device throws naming why */
  device?: string;
  /** [false] self-supervised adaptive weighting (PL4CIR-SPEC.md §3) on the global / local stream's combiner */
  awGlobal?: boolean;
  awLocal?: boolean;
  awTau?: number; // [0.1] τ_w of w* = σ((s_I − s_T)/τ_w)
  awLambda?: number; // [0.1] λ_w of L_w = λ_w · mean BCE(w, w*)
  /** [false] the local trunk also runs in step 1 of §6 (reference schedule: 4 BN running-stat updates per iteration; trace) */
  referenceTrunkSteps?: boolean;
}

/** One batch; typed arrays are row-major. A stream reads only its part. */
export interface Batch {
  B: number;
  eImg?: Float32Array; // [B, Dc]
  eTxt?: Float32Array; // [B, Dc]
  eTarget?: Float32Array; // [B, Dc]
  fmap?: Float32Array; // [B, C, H, W]
  fmapTarget?: Float32Array; // [B, C, H, W]
  H?: number;
  W?: number;
  tokens?: Int32Array; // [B, L]
  L?: number;
  lengths?: Int32Array; // [B]
  labels?: Int32Array; // [B] target ids
  images?: Float32Array; // [B, 3, Hi, Wi] normalised planar (reference; for embedTargets the gallery images)
  imagesTarget?: Float32Array; // [B, 3, Hi, Wi]
  Hi?: number;
  Wi?: number;
  /** Source of w* (PL4CIR-SPEC.md §3): a frozen encoder's embeddings [B, awDim] of reference, text, target.
   *  Without them: eImg/eTxt/eTarget, else the pooled encoder's outputs (no gradient). */
  awDim?: number;
  awRef?: Float32Array;
  awTxt?: Float32Array;
  awTgt?: Float32Array;
}

export type StreamName = 'global' | 'local';

export interface ParamInfo {
  name: string;
  stream: StreamName;
  shape: number[];
  trainable: boolean;
  /** num_batches_tracked: saved as int64 */
  counter: boolean;
  dtype: 'float32' | 'int64';
}

export interface StreamStep {
  contrastive: number;
  mutual: number;
  query: Float32Array; // [B, D]
  target: Float32Array; // [B, D]
  weight: Float32Array; // [B] combiner w
  /** With adaptive weighting on for the stream (PL4CIR-SPEC.md §3): L_w, mean |w − w*|, w* [B]. */
  aw?: number;
  awGap?: number;
  wStar?: Float32Array;
}

export interface StepResult {
  iteration: number;
  global?: StreamStep;
  local?: StreamStep;
}

/** Eval-mode local-trunk maps [B, C, H, W] (frozen-trunk cache). */
export interface TrunkMaps {
  fmap: Float32Array;
  C: number;
  H: number;
  W: number;
}

export interface Embeddings {
  /** [B, D_total]: [global; local] per row, L2-normalised per stream (spec §7) */
  embedding: Float32Array;
  dim: number;
  global?: Float32Array;
  local?: Float32Array;
  globalWeight?: Float32Array;
  localWeight?: Float32Array;
}

export interface ModelStats {
  iteration: number;
  arenaGrows: number;
  arenaBytes: number;
  hasLocal: boolean;
  hasGlobal: boolean;
  hasTrunk: boolean;
  hasEncoder: boolean;
  hasClipEncoder?: boolean;
}

type TensorKind = 'param' | 'grad' | 'm' | 'v';
interface NativeModel {
  params(): Omit<ParamInfo, 'dtype'>[];
  getTensor(name: string, kind?: TensorKind): Float32Array;
  setTensor(name: string, data: Float32Array, kind?: TensorKind): void;
  getStep(stream: StreamName): number;
  setStep(stream: StreamName, step: number): void;
  setIteration(n: number): void;
  setLearningRate(lr: number): void;
  trainStep(batch: Batch): Promise<StepResult>;
  lossAndGrad(stream: StreamName, batch: Batch, partner?: { query: Float32Array; target: Float32Array } | null, rngStream?: number): StreamStep;
  embed(batch: Batch, kind: 'query' | 'target'): Promise<Record<string, Float32Array>>;
  trunkFeatures(batch: Batch): Promise<TrunkMaps>;
  awTargets(batch: Batch): Promise<Float32Array>;
  stats(): ModelStats;
  readonly busy: boolean;
}
type NativeModelCtor = new (dims: ModelDims, options?: ModelOptions) => NativeModel;

function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw asDwcError(e);
  }
}

const shapeStr = (s: number[]) => `[${s.join(', ')}]`;

/** Dims of a model read from parameter shapes (spec §9 names): global.img_fc.0.weight [D, Dc],
 *  local.img_fc.weight [D, C], local.txt_model.embedding_layer.weight [vocab, E]. */
export function inferDims(shapes: Map<string, number[]> | Record<string, number[]>): ModelDims {
  const get = (n: string) => (shapes instanceof Map ? shapes.get(n) : shapes[n]);
  const g = get('global.img_fc.0.weight');
  if (!g || g.length !== 2) throw new DwcError("weights: missing 'global.img_fc.0.weight' (a [D, Dc] matrix), needed to read the model's dims", 'DWC_BAD_ARGUMENT');
  const dims: ModelDims = { D: g[0], Dc: g[1] };
  const li = get('local.img_fc.weight');
  const le = get('local.txt_model.embedding_layer.weight');
  if (li || le) {
    if (!li || li.length !== 2) throw new DwcError("weights: missing 'local.img_fc.weight' (a [D, C] matrix) while other local.* weights are present", 'DWC_BAD_ARGUMENT');
    if (!le || le.length !== 2) throw new DwcError("weights: missing 'local.txt_model.embedding_layer.weight' (a [vocab, E] matrix) while other local.* weights are present", 'DWC_BAD_ARGUMENT');
    if (li[0] !== dims.D) throw new DwcError(`weights: 'local.img_fc.weight' has shape ${shapeStr(li)} but D = ${dims.D} (from 'global.img_fc.0.weight')`, 'DWC_BAD_ARGUMENT');
    dims.C = li[1];
    dims.vocab = le[0];
    dims.E = le[1];
    // local trunk (torchvision names): conv1 [w,3,7,7] = ResNet of base width w, blocks per
    // stage from the layer<i>.<j> names; a 3×3 conv1 = the small trunk of stem width w
    const c1 = get('local.img_model.conv1.weight');
    if (c1) {
      if (c1.length !== 4 || c1[1] !== 3) throw new DwcError(`weights: 'local.img_model.conv1.weight' has shape ${shapeStr(c1)}, expected [width, 3, k, k]`, 'DWC_BAD_ARGUMENT');
      if (c1[2] === 7) {
        const layers: [number, number, number, number] = [0, 0, 0, 0];
        const names = shapes instanceof Map ? [...shapes.keys()] : Object.keys(shapes);
        for (const n of names) {
          const m = /^local\.img_model\.layer([1-4])\.(\d+)\./.exec(n);
          if (m) layers[Number(m[1]) - 1] = Math.max(layers[Number(m[1]) - 1], Number(m[2]) + 1);
        }
        if (layers.some((l) => l === 0)) throw new DwcError(`weights: the local.img_model.* ResNet trunk lacks a stage (blocks per stage ${layers.join(',')})`, 'DWC_BAD_ARGUMENT');
        dims.trunk = 'resnet50';
        if (c1[0] !== 64 || layers.join() !== '3,4,6,3') {
          dims.trunkWidth = c1[0];
          dims.trunkLayers = layers;
        }
      } else {
        dims.trunk = 'small';
        if (c1[0] !== 32) dims.trunkWidth = c1[0];
      }
    }
  }
  return dims;
}

export class DwcModel {
  readonly dims: ModelDims;
  readonly options: ModelOptions;
  private readonly native: NativeModel;
  private infoCache?: ParamInfo[];

  constructor(dims: ModelDims, options: ModelOptions = {}) {
    const Ctor = addon().Model as NativeModelCtor | undefined;
    if (!Ctor) throw new DwcError('dwc-native: this build of the addon has no Model class', 'DWC_NOT_BUILT');
    this.dims = { ...dims };
    this.options = { ...options };
    this.native = wrap(() => new Ctor(this.dims, this.options));
  }

  static create(dims: ModelDims, options: ModelOptions = {}): DwcModel {
    return new DwcModel(dims, options);
  }

  get hasLocal(): boolean {
    return this.native.stats().hasLocal;
  }
  /** True while an async call (trainStep, embed*) runs; every other call then throws DWC_BUSY. */
  get busy(): boolean {
    return this.native.busy;
  }

  /** Every parameter with its §9 name, stream, PyTorch shape and dtype (running stats included). */
  params(): ParamInfo[] {
    if (!this.infoCache) this.infoCache = this.native.params().map((p) => ({ ...p, dtype: p.counter ? 'int64' : 'float32' }));
    return this.infoCache.map((p) => ({ ...p, shape: [...p.shape] }));
  }

  getParam(name: string): Float32Array {
    return wrap(() => this.native.getTensor(name, 'param'));
  }
  getGrad(name: string): Float32Array {
    return wrap(() => this.native.getTensor(name, 'grad'));
  }
  getOptimState(name: string): { m: Float32Array; v: Float32Array } {
    return wrap(() => ({ m: this.native.getTensor(name, 'm'), v: this.native.getTensor(name, 'v') }));
  }
  setParam(name: string, data: Float32Array | ArrayLike<number>): void {
    const a = data instanceof Float32Array ? data : Float32Array.from(data);
    wrap(() => this.native.setTensor(name, a, 'param'));
  }

  /** All parameters by name (copies). */
  getParams(): Map<string, Float32Array> {
    return new Map(this.params().map((p) => [p.name, this.getParam(p.name)]));
  }

  /**
   * Sets parameters from safetensors-style tensors. Every name of the model must be present
   * (unless `partial`), with its exact shape and dtype (F32; I64/F32/I32 for counters); all
   * mismatches are reported in one error naming each. Names the model does not have are
   * returned (ignored), e.g. unused reference parameters (spec §10).
   */
  setParams(tensors: Map<string, StTensor> | Record<string, StTensor>, { partial = false } = {}): { ignored: string[] } {
    const m = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
    const problems: string[] = [];
    const infos = this.params();
    const plan: [ParamInfo, Float32Array][] = [];
    for (const p of infos) {
      const t = m.get(p.name);
      if (!t) {
        if (!partial) problems.push(`missing '${p.name}' (shape ${shapeStr(p.shape)})`);
        continue;
      }
      // a scalar may come as [] or [1] (PyTorch 0-d buffers such as num_batches_tracked)
      const scalarOk = p.shape.reduce((a, b) => a * b, 1) === 1 && t.shape.reduce((a, b) => a * b, 1) === 1 && t.shape.length <= 1 && p.shape.length <= 1;
      if (!scalarOk && (t.shape.length !== p.shape.length || t.shape.some((s, i) => s !== p.shape[i]))) {
        problems.push(`'${p.name}' has shape ${shapeStr(t.shape)}, expected ${shapeStr(p.shape)}`);
        continue;
      }
      const okTypes = p.counter ? ['I64', 'F32', 'I32'] : ['F32'];
      if (!okTypes.includes(t.dtype)) {
        problems.push(`'${p.name}' has dtype ${t.dtype}, expected ${p.counter ? 'I64' : 'F32'}`);
        continue;
      }
      const a = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number | bigint>, (x) => Number(x));
      if (!a.every(Number.isFinite)) {
        problems.push(`'${p.name}' holds non-finite values`);
        continue;
      }
      plan.push([p, a]);
    }
    if (problems.length) throw new DwcError(`parameters do not match the model: ${problems.join('; ')}`, 'DWC_BAD_ARGUMENT');
    for (const [p, a] of plan) wrap(() => this.native.setTensor(p.name, a, 'param'));
    const known = new Set(infos.map((p) => p.name));
    return { ignored: [...m.keys()].filter((k) => !known.has(k)) };
  }

  /** Adam's learning rate from the next trainStep on (both streams); for schedules. */
  setLearningRate(lr: number): void {
    wrap(() => this.native.setLearningRate(lr));
  }

  /** One training iteration (spec §6); runs off the JS thread. */
  async trainStep(batch: Batch): Promise<StepResult> {
    try {
      return await this.native.trainStep(batch);
    } catch (e) {
      throw asDwcError(e);
    }
  }

  /** Loss and gradients of one stream against fixed partner outputs, without an update (tests). */
  lossAndGrad(stream: StreamName, batch: Batch, partner?: { query: Float32Array; target: Float32Array } | null, rngStream = 0): StreamStep {
    return wrap(() => this.native.lossAndGrad(stream, batch, partner ?? null, rngStream));
  }

  private async embed(batch: Batch, kind: 'query' | 'target'): Promise<Embeddings> {
    let r: Record<string, Float32Array>;
    try {
      r = await this.native.embed(batch, kind);
    } catch (e) {
      throw asDwcError(e);
    }
    const parts = [r.global, r.local].filter((x): x is Float32Array => !!x);
    const B = batch.B;
    const dims = parts.map((p) => p.length / B);
    const dim = dims.reduce((a, b) => a + b, 0);
    const embedding = new Float32Array(B * dim);
    for (let i = 0; i < B; i++) {
      let o = i * dim;
      parts.forEach((p, k) => {
        embedding.set(p.subarray(i * dims[k], (i + 1) * dims[k]), o);
        o += dims[k];
      });
    }
    return { embedding, dim, global: r.global, local: r.local, globalWeight: r.globalWeight, localWeight: r.localWeight };
  }
  /** Eval-mode query embeddings [q_G; q_L] (spec §7). */
  embedQueries(batch: Batch): Promise<Embeddings> {
    return this.embed(batch, 'query');
  }
  /** Eval-mode gallery embeddings [t_G; t_L] (spec §7). */
  embedTargets(batch: Batch): Promise<Embeddings> {
    return this.embed(batch, 'target');
  }

  stats(): ModelStats {
    return this.native.stats();
  }

  /**
   * Eval-mode w* of the adaptive weighting (PL4CIR-SPEC.md §3) for a batch with query and target
   * inputs (awRef/awTxt/awTgt, or eImg/eTxt/eTarget, or images + imagesTarget + tokens through the
   * pooled encoder): [B]. For the report's w-against-w* plot.
   */
  async awTargets(batch: Batch): Promise<Float32Array> {
    try {
      return await this.native.awTargets(batch);
    } catch (e) {
      throw asDwcError(e);
    }
  }

  /** Eval-mode maps of the local trunk for images [B,3,Hi,Wi] (no update; frozen-trunk cache). */
  async trunkFeatures(images: Float32Array, B: number, Hi: number, Wi: number): Promise<TrunkMaps> {
    try {
      return await this.native.trunkFeatures({ B, images, Hi, Wi });
    } catch (e) {
      throw asDwcError(e);
    }
  }

  private streams(): StreamName[] {
    const st = this.native.stats();
    return [...(st.hasGlobal ? ['global' as const] : []), ...(st.hasLocal ? ['local' as const] : [])];
  }

  /** Checkpoint tensors: §9 names, 'optim.<stream>.{m,v}.<name>', 'optim.<stream>.step'. */
  checkpointTensors(): Map<string, StTensor> {
    const out = new Map<string, StTensor>();
    const infos = this.params();
    for (const p of infos) {
      const a = this.getParam(p.name);
      out.set(p.name, p.counter ? { dtype: 'I64', shape: p.shape, data: BigInt64Array.from(a, (x) => BigInt(Math.round(x))) } : { dtype: 'F32', shape: p.shape, data: a });
    }
    for (const s of this.streams()) {
      for (const p of infos.filter((q) => q.stream === s && q.trainable)) {
        const { m, v } = this.getOptimState(p.name);
        out.set(`optim.${s}.m.${p.name}`, { dtype: 'F32', shape: p.shape, data: m });
        out.set(`optim.${s}.v.${p.name}`, { dtype: 'F32', shape: p.shape, data: v });
      }
      out.set(`optim.${s}.step`, { dtype: 'I64', shape: [1], data: BigInt64Array.of(BigInt(wrap(() => this.native.getStep(s)))) });
    }
    return out;
  }

  /** Writes a safetensors checkpoint atomically (temp file, fsync, rename). */
  save(path: string, extra: Record<string, string> = {}): void {
    const meta = { ...extra, format: 'dwc-native', dims: JSON.stringify(this.dims), options: JSON.stringify(this.options), iteration: String(this.stats().iteration) };
    writeSafetensors(path, this.checkpointTensors(), meta);
  }

  /** Restores parameters and optimizer state from a checkpoint of this model's dims. */
  load(path: string): void {
    const f = readSafetensors(path);
    this.setParams(f.tensors);
    for (const s of this.streams()) {
      const step = f.tensors.get(`optim.${s}.step`);
      if (!step) continue; // weights-only file: optimizer starts fresh
      for (const p of this.params().filter((q) => q.stream === s && q.trainable)) {
        for (const k of ['m', 'v'] as const) {
          const name = `optim.${s}.${k}.${p.name}`;
          const t = f.tensors.get(name);
          if (!t) throw new DwcError(`${path}: missing '${name}'`, 'DWC_FORMAT');
          if (t.dtype !== 'F32' || t.shape.length !== p.shape.length || t.shape.some((x, i) => x !== p.shape[i]))
            throw new DwcError(`${path}: '${name}' has ${t.dtype} ${shapeStr(t.shape)}, expected F32 ${shapeStr(p.shape)}`, 'DWC_FORMAT');
          wrap(() => this.native.setTensor(p.name, t.data as Float32Array, k));
        }
      }
      wrap(() => this.native.setStep(s, Number((step.data as BigInt64Array | Int32Array)[0])));
    }
    const it = Number(f.metadata.iteration ?? 0);
    if (Number.isInteger(it) && it >= 0) wrap(() => this.native.setIteration(it));
  }

  /** Creates a model from a checkpoint (dims from its metadata or from the weight shapes). */
  static load(path: string, options?: ModelOptions): DwcModel {
    const f = readSafetensors(path);
    let dims: ModelDims;
    let opts: ModelOptions = {};
    try {
      dims = f.metadata.dims ? (JSON.parse(f.metadata.dims) as ModelDims) : inferDims(new Map([...f.tensors].map(([k, v]) => [k, v.shape])));
      if (f.metadata.options) opts = JSON.parse(f.metadata.options) as ModelOptions;
    } catch (e) {
      if (e instanceof DwcError) throw e;
      throw new DwcError(`${path}: bad checkpoint metadata (${(e as Error).message})`, 'DWC_FORMAT');
    }
    const m = new DwcModel(dims, { ...opts, ...(options ?? {}) });
    m.load(path);
    return m;
  }
}
