// `--precision fp32|bf16` end to end (issue 12 item 3; src/precision.ts, docs/PERFORMANCE.md "bf16"):
// the flag is checked by one function and applied process-wide by another; train records it in the
// run's config and checkpoints and a resumed run keeps it (a change is refused); train/eval in bf16
// really run GEMMs/convolutions in bf16 (kernelStats().bf16Calls); an fp32 run after a bf16 run in
// the same process gives the same bits as before it; bad values are named errors; on a CPU without
// bf16 the bf16 cases are skipped (ava reports them as skipped, the reason is logged). The refusal
// runs on every machine: in processes started with DWC_CPU_MASK=avx512_bf16,amx_bf16
// (native/core/cpu_features.h), which see the CPU without bf16 arithmetic. Kernel-level bf16
// accuracy: test/bf16.test.js.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addon, checkPrecision, currentPrecision, usePrecision, withPrecision, train as api } from '../lib/index.js';
import { resolveConfig } from '../lib/train/config.js';
import { readCheckpointInfo } from '../lib/train/checkpoint.js';
import { readSafetensors } from '../lib/safetensors.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cliPath = join(root, 'lib/cli/main.js');
const tmp = () => mkdtempSync(join(tmpdir(), 'dwc-precision-'));
const cache = tmp();
const a = addon();
const why = a.precisionCheck('bf16'); // null where bf16 runs
const hasBf16 = why === null;
const bf16Test = hasBf16 ? test.serial : test.serial.skip;
if (!hasBf16) console.log(`precision.test: the bf16 runs are skipped on this machine: ${why}`);
// the refusal case: processes that see this CPU less its bf16 features
const MASK = 'avx512_bf16,amx_bf16';
const maskedEnv = (mask = MASK) => ({ ...process.env, DWC_NATIVE_CACHE: cache, DWC_CPU_MASK: mask });
const realCpu = a.info().cpu;
const bf16Hardware = realCpu.avx512_bf16 || realCpu.amx;
test.afterEach.always(() => {
  if (a.setKernels().precision !== undefined) a.setKernels({ precision: 'fp32' });
  if (typeof a.setDevicePrecision === 'function') a.setDevicePrecision('fp32');
});

