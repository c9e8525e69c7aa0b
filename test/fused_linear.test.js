// The fused-epilogue Linear (gemm.h linear_forward_fused: y = act(x·Wᵀ + b) + residual in one
// oneDNN matmul primitive) and the strided-batch patch-embedding product, against float64
// references, on every backend (oneDNN fused, oneDNN with the epilogue as separate passes, CBLAS);
// the primitive cache; a CLIP embedding the same on every path; errors naming the argument. The
// kernel switch is process-global, so every test here is serial and restores the defaults.
import test from 'ava';
import { join } from 'node:path';
import { Clip, addon, runOp, tensor } from '../lib/index.js';
import { readSafetensors } from '../lib/safetensors.js';
import { clipCaseDir, clipCaseMeta, clipCaseWeights } from './helpers/clip.js';
import { relBound } from './helpers/accuracy.js';
import { erf, freshSeed, makeRng, randArray, relErr, throwsNaming } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);
const a = addon();
const info = a.info();
const hasDnnl = info.onednn !== null;
const defaults = a.setKernels();
test.afterEach.always(() => a.setKernels({ gemm: defaults.gemm, conv: defaults.conv, epilogue: defaults.epilogue }));

// The paths: oneDNN with the fused epilogue, oneDNN with separate passes, CBLAS.
const paths = [
  ...(hasDnnl ? [{ gemm: 'onednn', epilogue: 'fused' }, { gemm: 'onednn', epilogue: 'separate' }] : []),
  { gemm: 'cblas', epilogue: 'fused' },
];
const ACTS = ['none', 'quick_gelu', 'gelu'];

