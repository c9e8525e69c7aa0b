// PL4CIR stages in one run (src/train/stages.ts, `dwc-native train --stages 2,3`): on a tiny
// synthetic benchmark stage 2 (a tiny CLIP from scratch) and stage 3 (DWC reading it) run end to
// end with per-stage progress and --json events carrying `stage`; interrupting in stage 2 and in
// stage 3 and resuming ends with exactly the numbers of an uninterrupted run; bad stage lists and
// stage-2 settings are clear errors; the FashionIQ recipe (a random small ModifiedResNet CLIP as
// stage 1, stage 2 on FashionIQ's own texts, stage 3 DWC) runs end to end.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { generateSynthetic, trainStages, readStagesFile, readPretrainMetrics, Clip, TINY_RN_CLIP_ARCH, writeRandomClip, train as T } from '../lib/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tmp = mkdtempSync(join(tmpdir(), 'dwc-stages-'));
const cache = join(tmp, 'cache');
process.env.DWC_NATIVE_CACHE = cache;
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
const dir = (name) => join(tmp, `${name}-${n++}`);
let dataP;
const dataset = () => (dataP ??= generateSynthetic({ out: join(tmp, 'synth'), train: 96, test: 24, val: 24, size: 32, seed: 5, noise: 0 }).then((s) => s.out));

// 1 epoch of each stage: stage 2 a tiny ViT from scratch (3 batches of 32 pairs), stage 3 tiny DWC dims (6 batches of 16)
const DIMS = { D: 32, C: 32, H: 4, W: 4, E: 16, Dc: 32, imageSize: 32 };
const PRETRAIN = { epochs: 1, batchSize: 32, lr: 2e-3, warmup: 2, evalComposition: true, arch: { patchSize: 8, visionWidth: 64, visionLayers: 1, textWidth: 64, textLayers: 1, embedDim: 32 } };
const config = (data, out, over = {}) =>
  T.resolveConfig(undefined, { dataset: 'generic', data, out, dims: DIMS, epochs: 1, batchSize: 16, lr: 1e-3, evalBatchSize: 64, report: false, stages: [2, 3], pretrain: PRETRAIN, ...over });