function cli(...args) {
  return cliEnv({ ...process.env, DWC_NATIVE_CACHE: cache }, ...args);
}
function cliEnv(env, ...args) {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', env, timeout: 120000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
// what a process started with DWC_CPU_MASK=mask sees: the addon's bf16 check, its info, usePrecision('bf16')
function maskedProcess(mask = MASK) {
  const script = `import { addon, usePrecision, currentPrecision } from ${JSON.stringify(join(root, 'lib/index.js'))};
    const a = addon();
    let refused = null;
    try { usePrecision('bf16'); } catch (e) { refused = { message: e.message, code: e.code }; }
    console.log(JSON.stringify({ why: a.precisionCheck('bf16'), info: a.info(), refused, after: currentPrecision() }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: maskedEnv(mask), timeout: 60000 });
  if (r.status !== 0) throw new Error(`masked process failed: ${r.stderr}`);
  return { ...JSON.parse(r.stdout.trim().split('\n').pop()), stderr: r.stderr };
}
const events = (out) => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
const eventOf = (out, name) => events(out).find((e) => e.event === name);

// a few seconds of training on the built-in synthetic benchmark
const TINY = ['--train-queries', '64', '--test-queries', '32', '--val-queries', '32', '--dim', '32', '--channels', '32', '--map-size', '4', '--embed', '16', '--feature-dim', '32',
  '--image-size', '32', '--batch-size', '16', '--eval-batch-size', '64', '--no-report', '--json'];
const tinyConfig = (out, over = {}) =>
  resolveConfig(undefined, { out, dims: { D: 32, C: 32, H: 4, W: 4, E: 16, Dc: 32, imageSize: 32 }, synth: { trainQueries: 64, testQueries: 32, valQueries: 32 }, epochs: 1, batchSize: 16, evalBatchSize: 64, report: false, ...over });

test.serial('checkPrecision and usePrecision: fp32 by default, bad values are named errors that change nothing', (t) => {
  t.is(checkPrecision(undefined), 'fp32');
  t.is(checkPrecision('fp32'), 'fp32');
  for (const bad of ['fp8', 'BF16', '']) {
    const e = t.throws(() => checkPrecision(bad));
    t.is(e.code, 'DWC_BAD_ARGUMENT');
    t.true(e.message.includes("'--precision' must be fp32, bf16 or fp16") && e.message.includes(`'${bad}'`), e.message);
    t.throws(() => usePrecision(bad), { message: /must be fp32, bf16 or fp16/ });
    t.throws(() => usePrecision(bad, 'cuda'), { message: /must be fp32, bf16 or fp16/ });
    t.is(currentPrecision(), 'fp32');
  }
  t.is(usePrecision('fp32'), 'fp32');
  t.is(currentPrecision(), 'fp32');
  const c = t.throws(() => resolveConfig(undefined, { precision: 'fp8' }));
  t.regex(c.message, /'precision' must be one of fp32, bf16, fp16, got "fp8"/);
  t.is(resolveConfig(undefined, {}).precision, 'fp32');
});

// fp16 is a GPU precision (docs/CUDA.md "Precision on the GPU"): refused without a CUDA device,
// accepted with one; on a CUDA device bf16 / fp16 set the GPU's switch, never the CPU's.
test.serial('fp16 only with --device cuda; a CUDA device sets the GPU precision and leaves the CPU at fp32', (t) => {
  for (const dev of [undefined, 'cpu']) {
    const e = t.throws(() => checkPrecision('fp16', dev));
    t.is(e.code, 'DWC_BAD_ARGUMENT');
    t.true(e.message.includes('--precision fp16 runs on the GPU only') && e.message.includes('--device cuda'), e.message);
    t.throws(() => usePrecision('fp16', dev), { message: /runs on the GPU only/ });
  }
  t.is(currentPrecision(), 'fp32');
  const cfg = t.throws(() => resolveConfig(undefined, { precision: 'fp16' }));
  t.regex(cfg.message, /'precision' fp16 runs on the GPU only .* set 'device' to cuda or cuda:N, got 'cpu'/);
  t.is(resolveConfig(undefined, { precision: 'fp16', device: 'cuda' }).precision, 'fp16');
  t.is(resolveConfig(undefined, { precision: 'bf16', device: 'cuda:1' }).precision, 'bf16');
  for (const dev of ['cuda', 'cuda:0', 'cuda:3']) for (const p of ['fp32', 'bf16', 'fp16']) t.is(checkPrecision(p, dev), p);
  t.is(typeof a.setDevicePrecision, 'function');
  t.is(a.setDevicePrecision(), 'fp32');
  t.is(usePrecision('fp16', 'cuda'), 'fp32');
  t.is(a.setDevicePrecision(), 'fp16');
  t.is(currentPrecision(), 'fp16');
  t.is(a.setKernels().precision ?? 'fp32', 'fp32', 'the CPU stays fp32');
  t.is(usePrecision('bf16', 'cuda:0'), 'fp16');
  t.is(currentPrecision(), 'bf16');
  t.is(usePrecision('fp32', 'cuda'), 'bf16');
  t.is(currentPrecision(), 'fp32');
  t.throws(() => a.setDevicePrecision('fp8'), { message: /must be 'fp32', 'bf16' or 'fp16'/ });
  t.is(a.setDevicePrecision(), 'fp32');
});

test.serial('withPrecision on a CUDA device puts the GPU precision back, also after a throw', async (t) => {
  const seen = await withPrecision('fp16', async () => currentPrecision(), 'cuda');
  t.is(seen, 'fp16');
  t.is(a.setDevicePrecision(), 'fp32');
  await t.throwsAsync(() => withPrecision('bf16', async () => { throw new Error('boom'); }, 'cuda:0'), { message: 'boom' });
  t.is(a.setDevicePrecision(), 'fp32');
  t.is(currentPrecision(), 'fp32');
});

// each command that takes --precision, with that value (and arguments that get it to the check)
const everyCommandWith = (p) => [
  ['train', '--precision', p],
  ['eval', '--checkpoint', 'none.safetensors', '--precision', p],
  ['search', '--checkpoint', 'none.safetensors', '--gallery', '.', '--image', 'q.png', '--text', 'red', '--precision', p],
  ['features', '--clip', 'none', '--data', 'none', '--out', 'none.safetensors', '--precision', p],
  ['bench', 'step', '--precision', p],
];

test.serial('every command names a bad --precision value, and refuses fp16 without --device cuda', (t) => {
  for (const argv of everyCommandWith('fp8')) {
    const r = cli(...argv);
    t.not(r.code, 0, `${argv[0]} --precision fp8 must fail`);
    t.true(r.err.includes("'--precision' must be fp32, bf16 or fp16, got 'fp8'"), `${argv[0]}: ${r.err}`);
  }
  for (const argv of everyCommandWith('fp16')) {
    const r = cli(...argv);
    t.not(r.code, 0, `${argv[0]} --precision fp16 must fail without --device cuda`);
    t.true(r.err.includes('--precision fp16 runs on the GPU only') && r.err.includes('--device cuda'), `${argv[0]}: ${r.err}`);
  }
  const help = cli('train', '--help').out.replace(/\s+/g, ' ');
  t.true(help.includes('--precision <p> fp32 (default) | bf16 | fp16: GEMMs and convolutions with 16-bit operands and fp32 accumulation'), help);
  t.true(help.includes('fp16 only with --device cuda'), help);
});

test.serial(`without AVX512_BF16/AMX (DWC_CPU_MASK=${MASK}): every command refuses bf16 with the reason; info says what is masked`, (t) => {
  const m = maskedProcess();
  t.is(typeof m.why, 'string', 'bf16 must be refused where the CPU (as masked) has no bf16 arithmetic');
  t.true(m.why.includes('needs a CPU with AVX512_BF16 or AMX'), m.why);
  t.is(m.refused && m.refused.code, 'DWC_UNSUPPORTED');
  t.true(m.refused.message.includes(`--precision bf16: ${m.why}`), m.refused.message);
  t.is(m.after, 'fp32');
  t.false(m.info.cpu.avx512_bf16);
  t.false(m.info.cpu.amx);
  t.false(m.info.precision.bf16);
  t.is(m.info.precision.bf16Reason, m.why);
  // the features this CPU has are shown as masked, not as absent; the rest as without the mask
  const hidden = [realCpu.avx512_bf16 && 'AVX512_BF16', realCpu.amx && 'AMX-BF16'].filter(Boolean);
  t.is(m.info.cpu.masked, hidden.join(' '));
  t.is(m.info.cpu.avx512, realCpu.avx512);
  t.is(m.info.cpu.avx2, realCpu.avx2);
  if (bf16Hardware) {
    t.true(m.info.cpu.features.endsWith(`(${hidden.join(' ')} masked by DWC_CPU_MASK)`), m.info.cpu.features);
    t.true(m.why.includes('masked by DWC_CPU_MASK') && m.why.includes('unset DWC_CPU_MASK'), m.why);
    // oneDNN sees the masked CPU too: its ISA capped below bf16
    if (m.info.gemm === 'onednn') t.false(/bf16|amx/i.test(m.info.isa), m.info.isa);
  } else t.is(m.info.cpu.features, realCpu.features, 'nothing to mask: the same features');
  const info = cliEnv(maskedEnv(), 'info');
  t.is(info.code, 0, info.err);
  t.true(info.out.includes(`bf16:      not available: ${m.why}`), info.out);
  if (bf16Hardware) t.true(info.out.includes('masked by DWC_CPU_MASK'), info.out);
  for (const argv of everyCommandWith('bf16')) {
    const r = cliEnv(maskedEnv(), ...argv);
    t.not(r.code, 0, `${argv[0]} --precision bf16 must fail`);
    t.true(r.err.includes('--precision bf16') && r.err.includes(m.why), `${argv[0]}: ${r.err}`);
  }
  // where this build or CPU lacks bf16, this process (no mask) refuses it too, with its own reason
  if (!hasBf16) t.throws(() => usePrecision('bf16'), { message: new RegExp(`--precision bf16: ${why.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`) });
});

test.serial('DWC_CPU_MASK: an unknown name is a one-line notice naming it; the known names are still masked; case and spaces do not matter', (t) => {
  const m = maskedProcess(' AVX512_BF16 sse9,amx ');
  t.true(m.stderr.includes("dwc-native: ignoring 'sse9' in DWC_CPU_MASK") && m.stderr.includes('known: avx2, fma, avx512, avx512_bf16, amx_bf16'), m.stderr);
  t.is(m.stderr.trim().split('\n').filter((l) => l.includes('DWC_CPU_MASK')).length, 1, m.stderr);
  t.false(m.info.cpu.avx512_bf16 || m.info.cpu.amx);
  t.is(typeof m.why, 'string');
  // avx512 masks AVX512_BF16 with it (an AVX-512 extension)
  const w = maskedProcess('avx512');
  t.false(w.info.cpu.avx512 || w.info.cpu.avx512_bf16);
  t.is(w.info.cpu.amx, realCpu.amx);
  t.is(w.stderr, '');
});

test.serial('--resume keeps the run\'s precision and refuses a change (config level, any CPU)', (t) => {
  const out = tmp();
  const fp32Run = resolveConfig(undefined, { out });
  const bf16Run = { ...fp32Run, precision: 'bf16' };
  const { precision: _, ...olderRun } = fp32Run; // a run stored before `precision` existed: fp32
  t.is(resolveConfig(undefined, {}, bf16Run).precision, 'bf16');
  t.is(resolveConfig(undefined, { precision: 'bf16' }, bf16Run).precision, 'bf16');
  t.is(resolveConfig(undefined, {}, olderRun).precision, 'fp32');
  for (const [base, asked, from] of [[fp32Run, 'bf16', 'fp32'], [olderRun, 'bf16', 'fp32'], [bf16Run, 'fp32', 'bf16']]) {
    const e = t.throws(() => resolveConfig(undefined, { precision: asked }, base));
    t.true(e.message.includes(`--resume continues the run at the precision it was trained with (${from})`) && e.message.includes(`got ${asked}`), e.message);
    t.throws(() => resolveConfig({ precision: asked }, undefined, base), { message: /'precision' cannot change/ });
  }
});

bf16Test('train --precision bf16 runs GEMMs/convs in bf16 and records it; eval --precision applies it; --resume keeps it', (t) => {
  const out = join(tmp(), 'run');
  const r = cli('train', ...TINY, '--epochs', '1', '--out', out, '--precision', 'bf16');
  t.is(r.code, 0, r.err);
  t.is(eventOf(r.out, 'start').precision, 'bf16');
  const done = eventOf(r.out, 'done');
  t.is(done.precision, 'bf16');
  t.true(done.bf16Calls > 0, `bf16Calls ${done.bf16Calls}`);
  t.is(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).precision, 'bf16');
  t.is(readCheckpointInfo(join(out, 'best.safetensors')).config.precision, 'bf16');
  t.is(readCheckpointInfo(join(out, 'last.safetensors')).config.precision, 'bf16');

  // eval: bf16 when asked (whatever the run trained with), fp32 by default
  const eb = cli('eval', '--checkpoint', join(out, 'best.safetensors'), '--json', '--precision', 'bf16');
  t.is(eb.code, 0, eb.err);
  t.like(eventOf(eb.out, 'done'), { precision: 'bf16' });
  t.true(eventOf(eb.out, 'done').bf16Calls > 0);
  const ef = cli('eval', '--checkpoint', join(out, 'best.safetensors'), '--json');
  t.is(ef.code, 0, ef.err);
  t.like(eventOf(ef.out, 'done'), { precision: 'fp32', bf16Calls: 0 });

  // resume: a change is refused before anything runs; without the flag the run goes on in bf16
  const changed = cli('train', '--resume', out, '--epochs', '2', '--precision', 'fp32');
  t.not(changed.code, 0);
  t.true(changed.err.includes('--resume continues the run at the precision it was trained with (bf16)') && changed.err.includes('got fp32'), changed.err);
  const resumed = cli('train', '--resume', out, '--epochs', '2', '--json');
  t.is(resumed.code, 0, resumed.err);
  const rd = eventOf(resumed.out, 'done');
  t.is(rd.precision, 'bf16');
  t.true(rd.bf16Calls > 0);
  t.is(events(resumed.out).filter((e) => e.event === 'epoch').length, 1, 'one more epoch');
});

bf16Test('library train(): bf16 applies only inside the run; an fp32 run after it gives the bits of one before', async (t) => {
  const run = async (precision) => {
    const out = join(tmp(), precision);
    const losses = [];
    const r = await api.train({ config: tinyConfig(out, { precision }), callbacks: { onStep: (st) => losses.push(st.loss) } });
    t.is(currentPrecision(), 'fp32', `train(${precision}) puts the caller's precision back`);
    t.is(r.precision, precision);
    const w = readSafetensors(join(out, 'last.safetensors')).tensors;
    w.losses = losses;
    return w;
  };
  const calls0 = a.kernelStats().bf16Calls;
  const before = await run('fp32');
  t.is(a.kernelStats().bf16Calls, calls0, 'an fp32 run makes no bf16 call');
  const b = await run('bf16');
  const calls1 = a.kernelStats().bf16Calls;
  t.true(calls1 > calls0, 'the bf16 run made bf16 calls');
  const after = await run('fp32');
  t.is(a.kernelStats().bf16Calls, calls1, 'the fp32 run after it makes none');
  t.deepEqual(after.losses, before.losses, 'fp32 losses after a bf16 run');
  let moved = 0;
  for (const [name, x] of before) {
    t.deepEqual(Buffer.from(after.get(name).data.buffer), Buffer.from(x.data.buffer), `${name}: fp32 bits after a bf16 run`);
    const y = b.get(name).data;
    for (let i = 0; i < y.length; i++) if (y[i] !== x.data[i]) moved++;
  }
  t.true(moved > 0, 'the bf16 run trained other weights than fp32 (its GEMMs were rounded)');
  // the first step's loss is a forward of the same initial weights: bf16 operands (8 bits) move it
  // by about 1e-3 relative, not more than 2e-2, and not by nothing
  const rel = Math.abs(b.losses[0] - before.losses[0]) / Math.abs(before.losses[0]);
  t.log(`first-step loss: fp32 ${before.losses[0]}, bf16 ${b.losses[0]} (relative ${rel.toExponential(2)})`);
  t.true(rel > 0 && rel < 2e-2, `first-step loss bf16 ${b.losses[0]} vs fp32 ${before.losses[0]} (relative ${rel})`);
  // withPrecision puts the caller's precision back even when the work throws
  await t.throwsAsync(() => withPrecision('bf16', async () => { t.is(currentPrecision(), 'bf16'); throw new Error('boom'); }), { message: 'boom' });
  t.is(currentPrecision(), 'fp32');
});

