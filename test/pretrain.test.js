// PL4CIR stage 2 (src/train/pretrain.ts, `dwc-native pretrain`): a tiny CLIP from scratch on a tiny
// synthetic benchmark learns (loss falls, image↔caption recall beats chance), resume is exact
// (bitwise weights), the run folder loads with Clip.load + ClipTokenizer.fromDir, the BPE trainer,
// the initialisation, the caption re-phrasing and the zero-shot composition are checked, and bad
// input fails with a message naming the problem.
import test from 'ava';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  generateSynthetic, pretrain, initClip, trainBpe, writeHfVocab, bpeVocabulary, Clip, ClipTokenizer, readSafetensors,
  parseSceneCaption, rephraseSceneCaption, zeroShotComposition, embedDatasetImages, embedTexts, clipQueryText, pretrainLearningRate, readPretrainMetrics,
} from '../lib/index.js';
import { loadGeneric } from '../lib/data/dataset.js';
import { ImageStore } from '../lib/train/batches.js';
import { topKBruteForce } from '../lib/eval/topk.js';

const root = join(fileURLToPath(import.meta.url), '..', '..');
const tmp = () => mkdtempSync(join(tmpdir(), 'dwc-pretrain-'));
let dataP;
const dataset = () => (dataP ??= generateSynthetic({ out: join(tmp(), 'synth'), train: 160, test: 40, val: 40, size: 32, seed: 3, noise: 0 }).then((s) => s.out));
const tiny = (data, out, over = {}) => ({
  dataset: 'generic', data, out, fromScratch: true, imageSize: 32, epochs: 2, batchSize: 32, lr: 2e-3, warmup: 4, evalBatchSize: 64,
  arch: { patchSize: 8, visionWidth: 64, visionLayers: 1, textWidth: 64, textLayers: 1, embedDim: 32 }, ...over,
});

test('BPE trainer: deterministic, its vocabulary loads with ClipTokenizer.fromDir and round-trips', (t) => {
  const texts = ['a small red circle at the top left', 'a large blue square in the centre', 'there is a medium green star at the bottom right', 'make the circle bigger'];
  const m1 = trainBpe(texts, { maxMerges: 200, minFrequency: 1 });
  const m2 = trainBpe([...texts], { maxMerges: 200, minFrequency: 1 });
  t.deepEqual(m1, m2);
  t.true(m1.length > 20 && m1.length <= 200);
  // minFrequency stops early: fewer merges, each learnt pair occurring at least twice
  t.true(trainBpe(texts, { maxMerges: 200, minFrequency: 2 }).length < m1.length);
  const dir = tmp();
  const w = writeHfVocab(dir, m1);
  const tok = ClipTokenizer.fromDir(dir);
  t.is(tok.vocabSize, w.vocabSize);
  t.is(tok.vocabSize, 512 + m1.length + 2);
  t.deepEqual(bpeVocabulary(m1).slice(-2), ['<|startoftext|>', '<|endoftext|>']);
  for (const s of texts) t.is(tok.decode(tok.encode(s)).trim(), s);
  // every word of the corpus became one token
  t.is(tok.encode('circle').length, 1);
  t.throws(() => trainBpe(texts, { maxMerges: -1 }), { message: /maxMerges/ });
});

test('initClip: OpenAI naming and stds, seeded, accepted by Clip.fromTensors', (t) => {
  const w = initClip({ vocabSize: 600, seed: 5 });
  const std = (a) => {
    let m = 0, s = 0;
    for (const x of a) m += x;
    m /= a.length;
    for (const x of a) s += (x - m) ** 2;
    return Math.sqrt(s / a.length);
  };
  t.deepEqual(w.get('visual.conv1.weight').shape, [128, 3, 8, 8]);
  t.deepEqual(w.get('visual.positional_embedding').shape, [65, 128]);
  t.deepEqual(w.get('positional_embedding').shape, [32, 128]);
  t.deepEqual(w.get('token_embedding.weight').shape, [600, 128]);
  t.true(Math.abs(std(w.get('token_embedding.weight').data) - 0.02) < 0.001);
  t.true(Math.abs(std(w.get('positional_embedding').data) - 0.01) < 0.001);
  t.true(Math.abs(std(w.get('transformer.resblocks.0.attn.in_proj_weight').data) - 128 ** -0.5) < 0.002);
  t.true(Math.abs(std(w.get('transformer.resblocks.3.mlp.c_proj.weight').data) - 128 ** -0.5 * 8 ** -0.5) < 0.002);
  t.true(Math.abs(w.get('logit_scale').data[0] - Math.log(1 / 0.07)) < 1e-6);
  t.true(w.has('visual.transformer.resblocks.3.mlp.c_fc.bias'));
  t.deepEqual(initClip({ vocabSize: 600, seed: 5 }).get('visual.proj').data, w.get('visual.proj').data);
  t.notDeepEqual(initClip({ vocabSize: 600, seed: 6 }).get('visual.proj').data, w.get('visual.proj').data);
  const clip = Clip.fromTensors(w);
  t.is(clip.resolution, 64);
  t.is(clip.contextLength, 32);
  t.is(clip.embedDim, 128);
  t.is(clip.arch.visionHeads, 2);
  t.throws(() => initClip({ vocabSize: 600, visionWidth: 100 }), { message: /visionWidth.*multiple of the head dim 64/ });
  t.throws(() => initClip({ vocabSize: 600, resolution: 60 }), { message: /not a multiple of 'patchSize'/ });
});

