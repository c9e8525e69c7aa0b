// npm run bench -- <suite> [--json]: runs bench/<suite>.js. Suites: kernels, step, data, trunk, clip.
import { existsSync, readdirSync } from 'node:fs';

const suite = process.argv[2];
const here = new URL('.', import.meta.url).pathname;
const suites = readdirSync(here).filter((f) => f.endsWith('.js') && !['run.js', 'common.js'].includes(f)).map((f) => f.slice(0, -3));
if (!suite || suite === '--help' || !existsSync(`${here}${suite}.js`)) {
  console.error(`usage: npm run bench -- <suite> [--json]\nsuites: ${suites.join(', ')}`);
  process.exit(suite && suite !== '--help' ? 2 : 0);
}
await import(`./${suite}.js`);
