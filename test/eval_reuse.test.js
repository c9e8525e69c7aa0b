// Evaluation without repeated work (docs/PERFORMANCE.md, "The default run"): the queries'
// reference images take their trunk maps from the gallery pass, and fusionBeta 'auto' scores β
// on the best epoch's kept validation embeddings. Both must give exactly the numbers of the
// plain path.
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSynthetic, train as T } from '../lib/index.js';
import { nativeModelFactory, NativeRetrievalModel } from '../lib/train/native_model.js';
import { ImageStore, makeBatchMaker } from '../lib/train/batches.js';
import { openDataset } from '../lib/train/wiring.js';
import { evaluate } from '../lib/eval/evaluate.js';
import { FUSION_BETA_GRID } from '../lib/eval/fusion.js';
import { Vocabulary } from '../lib/data/text.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'dwc-evalreuse-'));
const dims = { D: 32, C: 32, H: 4, W: 4, E: 16, Dc: 32, imageSize: 32 };
let dataP;
const dataset = () => (dataP ??= generateSynthetic({ out: join(tmp(), 'synth'), train: 64, test: 40, val: 40, size: 32, seed: 5, noise: 0 }).then((s) => s.out));

async function setup(over = {}) {
  const data = await dataset();
  const cfg = T.resolveConfig(undefined, { dataset: 'generic', data, out: join(tmp(), 'run'), dims, epochs: 1, batchSize: 16, lr: 1e-3, evalBatchSize: 16, report: false, ...over });
  const ds = await openDataset(cfg);
  const vocab = Vocabulary.build(ds.trainTexts());
  const model = nativeModelFactory.create(T.modelOptions(cfg, vocab.size));
  const qs = ds.queries(ds.trainSplit);
  const batches = makeBatchMaker({ dataset: ds, vocab, store: new ImageStore(cfg.dims.imageSize), trainQueries: qs, trainLabels: ds.labels(qs), maxLength: cfg.maxLength, flip: false, seed: 0, trainSplit: ds.trainSplit });
  // a few steps so that the batch-norm statistics and weights are not the initial ones
  for (let i = 0; i < 3; i++) await model.step(await batches.train(Int32Array.from({ length: 16 }, (_, j) => (16 * i + j) % qs.length), 0));
  return { cfg, ds, model, batches };
}

const bytes = (x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

test('queries start from the gallery pass trunk maps: every embedding bit-identical, no query batch runs the trunk', async (t) => {
  const { cfg, ds, model, batches } = await setup();
  const keep = NativeRetrievalModel.prototype.keepTrunkMaps;
  void cfg;
  const calls = { queriesWithImages: 0, queriesWithMaps: 0 };
  const orig = model.model.embedQueries.bind(model.model);
  model.model.embedQueries = (b) => {
    if (b.fmap && !b.images) calls.queriesWithMaps++;
    else calls.queriesWithImages++;
    return orig(b);
  };
  // 40 queries, 76 gallery images: batches of 20 (every batch at N >= 16, so the trunk's
  // convolutions take the same path in both passes, docs/PERFORMANCE.md, small-map rule)
  t.is(ds.queries('val').length, 40);
  t.is(ds.gallery('val').length, 76);
  const run = async (on, batchSize = 20) => {
    model.keepTrunkMaps = on ? keep : undefined;
    return evaluate(model, ds, batches, { batchSize, split: 'val', keepEmbeddings: true });
  };
  const plain = await run(false);
  t.is(calls.queriesWithMaps, 0);
  t.true(calls.queriesWithImages > 1, 'several query batches');
  const before = calls.queriesWithImages;
  const reused = await run(true);
  t.is(calls.queriesWithImages, before, 'no query batch ran the trunk');
  t.is(calls.queriesWithMaps, before);
  const [a, b] = [plain.sets[0].embeddings, reused.sets[0].embeddings];
  t.truthy(a && b, 'embeddings kept (two streams)');
  t.true(bytes(a.queries).equals(bytes(b.queries)), 'query embeddings bit-identical');
  t.true(bytes(a.gallery).equals(bytes(b.gallery)), 'gallery embeddings bit-identical');
  t.deepEqual(reused.recall, plain.recall);
  t.deepEqual(reused.sets[0].streams, plain.sets[0].streams);
  t.deepEqual([...reused.sets[0].w], [...plain.sets[0].w]);
  // batches of 16: tails of 12 gallery images and 8 queries run the trunk on the other conv path,
  // so a query's map may come from a batch of another size than its own: rounding only
  const [p16, r16] = [await run(false, 16), await run(true, 16)];
  const [x, y] = [p16.sets[0].embeddings.queries, r16.sets[0].embeddings.queries];
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]) / (Math.abs(x[i]) + 1e-3));
  t.true(worst < 1e-5, `relative change ${worst}`);
  t.true(bytes(p16.sets[0].embeddings.gallery).equals(bytes(r16.sets[0].embeddings.gallery)), 'gallery embeddings bit-identical');
});

test('train with fusionBeta auto: the β curve is the one an evaluation of the best checkpoint gives', async (t) => {
  const data = await dataset();
  const cfg = T.resolveConfig(undefined, { dataset: 'generic', data, out: join(tmp(), 'run'), dims, epochs: 2, batchSize: 16, lr: 1e-3, evalBatchSize: 16, report: false, fusionBeta: 'auto' });
  const r = await T.train({ config: cfg });
  t.truthy(r.fusion);
  const ds = await openDataset(cfg);
  const info = T.readCheckpointInfo(r.bestCheckpoint);
  const m = nativeModelFactory.load(r.bestCheckpoint, { ...T.modelOptions(cfg, info.vocab.size), fusionBeta: 1 });
  const batches = makeBatchMaker({ dataset: ds, vocab: info.vocab, store: new ImageStore(cfg.dims.imageSize), trainQueries: [], trainLabels: new Int32Array(0), maxLength: cfg.maxLength, flip: false, seed: 0, trainSplit: ds.trainSplit });
  const ev = await evaluate(m, ds, batches, { batchSize: cfg.evalBatchSize, split: 'val', betaGrid: FUSION_BETA_GRID });
  t.deepEqual(r.fusion.curve, ev.fusionCurve);
});
