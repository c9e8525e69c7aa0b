// npm run bench -- <suite> [--json]: runs bench/<suite>.js. Suites: kernels, step, data, trunk, clip.
import { existsSync, readdirSync } from 'node:fs';

const suite = process.argv[2];
const here = new URL('.', import.meta.url).pathname;
const suites = readdirSync(here).filter((f) => f.endsWith('.js') && !['run.js', 'common.js'].includes(f)).map((f) => f.slice(0, -3));
if (!suite || suite === '--help' || !existsSync(`${here}${suite}.js`)) {
  console.error(`usage: npm run bench -- <suite> [--json]\nsuites: ${suites.join(', ')}`);
  process.exit(suite && suite !== '--help' ? 2 : 0);
}
// --precision fp32|bf16: checked (bf16 refused where the CPU lacks AVX512_BF16/AMX) exactly as
// train/eval/search do; with bf16 the suites of BF16_SUITES time bf16 next to fp32 (common.js
// emitBf16), the others refuse it rather than time fp32 under a bf16 label.
const BF16_SUITES = ['step', 'trunk', 'clip'];
const pi = process.argv.indexOf('--precision');
if (pi >= 0) {
  const { checkPrecision } = await import('../lib/index.js');
  try {
    const p = checkPrecision(process.argv[pi + 1]);
    if (p === 'bf16' && !BF16_SUITES.includes(suite)) throw new Error(`--precision bf16: suite '${suite}' times fp32 only (bf16 suites: ${BF16_SUITES.join(', ')})`);
  } catch (e) {
    console.error(`bench: ${e.message}`);
    process.exit(2);
  }
}
await import(`./${suite}.js`);
