// Parity of one full training iteration (spec §6, §11, §13) with the PyTorch reference
// (scripts/reference/dwc_ref.py via scripts/fixtures/gen_trace.py), judged against PyTorch's
// float64 answer with the rule of docs/ACCURACY.md (test/helpers/accuracy.js): every committed
// case, and the ResNet-50-trunk case at 64x64, generated at test time with /usr/bin/python3.
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrace } from '../lib/trace.js';
import { readSafetensors, writeSafetensors } from '../lib/safetensors.js';
import { checkAccuracy, movedCopy, rejudgeKinks, worstLine } from './helpers/accuracy.js';

const root = new URL('..', import.meta.url).pathname;
const dir = join(root, 'test', 'fixtures', 'trace');
const cases = existsSync(dir) ? readdirSync(dir).filter((c) => existsSync(join(dir, c, 'case.json'))) : [];
const tmp = mkdtempSync(join(tmpdir(), 'dwc-trace-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

// case.json args -> trace options (the CLI flags of spec §13)
function optsFromArgs(args) {
  const o = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--no-dropout') o.dropout = false;
    else if (a === '--unmasked') o.masked = false;
    else if (a === '--detach-soft-labels') o.detachSoftLabels = true;
    else if (a === '--mutual-target') o.mutualTarget = args[++i];
    else throw new Error(`unknown trace flag in case.json: ${a}`);
  }
  return o;
}

test('trace fixtures exist', (t) => {
  t.true(cases.length >= 1, `no trace cases under ${dir} (run: /usr/bin/python3 scripts/fixtures/gen_trace.py)`);
});

// The float tensors of a safetensors file moved by the spread runs' 1e-7 noise (movedCopy).
function movedFile(src, dst, seed) {
  const f = readSafetensors(src);
  let k = 0;
  for (const tt of f.tensors.values()) if (tt.dtype === 'F32') tt.data.set(movedCopy(tt.data, seed * 7919 + k++));
  writeSafetensors(dst, f.tensors, f.metadata);
}

// Runs one case directory through the engine and checks every expected tensor (docs/ACCURACY.md).
// The tensors over the bound are re-judged on engine runs on weights and inputs moved by the
// spread runs' 1e-7 noise (rejudgeKinks, docs/ACCURACY.md "Kinks"): a ReLU input within rounding
// of zero that flips for the engine's summation order but in neither of PyTorch's spread runs.
// Such tensors pass only where the engine meets the bound on a moved input; they are logged.
async function checkCase(t, caseDir, name) {
  const meta = JSON.parse(readFileSync(join(caseDir, 'case.json'), 'utf8'));
  t.truthy(meta.accuracy, `${name}: case.json has no "accuracy" stats (regenerate with gen_trace.py)`);
  const opts = optsFromArgs(meta.args ?? []);
  const trace = async (w, x, tag) => {
    const out = join(tmp, `${name}${tag}.safetensors`);
    await runTrace(w, x, out, opts);
    const got = readSafetensors(out).tensors;
    rmSync(out, { force: true });
    return got;
  };
  const weights = join(caseDir, 'weights.safetensors');
  const inputs = join(caseDir, 'inputs.safetensors');
  const got = await trace(weights, inputs, '');
  const exp = readSafetensors(join(caseDir, 'expected.safetensors')).tensors;
  let { bad, rows } = checkAccuracy(got, exp, meta.accuracy ?? {});
  const kinkNames = new Set();
  t.true(exp.size > 50, `expected file of ${name} holds only ${exp.size} tensors`);
  t.true(rows.length > 0, `${name}: no float tensor compared`);
  const overRows = rows.filter((r) => !(r.err <= r.bound));
  if (overRows.length > 0) {
    const over = overRows.map((r) => ({ ...r, norm: r.norm > 0 ? r.norm : 1, got: got.get(r.name).data, exp: exp.get(r.name).data }));
    const r = await rejudgeKinks(over, async (seed) => {
      const w2 = join(tmp, `${name}-w${seed}.safetensors`);
      const x2 = join(tmp, `${name}-x${seed}.safetensors`);
      movedFile(weights, w2, 1000 + seed);
      movedFile(inputs, x2, 2000 + seed);
      const moved = await trace(w2, x2, `-m${seed}`);
      rmSync(w2, { force: true });
      rmSync(x2, { force: true });
      return (n) => moved.get(n).data;
    });
    for (const k of r.kinks) {
      t.log(`kink: ${k.name}: err ${k.err.toExponential(2)} > bound ${k.bound.toExponential(2)}; on moved input ${k.run} ${k.movedErr.toExponential(2)}, engine spread ${k.spread.toExponential(2)}`);
      kinkNames.add(k.name);
    }
    const left = new Map(r.unexplained.map((u) => [u.name, u]));
    bad = bad.filter((m) => {
      const row = overRows.find((x) => m.startsWith(`${x.name}:`));
      return !row || !kinkNames.has(row.name);
    }).map((m) => {
      const u = [...left.values()].find((x) => m.startsWith(`${x.name}:`));
      return u ? `${m}; on ${r.runs} moved inputs at best ${u.movedErr.toExponential(2)}, engine spread ${u.spread.toExponential(2)}` : m;
    });
  }
  t.deepEqual(bad, [], `${name} (${meta.note ?? ''}): ${bad.length} of ${exp.size} tensors off`);
  // the worst ratio among the tensors judged by PyTorch's bound (kink-explained ones counted apart)
  t.log(worstLine(name, rows.filter((r) => !kinkNames.has(r.name))) + (kinkNames.size ? `; ${kinkNames.size} of ${rows.length} kink-explained` : ''));
  return rows;
}

// serial: one native iteration at a time (keeps the OpenMP/BLAS thread pools uncontended)
for (const c of cases) {
  test.serial(`trace parity: ${c}`, async (t) => {
    await checkCase(t, join(dir, c), c);
  });
}

// The ResNet-50-trunk case (issue 12 item 4): ~40M parameters, so generated here by
// gen_trace.py --resnet50 (float64 reference and three float32 runs) instead of committed.
function hasTorchvision() {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import torch, torchvision'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const r50Title = 'trace parity: resnet50_64 (full ResNet-50 trunk, 64x64 images, generated at test time by /usr/bin/python3)';
if (hasTorchvision()) {
  test.serial(r50Title, async (t) => {
    const gen = join(root, 'scripts', 'fixtures', 'gen_trace.py');
    const t0 = Date.now();
    const r = spawnSync('/usr/bin/python3', [gen, '--resnet50', tmp], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? '2' } });
    t.is(r.status, 0, `gen_trace.py --resnet50 failed: ${r.stderr}`);
    const t1 = Date.now();
    const caseDir = join(tmp, 'resnet50_64');
    try {
      const rows = await checkCase(t, caseDir, 'resnet50_64');
      t.true(rows.length > 700, `only ${rows.length} float tensors compared`);
      const p = rows.filter((x) => x.name.endsWith('pool.p') || x.name.endsWith('pool_i.p') || x.name.endsWith('pool_t.p'));
      t.log(`generation ${((t1 - t0) / 1000).toFixed(1)} s, engine trace and check ${((Date.now() - t1) / 1000).toFixed(1)} s`);
      for (const x of p) t.log(`${x.name}: engine ${x.err.toExponential(2)}, PyTorch f32 ${x.f32Err.toExponential(2)}, spread ${x.spread.toExponential(2)}`);
    } finally {
      rmSync(caseDir, { recursive: true, force: true });
    }
  });
} else {
  const why = '/usr/bin/python3 cannot import torch and torchvision (apt-get install python3-torch python3-torchvision)';
  console.log(`trace.test.js: SKIPPED the ResNet-50-trunk trace parity test: ${why}`);
  test.skip(`${r50Title} — SKIPPED: ${why}`, () => {});
}

