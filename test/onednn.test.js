// oneDNN as the CPU compute backend (issue 12 items 1–3): oneDNN GEMM vs the CBLAS path on every
// transpose, odd sizes, alpha and beta; oneDNN convolutions (forward, backward-data,
// backward-weights) vs the im2col path and vs finite differences; the primitive cache (nothing is
// created on a repeated shape); info reports the ISA next to the CPU's features; bf16 refuses to
// run on a CPU without AVX512_BF16/AMX with the reason. The kernel switch is process-global, so
// every test here is serial and restores the defaults.
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { addon, runOp, tensor } from '../lib/index.js';
import { gemmRef, gradcheck, makeRng, freshSeed, randArray, relErr } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);
const a = addon();
const info = a.info();
const hasDnnl = info.onednn !== null;
const cli = fileURLToPath(new URL('../lib/cli/main.js', import.meta.url));

const defaults = { gemm: info.gemm, conv: info.conv };
test.afterEach.always(() => a.setKernels(defaults));


// Tests that need oneDNN are registered as skipped (visible in the summary) on a CBLAS-only build;
// where libdnnl-dev is installed the build must have found it.
const withDnnl = hasDnnl ? test.serial : test.serial.skip;

test.serial('oneDNN is compiled in wherever libdnnl-dev is installed, and used by default', (t) => {
  if (existsSync('/usr/include/dnnl.h') && !info.backendBuild.includes('chosen'))
    t.truthy(hasDnnl, `libdnnl-dev is installed but the addon was built without oneDNN (${info.backendBuild})`);
  t.is(info.backendBuild.startsWith('onednn'), hasDnnl);
  if (!hasDnnl) {
    t.is(info.gemm, 'cblas');
    t.regex(info.isa, /^OpenBLAS core \w+$|CBLAS/);
    const e = t.throws(() => a.setKernels({ gemm: 'onednn' }));
    t.true(e.message.includes('libdnnl-dev'), e.message);
    return;
  }
  t.is(info.gemm, 'onednn');
  t.is(info.conv, 'auto');
  t.regex(info.onednn, /^\d+\.\d+\.\d+$/);
});

withDnnl('oneDNN GEMM matches the CBLAS path and a double reference: every transpose, odd sizes, alpha, beta', (t) => {
  // odd sizes, a 1-wide edge, and one product big enough for the threaded split of the CBLAS path
  const sizes = [[1, 1, 1], [7, 5, 3], [13, 1, 17], [33, 65, 31], [1, 129, 9], [127, 131, 67], [257, 200, 129]];
  for (const [M, N, K] of sizes)
    for (const tA of [false, true])
      for (const tB of [false, true])
        for (const [alpha, beta] of [[1, 0], [0.5, 1], [-1.25, 0.75]]) {
          const A = randArray(tA ? [K, M] : [M, K], rng);
          const B = randArray(tB ? [N, K] : [K, N], rng);
          const C = randArray([M, N], rng);
          const ref = gemmRef(tA, tB, M, N, K, alpha, A, B, beta, C);
          const ins = { A: tensor(A, tA ? [K, M] : [M, K]), B: tensor(B, tB ? [N, K] : [K, N]), C: tensor(C, [M, N]) };
          const attrs = { transA: tA, transB: tB, alpha, beta };
          const got = {};
          for (const g of ['onednn', 'cblas']) {
            a.setKernels({ gemm: g });
            got[g] = runOp('gemm', ins, attrs).C.toArray();
          }
          const tag = `M=${M} N=${N} K=${K} tA=${tA} tB=${tB} alpha=${alpha} beta=${beta}; seed ${seed}`;
          t.true(relErr(got.onednn, ref) < 1e-5, `onednn vs reference: ${tag}`);
          t.true(relErr(got.cblas, ref) < 1e-5, `cblas vs reference: ${tag}`);
          t.true(relErr(got.onednn, got.cblas) < 1e-5, `onednn vs cblas: ${tag}`);
        }
});

