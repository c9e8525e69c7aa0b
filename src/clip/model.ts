// The native CLIP from TypeScript (CLIP-SPEC.md): load OpenAI / open_clip or Hugging Face
// safetensors (naming detected), embed images and token ids, the CLIP loss and its gradients,
// Adam fine-tuning, and save in the file's own naming.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { addon, DwcError } from '../native.js';
import { parseSafetensors, readSafetensors, writeSafetensors, type StTensor } from '../safetensors.js';
import { asDwcError } from '../tensor.js';
import { preprocessClipImages, type ClipPreprocessOptions } from './preprocess.js';
import { ClipTokenizer } from './tokenizer.js';
import {
  checkShape,
  clipBindings,
  detectNaming,
  expectedShapes,
  gatherCanonical,
  inferArch,
  isNonTrainable,
  scatterCanonical,
  type ClipActivation,
  type ClipArch,
  type ClipNaming,
} from './weights.js';

export type { ClipArch, ClipNaming, ClipActivation } from './weights.js';

interface NativeClip {
  params(): { name: string; shape: number[] }[];
  getTensor(name: string, kind?: 'param' | 'grad' | 'm' | 'v'): Float32Array;
  setTensor(name: string, data: Float32Array, kind?: 'param' | 'grad' | 'm' | 'v'): void;
  getStep(): number;
  setStep(n: number): void;
  encodeImage(pixels: Float32Array, n: number): Promise<Float32Array>;
  encodeText(ids: Int32Array, n: number): Promise<Float32Array>;
  lossAndGrad(pixels: Float32Array, ids: Int32Array, n: number, bnTrain?: boolean): Promise<NativeStep>;
  trainStep(pixels: Float32Array, ids: Int32Array, n: number, optim: ClipOptim): Promise<NativeStep>;
  stats(): { paramFloats: number; arenaBytes: number; arenaGrows: number; step: number };
  readonly busy: boolean;
}
interface NativeStep {
  loss: number;
  imageEmbeds: Float32Array;
  textEmbeds: Float32Array;
  logitsPerImage: Float32Array;
  step: number;
}

/** Adam settings of a fine-tuning step (defaults: CLIP's β = (0.9, 0.98), ε = 1e-6, no decay). */
export interface ClipOptim {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** ModifiedResNet towers: BatchNorm as PyTorch's model.train() (batch statistics, running
   * statistics updated; the default) or, with false, as model.eval() (running statistics used and kept). */
  bnTrain?: boolean;
}

export interface ClipLoadOptions {
  /** MLP activation; default from config.json's hidden_act (HF), open_clip_config.json's
   * quick_gelu (open_clip), the file's `activation` metadata, else QuickGELU (OpenAI). */
  activation?: ClipActivation;
  /** ['cpu'] the backend the native CLIP runs on: 'cpu', 'cuda' (= 'cuda:0') or 'cuda:N' (an unavailable device throws naming why) */
  device?: string;
}

export interface EmbedOptions {
  /** Items per native call (activation memory scales with it; default 32). */
  batchSize?: number;
  /** Called after each native call with (done, total). */
  onProgress?: (done: number, total: number) => void;
}

export interface EmbedImagesOptions extends EmbedOptions, ClipPreprocessOptions {
  /** Images decoded at once while the previous batch is embedded (default: the cores, at most 8). */
  concurrency?: number;
}

export interface EmbedTextsOptions extends EmbedOptions {
  /** Cut texts longer than the context (the last id EOT) instead of failing (default false). */
  truncate?: boolean;
  /** Tokenizer to use (default: the one in the weights' folder, see Clip.tokenizer()). */
  tokenizer?: ClipTokenizer;
}

/** One forward (and backward) over N image-text pairs; embeddings are projected, not normalised. */
export interface ClipStep {
  loss: number;
  imageEmbeds: Float32Array; // [N, E]
  textEmbeds: Float32Array; // [N, E]
  logitsPerImage: Float32Array; // [N, N]
  step: number; // Adam steps done
}

