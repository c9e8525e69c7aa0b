// PL4CIR stage 2, domain transfer (PL4CIR-SPEC.md §1; docs/MODEL.md §14): the CLIP loss
// (CLIP-SPEC.md "Loss") on a dataset's image–caption pairs, from given CLIP weights or from a
// small CLIP initialised from scratch (src/clip/init.ts, vocabulary by src/clip/bpe_train.ts).
// Per epoch: batches in a (seed, epoch) order, the synthetic generator's captions re-phrased per
// (seed, epoch, image), an optional random shift; Adam with a cosine schedule after a linear
// warm-up; validation = image→caption and caption→image Recall@K on the validation split and the
// zero-shot composition baseline (§4) on its queries. The run folder holds model.safetensors (the
// best weights by validation, loadable with Clip.load(dir)), vocab.json + merges.txt
// (ClipTokenizer.fromDir(dir)), config.json, metrics.jsonl and last.safetensors (weights + Adam
// moments + trainer state): an abort signal saves it, `resume` continues with exactly the numbers
// of an uninterrupted run. Every file is written atomically.
import { appendFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Clip } from '../clip/model.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import { initClip, SMALL_CLIP } from '../clip/init.js';
import { trainBpe, writeHfVocab } from '../clip/bpe_train.js';
import type { Dataset, EvalSet, Query } from '../data/dataset.js';
import { parseSceneCaption, rephraseSceneCaption } from '../data/synth.js';
import { Rng } from '../data/rng.js';
import { shiftInto } from '../data/images.js';
import { computeRecall, meanRecall, type Recall } from '../eval/recall.js';
import { DwcError } from '../native.js';
import { readSafetensors, writeSafetensors, type StTensor } from '../safetensors.js';
import { ImageStore, epochBatches } from './batches.js';
import { defaultConfig, type DatasetKind, type SynthConfig } from './config.js';
import { openDataset } from './wiring.js';
import { copyFileAtomic, writeTextAtomic } from '../data/fsutil.js';

export const PRETRAIN_FORMAT = 'dwc-native-pretrain-1';

/** Shape of a CLIP made from scratch (src/clip/init.ts); contextLength 0 = from the captions. */
export interface PretrainArch {
  patchSize: number;
  visionWidth: number;
  visionLayers: number;
  textWidth: number;
  textLayers: number;
  contextLength: number;
  embedDim: number;
}

