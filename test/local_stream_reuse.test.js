// Local stream, step-4 reuse of the step-1 forward (spec §6; LocalStream::reuse_next_forward):
// with the hint, a forward + backward after a no-gradient train forward on the same batch gives
// the same outputs, gradients and BN running stats (updated twice) as running both forwards in full.
import test from 'ava';
import { addon, runOp, tensor } from '../lib/index.js';
import { makeRng, freshSeed, randArray, relErr } from './helpers/index.js';

addon().setNumThreads(1);

const seed = Number(process.env.DWC_TEST_SEED) || freshSeed(); // DWC_TEST_SEED replays a failure
const rng = makeRng(seed);
const dims = { D: 16, C: 24, E: 8, V: 20 };
const B = 3, H = 3, W = 2, L = 5;

function inputs() {
  return {
    fmap: tensor(randArray([B, dims.C, H, W], rng).map(Math.abs), [B, dims.C, H, W]),
    fmap_target: tensor(randArray([B, dims.C, H, W], rng).map(Math.abs), [B, dims.C, H, W]),
    tokens: tensor(Int32Array.from({ length: B * L }, () => rng.int(dims.V)), [B, L], 'int32'),
    lengths: tensor(Int32Array.from([L, 2, 4]), [B], 'int32'),
    dq: tensor(randArray([B, dims.D], rng), [B, dims.D]),
    dt: tensor(randArray([B, dims.D], rng), [B, dims.D]),
  };
}

function compare(t, full, reused) {
  const keys = Object.keys(full).filter((k) => /^(query|target|weight|grad\.|param\.)/.test(k));
  t.deepEqual(Object.keys(reused).filter((k) => /^(query|target|weight|grad\.|param\.)/.test(k)).sort(), [...keys].sort());
  for (const k of keys) {
    const e = relErr(reused[k].toArray(), full[k].toArray());
    t.true(e <= 1e-6, `${k}: rel err ${e} (seed ${seed})`);
  }
}

for (const [name, attrs] of [
  ['default, dropout 0.5', { dropout: 0.5, dropout_seed: 3 }],
  ['unmasked, no editors, fixed w', { masked: 0, no_editors: 1, fixed_w: 1 }],
  ['step 1 with targets from the reference map (§10 quirk)', { dropout: 0.5, prefwd: 3 }],
]) {
  test(`reuse of the step-1 forward matches two full forwards: ${name}`, (t) => {
    const ins = inputs();
    const a = { ...dims, seed: 4, prefwd: 1, repeat: 2, ...attrs };
    const full = runOp('local_stream_loss', ins, a);
    const reused = runOp('local_stream_loss', ins, { ...a, reuse: 1 });
    compare(t, full, reused);
    t.deepEqual(Array.from(reused.reused.toArray()), [1, 1], 'the hint was taken');
    t.deepEqual(Array.from(full.reused.toArray()), [0, 0]);
    const n = 'param.local.img2txt.0.branch2.4.bn.num_batches_tracked';
    t.deepEqual(Array.from(reused[n].toArray()), [4], 'BN updated twice per run');
    t.true(reused.ms.toArray()[2] >= 0);
  });
}

test('the hint is ignored without a matching train forward before it', (t) => {
  const ins = inputs();
  for (const [name, attrs] of [['no forward before', {}], ['another fmap before', { prefwd: 2 }], ['eval forward before', { prefwd: 1, train: 0 }]]) {
    const { dq, dt, ...fwdOnly } = ins;
    const x = attrs.train === 0 ? fwdOnly : ins;
    const plain = runOp('local_stream_loss', x, { ...dims, seed: 4, ...attrs });
    const hinted = runOp('local_stream_loss', x, { ...dims, seed: 4, ...attrs, reuse: 1 });
    t.deepEqual(Array.from(hinted.reused.toArray()), [0], name);
    compare(t, plain, hinted);
  }
});
