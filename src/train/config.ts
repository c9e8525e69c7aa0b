// Training configuration: defaults < preset < JSON config file < flags (issue 6; presets spec §12).
// The resolved config is written to the run folder as config.json.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { DwcError } from '../native.js';
import { FUSION_BETA_MAX } from '../eval/fusion.js';
import { ABLATIONS, type Ablation, type ModelCreateOptions, type ModelDims } from './types.js';
import { PRECISIONS, type Precision } from '../precision.js';

export type Preset = 'small' | 'paper';
export type DatasetKind = 'synthetic' | 'generic' | 'fashioniq' | 'shoes' | 'fashion200k';
export const DATASETS: readonly DatasetKind[] = ['synthetic', 'generic', 'fashioniq', 'shoes', 'fashion200k'];

export interface SynthConfig {
  seed: number;
  /** Fraction of training queries with wrong/ambiguous text. */
  noise: number;
  trainQueries?: number;
  testQueries?: number;
  /** Validation queries (default: as many as test). */
  valQueries?: number;
}

export interface TrainConfig {
  preset: Preset;
  dataset: DatasetKind;
  /** Dataset folder; for `synthetic` optional (generated into the cache on first use). */
  data?: string;
  /** FashionIQ category: dress, shirt, toptee or all. */
  category?: string;
  synth: SynthConfig;
  dims: ModelDims;
  epochs: number;
  batchSize: number;
  lr: number;
  /**
   * Adam step of the local stream and its trunk (default: lr; the schedule scales both). The small
   * preset's local stream trains its trunk from scratch and takes a larger step (docs/EXPERIMENTS.md).
   */
  lrLocal?: number;
  /** Learning-rate schedule over all iterations: 'cosine' decays lr to lr·LR_MIN_FACTOR by the last step, 'constant' keeps it. */
  lrSchedule: 'cosine' | 'constant';
  /**
   * Linear warm-up of both streams' rates over the first lrWarmup iterations (`--lr-warmup`; from
   * lr/lrWarmup to lr), then the schedule over the rest. Unset: none.
   */
  lrWarmup?: number;
  weightDecay: number;
  /**
   * Temperature τ of both streams' contrastive loss and of SSG's soft labels (DWC-SPEC.md §5:
   * 0.07; the small preset 0.05, docs/EXPERIMENTS.md "Flips and τ").
   */
  tau: number;
  seed: number;
  device: string;
  out: string;
  /** Frozen global-stream feature files (safetensors keyed by image id / query index). */
  features?: string;
  /** CLIP weights (file or folder with its vocabulary): the frozen features are computed natively and cached (docs/CLIP.md "Features and train --clip"); Dc = CLIP's embed dim. */
  clip?: string;
  /**
   * Stage 3 with the encoder unfrozen (PL4CIR-SPEC.md §1, docs/MODEL.md §16): the CLIP of `clip`
   * (with `stages` 2,3: the stage-2 CLIP) is the global stream's encoder, trained by the global
   * step at this Adam learning rate (the lr schedule scales it too). Unset: the CLIP is frozen.
   */
  encoderLr?: number;
  trunk: 'finetune' | 'frozen';
  /** Global stream's pooled encoder (no --features): GeM over the local trunk's maps ('shared') or its own small trunk ('own'). */
  encoderTrunk: 'shared' | 'own';
  /** The pooled encoder's image pooling: GeM over each window of a g×g grid of the map (1 = one global GeM); keeps where things are. */
  encoderGrid: number;
  /**
   * Dropout of the global stream (its projections, editors and combiner, spec §3; `--global-dropout`).
   * Unset: the spec's 0.5 of both streams. docs/EXPERIMENTS.md "The global half: diagnosis".
   */
  globalDropout?: number;
  /**
   * ReLU in the global stream's text projection f_T (spec §3.1; `--global-text-relu on|off`).
   * Unset: on, as the spec. Off: f_T = norm(Dropout(W_txt e_T + b)) (docs/MODEL.md §3).
   */
  globalTextRelu?: boolean;
  /**
   * Weight of L_mut in the global / the local stream's loss (spec §5: 1.0 each;
   * `--mutual-weight-global`, `--mutual-weight-local`). Unset: 1.
   */
  mutualWeightGlobal?: number;
  mutualWeightLocal?: number;
  /** torchvision-named safetensors weights of the local trunk (local.img_model.*, src/trunk.ts); frozen mode is meant for pretrained trunks. */
  trunkWeights?: string;
  ablations: Ablation[];
  /**
   * Self-supervised adaptive weighting (PL4CIR-SPEC.md §3; docs/MODEL.md): the streams whose
   * combiner w also learns from w* = σ((s_I − s_T)/awTau) with L_w = awLambda · mean BCE(w, w*).
   * Default none (the ablation no-aw also turns it off).
   */
  adaptiveWeighting: ('global' | 'local')[];
  awTau: number;
  awLambda: number;
  maskPadding: boolean;
  mutualTarget: 'target' | 'reference';
  detachSoftLabels: boolean;
  /** Max tokens per text (longer texts are cut). */
  maxLength: number;
  /** Evaluate every n epochs (and always after the last). */
  evalEvery: number;
  /**
   * Split of the per-epoch evaluation and best-checkpoint selection (`--split`). Default: the
   * dataset's validation split when it has one, else its eval split. After the last epoch the
   * eval split (test) is also reported when it differs.
   */
  evalSplit?: string;
  /** Queries/images per embedding batch during evaluation. */
  evalBatchSize: number;
  /**
   * Horizontal-flip augmentation: a flipped training query (half of them) mirrors both images and
   * swaps left/right in its text (src/data/text.ts mirrorText). On in the small preset. With
   * frozen features (--features, --clip) the global stream's vectors stay those of the unmirrored pair.
   */
  flip: boolean;
  /**
   * Translation augmentation (`--shift px`): each training query's reference and target move by
   * the same random (dx, dy) in [−px, px]² pixels, edge pixels repeated (src/data/images.ts
   * shiftInto). 0 = off. With frozen features (--features, --clip) the global stream's vectors stay
   * those of the unshifted pair.
   */
  shift: number;
  /** Image decode concurrency. */
  workers: number;
  /** Training-set cap (0 = all), for quick runs and tests. */
  limitTrain: number;
  /** Write report.svg/png at the end. */
  report: boolean;
  /**
   * Compute precision of the GEMMs and convolutions (`--precision`, src/precision.ts): fp32, or bf16
   * with fp32 accumulation, master weights and Adam where the CPU has AVX512_BF16 or AMX. Stored in
   * the run's config and checkpoints; `--resume` keeps it and refuses a change. Absent (runs before
   * it existed): fp32.
   */
  precision: Precision;
  /**
   * PL4CIR stages `train` runs (PL4CIR-SPEC.md §1; docs/MODEL.md §16): [3] (DWC alone, the
   * encoder of the global stream as today) or [2, 3] (stage 2, the CLIP loss on the dataset's
   * image–caption pairs into OUT/stage2, then DWC with `clip` = OUT/stage2).
   */
  stages: number[];
  /** Stage-2 settings of a staged run (src/train/pretrain.ts; the rest from this config). */
  pretrain: StagePretrainConfig;
  /**
   * The halves' weight β of a two-stream model (docs/MODEL.md §7): the query·gallery score is
   * β·s_G + s_L (1 = the paper's sum). 'auto': chosen after training on the validation split from
   * FUSION_BETA_GRID (src/eval/fusion.ts) with the best checkpoint, and stored (as a number) in the
   * checkpoints and config.json; eval, search, index and serve use the stored β.
   */
  fusionBeta: number | 'auto';
}