export interface PretrainConfig {
  dataset: DatasetKind;
  /** Dataset folder (synthetic: the built-in benchmark in the cache when omitted). */
  data?: string;
  synth: SynthConfig;
  /** Given CLIP weights (file or folder with a tokenizer vocabulary): stage 2 of PL4CIR. */
  clip?: string;
  /** A small CLIP from scratch (`arch`, vocabulary learnt from the training texts). */
  fromScratch: boolean;
  arch: PretrainArch;
  /** Most BPE merges of a from-scratch vocabulary. */
  merges: number;
  epochs: number;
  batchSize: number;
  /** Peak Adam learning rate (after warm-up, then cosine to lrMinFactor·lr). */
  lr: number;
  /** Warm-up steps (linear from lr/warmup); 0 = none. */
  warmup: number;
  lrMinFactor: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Image side (from scratch: the CLIP's resolution; given weights: must equal theirs). */
  imageSize: number;
  /** Augmentation: random translation by up to this many pixels (edge pixels repeated); 0 = off.
   *  No flip: the synthetic captions name left and right. */
  shift: number;
  /** Re-phrase captions written by the synthetic generator every epoch ('auto': when every training caption is one). */
  rephrase: 'auto' | 'off';
  seed: number;
  out: string;
  evalBatchSize: number;
  /** Use only the first n training pairs (0 = all). */
  limitTrain: number;
  /** Validation split (default: the dataset's, else its eval split). */
  split?: string;
  /** Zero-shot composition baseline (PL4CIR-SPEC.md §4) in each validation and on the test split at the end. */
  evalComposition: boolean;
  workers: number;
}

export function defaultPretrainConfig(): PretrainConfig {
  const t = defaultConfig('small');
  return {
    dataset: 'synthetic',
    synth: { ...t.synth },
    fromScratch: false,
    arch: { patchSize: SMALL_CLIP.patchSize, visionWidth: SMALL_CLIP.visionWidth, visionLayers: SMALL_CLIP.visionLayers, textWidth: SMALL_CLIP.textWidth, textLayers: SMALL_CLIP.textLayers, contextLength: 0, embedDim: SMALL_CLIP.embedDim },
    merges: 1000,
    epochs: 5,
    batchSize: 64,
    lr: 5e-4,
    warmup: 100,
    lrMinFactor: 0,
    beta1: 0.9,
    beta2: 0.98,
    eps: 1e-6,
    weightDecay: 0,
    imageSize: t.dims.imageSize,
    shift: 0,
    rephrase: 'auto',
    seed: 0,
    out: 'runs/pretrain',
    evalBatchSize: 128,
    limitTrain: 0,
    evalComposition: true,
    workers: 0,
  };
}

/** Trainer state saved in last.safetensors (exact resume). */
export interface PretrainState {
  epoch: number;
  batch: number;
  step: number;
  lossSum: number;
  lossCount: number;
  best: { epoch: number; mean: number } | null;
}

export interface PretrainEpochRecord {
  event: 'epoch';
  epoch: number;
  step: number;
  loss: number;
  lr: number;
  itemsPerSec: number;
  seconds: number;
}
export interface PretrainEvalRecord {
  event: 'eval' | 'test';
  epoch: number;
  split: string;
  /** Image → caption and caption → image Recall@K over the split's images and their captions. */
  imageToText: Recall;
  textToImage: Recall;
  /** Zero-shot composition norm(norm(e_ref) + norm(e_txt)) against the gallery (§4), per evaluation set. */
  composition?: { name: string; recall: Recall }[];
  mean: number;
  best?: boolean;
  seconds: number;
}

export interface PretrainStepInfo {
  epoch: number;
  batch: number;
  batches: number;
  step: number;
  loss: number;
  lr: number;
  itemsPerSec: number;
}

export interface PretrainCallbacks {
  onLog?(msg: string): void;
  onStart?(info: { pairs: number; valPairs: number; batchesPerEpoch: number; startEpoch: number; startBatch: number; out: string; arch: Clip['arch']; vocabSize: number; truncated: number; context: number; rephrase: boolean }): void;
  onStep?(s: PretrainStepInfo): void;
  onEpoch?(r: PretrainEpochRecord): void;
  onEvalProgress?(phase: string, done: number, total: number): void;
  onEval?(r: PretrainEvalRecord): void;
}

export interface PretrainOptions {
  /** Settings (defaults: defaultPretrainConfig()); `out` is required unless resuming. */
  config: Partial<PretrainConfig>;
  /** Run folder to continue (its last.safetensors); config comes from there (`epochs` may be raised). */
  resume?: string;
  signal?: AbortSignal;
  /** Stop (as on abort: last.safetensors saved) once this many steps are done in total (tests, budgets). */
  stopAfterSteps?: number;
  callbacks?: PretrainCallbacks;
  dataset?: Dataset;
  /** No test-split evaluation at the end (train --stages 2,3 tests once, after stage 3). */
  skipTest?: boolean;
}

export interface PretrainResult {
  out: string;
  interrupted: boolean;
  epochsDone: number;
  steps: number;
  best: PretrainState['best'];
  lastEval?: PretrainEvalRecord;
  test?: PretrainEvalRecord;
  model: string;
  last: string;
}

const bad = (msg: string): never => {
  throw new DwcError(msg, 'DWC_BAD_ARGUMENT');
};

function checkConfig(c: PretrainConfig): void {
  const posInt = (v: number, n: string, min = 1) => {
    if (!Number.isInteger(v) || v < min) bad(`pretrain: '${n}' must be an integer ≥ ${min}, got ${v}`);
  };
  const fin = (v: number, n: string, lo: number, hi: number) => {
    if (!Number.isFinite(v) || v < lo || v > hi) bad(`pretrain: '${n}' must be a number in [${lo}, ${hi}], got ${v}`);
  };
  if (!c.clip && !c.fromScratch) bad('pretrain: give CLIP weights (--clip DIR, stage 2) or --from-scratch (a small CLIP initialised here)');
  if (c.clip && c.fromScratch) bad('pretrain: --clip and --from-scratch exclude each other');
  posInt(c.epochs, 'epochs', 0);
  posInt(c.batchSize, 'batchSize', 2);
  fin(c.lr, 'lr', 0, 1);
  if (!(c.lr > 0)) bad(`pretrain: 'lr' must be positive, got ${c.lr}`);
  posInt(c.warmup, 'warmup', 0);
  fin(c.lrMinFactor, 'lrMinFactor', 0, 1);
  fin(c.beta1, 'beta1', 0, 0.999999);
  fin(c.beta2, 'beta2', 0, 0.999999);
  fin(c.eps, 'eps', 0, 1);
  fin(c.weightDecay, 'weightDecay', 0, 10);
  posInt(c.imageSize, 'imageSize', 8);
  posInt(c.shift, 'shift', 0);
  if (c.shift * 2 >= c.imageSize) bad(`pretrain: 'shift' ${c.shift} is too large for ${c.imageSize}-pixel images`);
  posInt(c.seed, 'seed', 0);
  posInt(c.evalBatchSize, 'evalBatchSize');
  posInt(c.limitTrain, 'limitTrain', 0);
  posInt(c.merges, 'merges', 0);
  posInt(c.workers, 'workers', 0);
  if (c.rephrase !== 'auto' && c.rephrase !== 'off') bad(`pretrain: 'rephrase' must be auto or off, got '${String(c.rephrase)}'`);
  if (c.fromScratch) {
    const a = c.arch;
    posInt(a.patchSize, 'patchSize');
    if (c.imageSize % a.patchSize) bad(`pretrain: image size ${c.imageSize} is not a multiple of the patch size ${a.patchSize}`);
    for (const k of ['visionWidth', 'textWidth'] as const) if (!Number.isInteger(a[k]) || a[k] < 64 || a[k] % 64) bad(`pretrain: '${k}' must be a positive multiple of 64 (the head dim), got ${a[k]}`);
    posInt(a.visionLayers, 'visionLayers');
    posInt(a.textLayers, 'textLayers');
    posInt(a.embedDim, 'embedDim');
    if (a.contextLength !== 0) posInt(a.contextLength, 'contextLength', 3);
  }
}

/** Settings over the defaults (defaultPretrainConfig()), checked: unknown keys and bad values are errors naming them. */
export function resolvePretrainConfig(config: Partial<PretrainConfig>): PretrainConfig {
  const known = new Set(Object.keys(defaultPretrainConfig()).concat(['clip', 'data', 'split']));
  for (const k of Object.keys(config)) if (!known.has(k)) bad(`pretrain: unknown option '${k}'`);
  const d = defaultPretrainConfig();
  const cfg = { ...d, ...stripUndef(config), arch: { ...d.arch, ...stripUndef(config.arch ?? {}) }, synth: { ...d.synth, ...stripUndef(config.synth ?? {}) } } as PretrainConfig;
  checkConfig(cfg);
  return cfg;
}

/** Learning rate at a 0-based step: linear warm-up to lr, then cosine to lrMinFactor·lr at the last step. */
export function pretrainLearningRate(c: Pick<PretrainConfig, 'lr' | 'warmup' | 'lrMinFactor'>, step: number, total: number): number {
  if (step < c.warmup) return (c.lr * (step + 1)) / c.warmup;
  const span = Math.max(1, total - c.warmup);
  const t = Math.min(1, (step - c.warmup) / span);
  return c.lr * (c.lrMinFactor + (1 - c.lrMinFactor) * 0.5 * (1 + Math.cos(Math.PI * t)));
}


/** Modification text for CLIP: FashionIQ's `<BOS> c1 <AND> c2 <EOS>` markers (§8) become plain words. */
export function clipQueryText(text: string): string {
  return text.replace(/<BOS>|<EOS>/g, ' ').replace(/<AND>/g, ' and ').replace(/\s+/g, ' ').trim();
}

/** Unit rows in place. */
function normRows(a: Float32Array, D: number): Float32Array {
  for (let i = 0; i < a.length; i += D) {
    let s = 0;
    for (let j = 0; j < D; j++) s += a[i + j] * a[i + j];
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < D; j++) a[i + j] *= inv;
  }
  return a;
}

