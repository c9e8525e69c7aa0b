// Training: trainer, config, checkpoints, the native model wiring (the full public API with
// evaluation, reports and search is src/api.ts; src/train never imports src/report).
export { train, readMetrics, resumePath } from './trainer.js';
export type { TrainOptions, TrainResult, TrainCallbacks, StepInfo, EpochRecord, EvalRecord } from './trainer.js';
export { resolveConfig, readConfigFile, defaultConfig, PRESETS, syntheticDir, cacheDir, modelOptions, learningRate, LR_MIN_FACTOR } from './config.js';
export type { TrainConfig, PartialConfig, Preset, DatasetKind } from './config.js';
export { readCheckpointInfo, checkPreset, patchCheckpointConfig } from './checkpoint.js';
export type { CheckpointInfo, TrainerState } from './checkpoint.js';
export { setModelFactory, getModelFactory, setReportWriter, getReportWriter } from './wiring.js';
export { nativeModelFactory, nativeConfig, NativeRetrievalModel } from './native_model.js';
export { ImageStore, epochOrder, epochBatches, makeBatchMaker } from './batches.js';
export * from './types.js';
export { evaluate, formatEvalTable } from '../eval/evaluate.js';
export type { EvalResult, EvalSetResult } from '../eval/evaluate.js';
export { evaluateCheckpoint } from '../eval/run.js';
export { computeRecall, recallFromTopK, meanRecall } from '../eval/recall.js';
export { topK, topKBruteForce, selectTopK } from '../eval/topk.js';
export { FUSION_BETA_GRID, FUSION_BETA_MAX, scaleGlobalHalf, pickFusionBeta } from '../eval/fusion.js';
export type { FusionRecord } from '../eval/records.js';
