// Public API of training, evaluation, reports and search (re-exported from src/index.ts as
// `train`). It sits above src/train/ and src/report/ and wires the report writer into train().
export { train, readMetrics, resumePath } from './train/trainer.js';
export type { TrainOptions, TrainResult, TrainCallbacks, StepInfo, EpochRecord, EvalRecord } from './train/trainer.js';
export { resolveConfig, readConfigFile, defaultConfig, PRESETS, syntheticDir, cacheDir, modelOptions, learningRate, LR_MIN_FACTOR } from './train/config.js';
export type { TrainConfig, PartialConfig, Preset, DatasetKind } from './train/config.js';
export { readCheckpointInfo, checkPreset, patchCheckpointConfig } from './train/checkpoint.js';
export type { CheckpointInfo, TrainerState } from './train/checkpoint.js';
export { setModelFactory, getModelFactory, setReportWriter, getReportWriter } from './train/wiring.js';
export { nativeModelFactory, nativeConfig, NativeRetrievalModel } from './train/native_model.js';
export { ImageStore, epochOrder, epochBatches, makeBatchMaker } from './train/batches.js';
export * from './train/types.js';
export { evaluate, formatEvalTable } from './eval/evaluate.js';
export type { EvalResult, EvalSetResult } from './eval/evaluate.js';
export { evaluateCheckpoint } from './eval/run.js';
export { computeRecall, recallFromTopK, meanRecall } from './eval/recall.js';
export { topK, topKBruteForce, selectTopK } from './eval/topk.js';
export { writeReport, renderReportSvg, svgToPng } from './report/report.js';
export { awEvalStats } from './eval/records.js';
export type { AwEvalStats, ReportWriter, WriteReportOptions } from './eval/records.js';
export type { ReportData, ReportExample } from './report/report.js';
export { Searcher, writePreview, checkKnownWords } from './search/searcher.js';
export type { SearchResult, SearchHit } from './search/searcher.js';
export { embedGallery, listGalleryImages, galleryHash, galleryCachePath } from './search/gallery.js';
export { FUSION_BETA_GRID, FUSION_BETA_MAX, scaleGlobalHalf, pickFusionBeta } from './eval/fusion.js';
export type { FusionRecord } from './eval/records.js';
export { epochFusion } from './eval/fusion.js';
export type { EpochFusion, FusionPoint } from './eval/fusion.js';

import { writeReport as reportWriter } from './report/report.js';
import { setReportWriter as register } from './train/wiring.js';
register(reportWriter);