export interface ClipEvalContext {
  clip: Clip;
  tokenizer: ClipTokenizer;
  store: ImageStore;
  batchSize: number;
  onProgress?: (phase: string, done: number, total: number) => void;
}

/** L2-normalised CLIP image embeddings [n, E] of dataset images, loaded in chunks. */
export async function embedDatasetImages(ctx: ClipEvalContext, ds: Dataset, ids: readonly string[], phase = 'images'): Promise<Float32Array> {
  const E = ctx.clip.embedDim;
  const out = new Float32Array(ids.length * E);
  const chunk = Math.max(ctx.batchSize, 256);
  for (let i = 0; i < ids.length; i += chunk) {
    const part = ids.slice(i, i + chunk);
    const px = await ctx.store.load(part.map((id) => ds.image(id).file));
    out.set(await ctx.clip.embedImagesTensor(px, { batchSize: ctx.batchSize }), i * E);
    ctx.onProgress?.(phase, i + part.length, ids.length);
  }
  return normRows(out, E);
}

/** L2-normalised CLIP text embeddings [n, E] (over-long texts truncated). */
export async function embedTexts(ctx: ClipEvalContext, texts: readonly string[], phase = 'texts'): Promise<Float32Array> {
  const e = await ctx.clip.embedTexts(texts, { tokenizer: ctx.tokenizer, truncate: true, batchSize: ctx.batchSize, onProgress: (d, t) => ctx.onProgress?.(phase, d, t) });
  return normRows(e, ctx.clip.embedDim);
}

