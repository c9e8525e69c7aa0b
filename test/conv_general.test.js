// General convolutions (any kernel, stride, padding), max pool 3×3/2 and residual add (issue 5
// item 1): direct references in double, finite differences, PyTorch fixture coverage, bad args.
import test from 'ava';
import { runOp, tensor, addon } from '../lib/index.js';
import { gradcheck, makeRng, freshSeed, randArray, relErr, throwsNaming, loadFixtureCases } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);

// y[n,o,p,q] = Σ x[n,i,p·s−pad+a, q·s−pad+b] · w[o,i,a,b]; returns y and the adjoint (dx, dw) of <dy, y>.
function convRef(x, w, dy, [N, Ci, H, W], [Co, , kh, kw], s, pad) {
  const Ho = Math.floor((H + 2 * pad - kh) / s) + 1;
  const Wo = Math.floor((W + 2 * pad - kw) / s) + 1;
  const y = new Float64Array(N * Co * Ho * Wo);
  const dx = new Float64Array(N * Ci * H * W);
  const dw = new Float64Array(Co * Ci * kh * kw);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < Co; o++)
      for (let p = 0; p < Ho; p++)
        for (let q = 0; q < Wo; q++) {
          const yi = ((n * Co + o) * Ho + p) * Wo + q;
          const g = dy ? dy[yi] : 0;
          let acc = 0;
          for (let i = 0; i < Ci; i++)
            for (let a = 0; a < kh; a++)
              for (let b = 0; b < kw; b++) {
                const ih = p * s - pad + a;
                const iw = q * s - pad + b;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const xi = ((n * Ci + i) * H + ih) * W + iw;
                const wi = ((o * Ci + i) * kh + a) * kw + b;
                acc += x[xi] * w[wi];
                dx[xi] += g * w[wi];
                dw[wi] += g * x[xi];
              }
          y[yi] = acc;
        }
  return { y, dx, dw, shape: [N, Co, Ho, Wo] };
}

// [x shape, w shape, stride, pad]: the trunk's 7×7/2 p3, 3×3/1 and /2 p1, 1×1/1 and /2, odd and
// rectangular sizes; 24×24 outputs (≥ 512 positions) take the per-sample GEMM path.
const cases = [
  [[2, 3, 13, 11], [4, 3, 7, 7], 2, 3],
  [[2, 4, 6, 7], [5, 4, 3, 3], 1, 1],
  [[3, 3, 9, 8], [4, 3, 3, 3], 2, 1],
  [[2, 5, 5, 6], [3, 5, 1, 1], 1, 0],
  [[2, 5, 7, 9], [3, 5, 1, 1], 2, 0],
  [[2, 3, 24, 24], [4, 3, 3, 3], 1, 1],
  [[2, 3, 24, 25], [4, 3, 1, 1], 1, 0],
  [[1, 2, 49, 47], [3, 2, 7, 7], 2, 3],
  [[2, 2, 5, 7], [3, 2, 2, 3], 2, 0],
  [[1, 2, 4, 4], [2, 2, 3, 3], 3, 2],
];

for (const [xs, ws, s, pad] of cases) {
  const tag = `x=[${xs}] w=[${ws}] stride ${s} pad ${pad}`;
  test(`conv2d_general ${tag}: forward and backward match the direct reference`, (t) => {
    const x = randArray(xs, rng);
    const w = randArray(ws, rng, 0.5);
    const attrs = { stride: s, pad };
    const { y } = runOp('conv2d_general_forward', { x: tensor(x, xs), w: tensor(w, ws) }, attrs);
    const dy = randArray(y.shape, rng);
    const ref = convRef(x, w, dy, xs, ws, s, pad);
    t.deepEqual(y.shape, ref.shape);
    t.true(relErr(y.toArray(), ref.y) < 1e-5, `y; seed ${seed}`);
    // accumulate convention: the op's outputs start at zero, so two calls give the same result
    const g = runOp('conv2d_general_backward', { x: tensor(x, xs), w: tensor(w, ws), dy: tensor(dy, y.shape) }, attrs);
    t.true(relErr(g.dx.toArray(), ref.dx) < 1e-5, `dx; seed ${seed}`);
    t.true(relErr(g.dw.toArray(), ref.dw) < 1e-5, `dw; seed ${seed}`);
  });
}

