// The small interfaces the trainer, evaluator and search code are written against.
// The native model (src/model.ts) and the data layer (src/data/) satisfy them; tests use fakes.
import type { Dataset } from '../data/dataset.js';

/** Dimensions of a model (spec §12). */
export interface ModelDims {
  /** Embedding dim of each stream. */
  D: number;
  /** Feature-map channels of the local stream's trunk output. */
  C: number;
  /** Feature-map height/width. */
  H: number;
  W: number;
  /** Word-embedding dim. */
  E: number;
  /** Frozen vision-language feature dim (global stream input). */
  Dc: number;
  /** Input image side in pixels. */
  imageSize: number;
}

/** Ablation and baseline switches (spec §6 item 4 and the experiments of issue 6). */
export type Ablation =
  | 'no-ssg'
  | 'no-editors'
  | 'fixed-w'
  | 'no-mutual'
  | 'global-only'
  | 'local-only'
  | 'image-only'
  | 'text-only'
  | 'no-aw';
export const ABLATIONS: readonly Ablation[] = ['no-ssg', 'no-editors', 'fixed-w', 'no-mutual', 'global-only', 'local-only', 'image-only', 'text-only', 'no-aw'];

/** Self-supervised adaptive weighting (PL4CIR-SPEC.md §3): on/off per stream, τ_w, λ_w. */
export interface AdaptiveWeighting {
  global: boolean;
  local: boolean;
  tau: number;
  lambda: number;
}

/** Everything a model needs to be created (subset of the resolved TrainConfig). */
export interface ModelCreateOptions {
  preset: string;
  dims: ModelDims;
  vocabSize: number;
  seed: number;
  lr: number;
  /** Adam step of the local stream and its trunk (default: lr). */
  lrLocal?: number;
  weightDecay: number;
  device: string;
  trunk: 'finetune' | 'frozen';
  ablations: Ablation[];
  /** Mask padded tokens (default) or run over them like the reference (§10). */
  maskPadding: boolean;
  /** Other stream's target embedding for L_mut from the target image (default) or the reference image (§10). */
  mutualTarget: 'target' | 'reference';
  detachSoftLabels: boolean;
  /** True when the global stream trains from frozen feature files instead of the pooled encoder. */
  frozenFeatures: boolean;
  /** The pooled encoder's image maps: the local trunk's ('shared', default) or a trunk of its own trained with the global stream ('own'). */
  encoderTrunk?: 'shared' | 'own';
  /** The pooled encoder's g×g pooling grid (default 1: one global GeM). */
  encoderGrid?: number;
  /** Temperature τ of the contrastive loss and the soft labels (default 0.07, spec §5). */
  tau?: number;
  /** Dropout of the heads (default 0.5, spec §3/§4). */
  dropout?: number;
  /** Dropout of the global stream's projections and MLPs (default: `dropout`). */
  globalDropout?: number;
  /** ReLU in the global text projection (default true, spec §3.1; false: f_T = norm(Dropout(W e_T + b))). */
  globalTextRelu?: boolean;
  /** Weight of L_mut in the global / local stream's loss (default 1, spec §5). */
  mutualWeightGlobal?: number;
  mutualWeightLocal?: number;
  /** torchvision-named safetensors file loaded into the local trunk (local.img_model.*). */
  trunkWeights?: string;
  /** Adaptive weighting (PL4CIR-SPEC.md §3); absent or both streams off: none (the ablation no-aw forces it off). */
  adaptiveWeighting?: AdaptiveWeighting;
  /**
   * Stage 3 with the CLIP encoder unfrozen (docs/MODEL.md §16): the global stream's encoder is the
   * CLIP of `clip` (its weights and tokenizer read when the model is created; a checkpoint then
   * carries them), trained at Adam step `encoderLr` (scaled by the schedule like lr).
   */
  clipEncoder?: { clip: string; encoderLr: number };
  /** The training vocabulary's words (id order): the CLIP encoder's token table is built from them at creation. */
  vocabWords?: readonly string[];
  /** Both streams: the halves' weight β of the query·gallery score s = β·s_G + s_L (docs/MODEL.md §7; default 1). */
  fusionBeta?: number;
}

/** Frozen global-stream features for one batch (row-major [B, Dc]). */
export interface BatchFeatures {
  img: Float32Array;
  txt: Float32Array;
  target?: Float32Array;
}

/** One batch of (reference image, text) queries; images planar normalised [B,3,S,S]. */
export interface QueryBatch {
  B: number;
  imageSize: number;
  images: Float32Array;
  tokens: Int32Array;
  lengths: Int32Array;
  L: number;
  features?: BatchFeatures;
  /** Image ids of the reference images (evaluation: their trunk maps kept from the gallery pass). */
  sourceIds?: string[];
}

/** One batch of gallery/target images. */
export interface ImageBatch {
  B: number;
  imageSize: number;
  images: Float32Array;
  /** Image ids (evaluation: the trunk maps of the queries' reference images are kept, keepTrunkMaps). */
  ids?: string[];
  /** Frozen features of these images [B, Dc] when the global stream uses feature files. */
  features?: Float32Array;
}

