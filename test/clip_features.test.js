// CLIP features natively (src/clip/features.ts, `dwc-native features`, `train --clip`,
// `info --clip`) on tiny dataset folders with a random small CLIP and the test BPE vocabulary:
// the layout docs/DATA.md gives, rows equal to embedding the same images / texts directly,
// resuming after an interruption, training end to end, and errors that name the problem.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { Clip, ClipTokenizer, computeClipFeatures, randomClipTensors, TINY_CLIP_ARCH, writeRandomClip } from '../lib/index.js';
import { loadDataset, loadFeatures } from '../lib/data/index.js';
import { readSafetensors, writeSafetensors } from '../lib/safetensors.js';
import { N_MERGES, TRAIN_CORPUS, trainBpe, writeVocab } from './helpers/clip_bpe.js';
import { relErr } from './helpers/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tmp = mkdtempSync(join(tmpdir(), 'dwc-clip-features-'));
const cache = join(tmp, 'cache');
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function cli(...args) {
  const r = spawnSync(process.execPath, [join(root, 'lib/cli/main.js'), ...args], { encoding: 'utf8', env: { ...process.env, DWC_NATIVE_CACHE: cache }, timeout: 240_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const events = (out) => out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));

// a random small CLIP whose token embedding fits the test vocabulary (514 byte symbols + the merges)
const clipDir = join(tmp, 'clip');
const ARCH = { ...TINY_CLIP_ARCH, vocabSize: 514 + N_MERGES, contextLength: 24 };
mkdirSync(clipDir, { recursive: true });
writeSafetensors(join(clipDir, 'model.safetensors'), randomClipTensors(ARCH, 3));
writeVocab(clipDir, trainBpe(TRAIN_CORPUS, N_MERGES));

let colour = 0;
async function img(file, w = 24, h = 18) {
  mkdirSync(dirname(file), { recursive: true });
  colour = (colour + 41) % 256;
  await sharp({ create: { width: w, height: h, channels: 3, background: { r: colour, g: 255 - colour, b: (colour * 3) % 256 } } }).png().toFile(file);
}

// generic format: 10 images, 8 train queries, 4 test queries, gallery = the test images
const genDir = join(tmp, 'generic');
const TEXTS = ['make it red', 'a photo of the dog instead', 'with long sleeves', 'the shirt is blue', 'café crème', 'add a cat', 'no ball', 'shorter and darker',
  'is green', 'make the dog play with the ball on the mat please and then add two more cats and a red dress with long sleeves and black shoes', 'black shoes', 'longer'];
test.before(async () => {
  const images = [];
  for (let i = 0; i < 10; i++) {
    const id = `im${i}`;
    await img(join(genDir, 'images', `${id}.png`), 20 + 3 * i, 30 - i);
    images.push({ id, file: `images/${id}.png`, split: i < 6 ? 'train' : 'test' });
  }
  const queries = [];
  for (let q = 0; q < 8; q++) queries.push({ source: `im${q % 6}`, target: `im${(q + 1) % 6}`, text: TEXTS[q], split: 'train' });
  for (let q = 0; q < 4; q++) queries.push({ source: `im${6 + q}`, target: `im${6 + ((q + 1) % 4)}`, text: TEXTS[8 + q], split: 'test' });
  writeFileSync(join(genDir, 'dataset.json'), JSON.stringify({ format: 'dwc-dataset', version: 1, name: 'tiny', images, queries }));
});

async function direct(ds) {
  const clip = Clip.load(clipDir);
  const img = await clip.embedImages(ds.images.map((r) => r.file), { batchSize: 3 });
  const txt = {};
  for (const s of ds.splits) if (ds.queries(s).length) txt[s] = await clip.embedTexts(ds.queries(s).map((q) => q.text), { truncate: true });
  return { img, txt, E: clip.embedDim };
}

test.serial('computeClipFeatures: the --features layout, rows equal embedding the images and texts directly', async (t) => {
  const ds = loadDataset(genDir);
  const out = join(tmp, 'gen.safetensors');
  const r = await computeClipFeatures({ clip: clipDir, dataset: ds, out, batchSize: 3, saveEvery: 4 });
  t.false(r.interrupted);
  t.is(r.dim, ARCH.embedDim);
  t.deepEqual(r.texts, { train: 8, test: 4 });
  const f = readSafetensors(out);
  t.deepEqual([...f.tensors.keys()].sort(), ['image', 'query_text.test', 'query_text.train']);
  t.deepEqual(f.tensors.get('image').shape, [10, ARCH.embedDim]);
  t.deepEqual(f.tensors.get('query_text.train').shape, [8, ARCH.embedDim]);
  t.deepEqual(f.tensors.get('query_text.test').shape, [4, ARCH.embedDim]);
  t.deepEqual(JSON.parse(f.metadata.image_ids), ds.images.map((r) => r.id));
  const d = await direct(ds);
  t.true(relErr(f.tensors.get('image').data, d.img) < 1e-5, 'image rows');
  t.true(relErr(f.tensors.get('query_text.train').data, d.txt.train) < 1e-5, 'train texts');
  t.true(relErr(f.tensors.get('query_text.test').data, d.txt.test) < 1e-5, 'test texts');
  // rows differ from each other (not one vector repeated) and are what loadFeatures / the trainer read
  t.true(relErr(f.tensors.get('image').data.subarray(0, ARCH.embedDim), f.tensors.get('image').data.subarray(ARCH.embedDim, 2 * ARCH.embedDim)) > 1e-3);
  const fs = loadFeatures(out, ds);
  t.true(relErr(fs.queryVector('test', 2), d.txt.test.subarray(2 * ARCH.embedDim, 3 * ARCH.embedDim)) < 1e-5);
  t.false(existsSync(`${out}.partial`), 'partial progress removed');
});

test.serial('computeClipFeatures: interrupted, then resumed (also past a torn append), gives the same file', async (t) => {
  const ds = loadDataset(genDir);
  const full = readSafetensors(join(tmp, 'gen.safetensors'));
  const out = join(tmp, 'resume.safetensors');
  const ac = new AbortController();
  const r1 = await computeClipFeatures({ clip: clipDir, dataset: ds, out, batchSize: 2, saveEvery: 4, onProgress: (phase, done) => phase === 'images' && done >= 6 && ac.abort(), signal: ac.signal });
  t.true(r1.interrupted);
  t.false(existsSync(out), 'no final file after an interruption');
  t.true(existsSync(join(`${out}.partial`, 'state.json')));
  const done1 = r1.computedRows;
  t.true(done1 >= 6 && done1 < 22, `rows before the stop: ${done1}`);
  // a crash after appending rows but before the state file: garbage past the recorded rows
  appendFileSync(join(`${out}.partial`, 'rows.f32'), Buffer.alloc(ARCH.embedDim * 4 * 3, 0x7f));
  const logs = [];
  const r2 = await computeClipFeatures({ clip: clipDir, dataset: ds, out, batchSize: 2, saveEvery: 4, onLog: (m) => logs.push(m) });
  t.false(r2.interrupted);
  t.is(r2.resumedRows, done1);
  t.is(r2.computedRows, 22 - done1);
  t.true(logs.some((m) => /resuming/.test(m)), logs.join('\n'));
  const got = readSafetensors(out);
  for (const n of ['image', 'query_text.train', 'query_text.test']) t.true(relErr(got.tensors.get(n).data, full.tensors.get(n).data) < 1e-5, n);
  // a partial file of other weights is not reused
  const ac2 = new AbortController();
  await computeClipFeatures({ clip: clipDir, dataset: ds, out: join(tmp, 'other.safetensors'), batchSize: 2, saveEvery: 2, onProgress: () => ac2.abort(), signal: ac2.signal });
  const other = join(tmp, 'clip-other');
  mkdirSync(other, { recursive: true });
  writeSafetensors(join(other, 'model.safetensors'), randomClipTensors(ARCH, 99));
  writeVocab(other, trainBpe(TRAIN_CORPUS, N_MERGES));
  const logs2 = [];
  const r3 = await computeClipFeatures({ clip: other, dataset: ds, out: join(tmp, 'other.safetensors'), batchSize: 2, onLog: (m) => logs2.push(m) });
  t.is(r3.resumedRows, 0);
  t.true(logs2.some((m) => /other weights, data or precision/.test(m)), logs2.join('\n'));
});

test.serial('dwc-native features --json on a FashionIQ-layout folder: the file loadFeatures accepts', async (t) => {
  const fiq = join(tmp, 'fiq');
  const json = (file, v) => {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, JSON.stringify(v));
  };
  const cats = { dress: ['d1', 'd2', 'd3'], shirt: ['s1', 's2', 's3'], toptee: ['t1', 't2', 't3'] };
  for (const [cat, ids] of Object.entries(cats)) {
    json(join(fiq, 'image_splits', `split.${cat}.train.json`), ids.slice(0, 2));
    json(join(fiq, 'image_splits', `split.${cat}.val.json`), ids.slice(1));
    json(join(fiq, 'captions', `cap.${cat}.train.json`), [{ target: ids[1], candidate: ids[0], captions: [`is ${cat} red`, 'has long sleeves'] }]);
    json(join(fiq, 'captions', `cap.${cat}.val.json`), [{ target: ids[2], candidate: ids[1], captions: ['is blue', 'shorter'] }]);
    for (const id of ids) await img(join(fiq, 'images', `${id}.jpg`), 30, 40);
  }
  const out = join(tmp, 'fiq.safetensors');
  const r = cli('features', '--clip', clipDir, '--dataset', 'fashioniq', '--data', fiq, '--out', out, '--batch-size', '4', '--json');
  t.is(r.code, 0, r.err);
  const ev = events(r.out);
  const done = ev.find((e) => e.event === 'done');
  t.truthy(done, r.out);
  t.is(done.images, 9);
  t.deepEqual(done.texts, { train: 3, val: 3 });
  const ds = loadDataset(fiq);
  const f = loadFeatures(out, ds);
  t.is(f.dim, ARCH.embedDim);
  const clip = Clip.load(clipDir);
  const want = await clip.embedTexts(ds.queries('val').map((q) => q.text), { truncate: true });
  t.true(relErr(f.queryVector('val', 1), want.subarray(ARCH.embedDim, 2 * ARCH.embedDim)) < 1e-5);
});