for (const [xs, ws, s, pad] of [cases[0], cases[2], cases[4], cases[8]]) {
  test(`conv2d_general x=[${xs}] w=[${ws}] stride ${s} pad ${pad}: backward matches finite differences`, (t) => {
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

test('conv2d_general with stride 1 and pad k/2 equals the Inception conv2d', (t) => {
  const xs = [2, 3, 5, 6];
  const ws = [4, 3, 3, 3];
  const x = tensor(randArray(xs, rng), xs);
  const w = tensor(randArray(ws, rng), ws);
  t.deepEqual(runOp('conv2d_general_forward', { x, w }, { stride: 1, pad: 1 }).y.toArray(), runOp('conv2d_forward', { x, w }).y.toArray());
});

// ---- max pool ----
function maxpoolRef(x, [N, C, H, W], k, s, pad) {
  const Ho = Math.floor((H + 2 * pad - k) / s) + 1;
  const Wo = Math.floor((W + 2 * pad - k) / s) + 1;
  const y = new Float32Array(N * C * Ho * Wo);
  const idx = new Int32Array(y.length);
  for (let pl = 0; pl < N * C; pl++)
    for (let p = 0; p < Ho; p++)
      for (let q = 0; q < Wo; q++) {
        let m = -Infinity;
        let mi = -1;
        for (let a = 0; a < k; a++)
          for (let b = 0; b < k; b++) {
            const ih = p * s - pad + a;
            const iw = q * s - pad + b;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const v = x[pl * H * W + ih * W + iw];
            if (mi < 0 || v > m || Number.isNaN(v)) {
              m = v;
              mi = ih * W + iw;
            }
          }
        y[(pl * Ho + p) * Wo + q] = m;
        idx[(pl * Ho + p) * Wo + q] = mi;
      }
  return { y, idx, shape: [N, C, Ho, Wo] };
}

for (const xs of [[2, 3, 9, 8], [1, 2, 7, 7], [2, 2, 112, 112], [1, 1, 1, 1], [1, 1, 2, 3]]) {
  test(`maxpool 3x3/2 pad 1 x=[${xs}] matches the reference (first maximum wins, indices in the plane)`, (t) => {
    const x = randArray(xs, rng);
    for (let i = 0; i + 1 < x.length; i += 7) x[i + 1] = x[i]; // ties
    const ref = maxpoolRef(x, xs, 3, 2, 1);
    const o = runOp('maxpool_forward', { x: tensor(x, xs) });
    t.deepEqual(o.y.shape, ref.shape);
    t.deepEqual(Array.from(o.y.toArray()), Array.from(ref.y));
    t.deepEqual(Array.from(o.idx.toArray()), Array.from(ref.idx));
    const dy = randArray(ref.shape, rng);
    const { dx } = runOp('maxpool_backward', { x: tensor(x, xs), idx: o.idx, dy: tensor(dy, ref.shape) });
    const want = new Float64Array(x.length);
    const HW = xs[2] * xs[3];
    const P = ref.shape[2] * ref.shape[3];
    for (let i = 0; i < dy.length; i++) want[Math.floor(i / P) * HW + ref.idx[i]] += dy[i];
    t.true(relErr(dx.toArray(), want) < 1e-6, `seed ${seed}`);
  });
}

test('maxpool propagates NaN as torch does', (t) => {
  const x = new Float32Array([1, 2, 3, NaN, 5, 6, 7, 8, 9]);
  const { y, idx } = runOp('maxpool_forward', { x: tensor(x, [1, 1, 3, 3]) }, { k: 3, stride: 1, pad: 1 });
  t.true(Number.isNaN(y.toArray()[0]));
  t.is(idx.toArray()[0], 3);
  t.is(y.toArray()[2], 6);
});

test('maxpool backward matches finite differences', (t) => {
  const xs = [2, 2, 7, 6];
  // distinct values at least 0.01 apart (a shuffled ladder): a finite-difference step (1e-3)
  // never crosses a tie between two window elements, where max is not differentiable
  const n = xs.reduce((a, b) => a * b, 1);
  const x = Float32Array.from({ length: n }, (_, i) => (i - n / 2) * 0.01);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [x[i], x[j]] = [x[j], x[i]];
  }
  gradcheck(t, {
    forward: 'maxpool_forward',
    backward: 'maxpool_backward',
    inputs: { x: [x, xs] },
    outputs: ['y'],
    backwardInputs: (ins, outs, dys) => ({ x: ins.x, idx: outs.idx, dy: dys.y }),
    grads: { x: 'dx' },
    samples: 40,
    seed,
  });
});

// ---- residual add ----
test('add and add_relu (residual block output) forward and backward', (t) => {
  const s = [2, 3, 4, 5];
  const a = randArray(s, rng);
  const b = randArray(s, rng);
  // Keep a + b off the ReLU kink so central differences see one side only.
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i] + b[i]) < 0.02) a[i] += a[i] + b[i] < 0 ? -0.05 : 0.05;
  const y = runOp('add_relu_forward', { a: tensor(a, s), b: tensor(b, s) }).y.toArray();
  const y0 = runOp('add_forward', { a: tensor(a, s), b: tensor(b, s) }).y.toArray();
  for (let i = 0; i < a.length; i++) {
    t.is(y0[i], Math.fround(a[i] + b[i]));
    t.is(y[i], Math.max(0, Math.fround(a[i] + b[i])));
  }
  gradcheck(t, {
    forward: 'add_relu_forward',
    backward: 'add_relu_backward',
    inputs: { a: [a, s], b: [b, s] },
    outputs: ['y'],
    backwardInputs: (ins, outs, dys) => ({ y: outs.y, dy: dys.y }),
    grads: { a: 'da', b: 'db' },
    seed,
  });
  gradcheck(t, {
    forward: 'add_forward',
    backward: 'add_backward',
    inputs: { a: [a, s], b: [b, s] },
    outputs: ['y'],
    backwardInputs: (ins, outs, dys) => ({ dy: dys.y }),
    grads: { a: 'da', b: 'db' },
    seed,
  });
});

