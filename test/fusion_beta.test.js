// The halves' weight β of a two-stream model (docs/MODEL.md §7): s = β·s_G + s_L, the global
// half of each query embedding scaled by β; `fusionBeta: 'auto'` picks β on the validation split
// after training, stores it in the checkpoints, and eval / search score with the stored β.
import test from 'ava';
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSynthetic, evaluateCheckpoint, Searcher, train as T } from '../lib/index.js';
import { FUSION_BETA_GRID, pickFusionBeta, scaleGlobalHalf } from '../lib/eval/fusion.js';
import { patchCheckpointConfig } from '../lib/train/checkpoint.js';
import { readSafetensors } from '../lib/safetensors.js';
import { fusionBetaArg } from '../lib/cli/commands/train.js';
import { throwsNaming } from './helpers/index.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'dwc-fusion-'));
const dims = { D: 32, C: 32, H: 4, W: 4, E: 16, Dc: 32, imageSize: 32 };
// the global stream and schedule of the runs this file was written against (before the small preset's
// warm-up, global dropout 0.1 and no text ReLU); the checks hold whichever epoch comes out best
const config = (data, out, over = {}) =>
  T.resolveConfig(undefined, { dataset: 'generic', data, out, dims, epochs: 2, batchSize: 16, lr: 1e-3, lrWarmup: 0, globalDropout: 0.5, globalTextRelu: true, evalBatchSize: 64, report: false, ...over });
let dataP;
const dataset = () => (dataP ??= generateSynthetic({ out: join(tmp(), 'synth'), train: 96, test: 32, val: 32, size: 32, seed: 3, noise: 0 }).then((s) => s.out));

test('scaleGlobalHalf scales the first half of every row only; pickFusionBeta takes the best mean, ties nearest 1', (t) => {
  const e = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  t.deepEqual(Array.from(scaleGlobalHalf(e, 4, 0.5)), [0.5, 1, 3, 4, 2.5, 3, 7, 8]);
  t.deepEqual(Array.from(scaleGlobalHalf(e, 4, 0)), [0, 0, 3, 4, 0, 0, 7, 8]);
  t.is(scaleGlobalHalf(e, 4, 1), e);
  t.deepEqual(Array.from(e), [1, 2, 3, 4, 5, 6, 7, 8], 'input untouched');
  t.throws(() => scaleGlobalHalf(e, 3, 0.5), { message: /two equal halves/ });
  t.is(pickFusionBeta([{ beta: 0, mean: 10 }, { beta: 0.5, mean: 12 }, { beta: 1, mean: 11 }]), 0.5);
  t.is(pickFusionBeta([{ beta: 0, mean: 12 }, { beta: 0.8, mean: 12 }, { beta: 2, mean: 12 }]), 0.8);
  t.is(pickFusionBeta([{ beta: 0.5, mean: 12 }, { beta: 1.5, mean: 12 }]), 0.5, 'equal distance to 1: the smaller');
  t.true(FUSION_BETA_GRID.includes(0) && FUSION_BETA_GRID.includes(1));
});

test('config: fusionBeta is a number in [0, 100] or auto; the small preset chooses β on val, the paper preset keeps the sum (β = 1); bad values name the setting', (t) => {
  t.is(T.resolveConfig(undefined, {}).fusionBeta, 'auto', 'the small preset: β chosen on validation');
  t.is(T.resolveConfig(undefined, { preset: 'paper' }).fusionBeta, 1);
  t.is(T.resolveConfig(undefined, { fusionBeta: 0.4 }).fusionBeta, 0.4);
  t.is(T.resolveConfig(undefined, { fusionBeta: 'auto' }).fusionBeta, 'auto');
  for (const bad of [-0.1, 101, Number.NaN, 'half', null]) throwsNaming(t, () => T.resolveConfig(undefined, { fusionBeta: bad }), 'fusionBeta', 'DWC_BAD_ARGUMENT');
  t.is(T.modelOptions(T.resolveConfig(undefined, { fusionBeta: 'auto' }), 10).fusionBeta, 1, "'auto' before it is chosen: the sum");
  t.is(T.modelOptions(T.resolveConfig(undefined, { fusionBeta: 0.3 }), 10).fusionBeta, 0.3);
  t.is(fusionBetaArg('auto'), 'auto');
  t.is(fusionBetaArg('0.25'), 0.25);
  t.throws(() => fusionBetaArg('x'), { message: /neither a number nor auto/ });
});