/** Settings of stage 2 a staged `train` takes (src/train/pretrain.ts PretrainConfig); dataset, data, synth, image size, seed, workers come from the train config. */
export interface StagePretrainConfig {
  epochs?: number;
  batchSize?: number;
  lr?: number;
  warmup?: number;
  lrMinFactor?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  shift?: number;
  rephrase?: 'auto' | 'off';
  merges?: number;
  seed?: number;
  evalComposition?: boolean;
  limitTrain?: number;
  /** A CLIP from scratch only (no `clip`): src/train/pretrain.ts PretrainArch. */
  arch?: { patchSize?: number; visionWidth?: number; visionLayers?: number; textWidth?: number; textLayers?: number; contextLength?: number; embedDim?: number };
}
export const STAGE_PRETRAIN_KEYS: readonly string[] = ['epochs', 'batchSize', 'lr', 'warmup', 'lrMinFactor', 'beta1', 'beta2', 'eps', 'weightDecay', 'shift', 'rephrase', 'merges', 'seed', 'evalComposition', 'limitTrain', 'arch'];
export const STAGE_ARCH_KEYS: readonly string[] = ['patchSize', 'visionWidth', 'visionLayers', 'textWidth', 'textLayers', 'contextLength', 'embedDim'];

/** τ of DWC-SPEC.md §5 (the paper preset's, and every run stored before `tau` was a setting). */
export const SPEC_TAU = 0.07;