test('synthetic captions: parsed back to their scene, re-phrased per stream, other texts unchanged', async (t) => {
  const ds = loadGeneric(await dataset());
  const caps = ds.captions();
  let differ = 0;
  for (const { caption } of caps.slice(0, 100)) {
    const scene = parseSceneCaption(caption);
    t.truthy(scene, caption);
    const r = rephraseSceneCaption(caption, 1, 42);
    t.deepEqual(parseSceneCaption(r), scene);
    t.is(rephraseSceneCaption(caption, 1, 42), r);
    if (r !== caption) differ++;
  }
  t.true(differ > 50);
  t.is(rephraseSceneCaption('red floral dress', 1, 2), 'red floral dress');
  t.is(parseSceneCaption('red floral dress'), undefined);
  t.is(clipQueryText('<BOS> is red <AND> has sleeves <EOS>'), 'is red and has sleeves');
});

test('learning rate: linear warm-up then cosine to lrMinFactor', (t) => {
  const c = { lr: 1e-3, warmup: 10, lrMinFactor: 0.1 };
  t.is(pretrainLearningRate(c, 0, 100), 1e-4);
  t.is(pretrainLearningRate(c, 9, 100), 1e-3);
  t.true(Math.abs(pretrainLearningRate(c, 10, 100) - 1e-3) < 1e-12);
  t.true(Math.abs(pretrainLearningRate(c, 100, 100) - 1e-4) < 1e-12);
  t.true(pretrainLearningRate(c, 55, 100) < 1e-3 && pretrainLearningRate(c, 55, 100) > 1e-4);
});

test('a tiny CLIP from scratch: the loss falls, image↔caption recall beats chance, the folder loads', async (t) => {
  const data = await dataset();
  const out = join(tmp(), 'run');
  const evals = [];
  const r = await pretrain({ config: tiny(data, out, { epochs: 15, batchSize: 16, lr: 1e-3, warmup: 10 }), callbacks: { onEval: (e) => evals.push(e) } });
  t.false(r.interrupted);
  const m = readPretrainMetrics(out);
  const losses = m.filter((x) => x.event === 'epoch').map((x) => x.loss);
  t.is(losses.length, 15);
  t.true(losses[14] < 0.85 * losses[0], `losses ${losses}`);
  const ev = m.filter((x) => x.event === 'eval');
  t.is(ev.length, 15);
  const last = ev[ev.length - 1];
  const ds = loadGeneric(data);
  const nVal = ds.captions('val').length;
  // chance of image→caption R@5 ≈ 5 / nVal (a few scenes repeat: less than twice that)
  const chance = (100 * 5) / nVal;
  t.true(last.imageToText['5'] > 2 * chance, `i2t R@5 ${last.imageToText['5']} vs chance ${chance}`);
  t.true(last.textToImage['5'] > 2 * chance, `t2i R@5 ${last.textToImage['5']} vs chance ${chance}`);
  t.truthy(last.composition?.[0]?.recall['1'] !== undefined);
  t.is(m.filter((x) => x.event === 'test').length, 1);
  t.truthy(r.test);
  // the run folder is a CLIP folder
  const clip = Clip.load(out);
  const tok = ClipTokenizer.fromDir(out);
  t.is(clip.vocabSize, tok.vocabSize);
  t.is(clip.resolution, 32);
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  t.is(cfg.clip.contextLength, clip.contextLength);
  const e = await clip.embedTokenIds(tok.tokenize(['a small red circle at the top left'], { context: clip.contextLength }));
  t.is(e.length, 32);
  // stage 2 from given weights: continue from the folder (its vocabulary travels along), then evaluate only
  const out2 = join(tmp(), 'stage2');
  const r2 = await pretrain({ config: { dataset: 'generic', data, out: out2, clip: out, epochs: 1, batchSize: 32, lr: 1e-4, warmup: 0 } });
  t.is(r2.epochsDone, 1);
  t.is(ClipTokenizer.fromDir(out2).vocabSize, tok.vocabSize);
  t.notDeepEqual(Clip.load(out2).fileTensors().get('visual.proj').data, clip.fileTensors().get('visual.proj').data);
  const out3 = join(tmp(), 'zero');
  const r3 = await pretrain({ config: { dataset: 'generic', data, out: out3, clip: out, epochs: 0 } });
  t.deepEqual(Clip.load(out3).fileTensors().get('visual.proj').data, clip.fileTensors().get('visual.proj').data);
  t.truthy(r3.test?.composition?.[0]);
});