test('--fusion-beta auto: β from the grid on val with the best checkpoint, stored in both checkpoints and config.json; eval and search score with the stored β', async (t) => {
  const data = await dataset();
  const d = tmp();
  const r = await T.train({ config: config(data, join(d, 'run'), { fusionBeta: 'auto' }) });
  t.truthy(r.fusion, 'a fusion record');
  const f = r.fusion;
  t.is(f.split, 'val');
  t.deepEqual(f.curve.map((c) => c.beta), [...FUSION_BETA_GRID]);
  t.is(f.beta, pickFusionBeta(f.curve));
  t.is(f.epoch, r.best.epoch);
  // the best epoch is judged at its own β: its recall is the curve's point at β (chosen per epoch)
  t.deepEqual(f.curve.find((c) => c.beta === f.beta).recall, r.best.recall);
  const metrics = T.readMetrics(join(r.runDir, 'metrics.jsonl'));
  t.deepEqual(metrics.filter((m) => m.event === 'fusion'), [f]);
  t.is(T.readCheckpointInfo(r.bestCheckpoint).config.fusionBeta, f.beta);
  const lastEval = metrics.filter((m) => m.event === 'eval').at(-1);
  t.is(T.readCheckpointInfo(r.lastCheckpoint).config.fusionBeta, lastEval.fusionBeta, 'the last checkpoint: its own epoch’s β');
  t.is(JSON.parse(readFileSync(join(r.runDir, 'config.json'), 'utf8')).fusionBeta, f.beta);
  t.is(r.test.best.fusionBeta, f.beta, 'test scored with the chosen β');

  // eval on val with the stored β reproduces the curve's point; β overridden: the other points
  const ev = await evaluateCheckpoint({ checkpoint: r.bestCheckpoint, split: 'val' });
  t.is(ev.sets[0].fusionBeta, f.beta);
  t.deepEqual(ev.recall, f.curve.find((c) => c.beta === f.beta).recall);
  const ev0 = await evaluateCheckpoint({ checkpoint: r.bestCheckpoint, split: 'val', fusionBeta: 0 });
  t.deepEqual(ev0.recall, f.curve.find((c) => c.beta === 0).recall);
  t.deepEqual(ev0.recall, ev0.sets[0].streams.local, 'β = 0: the local half alone');
  const ev2 = await evaluateCheckpoint({ checkpoint: r.bestCheckpoint, split: 'val', fusionBeta: 2 });
  t.deepEqual(ev2.recall, f.curve.find((c) => c.beta === 2).recall);
  t.deepEqual(ev.sets[0].streams, ev0.sets[0].streams, 'the halves alone do not depend on β');
  t.regex(T.formatEvalTable(ev2), /β = 2/);

  // search: a copy stored with β = 0.3 and one with β = 1 embed the same query with the global half scaled by 0.3
  const a = join(d, 'a.safetensors'), b = join(d, 'b.safetensors');
  copyFileSync(r.bestCheckpoint, a);
  copyFileSync(r.bestCheckpoint, b);
  patchCheckpointConfig(a, { fusionBeta: 0.3 });
  patchCheckpointConfig(b, { fusionBeta: 1 });
  const ta = readSafetensors(a), tb = readSafetensors(r.bestCheckpoint);
  t.deepEqual([...ta.tensors.keys()].sort(), [...tb.tensors.keys()].sort());
  t.true(tb.tensors.size > 10);
  const bytes = (x) => Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength);
  for (const [k, x] of tb.tensors) t.true(bytes(ta.tensors.get(k)).equals(bytes(x)), `tensor ${k} kept byte for byte`);
  t.is(ta.metadata['dwc.vocab'], tb.metadata['dwc.vocab']);
  const ds = await import('../lib/data/dataset.js').then((m) => m.loadGeneric(data));
  const q = ds.queries(ds.evalSplit)[0];
  const [sa, sb] = [await Searcher.open(a), await Searcher.open(b)];
  const [ea, eb] = [await sa.embedQueries([{ image: ds.image(q.source).file, text: q.text }]), await sb.embedQueries([{ image: ds.image(q.source).file, text: q.text }])];
  const h = ea.dim / 2;
  for (let j = 0; j < ea.dim; j++) t.true(Math.abs(ea.embeddings[j] - (j < h ? 0.3 : 1) * eb.embeddings[j]) < 1e-6, `component ${j}`);
  t.true(existsSync(r.bestCheckpoint));
});