/** Key of a caption for retrieval: the scene under the 'scene' hit rule (several phrasings, one scene), else the caption text. */
function pairKey(ds: Dataset, id: string, caption: string): string {
  return ds.hit === 'scene' ? ds.hitKey(id) : caption;
}

/** Image → caption and caption → image Recall@K over image–caption pairs (a hit: the same key). */
export async function imageTextRecall(ctx: ClipEvalContext, ds: Dataset, pairs: readonly { id: string; caption: string }[], ks: readonly number[], imgEmb?: Float32Array): Promise<{ imageToText: Recall; textToImage: Recall }> {
  const E = ctx.clip.embedDim;
  const img = imgEmb ?? (await embedDatasetImages(ctx, ds, pairs.map((p) => p.id)));
  const txt = await embedTexts(ctx, pairs.map((p) => p.caption), 'captions');
  const keys = pairs.map((p) => pairKey(ds, p.id, p.caption));
  const none = new Int32Array(pairs.length).fill(-1);
  const k = ks.filter((x) => x <= pairs.length);
  const i2t = computeRecall({ queries: img, gallery: txt, D: E, galleryKeys: keys, targetKeys: keys, sourceIndex: none, ks: k.length ? k : [1] });
  const t2i = computeRecall({ queries: txt, gallery: img, D: E, galleryKeys: keys, targetKeys: keys, sourceIndex: none, ks: k.length ? k : [1] });
  return { imageToText: i2t.recall, textToImage: t2i.recall };
}

/**
 * Zero-shot CLIP composition (PL4CIR-SPEC.md §4): q = norm(norm(e_ref) + norm(e_txt)) ranked
 * against the gallery's norm(e_img), the query's own reference removed, Recall@K by the
 * dataset's hit rule (src/eval/recall.ts). No training.
 */
export async function zeroShotComposition(ctx: ClipEvalContext, ds: Dataset, set: EvalSet, known?: Map<string, Float32Array>): Promise<Recall> {
  const E = ctx.clip.embedDim;
  const emb = known ?? new Map<string, Float32Array>();
  const need = [...new Set([...set.gallery, ...set.queries.map((q) => q.source)])].filter((id) => !emb.has(id));
  if (need.length) {
    const e = await embedDatasetImages(ctx, ds, need, `${set.name} images`);
    need.forEach((id, i) => emb.set(id, e.subarray(i * E, (i + 1) * E)));
  }
  const gal = new Float32Array(set.gallery.length * E);
  const gIndex = new Map<string, number>();
  set.gallery.forEach((id, i) => {
    gal.set(emb.get(id) as Float32Array, i * E);
    gIndex.set(id, i);
  });
  const txt = await embedTexts(ctx, set.queries.map((q: Query) => clipQueryText(q.text)), `${set.name} texts`);
  const qv = new Float32Array(set.queries.length * E);
  set.queries.forEach((q, i) => {
    const r = emb.get(q.source) as Float32Array;
    for (let j = 0; j < E; j++) qv[i * E + j] = r[j] + txt[i * E + j];
  });
  normRows(qv, E);
  const src = Int32Array.from(set.queries, (q) => gIndex.get(q.source) ?? -1);
  return computeRecall({ queries: qv, gallery: gal, D: E, galleryKeys: set.gallery.map((id) => ds.hitKey(id)), targetKeys: set.queries.map((q) => ds.hitKey(q.target)), sourceIndex: src, ks: set.ks }).recall;
}

