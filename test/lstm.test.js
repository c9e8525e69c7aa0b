// LSTM (spec §4 text encoder): finite differences, PyTorch fixtures (nn.LSTM and packed sequences),
// masking = running each sample alone on its real tokens, composition with plain ops, bad arguments.
import test from 'ava';
import { join } from 'node:path';
import { runOp, tensor } from '../lib/index.js';
import { gradcheck, makeRng, freshSeed, randArray, relErr, loadFixtureCases, throwsNaming } from './helpers/index.js';
import { assertOpCase } from './helpers/accuracy.js';

const seed = freshSeed();
const rng = makeRng(seed);
const fixtures = loadFixtureCases(join(new URL('./fixtures/kernels/', import.meta.url).pathname, 'lstm_dwc.safetensors'));

function weights(E, D, scale = 0.4) {
  return {
    w_ih: [randArray([4 * D, E], rng, scale), [4 * D, E]],
    w_hh: [randArray([4 * D, D], rng, scale), [4 * D, D]],
    b_ih: [randArray([4 * D], rng, scale), [4 * D]],
    b_hh: [randArray([4 * D], rng, scale), [4 * D]],
  };
}

const asTensors = (entries) => Object.fromEntries(Object.entries(entries).map(([k, [d, s, dt]]) => [k, tensor(d, s, dt ?? 'float32')]));

for (const masked of [false, true]) {
  test(`lstm backward matches finite differences${masked ? ' (lengths)' : ''}`, (t) => {
    const [B, L, E, D] = [3, 4, 5, 3];
    const inputs = { x: [randArray([B, L, E], rng), [B, L, E]], ...weights(E, D) };
    if (masked) inputs.lengths = [Int32Array.from([4, 1, 2]), [B], 'int32'];
    gradcheck(t, {
      forward: 'lstm_forward',
      backward: 'lstm_backward',
      inputs,
      outputs: ['h'],
      backwardInputs: (ins, outs, dys) => ({ ...ins, h: outs.h, cache: outs.cache, dh: dys.h }),
      grads: { x: 'dx', w_ih: 'dw_ih', w_hh: 'dw_hh', b_ih: 'db_ih', b_hh: 'db_hh' },
      samples: 24,
      eps: 5e-3, // float32 forward: a larger step keeps the rounding noise of the loss below tol
      seed,
    });
  });
}

test('lstm matches the PyTorch fixtures (nn.LSTM and pack_padded_sequence)', (t) => {
  const cases = fixtures.filter((c) => c.op.startsWith('lstm_'));
  t.is(cases.length, 4);
  t.true(cases.some((c) => c.inputs.lengths));
  for (const c of cases) assertOpCase(t, c, runOp(c.op, c.inputs, c.attrs)); // float64 answer, docs/ACCURACY.md rule
});

test('lstm with lengths = each sample alone over its real steps, zeros after', (t) => {
  const [B, L, E, D] = [3, 5, 4, 6];
  const lens = [5, 2, 3];
  const W = weights(E, D);
  const x = randArray([B, L, E], rng);
  const dh = randArray([B, L, D], rng);
  const all = runOp('lstm_forward', { x: tensor(x, [B, L, E]), ...asTensors(W), lengths: tensor(lens, [B], 'int32') });
  const gAll = runOp('lstm_backward', {
    x: tensor(x, [B, L, E]),
    ...asTensors(W),
    lengths: tensor(lens, [B], 'int32'),
    h: all.h,
    cache: all.cache,
    dh: tensor(dh, [B, L, D]),
  });
  const h = all.h.toArray();
  const dx = gAll.dx.toArray();
  const dwSum = { dw_ih: null, dw_hh: null, db_ih: null, db_hh: null };
  for (let b = 0; b < B; b++) {
    const n = lens[b];
    const xb = tensor(x.subarray(b * L * E, b * L * E + n * E), [1, n, E]);
    const one = runOp('lstm_forward', { x: xb, ...asTensors(W) });
    const hb = one.h.toArray();
    t.true(relErr(h.subarray(b * L * D, b * L * D + n * D), hb) < 1e-6, `sample ${b}: h differs from the unmasked run`);
    t.true(h.subarray(b * L * D + n * D, (b + 1) * L * D).every((v) => v === 0), `sample ${b}: padded steps must be 0`);
    const g = runOp('lstm_backward', { x: xb, ...asTensors(W), h: one.h, cache: one.cache, dh: tensor(dh.subarray(b * L * D, b * L * D + n * D), [1, n, D]) });
    t.true(relErr(dx.subarray(b * L * E, b * L * E + n * E), g.dx.toArray()) < 1e-5, `sample ${b}: dx`);
    t.true(dx.subarray(b * L * E + n * E, (b + 1) * L * E).every((v) => v === 0), `sample ${b}: dx of padded steps must be 0`);
    for (const k of Object.keys(dwSum)) {
      const a = g[k].toArray();
      if (!dwSum[k]) dwSum[k] = new Float64Array(a.length);
      for (let i = 0; i < a.length; i++) dwSum[k][i] += a[i];
    }
  }
  for (const k of Object.keys(dwSum)) {
    const err = relErr(gAll[k].toArray(), dwSum[k]);
    t.true(err < 1e-5, `${k}: batched vs per-sample sum ${err.toExponential(2)}`);
  }
});

