// `dwc-native clip trace` parity with our PyTorch reference (scripts/reference/clip_ref.py via
// scripts/fixtures/gen_clip_trace.py): embeddings, logits, loss and the gradient of every
// trainable tensor, in both namings, against PyTorch's float64 answer by the rule of
// docs/ACCURACY.md (per tensor max(1e-4, 4 × PyTorch float32's error, 3 × its spread)). The weights are regenerated here from the
// case's seed and tensor list (mulberry32, integer-exact in both languages).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../lib/safetensors.js';
import { clipCaseDir as dir, clipCases, writeClipCase } from './helpers/clip.js';
import { checkAccuracy, worstLine } from './helpers/accuracy.js';

const root = new URL('..', import.meta.url).pathname;
const cases = clipCases();
const tmp = mkdtempSync(join(tmpdir(), 'dwc-clip-trace-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

test('clip trace fixtures exist (both namings)', (t) => {
  t.true(cases.length >= 2, `no clip trace cases under ${dir} (run: /usr/bin/python3 scripts/fixtures/gen_clip_trace.py)`);
  const namings = new Set(cases.map((c) => JSON.parse(readFileSync(join(dir, c, 'case.json'), 'utf8')).naming));
  t.deepEqual([...namings].sort(), ['hf', 'openai']);
});

for (const c of cases) {
  test.serial(`clip trace parity: ${c}`, (t) => {
    const wdir = join(tmp, c);
    const meta = writeClipCase(c, wdir);
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
      if (g && JSON.stringify(g.shape) !== JSON.stringify(e.shape)) bad.push(`${name}: shape [${g.shape}] vs [${e.shape}]`);
    }
    // every tensor against the float64 answer by the rule of docs/ACCURACY.md
    t.truthy(meta.accuracy, `${c}: case.json has no "accuracy" stats (regenerate with gen_clip_trace.py)`);
    const acc = checkAccuracy(got, exp, meta.accuracy ?? {});
    bad.push(...acc.bad);
    t.log(worstLine(c, acc.rows));
    t.true(acc.rows.length > 10, `${c}: only ${acc.rows.length} float tensors compared`);
    t.deepEqual(bad, [], bad.join('\n'));
    t.true(Math.abs(got.get('loss').data[0] - meta.loss) < 1e-4 * Math.abs(meta.loss));
  });
}

test.serial('clip trace: bad inputs are one-line errors naming the tensor or flag', (t) => {
  const c = 'vit_openai';
  const wdir = join(tmp, 'errors');
  writeClipCase(c, wdir);
  const cli = (...a) => spawnSync(process.execPath, [join(root, 'lib', 'cli', 'main.js'), 'clip', 'trace', ...a], { encoding: 'utf8' });
  const out = join(tmp, 'err.out.safetensors');
  const inputs = readSafetensors(join(dir, c, 'inputs.safetensors')).tensors;
  const bad = join(tmp, 'bad-inputs.safetensors');
  writeSafetensors(bad, new Map([['input_ids', inputs.get('input_ids')]]));
  let r = cli('--weights', wdir, '--inputs', bad, '--out', out);
  t.is(r.status, 1);
  t.regex(r.stderr, /'pixel_values'/);
  writeSafetensors(bad, new Map([['pixel_values', inputs.get('pixel_values')], ['input_ids', { ...inputs.get('input_ids'), shape: [4, 20], data: new Int32Array(80) }]]));
  r = cli('--weights', wdir, '--inputs', bad, '--out', out);
  t.is(r.status, 1);
  t.regex(r.stderr, /'input_ids' has shape \[4,20\], expected \[5, 16\]/);
  r = cli('--weights', wdir, '--inputs', join(dir, c, 'inputs.safetensors'), '--out', out, '--activation', 'relu');
  t.is(r.status, 1);
  t.regex(r.stderr, /--activation must be 'quick_gelu' or 'gelu'/);
  r = cli('--weights', join(tmp, 'nowhere'), '--inputs', join(dir, c, 'inputs.safetensors'), '--out', out);
  t.is(r.status, 1);
  t.regex(r.stderr, /does not exist/);
  t.false(existsSync(out), 'no output file after a failure');
});
