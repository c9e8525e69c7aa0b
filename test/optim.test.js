import test from 'ava';
import { runOp, tensor } from '../lib/index.js';
import { makeRng, freshSeed, randArray, relErr, throwsNaming } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);

// torch.optim.Adam step (single-tensor path), in double.
function refAdam(p, g, m, v, { lr, beta1, beta2, eps, weight_decay: wd, step }) {
  const bc1 = 1 - beta1 ** step;
  const bc2s = Math.sqrt(1 - beta2 ** step);
  const P = Float64Array.from(p);
  const Mo = Float64Array.from(m);
  const Vo = Float64Array.from(v);
  for (let i = 0; i < P.length; i++) {
    const gi = g[i] + wd * P[i];
    Mo[i] = beta1 * Mo[i] + (1 - beta1) * gi;
    Vo[i] = beta2 * Vo[i] + (1 - beta2) * gi * gi;
    P[i] -= (lr / bc1) * (Mo[i] / (Math.sqrt(Vo[i]) / bc2s + eps));
  }
  return { param: P, m: Mo, v: Vo };
}

test('adam_update matches a reference over 4 chained steps (small and large/threaded, strong weight decay)', (t) => {
  for (const n of [37, 100003]) {
    const hp = { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.3 };
    let p = randArray([n], rng);
    let m = new Float32Array(n);
    let v = new Float32Array(n);
    for (let step = 1; step <= 4; step++) {
      const g = randArray([n], rng, 0.1);
      const out = runOp('adam_update', { param: tensor(p, [n]), grad: tensor(g, [n]), m: tensor(m, [n]), v: tensor(v, [n]) }, { ...hp, step });
      const ref = refAdam(p, g, m, v, { ...hp, step });
      // Compare the update itself, not the (much larger) parameter.
      const got = out.param.toArray();
      const dGot = got.map((x, i) => x - p[i]);
      const dRef = ref.param.map((x, i) => x - p[i]);
      t.true(relErr(dGot, dRef) < 1e-4, `n=${n} step ${step}: update off by ${relErr(dGot, dRef)}; seed ${seed}`);
      t.true(relErr(out.m.toArray(), ref.m) < 1e-5, `m at step ${step}`);
      t.true(relErr(out.v.toArray(), ref.v) < 1e-5, `v at step ${step}`);
      p = got;
      m = out.m.toArray();
      v = out.v.toArray();
    }
  }
});

test('adam_update returns new tensors and leaves its inputs unchanged; defaults are torch defaults', (t) => {
  const n = 10;
  const p = randArray([n], rng);
  const g = randArray([n], rng);
  const P = tensor(p, [n]);
  const M = tensor(undefined, [n]);
  const V = tensor(undefined, [n]);
  const out = runOp('adam_update', { param: P, grad: tensor(g, [n]), m: M, v: V }, { lr: 0.1, step: 1 });
  t.deepEqual(P.toArray(), p);
  t.true(M.toArray().every((x) => x === 0) && V.toArray().every((x) => x === 0));
  const ref = refAdam(p, g, new Float32Array(n), new Float32Array(n), { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0, step: 1 });
  t.true(relErr(out.param.toArray(), ref.param) < 1e-6);
  // First Adam step moves every coordinate by about lr against the sign of its gradient.
  const d = out.param.toArray().map((x, i) => x - p[i]);
  t.true(d.every((x, i) => Math.abs(Math.abs(x) - 0.1) < 1e-3 && Math.sign(x) === -Math.sign(g[i])));
});

test('bad arguments name the argument', (t) => {
  const a = tensor(randArray([4], rng), [4]);
  const ins = { param: a, grad: a, m: a, v: a };
  const hp = { lr: 1e-3, step: 1 };
  throwsNaming(t, () => runOp('adam_update', ins, { ...hp, step: 0 }), 'step', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', ins, { ...hp, step: 1.5 }), 'step', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', ins, { lr: 1e-3 }), 'step', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', ins, { ...hp, lr: Number.NaN }), 'lr', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', ins, { ...hp, lr: -1 }), 'lr', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', ins, { ...hp, beta1: 1 }), 'beta1', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', ins, { ...hp, beta2: Number.POSITIVE_INFINITY }), 'beta2', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', ins, { ...hp, eps: -1e-8 }), 'eps', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', ins, { ...hp, weight_decay: Number.NaN }), 'weight_decay', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', { ...ins, grad: tensor([1, 2], [2]) }, hp), 'grad', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', { ...ins, m: tensor([1, 2, 3, 4], [4], 'int32') }, hp), 'm', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('adam_update', { param: a, grad: a, m: a }, hp), 'v', 'DWC_BAD_ARGUMENT');
});
