// Evaluating a saved checkpoint (library API behind `dwc-native eval`).
import { DwcError } from '../native.js';
import { ImageStore, makeBatchMaker } from '../train/batches.js';
import { checkPreset, readCheckpointInfo } from '../train/checkpoint.js';
import { cacheDir, clipFrozen, modelOptions, resolveConfig, type DatasetKind, type PartialConfig } from '../train/config.js';
import { cachedClipFeatures } from '../clip/features.js';
import type { ModelFactory } from '../train/types.js';
import { getModelFactory, openDataset, openFeatures } from '../train/wiring.js';
import { evaluate, type EvalResult } from './evaluate.js';

export interface EvaluateCheckpointOptions {
  checkpoint: string;
  data?: string;
  dataset?: string;
  category?: string;
  split?: string;
  preset?: string;
  batchSize?: number;
  device?: string;
  /** Both streams: the halves' weight β to score with instead of the checkpoint's stored one (docs/MODEL.md §7). */
  fusionBeta?: number;
  /** Both streams: also score each β of this grid (EvalResult.fusionCurve; docs/MODEL.md §7). */
  betaGrid?: readonly number[];
  modelFactory?: ModelFactory;
  onProgress?: (set: string, phase: 'gallery' | 'queries', done: number, total: number) => void;
}

export async function evaluateCheckpoint(o: EvaluateCheckpointOptions): Promise<EvalResult> {
  const info = readCheckpointInfo(o.checkpoint);
  checkPreset(info, o.preset);
  if (!info.config || !info.vocab) throw new DwcError(`checkpoint ${o.checkpoint} has no config or vocabulary in its metadata`, 'DWC_FORMAT');
  const over: PartialConfig = {};
  if (o.dataset) over.dataset = o.dataset as DatasetKind;
  if (o.data) over.data = o.data;
  if (o.category) over.category = o.category;
  if (o.device) over.device = o.device;
  if (o.batchSize) over.evalBatchSize = o.batchSize;
  if (o.fusionBeta !== undefined) over.fusionBeta = o.fusionBeta;
  // stage 3 of a staged run (--stages 2,3) stores the run's stage list with clip = OUT/stage2: the
  // stages are done, the checkpoint is a DWC model on that CLIP (its config alone would not validate)
  const base = info.config.stages?.includes(2) ? { ...info.config, stages: [3], pretrain: {} } : info.config;
  const cfg = resolveConfig(undefined, over, base);
  const ds = await openDataset(cfg);
  const split = o.split ?? ds.evalSplit;
  if (!ds.queries(split).length) throw new DwcError(`dataset ${ds.name} has no queries in split '${split}' (splits: ${ds.splits.join(', ')})`, 'DWC_BAD_ARGUMENT');
  // a run trained with --clip (or --stages 2,3): its frozen CLIP features, from the cache (computed when missing), as in training
  // a checkpoint with the unfrozen CLIP encoder carries it (docs/MODEL.md §16): no features
  const clipFeatures = clipFrozen(cfg) ? (await cachedClipFeatures({ clip: cfg.clip!, dataset: ds, cacheDir: cacheDir() })).path : undefined;
  const features = await openFeatures(cfg, ds, clipFeatures ?? cfg.features);
  const factory = o.modelFactory ?? (await getModelFactory());
  const model = await factory.load(o.checkpoint, modelOptions(cfg, info.vocab.size));
  try {
    const batches = makeBatchMaker({ dataset: ds, vocab: info.vocab, store: new ImageStore(cfg.dims.imageSize), trainQueries: [], trainLabels: new Int32Array(0), maxLength: cfg.maxLength, flip: false, seed: cfg.seed, features, trainSplit: ds.trainSplit });
    return await evaluate(model, ds, batches, {
      batchSize: cfg.evalBatchSize,
      split,
      restoreTraining: false,
      ...(o.betaGrid ? { betaGrid: o.betaGrid } : {}),
      progress: (phase, done, total) => o.onProgress?.(ds.name, phase, done, total),
    });
  } finally {
    model.dispose?.();
  }
}
