// Parity of one full training iteration (spec §6, §11, §13) with the PyTorch reference
// (scripts/reference/dwc_ref.py via scripts/fixtures/gen_trace.py): every expected tensor of
// every case within rel err 1e-4 (or the looser bound the generator measured for PyTorch itself).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrace } from '../lib/trace.js';
import { readSafetensors, writeSafetensors } from '../lib/safetensors.js';
import { relErr } from './helpers/index.js';

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

const toNum = (a) => Float64Array.from(a, (x) => Number(x));

test('trace fixtures exist', (t) => {
  t.true(cases.length >= 1, `no trace cases under ${dir} (run: /usr/bin/python3 scripts/fixtures/gen_trace.py)`);
});

// serial: one native iteration at a time (keeps the OpenMP/BLAS thread pools uncontended)
for (const c of cases) {
  test.serial(`trace parity: ${c}`, async (t) => {
    const meta = JSON.parse(readFileSync(join(dir, c, 'case.json'), 'utf8'));
    const out = join(tmp, `${c}.safetensors`);
    await runTrace(join(dir, c, 'weights.safetensors'), join(dir, c, 'inputs.safetensors'), out, optsFromArgs(meta.args ?? []));
    const got = readSafetensors(out).tensors;
    const exp = readSafetensors(join(dir, c, 'expected.safetensors')).tensors;
    const rel = Math.min(meta.tolerance?.rel ?? 1e-4, 1e-4);
    const loose = meta.tolerance?.loose ?? {};
    const bad = [];
    for (const [name, e] of exp) {
      const g = got.get(name);
      if (!g) {
        bad.push(`${name}: missing`);
        continue;
      }
      const numel = (s) => s.reduce((a, b) => a * b, 1);
      if (numel(g.shape) !== numel(e.shape)) {
        bad.push(`${name}: shape [${g.shape}] vs [${e.shape}]`);
        continue;
      }
      if (e.dtype === 'I64' && g.dtype !== 'I64') bad.push(`${name}: dtype ${g.dtype}, expected I64`);
      const a = toNum(g.data);
      const b = toNum(e.data);
      const lim = loose[name];
      if (lim && lim.abs !== undefined) {
        let n = 0;
        for (let i = 0; i < a.length; i++) n += (a[i] - b[i]) ** 2;
        if (Math.sqrt(n) > lim.abs) bad.push(`${name}: abs err ${Math.sqrt(n).toExponential(2)} > ${lim.abs}`);
      } else {
        const r = relErr(a, b);
        const tol = lim?.rel ?? rel;
        if (!(r <= tol)) bad.push(`${name}: rel err ${r.toExponential(2)} > ${tol}`);
      }
    }
    t.true(exp.size > 50, `expected file of ${c} holds only ${exp.size} tensors`);
    t.deepEqual(bad, [], `${c} (${meta.note ?? ''}): ${bad.length} of ${exp.size} tensors off`);
  });
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