test('PyTorch fixtures cover every general conv, max pool and residual add op', (t) => {
  const ops = new Set(loadFixtureCases(new URL('./fixtures/kernels/conv_general.safetensors', import.meta.url).pathname).map((c) => c.op));
  for (const op of ['conv2d_general', 'maxpool', 'add', 'add_relu'])
    for (const dir of ['forward', 'backward']) t.true(ops.has(`${op}_${dir}`), `no fixture for ${op}_${dir}`);
});

test('general conv, max pool and add bad arguments name the argument', (t) => {
  const B = 'DWC_BAD_ARGUMENT';
  const x = tensor(randArray([2, 3, 8, 8], rng), [2, 3, 8, 8]);
  const w = tensor(randArray([4, 3, 3, 3], rng), [4, 3, 3, 3]);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x, w: tensor(undefined, [4, 2, 3, 3]) }), 'w', B);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x, w: tensor(undefined, [4, 3, 3]) }), 'w', B);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x: tensor(undefined, [2, 3, 8]), w }), 'x', B);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x: tensor(undefined, [2, 3, 8, 8], 'int32'), w }), 'x', B);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x }), 'w', B);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x, w }, { stride: 0 }), 'stride', B);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x, w }, { stride: 1.5 }), 'stride', B);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x, w }, { pad: -1 }), 'pad', B);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x, w }, { pad: NaN }), 'pad', B);
  throwsNaming(t, () => runOp('conv2d_general_forward', { x: tensor(undefined, [2, 3, 2, 2]), w: tensor(undefined, [4, 3, 7, 7]) }), 'x', B);
  throwsNaming(t, () => runOp('conv2d_general_backward', { x, w }, { stride: 2, pad: 1 }), 'dy', B);
  throwsNaming(t, () => runOp('conv2d_general_backward', { x, w, dy: tensor(undefined, [2, 4, 8, 8]) }, { stride: 2, pad: 1 }), 'dy', B);
  throwsNaming(t, () => runOp('maxpool_forward', { x: tensor(undefined, [2, 3, 8]) }), 'x', B);
  throwsNaming(t, () => runOp('maxpool_forward', { x }, { pad: 2 }), 'pad', B);
  throwsNaming(t, () => runOp('maxpool_forward', { x }, { stride: 0 }), 'stride', B);
  throwsNaming(t, () => runOp('maxpool_forward', { x }, { k: Infinity }), 'k', B);
  const o = runOp('maxpool_forward', { x });
  throwsNaming(t, () => runOp('maxpool_backward', { x, idx: o.idx }), 'dy', B);
  throwsNaming(t, () => runOp('maxpool_backward', { x, dy: o.y }), 'idx', B);
  throwsNaming(t, () => runOp('maxpool_backward', { x, idx: o.y, dy: o.y }), 'idx', B);
  throwsNaming(t, () => runOp('maxpool_backward', { x, idx: tensor(new Int32Array(o.idx.toArray().length).fill(99), o.idx.shape, 'int32'), dy: o.y }), 'idx', B);
  throwsNaming(t, () => runOp('maxpool_backward', { x, idx: o.idx, dy: tensor(undefined, [2, 3, 3, 4]) }), 'dy', B);
  throwsNaming(t, () => runOp('add_forward', { a: x, b: w }), 'b', B);
  throwsNaming(t, () => runOp('add_relu_forward', { a: x }), 'b', B);
  throwsNaming(t, () => runOp('add_relu_backward', { y: x, dy: w }), 'dy', B);
  throwsNaming(t, () => runOp('add_backward', {}), 'dy', B);
});