export interface ClipTraceResult extends ClipStep {
  /** d loss / d tensor for every trainable tensor of the weight file, in the file's naming. */
  grads: Map<string, StTensor>;
}

/** Resolves a weights path: a file, or a folder holding model.safetensors / open_clip_model.safetensors. */
export function resolveClipWeights(pathOrDir: string): string {
  if (!existsSync(pathOrDir)) throw new DwcError(`CLIP weights: '${pathOrDir}' does not exist`, 'DWC_IO');
  if (!statSync(pathOrDir).isDirectory()) return pathOrDir;
  for (const f of ['model.safetensors', 'open_clip_model.safetensors']) if (existsSync(join(pathOrDir, f))) return join(pathOrDir, f);
  throw new DwcError(`CLIP weights: the folder '${pathOrDir}' holds neither model.safetensors nor open_clip_model.safetensors`, 'DWC_IO');
}

function readJson(path: string): Record<string, unknown> | undefined {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new DwcError(`cannot parse ${path}: ${(e as Error).message}`, 'DWC_FORMAT');
  }
}

function detectActivation(file: string, naming: ClipNaming, metadata: Record<string, string>): ClipActivation {
  const dir = dirname(file);
  const asAct = (v: unknown, where: string): ClipActivation => {
    if (v === 'quick_gelu' || v === 'gelu') return v;
    throw new DwcError(`CLIP weights: ${where} names the activation '${String(v)}'; supported: quick_gelu, gelu`, 'DWC_FORMAT');
  };
  if (metadata.activation) return asAct(metadata.activation, `${file} metadata`);
  if (naming === 'hf') {
    const cfg = readJson(join(dir, 'config.json'));
    const va = (cfg?.vision_config as Record<string, unknown> | undefined)?.hidden_act;
    const ta = (cfg?.text_config as Record<string, unknown> | undefined)?.hidden_act;
    if (va !== undefined && ta !== undefined && va !== ta)
      throw new DwcError(`CLIP weights: ${join(dir, 'config.json')} gives the towers different activations (${va}, ${ta}); the engine uses one`, 'DWC_FORMAT');
    const act = va ?? ta;
    if (act !== undefined) return asAct(act, join(dir, 'config.json'));
    return 'quick_gelu';
  }
  const oc = readJson(join(dir, 'open_clip_config.json'));
  if (oc) {
    const mc = (oc.model_cfg ?? oc) as Record<string, unknown>;
    return mc.quick_gelu ? 'quick_gelu' : 'gelu';
  }
  return 'quick_gelu';
}

const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

export class Clip {
  readonly arch: ClipArch;
  /** File tensors the engine does not train (position_ids, BN statistics): written back by save(). */
  readonly extras: Map<string, StTensor>;
  /** File tensors neither used nor known (reported, not saved). */
  readonly ignored: string[];
  private readonly native: NativeClip;
  private readonly bindings: ReturnType<typeof clipBindings>;
  private readonly fileShapes: Map<string, number[]>;
  private readonly fileOrder: string[];
  /** Folder the weights came from (where tokenizer() looks for the vocabulary). */
  private sourceDir?: string;
  private tok?: ClipTokenizer;
  /** Train-mode BatchNorm steps since load: added to every num_batches_tracked on save. */
  private bnSteps = 0;

  private constructor(arch: ClipArch, native: NativeClip, bindings: ReturnType<typeof clipBindings>, fileShapes: Map<string, number[]>,
    fileOrder: string[], extras: Map<string, StTensor>, ignored: string[]) {
    this.arch = arch;
    this.native = native;
    this.bindings = bindings;
    this.fileShapes = fileShapes;
    this.fileOrder = fileOrder;
    this.extras = extras;
    this.ignored = ignored;
  }

  /** Loads a safetensors file (or a folder with model.safetensors / open_clip_model.safetensors). */
  static load(pathOrDir: string, opts: ClipLoadOptions = {}): Clip {
    const file = resolveClipWeights(pathOrDir);
    const st = readSafetensors(file);
    const naming = detectNaming(st.tensors.keys());
    const clip = Clip.fromTensors(st.tensors, { activation: opts.activation ?? detectActivation(file, naming, st.metadata) });
    clip.sourceDir = dirname(file);
    return clip;
  }

