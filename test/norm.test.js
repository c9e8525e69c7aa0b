// BatchNorm (spec §4): train mode = batch statistics (biased variance), running stats updated
// with momentum (unbiased variance); eval mode = running statistics. As torch.nn.BatchNorm1d/2d.
import test from 'ava';
import { runOp, tensor } from '../lib/index.js';
import { gradcheck, makeRng, freshSeed, randArray, relErr, throwsNaming } from './helpers/index.js';
import { bnInputs as bnInputsOf, bnRef } from './helpers/batchnorm.js';

const seed = freshSeed();
const rng = makeRng(seed);

const bnInputs = (shape, offset = 0, scale = 1) => bnInputsOf(rng, shape, offset, scale);

const asTensors = (ins) => Object.fromEntries(Object.entries(ins).map(([k, [d, s]]) => [k, tensor(d, s)]));


for (const shape of [[4, 3, 5, 2], [5, 4, 6], [8, 3], [64, 40, 7, 7]]) {
  test(`batchnorm train forward [${shape}] matches a double reference, running stats updated`, (t) => {
    const ins = bnInputs(shape, 3, 2);
    const out = runOp('batchnorm_forward', asTensors(ins), { train: true, momentum: 0.2, eps: 1e-5 });
    const ref = bnRef(ins.x[0], shape, ins.gamma[0], ins.beta[0], ins.running_mean[0], ins.running_var[0], 0.2, 1e-5);
    t.true(relErr(out.y.toArray(), ref.y) < 1e-5, `y; seed ${seed}`);
    t.true(relErr(out.running_mean.toArray(), ref.nrm) < 1e-5, `running_mean; seed ${seed}`);
    t.true(relErr(out.running_var.toArray(), ref.nrv) < 1e-5, `running_var; seed ${seed}`);
    t.deepEqual(out.save_mean.shape, [shape[1]]);
    t.deepEqual(out.save_invstd.shape, [shape[1]]);
  });

  test(`batchnorm backward [${shape}] matches finite differences`, (t) => {
    const ins = bnInputs(shape.length === 4 && shape[0] > 8 ? [4, 3, 3, 3] : shape, 1, 1.5);
    gradcheck(t, {
      forward: 'batchnorm_forward',
      backward: 'batchnorm_backward',
      inputs: ins,
      attrs: { train: true },
      backwardAttrs: {},
      outputs: ['y'],
      backwardInputs: (i, o, d) => ({ x: i.x, gamma: i.gamma, save_mean: o.save_mean, save_invstd: o.save_invstd, dy: d.y }),
      grads: { x: 'dx', gamma: 'dgamma', beta: 'dbeta' },
      seed,
    });
  });
}

test('batchnorm statistics stay accurate with a large offset (mean 1000, std 0.01)', (t) => {
  const shape = [32, 4, 7, 7];
  const ins = bnInputs(shape, 1000, 0.01);
  const out = runOp('batchnorm_forward', asTensors(ins), { train: true });
  const ref = bnRef(ins.x[0], shape, ins.gamma[0], ins.beta[0], ins.running_mean[0], ins.running_var[0], 0.1, 1e-5);
  t.true(relErr(out.y.toArray(), ref.y) < 1e-3, `y; seed ${seed}`);
  t.true(relErr(out.running_var.toArray(), ref.nrv) < 1e-4, `running_var; seed ${seed}`);
});

test('batchnorm eval uses running statistics and leaves them unchanged', (t) => {
  const shape = [3, 2, 4];
  const ins = bnInputs(shape);
  const out = runOp('batchnorm_forward', asTensors(ins), { train: false, eps: 1e-3 });
  const [x, gamma, beta, rm, rv] = ['x', 'gamma', 'beta', 'running_mean', 'running_var'].map((k) => ins[k][0]);
  const y = x.map((v, i) => {
    const c = Math.floor(i / 4) % 2;
    return ((v - rm[c]) / Math.sqrt(rv[c] + 1e-3)) * gamma[c] + beta[c];
  });
  t.true(relErr(out.y.toArray(), y) < 1e-6);
  t.deepEqual(out.running_mean.toArray(), rm);
  t.deepEqual(out.running_var.toArray(), rv);
  t.is(out.save_mean, undefined);
});

