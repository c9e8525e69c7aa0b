// `--precision fp32|bf16` (issue 12 item 3; docs/PERFORMANCE.md): one check for train, eval,
// search and bench. bf16 is allowed only where the CPU has AVX512_BF16 or AMX (and the bf16 kernels
// exist); anywhere else it is an error that says why, never a silent fp32 run or a slow emulation.
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