const cli = (args) => spawnSync(process.execPath, [join(root, 'lib', 'cli', 'main.js'), 'trace', ...args], { encoding: 'utf8', env: process.env });

test('trace CLI writes the file; a missing weight is an error naming it', (t) => {
  t.true(cases.length > 0);
  const c = join(dir, cases[0]);
  const out = join(tmp, 'cli.safetensors');
  const r = cli(['--weights', join(c, 'weights.safetensors'), '--inputs', join(c, 'inputs.safetensors'), '--out', out, '--no-dropout']);
  t.is(r.status, 0, r.stderr);
  t.true(readSafetensors(out).tensors.has('loss.global.contrastive'));
  // drop one weight
  const w = readSafetensors(join(c, 'weights.safetensors')).tensors;
  w.delete('global.atten_T.3.weight');
  const wp = join(tmp, 'missing.safetensors');
  writeSafetensors(wp, w);
  const r2 = cli(['--weights', wp, '--inputs', join(c, 'inputs.safetensors'), '--out', join(tmp, 'x.safetensors')]);
  t.not(r2.status, 0);
  t.regex(r2.stderr, /missing 'global\.atten_T\.3\.weight'/);
  const r3 = cli(['--weights', join(c, 'weights.safetensors'), '--inputs', join(c, 'inputs.safetensors'), '--out', out, '--mutual-target', 'sideways']);
  t.not(r3.status, 0);
  t.regex(r3.stderr, /--mutual-target/);
});

test('trace: a missing input is an error naming it', async (t) => {
  t.true(cases.length > 0);
  const c = join(dir, cases[0]);
  const x = readSafetensors(join(c, 'inputs.safetensors')).tensors;
  x.delete('labels');
  const xp = join(tmp, 'noinputs.safetensors');
  writeSafetensors(xp, x);
  const err = await t.throwsAsync(runTrace(join(c, 'weights.safetensors'), xp, join(tmp, 'y.safetensors'), { dropout: false }));
  t.regex(err.message, /'labels'/);
});

// The kink rule itself (docs/ACCURACY.md "Kinks"), on made-up tensors: a flip that a moved run
// undoes is explained; a consistent error (a wrong kernel: the same on every moved input) is not,
// nor an error just over the bound that the moved runs barely move.
test('rejudgeKinks: explains a flip a moved input undoes, never a consistent error', async (t) => {
  const exp = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i + 1));
  const norm = Math.hypot(...exp);
  const plus = (d) => Float32Array.from(exp, (v, i) => v + (i === 5 ? d * norm : 0) + 1e-9 * Math.cos(3 * i));
  const item = (name, d) => ({ name, got: plus(d), exp, norm, bound: 1e-4, err: Math.abs(d) });
  const moved = async (i) => (n) => (n === 'flip' ? plus(i === 1 ? 0.05 : 0) : n === 'wrong' ? plus(0.05 + 1e-6 * i) : plus(0.9e-4));
  const r = await rejudgeKinks([item('flip', 0.05), item('wrong', 0.05), item('barely', 1.2e-4)], moved, 3);
  t.deepEqual(r.kinks.map((k) => [k.name, k.run]), [['flip', 2]]);
  t.deepEqual(r.unexplained.map((u) => u.name), ['wrong', 'barely']);
  t.is(r.runs, 3);
  // stops once everything is explained
  const r2 = await rejudgeKinks([item('flip', 0.05)], async () => () => plus(0), 4);
  t.is(r2.runs, 1);
  t.is(r2.kinks.length, 1);
});