withDnnl('oneDNN GEMM: a K = 0 product scales C by beta; the switch rejects unknown names', (t) => {
  a.setKernels({ gemm: 'onednn' });
  const C = new Float32Array([1, 2, 3, 4, 5, 6]);
  const out = runOp('gemm', { A: tensor(new Float32Array(0), [2, 0]), B: tensor(new Float32Array(0), [0, 3]), C: tensor(C, [2, 3]) }, { beta: 0.5 });
  t.deepEqual(Array.from(out.C.toArray()), [0.5, 1, 1.5, 2, 2.5, 3]);
  const e1 = t.throws(() => a.setKernels({ gemm: 'mkl' }));
  t.true(e1.message.includes("'gemm'") && e1.message.includes('mkl'), e1.message);
  const e2 = t.throws(() => a.setKernels({ conv: 'winograd' }));
  t.true(e2.message.includes("'conv'"), e2.message);
  const e3 = t.throws(() => a.setKernels({ gpu: 'x' }));
  t.true(e3.message.includes("'gpu'"), e3.message);
});

// The trunks' and Inception blocks' geometries, odd sizes and one without a multiple of 8 channels
// (oneDNN pads its blocked layout).
const convCases = [
  [[2, 3, 13, 11], [4, 3, 7, 7], 2, 3],
  [[2, 5, 9, 7], [6, 5, 3, 3], 1, 1],
  [[3, 8, 9, 8], [16, 8, 3, 3], 2, 1],
  [[2, 16, 6, 7], [8, 16, 1, 1], 1, 0],
  [[2, 9, 7, 9], [11, 9, 1, 1], 2, 0],
  [[2, 3, 24, 25], [4, 3, 3, 3], 1, 1],
  [[2, 2, 5, 7], [3, 2, 2, 3], 2, 0],
];

const runConv = (impl, x, w, dy, xs, ws, attrs) => {
  a.setKernels({ conv: impl });
  const X = tensor(x, xs);
  const W = tensor(w, ws);
  const y = runOp('conv2d_general_forward', { x: X, w: W }, attrs).y;
  const g = runOp('conv2d_general_backward', { x: X, w: W, dy: tensor(dy, y.shape) }, attrs);
  return { y: y.toArray(), shape: y.shape, dx: g.dx.toArray(), dw: g.dw.toArray() };
};

for (const [xs, ws, s, pad] of convCases) {
  withDnnl(`oneDNN conv x=[${xs}] w=[${ws}] stride ${s} pad ${pad}: forward, backward-data, backward-weights match im2col`, (t) => {
    const x = randArray(xs, rng);
    const w = randArray(ws, rng, 0.5);
    const attrs = { stride: s, pad };
    const Ho = Math.floor((xs[2] + 2 * pad - ws[2]) / s) + 1;
    const Wo = Math.floor((xs[3] + 2 * pad - ws[3]) / s) + 1;
    const dy = randArray([xs[0], ws[0], Ho, Wo], rng);
    const d = runConv('onednn', x, w, dy, xs, ws, attrs);
    const r = runConv('im2col', x, w, dy, xs, ws, attrs);
    t.deepEqual(d.shape, r.shape);
    for (const k of ['y', 'dx', 'dw']) t.true(relErr(d[k], r[k]) < 1e-5, `${k}: oneDNN vs im2col ${relErr(d[k], r[k])}; seed ${seed}`);
  });
}

withDnnl('oneDNN conv backward (Inception conv2d op): repeated calls give identical gradients, equal to im2col (the sum-reorder leaks no state)', (t) => {
  // conv2d_backward's contract: outputs start at zero, one call = the gradient; two calls of the
  // op must agree (the reorder-with-sum must not leak state between calls)
  a.setKernels({ conv: 'onednn' });
  const xs = [2, 8, 7, 7];
  const ws = [16, 8, 3, 3];
  const x = tensor(randArray(xs, rng), xs);
  const w = tensor(randArray(ws, rng, 0.5), ws);
  const dy = tensor(randArray([2, 16, 7, 7], rng), [2, 16, 7, 7]);
  const g1 = runOp('conv2d_backward', { x, w, dy });
  const g2 = runOp('conv2d_backward', { x, w, dy });
  t.deepEqual(Array.from(g1.dx.toArray()), Array.from(g2.dx.toArray()));
  t.deepEqual(Array.from(g1.dw.toArray()), Array.from(g2.dw.toArray()));
  a.setKernels({ conv: 'im2col' });
  const r = runOp('conv2d_backward', { x, w, dy });
  t.true(relErr(g1.dx.toArray(), r.dx.toArray()) < 1e-5);
  t.true(relErr(g1.dw.toArray(), r.dw.toArray()) < 1e-5);
});

