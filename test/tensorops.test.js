import test from 'ava';
import { runOp, tensor } from '../lib/index.js';
import { gradcheck, makeRng, freshSeed, randArray, throwsNaming } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);

for (const [axis, shapes] of [
  [0, [[2, 3], [1, 3], [4, 3]]],
  [1, [[2, 1, 3], [2, 4, 3], [2, 2, 3]]],
  [-1, [[3, 2], [3, 5]]],
]) {
  test(`concat backward matches finite differences (axis ${axis})`, (t) => {
    const inputs = Object.fromEntries(shapes.map((s, i) => [`x${i}`, [randArray(s, rng), s]]));
    gradcheck(t, {
      forward: 'concat_forward',
      backward: 'concat_backward',
      inputs,
      attrs: { axis },
      outputs: ['y'],
      backwardInputs: (ins, outs, dys) => ({ ...ins, dy: dys.y }),
      grads: Object.fromEntries(shapes.map((_, i) => [`x${i}`, `dx${i}`])),
      seed,
    });
  });
}

test('concat forward lays inputs side by side on the axis (large, threaded)', (t) => {
  const [outer, a, b, inner] = [64, 30, 50, 40];
  const xa = randArray([outer, a, inner], rng);
  const xb = randArray([outer, b, inner], rng);
  const y = runOp('concat_forward', { x0: tensor(xa, [outer, a, inner]), x1: tensor(xb, [outer, b, inner]) }, { axis: 1 }).y;
  t.deepEqual(y.shape, [outer, a + b, inner]);
  const yd = y.toArray();
  let ok = true;
  for (let o = 0; o < outer && ok; o++) {
    for (let k = 0; k < (a + b) * inner; k++) {
      const ref = k < a * inner ? xa[o * a * inner + k] : xb[o * b * inner + k - a * inner];
      if (yd[o * (a + b) * inner + k] !== ref) ok = false;
    }
  }
  t.true(ok);
});

test('embedding backward matches finite differences (repeated ids accumulate)', (t) => {
  const ids = Int32Array.from([2, 0, 2, 4, 2, 1]);
  gradcheck(t, {
    forward: 'embedding_forward',
    backward: 'embedding_backward',
    inputs: { ids: [ids, [2, 3], 'int32'], table: [randArray([5, 4], rng), [5, 4]] },
    outputs: ['y'],
    backwardInputs: (ins, outs, dys) => ({ ids: ins.ids, dy: dys.y }),
    backwardAttrs: { V: 5 },
    grads: { table: 'dtable' },
    samples: 20,
    seed,
  });
});

test('embedding forward gathers rows; backward scatter-adds (large, threaded)', (t) => {
  const [n, V, E] = [3000, 97, 64];
  const ids = Int32Array.from({ length: n }, () => rng.int(V));
  const table = randArray([V, E], rng);
  const y = runOp('embedding_forward', { ids: tensor(ids, [n], 'int32'), table: tensor(table, [V, E]) }).y;
  t.deepEqual(y.shape, [n, E]);
  const yd = y.toArray();
  t.true(ids.every((id, i) => yd.subarray(i * E, (i + 1) * E).every((v, k) => v === table[id * E + k])));
  const dy = randArray([n, E], rng);
  const dt = runOp('embedding_backward', { ids: tensor(ids, [n], 'int32'), dy: tensor(dy, [n, E]) }, { V }).dtable.toArray();
  const ref = new Float64Array(V * E);
  for (let i = 0; i < n; i++) for (let k = 0; k < E; k++) ref[ids[i] * E + k] += dy[i * E + k];
  let worst = 0;
  for (let i = 0; i < V * E; i++) worst = Math.max(worst, Math.abs(dt[i] - ref[i]));
  t.true(worst < 1e-3, `max abs error ${worst}`);
});

test('bad arguments name the argument', (t) => {
  const a = tensor(randArray([2, 3], rng), [2, 3]);
  const b = tensor(randArray([2, 4], rng), [2, 4]);
  throwsNaming(t, () => runOp('concat_forward', { x0: a, x1: b }, { axis: 0 }), 'x1', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('concat_forward', { x0: a, x1: tensor([1, 2], [2]) }, { axis: 0 }), 'x1', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('concat_forward', { x0: a, x1: b }, { axis: 2 }), 'axis', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('concat_forward', { x0: a, x1: b }, { axis: Number.NaN }), 'axis', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('concat_forward', { x1: b }, { axis: 1 }), 'x0', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('concat_backward', { x0: a, x1: b, dy: a }, { axis: 1 }), 'dy', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('concat_backward', { x0: a, x1: b }, { axis: 1 }), 'dy', 'DWC_BAD_ARGUMENT');

  const table = tensor(randArray([5, 3], rng), [5, 3]);
  const bad = t.throws(() => runOp('embedding_forward', { ids: tensor([1, 7, 2], [3], 'int32'), table }));
  t.is(bad.code, 'DWC_BAD_ARGUMENT');
  t.regex(bad.message, /'ids'.*\b7\b/);
  throwsNaming(t, () => runOp('embedding_forward', { ids: tensor([-1], [1], 'int32'), table }), 'ids', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('embedding_forward', { ids: tensor([1, 2], [2]), table }), 'ids', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('embedding_forward', { ids: tensor([1], [1], 'int32'), table: tensor([1, 2], [2]) }), 'table', 'DWC_BAD_ARGUMENT');
  const ids = tensor([1, 2], [2], 'int32');
  throwsNaming(t, () => runOp('embedding_backward', { ids, dy: tensor(randArray([3, 3], rng), [3, 3]) }, { V: 5 }), 'dy', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('embedding_backward', { ids, dy: tensor([1, 2], [2]) }, { V: 5 }), 'dy', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('embedding_backward', { ids, dy: tensor(randArray([2, 3], rng), [2, 3]) }), 'V', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('embedding_backward', { ids, dy: tensor(randArray([2, 3], rng), [2, 3]) }, { V: 2 }), 'ids', 'DWC_BAD_ARGUMENT');
});
