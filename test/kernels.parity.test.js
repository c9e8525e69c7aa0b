// Every kernel forward and backward against PyTorch: fixtures written by
// scripts/fixtures/gen_*.py (Debian's python3-torch) and committed under test/fixtures/: expected
// values in float64, each tensor within max(1e-4, 4 × PyTorch float32's error, 3 × its spread).
import test from 'ava';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { runOp } from '../lib/index.js';
import { loadFixtureCases } from './helpers/index.js';
import { assertOpCase } from './helpers/accuracy.js';

const dir = new URL('./fixtures/kernels/', import.meta.url).pathname;
const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));

test('kernel fixtures exist', (t) => {
  t.true(files.length > 0, `no fixtures in ${dir}: run npm run fixtures`);
});

for (const file of files) {
  for (const c of loadFixtureCases(join(dir, file))) {
    // float64 PyTorch answer, judged by the rule of docs/ACCURACY.md (helpers/accuracy.js)
    test(`pytorch parity ${file}: ${c.name} (${c.op})`, (t) => {
      assertOpCase(t, c, runOp(c.op, c.inputs, c.attrs));
    });
  }
}