// paper: the reference's constant Adam rate; small: a cosine decay (a short run on 2 cores)
// small: both streams at 5e-3 after a 250-step linear warm-up, the global stream at dropout 0.1
// without the text ReLU, the reference's mutual-learning targets (§10), flips with mirrored texts
// and τ = 0.05, 16 epochs — measured on the default run, chosen on val (docs/EXPERIMENTS.md "Tuning the default
// run", "Flips and τ", "The global half: options and a search")
export const PRESETS: Record<
  Preset,
  { dims: ModelDims; lr: number; lrLocal?: number; lrWarmup?: number; globalDropout?: number; globalTextRelu?: boolean; lrSchedule: TrainConfig['lrSchedule']; mutualTarget: TrainConfig['mutualTarget']; epochs: number; batchSize: number; fusionBeta?: TrainConfig['fusionBeta']; tau: number; flip: boolean }
> = {
  small: { dims: { D: 128, C: 128, H: 8, W: 8, E: 128, Dc: 128, imageSize: 64 }, lr: 5e-3, lrLocal: 5e-3, lrWarmup: 250, globalDropout: 0.1, globalTextRelu: false, lrSchedule: 'cosine', mutualTarget: 'reference', epochs: 16, batchSize: 64, fusionBeta: 'auto', tau: 0.05, flip: true },
  paper: { dims: { D: 1024, C: 2048, H: 7, W: 7, E: 512, Dc: 1024, imageSize: 224 }, lr: 1e-4, lrSchedule: 'constant', mutualTarget: 'target', epochs: 50, batchSize: 32, tau: SPEC_TAU, flip: false },
};

export function defaultConfig(preset: Preset = 'small'): TrainConfig {
  const p = PRESETS[preset];
  return {
    preset,
    dataset: 'synthetic',
    synth: { seed: 0, noise: 0 },
    dims: { ...p.dims },
    epochs: p.epochs,
    batchSize: p.batchSize,
    lr: p.lr,
    ...(p.lrLocal !== undefined ? { lrLocal: p.lrLocal } : {}),
    ...(p.lrWarmup !== undefined ? { lrWarmup: p.lrWarmup } : {}),
    ...(p.globalDropout !== undefined ? { globalDropout: p.globalDropout } : {}),
    ...(p.globalTextRelu !== undefined ? { globalTextRelu: p.globalTextRelu } : {}),
    lrSchedule: p.lrSchedule,
    weightDecay: 1e-6,
    tau: p.tau,
    seed: 0,
    device: 'cpu',
    out: 'runs/dwc',
    trunk: 'finetune',
    encoderTrunk: 'shared',
    encoderGrid: 1,
    ablations: [],
    adaptiveWeighting: [],
    awTau: 0.1,
    awLambda: 0.1,
    maskPadding: true,
    mutualTarget: p.mutualTarget,
    detachSoftLabels: false,
    maxLength: 32,
    evalEvery: 1,
    evalBatchSize: 128,
    flip: p.flip,
    shift: 0,
    workers: 0,
    limitTrain: 0,
    report: true,
    precision: 'fp32',
    stages: [3],
    pretrain: {},
    fusionBeta: p.fusionBeta ?? 1,
  };
}

/** A partial config as found in a JSON file or built from flags (nested objects partial too). */
export type PartialConfig = Partial<Omit<TrainConfig, 'dims' | 'synth'>> & { dims?: Partial<ModelDims>; synth?: Partial<SynthConfig> };

export class ConfigError extends DwcError {
  constructor(message: string) {
    super(message, 'DWC_BAD_ARGUMENT');
    this.name = 'ConfigError';
  }
}