bf16Test('bench --precision bf16: engine bf16 and fp32, PyTorch fp32 and autocast, the goal ratios and the bf16 peak in one row', (t) => {
  const r = spawnSync(process.execPath, [join(root, 'bench/run.js'), 'clip', '--preset', 'small', '--precision', 'bf16', '--json'], { encoding: 'utf8', timeout: 300000 });
  t.is(r.status, 0, r.stderr);
  const rows = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  t.is(rows.length, 4);
  const torch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
  for (const row of rows) {
    t.is(row.precision, 'bf16');
    t.true(row.name.endsWith(' bf16'), row.name);
    t.true(row.engine_bf16_s > 0 && row.engine_fp32_s > 0, row.name);
    t.is(row.engine_s, row.engine_bf16_s);
    t.is(row.speedup_vs_fp32, row.engine_fp32_s / row.engine_bf16_s);
    t.true(row.peak_bf16_gflops > 0 && row.peak_fp32_gflops > 0 && row.peak_gflops === row.peak_bf16_gflops);
    t.true(row.bf16_calls > 0, `${row.name}: bf16 calls during the bf16 timing`);
    if (torch) {
      t.true(row.anchor_fp32_s > 0 && row.anchor_autocast_s > 0, row.name);
      t.is(row.ratio_vs_autocast, row.engine_bf16_s / row.anchor_autocast_s);
      t.is(row.ratio, row.ratio_vs_autocast);
      t.is(row.goal_autocast_met, row.ratio_vs_autocast < 1);
    } else t.log('PyTorch not installed: no anchor columns to check');
    t.is(row.goal_speedup_met, row.speedup_vs_fp32 >= 2.5);
  }
});