function cli(...args) {
  const r = spawnSync(process.execPath, [join(root, 'lib/cli/main.js'), ...args], { encoding: 'utf8', env: { ...process.env, DWC_NATIVE_CACHE: cache }, timeout: 300_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const events = (out) => out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
const CLI_TINY = ['--dataset', 'generic', '--dim', '32', '--channels', '32', '--map-size', '4', '--embed', '16', '--image-size', '32', '--epochs', '1', '--batch-size', '16', '--no-report',
  '--stages', '2,3', '--pretrain-epochs', '1', '--pretrain-batch-size', '32', '--pretrain-lr', '2e-3', '--pretrain-warmup', '2', '--pretrain-patch', '8', '--pretrain-vision-width', '64',
  '--pretrain-vision-layers', '1', '--pretrain-text-width', '64', '--pretrain-text-layers', '1', '--pretrain-embed-dim', '32'];

/** Every number a run reports, without its timings: stage 2's and stage 3's metrics.jsonl. */
function numbers(out) {
  const strip = (r) => Object.fromEntries(Object.entries(r).filter(([k]) => k !== 'seconds' && k !== 'itemsPerSec'));
  const m3 = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => strip(JSON.parse(l)));
  return { stage2: readPretrainMetrics(join(out, 'stage2')).map(strip), stage3: m3 };
}

test.serial('dwc-native train --stages 2,3 --json: stage 2 then stage 3 end to end, events carry the stage, test once', async (t) => {
  const data = await dataset();
  const out = dir('cli');
  const r = cli('train', '--data', data, ...CLI_TINY, '--out', out, '--json');
  t.is(r.code, 0, r.err);
  const ev = events(r.out);
  const stages = ev.filter((e) => e.event === 'stage');
  t.deepEqual(stages.map((e) => [e.stage, e.index, e.count, e.skipped, e.resumed]), [[2, 1, 2, false, false], [3, 2, 2, false, false]]);
  t.is(stages[0].from, 'scratch');
  t.is(stages[1].from, join(out, 'stage2'));
  // every event but the stage headers and the final summary carries its stage, in order: all of stage 2, then stage 3
  const body = ev.filter((e) => e.event !== 'stage' && e.event !== 'done');
  t.true(body.every((e) => e.stage === 2 || e.stage === 3), JSON.stringify(body.find((e) => e.stage === undefined)));
  const firstThree = body.findIndex((e) => e.stage === 3);
  t.true(firstThree > 0 && body.slice(firstThree).every((e) => e.stage === 3));
  t.deepEqual([...new Set(body.filter((e) => e.stage === 2).map((e) => e.event))], ['start', 'epoch', 'eval']);
  t.true(body.filter((e) => e.stage === 3).some((e) => e.event === 'features'));
  // test once: stage 3's; stage 2 writes no test record
  t.is(ev.filter((e) => e.event === 'test').length, 1);
  t.is(ev.find((e) => e.event === 'test').stage, 3);
  t.false(readPretrainMetrics(join(out, 'stage2')).some((x) => x.event === 'test'));
  const done = ev.find((e) => e.event === 'done');
  t.is(done.stage, 3);
  t.is(done.stage2.model, join(out, 'stage2', 'model.safetensors'));
  t.is(done.stage2.best.split, 'val');
  t.true(Number.isFinite(done.stage2.best.imageToText['1']));
  t.is(done.split, 'val');
  t.true(Number.isFinite(done.best.recall['1']));
  t.true(Number.isFinite(done.test.best.recall['1']));
  // the folders: stage 2 a CLIP folder, stage 3 a DWC run reading it (Dc = its embed dim)
  const clip = Clip.load(join(out, 'stage2'));
  t.is(clip.embedDim, 32);
  const cfg3 = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  t.is(cfg3.clip, join(out, 'stage2'));
  t.is(cfg3.dims.Dc, 32);
  t.deepEqual(cfg3.stages, [2, 3]);
  t.true(existsSync(join(out, 'best.safetensors')));
  const sf = readStagesFile(out);
  t.true(sf.stage2.done && sf.stage3.started);
  t.is(sf.config.pretrain.epochs, 1);
  // people: a header per stage, both stages' validation figures and the test once in the summary
  const h = cli('train', '--data', data, ...CLI_TINY, '--out', dir('cli-h'));
  t.is(h.code, 0, h.err);
  t.regex(h.err, /stage 2\/3: domain transfer.*from a small CLIP from scratch/);
  t.regex(h.err, /stage 3\/3: composed retrieval: DWC/);
  t.regex(h.out, /^stage 2 \(CLIP .*model\.safetensors, epoch 1\) \(val\): image→caption R@1/m);
  t.regex(h.out, /^stage 3 best on val: R@1/m);
  t.is((h.out.match(/^test \(best checkpoint\)/gm) ?? []).length, 1, h.out);
});

test.serial('local-only on a CLIP (the experiments grid\'s ablation): the features only feed w* of the local combiner', async (t) => {
  // it used to hand the CLIP features to a model without a global stream and fail ('eImg' … needs 0)
  const data = await dataset();
  const out = dir('local-only');
  const r = cli('train', '--data', data, ...CLI_TINY, '--out', out, '--json', '--ablation', 'local-only', '--adaptive-weighting', 'global,local');
  t.is(r.code, 0, r.err);
  const epochs = events(r.out).filter((e) => e.event === 'epoch' && e.stage === 3);
  t.true(epochs.length > 0);
  for (const e of epochs) {
    t.false(Object.keys(e.loss).some((k) => k.startsWith('global.')), JSON.stringify(e.loss));
    t.true(Number.isFinite(e.loss['local.aw']), `L_w of the local combiner from the CLIP's w*: ${JSON.stringify(e.loss)}`);
  }
  t.true(Number.isFinite(events(r.out).find((e) => e.event === 'done').test.best.recall['1']));
});

test.serial('interrupted in stage 2 and in stage 3, resumed: exactly the numbers of an uninterrupted run', async (t) => {
  const data = await dataset();
  const ref = dir('ref');
  const a = await trainStages({ config: config(data, ref) });
  t.false(a.interrupted);
  t.is(a.stage, 3);
  t.truthy(a.stage3.test?.best);
  const want = numbers(ref);
  t.is(want.stage2.filter((x) => x.event === 'epoch').length, 1);
  t.true(want.stage3.some((x) => x.event === 'test'));

  // stage 2: stop after its 2nd of 3 steps (mid-epoch), resume
  {
    const out = dir('cut2');
    const ac = new AbortController();
    const r1 = await trainStages({ config: config(data, out), signal: ac.signal, callbacks: { pretrain: { onStep: (s) => s.step === 2 && ac.abort() } } });
    t.true(r1.interrupted);
    t.is(r1.stage, 2);
    t.false(existsSync(join(out, 'metrics.jsonl')), 'stage 3 has not started');
    t.false(readStagesFile(out).stage2.done);
    const stagesSeen = [];
    const r2 = await trainStages({ config: config(data, out), resume: out, callbacks: { onStage: (s) => stagesSeen.push([s.stage, s.resumed, s.skipped]), pretrain: { onStart: (s) => stagesSeen.push(['at', s.startEpoch, s.startBatch]) } } });
    t.false(r2.interrupted);
    t.deepEqual(stagesSeen, [[2, true, false], ['at', 0, 2], [3, false, false]]);
    t.deepEqual(numbers(out), want);
    t.deepEqual(r2.stage3.test.best.recall, a.stage3.test.best.recall);
    t.true(readFileSync(join(out, 'stage2', 'model.safetensors')).equals(readFileSync(join(ref, 'stage2', 'model.safetensors'))));
  }
  // stage 3: stop after its 2nd batch, resume (stage 2 done: skipped)
  {
    const out = dir('cut3');
    const ac = new AbortController();
    const r1 = await trainStages({ config: config(data, out), signal: ac.signal, callbacks: { train: { onStep: (s) => s.batch === 1 && ac.abort() } } });
    t.true(r1.interrupted);
    t.is(r1.stage, 3);
    t.true(readStagesFile(out).stage2.done);
    const seen = [];
    const r2 = await trainStages({ config: config(data, out), resume: out, callbacks: { onStage: (s) => seen.push([s.stage, s.resumed, s.skipped]), train: { onStart: (s) => seen.push(['at', s.startEpoch, s.startBatch]) } } });
    t.false(r2.interrupted);
    t.deepEqual(seen, [[2, false, true], [3, true, false], ['at', 0, 2]]);
    t.deepEqual(numbers(out), want);
    t.deepEqual({ ...r2.stage2.best, seconds: 0 }, { ...a.stage2.best, seconds: 0 });
    t.deepEqual(r2.stage3.test.best.recall, a.stage3.test.best.recall);
  }
  // stage 3 during its CLIP feature extraction (a cache of its own, so the features are not reused): resumed, the same numbers
  {
    const out = dir('cut3f');
    process.env.DWC_NATIVE_CACHE = join(tmp, 'cache-cut3f');
    try {
      const ac = new AbortController();
      const r1 = await trainStages({ config: config(data, out), signal: ac.signal, callbacks: { train: { onFeatureProgress: () => ac.abort() } } });
      t.true(r1.interrupted);
      t.is(r1.stage, 3);
      t.false(existsSync(join(out, 'last.safetensors')));
      const r2 = await trainStages({ config: config(data, out), resume: out });
      t.false(r2.interrupted);
      t.deepEqual(numbers(out), want);
    } finally {
      process.env.DWC_NATIVE_CACHE = cache;
    }
  }
});

test.serial('CLI: --resume OUT of a staged run stopped in stage 2 continues it there; the stages cannot change on resume', async (t) => {
  const data = await dataset();
  const out = dir('cli-resume');
  const ac = new AbortController();
  const r1 = await trainStages({ config: config(data, out), signal: ac.signal, callbacks: { pretrain: { onStep: (s) => s.step === 1 && ac.abort() } } });
  t.true(r1.interrupted);
  const bad = cli('train', '--resume', out, '--stages', '3');
  t.not(bad.code, 0);
  t.regex(bad.err, /stages 2,3; 'stages' cannot change/);
  const r = cli('train', '--resume', out, '--json');
  t.is(r.code, 0, r.err);
  const ev = events(r.out);
  t.like(ev.find((e) => e.event === 'stage' && e.stage === 2), { resumed: true, skipped: false });
  t.like(ev.find((e) => e.event === 'start' && e.stage === 2), { resumedAt: { epoch: 0, batch: 1 } });
  t.truthy(ev.find((e) => e.event === 'done'));
});

test('bad stage lists and stage-2 settings are errors naming the problem', async (t) => {
  const fails = (args, re) => {
    const r = cli('train', ...args);
    t.not(r.code, 0, args.join(' '));
    t.regex(r.err, re, args.join(' '));
    t.notRegex(r.err, /at .*\.js:\d+/, 'no stack trace');
  };
  fails(['--stages', '4'], /no stage 4/);
  fails(['--stages', '3,2'], /increasing order/);
  fails(['--stages', '3,3'], /increasing order/);
  fails(['--stages', ''], /empty list/);
  fails(['--stages', 'two'], /'two' is not a stage number/);
  fails(['--stages', '2'], /always ends with stage 3.*dwc-native pretrain/);
  fails(['--stages', '1,2,3'], /stage 1 .*given CLIP weights/);
  fails(['--pretrain-epochs', '2'], /only apply with --stages 2,3/);
  fails(['--stages', '2,3', '--features', 'f.safetensors'], /excludes 'features'/);
  fails(['--stages', '2,3', '--clip', 'somewhere', '--pretrain-vision-width', '64'], /only applies to a CLIP from scratch/);
  fails(['--stages', '2,3', '--pretrain-vision-width', '100', '--out', dir('bad')], /visionWidth.*multiple of 64/);
  fails(['--stages', '2,3', '--pretrain-lr', '-1', '--out', dir('bad')], /'lr'/);
  const cfgFile = join(tmp, 'bad-config.json');
  writeFileSync(cfgFile, JSON.stringify({ stages: [2, 3], pretrain: { epoch: 2 } }));
  fails(['--config', cfgFile], /unknown setting 'pretrain.epoch'/);
  writeFileSync(cfgFile, JSON.stringify({ stages: '2,3' }));
  fails(['--config', cfgFile], /'stages' must be 3 or 2,3/);
  fails(['--resume', dir('nothing'), '--stages', '2,3'], /does not exist|nothing to resume/i);
  t.throws(() => T.resolveConfig(undefined, { stages: [3], pretrain: { epochs: 1 } }), { message: /pretrain.epochs\) only apply with --stages 2,3/ });
  await t.throwsAsync(trainStages({ config: T.resolveConfig(undefined, { out: dir('x') }) }), { message: /no stage 2/ });
  // the config file's pretrain object and the --pretrain-* flags merge (flags win), arch key by key
  const merged = T.resolveConfig({ stages: [2, 3], pretrain: { lr: 1e-3, epochs: 4, arch: { visionWidth: 64 } } }, { pretrain: { epochs: 2, arch: { textLayers: 1 } } });
  t.deepEqual(merged.pretrain, { lr: 1e-3, epochs: 2, arch: { visionWidth: 64, textLayers: 1 } });
  t.deepEqual(T.resolveConfig(undefined, {}).stages, [3]);
  const h = cli('train', '--help');
  t.is(h.code, 0);
  t.regex(h.out, /--stages <list>/);
  t.regex(h.out, /--pretrain-epochs/);
});

// FashionIQ layout (src/data/fashioniq.ts): 3 categories, 4 train + 3 val images each
const json = (file, v) => {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(v));
};
async function fashionIq(out) {
  const cats = ['dress', 'shirt', 'toptee'];
  mkdirSync(join(out, 'images'), { recursive: true });
  const words = ['red', 'blue', 'green', 'black', 'white', 'striped', 'floral'];
  let k = 0;
  for (const cat of cats) {
    const ids = Array.from({ length: 7 }, (_, i) => `${cat[0]}${i}`);
    json(join(out, 'image_splits', `split.${cat}.train.json`), ids.slice(0, 4));
    json(join(out, 'image_splits', `split.${cat}.val.json`), ids.slice(4));
    const caps = (pairs) => pairs.map(([c, g]) => ({ candidate: ids[c], target: ids[g], captions: [`is ${words[(k += 3) % 7]} ${cat}`, `has ${words[(k + 1) % 7]} sleeves`] }));
    json(join(out, 'captions', `cap.${cat}.train.json`), caps([[0, 1], [1, 2], [2, 3], [3, 0], [0, 2], [1, 3]]));
    json(join(out, 'captions', `cap.${cat}.val.json`), caps([[4, 5], [5, 6], [6, 4]]));
    for (const [i, id] of ids.entries()) {
      const v = (37 * (i + 7 * cats.indexOf(cat))) % 256;
      await sharp({ create: { width: 40, height: 52, channels: 3, background: { r: v, g: 255 - v, b: (3 * v) % 256 } } }).jpeg().toFile(join(out, 'images', `${id}.jpg`));
    }
  }
  return out;
}