const TOP_KEYS = new Set(Object.keys(defaultConfig()).concat(['data', 'category', 'features', 'clip', 'encoderLr', 'trunkWeights', 'lrLocal', 'evalSplit', 'lrWarmup', 'globalDropout', 'globalTextRelu', 'mutualWeightGlobal', 'mutualWeightLocal']));
const DIM_KEYS = new Set(Object.keys(PRESETS.small.dims));
const SYNTH_KEYS = new Set(['seed', 'noise', 'trainQueries', 'testQueries', 'valQueries']);

/** Reads a JSON config file; unknown keys are an error naming them. */
export function readConfigFile(path: string): PartialConfig {
  if (!existsSync(path)) throw new ConfigError(`config file ${path} does not exist`);
  let o: unknown;
  try {
    o = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`config file ${path} is not valid JSON (${(e as Error).message})`);
  }
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw new ConfigError(`config file ${path} must hold a JSON object`);
  checkKeys(o as Record<string, unknown>, path);
  return o as PartialConfig;
}

function checkKeys(o: Record<string, unknown>, where: string): void {
  for (const k of Object.keys(o)) {
    if (!TOP_KEYS.has(k)) throw new ConfigError(`${where}: unknown setting '${k}'`);
    if (k === 'dims' || k === 'synth') {
      const v = o[k];
      if (!v || typeof v !== 'object') throw new ConfigError(`${where}: '${k}' must be an object`);
      const allowed = k === 'dims' ? DIM_KEYS : SYNTH_KEYS;
      for (const kk of Object.keys(v)) if (!allowed.has(kk)) throw new ConfigError(`${where}: unknown setting '${k}.${kk}'`);
    }
    if (k === 'pretrain') {
      const v = o[k] as Record<string, unknown>;
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${where}: 'pretrain' must be an object of stage-2 settings (${STAGE_PRETRAIN_KEYS.join(', ')})`);
      for (const kk of Object.keys(v)) if (!STAGE_PRETRAIN_KEYS.includes(kk)) throw new ConfigError(`${where}: unknown setting 'pretrain.${kk}' (stage-2 settings: ${STAGE_PRETRAIN_KEYS.join(', ')})`);
      const a = v.arch as Record<string, unknown> | undefined;
      if (a !== undefined && (!a || typeof a !== 'object' || Array.isArray(a))) throw new ConfigError(`${where}: 'pretrain.arch' must be an object`);
      if (a) for (const kk of Object.keys(a)) if (!STAGE_ARCH_KEYS.includes(kk)) throw new ConfigError(`${where}: unknown setting 'pretrain.arch.${kk}' (${STAGE_ARCH_KEYS.join(', ')})`);
    }
  }
}

function merge(base: TrainConfig, over: PartialConfig | undefined): TrainConfig {
  if (!over) return base;
  const out: TrainConfig = { ...base, dims: { ...base.dims }, synth: { ...base.synth }, pretrain: { ...base.pretrain } };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    if (k === 'dims') Object.assign(out.dims, stripUndef(v as object));
    else if (k === 'synth') Object.assign(out.synth, stripUndef(v as object));
    else if (k === 'pretrain') {
      const p = v as StagePretrainConfig;
      const arch = p.arch || out.pretrain?.arch ? { ...out.pretrain?.arch, ...stripUndef(p.arch ?? {}) } : undefined;
      out.pretrain = { ...out.pretrain, ...stripUndef(p), ...(arch ? { arch } : {}) };
    }
    else (out as unknown as Record<string, unknown>)[k] = v;
  }
  return out;
}

function stripUndef(o: object): object {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/**
 * Resolves the configuration: defaults of the preset < config file < flags. The preset is taken
 * from flags, else the file, else `small`; its dims/lr/epochs are the base the others override.
 * With `base` (the config stored in a checkpoint being resumed) the base is that config instead.
 */
export function resolveConfig(file: PartialConfig | undefined, flags: PartialConfig | undefined, base?: TrainConfig): TrainConfig {
  if (file) checkKeys(file as Record<string, unknown>, 'config');
  if (flags) checkKeys(flags as Record<string, unknown>, 'flags');
  const preset = (flags?.preset ?? file?.preset ?? base?.preset ?? 'small') as Preset;
  if (!(preset in PRESETS)) throw new ConfigError(`unknown preset '${preset}' (expected small or paper)`);
  if (base && base.preset !== preset) throw new ConfigError(`cannot resume a '${base.preset}' run with preset '${preset}'`);
  // one precision per run: its Adam moments and best checkpoint were made at it (docs/PERFORMANCE.md "bf16")
  const askedPrecision = flags?.precision ?? file?.precision;
  const runPrecision = base?.precision ?? 'fp32';
  if (base && askedPrecision !== undefined && askedPrecision !== runPrecision)
    throw new ConfigError(`--resume continues the run at the precision it was trained with (${runPrecision}); 'precision' cannot change (got ${askedPrecision}): start a new run with --out for ${askedPrecision}`);
  const cfg = merge(merge(base ? merge(defaultConfig(preset), base as PartialConfig) : defaultConfig(preset), file), flags);
  // a run stored before lrLocal existed stepped both streams at lr
  if (base && base.lrLocal === undefined && file?.lrLocal === undefined && flags?.lrLocal === undefined) delete cfg.lrLocal;
  // … and without warm-up, the global stream at the spec's dropout and text ReLU (runs before 2026-12-02 evening)
  if (base) for (const k of ['lrWarmup', 'globalDropout', 'globalTextRelu'] as const) if (base[k] === undefined && file?.[k] === undefined && flags?.[k] === undefined) delete cfg[k];
  // … and at the spec's τ
  if (base && base.tau === undefined && file?.tau === undefined && flags?.tau === undefined) cfg.tau = SPEC_TAU;
  validateConfig(cfg);
  cfg.out = resolve(cfg.out);
  if (cfg.data) cfg.data = resolve(cfg.data);
  if (cfg.features) cfg.features = resolve(cfg.features);
  if (cfg.clip) cfg.clip = resolve(cfg.clip);
  return cfg;
}

function posInt(v: unknown, name: string, min = 1): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ConfigError(`'${name}' must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
}
function finite(v: unknown, name: string, lo: number, hi: number): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) throw new ConfigError(`'${name}' must be a number in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
}
function oneOf(v: unknown, name: string, allowed: readonly string[]): void {
  if (typeof v !== 'string' || !allowed.includes(v)) throw new ConfigError(`'${name}' must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
}

export function validateConfig(c: TrainConfig): void {
  oneOf(c.preset, 'preset', Object.keys(PRESETS));
  oneOf(c.dataset, 'dataset', DATASETS);
  if (c.dataset !== 'synthetic' && !c.data) throw new ConfigError(`dataset '${c.dataset}' needs its folder: pass --data <dir>`);
  if (c.dataset === 'fashioniq' && c.category !== undefined) oneOf(c.category, 'category', ['dress', 'shirt', 'toptee', 'all']);
  for (const k of Object.keys(c.dims) as (keyof ModelDims)[]) posInt(c.dims[k], `dims.${k}`);
  posInt(c.epochs, 'epochs');
  posInt(c.batchSize, 'batchSize', 2);
  finite(c.lr, 'lr', 0, 10);
  if (c.lrLocal !== undefined) finite(c.lrLocal, 'lrLocal', 0, 10);
  oneOf(c.lrSchedule, 'lrSchedule', ['cosine', 'constant']);
  if (c.lrWarmup !== undefined) posInt(c.lrWarmup, 'lrWarmup', 0);
  finite(c.weightDecay, 'weightDecay', 0, 1);
  if (typeof c.tau !== 'number' || !Number.isFinite(c.tau) || c.tau <= 0 || c.tau > 10) throw new ConfigError(`'tau' (--tau) must be a number in (0, 10], got ${JSON.stringify(c.tau)}`);
  posInt(c.seed, 'seed', 0);
  if (typeof c.device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(c.device)) throw new ConfigError(`'device' must be cpu, cuda or cuda:N, got ${JSON.stringify(c.device)}`);
  if (c.clip !== undefined && (typeof c.clip !== 'string' || !c.clip)) throw new ConfigError("'clip' must be the path of CLIP weights (a file or a folder)");
  if (c.clip && c.features) throw new ConfigError("'clip' and 'features' exclude each other: --clip computes the features, --features reads them from a file");
  if (c.encoderLr !== undefined) {
    if (typeof c.encoderLr !== 'number' || !Number.isFinite(c.encoderLr) || c.encoderLr < 0 || c.encoderLr > 10)
      throw new ConfigError(`'encoderLr' (--encoder-lr) must be a number in [0, 10], got ${JSON.stringify(c.encoderLr)}`);
    if (!c.clip && !(Array.isArray(c.stages) && c.stages.includes(2)))
      throw new ConfigError("'encoderLr' (--encoder-lr) unfreezes a CLIP encoder: give one with --clip DIR or train it in stage 2 with --stages 2,3");
    if (c.ablations.includes('local-only')) throw new ConfigError("'encoderLr' (--encoder-lr) trains the global stream's CLIP; the ablation 'local-only' has no global stream");
    if (!(c.lr > 0)) throw new ConfigError("'encoderLr' (--encoder-lr) is taken relative to 'lr' by the schedule; 'lr' must be > 0");
  }
  oneOf(c.trunk, 'trunk', ['finetune', 'frozen']);
  oneOf(c.encoderTrunk, 'encoderTrunk', ['shared', 'own']);
  posInt(c.encoderGrid, 'encoderGrid');
  if (c.globalDropout !== undefined && (typeof c.globalDropout !== 'number' || !Number.isFinite(c.globalDropout) || c.globalDropout < 0 || c.globalDropout >= 1))
    throw new ConfigError(`'globalDropout' (--global-dropout) must be a number in [0, 1), got ${JSON.stringify(c.globalDropout)}`);
  if (c.globalTextRelu !== undefined && typeof c.globalTextRelu !== 'boolean') throw new ConfigError(`'globalTextRelu' (--global-text-relu on|off) must be true or false, got ${JSON.stringify(c.globalTextRelu)}`);
  for (const [k, flag] of [['mutualWeightGlobal', '--mutual-weight-global'], ['mutualWeightLocal', '--mutual-weight-local']] as const) {
    const v = c[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 100))
      throw new ConfigError(`'${k}' (${flag}) must be a number in [0, 100], got ${JSON.stringify(v)}`);
  }
  if (c.encoderGrid > Math.min(8, c.dims.H, c.dims.W)) throw new ConfigError(`'encoderGrid' must be at most 8 and at most the map size ${c.dims.H}x${c.dims.W}, got ${c.encoderGrid}`);
  if (c.trunkWeights !== undefined && (typeof c.trunkWeights !== 'string' || !c.trunkWeights)) throw new ConfigError("'trunkWeights' must be a file path");
  if (!Array.isArray(c.ablations)) throw new ConfigError(`'ablations' must be a list of ${ABLATIONS.join(', ')}`);
  for (const a of c.ablations) oneOf(a, 'ablations', ABLATIONS);
  if (c.ablations.includes('global-only') && c.ablations.includes('local-only')) throw new ConfigError("ablations 'global-only' and 'local-only' exclude each other");
  if (c.ablations.includes('image-only') && c.ablations.includes('text-only')) throw new ConfigError("ablations 'image-only' and 'text-only' exclude each other");
  oneOf(c.mutualTarget, 'mutualTarget', ['target', 'reference']);
  if (!Array.isArray(c.adaptiveWeighting)) throw new ConfigError("'adaptiveWeighting' must be a list of streams: global, local (or empty)");
  for (const s of c.adaptiveWeighting) oneOf(s, 'adaptiveWeighting', ['global', 'local']);
  if (typeof c.awTau !== 'number' || !Number.isFinite(c.awTau) || c.awTau <= 0) throw new ConfigError(`'awTau' must be a number > 0, got ${JSON.stringify(c.awTau)}`);
  finite(c.awLambda, 'awLambda', 0, 1000);
  posInt(c.maxLength, 'maxLength');
  posInt(c.evalEvery, 'evalEvery');
  posInt(c.evalBatchSize, 'evalBatchSize');
  posInt(c.workers, 'workers', 0);
  posInt(c.limitTrain, 'limitTrain', 0);
  posInt(c.shift, 'shift', 0);
  if (c.shift * 2 >= c.dims.imageSize) throw new ConfigError(`'shift' ${c.shift} is too large for ${c.dims.imageSize}-pixel images (at most ${Math.ceil(c.dims.imageSize / 2) - 1})`);
  if (c.shift > 0 && c.trunk === 'frozen') throw new ConfigError(`'shift' needs the trunk trained: a frozen trunk reads cached maps of the unshifted images (--trunk frozen)`);
  posInt(c.synth.seed, 'synth.seed', 0);
  finite(c.synth.noise, 'synth.noise', 0, 1);
  if (c.synth.trainQueries !== undefined) posInt(c.synth.trainQueries, 'synth.trainQueries');
  if (c.synth.testQueries !== undefined) posInt(c.synth.testQueries, 'synth.testQueries');
  if (c.synth.valQueries !== undefined) posInt(c.synth.valQueries, 'synth.valQueries', 0);
  if (c.evalSplit !== undefined && (typeof c.evalSplit !== 'string' || !c.evalSplit)) throw new ConfigError("'evalSplit' must be a split name (e.g. val or test)");
  if (c.fusionBeta !== 'auto' && (typeof c.fusionBeta !== 'number' || !Number.isFinite(c.fusionBeta) || c.fusionBeta < 0 || c.fusionBeta > FUSION_BETA_MAX))
    throw new ConfigError(`'fusionBeta' must be a number in [0, ${FUSION_BETA_MAX}] or 'auto', got ${JSON.stringify(c.fusionBeta)}`);
  oneOf(c.precision, 'precision', PRECISIONS);
  if (c.precision === 'fp16' && !/^cuda(:\d+)?$/.test(c.device)) throw new ConfigError(`'precision' fp16 runs on the GPU only (fp16 GEMMs with dynamic loss scaling): set 'device' to cuda or cuda:N, got '${c.device}'`);
  for (const k of ['maskPadding', 'detachSoftLabels', 'flip', 'report'] as const) if (typeof c[k] !== 'boolean') throw new ConfigError(`'${k}' must be true or false`);
  validateStages(c);
}