for (const [xs, ws, s, pad] of [convCases[0], convCases[2], convCases[4], convCases[6]]) {
  withDnnl(`oneDNN conv x=[${xs}] w=[${ws}] stride ${s} pad ${pad}: backward matches finite differences`, (t) => {
    a.setKernels({ conv: 'onednn' });
    gradcheck(t, {
      forward: 'conv2d_general_forward',
      backward: 'conv2d_general_backward',
      inputs: { x: [randArray(xs, rng), xs], w: [randArray(ws, rng, 0.5), ws] },
      attrs: { stride: s, pad },
      outputs: ['y'],
      backwardInputs: (ins, outs, dys) => ({ x: ins.x, w: ins.w, dy: dys.y }),
      grads: { x: 'dx', w: 'dw' },
      seed,
    });
  });
}

withDnnl('oneDNN primitives are created once per shape: repeated same-shape calls create none', (t) => {
  a.setKernels({ conv: 'onednn' });
  const xs = [3, 8, 10, 10];
  const ws = [8, 8, 3, 3];
  const x = tensor(randArray(xs, rng), xs);
  const w = tensor(randArray(ws, rng), ws);
  const dy = tensor(randArray([3, 8, 5, 5], rng), [3, 8, 5, 5]);
  const step = () => {
    runOp('conv2d_general_forward', { x, w }, { stride: 2, pad: 1 });
    runOp('conv2d_general_backward', { x, w, dy }, { stride: 2, pad: 1 });
  };
  const s0 = a.kernelStats();
  step();
  const s1 = a.kernelStats();
  t.true(s1.primitivesCreated > s0.primitivesCreated, 'the first call of a new shape creates its primitives');
  t.is(s1.convCacheEntries, s0.convCacheEntries + 1);
  for (let i = 0; i < 5; i++) step();
  const s2 = a.kernelStats();
  t.is(s2.primitivesCreated, s1.primitivesCreated, 'same shape again: nothing created');
  t.is(s2.convCacheEntries, s1.convCacheEntries);
  // another shape gets its own entry
  const x2 = tensor(randArray([1, 8, 10, 10], rng), [1, 8, 10, 10]);
  runOp('conv2d_general_forward', { x: x2, w }, { stride: 2, pad: 1 });
  t.is(a.kernelStats().convCacheEntries, s2.convCacheEntries + 1);
});

withDnnl('auto: oneDNN for spatial kernels over few channels, im2col/GEMM for 1x1/1, wide channels and 1-D (same numbers either way)', (t) => {
  // the rule is observable through the cache: an im2col conv adds no entry
  a.setKernels({ conv: 'auto', gemm: 'onednn' });
  const x = tensor(randArray([2, 6, 5, 5], rng), [2, 6, 5, 5]);
  const n0 = a.kernelStats().convCacheEntries;
  runOp('conv2d_general_forward', { x, w: tensor(randArray([4, 6, 1, 1], rng), [4, 6, 1, 1]) });
  t.is(a.kernelStats().convCacheEntries, n0, '1x1 stride 1 runs im2col/GEMM');
  const w3 = tensor(randArray([4, 6, 3, 3], rng), [4, 6, 3, 3]);
  runOp('conv2d_general_forward', { x, w: w3 }, { pad: 1 });
  t.is(a.kernelStats().convCacheEntries, n0 + 1, '3x3 over 6 channels runs oneDNN');
  const xw = tensor(randArray([1, 256, 4, 4], rng), [1, 256, 4, 4]);
  runOp('conv2d_general_forward', { x: xw, w: tensor(randArray([4, 256, 3, 3], rng), [4, 256, 3, 3]) }, { pad: 1 });
  t.is(a.kernelStats().convCacheEntries, n0 + 1, '3x3 over 256 channels runs im2col');
  runOp('conv1d_forward', { x: tensor(randArray([2, 6, 9], rng), [2, 6, 9]), w: tensor(randArray([4, 6, 3], rng), [4, 6, 3]) });
  t.is(a.kernelStats().convCacheEntries, n0 + 1, '1-D conv runs im2col');
  // on the CBLAS GEMM backend auto never uses oneDNN
  a.setKernels({ gemm: 'cblas' });
  runOp('conv2d_general_forward', { x, w: w3 }, { pad: 2 });
  t.is(a.kernelStats().convCacheEntries, n0 + 1, 'gemm=cblas: auto stays on im2col');
});

