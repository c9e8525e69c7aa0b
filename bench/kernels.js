// Kernel benchmarks (PERFORMANCE.md): SGEMM ceiling, the Inception convs at the paper's shapes
// (spec §12: C = 2048 → 1024 on 7×7, and the 1-D text convs at D = 1024, L = 16), and the LSTM.
// GFLOP/s are analytic (2mnk per GEMM, backward = 2× forward). PyTorch anchor: kernels_torch.py.
import { addon, runOp } from '../lib/index.js';
import { args, header, sgemmPeak, timeIt, randTensor, emit, saveResults, runTorchAnchor, torchVersion } from './common.js';

const suite = 'kernels';
header('kernels');

const releaseAll = (outs) => {
  for (const t of Object.values(outs)) t.release();
};
const opTime = (name, inputs, attrs = {}, reps = 5) => timeIt(() => releaseAll(runOp(name, inputs, attrs)), { warmup: 2, reps });

// The ceiling: the backend the engine uses, through dwc::sgemm; the other backend beside it.
const engineKernels = addon().setKernels();
const peak = await sgemmPeak();
emit({ suite, name: `gemm 2048x2048x2048 (${engineKernels.gemm}, engine)`, engine_s: (2 * 2048 ** 3) / peak / 1e9, gflops: peak, peak_gflops: peak });
const otherGemm = engineKernels.gemm === 'onednn' ? 'cblas' : addon().info().onednn ? 'onednn' : null;
if (otherGemm) {
  const p2 = await sgemmPeak(otherGemm);
  emit({ suite, name: `gemm 2048x2048x2048 (${otherGemm})`, engine_s: (2 * 2048 ** 3) / p2 / 1e9, gflops: p2, peak_gflops: peak, extra: { impl: otherGemm } });
}
// Implementations a conv row is also timed with (side by side; the engine row uses the defaults).
const sideBySide = addon().info().onednn
  ? [['onednn conv', { gemm: 'onednn', conv: 'onednn' }], ['im2col + onednn gemm', { gemm: 'onednn', conv: 'im2col' }], ['im2col + OpenBLAS', { gemm: 'cblas', conv: 'im2col' }]]
  : [];

const tv = torchVersion();
const anchorName = tv ? `pytorch-${tv}-cpu` : null;
const anchor = tv ? runTorchAnchor(new URL('./kernels_torch.py', import.meta.url).pathname) ?? {} : {};
const withAnchor = (key) => (anchor[key] ? { anchor: anchorName, anchor_s: anchor[key] } : {});

// ---- convolutions: one op call = the whole minibatch ----
async function conv(dim, k, N, Ci, Co, spatial, withFwd, stride = 1) {
  const xs = [N, Ci, ...spatial];
  const ws = dim === 2 ? [Co, Ci, k, k] : [Co, Ci, k];
  const x = randTensor(xs, 11);
  const w = randTensor(ws, 12);
  const dy = randTensor([N, Co, ...spatial], 13);
  const P = spatial.reduce((a, b) => a * b, 1);
  const flops = 2 * Co * Ci * k ** dim * N * P; // forward; backward = 2×
  const op = `conv${dim}d`;
  const tag = `${op} k=${k} ${Ci}->${Co} N=${N} ${spatial.join('x')}`;
  const key = `${op}_k${k}`;
  const tf = await opTime(`${op}_forward`, { x, w });
  if (withFwd) emit({ suite, name: `${tag} fwd`, engine_s: tf, gflops: flops / tf / 1e9, peak_gflops: peak, ...withAnchor(`${key}_fwd`) });
  const tb = await opTime(`${op}_backward`, { x, w, dy });
  const fb = tf + tb;
  const row = emit({ suite, name: `${tag} fwd+bwd`, engine_s: fb, gflops: (3 * flops) / fb / 1e9, peak_gflops: peak, ...withAnchor(`${key}_fwd_bwd`),
    extra: { pct_peak: (100 * (3 * flops)) / fb / 1e9 / peak } });
  await sides(`${tag} fwd+bwd`, () => opTime(`${op}_forward`, { x, w }), () => opTime(`${op}_backward`, { x, w, dy }), 3 * flops);
  for (const t of [x, w, dy]) t.release();
  return row;
}

// The same conv on each implementation (oneDNN conv primitive, im2col + each GEMM backend).
async function sides(tag, fwd, bwd, flops3) {
  try {
    for (const [label, k] of sideBySide) {
      addon().setKernels(k);
      const s = (await fwd()) + (await bwd());
      emit({ suite, name: `  [${label}] ${tag}`, engine_s: s, gflops: flops3 / s / 1e9, peak_gflops: peak, extra: { impl: label } });
    }
  } finally {
    addon().setKernels(engineKernels);
  }
}