/** The stage lists `train` runs (PL4CIR-SPEC.md §1): stage 1 is given CLIP weights (`clip`), stage 2 alone is `dwc-native pretrain`. */
/** Stage 2's run folder inside OUT of a staged run (src/train/stages.ts). */
export const STAGE2_DIR = 'stage2';

export function validateStages(c: Pick<TrainConfig, 'stages' | 'pretrain' | 'clip' | 'features'> & { out?: string }): void {
  const s = c.stages;
  const got = JSON.stringify(s);
  if (!Array.isArray(s) || !s.length) throw new ConfigError(`'stages' must be 3 or 2,3 (the PL4CIR stages train runs, in order), got ${Array.isArray(s) ? 'an empty list' : got}`);
  for (const x of s) {
    if (typeof x !== 'number' || !Number.isInteger(x)) throw new ConfigError(`'stages' must be a list of stage numbers (2,3 or 3), got ${got}`);
    if (x === 1) throw new ConfigError("'stages': stage 1 (open domain) is not trained here: it is given CLIP weights (--clip DIR); run --stages 2,3 with --clip DIR to start stage 2 from them");
    if (x !== 2 && x !== 3) throw new ConfigError(`'stages': there is no stage ${x} (PL4CIR has stages 1-3; train runs 2,3 or 3), got ${got}`);
  }
  for (let i = 1; i < s.length; i++) if (s[i] <= s[i - 1]) throw new ConfigError(`'stages' must be in increasing order without repeats (each stage starts from the last), got ${got}`);
  if (!s.includes(3)) throw new ConfigError(`'stages' ${got}: train always ends with stage 3 (DWC); for stage 2 alone run dwc-native pretrain`);
  const staged = s.includes(2);
  if (staged && c.features) throw new ConfigError("'stages' 2,3 trains the global stream's encoder in stage 2 and reads it in stage 3; it excludes 'features' (frozen vectors from a file)");
  const p = c.pretrain;
  if (!p || typeof p !== 'object' || Array.isArray(p)) throw new ConfigError("'pretrain' must be an object of stage-2 settings");
  if (!staged && Object.keys(p).length) throw new ConfigError(`stage-2 settings (${Object.keys(p).map((k) => `pretrain.${k}`).join(', ')}) only apply with --stages 2,3`);
  // (stage 3's own config — stored in its checkpoints, read back by eval — has `clip` = OUT/stage2)
  const ownStage2 = !!c.clip && !!c.out && resolve(c.clip) === join(resolve(c.out), STAGE2_DIR);
  if (staged && c.clip && !ownStage2 && p.arch && Object.keys(p.arch).length) throw new ConfigError('pretrain.arch (--pretrain-* sizes) only applies to a CLIP from scratch; with --clip DIR stage 2 continues those weights');
}