withDnnl('auto runs small maps at a large batch (N >= 16, Ho*Wo <= 64, Ci <= 256) on oneDNN, 1x1 included; oneDNN matches im2col there', (t) => {
  // the small trunk's last stage (docs/PERFORMANCE.md): a larger batch, map or channel count
  // keeps the first rule
  a.setKernels({ conv: 'auto', gemm: 'onednn' });
  const entries = () => a.kernelStats().convCacheEntries;
  const fwd = (xs, ws, attrs = {}) => {
    const n0 = entries();
    runOp('conv2d_general_forward', { x: tensor(randArray(xs, rng), xs), w: tensor(randArray(ws, rng), ws) }, attrs);
    return entries() - n0;
  };
  t.is(fwd([16, 6, 5, 5], [4, 6, 1, 1]), 1, 'N 16, 5x5 map: 1x1 runs oneDNN');
  t.is(fwd([16, 256, 4, 4], [4, 256, 3, 3], { pad: 1 }), 1, 'N 16, 4x4 map: 3x3 over 256 channels runs oneDNN');
  t.is(fwd([16, 6, 16, 16], [4, 6, 1, 1], { stride: 2 }), 1, 'N 16: 1x1/2 onto an 8x8 map runs oneDNN');
  t.is(fwd([8, 256, 4, 4], [4, 256, 3, 3], { pad: 1 }), 0, 'N 8: 3x3 over 256 channels stays on im2col');
  t.is(fwd([16, 6, 9, 9], [4, 6, 1, 1]), 0, 'N 16, 9x9 output map: 1x1 stays on im2col');
  t.is(fwd([16, 512, 4, 4], [4, 512, 3, 3], { pad: 1 }), 0, 'N 16: 3x3 over 512 channels stays on im2col');
  const x = tensor(randArray([16, 6, 5, 5], rng), [16, 6, 5, 5]);
  const w1 = tensor(randArray([4, 6, 1, 1], rng), [4, 6, 1, 1]);
  for (const stride of [1, 2]) {
    const Ho = Math.floor((5 - 1) / stride) + 1;
    const dy = tensor(randArray([16, 4, Ho, Ho], rng), [16, 4, Ho, Ho]);
    const run = (conv) => {
      a.setKernels({ conv });
      const f = runOp('conv2d_general_forward', { x, w: w1 }, { stride });
      const b = runOp('conv2d_general_backward', { x, w: w1, dy }, { stride });
      return { y: f.y.toArray(), dx: b.dx.toArray(), dw: b.dw.toArray() };
    };
    const d = run('onednn');
    const r = run('im2col');
    for (const k of ['y', 'dx', 'dw']) t.true(relErr(d[k], r[k]) < 1e-5, `stride ${stride} ${k}: relErr ${relErr(d[k], r[k])}`);
  }
  a.setKernels({ conv: 'auto' });
});

withDnnl('DWC_GEMM / DWC_CONV select the implementations for a run; a bad value is a notice, not a crash', (t) => {
  const probe = "import('" + new URL('../lib/index.js', import.meta.url).href + "').then((m) => { const i = m.addon().info(); console.log(i.gemm + ' ' + i.conv); })";
  const run = (env) => spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', env: { ...process.env, ...env } });
  const r1 = run({ DWC_GEMM: 'cblas', DWC_CONV: 'im2col' });
  t.is(r1.stdout.trim(), 'cblas im2col', r1.stderr);
  const r2 = run({ DWC_CONV: 'winograd' });
  t.is(r2.status, 0);
  t.is(r2.stdout.trim(), 'onednn auto');
  t.true(r2.stderr.includes('ignoring DWC_CONV=winograd'), r2.stderr);
});