test('--fusion-beta auto chooses β at every epoch on val: each eval record holds the curve and its argmax, the best (epoch, β) is kept, test never influences it', async (t) => {
  const data = await dataset();
  const { loadGeneric } = await import('../lib/data/dataset.js');
  const run = async (name, ds) => {
    const evals = [];
    const r = await T.train({ config: config(data, join(tmp(), name), { fusionBeta: 'auto', epochs: 3 }), dataset: ds, callbacks: { onEval: (e) => evals.push(e) } });
    return { r, evals, metrics: T.readMetrics(join(r.runDir, 'metrics.jsonl')) };
  };
  const a = await run('a', loadGeneric(data));
  const evals = a.metrics.filter((m) => m.event === 'eval');
  t.is(evals.length, 3);
  t.deepEqual(a.evals, evals, 'the callbacks get the records metrics.jsonl holds');
  for (const e of evals) {
    t.is(e.split, 'val');
    t.deepEqual(e.fusionCurve.map((c) => c.beta), [...FUSION_BETA_GRID]);
    t.is(e.fusionBeta, pickFusionBeta(e.fusionCurve), `epoch ${e.epoch}: β = the argmax of its curve`);
    const at = e.fusionCurve.find((c) => c.beta === e.fusionBeta);
    t.deepEqual(e.recall, at.recall, `epoch ${e.epoch}: the recall at that β`);
    t.is(e.mean, at.mean);
    t.true(e.fusionCurve.every((c) => c.mean <= e.mean + 1e-9));
  }
  // the best epoch: the first with the highest mean at its own β
  let best = evals[0];
  for (const e of evals) if (e.mean > best.mean) best = e;
  t.is(a.r.best.epoch, best.epoch);
  t.deepEqual(evals.map((e) => e.best), evals.map((e, i) => evals.slice(0, i).every((x) => e.mean > x.mean)));
  t.is(a.r.fusion.beta, best.fusionBeta, 'the stored β is the best epoch’s');
  t.deepEqual(a.r.fusion.curve, best.fusionCurve, 'no second evaluation: the fusion record is the best epoch’s curve');
  t.is(a.r.fusion.epoch, best.epoch);
  t.is(T.readCheckpointInfo(a.r.bestCheckpoint).config.fusionBeta, best.fusionBeta);
  t.is(T.readCheckpointInfo(a.r.lastCheckpoint).config.fusionBeta, evals.at(-1).fusionBeta, 'the last checkpoint keeps its own epoch’s β');
  t.is(JSON.parse(readFileSync(join(a.r.runDir, 'config.json'), 'utf8')).fusionBeta, best.fusionBeta);
  const tests = a.metrics.filter((m) => m.event === 'test');
  t.true(tests.length >= 1 && tests.every((x) => x.split === 'test'));
  // test scored once per model: the best and the last checkpoint, or once when the best epoch is the last
  const bestIsLast = best.epoch === evals.at(-1).epoch;
  t.is(tests.filter((x) => x.model === 'last').length, 1, 'the last model scored once');
  t.is(tests.filter((x) => x.model === 'best').length, bestIsLast ? 0 : 1, `the best model (epoch ${best.epoch}) scored ${bestIsLast ? 'as the last' : 'once'}`);
  if (!bestIsLast) t.is(tests.find((x) => x.model === 'best').fusionBeta, best.fusionBeta, 'the best model on test with the chosen β');
  t.is(tests.find((x) => x.model === 'last').fusionBeta, evals.at(-1).fusionBeta);
  t.is(a.metrics.filter((m) => m.event === 'eval' && m.split === 'test').length, 0);
  // the same run with the test split's targets changed: every val record, the best epoch and β are the same
  const ds2 = loadGeneric(data);
  const orig = ds2.queries.bind(ds2);
  const gal = ds2.gallery('test');
  ds2.queries = (split, o) => (split === 'test' ? orig(split, o).map((q, i) => ({ ...q, target: gal[(i * 7 + 3) % gal.length] })) : orig(split, o));
  t.notDeepEqual(ds2.queries('test').map((q) => q.target), orig('test').map((q) => q.target));
  const b = await run('b', ds2);
  t.deepEqual(b.metrics.filter((m) => m.event === 'eval'), evals, 'val evaluations do not depend on the test split');
  t.is(b.r.fusion.beta, a.r.fusion.beta);
  t.is(b.r.best.epoch, a.r.best.epoch);
});