export function modelOptions(c: TrainConfig, vocabSize: number): ModelCreateOptions {
  return {
    preset: c.preset,
    dims: { ...c.dims },
    vocabSize,
    seed: c.seed,
    lr: c.lr,
    ...(c.lrLocal !== undefined ? { lrLocal: c.lrLocal } : {}),
    weightDecay: c.weightDecay,
    tau: c.tau,
    device: c.device,
    trunk: c.trunk,
    ablations: [...c.ablations],
    maskPadding: c.maskPadding,
    mutualTarget: c.mutualTarget,
    detachSoftLabels: c.detachSoftLabels,
    frozenFeatures: !!(c.features || clipFrozen(c)),
    ...(c.clip && c.encoderLr !== undefined ? { clipEncoder: { clip: c.clip, encoderLr: c.encoderLr } } : {}),
    encoderTrunk: c.encoderTrunk,
    encoderGrid: c.encoderGrid,
    ...(c.globalDropout !== undefined ? { globalDropout: c.globalDropout } : {}),
    ...(c.globalTextRelu !== undefined ? { globalTextRelu: c.globalTextRelu } : {}),
    ...(c.mutualWeightGlobal !== undefined ? { mutualWeightGlobal: c.mutualWeightGlobal } : {}),
    ...(c.mutualWeightLocal !== undefined ? { mutualWeightLocal: c.mutualWeightLocal } : {}),
    trunkWeights: c.trunkWeights,
    // 'auto' before it is chosen (training, per-epoch evaluation): the paper's sum
    fusionBeta: typeof c.fusionBeta === 'number' ? c.fusionBeta : 1,
    ...(c.adaptiveWeighting.length && !c.ablations.includes('no-aw')
      ? { adaptiveWeighting: { global: c.adaptiveWeighting.includes('global'), local: c.adaptiveWeighting.includes('local'), tau: c.awTau, lambda: c.awLambda } }
      : {}),
  };
}