test('lstm forward = composition of plain ops (linear, sigmoid, mul) step by step', (t) => {
  const [B, L, E, D] = [4, 3, 5, 7];
  const W = weights(E, D);
  const x = randArray([B, L, E], rng);
  const fused = runOp('lstm_forward', { x: tensor(x, [B, L, E]), ...asTensors(W) }).h.toArray();
  const Wt = asTensors(W);
  // tanh(z) = 2·σ(2z) − 1
  const tanh = (arr) => runOp('sigmoid_forward', { x: tensor(arr.map((v) => 2 * v), [arr.length]) }).y.toArray().map((v) => 2 * v - 1);
  const xi = runOp('linear_forward', { x: tensor(x, [B * L, E]), W: Wt.w_ih, b: Wt.b_ih }).y.toArray();
  let h = new Float32Array(B * D);
  let c = new Float32Array(B * D);
  const out = new Float32Array(B * L * D);
  for (let s = 0; s < L; s++) {
    const hh = runOp('linear_forward', { x: tensor(h, [B, D]), W: Wt.w_hh, b: Wt.b_hh }).y.toArray();
    const pre = new Float32Array(B * 4 * D);
    for (let b = 0; b < B; b++) for (let j = 0; j < 4 * D; j++) pre[b * 4 * D + j] = xi[(b * L + s) * 4 * D + j] + hh[b * 4 * D + j];
    const part = (k) => {
      const a = new Float32Array(B * D);
      for (let b = 0; b < B; b++) for (let d = 0; d < D; d++) a[b * D + d] = pre[b * 4 * D + k * D + d];
      return a;
    };
    const sig = (a) => runOp('sigmoid_forward', { x: tensor(a, [a.length]) }).y;
    const [i, f, o] = [sig(part(0)), sig(part(1)), sig(part(3))];
    const g = tensor(tanh(part(2)), [B * D]);
    const fc = runOp('mul_forward', { a: f, b: tensor(c, [B * D]) }).y.toArray();
    const ig = runOp('mul_forward', { a: i, b: g }).y.toArray();
    c = fc.map((v, k) => v + ig[k]);
    h = runOp('mul_forward', { a: o, b: tensor(tanh(c), [B * D]) }).y.toArray();
    for (let b = 0; b < B; b++) out.set(h.subarray(b * D, (b + 1) * D), (b * L + s) * D);
  }
  const err = relErr(fused, out);
  t.true(err <= 1e-5, `fused vs composed: ${err.toExponential(2)}`);
});

test('lstm backward at a larger shape with lengths matches finite differences', (t) => {
  // Larger D so that the per-step GEMMs use the BLAS's blocked paths.
  const [B, L, E, D] = [5, 6, 24, 40];
  gradcheck(t, {
    forward: 'lstm_forward',
    backward: 'lstm_backward',
    inputs: { x: [randArray([B, L, E], rng, 0.5), [B, L, E]], ...weights(E, D, 0.15), lengths: [Int32Array.from([6, 3, 5, 1, 6]), [B], 'int32'] },
    outputs: ['h'],
    backwardInputs: (ins, outs, dys) => ({ ...ins, h: outs.h, cache: outs.cache, dh: dys.h }),
    grads: { w_hh: 'dw_hh', w_ih: 'dw_ih', x: 'dx' },
    samples: 12,
    eps: 5e-3,
    seed,
  });
});

test('lstm bad arguments name the argument', (t) => {
  const [B, L, E, D] = [2, 3, 4, 5];
  const W = asTensors(weights(E, D));
  const x = tensor(randArray([B, L, E], rng), [B, L, E]);
  throwsNaming(t, () => runOp('lstm_forward', { ...W, x: tensor(randArray([B, L, E + 1], rng), [B, L, E + 1]) }), 'w_ih', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('lstm_forward', { ...W, x: tensor(randArray([B * L, E], rng), [B * L, E]) }), 'x', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('lstm_forward', { ...W, x, w_hh: tensor(undefined, [4 * D, D + 1]) }), 'w_hh', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('lstm_forward', { ...W, x, b_hh: tensor(undefined, [D]) }), 'b_hh', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('lstm_forward', { ...W, x, w_ih: tensor(undefined, [4 * D + 1, E]) }), 'w_ih', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('lstm_forward', { ...W, x, lengths: tensor([1, 2], [B]) }), 'lengths', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('lstm_forward', { ...W, x, lengths: tensor([1, 2, 3], [3], 'int32') }), 'lengths', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('lstm_forward', { ...W, x, lengths: tensor([1, L + 1], [B], 'int32') }), 'lengths', 'DWC_BAD_ARGUMENT');
  const { b_ih: _unused, ...noBias } = W;
  throwsNaming(t, () => runOp('lstm_forward', { ...noBias, x }), 'b_ih', 'DWC_BAD_ARGUMENT');
  const f = runOp('lstm_forward', { ...W, x });
  throwsNaming(t, () => runOp('lstm_backward', { ...W, x, h: f.h, cache: tensor(undefined, [3]), dh: f.h }), 'cache', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('lstm_backward', { ...W, x, h: f.h, cache: f.cache, dh: tensor(undefined, [B, L, D + 1]) }), 'dh', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('lstm_backward', { ...W, x, cache: f.cache, dh: f.h }), 'h', 'DWC_BAD_ARGUMENT');
});