// accumulate = 0 (the trunk's backward: no zeroing pass before each unit's dx) on every
// implementation and code path: whole-batch and per-sample im2col, 1x1 (plain GEMM), oneDNN.
test.serial('conv2d_general backward accumulate = 0 overwrites dx with the floats accumulate = 1 adds to zero; dw still accumulates', (t) => {
  const a = addon();
  const impls = a.info().onednn !== null ? ['im2col', 'onednn'] : ['im2col'];
  try {
    for (const conv of impls) {
      a.setKernels({ conv });
      for (const [xs, ws, stride, pad] of [[[3, 4, 6, 6], [5, 4, 3, 3], 1, 1], [[2, 3, 24, 24], [4, 3, 3, 3], 1, 1], [[2, 3, 24, 24], [4, 3, 1, 1], 1, 0], [[3, 4, 6, 6], [5, 4, 1, 1], 2, 0]]) {
        const x = tensor(randArray(xs, rng), xs), w = tensor(randArray(ws, rng), ws);
        const Ho = Math.floor((xs[2] + 2 * pad - ws[2]) / stride) + 1;
        const dys = [xs[0], ws[0], Ho, Ho];
        const dy = tensor(randArray(dys, rng), dys);
        const junk = tensor(randArray(xs, rng, 100), xs);
        const acc = runOp('conv2d_general_backward', { x, w, dy }, { stride, pad });
        const over = runOp('conv2d_general_backward', { x, w, dy, dx_init: junk }, { stride, pad, accumulate: 0 });
        const added = runOp('conv2d_general_backward', { x, w, dy, dx_init: junk }, { stride, pad });
        const r = acc.dx.toArray(), o = over.dx.toArray(), s = added.dx.toArray(), j = junk.toArray();
        const tag = `${conv} x=[${xs}] w=[${ws}] stride ${stride}`;
        const bad = r.findIndex((v, i) => v !== o[i]);
        t.is(bad, -1, `${tag}: dx ${bad >= 0 ? `[${bad}] = ${o[bad]} overwritten vs ${r[bad]}` : ''}`);
        t.true(relErr(s, Float32Array.from(r, (v, i) => v + j[i])) < 1e-6, `${tag}: accumulate = 1 adds to dx_init`);
        t.deepEqual(Array.from(over.dw.toArray()), Array.from(acc.dw.toArray()), `${tag}: dw`);
      }
    }
  } finally {
    a.setKernels({ conv: 'auto' });
  }
  throwsNaming(t, () => runOp('conv2d_general_backward', { x: tensor(undefined, [1, 2, 4, 4]), w: tensor(undefined, [3, 2, 3, 3]), dy: tensor(undefined, [1, 3, 2, 2]), dx_init: tensor(undefined, [4]) }), 'dx_init');
});
