// Every kernel forward and backward against PyTorch: fixtures written by
// scripts/fixtures/gen_*.py (Debian's python3-torch) and committed under test/fixtures/.
import test from 'ava';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { runOp } from '../lib/index.js';
import { loadFixtureCases, relErr } from './helpers/index.js';

const dir = new URL('./fixtures/kernels/', import.meta.url).pathname;
const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));

test('kernel fixtures exist', (t) => {
  t.true(files.length > 0, `no fixtures in ${dir}: run npm run fixtures`);
});

for (const file of files) {
  for (const c of loadFixtureCases(join(dir, file))) {
    test(`pytorch parity ${file}: ${c.name} (${c.op})`, (t) => {
      const got = runOp(c.op, c.inputs, c.attrs);
      const names = Object.keys(c.expected);
      t.true(names.length > 0);
      for (const k of names) {
        t.truthy(got[k], `op ${c.op} did not return '${k}'`);
        t.deepEqual(got[k].shape, c.expected[k].shape, `${k} shape`);
        const err = relErr(got[k].toArray(), c.expected[k].data);
        t.true(err <= 1e-4, `${k}: relative error ${err.toExponential(3)} > 1e-4`);
      }
    });
  }
}