/** Scores a CLIP on a split: image↔caption recall (images with captions) and, when asked, zero-shot composition. */
export async function evaluateClipOnSplit(ctx: ClipEvalContext, ds: Dataset, split: string, opts: { composition: boolean; ks?: number[] }): Promise<Omit<PretrainEvalRecord, 'event' | 'epoch' | 'seconds'>> {
  const pairs = ds.captions(split);
  const ks = opts.ks ?? [1, 5, 10];
  const E = ctx.clip.embedDim;
  const known = new Map<string, Float32Array>();
  let it: { imageToText: Recall; textToImage: Recall } = { imageToText: {}, textToImage: {} };
  if (pairs.length >= 2) {
    const img = await embedDatasetImages(ctx, ds, pairs.map((p) => p.id));
    pairs.forEach((p, i) => known.set(p.id, img.subarray(i * E, (i + 1) * E)));
    it = await imageTextRecall(ctx, ds, pairs, ks, img);
  }
  const composition: { name: string; recall: Recall }[] = [];
  if (opts.composition) for (const set of ds.evaluations(split)) if (set.queries.length) composition.push({ name: set.name, recall: await zeroShotComposition(ctx, ds, set, known) });
  // model selection: the mean of both directions' recalls (the composition's when the split has no captions)
  const mean = pairs.length >= 2 ? (meanRecall(it.imageToText) + meanRecall(it.textToImage)) / 2 : composition.length ? meanRecall(composition[0].recall) : 0;
  return { split, ...it, ...(opts.composition ? { composition } : {}), mean };
}

interface Loaded {
  clip: Clip;
  tokenizer: ClipTokenizer;
  state: PretrainState;
  cfg: PretrainConfig;
}

/** Reads a run's last.safetensors: weights, Adam moments and step, trainer state, config. */
function loadState(dir: string): Loaded {
  if (!existsSync(dir)) throw new DwcError(`pretrain: nothing to resume: ${dir} does not exist`, 'DWC_IO');
  const path = statSync(dir).isDirectory() ? join(dir, 'last.safetensors') : dir;
  if (!existsSync(path)) throw new DwcError(`pretrain: nothing to resume in ${dir} (no last.safetensors)`, 'DWC_IO');
  const st = readSafetensors(path);
  if (st.metadata['dwc.format'] !== PRETRAIN_FORMAT) throw new DwcError(`pretrain: ${path} was not written by dwc-native pretrain`, 'DWC_FORMAT');
  const cfg = JSON.parse(st.metadata['dwc.config']) as PretrainConfig;
  const state = JSON.parse(st.metadata['dwc.state']) as PretrainState;
  const params = new Map<string, StTensor>();
  const m = new Map<string, StTensor>();
  const v = new Map<string, StTensor>();
  for (const [n, t] of st.tensors) {
    if (n.startsWith('adam.m.')) m.set(n.slice(7), t);
    else if (n.startsWith('adam.v.')) v.set(n.slice(7), t);
    else params.set(n, t);
  }
  const clip = Clip.fromTensors(params, { activation: st.metadata.activation as 'quick_gelu' | 'gelu' });
  clip.setFileTensors(m, 'm');
  clip.setFileTensors(v, 'v');
  clip.setStep(Number(st.metadata['dwc.adamStep']));
  const tokenizer = ClipTokenizer.fromDir(dirname(path));
  return { clip, tokenizer, state, cfg };
}

function saveState(path: string, clip: Clip, cfg: PretrainConfig, state: PretrainState): void {
  const t = new Map<string, StTensor>();
  for (const [n, x] of clip.fileTensors('param')) t.set(n, x);
  for (const [n, x] of clip.extras) t.set(n, x);
  for (const [n, x] of clip.fileTensors('m')) t.set(`adam.m.${n}`, x);
  for (const [n, x] of clip.fileTensors('v')) t.set(`adam.v.${n}`, x);
  writeSafetensors(path, t, {
    format: 'pt',
    'dwc.format': PRETRAIN_FORMAT,
    'dwc.config': JSON.stringify(cfg),
    'dwc.state': JSON.stringify(state),
    'dwc.adamStep': String(clip.step),
    activation: clip.arch.activation,
    naming: clip.arch.naming,
  });
}

