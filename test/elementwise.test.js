import test from 'ava';
import { runOp, tensor } from '../lib/index.js';
import { gradcheck, makeRng, freshSeed, randArray, throwsNaming } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);

for (const name of ['relu', 'sigmoid']) {
  test(`${name} backward matches finite differences`, (t) => {
    const x = randArray([5, 6], rng);
    for (let i = 0; i < x.length; i++) if (Math.abs(x[i]) < 0.02) x[i] = x[i] < 0 ? -0.05 : 0.05; // off the ReLU kink
    gradcheck(t, {
      forward: `${name}_forward`,
      backward: `${name}_backward`,
      inputs: { x: [x, [5, 6]] },
      outputs: ['y'],
      backwardInputs: (ins, outs, dys) => ({ y: outs.y, dy: dys.y }),
      grads: { x: 'dx' },
      seed,
    });
  });
}

test('dropout: same seed, same mask; p=0 is identity; mask scales by 1/(1-p)', (t) => {
  const x = tensor(randArray([1000], rng), [1000]);
  const a = runOp('dropout_forward', { x }, { p: 0.5, seed: 7, stream: 3 });
  const b = runOp('dropout_forward', { x }, { p: 0.5, seed: 7, stream: 3 });
  const c = runOp('dropout_forward', { x }, { p: 0.5, seed: 8, stream: 3 });
  t.deepEqual(a.mask.toArray(), b.mask.toArray());
  t.notDeepEqual(a.mask.toArray(), c.mask.toArray());
  const m = a.mask.toArray();
  const kept = m.filter((v) => v !== 0).length;
  t.true(kept > 400 && kept < 600, `kept ${kept} of 1000`);
  t.true(m.every((v) => v === 0 || Math.abs(v - 2) < 1e-6));
  const id = runOp('dropout_forward', { x }, { p: 0, seed: 1 });
  t.deepEqual(id.y.toArray(), x.toArray());
  const dx = runOp('dropout_backward', { mask: a.mask, dy: x }).dx.toArray();
  const y = a.y.toArray();
  t.true(dx.every((v, i) => v === y[i]), 'dropout backward = mask * dy');
});

test('bad arguments name the argument', (t) => {
  const x = tensor([1, 2, 3], [3]);
  throwsNaming(t, () => runOp('dropout_forward', { x }, { p: Number.NaN }), 'p', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('dropout_forward', { x }, { p: 1.5 }), 'p', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('relu_backward', { y: x, dy: tensor([1, 2], [2]) }), 'dy', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('relu_forward', { x: tensor([1, 2], [2], 'int32') }), 'x', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('relu_forward', {}), 'x', 'DWC_BAD_ARGUMENT');
  const r = tensor([1, 2], [2]);
  r.release();
  throwsNaming(t, () => runOp('relu_forward', { x: r }), 'x', 'DWC_RELEASED');
  t.throws(() => runOp('no_such_op', {}), { message: /unknown op 'no_such_op'/ });
  t.throws(() => tensor([1, 2, 3], [2, 2]), { message: /'data' has 3 elements/ });
});

test('async op runs off the JS thread and refuses concurrent use of its inputs', async (t) => {
  const { runOpAsync } = await import('../lib/index.js');
  const x = tensor(randArray([1 << 20], rng), [1 << 20]);
  const p = runOpAsync('sigmoid_forward', { x });
  const err = t.throws(() => runOp('relu_forward', { x }));
  t.is(err.code, 'DWC_BUSY');
  t.regex(err.message, /'x' is in use/);
  const out = await p;
  t.is(out.y.numel, 1 << 20);
  t.notThrows(() => runOp('relu_forward', { x }));
});