test.serial('dwc-native train --clip: features computed, cached, trained on for one epoch with recall reported; reused next time', async (t) => {
  const args = ['train', '--dataset', 'generic', '--data', genDir, '--clip', clipDir, '--epochs', '1', '--batch-size', '4', '--no-report', '--json'];
  const r = cli(...args, '--out', join(tmp, 'run1'));
  t.is(r.code, 0, r.err);
  const ev = events(r.out);
  const done = ev.find((e) => e.event === 'done');
  t.truthy(done, r.out);
  // no val split: the per-epoch evaluation is on test
  t.is(done.split, 'test');
  const rec = Object.values(done.best.recall);
  t.is(rec.length, 3, JSON.stringify(done.best));
  t.true(rec.every((v) => Number.isFinite(v) && v >= 0 && v <= 100), JSON.stringify(done.best));
  t.true(ev.some((e) => e.event === 'eval'), 'an evaluation ran');
  const cached = readdirSync(cache).filter((f) => f.startsWith('clip-features-'));
  t.is(cached.length, 1, cached.join(','));
  const cfg = JSON.parse((await import('node:fs')).readFileSync(join(tmp, 'run1', 'config.json'), 'utf8'));
  t.is(cfg.dims.Dc, ARCH.embedDim, 'global stream Dc = CLIP embed dim');
  // the second run reuses the cache
  const r2 = cli(...args.filter((a) => a !== '--json'), '--out', join(tmp, 'run2'));
  t.is(r2.code, 0, r2.err);
  t.regex(r2.err, /CLIP features: reusing/);
});