const actRef = {
  none: (v) => v,
  quick_gelu: (v) => v / (1 + Math.exp(-1.702 * v)),
  gelu: (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
};

function linearRef(x, W, b, r, N, K, O, act) {
  const y = new Float64Array(N * O);
  for (let i = 0; i < N; i++)
    for (let j = 0; j < O; j++) {
      let s = b ? b[j] : 0;
      for (let k = 0; k < K; k++) s += x[i * K + k] * W[j * K + k];
      y[i * O + j] = actRef[act](s) + (r ? r[i * O + j] : 0);
    }
  return y;
}

test.serial('linear_forward_fused equals act(x·Wᵀ + b) + residual in float64 on every path, odd shapes', (t) => {
  for (const [N, K, O] of [[37, 19, 53], [1, 64, 8], [130, 96, 40]]) {
    const x = randArray([N * K], rng), W = randArray([O * K], rng, 0.3), b = randArray([O], rng), r = randArray([N * O], rng);
    for (const act of ACTS)
      for (const withB of [true, false])
        for (const withR of [true, false]) {
          const ref = linearRef(x, W, withB ? b : null, withR ? r : null, N, K, O, act);
          for (const p of paths) {
            a.setKernels(p);
            const ins = { x: tensor(x, [N, K]), W: tensor(W, [O, K]) };
            if (withB) ins.b = tensor(b, [O]);
            if (withR) ins.residual = tensor(r, [N, O]);
            const y = runOp('linear_forward_fused', ins, { activation: ACTS.indexOf(act) }).y;
            t.deepEqual(y.shape, [N, O]);
            const e = relErr(y.toArray(), ref);
            t.true(e < 2e-6, `${JSON.stringify(p)} N=${N} K=${K} O=${O} act=${act} bias=${withB} residual=${withR}: rel err ${e}; seed ${seed}`);
          }
        }
  }
});

test.serial('linear_forward_fused keeps leading dimensions and leaves its inputs alone', (t) => {
  const x = randArray([2 * 3 * 5], rng), W = randArray([4 * 5], rng), r = randArray([2 * 3 * 4], rng);
  const X = tensor(x, [2, 3, 5]), R = tensor(r, [2, 3, 4]);
  const y = runOp('linear_forward_fused', { x: X, W: tensor(W, [4, 5]), residual: R }, { activation: 1 }).y;
  t.deepEqual(y.shape, [2, 3, 4]);
  t.true(relErr(y.toArray(), linearRef(x, W, null, r, 6, 5, 4, 'quick_gelu')) < 2e-6);
  t.deepEqual(X.toArray(), x);
  t.deepEqual(R.toArray(), r);
});

(hasDnnl ? test.serial : test.serial.skip)('oneDNN matmul primitives are cached per (N, K, epilogue): a repeated shape or another row count creates none', (t) => {
  a.setKernels({ gemm: 'onednn', epilogue: 'fused' });
  const [N, K, O] = [29, 31, 17];
  const ins = { x: tensor(randArray([N * K], rng), [N, K]), W: tensor(randArray([O * K], rng), [O, K]), b: tensor(randArray([O], rng), [O]) };
  const s0 = a.kernelStats().matmulPrimitivesCreated;
  runOp('linear_forward_fused', ins, { activation: 1 });
  const s1 = a.kernelStats().matmulPrimitivesCreated;
  t.is(s1, s0 + 1, 'a new shape creates one primitive');
  runOp('linear_forward_fused', { ...ins, x: tensor(randArray([N * K], rng), [N, K]) }, { activation: 1 });
  t.is(a.kernelStats().matmulPrimitivesCreated, s1, 'same shape again: nothing created');
  for (const M of [1, 7, 64]) {
    const x = randArray([M * K], rng);
    const y = runOp('linear_forward_fused', { ...ins, x: tensor(x, [M, K]) }, { activation: 1 }).y;
    t.true(relErr(y.toArray(), linearRef(x, ins.W.toArray(), ins.b.toArray(), null, M, K, O, 'quick_gelu')) < 2e-6, `M = ${M}`);
  }
  t.is(a.kernelStats().matmulPrimitivesCreated, s1, 'other row counts: nothing created (M is a runtime dimension)');
  runOp('linear_forward_fused', ins, { activation: 2 });
  t.is(a.kernelStats().matmulPrimitivesCreated, s1 + 1, 'another activation is another primitive');
  a.setKernels({ epilogue: 'separate' });
  runOp('linear_forward_fused', ins, { activation: 0 });
  t.is(a.kernelStats().matmulPrimitivesCreated, s1 + 1, "epilogue 'separate' runs no matmul primitive");
});

(hasDnnl ? test.serial : test.serial.skip)('oneDNN: a residual Linear with a bias maps no M×N accumulator per call (the bias is a post-op after the sum)', (t) => {
  // docs/PERFORMANCE.md "Fused Linear epilogues": with the bias argument and a sum post-op oneDNN
  // 2.6 mallocs an M×N buffer on every call (here 4.9 MB, above the mmap threshold: ~1200 pages
  // faulted in each time). Compared with the same call without the residual, so the output
  // tensor's own pages count on both sides.
  a.setKernels({ gemm: 'onednn', epilogue: 'fused' });
  const [N, K, O] = [1600, 64, 768];
  const x = tensor(randArray([N * K], rng), [N, K]), W = tensor(randArray([O * K], rng), [O, K]), b = tensor(randArray([O], rng), [O]);
  const r = tensor(randArray([N * O], rng), [N, O]);
  const faults = (ins) => {
    const d = [];
    for (let i = 0; i < 6; i++) {
      const f0 = process.resourceUsage().minorPageFault;
      runOp('linear_forward_fused', ins, { activation: 0 }).y.release();
      d.push(process.resourceUsage().minorPageFault - f0);
    }
    return d.slice(1).sort((p, q) => p - q)[2];  // median after the first call
  };
  const plain = faults({ x, W, b }), withRes = faults({ x, W, b, residual: r });
  t.log(`minor page faults per call: bias only ${plain}, bias + residual ${withRes}`);
  t.true(withRes - plain < (N * O * 4) / 4096 / 2, `bias + residual faults ${withRes} vs bias only ${plain}: an M×N buffer per call?`);
});

test.serial("patch embedding (one GEMM over all the images' patches, rows moved into place) equals the float64 convolution on every path", (t) => {
  const [N, C, R, p, w] = [5, 3, 12, 4, 6];
  const g = R / p, T = g * g + 1, K = C * p * p;
  const x = randArray([N * C * R * R], rng), W = randArray([w * K], rng, 0.2), cls = randArray([w], rng), pos = randArray([T * w], rng);
  const ref = new Float64Array(N * T * w);
  for (let n = 0; n < N; n++)
    for (let t0 = 0; t0 < T; t0++)
      for (let j = 0; j < w; j++) {
        let s = pos[t0 * w + j] + (t0 === 0 ? cls[j] : 0);
        if (t0 > 0) {
          const gy = Math.floor((t0 - 1) / g), gx = (t0 - 1) % g;
          for (let c = 0; c < C; c++)
            for (let ky = 0; ky < p; ky++)
              for (let kx = 0; kx < p; kx++)
                s += W[((j * C + c) * p + ky) * p + kx] * x[((n * C + c) * R + gy * p + ky) * R + gx * p + kx];
        }
        ref[(n * T + t0) * w + j] = s;
      }
  for (const path of paths) {
    a.setKernels(path);
    const y = runOp('patch_embed_forward', { x: tensor(x, [N, C, R, R]), W: tensor(W, [w, C, p, p]), class_embedding: tensor(cls, [w]),
      positional_embedding: tensor(pos, [T, w]) }).y;
    t.deepEqual(y.shape, [N, T, w]);
    const e = relErr(y.toArray(), ref);
    t.true(e < 2e-6, `${JSON.stringify(path)}: rel err ${e}; seed ${seed}`);
  }
});

// Multi-head self-attention in float64: y = out_proj(softmax(q kᵀ/√d) v) per head, q|k|v = in_proj(x).
function mhaRef(x, inW, inB, outW, outB, B, T, w, H) {
  const d = w / H;
  const qkv = linearRef(x, inW, inB, null, B * T, w, 3 * w, 'none');
  const ctx = new Float64Array(B * T * w);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < T; i++) {
        const s = [];
        for (let j = 0; j < T; j++) {
          let a = 0;
          for (let c = 0; c < d; c++) a += qkv[(b * T + i) * 3 * w + h * d + c] * qkv[(b * T + j) * 3 * w + w + h * d + c];
          s.push(a / Math.sqrt(d));
        }
        const m = Math.max(...s);
        const e = s.map((v) => Math.exp(v - m));
        const z = e.reduce((p, q) => p + q, 0);
        for (let c = 0; c < d; c++) {
          let v = 0;
          for (let j = 0; j < T; j++) v += (e[j] / z) * qkv[(b * T + j) * 3 * w + 2 * w + h * d + c];
          ctx[(b * T + i) * w + h * d + c] = v;
        }
      }
  return linearRef(ctx, outW, outB, null, B * T, w, w, 'none');
}

