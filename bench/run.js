// npm run bench -- <suite> [--json]: runs bench/<suite>.js. Suites: kernels, step, data, trunk, clip.
import { existsSync, readdirSync } from 'node:fs';

const suite = process.argv[2];
const here = new URL('.', import.meta.url).pathname;
const suites = readdirSync(here).filter((f) => f.endsWith('.js') && !['run.js', 'common.js'].includes(f)).map((f) => f.slice(0, -3));
if (!suite || suite === '--help' || !existsSync(`${here}${suite}.js`)) {
  console.error(`usage: npm run bench -- <suite> [--json]\nsuites: ${suites.join(', ')}`);
  process.exit(suite && suite !== '--help' ? 2 : 0);
}
// --precision fp32|bf16: the suites time fp32; bf16 is checked (and refused where the CPU lacks
// AVX512_BF16/AMX) exactly as train/eval/search do.
const pi = process.argv.indexOf('--precision');
if (pi >= 0) {
  const { checkPrecision } = await import('../lib/index.js');
  try {
    checkPrecision(process.argv[pi + 1]);
  } catch (e) {
    console.error(`bench: ${e.message}`);
    process.exit(2);
  }
}
await import(`./${suite}.js`);