  /** Like load(), reading the file without blocking the event loop. */
  static async open(pathOrDir: string, opts: ClipLoadOptions = {}): Promise<Clip> {
    const file = resolveClipWeights(pathOrDir);
    let buf: Buffer;
    try {
      buf = await readFile(file);
    } catch (e) {
      throw new DwcError(`cannot read ${file}: ${(e as Error).message}`, 'DWC_IO');
    }
    const st = parseSafetensors(buf, file);
    const naming = detectNaming(st.tensors.keys());
    const clip = Clip.fromTensors(st.tensors, { activation: opts.activation ?? detectActivation(file, naming, st.metadata) });
    clip.sourceDir = dirname(file);
    return clip;
  }

  /** Builds a model from named tensors in either naming (detected). */
  static fromTensors(tensors: Map<string, StTensor>, opts: ClipLoadOptions = {}): Clip {
    const names = [...tensors.keys()];
    const naming = detectNaming(names);
    const bindings = clipBindings(naming, names);
    const canon = new Map<string, { shape: number[]; data: Float32Array; files: string[] }>();
    for (const b of bindings) canon.set(b.canonical, { ...gatherCanonical(b, tensors), files: b.files });
    const arch = inferArch(new Map([...canon].map(([k, v]) => [k, v.shape])), naming, opts.activation ?? 'quick_gelu');
    const want = expectedShapes(arch);
    for (const [k, v] of canon) checkShape(k, v.files, v.shape, want.get(k) as number[]);
    const used = new Set(bindings.flatMap((b) => b.files));
    const extras = new Map<string, StTensor>();
    const ignored: string[] = [];
    for (const [n, t] of tensors) {
      if (used.has(n)) continue;
      if (isNonTrainable(n)) extras.set(n, t);
      else ignored.push(n);
    }
    const Ctor = addon().ClipModel as new (a: Record<string, unknown>, o?: { device?: string }) => NativeClip;
    let native: NativeClip;
    try {
      native = new Ctor({ ...arch }, opts.device !== undefined ? { device: opts.device } : undefined);
      for (const [k, v] of canon) native.setTensor(k, v.data);
    } catch (e) {
      throw asDwcError(e);
    }
    const fileShapes = new Map(names.map((n) => [n, (tensors.get(n) as StTensor).shape]));
    return new Clip(arch, native, bindings, fileShapes, names.filter((n) => used.has(n) || extras.has(n)), extras, ignored);
  }

  get resolution(): number {
    return this.arch.resolution;
  }
  get contextLength(): number {
    return this.arch.contextLength;
  }
  get embedDim(): number {
    return this.arch.embedDim;
  }
  get vocabSize(): number {
    return this.arch.vocabSize;
  }
  get naming(): ClipNaming {
    return this.arch.naming;
  }
  /** Adam steps done (restorable with setStep). */
  get step(): number {
    return this.native.getStep();
  }
  setStep(n: number): void {
    this.call(() => this.native.setStep(n));
  }