test('zero-shot composition equals norm(norm(e_ref) + norm(e_txt)) ranked by brute force', async (t) => {
  const data = await dataset();
  const ds = loadGeneric(data);
  const dir = tmp();
  writeHfVocab(dir, trainBpe([...ds.captions().map((c) => c.caption), ...ds.trainTexts()], { maxMerges: 300, minFrequency: 2 }));
  const tokenizer = ClipTokenizer.fromDir(dir);
  const clip = Clip.fromTensors(initClip({ resolution: 32, patchSize: 8, visionWidth: 64, visionLayers: 1, textWidth: 64, textLayers: 1, contextLength: 64, embedDim: 16, vocabSize: tokenizer.vocabSize, seed: 2 }));
  const ctx = { clip, tokenizer, store: new ImageStore(32), batchSize: 16 };
  const set = ds.evaluations('test')[0];
  const recall = await zeroShotComposition(ctx, ds, set);
  const E = 16;
  const g = await embedDatasetImages(ctx, ds, set.gallery);
  const refs = await embedDatasetImages(ctx, ds, set.queries.map((q) => q.source));
  const txt = await embedTexts(ctx, set.queries.map((q) => q.text));
  const q = new Float32Array(set.queries.length * E);
  for (let i = 0; i < set.queries.length; i++) {
    let s = 0;
    for (let j = 0; j < E; j++) s += (q[i * E + j] = refs[i * E + j] + txt[i * E + j]) ** 2;
    for (let j = 0; j < E; j++) q[i * E + j] /= Math.sqrt(s);
  }
  const excl = Int32Array.from(set.queries, (x) => set.gallery.indexOf(x.source));
  const top = topKBruteForce(q, g, E, 10, excl);
  for (const K of set.ks) {
    let hits = 0;
    set.queries.forEach((x, i) => {
      for (let k = 0; k < K; k++) if (ds.hitKey(set.gallery[top.indices[i * 10 + k]]) === ds.hitKey(x.target)) return void hits++;
    });
    t.true(Math.abs(recall[String(K)] - (100 * hits) / set.queries.length) < 1e-9, `R@${K}`);
  }
});

test('resume is exact: interrupted mid-epoch 2 and at the end of epoch 1, resumed, bitwise the weights of an uninterrupted run', async (t) => {
  const data = await dataset();
  const full = join(tmp(), 'full');
  const cfg = (out) => tiny(data, out, { epochs: 3, shift: 2, evalComposition: false });
  await pretrain({ config: cfg(full) });
  const ref = readSafetensors(join(full, 'last.safetensors'));
  const perEpoch = readPretrainMetrics(full).find((x) => x.event === 'epoch').step;
  for (const stopAt of [perEpoch + 2, perEpoch]) {
    const part = join(tmp(), `part-${stopAt}`);
    const a = await pretrain({ config: cfg(part), stopAfterSteps: stopAt });
    t.true(a.interrupted);
    t.is(a.steps, stopAt);
    const b = await pretrain({ config: {}, resume: part });
    t.false(b.interrupted);
    const got = readSafetensors(join(part, 'last.safetensors'));
    t.deepEqual([...got.tensors.keys()], [...ref.tensors.keys()]);
    for (const [n, x] of ref.tensors) t.true(Buffer.from(got.tensors.get(n).data.buffer).equals(Buffer.from(x.data.buffer)), `${n} after stop at ${stopAt}`);
    const la = readPretrainMetrics(full).filter((x) => x.event !== 'test').map((x) => (x.event === 'epoch' ? x.loss : x.imageToText));
    const lb = readPretrainMetrics(part).filter((x) => x.event !== 'test').map((x) => (x.event === 'epoch' ? x.loss : x.imageToText));
    t.deepEqual(lb, la);
    t.true(readFileSync(join(part, 'model.safetensors')).equals(readFileSync(join(full, 'model.safetensors'))));
  }
});

