// The global stream's own dropout (`--global-dropout`, globalDropout; docs/EXPERIMENTS.md "The
// global half: diagnosis"): it sets the dropout of the global stream's projections, editors and
// combiner only; unset, the global stream uses the shared `dropout` (the spec's 0.5).
import test from 'ava';
import { DwcModel } from '../lib/model.js';
import { train as T } from '../lib/index.js';
import { nativeConfig } from '../lib/train/native_model.js';
import { freshSeed, makeRng, randArray, throwsNaming } from './helpers/index.js';

const rng = makeRng(freshSeed());
const FULL = { Dc: 6, D: 8, C: 8, E: 4, vocab: 10 };
function fullBatch(B, d, H = 2, W = 2, L = 3) {
  const tokens = Int32Array.from({ length: B * L }, () => 1 + rng.int(d.vocab - 1));
  const fm = () => Float32Array.from(randArray([B, d.C, H, W], rng), (x) => Math.abs(x));
  return { B, eImg: randArray([B, d.Dc], rng), eTxt: randArray([B, d.Dc], rng), eTarget: randArray([B, d.Dc], rng), labels: Int32Array.from({ length: B }, (_, i) => i % 3), fmap: fm(), fmapTarget: fm(), H, W, tokens, L, lengths: Int32Array.from({ length: B }, (_, i) => 1 + (i % L)) };
}

test('globalDropout is the global stream\'s dropout: its loss as with that shared dropout, the local stream\'s unchanged rate', async (t) => {
  const batch = fullBatch(6, FULL);
  const run = async (o) => (await new DwcModel(FULL, { seed: 3, ...o }).trainStep(batch));
  const d5 = await run({ dropout: 0.5 });
  const d0 = await run({ dropout: 0 });
  const g0 = await run({ dropout: 0.5, globalDropout: 0 });
  const g5 = await run({ dropout: 0, globalDropout: 0.5 });
  // step 2's contrastive loss and query depend on the global forward only (L_mut's partner is the local stream's)
  t.is(g0.global.contrastive, d0.global.contrastive);
  t.deepEqual(g0.global.query, d0.global.query);
  t.is(g5.global.contrastive, d5.global.contrastive);
  t.not(g0.global.contrastive, d5.global.contrastive, 'dropout changes the global loss (the test can fail)');
  // the local stream keeps the shared rate: step 1 (its partner targets for L_mut) is the same
  t.is(g5.global.mutual, (await run({ dropout: 0, globalDropout: 0.5 })).global.mutual, 'deterministic');
  const unset = await run({ dropout: 0.5, globalDropout: -1 });
  t.is(unset.global.contrastive, d5.global.contrastive, 'negative: the shared dropout');
  t.throws(() => new DwcModel(FULL, { globalDropout: 1 }), { message: /'globalDropout'/ });
});

test('config: globalDropout in [0, 1) reaches the native options; unset keeps the shared dropout; bad values name the setting', (t) => {
  t.is(T.resolveConfig(undefined, {}).globalDropout, 0.1, 'the small preset (docs/EXPERIMENTS.md "The global half: options")');
  t.is(T.resolveConfig(undefined, { preset: 'paper' }).globalDropout, undefined, 'paper: the spec');
  const mo = (over) => T.modelOptions(T.resolveConfig(undefined, over), 10);
  t.false('globalDropout' in mo({ preset: 'paper' }));
  t.is(mo({ globalDropout: 0.1 }).globalDropout, 0.1);
  t.is(nativeConfig(mo({ globalDropout: 0.1 })).options.globalDropout, 0.1);
  t.false('globalDropout' in nativeConfig(mo({ globalDropout: 0.1, ablations: ['local-only'] })).options, 'no global stream: no option');
  t.is(mo({ globalDropout: 0 }).globalDropout, 0);
  for (const bad of [1, -0.1, Number.NaN, '0.1', null]) throwsNaming(t, () => T.resolveConfig(undefined, { globalDropout: bad }), 'globalDropout', 'DWC_BAD_ARGUMENT');
});