/** Tokenizer vocabulary of a given CLIP (its folder, or the folder of its file) copied into the run folder. */
function copyVocabulary(clipPath: string, out: string): ClipTokenizer {
  const dir = statSync(clipPath).isDirectory() ? clipPath : dirname(clipPath);
  let tok: ClipTokenizer;
  try {
    tok = ClipTokenizer.fromDir(dir);
  } catch (e) {
    throw new DwcError(`pretrain: the CLIP folder ${dir} has no tokenizer vocabulary (vocab.json + merges.txt or bpe_simple_vocab*.txt.gz): ${(e as Error).message}`, 'DWC_DATA_MISSING');
  }
  if (resolve(dir) === resolve(out)) return tok;
  if (existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt'))) {
    copyFileAtomic(join(dir, 'vocab.json'), join(out, 'vocab.json'));
    copyFileAtomic(join(dir, 'merges.txt'), join(out, 'merges.txt'));
  } else writeHfVocab(out, tok.merges); // OpenAI's layout: the same ids as vocab.json + merges.txt
  return ClipTokenizer.fromDir(out);
}

/**
 * Image–text pairs of the training split: its image captions; a dataset without any (FashionIQ
 * without its attribute files, Shoes, a generic folder without captions) gives the (target image,
 * modification text) of its training queries instead — the text describes the target (PL4CIR-SPEC.md
 * §1 "the target domain's images and their descriptions"; this engine's choice, docs/MODEL.md §16).
 */
export function trainingPairs(ds: Dataset, log?: (m: string) => void): { id: string; caption: string }[] {
  const caps = ds.captions(ds.trainSplit);
  if (caps.length >= 2) return caps;
  const qs = ds.queries(ds.trainSplit, { epoch: 0, seed: 0 });
  if (qs.length < 2) return caps;
  log?.(`pretrain: split '${ds.trainSplit}' of ${ds.name} has no image captions; training on its ${qs.length} queries' (target image, modification text) pairs`);
  return qs.map((q) => ({ id: q.target, caption: clipQueryText(q.text) }));
}

