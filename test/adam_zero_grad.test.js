// Adam with the gradient zeroing fused in (kernels/optim.h zero_grad; model.h
// ParamBuffer::grads_zero): the op's zero_grad attribute, and a model trained with it matching,
// bit for bit, one whose gradient buffers are zeroed by a full pass before every step (a model
// freshly loaded from a checkpoint starts with that pass).
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOp, tensor } from '../lib/index.js';
import { DwcModel } from '../lib/model.js';
import { freshSeed, makeRng, randArray } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);
const tmp = mkdtempSync(join(tmpdir(), 'dwc-adamzero-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

test('adam_update zero_grad: same param/m/v, the gradient comes back as zeros (small and threaded sizes)', (t) => {
  for (const n of [7, 100003]) {
    const ins = { param: tensor(randArray([n], rng), [n]), grad: tensor(randArray([n], rng), [n]), m: tensor(randArray([n], rng, 0.1), [n]), v: tensor(Float32Array.from(randArray([n], rng, 0.1), Math.abs), [n]) };
    const hp = { lr: 1e-3, weight_decay: 0.01, step: 3 };
    const keep = runOp('adam_update', ins, hp);
    const zero = runOp('adam_update', ins, { ...hp, zero_grad: 1 });
    for (const k of ['param', 'm', 'v']) t.deepEqual(zero[k].toArray(), keep[k].toArray(), `${k} n=${n}; seed ${seed}`);
    t.true(zero.grad.toArray().every((x) => x === 0), 'grad zeroed');
    t.deepEqual(keep.grad.toArray(), ins.grad.toArray(), 'without zero_grad the gradient is left as it was');
  }
});

const D = { Dc: 6, D: 8, C: 8, E: 4, vocab: 10, trunk: 'small', trunkWidth: 4 };

function trunkBatch(B) {
  const img = () => randArray([B, 3, 16, 16], rng);
  const L = 3;
  const tokens = Int32Array.from({ length: B * L }, () => 1 + rng.int(D.vocab - 1));
  return {
    B, eImg: randArray([B, D.Dc], rng), eTxt: randArray([B, D.Dc], rng), eTarget: randArray([B, D.Dc], rng),
    labels: Int32Array.from({ length: B }, (_, i) => i % 3), images: img(), imagesTarget: img(), Hi: 16, Wi: 16, tokens, L,
    lengths: Int32Array.from({ length: B }, (_, i) => 1 + (i % L)),
  };
}

test('training steps with the fused zeroing match steps that each start from a fully zeroed buffer (both streams, own trunk)', async (t) => {
  const batches = [trunkBatch(4), trunkBatch(4), trunkBatch(4)];
  const opts = { seed: 1 + rng.int(1000), lr: 1e-3, weightDecay: 1e-4 };
  const a = new DwcModel(D, opts);
  for (const b of batches) await a.trainStep(b);
  // after Adam every gradient reads 0 (it was consumed)
  for (const p of a.params()) t.true(a.getGrad(p.name).every((x) => x === 0), `${p.name}: gradient left after the step`);
  // the same steps, each on a model loaded from the previous one's checkpoint (its zero_grad runs
  // the full pass): a gradient the fused zeroing missed would add to the next step's in `a`
  let b = new DwcModel(D, opts);
  for (let i = 0; i < batches.length; i++) {
    await b.trainStep(batches[i]);
    const path = join(tmp, `ck${i}.safetensors`);
    b.save(path);
    b = DwcModel.load(path);
  }
  for (const p of a.params()) {
    t.deepEqual(b.getParam(p.name), a.getParam(p.name), `${p.name}; seed ${seed}`);
    if (!p.counter) t.deepEqual(b.getOptimState(p.name), a.getOptimState(p.name), `moments of ${p.name}`);
  }
});

test('lossAndGrad after a training step: the gradient of this call alone', async (t) => {
  const m = new DwcModel({ Dc: 6, D: 8, C: 8, E: 4, vocab: 10 }, { seed: 3, dropout: 0 });
  const batch = trunkBatch(4);
  const fm = () => Float32Array.from(randArray([4, 8, 2, 2], rng), Math.abs);
  const fb = { ...batch, fmap: fm(), fmapTarget: fm(), H: 2, W: 2 };
  delete fb.images;
  delete fb.imagesTarget;
  await m.trainStep(fb);
  for (const stream of ['global', 'local']) {
    const names = m.params().filter((p) => p.name.startsWith(`${stream}.`) && !p.counter).map((p) => p.name);
    m.lossAndGrad(stream, fb, null, 1); // right after Adam: the zeroing pass is skipped
    const g1 = names.map((n) => m.getGrad(n));
    m.lossAndGrad(stream, fb, null, 1); // zeroed by the full pass
    const g2 = names.map((n) => m.getGrad(n));
    t.true(g1.some((g) => g.some((x) => x !== 0)), `${stream}: some gradient`);
    names.forEach((n, i) => t.deepEqual(g1[i], g2[i], n));
  }
});
