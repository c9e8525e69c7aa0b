// L_mut's weight in each stream's loss (`--mutual-weight-global`, `--mutual-weight-local`;
// mutualWeightGlobal / mutualWeightLocal; spec §5 has 1.0 each; docs/MODEL.md §5): a stream's loss is
// L_con + λ·L_mut, so its gradients are those of L_con plus λ times those of L_mut, and the reported
// losses stay the unweighted L_con and L_mut.
import test from 'ava';
import { DwcModel } from '../lib/model.js';
import { train as T } from '../lib/index.js';
import { nativeConfig } from '../lib/train/native_model.js';
import { flagsToConfig } from '../lib/cli/commands/train.js';
import { freshSeed, makeRng, randArray, throwsNaming, unitRows as unitRowsOf } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);
const FULL = { Dc: 6, D: 8, C: 8, E: 4, vocab: 10 };

const unitRows = (B, D) => unitRowsOf(B, D, rng);
function fullBatch(B, d, H = 2, W = 2, L = 3) {
  const tokens = Int32Array.from({ length: B * L }, () => 1 + rng.int(d.vocab - 1));
  const fm = () => Float32Array.from(randArray([B, d.C, H, W], rng), (x) => Math.abs(x));
  return { B, eImg: randArray([B, d.Dc], rng), eTxt: randArray([B, d.Dc], rng), eTarget: randArray([B, d.Dc], rng), labels: Int32Array.from({ length: B }, (_, i) => i % 3), fmap: fm(), fmapTarget: fm(), H, W, tokens, L, lengths: Int32Array.from({ length: B }, (_, i) => 1 + (i % L)) };
}

// gradients of one stream's loss against a fixed partner, for a given weight option
function grads(stream, options, batch, partner) {
  const m = new DwcModel(FULL, { seed: 11, dropout: 0, ...options });
  const r = m.lossAndGrad(stream, batch, partner, 3);
  const g = new Map(m.params().filter((p) => p.stream === stream && p.trainable).map((p) => [p.name, m.getGrad(p.name)]));
  return { r, g };
}

for (const [stream, key] of [['global', 'mutualWeightGlobal'], ['local', 'mutualWeightLocal']]) {
  test(`${key}: the ${stream} stream's gradient is dL_con + λ·dL_mut; the losses reported unweighted; the other weight leaves it alone`, (t) => {
    const B = 6;
    const batch = fullBatch(B, FULL);
    const partner = { query: unitRows(B, FULL.D), target: unitRows(B, FULL.D) };
    const g1 = grads(stream, {}, batch, partner);
    const g0 = grads(stream, { [key]: 0 }, batch, partner);
    const gl = grads(stream, { [key]: 0.3 }, batch, partner);
    const other = grads(stream, { [key === 'mutualWeightGlobal' ? 'mutualWeightLocal' : 'mutualWeightGlobal']: 0.3 }, batch, partner);
    t.true(g1.r.mutual > 0);
    t.is(gl.r.mutual, g1.r.mutual, 'L_mut is reported unweighted');
    t.is(gl.r.contrastive, g1.r.contrastive);
    let moved = 0;
    const off = [];
    // float32 sums: tolerance relative to the parameter's largest gradient and to the stream's
    const gall = [...g1.g.values()].reduce((s, g) => g.reduce((x, y) => Math.max(x, Math.abs(y)), s), 0);
    for (const [name, a1] of g1.g) {
      const a0 = g0.g.get(name);
      const al = gl.g.get(name);
      t.deepEqual(other.g.get(name), a1, `${name}: the other stream's weight does not act here`);
      const scale = Math.max(a1.reduce((s, x) => Math.max(s, Math.abs(x)), 0), 1e-2 * gall);
      for (let i = 0; i < a1.length; i++) {
        if (Math.abs(a1[i] - a0[i]) > 1e-4 * scale) moved++;
        const want = a0[i] + 0.3 * (a1[i] - a0[i]);
        if (Math.abs(al[i] - want) > 1e-4 * scale) off.push(`${name}[${i}]: ${al[i]} vs ${want}`);
      }
    }
    t.true(moved > 0, 'L_mut has a gradient (the test can fail)');
    t.deepEqual(off, [], `seed ${seed}`);
  });
}

test('config and flags: --mutual-weight-global / --mutual-weight-local reach the native options; unset: the spec\'s 1; bad values name the setting', (t) => {
  const f = flagsToConfig({ mutualWeightGlobal: 2, mutualWeightLocal: 0.25 });
  t.is(f.mutualWeightGlobal, 2);
  t.is(f.mutualWeightLocal, 0.25);
  const mo = (over) => nativeConfig(T.modelOptions(T.resolveConfig(undefined, over), 10)).options;
  t.false('mutualWeightGlobal' in mo({}));
  t.false('mutualWeightLocal' in mo({}));
  t.is(mo(f).mutualWeightGlobal, 2);
  t.is(mo(f).mutualWeightLocal, 0.25);
  for (const k of ['mutualWeightGlobal', 'mutualWeightLocal'])
    for (const bad of [-1, Number.NaN, '1', null, 101]) throwsNaming(t, () => T.resolveConfig(undefined, { [k]: bad }), k, 'DWC_BAD_ARGUMENT');
  t.throws(() => new DwcModel(FULL, { mutualWeightLocal: -0.5 }), { message: /'mutualWeightLocal'/ });
});
