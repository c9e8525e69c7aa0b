import test from 'ava';
import { runOp, tensor } from '../lib/index.js';
import { gradcheck, makeRng, freshSeed, randArray, relErr, throwsNaming } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);

// Reference softmax / log-softmax of scale*x over the last axis, in double.
function refRows(x, cols, scale, log) {
  const y = new Float32Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let m = -Infinity;
    for (let j = 0; j < cols; j++) m = Math.max(m, scale * x[r * cols + j]);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(scale * x[r * cols + j] - m);
    for (let j = 0; j < cols; j++) {
      const z = scale * x[r * cols + j] - m;
      y[r * cols + j] = log ? z - Math.log(s) : Math.exp(z) / s;
    }
  }
  return y;
}

for (const name of ['softmax', 'log_softmax']) {
  for (const [shape, scale] of [
    [[4, 7], 1],
    [[2, 3, 6], 1 / 0.07],
  ]) {
    test(`${name} backward matches finite differences (shape ${shape}, scale ${scale.toFixed(2)})`, (t) => {
      gradcheck(t, {
        forward: `${name}_rows_forward`,
        backward: `${name}_rows_backward`,
        inputs: { x: [randArray(shape, rng, scale === 1 ? 1 : 0.05), shape] },
        attrs: { scale },
        outputs: ['y'],
        backwardInputs: (ins, outs, dys) => ({ y: outs.y, dy: dys.y }),
        grads: { x: 'dx' },
        eps: scale === 1 ? 1e-3 : 1e-4,
        seed,
      });
    });
  }
}

test('l2norm backward matches finite differences', (t) => {
  gradcheck(t, {
    forward: 'l2norm_rows_forward',
    backward: 'l2norm_rows_backward',
    inputs: { x: [randArray([3, 2, 5], rng), [3, 2, 5]] },
    outputs: ['y'],
    backwardInputs: (ins, outs, dys) => ({ y: outs.y, norms: outs.norms, dy: dys.y }),
    grads: { x: 'dx' },
    seed,
  });
});

test('softmax/log-softmax are stable for huge logits, match a reference on large (threaded) inputs, and mask -inf', (t) => {
  const big = tensor([1e4, 1e4 - 1, -1e4, 3e4, 3e4, 0], [2, 3]);
  const y = runOp('softmax_rows_forward', { x: big }).y.toArray();
  t.true(y.every(Number.isFinite), `softmax of huge logits: ${y}`);
  t.true(Math.abs(y[0] + y[1] + y[2] - 1) < 1e-6 && Math.abs(y[3] - 0.5) < 1e-6 && y[5] === 0);
  const ly = runOp('log_softmax_rows_forward', { x: big }).y.toArray();
  t.true(ly.every(Number.isFinite), `log-softmax of huge logits: ${ly}`);
  t.true(Math.abs(ly[0] - -Math.log1p(Math.exp(-1))) < 1e-5 && Math.abs(ly[5] - (-3e4 - Math.LN2)) < 0.01);

  const [rows, cols] = [300, 257];
  const x = randArray([rows, cols], rng, 3);
  for (const log of [false, true]) {
    const got = runOp(`${log ? 'log_' : ''}softmax_rows_forward`, { x: tensor(x, [rows, cols]) }, { scale: 0.7 }).y.toArray();
    t.true(relErr(got, refRows(x, cols, 0.7, log)) < 1e-5, `${log ? 'log-' : ''}softmax vs reference; seed ${seed}`);
  }

  const masked = tensor([1, 2, -Infinity, 3, -Infinity, -Infinity], [2, 3]);
  const ym = runOp('softmax_rows_forward', { x: masked }).y.toArray();
  t.is(ym[2], 0);
  t.is(ym[4], 0);
  t.is(ym[3], 1);
});

test('l2norm: unit rows, norms output, zero rows clamp to 1e-12', (t) => {
  const x = tensor([3, 4, 0, 0, 0, 0], [3, 2]);
  const out = runOp('l2norm_rows_forward', { x });
  t.deepEqual(out.norms.shape, [3]);
  const y = out.y.toArray();
  const n = out.norms.toArray();
  t.true(Math.abs(y[0] - 0.6) < 1e-7 && Math.abs(y[1] - 0.8) < 1e-7 && Math.abs(n[0] - 5) < 1e-6);
  t.deepEqual(Array.from(y.slice(2)), [0, 0, 0, 0]);
  t.true(Math.abs(n[1] - 1e-12) < 1e-18);
  const dx = runOp('l2norm_rows_backward', { y: out.y, norms: out.norms, dy: tensor([0, 0, 1e-12, 0, 0, 0], [3, 2]) }).dx.toArray();
  t.true(Math.abs(dx[2] - 1) < 1e-5, 'clamped row: dx = dy / 1e-12');
});

test('bad arguments name the argument', (t) => {
  const x = tensor(randArray([2, 3], rng), [2, 3]);
  const dyBad = tensor(randArray([3, 2], rng), [3, 2]);
  for (const name of ['softmax', 'log_softmax']) {
    throwsNaming(t, () => runOp(`${name}_rows_forward`, { x }, { scale: Number.NaN }), 'scale', 'DWC_BAD_ARGUMENT');
    throwsNaming(t, () => runOp(`${name}_rows_forward`, { x: tensor([1, 2], [2], 'int32') }), 'x', 'DWC_BAD_ARGUMENT');
    throwsNaming(t, () => runOp(`${name}_rows_forward`, {}), 'x', 'DWC_BAD_ARGUMENT');
    throwsNaming(t, () => runOp(`${name}_rows_backward`, { y: x, dy: dyBad }), 'dy', 'DWC_BAD_ARGUMENT');
    throwsNaming(t, () => runOp(`${name}_rows_backward`, { dy: x }), 'y', 'DWC_BAD_ARGUMENT');
  }
  const out = runOp('l2norm_rows_forward', { x });
  throwsNaming(t, () => runOp('l2norm_rows_backward', { y: out.y, norms: tensor([1, 2, 3], [3]), dy: x }), 'norms', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('l2norm_rows_backward', { y: out.y, norms: out.norms, dy: dyBad }), 'dy', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('l2norm_rows_backward', { y: out.y, dy: x }), 'norms', 'DWC_BAD_ARGUMENT');
});
