// `dwc-native clip trace` parity with our PyTorch reference (scripts/reference/clip_ref.py via
// scripts/fixtures/gen_clip_trace.py): embeddings, logits, loss and the gradient of every
// trainable tensor, in both namings, within the case's per-tensor bound (1e-4 relative, or the
// kink-aware float64 bound the generator measured). The weights are regenerated here from the
// case's seed and tensor list (mulberry32, integer-exact in both languages).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../lib/safetensors.js';
import { makeRng, relErr } from './helpers/index.js';

const root = new URL('..', import.meta.url).pathname;
const dir = join(root, 'test', 'fixtures', 'clip', 'trace');
const cases = existsSync(dir) ? readdirSync(dir).filter((c) => existsSync(join(dir, c, 'case.json'))) : [];
const tmp = mkdtempSync(join(tmpdir(), 'dwc-clip-trace-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

/** The case's weights: tensor after tensor, v = (u·2 − 1)·scale + offset, float32. */
export function caseWeights(meta) {
  const rng = makeRng(meta.seed);
  const out = new Map();
  for (const [name, shape, kind, scale, offset] of meta.tensors) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (kind === 'arange') {
      out.set(name, { dtype: 'I64', shape, data: BigInt64Array.from({ length: n }, (_, i) => BigInt(i)) });
      continue;
    }
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = (rng.uniform() * 2 - 1) * scale + offset;
    out.set(name, { dtype: 'F32', shape, data: d });
  }
  return out;
}

export function writeCaseWeights(c, into) {
  const meta = JSON.parse(readFileSync(join(dir, c, 'case.json'), 'utf8'));
  mkdirSync(into, { recursive: true });
  writeSafetensors(join(into, meta.weights_file), caseWeights(meta));
  if (meta.config) writeFileSync(join(into, 'config.json'), JSON.stringify(meta.config));
  return meta;
}

test('clip trace fixtures exist (both namings)', (t) => {
  t.true(cases.length >= 2, `no clip trace cases under ${dir} (run: /usr/bin/python3 scripts/fixtures/gen_clip_trace.py)`);
  const namings = new Set(cases.map((c) => JSON.parse(readFileSync(join(dir, c, 'case.json'), 'utf8')).naming));
  t.deepEqual([...namings].sort(), ['hf', 'openai']);
});

for (const c of cases) {
  test.serial(`clip trace parity: ${c}`, (t) => {
    const wdir = join(tmp, c);
    const meta = writeCaseWeights(c, wdir);
    const out = join(tmp, `${c}.out.safetensors`);
    const r = spawnSync(process.execPath, [join(root, 'lib', 'cli', 'main.js'), 'clip', 'trace', '--weights', wdir, '--inputs', join(dir, c, 'inputs.safetensors'), '--out', out, '--json'], { encoding: 'utf8' });
    t.is(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop());
    t.is(summary.naming, meta.naming);
    t.deepEqual(summary.ignoredWeights, []);
    const got = readSafetensors(out).tensors;
    const exp = readSafetensors(join(dir, c, 'expected.safetensors')).tensors;
    // every trainable tensor of the file has a gradient, nothing else does
    const trainable = meta.tensors.filter((x) => x[2] === 'u').map((x) => `grad.${x[0]}`).sort();
    t.deepEqual([...got.keys()].filter((k) => k.startsWith('grad.')).sort(), trainable);
    const bad = [];
    for (const [name, e] of exp) {
      const g = got.get(name);
      if (!g) {
        bad.push(`${name}: missing`);
        continue;
      }
      if (JSON.stringify(g.shape) !== JSON.stringify(e.shape)) {
        bad.push(`${name}: shape [${g.shape}] vs [${e.shape}]`);
        continue;
      }
      const err = relErr(g.data, e.data);
      const tol = meta.tolerance[name];
      if (!(err <= tol)) bad.push(`${name}: rel err ${err.toExponential(2)} > ${tol.toExponential(2)}`);
    }
    t.deepEqual(bad, [], bad.join('\n'));
    t.true(Math.abs(got.get('loss').data[0] - meta.loss) < 1e-4 * Math.abs(meta.loss));
  });
}