test.serial('mha_forward (q|k|v and out_proj through the fused Linear) equals float64 attention on every path', (t) => {
  const [B, T, w, H] = [2, 5, 8, 2];
  const x = randArray([B * T * w], rng), inW = randArray([3 * w * w], rng, 0.3), inB = randArray([3 * w], rng);
  const outW = randArray([w * w], rng, 0.3), outB = randArray([w], rng);
  const ref = mhaRef(x, inW, inB, outW, outB, B, T, w, H);
  for (const p of paths) {
    a.setKernels(p);
    const y = runOp('mha_forward', { x: tensor(x, [B, T, w]), in_w: tensor(inW, [3 * w, w]), in_b: tensor(inB, [3 * w]), out_w: tensor(outW, [w, w]),
      out_b: tensor(outB, [w]) }, { heads: H }).y;
    const e = relErr(y.toArray(), ref);
    t.true(e < 2e-6, `${JSON.stringify(p)}: rel err ${e}; seed ${seed}`);
  }
});

// The towers read the fused Linear in inference (QuickGELU / GELU in the c_fc epilogue, the
// residuals in out_proj / c_proj) and in fine-tuning (bias only): embeddings and the float64
// answers of the trace fixtures, on every path.
for (const c of ['vit_openai', 'vit_hf_gelu']) {
  test.serial(`${c}: CLIP embeddings equal the float64 reference on every path`, async (t) => {
    const meta = clipCaseMeta(c);
    const clip = Clip.fromTensors(clipCaseWeights(meta), { activation: meta.activation });
    const ins = readSafetensors(join(clipCaseDir, c, 'inputs.safetensors')).tensors;
    const e = readSafetensors(join(clipCaseDir, c, 'expected.safetensors')).tensors;
    for (const p of paths) {
      a.setKernels(p);
      const img = relErr(await clip.embedImagesTensor(ins.get('pixel_values').data), e.get('image_embeds').data);
      const txt = relErr(await clip.embedTokenIds(ins.get('input_ids').data), e.get('text_embeds').data);
      t.true(img <= relBound(meta.accuracy.image_embeds), `${JSON.stringify(p)} image rel err ${img}`);
      t.true(txt <= relBound(meta.accuracy.text_embeds), `${JSON.stringify(p)} text rel err ${txt}`);
    }
  });
}

test.serial('linear_forward_fused: bad arguments name the argument', (t) => {
  const x = tensor(undefined, [3, 4]), W = tensor(undefined, [5, 4]);
  t.notThrows(() => runOp('linear_forward_fused', { x, W }));
  throwsNaming(t, () => runOp('linear_forward_fused', { x, W: tensor(undefined, [5, 3]) }), 'x', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('linear_forward_fused', { x, W, b: tensor(undefined, [4]) }), 'b', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('linear_forward_fused', { x, W, residual: tensor(undefined, [3, 4]) }), 'residual', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('linear_forward_fused', { x, W }, { activation: 3 }), 'activation', 'DWC_BAD_ARGUMENT');
  const err = t.throws(() => a.setKernels({ epilogue: 'maybe' }));
  t.true(err.message.includes("'epilogue'"), err.message);
});