test.serial('FashionIQ recipe: train --dataset fashioniq --clip RN-DIR --stages 2,3 (a random small ModifiedResNet CLIP) runs end to end', async (t) => {
  const fiq = await fashionIq(join(tmp, 'fiq'));
  const rn = writeRandomClip(join(tmp, 'rn-clip'), TINY_RN_CLIP_ARCH, 11);
  const out = dir('fiq-run');
  const r = cli('train', '--dataset', 'fashioniq', '--data', fiq, '--clip', rn, '--stages', '2,3', '--pretrain-epochs', '1', '--pretrain-batch-size', '8', '--pretrain-lr', '1e-4',
    '--pretrain-warmup', '0', '--dim', '32', '--channels', '32', '--map-size', '4', '--embed', '16', '--image-size', '64', '--epochs', '1', '--batch-size', '6', '--no-report', '--out', out, '--json');
  t.is(r.code, 0, r.err);
  const ev = events(r.out);
  t.deepEqual(ev.filter((e) => e.event === 'stage').map((e) => [e.stage, e.from]), [[2, rn], [3, join(out, 'stage2')]]);
  // stage 2 on FashionIQ's own texts: no attribute files, so the training queries' (target, modification text) pairs
  const s2 = ev.find((e) => e.event === 'start' && e.stage === 2);
  t.is(s2.pairs, 18);
  t.is(s2.arch.image, 'resnet');
  const e2 = ev.find((e) => e.event === 'eval' && e.stage === 2);
  t.is(e2.split, 'val');
  t.deepEqual(e2.composition.map((c) => c.name), ['fashioniq-dress', 'fashioniq-shirt', 'fashioniq-toptee']);
  // stage 2 moved the given weights; stage 3 trained DWC on them and evaluated per category (R@10, R@50)
  const before = Clip.load(rn).fileTensors().get('visual.attnpool.c_proj.weight').data;
  const after = Clip.load(join(out, 'stage2')).fileTensors().get('visual.attnpool.c_proj.weight').data;
  t.notDeepEqual(Array.from(after), Array.from(before));
  const done = ev.find((e) => e.event === 'done');
  t.truthy(done, r.out);
  t.deepEqual(Object.keys(done.best.recall), ['10', '50']);
  t.true(Object.values(done.best.recall).every((v) => Number.isFinite(v) && v >= 0 && v <= 100));
  const e3 = ev.find((e) => e.event === 'eval' && e.stage === 3);
  t.deepEqual(e3.sets.map((s) => s.name), ['fashioniq-dress', 'fashioniq-shirt', 'fashioniq-toptee']);
  t.is(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).dims.Dc, TINY_RN_CLIP_ARCH.embedDim);
});