/** `clip` is read as frozen features (no `encoderLr`); with `encoderLr` it is the unfrozen encoder (docs/MODEL.md §16). */
export function clipFrozen(c: Pick<TrainConfig, 'clip' | 'encoderLr'>): boolean {
  return !!c.clip && c.encoderLr === undefined;
}

export function writeConfig(c: TrainConfig): string {
  mkdirSync(c.out, { recursive: true });
  const p = join(c.out, 'config.json');
  writeFileSync(p, JSON.stringify(c, null, 2) + '\n');
  return p;
}

/** The cache folder (DWC_NATIVE_CACHE, else $XDG_CACHE_HOME/dwc-native, else ~/.cache/dwc-native). */
export function cacheDir(): string {
  if (process.env.DWC_NATIVE_CACHE) return resolve(process.env.DWC_NATIVE_CACHE);
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'dwc-native');
}

/** Folder of the built-in synthetic benchmark for these options (hash of the options). */
export function syntheticDir(c: TrainConfig): string {
  // v2: captions and the val split (train/test files as in v1)
  const key = JSON.stringify({ v: 2, imageSize: c.dims.imageSize, ...c.synth });
  const h = createHash('sha256').update(key).digest('hex').slice(0, 12);
  return join(cacheDir(), `synth-${h}`);
}

/** The final fraction of the learning rate under the cosine schedule. */
export const LR_MIN_FACTOR = 0.02;

/**
 * Learning rate of iteration `step` (0-based) of `total`: after a linear warm-up over the first
 * lrWarmup steps (if any), lr, or its cosine decay to lr·LR_MIN_FACTOR over the remaining steps.
 */
export function learningRate(cfg: Pick<TrainConfig, 'lr' | 'lrSchedule' | 'lrWarmup'>, step: number, total: number): number {
  const w = cfg.lrWarmup ?? 0;
  if (step < w) return (cfg.lr * (step + 1)) / w;
  if (cfg.lrSchedule === 'constant' || total - w <= 1) return cfg.lr;
  const t = Math.min(1, Math.max(0, (step - w) / (total - w - 1)));
  return cfg.lr * (LR_MIN_FACTOR + (1 - LR_MIN_FACTOR) * 0.5 * (1 + Math.cos(Math.PI * t)));
}
