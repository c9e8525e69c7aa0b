// Recall per kind of query (src/eval/breakdown.ts, docs/MODEL.md §7): queries carrying `op` /
// `dominance` (the synthetic benchmark) are scored per group, for the ranking and each half alone.
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSynthetic, train as T } from '../lib/index.js';
import { evaluate, evaluateSet, breakdownAt, formatEvalTable } from '../lib/eval/evaluate.js';
import { recallBreakdown, formatBreakdown } from '../lib/eval/breakdown.js';
import { nativeModelFactory } from '../lib/train/native_model.js';
import { ImageStore, makeBatchMaker } from '../lib/train/batches.js';
import { openDataset } from '../lib/train/wiring.js';
import { Vocabulary } from '../lib/data/text.js';

test('recallBreakdown: per dominance, then per op, from first-hit ranks; queries without the fields are in no group', (t) => {
  const q = (op, dominance) => ({ source: 's', text: 'x', target: 't', split: 'test', ...(op ? { op } : {}), ...(dominance ? { dominance } : {}) });
  const queries = [q('add', 'text'), q('add', 'image'), q('move', 'image'), q('move', 'image'), q(undefined, undefined)];
  const combined = Int32Array.from([0, 3, -1, 0, 0]);
  const global = Int32Array.from([-1, 0, 1, 9, 0]);
  const r = recallBreakdown(queries, { combined, global, local: combined }, [1, 5]);
  t.deepEqual(
    r.map((g) => [g.by, g.value, g.queries, g.recall, g.global]),
    [
      ['dominance', 'text', 1, { 1: 100, 5: 100 }, { 1: 0, 5: 0 }],
      ['dominance', 'image', 3, { 1: 100 / 3, 5: 200 / 3 }, { 1: 100 / 3, 5: 200 / 3 }],
      ['op', 'add', 2, { 1: 50, 5: 100 }, { 1: 50, 5: 50 }],
      ['op', 'move', 2, { 1: 50, 5: 50 }, { 1: 0, 5: 50 }],
    ],
  );
  t.deepEqual(r[2].local, r[2].recall);
  t.is(recallBreakdown([q(), q()], { combined: Int32Array.from([0, 0]) }, [1]), undefined, 'no fields: no breakdown');
  t.false('global' in recallBreakdown([q('add')], { combined: Int32Array.from([0]) }, [1])[0], 'one stream: no halves');
  t.throws(() => recallBreakdown([q('add')], { combined: Int32Array.from([0, 1]) }, [1]), { message: /2 queries, expected 1/ });
  const table = formatBreakdown(r);
  t.regex(table, /op move\s+2\s+50\.0\s+0\.0\s+50\.0/);
  t.regex(table, /global R@1/);
});

