// `--precision fp32|bf16` (issue 12 item 3; docs/PERFORMANCE.md "bf16"): one check and one switch for
// train, eval, search, features and bench. bf16 is allowed only where the CPU has AVX512_BF16 or AMX
// (and the bf16 kernels exist); anywhere else it is an error that says why, never a silent fp32 run
// or a slow emulation. bf16 means what torch.autocast('cpu', dtype=torch.bfloat16) does: GEMMs and
// convolutions take bf16 operands with fp32 accumulation; master weights, Adam, losses, softmaxes
// and normalisations stay fp32.
import { addon, DwcError } from './native.js';

export type Precision = 'fp32' | 'bf16';
export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16'];

/** Returns the precision to run (fp32 when not given); throws a DwcError naming the reason otherwise. */
export function checkPrecision(precision: string | undefined): Precision {
  const p = precision ?? 'fp32';
  if (!(PRECISIONS as readonly string[]).includes(p)) {
    throw new DwcError(`'--precision' must be fp32 or bf16, got '${p}'`, 'DWC_BAD_ARGUMENT');
  }
  const why = addon().precisionCheck(p);
  if (why) throw new DwcError(`--precision ${p}: ${why}`, 'DWC_UNSUPPORTED');
  return p as Precision;
}

/** The process-wide compute precision now (fp32 on an addon without the precision switch). */
export function currentPrecision(): Precision {
  return (addon().setKernels().precision as Precision | undefined) ?? 'fp32';
}

/**
 * Checks `precision` (checkPrecision) and makes it the process-wide compute precision of every
 * later GEMM and convolution (addon().setKernels({precision})). Returns the precision that was set
 * before, so that a library call can put it back. fp32 on an addon without the switch is a no-op.
 */
export function usePrecision(precision: string | undefined): Precision {
  const p = checkPrecision(precision);
  const before = currentPrecision();
  if (p !== before) addon().setKernels({ precision: p });
  return before;
}

/** Runs `fn` with `precision` set (usePrecision), then puts the earlier precision back. */
export async function withPrecision<T>(precision: string | undefined, fn: () => Promise<T>): Promise<T> {
  const before = usePrecision(precision);
  try {
    return await fn();
  } finally {
    if (currentPrecision() !== before) addon().setKernels({ precision: before });
  }
}

/**
 * What a cache key of computed vectors (CLIP features, gallery embeddings) adds for the precision
 * now: nothing at fp32 (keys of earlier runs stay valid), {precision} otherwise.
 */
export function precisionKey(): { precision?: Precision } {
  const p = currentPrecision();
  return p === 'fp32' ? {} : { precision: p };
}