/** A training batch: queries, their target images and target labels (§5). */
export interface TrainBatch extends QueryBatch {
  targets: Float32Array;
  labels: Int32Array;
  /** Image ids of the reference / target images and the left-right flips applied (frozen-trunk cache). */
  sourceIds?: string[];
  targetIds?: string[];
  flips?: boolean[];
  /** Source of w* (PL4CIR-SPEC.md §3): a frozen encoder's embeddings [B, dim] (stage 3 passes stage 2's). */
  aw?: AwSource;
}

/** A frozen encoder's embeddings of the reference images, texts and targets [B, dim] (w* source). */
export interface AwSource {
  dim: number;
  ref: Float32Array;
  txt: Float32Array;
  tgt: Float32Array;
}

/** A query batch with its targets, for w* at evaluation (PL4CIR-SPEC.md §3). */
export interface QueryTargetBatch extends QueryBatch {
  targets: Float32Array;
  targetFeatures?: Float32Array;
  aw?: AwSource;
}

/** What a model needs to build its frozen-trunk cache (issue 5 item 4). */
export interface TrunkCacheContext {
  /** Image ids to cache (every image training reads). */
  ids: string[];
  /** Planar normalised [n,3,S,S] images for ids (no flips). */
  load(ids: string[]): Promise<Float32Array>;
  imageSize: number;
  /** Folder of the cache files (the run folder). */
  dir: string;
  batchSize: number;
  onProgress?(done: number, total: number): void;
  onLog?(msg: string): void;
}

export interface StreamLosses {
  contrastive: number;
  mutual: number;
  /** Adaptive weighting on for the stream (PL4CIR-SPEC.md §3): L_w and mean |w − w*| of the batch. */
  aw?: number;
  awGap?: number;
}
export interface StepLosses {
  global?: StreamLosses;
  local?: StreamLosses;
}

export interface QueryEmbeddings {
  /** [B, dim] row-major, L2-normalised per stream and concatenated ([q_G; q_L], §7). */
  embeddings: Float32Array;
  dim: number;
  /** Combiner weight w per query of the global stream, if it ran. */
  wGlobal?: Float32Array;
  /** Combiner weight w per query of the local stream, if it ran. */
  wLocal?: Float32Array;
}
export interface ImageEmbeddings {
  embeddings: Float32Array;
  dim: number;
}

/**
 * What the trainer needs from a model. One iteration of §6 is `step`; `setTraining(false)`
 * switches dropout/batch norm to eval mode (§7). Dropout masks must depend only on the seed
 * and the step count, so that a model saved and loaded mid-run continues with the same numbers.
 */
export interface RetrievalModel {
  readonly preset: string;
  readonly dims: ModelDims;
  /** Iterations done so far (restored by load). */
  readonly stepCount: number;
  setTraining(on: boolean): void;
  /** Adam's learning rate for the following steps (schedules); models without one ignore it. */
  setLearningRate?(lr: number): void;
  step(batch: TrainBatch): Promise<StepLosses>;
  /** With both streams the global half of each row is scaled by the halves' weight β (`fusionBeta`, §7); `o.fusionBeta` overrides it (1: the plain [q_G; q_L]). */
  embedQueries(batch: QueryBatch, o?: { fusionBeta?: number }): Promise<QueryEmbeddings>;
  /** Both streams: the halves' weight β its queries are scored with (default 1); settable. */
  fusionBeta?: number;
  embedImages(batch: ImageBatch): Promise<ImageEmbeddings>;
  /**
   * Evaluation: while set, embedImages keeps the trunk maps of these image ids (the queries'
   * reference images, all in the gallery) and embedQueries of a batch whose reference images are
   * all kept starts from them instead of running the trunk again; null drops them.
   */
  keepTrunkMaps?(ids: ReadonlySet<string> | null): void;
  /** Writes weights + optimizer state + step count atomically; metadata goes into the header. */
  save(path: string, metadata: Record<string, string>): Promise<void> | void;
  dispose?(): void;
  /** w* of a query batch with its targets (adaptive weighting on, PL4CIR-SPEC.md §3); undefined when off. */
  adaptiveTargets?(batch: QueryTargetBatch): Promise<Float32Array | undefined>;
  /** Frozen-trunk mode: computes (or reuses) the cached trunk maps before training. */
  prepareTrunkCache?(ctx: TrunkCacheContext): Promise<{ reused: boolean; entries: number }>;
}

export interface ModelFactory {
  create(opts: ModelCreateOptions): Promise<RetrievalModel> | RetrievalModel;
  /** Loads a checkpoint written by `save` (checks every name, shape and dtype). */
  load(path: string, opts: ModelCreateOptions): Promise<RetrievalModel> | RetrievalModel;
}

/** Options of the synthetic benchmark generator (data issue). */
export interface SynthOptions {
  out: string;
  seed: number;
  imageSize: number;
  noise: number;
  trainQueries?: number;
  testQueries?: number;
}
export type SynthGenerator = (opts: SynthOptions) => Promise<unknown>;

/** Opens a dataset of a given format at a path (data issue). */
export type DatasetLoader = (format: string, path: string, opts: { category?: string }) => Promise<Dataset> | Dataset;

/** Frozen features keyed by image id and by query index (data issue, item 6). */
export interface FeatureSource {
  readonly dim: number;
  image(id: string): Float32Array;
  /** Text feature of query `index` of `split` (order of Dataset.queries). */
  text(split: string, index: number): Float32Array;
}