test.serial('info reports the kernels ISA next to the CPU features (text and --json)', (t) => {
  t.regex(info.isa, /^(oneDNN (sse41|avx|avx2|avx2_vnni|avx512\w*)|OpenBLAS core \w+)$/);
  t.is(typeof info.cpu.avx2, 'boolean');
  const cpuinfo = spawnSync('grep', ['-m1', '-o', '-w', 'avx2', '/proc/cpuinfo'], { encoding: 'utf8' });
  if (cpuinfo.status === 0 || cpuinfo.status === 1) t.is(info.cpu.avx2, cpuinfo.stdout.trim() === 'avx2', 'cpuid AVX2 agrees with /proc/cpuinfo');
  const txt = execFileSync(process.execPath, [cli, 'info'], { encoding: 'utf8' });
  t.true(txt.includes(`ISA ${info.isa}`), txt);
  t.true(txt.includes(`CPU:       ${info.cpu.brand || info.cpu.vendor}: ${info.cpu.features}`), txt);
  const j = JSON.parse(execFileSync(process.execPath, [cli, 'info', '--json'], { encoding: 'utf8' }));
  t.is(j.isa, info.isa);
  t.deepEqual(j.cpu, info.cpu);
  t.is(j.gemm, info.gemm);
  a.setKernels({ gemm: 'cblas' });
  t.regex(a.info().isa, /^OpenBLAS core \w+$|CBLAS/);
});

test.serial('bf16: runs where the CPU has AVX512_BF16 or AMX (oneDNN build), else refused with the reason', (t) => {
  const why = a.precisionCheck('bf16');
  t.is(a.precisionCheck('fp32'), null);
  t.regex(a.precisionCheck('fp16'), /unknown precision 'fp16'/);
  t.is(info.precision.bf16Reason, why);
  if ((info.cpu.avx512_bf16 || info.cpu.amx) && hasDnnl) {
    // the bf16 kernels themselves: test/bf16.test.js
    t.is(why, null);
    t.true(info.precision.bf16);
    return;
  }
  t.false(info.precision.bf16);
  t.true(why.includes('AVX512_BF16') && why.includes('AMX') && why.includes('--precision fp32'), why);
  t.true(why.includes(info.cpu.features), why);
});

// --precision on the commands (named bad values, bf16 refused with the reason where it cannot run,
// applied where it can): test/precision.test.js

test.serial('CBLAS path: a generic OpenBLAS core on an AVX2 CPU gives a one-time warning with the OPENBLAS_CORETYPE fix', (t) => {
  const blasCore = /\(core (\w+)\)/.exec(info.blas);
  t.truthy(blasCore, `OpenBLAS core in '${info.blas}'`);
  // force OpenBLAS (DYNAMIC_ARCH) onto its generic SSE3 kernels
  const env = { ...process.env, OPENBLAS_CORETYPE: 'Prescott', DWC_GEMM: 'cblas' };
  const txt = spawnSync(process.execPath, [cli, 'info'], { encoding: 'utf8', env });
  const gemm2 = "import('" + new URL('../lib/index.js', import.meta.url).href + "').then((m) => { const A = m.tensor(new Float32Array(4), [2, 2]); m.runOp('gemm', { A, B: A }); m.runOp('gemm', { A, B: A }); })";
  const run = spawnSync(process.execPath, ['-e', gemm2], { encoding: 'utf8', env });
  t.is(run.status, 0, run.stderr);
  const real = info.cpu.vendor === 'AuthenticAMD' ? 'Zen' : info.cpu.avx512_bf16 ? 'Cooperlake' : info.cpu.avx512 ? 'SkylakeX' : 'Haswell';
  const count = (s) => s.split("generic 'Prescott'").length - 1;
  if (info.cpu.avx2) {
    t.true(txt.stdout.includes("warning:   OpenBLAS runs its generic 'Prescott' kernels") && txt.stdout.includes(`OPENBLAS_CORETYPE=${real}`), txt.stdout);
    t.is(count(run.stderr), 1, `one warning for two GEMMs: ${run.stderr}`);
    t.true(run.stderr.includes(`OPENBLAS_CORETYPE=${real}`), run.stderr);
  } else {
    t.is(count(txt.stdout), 0, 'no AVX2: the generic core is the right one');
  }
  // the real core: no warning
  const quiet = spawnSync(process.execPath, ['-e', gemm2], { encoding: 'utf8', env: { ...env, OPENBLAS_CORETYPE: real } });
  t.is(count(quiet.stderr), 0, quiet.stderr);
});
