// Inception convolutions (spec §4): conv1d / conv2d, k ∈ {1, 3}, stride 1, padding k/2, no bias.
import test from 'ava';
import { runOp, runOpAsync, tensor } from '../lib/index.js';
import { gradcheck, makeRng, freshSeed, randArray, relErr, throwsNaming, loadFixtureCases } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);

// Direct (no im2col) reference in double: y[n,o,h,w] = Σ x[n,i,h+a-ph,w+b-pw] · w[o,i,a,b].
function convRef(x, w, N, Ci, Co, H, W, kh, kw) {
  const y = new Float64Array(N * Co * H * W);
  const ph = kh >> 1;
  const pw = kw >> 1;
  for (let n = 0; n < N; n++)
    for (let o = 0; o < Co; o++)
      for (let h = 0; h < H; h++)
        for (let q = 0; q < W; q++) {
          let s = 0;
          for (let i = 0; i < Ci; i++)
            for (let a = 0; a < kh; a++)
              for (let b = 0; b < kw; b++) {
                const ih = h + a - ph;
                const iw = q + b - pw;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) s += x[((n * Ci + i) * H + ih) * W + iw] * w[((o * Ci + i) * kh + a) * kw + b];
              }
          y[((n * Co + o) * H + h) * W + q] = s;
        }
  return y;
}

// Transposed reference: dx and dw of <dy, conv(x, w)>, in double.
function convBackRef(x, w, dy, N, Ci, Co, H, W, kh, kw) {
  const dx = new Float64Array(N * Ci * H * W);
  const dw = new Float64Array(Co * Ci * kh * kw);
  const ph = kh >> 1;
  const pw = kw >> 1;
  for (let n = 0; n < N; n++)
    for (let o = 0; o < Co; o++)
      for (let h = 0; h < H; h++)
        for (let q = 0; q < W; q++) {
          const g = dy[((n * Co + o) * H + h) * W + q];
          for (let i = 0; i < Ci; i++)
            for (let a = 0; a < kh; a++)
              for (let b = 0; b < kw; b++) {
                const ih = h + a - ph;
                const iw = q + b - pw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const xi = ((n * Ci + i) * H + ih) * W + iw;
                const wi = ((o * Ci + i) * kh + a) * kw + b;
                dx[xi] += g * w[wi];
                dw[wi] += g * x[xi];
              }
        }
  return { dx, dw };
}

for (const k of [1, 3]) {
  for (const [dim, xs] of [
    [2, [3, 5, 4, 6]],
    [2, [2, 3, 1, 7]],
    [2, [2, 4, 5, 1]],
    [1, [3, 6, 9]],
    [1, [2, 3, 1]],
  ]) {
    const Co = 7;
    const ws = dim === 2 ? [Co, xs[1], k, k] : [Co, xs[1], k];
    const [N, Ci] = xs;
    const H = dim === 2 ? xs[2] : 1;
    const W = xs[dim === 2 ? 3 : 2];
    const kh = dim === 2 ? k : 1;
    const op = `conv${dim}d`;

    test(`${op} k=${k} x=[${xs}] forward and backward match the direct reference`, (t) => {
      const x = randArray(xs, rng);
      const w = randArray(ws, rng, 0.5);
      const y = runOp(`${op}_forward`, { x: tensor(x, xs), w: tensor(w, ws) }).y;
      t.deepEqual(y.shape, dim === 2 ? [N, Co, H, W] : [N, Co, W]);
      t.true(relErr(y.toArray(), convRef(x, w, N, Ci, Co, H, W, kh, k)) < 1e-5, `seed ${seed}`);
      const dy = randArray(y.shape, rng);
      const g = runOp(`${op}_backward`, { x: tensor(x, xs), w: tensor(w, ws), dy: tensor(dy, y.shape) });
      const ref = convBackRef(x, w, dy, N, Ci, Co, H, W, kh, k);
      t.deepEqual(g.dx.shape, xs);
      t.deepEqual(g.dw.shape, ws);
      t.true(relErr(g.dx.toArray(), ref.dx) < 1e-5, `dx; seed ${seed}`);
      t.true(relErr(g.dw.toArray(), ref.dw) < 1e-5, `dw; seed ${seed}`);
    });

    test(`${op} k=${k} x=[${xs}] backward matches finite differences`, (t) => {
      gradcheck(t, {
        forward: `${op}_forward`,
        backward: `${op}_backward`,
        inputs: { x: [randArray(xs, rng), xs], w: [randArray(ws, rng, 0.5), ws] },
        outputs: ['y'],
        backwardInputs: (ins, outs, dys) => ({ x: ins.x, w: ins.w, dy: dys.y }),
        grads: { x: 'dx', w: 'dw' },
        seed,
      });
    });
  }
}