  private call<T>(f: () => T): T {
    try {
      return f();
    } catch (e) {
      throw asDwcError(e);
    }
  }
  private async acall<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      throw asDwcError(e);
    }
  }

  private count(len: number, per: number, what: string, shape: string): number {
    if (len === 0 || len % per !== 0)
      throw new DwcError(`CLIP: argument '${what}' has ${len} elements, not a positive multiple of ${per} (${shape})`, 'DWC_BAD_ARGUMENT');
    return len / per;
  }
  private pairs(pixels: Float32Array, ids: Int32Array): number {
    this.typed(pixels, Float32Array, 'pixels');
    this.typed(ids, Int32Array, 'ids');
    const R = this.arch.resolution;
    const n = this.count(pixels.length, 3 * R * R, 'pixels', `[N, 3, ${R}, ${R}]`);
    const m = this.count(ids.length, this.arch.contextLength, 'ids', `[N, ${this.arch.contextLength}]`);
    if (n !== m) throw new DwcError(`CLIP: ${n} images ('pixels') but ${m} texts ('ids'); the loss pairs them one to one`, 'DWC_BAD_ARGUMENT');
    return n;
  }
  private typed(a: unknown, T: typeof Float32Array | typeof Int32Array, name: string): void {
    if (!(a instanceof T)) throw new DwcError(`CLIP: argument '${name}' must be a ${T.name}`, 'DWC_BAD_ARGUMENT');
  }

  /** Projected image embeddings [N, E] of normalised pixels [N, 3, R, R], `batchSize` images per native call. */
  async embedImagesTensor(pixels: Float32Array, opts: EmbedOptions = {}): Promise<Float32Array> {
    this.typed(pixels, Float32Array, 'pixels');
    const R = this.arch.resolution;
    const n = this.count(pixels.length, 3 * R * R, 'pixels', `[N, 3, ${R}, ${R}]`);
    return this.chunked(n, opts, (i, m) => this.native.encodeImage(pixels.subarray(i * 3 * R * R, (i + m) * 3 * R * R), m));
  }

  /** Projected text embeddings [N, E] of token ids [N, contextLength] (EOT = the highest id of a row). */
  async embedTokenIds(ids: Int32Array, opts: EmbedOptions = {}): Promise<Float32Array> {
    this.typed(ids, Int32Array, 'ids');
    const L = this.arch.contextLength;
    const n = this.count(ids.length, L, 'ids', `[N, ${L}]`);
    return this.chunked(n, opts, (i, m) => this.native.encodeText(ids.subarray(i * L, (i + m) * L), m));
  }

  /**
   * The tokenizer of embedTexts(): the one set with setTokenizer(), else the vocabulary in the
   * weights' folder (vocab.json + merges.txt, or bpe_simple_vocab*.txt(.gz); ClipTokenizer.fromDir).
   * Its ids must fit the token embedding (vocabSize rows).
   */
  tokenizer(): ClipTokenizer {
    if (!this.tok) {
      if (!this.sourceDir)
        throw new DwcError('CLIP: this model was built from tensors, not a folder, so it has no vocabulary; call setTokenizer(ClipTokenizer.load(...)) or pass {tokenizer}', 'DWC_BAD_ARGUMENT');
      this.setTokenizer(ClipTokenizer.fromDir(this.sourceDir));
    }
    return this.tok!;
  }

  /** Uses this tokenizer for embedTexts() (checked against the token embedding's size). */
  setTokenizer(tok: ClipTokenizer): void {
    this.checkTokenizer(tok);
    this.tok = tok;
  }

  private checkTokenizer(tok: ClipTokenizer): void {
    if (!(tok instanceof ClipTokenizer)) throw new DwcError('CLIP: tokenizer must be a ClipTokenizer', 'DWC_BAD_ARGUMENT');
    if (tok.vocabSize > this.arch.vocabSize)
      throw new DwcError(`CLIP: the tokenizer's vocabulary has ${tok.vocabSize} ids but the weights' token embedding has ${this.arch.vocabSize} rows; they do not belong together`, 'DWC_BAD_ARGUMENT');
  }

  /**
   * Projected embeddings [N, E] of images given as files / encoded buffers (decoded and
   * preprocessed as CLIP was trained: CLIP-SPEC.md "Preprocessing", src/clip/preprocess.ts), or as
   * already-normalised pixels [N, 3, R, R]. `batchSize` images per native call; the next batch is
   * decoded while the current one is embedded. A missing or undecodable file is an error naming it.
   */
  async embedImages(images: readonly (string | Buffer)[] | Float32Array, opts: EmbedImagesOptions = {}): Promise<Float32Array> {
    if (images instanceof Float32Array) return this.embedImagesTensor(images, opts);
    if (!Array.isArray(images)) throw new DwcError('CLIP: embedImages() takes a list of image paths / buffers or a Float32Array [N,3,R,R]', 'DWC_BAD_ARGUMENT');
    const bs = opts.batchSize ?? 32;
    if (!Number.isInteger(bs) || bs < 1) throw new DwcError(`CLIP: option 'batchSize' must be a positive integer, got ${bs}`, 'DWC_BAD_ARGUMENT');
    const n = images.length;
    const E = this.arch.embedDim;
    const R = this.arch.resolution;
    const out = new Float32Array(n * E);
    const pre = { resample: opts.resample, mean: opts.mean, std: opts.std, ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}) };
    const prep = (i: number) => (i < n ? preprocessClipImages(images.slice(i, Math.min(n, i + bs)), R, pre) : undefined);
    let next = prep(0);
    for (let i = 0; i < n; i += bs) {
      const px = await next!;
      next = prep(i + bs);
      // an error of the prefetched batch surfaces when it is awaited; keep it from being unhandled meanwhile
      next?.catch(() => undefined);
      const m = Math.min(bs, n - i);
      out.set(await this.acall(() => this.native.encodeImage(px, m)), i * E);
      opts.onProgress?.(i + m, n);
    }
    return out;
  }

  /** Projected embeddings [N, E] of texts: CLIP's tokenizer (tokenizer()) at the model's context, then the text tower. */
  async embedTexts(texts: readonly string[] | string, opts: EmbedTextsOptions = {}): Promise<Float32Array> {
    const list = typeof texts === 'string' ? [texts] : texts;
    if (!Array.isArray(list)) throw new DwcError('CLIP: embedTexts() takes a string or a list of strings', 'DWC_BAD_ARGUMENT');
    if (!list.length) return new Float32Array(0);
    const tok = opts.tokenizer ?? this.tokenizer();
    if (opts.tokenizer) this.checkTokenizer(tok);
    const ids = tok.tokenize(list, { context: this.arch.contextLength, truncate: !!opts.truncate });
    return this.embedTokenIds(ids, opts);
  }

  private async chunked(n: number, opts: EmbedOptions, f: (start: number, count: number) => Promise<Float32Array>): Promise<Float32Array> {
    const bs = opts.batchSize ?? 32;
    if (!Number.isInteger(bs) || bs < 1) throw new DwcError(`CLIP: option 'batchSize' must be a positive integer, got ${bs}`, 'DWC_BAD_ARGUMENT');
    const E = this.arch.embedDim;
    const out = new Float32Array(n * E);
    for (let i = 0; i < n; i += bs) {
      const m = Math.min(bs, n - i);
      out.set(await this.acall(() => f(i, m)), i * E);
      opts.onProgress?.(i + m, n);
    }
    return out;
  }

  /** The CLIP loss of N pairs and its gradients (eval mode); gradients via gradients().
   * bnTrain (ResNet towers): BatchNorm as PyTorch's model.train() — batch statistics, the running
   * statistics updated (and counted in num_batches_tracked) — without a parameter update. */
  async lossAndGrad(pixels: Float32Array, ids: Int32Array, opts: { bnTrain?: boolean } = {}): Promise<ClipStep> {
    const n = this.pairs(pixels, ids);
    if (opts.bnTrain !== undefined && typeof opts.bnTrain !== 'boolean')
      throw new DwcError(`CLIP: option 'bnTrain' must be a boolean, got ${String(opts.bnTrain)}`, 'DWC_BAD_ARGUMENT');
    const r = await this.acall(() => this.native.lossAndGrad(pixels, ids, n, opts.bnTrain === true));
    if (this.arch.image === 'resnet' && opts.bnTrain === true) this.bnSteps++;
    return r;
  }

  /** One Adam fine-tuning step on N pairs (lr, or the full Adam settings). */
  async trainStep(pixels: Float32Array, ids: Int32Array, lr: number | ClipOptim): Promise<ClipStep> {
    const n = this.pairs(pixels, ids);
    const optim = typeof lr === 'number' ? { lr } : lr;
    const r = await this.acall(() => this.native.trainStep(pixels, ids, n, optim));
    if (this.arch.image === 'resnet' && optim.bnTrain !== false) this.bnSteps++; // num_batches_tracked, as PyTorch counts it
    return r;
  }

  /** Embeddings, logits, loss and the gradient of every trainable file tensor (file naming). */
  async trace(pixels: Float32Array, ids: Int32Array): Promise<ClipTraceResult> {
    const r = await this.lossAndGrad(pixels, ids);
    return { ...r, grads: this.fileTensors('grad') };
  }

  /** Current gradients in the file's naming. */
  gradients(): Map<string, StTensor> {
    return this.fileTensors('grad');
  }

  /** Current parameters (kind 'param') or gradients / Adam moments, in the file's naming and order. */
  fileTensors(kind: 'param' | 'grad' | 'm' | 'v' = 'param'): Map<string, StTensor> {
    const got = new Map<string, StTensor>();
    for (const b of this.bindings) {
      if (kind !== 'param' && b.trainable === false) continue; // BN running statistics: no gradient / moments
      const data = this.call(() => this.native.getTensor(b.canonical, kind));
      for (const [name, t] of scatterCanonical(b, data, this.fileShapes)) {
        if (numel(t.shape) !== t.data.length) t.shape = [t.data.length];
        got.set(name, t);
      }
    }
    const out = new Map<string, StTensor>();
    for (const n of this.fileOrder) {
      const t = got.get(n);
      if (t) out.set(n, t);
    }
    return out;
  }

  /**
   * Sets parameters (kind 'param') or Adam moments ('m', 'v') from tensors in the file's naming —
   * the inverse of fileTensors (restores an optimizer state with setStep); a missing tensor is named.
   */
  setFileTensors(tensors: Map<string, StTensor>, kind: 'param' | 'm' | 'v' = 'param'): void {
    for (const b of this.bindings) {
      const { data } = gatherCanonical(b, tensors);
      this.call(() => this.native.setTensor(b.canonical, data, kind));
    }
  }

  /** Writes the weights (safetensors, the file's own naming, non-trainable tensors kept), atomically. */
  save(path: string): void {
    const out = this.fileTensors('param');
    for (const [n, t] of this.extras) {
      if (this.bnSteps > 0 && n.endsWith('num_batches_tracked') && t.dtype === 'I64') {
        const d = (t.data as BigInt64Array).map((x) => x + BigInt(this.bnSteps));
        out.set(n, { dtype: 'I64', shape: t.shape, data: d });
      } else out.set(n, t);
    }
    const ordered = new Map<string, StTensor>();
    for (const n of this.fileOrder) ordered.set(n, out.get(n) as StTensor);
    writeSafetensors(path, ordered, { format: 'pt', activation: this.arch.activation, naming: this.arch.naming });
  }

  stats(): { paramFloats: number; arenaBytes: number; arenaGrows: number; step: number } {
    return this.native.stats();
  }
}