test('--fusion-beta auto without a validation split keeps β = 1 (no choice on the test split)', async (t) => {
  const data = await dataset();
  const logs = [];
  const r = await T.train({ config: config(data, join(tmp(), 'run'), { fusionBeta: 'auto', epochs: 1, evalSplit: 'test' }), callbacks: { onLog: (m) => logs.push(m) } });
  t.is(r.fusion, undefined);
  t.true(logs.some((l) => /keeping β = 1/.test(l)), logs.join('\n'));
  t.is(T.readCheckpointInfo(r.bestCheckpoint).config.fusionBeta, 1);
});

test.serial('a run on frozen CLIP features (--clip): eval of its checkpoint reads the cached features and scores with the stored β', async (t) => {
  const prev = process.env.DWC_NATIVE_CACHE;
  const d = tmp();
  process.env.DWC_NATIVE_CACHE = join(d, 'cache');
  try {
    const { writeRandomClip } = await import('../lib/index.js');
    const clip = writeRandomClip(join(d, 'clip'));
    const data = await dataset();
    const r = await T.train({ config: config(data, join(d, 'run'), { clip, epochs: 1, fusionBeta: 'auto' }) });
    t.truthy(r.fusion);
    const ev = await evaluateCheckpoint({ checkpoint: r.bestCheckpoint, split: 'val' });
    t.is(ev.sets[0].fusionBeta, r.fusion.beta);
    t.deepEqual(ev.recall, r.fusion.curve.find((c) => c.beta === r.fusion.beta).recall);
    const test1 = await evaluateCheckpoint({ checkpoint: r.bestCheckpoint });
    t.deepEqual(test1.recall, r.test.best.recall, 'test as scored at the end of training');
  } finally {
    if (prev === undefined) delete process.env.DWC_NATIVE_CACHE;
    else process.env.DWC_NATIVE_CACHE = prev;
  }
});

test('CLI: --fusion-beta takes a number or auto; a bad value is a clear error before anything runs', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const main = join(process.cwd(), 'lib/cli/main.js');
  const run = (...a) => spawnSync(process.execPath, [main, ...a], { encoding: 'utf8', timeout: 60_000 });
  for (const [args, re] of [
    [['train', '--fusion-beta', 'half', '--out', join(tmp(), 'x')], /'half' is neither a number nor auto/],
    [['train', '--fusion-beta', '200', '--out', join(tmp(), 'x')], /'fusionBeta' must be a number in \[0, 100\] or 'auto', got 200/],
    [['eval', '--checkpoint', 'nope.safetensors', '--fusion-beta', 'x'], /'x' is not a finite number/],
  ]) {
    const r = run(...args);
    t.not(r.status, 0, args.join(' '));
    t.regex(r.stderr, re);
    t.notRegex(r.stderr, /\n\s+at .+:\d+:\d+/, 'no stack trace');
  }
  t.regex(run('train', '--help').stdout, /--fusion-beta <b>/);
});