test('errors: a dataset without captions, bad settings, nothing to resume', async (t) => {
  const d = tmp();
  mkdirSync(join(d, 'images'));
  const data = await dataset();
  for (const f of ['train-000000.png', 'train-000001.png']) copyFileSync(join(data, 'images', f), join(d, 'images', f));
  writeFileSync(join(d, 'dataset.json'), JSON.stringify({ images: [{ id: 'a', file: 'images/train-000000.png', split: 'train' }, { id: 'b', file: 'images/train-000001.png', split: 'test' }], queries: [{ source: 'a', target: 'a', text: 'x', split: 'train' }] }));
  await t.throwsAsync(pretrain({ config: tiny(d, join(d, 'run')) }), { message: /0 image–caption pairs in split 'train'.*captions/ });
  await t.throwsAsync(pretrain({ config: { dataset: 'generic', data, out: join(d, 'r') } }), { message: /--clip DIR.*--from-scratch/ });
  await t.throwsAsync(pretrain({ config: tiny(data, join(d, 'r'), { clip: data }) }), { message: /exclude each other/ });
  await t.throwsAsync(pretrain({ config: tiny(data, join(d, 'r'), { arch: { visionWidth: 100 } }) }), { message: /visionWidth.*multiple of 64/ });
  await t.throwsAsync(pretrain({ config: tiny(data, join(d, 'r'), { batchSize: 1 }) }), { message: /batchSize/ });
  await t.throwsAsync(pretrain({ config: tiny(data, join(d, 'r'), { imageSize: 36 }) }), { message: /not a multiple of the patch size/ });
  await t.throwsAsync(pretrain({ config: tiny(data, join(d, 'r'), { learningRate: 1 }) }), { message: /unknown option 'learningRate'/ });
  await t.throwsAsync(pretrain({ config: {}, resume: join(d, 'nothing') }), { message: /nothing to resume/ });
  await t.throwsAsync(pretrain({ config: { dataset: 'generic', data, out: join(d, 'r2'), clip: join(d, 'nope') } }), { message: /does not exist/ });
});

function cli(...args) {
  return spawnSync(process.execPath, [join(root, 'lib/cli/main.js'), ...args], { encoding: 'utf8', env: { ...process.env, DWC_NATIVE_CACHE: join(tmpdir(), 'dwc-pretrain-cache') }, timeout: 120000 });
}

test('CLI: --help, bad flags, and a tiny --json run', async (t) => {
  const h = cli('pretrain', '--help');
  t.is(h.status, 0);
  t.regex(h.stdout, /--from-scratch/);
  t.regex(h.stdout, /--resume/);
  const fail = (r, re) => {
    t.not(r.status, 0);
    t.regex(r.stderr, re);
  };
  fail(cli('pretrain', '--epochs', 'many'), /--epochs.*not an integer/);
  fail(cli('pretrain', '--dataset', 'shoes'), /needs its folder/);
  fail(cli('pretrain', '--patch', '8', '--clip', 'x'), /only apply with --from-scratch/);
  fail(cli('pretrain', '--resume', 'x', '--lr', '0.1'), /only --epochs may be given/);
  const data = await dataset();
  const out = join(tmp(), 'cli');
  const r = cli('pretrain', '--from-scratch', '--dataset', 'generic', '--data', data, '--image-size', '32', '--patch', '8', '--vision-width', '64', '--vision-layers', '1',
    '--text-width', '64', '--text-layers', '1', '--embed-dim', '32', '--epochs', '1', '--batch-size', '32', '--out', out, '--json');
  t.is(r.status, 0, r.stderr);
  const ev = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.deepEqual([...new Set(ev.map((e) => e.event))], ['start', 'epoch', 'eval', 'test', 'done']);
  t.is(ClipTokenizer.fromDir(out).vocabSize, Clip.load(out).vocabSize);
});