test('batchnorm bad arguments name the argument', (t) => {
  const B = 'DWC_BAD_ARGUMENT';
  const ins = asTensors(bnInputs([4, 3, 5]));
  const c2 = tensor([1, 2], [2]);
  throwsNaming(t, () => runOp('batchnorm_forward', { ...ins, gamma: c2 }, { train: true }), 'gamma', B);
  throwsNaming(t, () => runOp('batchnorm_forward', { ...ins, beta: tensor([1, 2, 3], [3, 1]) }, { train: true }), 'beta', B);
  throwsNaming(t, () => runOp('batchnorm_forward', { ...ins, running_mean: c2 }, { train: true }), 'running_mean', B);
  const { running_var: _rv, ...noVar } = ins;
  throwsNaming(t, () => runOp('batchnorm_forward', noVar, { train: true }), 'running_var', B);
  throwsNaming(t, () => runOp('batchnorm_forward', ins, { train: true, momentum: Number.NaN }), 'momentum', B);
  throwsNaming(t, () => runOp('batchnorm_forward', ins, { train: true, momentum: 1.5 }), 'momentum', B);
  throwsNaming(t, () => runOp('batchnorm_forward', ins, { eps: -1 }), 'eps', B);
  throwsNaming(t, () => runOp('batchnorm_forward', ins, { eps: Number.POSITIVE_INFINITY }), 'eps', B);
  throwsNaming(t, () => runOp('batchnorm_forward', { ...ins, x: tensor([1, 2, 3], [3]) }), 'x', B);
  throwsNaming(t, () => runOp('batchnorm_forward', { ...ins, x: tensor([1, 2, 3], [1, 3]) }, { train: true }), 'x', B);
  throwsNaming(t, () => runOp('batchnorm_forward', { ...ins, x: tensor(undefined, [4, 3, 5], 'int32') }), 'x', B);
  const fw = runOp('batchnorm_forward', ins, { train: true });
  const bw = { x: ins.x, gamma: ins.gamma, save_mean: fw.save_mean, save_invstd: fw.save_invstd, dy: fw.y };
  t.notThrows(() => runOp('batchnorm_backward', bw));
  throwsNaming(t, () => runOp('batchnorm_backward', { ...bw, dy: tensor(undefined, [4, 3, 4]) }), 'dy', B);
  throwsNaming(t, () => runOp('batchnorm_backward', { ...bw, save_invstd: c2 }), 'save_invstd', B);
  throwsNaming(t, () => runOp('batchnorm_backward', { ...bw, save_mean: undefined }), 'save_mean', B);
});

// The trunk's fused paths (issue 12): relu = 1 gives exactly max(BN(x), 0) of the unfused
// forward, train and eval; accumulate = 0 overwrites dx with exactly what accumulate = 1 adds.
test('batchnorm relu = 1 is max(BN, 0) bit for bit, train and eval', (t) => {
  const shape = [6, 5, 4, 3];
  const ins = asTensors(bnInputs(shape));
  let clipped = 0;
  for (const train of [1, 0]) {
    const plain = runOp('batchnorm_forward', ins, { train }).y.toArray();
    const o = runOp('batchnorm_forward', ins, { train, relu: 1 });
    const fused = o.y.toArray();
    t.is(fused.length, plain.length);
    for (let i = 0; i < plain.length; i++) {
      const want = plain[i] > 0 ? plain[i] : 0;
      if (fused[i] !== want) return t.fail(`train=${train}: y[${i}] = ${fused[i]}, expected ${want}`);
      if (plain[i] < 0) clipped++;
    }
    if (train) {
      // the statistics do not depend on the flag
      const ref = runOp('batchnorm_forward', ins, { train });
      t.deepEqual(Array.from(o.save_mean.toArray()), Array.from(ref.save_mean.toArray()));
      t.deepEqual(Array.from(o.running_var.toArray()), Array.from(ref.running_var.toArray()));
    }
  }
  t.true(clipped > 0, 'some outputs are negative, so the ReLU was exercised');
});