/** A short architecture summary of a CLIP weight file or folder (for `dwc-native info --clip`). */
export function describeClip(pathOrDir: string): string {
  const file = resolveClipWeights(pathOrDir);
  const m = Clip.load(file);
  const a = m.arch;
  const params = m.stats().paramFloats;
  return [
    `CLIP ${basename(file)} (${a.naming === 'hf' ? 'Hugging Face CLIPModel' : 'OpenAI / open_clip'} names, ${a.activation})`,
    a.image === 'resnet'
      ? `image tower: ModifiedResNet, stem width ${a.rnWidth}, blocks [${a.rnLayers}], attnpool width ${32 * a.rnWidth}, ${a.rnHeads} heads, resolution ${a.resolution}`
      : `image tower: ViT, width ${a.visionWidth}, ${a.visionLayers} layers, ${a.visionHeads} heads, patch ${a.patchSize}, grid ${a.grid}×${a.grid}, resolution ${a.resolution}`,
    `text tower:  width ${a.textWidth}, ${a.textLayers} layers, ${a.textHeads} heads, context ${a.contextLength}, vocabulary ${a.vocabSize}`,
    `embedding:   ${a.embedDim}; ~${(params / 1e6).toFixed(2)} M parameters`,
    ...(m.ignored.length ? [`ignored tensors: ${m.ignored.join(', ')}`] : []),
  ].join('\n');
}