// Trunk convs (issue 5: ResNet-50 at N=8, 224²; the small trunk at N=32, 64²), general op with
// stride and padding: the shapes behind the auto rule (docs/PERFORMANCE.md).
async function trunkConv(N, Ci, Co, H, k, stride, pad) {
  const x = randTensor([N, Ci, H, H], 31);
  const w = randTensor([Co, Ci, k, k], 32);
  const Ho = Math.floor((H + 2 * pad - k) / stride) + 1;
  const dy = randTensor([N, Co, Ho, Ho], 33);
  const flops = 2 * Co * Ci * k * k * N * Ho * Ho;
  const attrs = { stride, pad };
  const tag = `conv2d_general k=${k}/${stride} ${Ci}->${Co} N=${N} ${H}x${H}`;
  const f = () => opTime('conv2d_general_forward', { x, w }, attrs, 3);
  const b = () => opTime('conv2d_general_backward', { x, w, dy }, attrs, 3);
  const s = (await f()) + (await b());
  emit({ suite, name: `${tag} fwd+bwd`, engine_s: s, gflops: (3 * flops) / s / 1e9, peak_gflops: peak });
  await sides(`${tag} fwd+bwd`, f, b, 3 * flops);
  for (const t of [x, w, dy]) t.release();
}

const convRows = [];
convRows.push(await conv(2, 1, 32, 2048, 1024, [7, 7], true));
convRows.push(await conv(2, 3, 32, 2048, 1024, [7, 7], true));
convRows.push(await conv(1, 1, 32, 1024, 1024, [16], false));
convRows.push(await conv(1, 3, 32, 1024, 1024, [16], false));
if (!args.includes('--no-trunk-convs')) {
  for (const c of [[8, 3, 64, 224, 7, 2, 3], [8, 64, 64, 56, 3, 1, 1], [8, 64, 256, 56, 1, 1, 0], [8, 256, 512, 56, 1, 2, 0], [8, 128, 128, 28, 3, 1, 1],
    [8, 256, 256, 14, 3, 1, 1], [8, 512, 512, 7, 3, 1, 1], [32, 3, 32, 64, 3, 1, 1], [32, 32, 64, 32, 3, 2, 1], [32, 64, 64, 16, 3, 1, 1]])
    await trunkConv(...c);
}

// ---- LSTM (text stream, spec §4): written by another kernel family; optional here ----
const ops = new Set(addon().listOps().map((o) => o.name));
if (ops.has('lstm_forward') && ops.has('lstm_backward')) {
  const [B, L, E, D] = [32, 16, 512, 1024];
  const x = randTensor([B, L, E], 21);
  const w_ih = randTensor([4 * D, E], 22);
  const w_hh = randTensor([4 * D, D], 23);
  const b_ih = randTensor([4 * D], 24);
  const b_hh = randTensor([4 * D], 25);
  const dh = randTensor([B, L, D], 26);
  const flops = 2 * B * L * 4 * D * (E + D);
  const ins = { x, w_ih, w_hh, b_ih, b_hh };
  const tf = await opTime('lstm_forward', ins);
  const fw = runOp('lstm_forward', ins);
  const tb = await opTime('lstm_backward', { x, w_ih, w_hh, h: fw.h, cache: fw.cache, dh });
  emit({ suite, name: `lstm B=${B} L=${L} E=${E} D=${D} fwd`, engine_s: tf, gflops: flops / tf / 1e9, peak_gflops: peak });
  emit({ suite, name: `lstm B=${B} L=${L} E=${E} D=${D} fwd+bwd`, engine_s: tf + tb, gflops: (3 * flops) / (tf + tb) / 1e9, peak_gflops: peak });
  releaseAll(fw);
} else {
  console.log('lstm: not available');
}

// The machine is shared: measure the ceiling again and judge the convs against the higher one.
{
  const n = 2048;
  const A = randTensor([n, n], 1);
  const B = randTensor([n, n], 2);
  const again = (2 * n ** 3) / (await timeIt(() => releaseAll(runOp('gemm', { A, B })), { warmup: 1, reps: 5 })) / 1e9;
  const best = Math.max(peak, again);
  const worst = Math.min(...convRows.map((r) => r.gflops / best));
  console.log(`SGEMM ceiling re-measured: ${again.toFixed(1)} GFLOP/s (start ${peak.toFixed(1)}); conv fwd+bwd against ${best.toFixed(1)}: ` +
    convRows.map((r) => `${r.name.split(' ').slice(0, 2).join(' ')} ${((100 * r.gflops) / best).toFixed(0)}%`).join(', ') +
    ` (lowest ${(100 * worst).toFixed(0)}%, target >= 70%)`);
}

if (!tv) console.log('PyTorch not found (/usr/bin/python3 -c "import torch"): no anchor ratios');
saveResults(suite);
