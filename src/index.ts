// Public library API of dwc-native.
export { addon, DwcError } from './native.js';
export type { NativeInfo, NativeTensor, DType } from './native.js';
export { Tensor, tensor, runOp, runOpAsync } from './tensor.js';
export { version } from './version.js';
export { readSafetensors, writeSafetensors, parseSafetensors, serializeSafetensors } from './safetensors.js';
export type { StTensor, StFile, StDType } from './safetensors.js';

// The native model (spec §2–§6, §9) and the parity trace (§13).
export { DwcModel, inferDims } from './model.js';
export type { ModelDims, ModelOptions, Batch, ParamInfo, StepResult, StreamStep, Embeddings, ModelStats, StreamName } from './model.js';
export { runTrace, traceIteration } from './trace.js';
export type { TraceOptions, TraceResult } from './trace.js';

// CNN trunks (issue 5): torchvision-named weights for local.img_model.*
export { loadTrunkWeights, trunkParams, TRUNK_PREFIX } from './trunk.js';
export type { TrunkSpec, TrunkParam } from './trunk.js';

// Data: synthetic benchmark, dataset formats, image pipeline, vocabulary, feature files.
export * from './data/index.js';

// Training, evaluation, reports and search (names that clash with the above live under `train`).
export * as train from './api.js';
export { evaluateCheckpoint } from './eval/run.js';
export { Searcher } from './search/searcher.js';

// CLIP (CLIP-SPEC.md): the byte-level BPE tokenizer and the image preprocessing.
export { ClipTokenizer, bytesToUnicode, clipCleanText, clipSplit, SOT_TOKEN, EOT_TOKEN } from './clip/tokenizer.js';
export type { TokenizeOptions } from './clip/tokenizer.js';
export { htmlUnescape } from './clip/html.js';
export { preprocessClipImage, preprocessClipImages, clipImageRgb, clipResizedSize, clipCropOffsets } from './clip/preprocess.js';
export type { ClipPreprocessOptions, ClipPreprocessManyOptions, ClipResample } from './clip/preprocess.js';
// Native CLIP (issue #13, CLIP-SPEC.md): ViT image tower, causal text tower, loss, fine-tuning.
export { Clip, describeClip, resolveClipWeights } from './clip/model.js';
export type { ClipArch, ClipNaming, ClipActivation, ClipOptim, ClipLoadOptions, ClipStep, ClipTraceResult, EmbedOptions as ClipEmbedOptions } from './clip/model.js';
export { runClipTrace } from './clip/trace.js';
export type { EmbedImagesOptions as ClipEmbedImagesOptions, EmbedTextsOptions as ClipEmbedTextsOptions } from './clip/model.js';
export { computeClipFeatures, cachedClipFeatures, datasetIdentity, fileSha256, CLIP_FEATURES_VERSION } from './clip/features.js';
export type { ClipFeaturesOptions, ClipFeaturesResult, ClipFeaturesPhase, CachedClipFeatures } from './clip/features.js';
export { randomClipTensors, writeRandomClip, TINY_CLIP_ARCH, TINY_RN_CLIP_ARCH, VIT_B32_ARCH } from './clip/random.js';
export type { ClipTraceSummary } from './clip/trace.js';

// Search as a service (issue 16): the LanceDB gallery index, the query micro-batcher, the HTTP server.
export { GalleryIndex, checkpointIdentity, INDEX_FORMAT } from './search/index_db.js';
export type { GalleryIndexMeta, GalleryRow, IndexHit, AnnOptions, OpenIndexOptions, BuildOptions, UpdateOptions as IndexUpdateOptions, UpdateStats as IndexUpdateStats } from './search/index_db.js';
export { QueryBatcher } from './search/query_batcher.js';
export type { QueryBatcherOptions, QueryBatcherStats, DecodedQuery, QueryVector } from './search/query_batcher.js';
export { createServer } from './serve/server.js';
export type { ServerOptions } from './serve/server.js';
export { checkPrecision, usePrecision, withPrecision, currentPrecision, PRECISIONS, type Precision } from './precision.js';

// PL4CIR stage 2: CLIP pretraining on image–caption pairs, CLIP from scratch, BPE trainer, zero-shot composition
export { pretrain, defaultPretrainConfig, pretrainLearningRate, zeroShotComposition, imageTextRecall, evaluateClipOnSplit, embedDatasetImages, embedTexts, clipQueryText, readPretrainMetrics, PRETRAIN_FORMAT } from './train/pretrain.js';
export type { PretrainConfig, PretrainArch, PretrainOptions, PretrainResult, PretrainState, PretrainCallbacks, PretrainEpochRecord, PretrainEvalRecord, PretrainStepInfo, ClipEvalContext } from './train/pretrain.js';
export { initClip, SMALL_CLIP } from './clip/init.js';
export type { ClipInitOptions } from './clip/init.js';
export { trainBpe, bpeVocabulary, writeHfVocab } from './clip/bpe_train.js';
export type { BpeTrainOptions } from './clip/bpe_train.js';

// PL4CIR stages in one run (train --stages 2,3): stage 2 (pretrain) then stage 3 (DWC on its encoder)
export { trainStages, readStagesFile, stagesRunDir, stage2Config, stage3Config, STAGES_FORMAT, STAGE2_DIR, STAGE2_EPOCHS, STAGE2_FINETUNE_LR } from './train/stages.js';
export type { StagesOptions, StagesResult, StagesCallbacks, StageInfo, Stage2Summary, StagesFile } from './train/stages.js';
export { resolvePretrainConfig, trainingPairs } from './train/pretrain.js';
// search / index / serve on checkpoints trained on CLIP features (docs/SERVE.md "Checkpoints trained on CLIP features")
export { ClipInputs, planSearchClip, clipWeightsIdentity, readsFrozenFeatures } from './search/clip_inputs.js';
export type { SearchClipPlan } from './search/clip_inputs.js';
export { clipPreprocessing, clipPixels, clipTokenIds } from './clip/features.js';
export type { ClipInputOptions } from './clip/features.js';
