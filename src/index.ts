// Public library API of dwc-native.
export { addon, DwcError } from './native.js';
export type { NativeInfo, NativeTensor, DType } from './native.js';
export { Tensor, tensor, runOp, runOpAsync } from './tensor.js';
export { version } from './version.js';
