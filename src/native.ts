// Loads the native addon once and gives it types. Native errors carry a `code`
// (DWC_BAD_ARGUMENT, DWC_BUSY, DWC_RELEASED, DWC_NUMERIC, DWC_IO, DWC_FORMAT, DWC_INTERNAL, DWC_CUDA).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type DType = 'float32' | 'int32';

export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: DType;
  readonly numel: number;
  readonly released: boolean;
  toArray(): Float32Array | Int32Array;
  release(): void;
}

export interface NativeTensorCtor {
  new (dtype: DType, shape: number[], data?: Float32Array | Int32Array): NativeTensor;
}

export interface NativeInfo {
  version: string;
  backends: string[];
  blas: string;
  blasThreads: number;
  threads: number;
  openmp: boolean;
  /** "CUDA compiled, no device (…)", "CUDA compiled, 1 device" or "CUDA not compiled in". */
  cudaStatus?: string;
  cudaRuntime?: string;
  /** Implementation behind every GEMM (dwc::sgemm) and behind the convolutions (docs/PERFORMANCE.md). */
  gemm: 'onednn' | 'cblas';
  conv: 'auto' | 'onednn' | 'im2col';
  /** oneDNN version when compiled in, else null. */
  onednn: string | null;
  /** How the CPU backend was built: "onednn", "cblas (chosen: DWC_BACKEND=cblas)" or "cblas (fallback: …)". */
  backendBuild: string;
  /** ISA the kernels run: "oneDNN avx2", or "OpenBLAS core Haswell" on the CBLAS path. */
  isa: string;
  /** The CPU's own features (cpuid) less those masked by DWC_CPU_MASK; `masked` names those ("" when none; `features` says it too). */
  cpu: { vendor: string; brand: string; features: string; avx2: boolean; avx512: boolean; avx512_bf16: boolean; amx: boolean; masked: string };
  /** Whether bf16 compute can run here, and why not. */
  precision: { bf16: boolean; bf16Reason: string | null };
  /** Non-empty when OpenBLAS runs a generic core on a better CPU (with the OPENBLAS_CORETYPE fix). */
  blasWarnings: string[];
  cudaDevices?: { index: number; name: string; memoryBytes: number; computeCapability: string }[];
}

export type OpInputs = Record<string, NativeTensor>;
export type OpOptions = Record<string, number | boolean>;

export interface Addon {
  Tensor: NativeTensorCtor;
  runOp(name: string, inputs?: OpInputs, options?: OpOptions): Record<string, NativeTensor>;
  runOpAsync(name: string, inputs?: OpInputs, options?: OpOptions): Promise<Record<string, NativeTensor>>;
  listOps(): { name: string; doc: string }[];
  info(): NativeInfo;
  setNumThreads(n: number): number;
  /** Selects the GEMM / conv implementation (benches, tests); returns the settings now. */
  setKernels(opts?: { gemm?: 'onednn' | 'cblas'; conv?: 'auto' | 'onednn' | 'im2col'; epilogue?: 'fused' | 'separate'; weightCache?: 'on' | 'off'; bwdWeights?: 'onednn' | 'gemm'; precision?: 'fp32' | 'bf16'; bf16Gemm?: 'amx' | 'onednn' }): {
    gemm: string;
    /** Process-wide compute precision of GEMMs and convolutions (src/precision.ts); absent on an addon without bf16 kernels. */
    precision?: string;
    conv: string;
    epilogue: string;
    weightCache: string;
    bwdWeights: string;
    /** Kernel of the bf16 GEMMs: 'amx' (the engine's tile GEMM, default with AMX) or 'onednn' (docs/PERFORMANCE.md); absent on an older addon. */
    bf16Gemm?: string;
  };
  /** oneDNN primitives created so far, cached conv geometries, weight reorders executed (the trunks' blocked weight copies). */
  kernelStats(): { primitivesCreated: number; convCacheEntries: number; matmulPrimitivesCreated: number; weightReorders: number; /** GEMM/conv calls that ran in bf16 (absent on an addon without bf16 kernels). */ bf16Calls?: number; /** Route of bf16 backward-weights now: 'gemm' or 'onednn' (absent on an older addon). */ bf16BwdWeights?: string };
  /** null when the precision can run here, else why not. */
  precisionCheck(precision: string): string | null;
  /** The CUDA backends' GEMM precision (after setting it when given; src/precision.ts); absent on an older addon. */
  setDevicePrecision?(precision?: 'fp32' | 'bf16' | 'fp16'): string;
  // Further modules (model, checkpoints, ...) register more exports.
  [key: string]: unknown;
}

/** Error thrown for native failures; `code` says which kind. */
export class DwcError extends Error {
  constructor(
    message: string,
    public readonly code: string,
  ) {
    super(message);
    this.name = 'DwcError';
  }
}

const here = dirname(fileURLToPath(import.meta.url));
export const packageRoot = join(here, '..');

function loadAddon(): Addon {
  const candidates = [
    process.env.DWC_NATIVE_ADDON,
    join(packageRoot, 'build', 'Release', 'dwc_native.node'),
    join(packageRoot, 'build', 'Debug', 'dwc_native.node'),
  ].filter((p): p is string => !!p);
  const require = createRequire(import.meta.url);
  for (const p of candidates) {
    if (existsSync(p)) return require(p) as Addon;
  }
  throw new DwcError(
    `dwc-native: the native addon is not built (looked in ${candidates.join(', ')}). ` +
      `Run 'npm run build:native' in ${packageRoot} (needs cmake, g++ and libopenblas-dev).`,
    'DWC_NOT_BUILT',
  );
}

// OpenMP workers must not spin while OpenBLAS threads run (and vice versa): set before the
// addon (and so libgomp) loads. A user's own setting wins.
process.env.OMP_WAIT_POLICY ??= 'PASSIVE';

let cached: Addon | undefined;
export function addon(): Addon {
  if (!cached) cached = loadAddon();
  return cached;
}