// A stub two-stream model on a stub set: gallery image j is [e_j | e_j] (one-hot halves of G dims);
// a query's global half points at its target only when the query's op is 'add' (weight 0.6), its
// local half only when it is text-dominant (weight 1): so per group the halves' recall is known,
// and the sum follows the local half where they disagree.
test('evaluateSet: the breakdown of the ranking and of each half matches the construction; β moves the ranking only', async (t) => {
  const G = 6;
  const gallery = Array.from({ length: G }, (_, j) => `g${j}`);
  const ops = ['add', 'move', 'add', 'colour', 'move', 'add', 'colour', 'add'];
  const queries = ops.map((op, i) => ({ source: gallery[i % G], target: gallery[(i + 1) % G], text: op, split: 'test', op, dominance: i % 2 ? 'image' : 'text' }));
  const set = { name: 'stub', split: 'test', queries, gallery, ks: [1, 5] };
  const ds = { hitKey: (id) => id };
  const row = (gj, gw, lj) => {
    const v = new Float32Array(2 * G);
    if (gj >= 0) v[gj] = gw;
    if (lj >= 0) v[G + lj] = 1;
    return v;
  };
  const other = (i, j) => [0, 1, 2, 3, 4, 5].find((x) => x !== j && x !== i % G); // neither target nor source
  const model = {
    fusionBeta: 1,
    setTraining() {},
    async embedImages(ids) {
      const e = new Float32Array(ids.length * 2 * G);
      ids.forEach((id, r) => e.set(row(gallery.indexOf(id), 1, gallery.indexOf(id)), r * 2 * G));
      return { embeddings: e, dim: 2 * G };
    },
    async embedQueries(b) {
      const e = new Float32Array(b.qs.length * 2 * G);
      b.qs.forEach((q, r) => {
        const i = b.i0 + r;
        const tj = gallery.indexOf(q.target);
        e.set(row(q.op === 'add' ? tj : other(i, tj), 0.6, q.dominance === 'text' ? tj : other(i, tj)), r * 2 * G);
      });
      return { embeddings: e, dim: 2 * G, wGlobal: new Float32Array(b.qs.length).fill(0.5), wLocal: new Float32Array(b.qs.length).fill(0.5) };
    },
  };
  const batches = { images: async (ids) => ids, queries: async (qs, _split, i0) => ({ qs, i0 }) };
  const r = await evaluateSet(model, ds, set, batches, 3, undefined, [0, 1, 2]);
  const by = Object.fromEntries(r.breakdown.map((g) => [`${g.by} ${g.value}`, g]));
  t.deepEqual(Object.keys(by), ['dominance text', 'dominance image', 'op add', 'op move', 'op colour']);
  t.is(by['dominance text'].queries, 4);
  t.is(by['op add'].queries, 4);
  t.is(by['op add'].global[1], 100, "the global half finds every 'add' target");
  t.is(by['op move'].global[1], 0);
  t.is(by['dominance text'].local[1], 100, 'the local half finds every text-dominant target');
  t.is(by['dominance image'].local[1], 0);
  // 'add' queries: i = 0, 2, 5, 7 → text-dominant: 0, 2 (local hits) → local R@1 50
  t.is(by['op add'].local[1], 50);
  t.deepEqual(by['dominance text'].recall, by['dominance text'].local, 'β = 1: the sum follows the local half (weight 1 > 0.6)');
  t.deepEqual(by['op add'].recall, { 1: 50, 5: 100 }, "β = 1: an 'add' query missed by the local half is its second hit (global 0.6)");
  // β = 2: the global half decides where the halves disagree (1.2 > 1)
  const b2 = breakdownAt(r, 2);
  t.deepEqual(Object.fromEntries(b2.map((g) => [`${g.by} ${g.value}`, g.recall[1]])), { 'dominance text': 50, 'dominance image': 50, 'op add': 100, 'op move': 0, 'op colour': 0 });
  t.deepEqual(b2.map((g) => g.global), r.breakdown.map((g) => g.global), 'the halves alone do not depend on β');
  t.deepEqual(breakdownAt(r, 0).map((g) => g.recall), r.breakdown.map((g) => g.local), 'β = 0: the local half');
  t.is(breakdownAt(r, 0.7), r.breakdown, 'a β off the grid: as evaluated');
  t.regex(formatEvalTable({ sets: [r], recall: r.recall, mean: 0 }), /per kind of query[\s\S]*op colour/);
});

test('the synthetic benchmark through the native model: one group per op and dominance, the groups cover every query', async (t) => {
  const data = (await generateSynthetic({ out: join(mkdtempSync(join(tmpdir(), 'dwc-breakdown-')), 'synth'), train: 32, test: 48, val: 0, size: 32, seed: 7, noise: 0 })).out;
  const cfg = T.resolveConfig(undefined, { dataset: 'generic', data, out: join(mkdtempSync(join(tmpdir(), 'dwc-breakdown-')), 'run'), dims: { D: 16, C: 16, H: 4, W: 4, E: 16, Dc: 16, imageSize: 32 }, epochs: 1, batchSize: 8, report: false });
  const ds = await openDataset(cfg);
  const vocab = Vocabulary.build(ds.trainTexts());
  const model = nativeModelFactory.create(T.modelOptions(cfg, vocab.size));
  const batches = makeBatchMaker({ dataset: ds, vocab, store: new ImageStore(32), trainQueries: [], trainLabels: new Int32Array(0), maxLength: cfg.maxLength, flip: false, seed: 0, trainSplit: ds.trainSplit });
  const r = await evaluate(model, ds, batches, { batchSize: 16, split: 'test' });
  const s = r.sets[0];
  const qs = ds.queries('test');
  t.is(qs.length, 48);
  const count = (by) => s.breakdown.filter((g) => g.by === by).reduce((a, g) => a + g.queries, 0);
  t.is(count('dominance'), 48);
  t.is(count('op'), 48);
  t.deepEqual(new Set(s.breakdown.filter((g) => g.by === 'op').map((g) => g.value)), new Set(qs.map((q) => q.op)));
  // the groups' recall, weighted by their sizes, is the set's recall
  for (const by of ['dominance', 'op'])
    for (const k of ['1', '10']) {
      const w = s.breakdown.filter((g) => g.by === by).reduce((a, g) => a + g.recall[k] * g.queries, 0) / 48;
      t.true(Math.abs(w - s.recall[k]) < 1e-9, `${by} R@${k}`);
      const wg = s.breakdown.filter((g) => g.by === by).reduce((a, g) => a + g.global[k] * g.queries, 0) / 48;
      t.true(Math.abs(wg - s.streams.global[k]) < 1e-9, `${by} global R@${k}`);
    }
  model.dispose?.();
});