test.serial('train --features with the file `features` wrote (the same path train --clip takes)', (t) => {
  const f = join(tmp, 'gen.safetensors');
  const r = cli('train', '--dataset', 'generic', '--data', genDir, '--features', f, '--feature-dim', String(ARCH.embedDim), '--epochs', '1', '--batch-size', '4', '--no-report', '--json', '--out', join(tmp, 'run-f'));
  t.is(r.code, 0, r.err);
  t.truthy(events(r.out).find((e) => e.event === 'done'));
  const r2 = cli('train', '--dataset', 'generic', '--data', genDir, '--features', f, '--epochs', '1', '--batch-size', '4', '--no-report', '--out', join(tmp, 'run-g'));
  t.not(r2.code, 0);
  t.regex(r2.err, /holds 32-dim vectors but the global stream's Dc is 128; pass --feature-dim 32/);
});

test.serial('info --clip prints the architecture read from the shapes', (t) => {
  const r = cli('info', '--clip', clipDir);
  t.is(r.code, 0, r.err);
  t.regex(r.out, /image tower: ViT, width 64, 2 layers, 1 heads, patch 8, grid 4×4, resolution 32/);
  t.regex(r.out, new RegExp(`vocabulary ${ARCH.vocabSize}`));
  const j = JSON.parse(cli('info', '--clip', clipDir, '--json').out);
  t.is(j.clip.embedDim, ARCH.embedDim);
  t.is(j.clip.contextLength, 24);
});

test.serial('errors name the problem: missing weights, missing vocabulary, wrong dataset kind, --clip with --features, a vocabulary too big', async (t) => {
  const fails = (r, re) => {
    t.not(r.code, 0, r.err);
    t.regex(r.err, re);
    t.notRegex(r.err, /\n\s+at .+:\d+:\d+/, 'no stack trace');
  };
  const out = join(tmp, 'err.safetensors');
  fails(cli('features', '--clip', join(tmp, 'nope'), '--data', genDir, '--out', out), /CLIP weights: '.*nope' does not exist/);
  const empty = join(tmp, 'empty-clip');
  mkdirSync(empty, { recursive: true });
  fails(cli('features', '--clip', empty, '--data', genDir, '--out', out), /holds neither model.safetensors nor open_clip_model.safetensors/);
  const novocab = join(tmp, 'novocab');
  writeRandomClip(novocab, { ...TINY_CLIP_ARCH, vocabSize: 600 });
  fails(cli('features', '--clip', novocab, '--data', genDir, '--out', out), /has neither vocab.json \+ merges.txt nor a bpe_simple_vocab/);
  fails(cli('features', '--clip', clipDir, '--dataset', 'fashioniq', '--data', genDir, '--out', out), /FashionIQ/);
  fails(cli('features', '--clip', clipDir, '--dataset', 'imagenet', '--data', genDir, '--out', out), /--dataset must be one of/);
  fails(cli('train', '--dataset', 'generic', '--data', genDir, '--clip', clipDir, '--features', out, '--out', join(tmp, 'run3')), /'clip' and 'features' exclude each other/);
  // the byte-level CLIP (514 rows) cannot take the test vocabulary (514 + merges ids)
  const small = writeRandomClip(join(tmp, 'small-clip'));
  const ds = loadDataset(genDir);
  await t.throwsAsync(computeClipFeatures({ clip: small, dataset: ds, out, tokenizer: ClipTokenizer.fromDir(clipDir) }), { message: /tokenizer's vocabulary has \d+ ids but the weights' token embedding has 514 rows/ });
  // one writer per partial folder: a live owner's lock is refused, a dead owner's taken over
  const locked = join(tmp, 'locked.safetensors');
  mkdirSync(`${locked}.partial`, { recursive: true });
  writeFileSync(join(`${locked}.partial`, 'lock'), String(process.ppid));
  await t.throwsAsync(computeClipFeatures({ clip: clipDir, dataset: ds, out: locked }), { message: /another process \(pid \d+\) is computing/ });
  writeFileSync(join(`${locked}.partial`, 'lock'), '4194303');
  t.false((await computeClipFeatures({ clip: clipDir, dataset: ds, out: locked })).interrupted);
  t.true(existsSync(locked));
  // a text over the context with truncation off fails before any image is decoded
  await t.throwsAsync(computeClipFeatures({ clip: clipDir, dataset: ds, out, truncate: false }), { message: /more than the context length 24/ });
  t.false(existsSync(out));
});

test('examples/clip.mjs runs: images from paths and texts to embeddings', (t) => {
  const r = spawnSync(process.execPath, [join(root, 'examples/clip.mjs')], { encoding: 'utf8', timeout: 120_000 });
  t.is(r.status, 0, r.stderr);
  const last = JSON.parse(r.stdout.trim().split('\n').pop());
  t.deepEqual(last.images, [5, 32]);
  t.deepEqual(last.texts, [5, 32]);
  t.true(last.maxDiff < 1e-6, String(last.maxDiff));
  t.regex(r.stdout, /images 5\/5/);
});
