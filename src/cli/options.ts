// Flag parsers shared by train/eval/search: numbers are checked where they are parsed, so a bad
// value is a one-line error naming the flag.
import { InvalidArgumentError, type Command } from 'commander';

export function int(v: string): number {
  const n = Number(v);
  if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`'${v}' is not an integer.`);
  return n;
}

export function num(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`'${v}' is not a finite number.`);
  return n;
}

/** `on` | `off` (also true/false) → boolean. */
export function onOff(v: string): boolean {
  const s = v.trim().toLowerCase();
  if (s === 'on' || s === 'true') return true;
  if (s === 'off' || s === 'false') return false;
  throw new InvalidArgumentError(`'${v}' is neither on nor off.`);
}

export function list(v: string, prev: string[] = []): string[] {
  return prev.concat(v.split(',').map((s) => s.trim()).filter(Boolean));
}

/** Help of `--precision` (train, eval, search, features, bench; src/precision.ts). */
export const PRECISION_HELP =
  'fp32 (default) | bf16 | fp16: GEMMs and convolutions with 16-bit operands and fp32 accumulation (weights, Adam, losses, softmaxes and norms stay fp32, as torch.autocast). bf16 on the CPU needs AVX512_BF16 or AMX (dwc-native info says whether this one has them) and runs on any --device cuda; fp16 only with --device cuda (training with dynamic loss scaling)';

/** Only the options the user actually gave on the command line (not commander defaults). */
export function givenOptions(cmd: Command): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(cmd.opts())) if (cmd.getOptionValueSource(k) === 'cli') out[k] = v;
  return out;
}