test('conv2d at a larger shape (threaded packing, workspace reuse, async) matches the reference', async (t) => {
  const [N, Ci, Co, H, W] = [4, 33, 19, 7, 7];
  for (const k of [3, 1, 3]) {
    const x = randArray([N, Ci, H, W], rng);
    const w = randArray([Co, Ci, k, k], rng, 0.2);
    const { y } = await runOpAsync('conv2d_forward', { x: tensor(x, [N, Ci, H, W]), w: tensor(w, [Co, Ci, k, k]) });
    t.true(relErr(y.toArray(), convRef(x, w, N, Ci, Co, H, W, k, k)) < 1e-5, `k=${k}; seed ${seed}`);
    const dy = randArray(y.shape, rng);
    const g = runOp('conv2d_backward', { x: tensor(x, [N, Ci, H, W]), w: tensor(w, [Co, Ci, k, k]), dy: tensor(dy, y.shape) });
    const ref = convBackRef(x, w, dy, N, Ci, Co, H, W, k, k);
    t.true(relErr(g.dx.toArray(), ref.dx) < 1e-5 && relErr(g.dw.toArray(), ref.dw) < 1e-5, `k=${k}; seed ${seed}`);
  }
});

test('PyTorch fixtures cover every conv, batchnorm and pool op', (t) => {
  const cases = loadFixtureCases(new URL('./fixtures/kernels/conv.safetensors', import.meta.url).pathname);
  const ops = new Set(cases.map((c) => c.op));
  for (const op of ['conv2d', 'conv1d', 'batchnorm', 'avgpool3', 'gem'])
    for (const dir of ['forward', 'backward']) t.true(ops.has(`${op}_${dir}`), `no fixture for ${op}_${dir}`);
});

test('conv bad arguments name the argument', (t) => {
  const x = tensor(randArray([2, 3, 4, 4], rng), [2, 3, 4, 4]);
  const w = tensor(randArray([5, 3, 3, 3], rng), [5, 3, 3, 3]);
  const x1 = tensor(randArray([2, 3, 6], rng), [2, 3, 6]);
  const B = 'DWC_BAD_ARGUMENT';
  throwsNaming(t, () => runOp('conv2d_forward', { x, w: tensor(undefined, [5, 3, 5, 5]) }), 'w', B);
  throwsNaming(t, () => runOp('conv2d_forward', { x, w: tensor(undefined, [5, 3, 1, 3]) }), 'w', B);
  throwsNaming(t, () => runOp('conv2d_forward', { x, w: tensor(undefined, [5, 2, 3, 3]) }), 'w', B);
  throwsNaming(t, () => runOp('conv2d_forward', { x, w: tensor(undefined, [5, 3, 3]) }), 'w', B);
  throwsNaming(t, () => runOp('conv2d_forward', { x: x1, w }), 'x', B);
  throwsNaming(t, () => runOp('conv2d_forward', { x: tensor(undefined, [2, 3, 4, 4], 'int32'), w }), 'x', B);
  throwsNaming(t, () => runOp('conv2d_forward', { x }), 'w', B);
  throwsNaming(t, () => runOp('conv2d_backward', { x, w }), 'dy', B);
  throwsNaming(t, () => runOp('conv2d_backward', { x, w, dy: tensor(undefined, [2, 5, 4, 3]) }), 'dy', B);
  throwsNaming(t, () => runOp('conv1d_forward', { x: x1, w: tensor(undefined, [4, 3, 2]) }), 'w', B);
  throwsNaming(t, () => runOp('conv1d_forward', { x: x1, w: tensor(undefined, [4, 3, 1, 1]) }), 'w', B);
  throwsNaming(t, () => runOp('conv1d_backward', { x: x1, w: tensor(undefined, [4, 3, 3]), dy: tensor(undefined, [2, 4, 5]) }), 'dy', B);
});