export async function pretrain(opts: PretrainOptions): Promise<PretrainResult> {
  const cb = opts.callbacks ?? {};
  const log = (m: string) => cb.onLog?.(m);
  let clip: Clip;
  let tokenizer: ClipTokenizer;
  let state: PretrainState = { epoch: 0, batch: 0, step: 0, lossSum: 0, lossCount: 0, best: null };
  let cfg: PretrainConfig;
  if (!opts.resume && !opts.config.out) bad("pretrain: 'out' (the run folder) is required");
  if (opts.resume && !existsSync(opts.resume)) throw new DwcError(`pretrain: nothing to resume: ${opts.resume} does not exist`, 'DWC_IO');
  const out = resolve(opts.resume ? (statSync(opts.resume).isDirectory() ? opts.resume : dirname(opts.resume)) : (opts.config.out as string));
  mkdirSync(out, { recursive: true });
  const metricsPath = join(out, 'metrics.jsonl');
  const lastPath = join(out, 'last.safetensors');
  const modelPath = join(out, 'model.safetensors');

  if (opts.resume) {
    const l = loadState(opts.resume);
    ({ clip, tokenizer, state } = l);
    cfg = { ...l.cfg, out, ...(opts.config.epochs !== undefined ? { epochs: opts.config.epochs } : {}) };
    checkConfig(cfg);
    log(`resuming ${out} at epoch ${state.epoch + 1}, batch ${state.batch} (step ${state.step})`);
  } else {
    cfg = resolvePretrainConfig({ ...opts.config, out });
    clip = undefined as unknown as Clip;
    tokenizer = undefined as unknown as ClipTokenizer;
  }

  const ds = opts.dataset ?? (await openDataset({ ...defaultConfig('small'), dataset: cfg.dataset, data: cfg.data, synth: cfg.synth, dims: { ...defaultConfig('small').dims, imageSize: cfg.imageSize } }, log));
  let pairs = trainingPairs(ds, log);
  if (cfg.limitTrain > 0) pairs = pairs.slice(0, cfg.limitTrain);
  if (pairs.length < 2)
    throw new DwcError(`pretrain: dataset ${ds.name} has ${pairs.length} image–caption pairs in split '${ds.trainSplit}'; the CLIP loss needs captions (images[].caption, docs/DATA.md) or training queries`, 'DWC_DATA_MISSING');
  const valSplit = cfg.split ?? ds.valSplit ?? ds.evalSplit;
  if (!ds.splits.includes(valSplit)) bad(`pretrain: dataset ${ds.name} has no split '${valSplit}' (splits: ${ds.splits.join(', ')})`);
  if (valSplit === ds.trainSplit) bad(`pretrain: the validation split '${valSplit}' is the training split`);
  const valPairs = ds.captions(valSplit);
  const rephrase = cfg.rephrase === 'auto' && pairs.every((p) => parseSceneCaption(p.caption) !== undefined);

  if (!opts.resume) {
    if (cfg.clip) {
      clip = Clip.load(cfg.clip);
      tokenizer = copyVocabulary(cfg.clip, out);
      if (opts.config.imageSize !== undefined && opts.config.imageSize !== clip.resolution)
        bad(`pretrain: --image-size ${opts.config.imageSize} differs from the CLIP's resolution ${clip.resolution}`);
      cfg.imageSize = clip.resolution;
      if (tokenizer.vocabSize > clip.vocabSize) bad(`pretrain: the vocabulary has ${tokenizer.vocabSize} ids but the CLIP's token embedding only ${clip.vocabSize} rows`);
    } else {
      const merges = trainBpe([...pairs.map((p) => p.caption), ...ds.trainTexts().map(clipQueryText)], { maxMerges: cfg.merges, minFrequency: 2 });
      writeHfVocab(out, merges);
      tokenizer = ClipTokenizer.fromDir(out);
      if (!cfg.arch.contextLength) {
        // long enough for the longest training caption, a multiple of 8, at most CLIP's 77
        let longest = 0;
        for (const p of pairs) longest = Math.max(longest, tokenizer.encode(p.caption).length + 2);
        cfg.arch.contextLength = Math.min(77, Math.max(16, Math.ceil(longest / 8) * 8));
      }
      clip = Clip.fromTensors(initClip({ ...cfg.arch, resolution: cfg.imageSize, vocabSize: tokenizer.vocabSize, seed: cfg.seed }));
    }
    writeFileSync(metricsPath, '');
  }
  writeTextAtomic(join(out, 'config.json'), JSON.stringify({ pretrain: cfg, clip: clip.arch, vocabSize: tokenizer.vocabSize }, null, 2) + '\n');

  const context = clip.contextLength;
  let truncated = 0;
  for (const p of pairs) if (tokenizer.encode(p.caption).length + 2 > context) truncated++;
  const store = new ImageStore(cfg.imageSize, cfg.workers || undefined);
  const ctx: ClipEvalContext = { clip, tokenizer, store, batchSize: cfg.evalBatchSize, onProgress: cb.onEvalProgress };
  const perEpoch = epochBatches(pairs.length, cfg.batchSize, cfg.seed, 0).length;
  const total = perEpoch * cfg.epochs;
  cb.onStart?.({ pairs: pairs.length, valPairs: valPairs.length, batchesPerEpoch: perEpoch, startEpoch: state.epoch, startBatch: state.batch, out, arch: clip.arch, vocabSize: tokenizer.vocabSize, truncated, context, rephrase });
  const record = (o: object) => appendFileSync(metricsPath, JSON.stringify(o) + '\n');
  const S = cfg.imageSize;
  const per = 3 * S * S;

  const makeBatch = async (idx: Int32Array, epoch: number): Promise<{ pixels: Float32Array; ids: Int32Array }> => {
    const sel = Array.from(idx, (i) => pairs[i]);
    const pixels = await store.load(sel.map((p) => ds.image(p.id).file));
    const texts = sel.map((p, k) => (rephrase ? rephraseSceneCaption(p.caption, cfg.seed, 10_000_000 * (epoch + 1) + idx[k]) : p.caption));
    if (cfg.shift > 0)
      idx.forEach((i, k) => {
        const r = new Rng(cfg.seed, 2_000_000_000 + epoch * 1_000_003 + i);
        shiftInto(pixels, k * per, S, r.int(2 * cfg.shift + 1) - cfg.shift, r.int(2 * cfg.shift + 1) - cfg.shift);
      });
    return { pixels, ids: tokenizer.tokenize(texts, { context, truncate: true }) };
  };

  let lastEval: PretrainEvalRecord | undefined;
  let lr = 0;
  const result = (interrupted: boolean): PretrainResult => ({ out, interrupted, epochsDone: state.epoch, steps: state.step, best: state.best, lastEval, model: modelPath, last: lastPath });
  for (let epoch = state.epoch; epoch < cfg.epochs; epoch++) {
    const list = epochBatches(pairs.length, cfg.batchSize, cfg.seed, epoch);
    const t0 = Date.now();
    let items = 0;
    let next = state.batch < list.length ? makeBatch(list[state.batch], epoch) : undefined;
    for (let b = state.batch; b < list.length; b++) {
      const tb = Date.now();
      const batch = await next!;
      next = b + 1 < list.length ? makeBatch(list[b + 1], epoch) : undefined;
      lr = pretrainLearningRate(cfg, state.step, total);
      const r = await clip.trainStep(batch.pixels, batch.ids, { lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay });
      if (!Number.isFinite(r.loss)) throw new DwcError(`pretrain diverged: loss is ${r.loss} at epoch ${epoch + 1}, batch ${b + 1} (try a lower --lr)`, 'DWC_NUMERIC');
      state.lossSum += r.loss;
      state.lossCount++;
      state.step++;
      state.batch = b + 1;
      items += list[b].length;
      cb.onStep?.({ epoch, batch: b, batches: list.length, step: state.step, loss: r.loss, lr, itemsPerSec: list[b].length / Math.max(1e-3, (Date.now() - tb) / 1000) });
      const stop = opts.signal?.aborted || (opts.stopAfterSteps !== undefined && state.step >= opts.stopAfterSteps);
      if (stop && b + 1 < list.length) {
        await next?.catch(() => undefined);
        saveState(lastPath, clip, cfg, state);
        log(`interrupted: saved ${lastPath} (epoch ${epoch + 1}, batch ${b + 1}); continue with --resume ${out}`);
        return result(true);
      }
    }
    const seconds = (Date.now() - t0) / 1000;
    const rec: PretrainEpochRecord = { event: 'epoch', epoch: epoch + 1, step: state.step, loss: state.lossSum / Math.max(1, state.lossCount), lr, itemsPerSec: items / Math.max(1e-3, seconds), seconds };
    record(rec);
    cb.onEpoch?.(rec);
    state.epoch = epoch + 1;
    state.batch = 0;
    state.lossSum = 0;
    state.lossCount = 0;
    const te = Date.now();
    const ev = await evaluateClipOnSplit(ctx, ds, valSplit, { composition: cfg.evalComposition });
    const improved = !state.best || ev.mean > state.best.mean;
    if (improved) state.best = { epoch: epoch + 1, mean: ev.mean };
    lastEval = { event: 'eval', epoch: epoch + 1, ...ev, best: improved, seconds: (Date.now() - te) / 1000 };
    record(lastEval);
    cb.onEval?.(lastEval);
    if (improved) clip.save(modelPath);
    saveState(lastPath, clip, cfg, state);
    const stop = opts.signal?.aborted || (opts.stopAfterSteps !== undefined && state.step >= opts.stopAfterSteps);
    if (stop && epoch + 1 < cfg.epochs) {
      log(`interrupted: saved ${lastPath} after epoch ${epoch + 1}; continue with --resume ${out}`);
      return result(true);
    }
  }
  if (!existsSync(modelPath)) clip.save(modelPath); // --epochs 0: the given weights, for evaluation
  if (!existsSync(lastPath)) saveState(lastPath, clip, cfg, state);
  // the eval split (test) once, with the weights of model.safetensors
  let test: PretrainEvalRecord | undefined;
  if (!opts.skipTest && (ds.evalSplit !== valSplit || cfg.epochs === 0)) {
    const te = Date.now();
    const best = Clip.load(modelPath);
    const ev = await evaluateClipOnSplit({ ...ctx, clip: best }, ds, ds.evalSplit, { composition: cfg.evalComposition });
    test = { event: 'test', epoch: state.best?.epoch ?? state.epoch, ...ev, seconds: (Date.now() - te) / 1000 };
    record(test);
    cb.onEval?.(test);
  }
  return { ...result(false), test };
}

function stripUndef<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Reads a pretrain run's metrics.jsonl. */
export function readPretrainMetrics(dir: string): (PretrainEpochRecord | PretrainEvalRecord)[] {
  const p = join(dir, 'metrics.jsonl');
  if (!existsSync(p)) return [];
  return readFileSync(p, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}
