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
export * as train from './train/index.js';
export { evaluateCheckpoint } from './eval/run.js';
export { Searcher } from './search/searcher.js';
export { checkPrecision, PRECISIONS, type Precision } from './precision.js';