test('batchnorm backward accumulate = 0 overwrites dx (the same floats accumulate = 1 adds to zero)', (t) => {
  const shape = [4, 3, 5, 5];
  const ins = asTensors(bnInputs(shape));
  const f = runOp('batchnorm_forward', ins, { train: 1 });
  const dy = tensor(randArray(shape, rng), shape);
  const base = { x: ins.x, gamma: ins.gamma, save_mean: f.save_mean, save_invstd: f.save_invstd, dy };
  const junk = tensor(randArray(shape, rng, 100), shape);
  const acc = runOp('batchnorm_backward', base, {});
  const over = runOp('batchnorm_backward', { ...base, dx_init: junk }, { accumulate: 0 });
  const added = runOp('batchnorm_backward', { ...base, dx_init: junk }, {});
  const a = acc.dx.toArray(), o = over.dx.toArray(), s = added.dx.toArray(), j = junk.toArray();
  for (let i = 0; i < a.length; i++) if (o[i] !== a[i]) return t.fail(`dx[${i}] = ${o[i]} with accumulate 0, ${a[i]} with accumulate 1 from zero`);
  t.true(relErr(s, Float32Array.from(a, (v, i) => v + j[i])) < 1e-6, 'accumulate = 1 adds to dx_init');
  t.deepEqual(Array.from(over.dgamma.toArray()), Array.from(acc.dgamma.toArray()));
  throwsNaming(t, () => runOp('batchnorm_backward', { ...base, dx_init: tensor(new Float32Array(3), [3]) }, {}), 'dx_init');
});

test('batchnorm backward with relu_y (the ReLU after it) equals a separate ReLU backward first, bit for bit', (t) => {
  for (const shape of [[4, 3, 5, 5], [3, 2, 1, 37]]) {
    const ins = asTensors(bnInputs(shape));
    const f = runOp('batchnorm_forward', ins, { train: 1, relu: 1 });
    const dy = tensor(randArray(shape, rng), shape);
    const y = f.y.toArray(), g = dy.toArray();
    const masked = tensor(Float32Array.from(g, (v, i) => (y[i] > 0 ? v : 0)), shape);
    t.true(y.some((v) => v === 0) && y.some((v) => v > 0), 'the ReLU clips some outputs and keeps others');
    const base = { x: ins.x, gamma: ins.gamma, save_mean: f.save_mean, save_invstd: f.save_invstd };
    const ref = runOp('batchnorm_backward', { ...base, dy: masked }, {});
    const fused = runOp('batchnorm_backward', { ...base, dy, relu_y: f.y }, {});
    for (const k of ['dx', 'dgamma', 'dbeta']) {
      const r = ref[k].toArray(), o = fused[k].toArray();
      const bad = r.findIndex((v, i) => v !== o[i]);
      t.is(bad, -1, `${k} [${shape}]: ${bad >= 0 ? `${o[bad]} fused vs ${r[bad]} separate at ${bad}` : ''}`);
    }
    // the mask matters: without it the result differs
    const plain = runOp('batchnorm_backward', { ...base, dy }, {});
    t.true(relErr(plain.dbeta.toArray(), ref.dbeta.toArray()) > 1e-3, 'relu_y changes dbeta');
    throwsNaming(t, () => runOp('batchnorm_backward', { ...base, dy, relu_y: tensor(new Float32Array(3), [3]) }, {}), 'relu_y');
  }
});
