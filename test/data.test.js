// Data layer: tokenizer (§8), image pipeline normalisation and bad inputs, feature files,
// generic format, synthetic generator determinism and noise rate, batcher.
import test from 'ava';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import {
  Vocabulary, tokenize, joinFashionIqCaptions, fashion200kText, CLIP_MEAN, CLIP_STD, loadImageInto, loadImagesInto, DataError,
  generateSynthetic, writePreview, loadGeneric, loadDataset, writeFeatures, loadFeatures, QueryBatcher, Prefetcher,
} from '../lib/data/index.js';

const tmp = (p) => mkdtempSync(join(tmpdir(), `dwc-data-${p}-`));

test('tokenizer: lower-case, drop non-ASCII, delete punctuation, split on whitespace', (t) => {
  t.deepEqual(tokenize('Make it RED, and sleeveless!'), ['make', 'it', 'red', 'and', 'sleeveless']);
  t.deepEqual(tokenize('t-shirt   with "café" print\tdon\'t'), ['tshirt', 'with', 'caf', 'print', 'dont']);
  t.deepEqual(tokenize('日本 ... !!'), []);
  t.deepEqual(tokenize(joinFashionIqCaptions('Is red.', 'has no sleeves')), ['<BOS>', 'is', 'red', '<AND>', 'has', 'no', 'sleeves', '<EOS>']);
  t.is(fashion200kText('blue', 'red', 'red dress'), 'replace blue with red and get red dress');
});

test('vocabulary: reserved ids, first-appearance order, unknown → 0, JSON round trip, batch padding', (t) => {
  const v = Vocabulary.build(['Red dress', 'blue DRESS, short', joinFashionIqCaptions('red', 'long')]);
  t.deepEqual(v.words, ['<UNK>', '<AND>', '<BOS>', '<EOS>', 'red', 'dress', 'blue', 'short', 'long']);
  t.deepEqual(v.encode('<BOS> red zebra <AND> long <EOS>'), [2, 4, 0, 1, 8, 3]);
  const w = Vocabulary.fromJSON(JSON.parse(JSON.stringify(v)));
  t.deepEqual(w.words, v.words);
  const b = v.encodeBatch(['red dress', 'blue', 'short long red dress blue']);
  t.is(b.L, 5);
  t.deepEqual(Array.from(b.lengths), [2, 1, 5]);
  t.deepEqual(Array.from(b.tokens), [4, 5, 0, 0, 0, 6, 0, 0, 0, 0, 7, 8, 4, 5, 6]);
  const c = v.encodeBatch(['short long red dress blue', ''], { maxLength: 3 });
  t.is(c.L, 3);
  t.deepEqual(Array.from(c.lengths), [3, 0]);
  t.true(c.tokens instanceof Int32Array);
  const e = t.throws(() => Vocabulary.fromJSON({ format: 'dwc-vocab', words: ['a'] }));
  t.is(e.code, 'DWC_DATA_FORMAT');
  t.throws(() => v.encodeBatch(['a'], { maxLength: 0 }), { message: /'maxLength'/ });
});

test('image pipeline: a solid colour gives exactly (v/255 - mean)/std per channel, planar, at the offset', async (t) => {
  const dir = tmp('solid');
  const f = join(dir, 'solid.png');
  const rgb = [200, 100, 50];
  await sharp({ create: { width: 50, height: 40, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).png().toFile(f);
  const S = 32;
  const out = new Float32Array(7 + 3 * S * S + 5).fill(99);
  await loadImageInto(f, out, 7, { size: S });
  t.is(out[6], 99);
  t.is(out[7 + 3 * S * S], 99);
  for (let c = 0; c < 3; c++) {
    const want = Math.fround((rgb[c] / 255 - CLIP_MEAN[c]) / CLIP_STD[c]);
    for (let i = 0; i < S * S; i++) if (out[7 + c * S * S + i] !== want) return t.fail(`channel ${c} pixel ${i}: ${out[7 + c * S * S + i]} != ${want}`);
  }
  t.pass();
  rmSync(dir, { recursive: true });
});

test('image pipeline: shorter side + centre crop, horizontal flip, grey and JPEG input', async (t) => {
  const dir = tmp('crop');
  // 60x20: left third red, middle green, right third blue. Shorter side → 16, centre crop keeps green.
  const w = 60, h = 20;
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw[3 * (y * w + x) + Math.floor(x / 20)] = 255;
  const f = join(dir, 'bands.png');
  await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toFile(f);
  const S = 16;
  const out = new Float32Array(3 * S * S);
  await loadImageInto(f, out, 0, { size: S, mean: [0, 0, 0], std: [1, 1, 1] });
  t.is(out[S * S + (S / 2) * S + S / 2], 1, 'centre is green');
  t.is(out[(S / 2) * S + S / 2], 0, 'no red in the centre crop');
  // Left half red, right half blue (square): flip swaps them.
  const sq = Buffer.alloc(16 * 16 * 3);
  for (let y = 0; y < 16; y++) for (let x = 0; x < 16; x++) sq[3 * (y * 16 + x) + (x < 8 ? 0 : 2)] = 255;
  const g = join(dir, 'halves.png');
  await sharp(sq, { raw: { width: 16, height: 16, channels: 3 } }).png().toFile(g);
  await loadImageInto(g, out, 0, { size: 16, flip: true, mean: [0, 0, 0], std: [1, 1, 1] });
  t.is(out[0 * 256 + 0], 0, 'flipped: top-left not red');
  t.is(out[2 * 256 + 0], 1, 'flipped: top-left blue');
  const grey = join(dir, 'grey.jpg');
  await sharp({ create: { width: 30, height: 30, channels: 3, background: '#808080' } }).greyscale().jpeg().toFile(grey);
  await loadImageInto(grey, out, 0, { size: 16, mean: [0, 0, 0], std: [1, 1, 1] });
  t.true(Math.abs(out[0] - out[256]) < 1e-6 && Math.abs(out[0] - out[512]) < 1e-6 && Math.abs(out[0] - 128 / 255) < 0.02);
  rmSync(dir, { recursive: true });
});

test('image pipeline: missing and corrupt files name the file; skipBad skips and counts; bad options name the option', async (t) => {
  const dir = tmp('bad');
  const good = join(dir, 'good.png');
  await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ff0000' } }).png().toFile(good);
  const corrupt = join(dir, 'corrupt.jpg');
  writeFileSync(corrupt, Buffer.from('this is not a jpeg at all, just text'));
  const truncated = join(dir, 'truncated.png');
  writeFileSync(truncated, readFileSync(good).subarray(0, 40));
  const missing = join(dir, 'missing.png');
  const out = new Float32Array(4 * 3 * 8 * 8);
  let e = await t.throwsAsync(loadImageInto(missing, out, 0, { size: 8 }), { instanceOf: DataError });
  t.is(e.code, 'DWC_DATA_MISSING');
  t.true(e.message.includes(missing));
  e = await t.throwsAsync(loadImageInto(corrupt, out, 0, { size: 8 }), { instanceOf: DataError });
  t.is(e.code, 'DWC_DATA_CORRUPT');
  t.true(e.message.includes(corrupt));
  e = await t.throwsAsync(loadImageInto(truncated, out, 0, { size: 8 }), { instanceOf: DataError });
  t.true(e.message.includes(truncated));
  e = await t.throwsAsync(loadImagesInto([good, corrupt], out, 0, { size: 8 }));
  t.true(e.message.includes(corrupt));
  const r = await loadImagesInto([good, corrupt, missing, good], out, 0, { size: 8, skipBad: true });
  t.deepEqual(r.ok, [true, false, false, true]);
  t.is(r.skipped, 2);
  t.true(r.errors.some((x) => x.subject === corrupt) && r.errors.some((x) => x.subject === missing));
  t.true(out[0] !== 0 && out[3 * 64] === 0);
  e = await t.throwsAsync(loadImagesInto([good], new Float32Array(10), 0, { size: 8 }));
  t.true(e.message.includes("'out'"));
  e = await t.throwsAsync(loadImageInto(good, out, 0, { size: 8, std: [1, 0, 1] }));
  t.true(e.message.includes("'std'"));
  rmSync(dir, { recursive: true });
});

test('synthetic generator: same seed → byte-identical files; another seed differs; exact noise rate; test never noisy', async (t) => {
  const a = tmp('synA');
  const b = tmp('synB');
  const c = tmp('synC');
  const opts = { train: 40, test: 12, size: 32, noise: 0.25, textDominant: 0.5, seed: 7 };
  const sa = await generateSynthetic({ ...opts, out: a });
  await generateSynthetic({ ...opts, out: b, concurrency: 1 });
  await generateSynthetic({ ...opts, out: c, seed: 8 });
  t.deepEqual(readFileSync(join(a, 'dataset.json')), readFileSync(join(b, 'dataset.json')));
  const files = readdirSync(join(a, 'images')).sort();
  t.is(files.length, sa.images);
  t.deepEqual(readdirSync(join(b, 'images')).sort(), files);
  for (const f of files) if (!readFileSync(join(a, 'images', f)).equals(readFileSync(join(b, 'images', f)))) return t.fail(`${f} differs`);
  t.notDeepEqual(readFileSync(join(a, 'dataset.json')), readFileSync(join(c, 'dataset.json')));
  const meta = await sharp(join(a, 'images', files[0])).metadata();
  t.is(meta.width, 32);
  t.is(meta.format, 'png');
  const doc = JSON.parse(readFileSync(join(a, 'dataset.json'), 'utf8'));
  const train = doc.queries.filter((q) => q.split === 'train');
  const test = doc.queries.filter((q) => q.split === 'test');
  t.is(train.length, 40);
  t.is(test.length, 12);
  t.is(train.filter((q) => q.noisy).length, 10);
  t.true(test.every((q) => !q.noisy));
  t.true(doc.queries.some((q) => q.dominance === 'text') && doc.queries.some((q) => q.dominance === 'image'));
  t.true(new Set(doc.queries.map((q) => q.op)).size >= 4);
  // Gallery = every test image; hits by scene; reference and target scenes differ.
  const ds = loadGeneric(a);
  t.is(ds.hit, 'scene');
  t.deepEqual(ds.gallery('test'), doc.images.filter((im) => im.split === 'test').map((im) => im.id));
  for (const q of ds.queries('test')) t.not(ds.hitKey(q.source), ds.hitKey(q.target));
  const [ev] = ds.evaluations();
  t.deepEqual(ev.ks, [1, 5, 10]);
  t.is(ev.queries.length, 12);
  // Rerunning into the same folder replaces it (still identical).
  await generateSynthetic({ ...opts, out: a });
  t.deepEqual(readFileSync(join(a, 'dataset.json')), readFileSync(join(b, 'dataset.json')));
  await writePreview(a, join(a, 'sheet.png'), { rows: 4 });
  t.is((await sharp(join(a, 'sheet.png')).metadata()).format, 'png');
  // Noise 0 → no noisy query; bad options name the option.
  const z = await generateSynthetic({ ...opts, out: c, noise: 0 });
  t.is(z.noisy, 0);
  await t.throwsAsync(generateSynthetic({ ...opts, out: tmp('synD'), noise: 1.5 }), { message: /'noise'/ });
  await t.throwsAsync(generateSynthetic({ ...opts, out: tmp('synE'), size: 3 }), { message: /'size'/ });
  for (const d of [a, b, c]) rmSync(d, { recursive: true });
});

test('synthetic generator: captions (full scene, several phrasings), val split after train/test leaves them byte-identical', async (t) => {
  const a = tmp('synV');
  const b = tmp('synN');
  const opts = { train: 30, test: 10, size: 32, noise: 0.2, seed: 11 };
  const sa = await generateSynthetic({ ...opts, out: a, val: 9 });
  const sb = await generateSynthetic({ ...opts, out: b, val: 0 });
  t.deepEqual(sa.queries, { train: 30, test: 10, val: 9 });
  t.is(sb.queries.val, 0);
  const da = JSON.parse(readFileSync(join(a, 'dataset.json'), 'utf8'));
  const db = JSON.parse(readFileSync(join(b, 'dataset.json'), 'utf8'));
  // train/test entries and image files are the same with and without val
  const notVal = (xs) => xs.filter((x) => x.split !== 'val');
  t.deepEqual(notVal(da.images), db.images);
  t.deepEqual(notVal(da.queries), db.queries);
  for (const im of db.images) if (!readFileSync(join(a, im.file)).equals(readFileSync(join(b, im.file)))) return t.fail(`${im.file} differs`);
  t.deepEqual(da.galleries.test, db.galleries.test);
  t.is(db.valSplit, undefined);
  t.false('val' in db.galleries);
  // val: its own images, never noisy, its own gallery; the loader exposes it as the validation split
  const val = da.queries.filter((q) => q.split === 'val');
  t.is(val.length, 9);
  t.true(val.every((q) => !q.noisy && q.source.startsWith('val-') && q.target.startsWith('val-')));
  const ds = loadGeneric(a);
  t.is(ds.valSplit, 'val');
  t.is(loadGeneric(b).valSplit, undefined);
  t.deepEqual(ds.gallery('val'), da.images.filter((im) => im.split === 'val').map((im) => im.id));
  t.is(ds.evaluations('val')[0].queries.length, 9);
  // every image has a caption naming each object fully; phrasings vary; equal scenes can be phrased differently
  t.true(da.images.every((im) => typeof im.caption === 'string' && im.caption.length > 0));
  t.is(ds.captions().length, da.images.length);
  t.is(ds.captions('val').length, da.images.filter((im) => im.split === 'val').length);
  const words = ['small', 'medium', 'large'];
  for (const im of da.images) {
    const n = words.reduce((k, w) => k + im.caption.split(/\W+/).filter((x) => x === w).length, 0);
    t.true(n >= 1 && n <= 5, `${im.caption}: one size word per object`);
  }
  t.true(new Set(da.images.map((im) => im.caption.split(' ').slice(0, 2).join(' '))).size >= 3, 'several phrasings');
  t.false(ds.trainTexts().some((x) => da.images.some((im) => im.caption === x)), 'captions stay out of the vocabulary source');
  await t.throwsAsync(generateSynthetic({ ...opts, out: tmp('synW'), val: -1 }), { message: /'val'/ });
  for (const d of [a, b]) rmSync(d, { recursive: true });
});

test('generic format: JSONL variant, missing folder, unknown ids, non-dataset --out refused', async (t) => {
  const dir = tmp('jsonl');
  await sharp({ create: { width: 8, height: 8, channels: 3, background: '#00ff00' } }).png().toFile(join(dir, 'a.png'));
  const lines = [
    { type: 'meta', name: 'mine', hit: 'id', evalSplit: 'val' },
    { type: 'image', id: 'a', file: 'a.png', split: 'val' },
    { type: 'image', id: 'b', file: 'a.png', split: 'val' },
    { type: 'query', source: 'a', target: 'b', text: 'greener', split: 'val', label: 3 },
  ];
  writeFileSync(join(dir, 'dataset.jsonl'), lines.map((l) => JSON.stringify(l)).join('\n'));
  const ds = loadDataset(dir);
  t.is(ds.format, 'generic');
  t.is(ds.name, 'mine');
  t.deepEqual(ds.gallery('val'), ['a', 'b']);
  t.is(ds.evaluations()[0].queries.length, 1);
  lines.push({ type: 'query', source: 'a', target: 'zzz', text: 'x', split: 'val' });
  writeFileSync(join(dir, 'dataset.jsonl'), lines.map((l) => JSON.stringify(l)).join('\n'));
  let e = t.throws(() => loadGeneric(dir), { instanceOf: DataError });
  t.is(e.code, 'DWC_DATA_MISSING_ID');
  t.true(e.message.includes("'zzz'"));
  e = t.throws(() => loadDataset(join(dir, 'nope')), { instanceOf: DataError });
  t.is(e.code, 'DWC_DATA_MISSING');
  t.true(e.message.includes(join(dir, 'nope')));
  e = t.throws(() => loadDataset(tmp('empty')), { instanceOf: DataError });
  t.is(e.code, 'DWC_DATA_FORMAT');
  await t.throwsAsync(generateSynthetic({ out: dir, train: 2, test: 2 }), { message: /'out'/ });
  rmSync(dir, { recursive: true });
});

test('features: image and query rows by id/index, validation names the missing id', async (t) => {
  const dir = tmp('feat');
  await generateSynthetic({ out: dir, train: 6, test: 4, size: 32, seed: 3 });
  const ds = loadGeneric(dir);
  const D = 4;
  const ids = ds.images.map((im) => im.id);
  const image = new Float32Array(ids.length * D).map((_, i) => i);
  const nTest = ds.queries('test').length;
  const qt = new Float32Array(nTest * D).map((_, i) => -i);
  const file = join(dir, 'feat.safetensors');
  writeFeatures(file, { dim: D, imageIds: ids, image, queryText: { test: qt } });
  const fs = loadFeatures(file, ds, ['test']);
  t.is(fs.dim, D);
  t.deepEqual(Array.from(fs.imageVector(ids[2])), [8, 9, 10, 11]);
  t.deepEqual(Array.from(fs.queryVector('test', 1)), [-4, -5, -6, -7]);
  // A file lacking one id the dataset uses fails naming it.
  const gone = ds.queries('test')[0].target;
  const keep = ids.filter((id) => id !== gone);
  writeFeatures(file, { dim: D, imageIds: keep, image: new Float32Array(keep.length * D), queryText: { test: qt } });
  let e = t.throws(() => loadFeatures(file, ds, ['test']), { instanceOf: DataError });
  t.is(e.code, 'DWC_DATA_MISSING_ID');
  t.true(e.message.includes(`'${gone}'`));
  writeFeatures(file, { dim: D, imageIds: ids, image, queryText: { test: qt.subarray(0, D) } });
  e = t.throws(() => loadFeatures(file, ds, ['test']));
  t.true(e.message.includes("'query_text.test'"));
  e = t.throws(() => loadFeatures(join(dir, 'none.safetensors')));
  t.true(e.message.includes('none.safetensors'));
  rmSync(dir, { recursive: true });
});

test('batcher: shapes, labels, prefetch order, features, skipBad drops and counts queries with bad images', async (t) => {
  const dir = tmp('batch');
  await generateSynthetic({ out: dir, train: 20, test: 4, size: 32, seed: 5, noise: 0 });
  const ds = loadGeneric(dir);
  const vocab = Vocabulary.build(ds.trainTexts());
  const D = 3;
  const ids = ds.images.map((im) => im.id);
  const fpath = join(dir, 'f.safetensors');
  writeFeatures(fpath, { dim: D, imageIds: ids, image: new Float32Array(ids.length * D).map((_, i) => i), queryText: { train: new Float32Array(20 * D).map((_, i) => i) } });
  const features = loadFeatures(fpath, ds, ['train']);
  const b = new QueryBatcher({ dataset: ds, vocab, batchSize: 6, imageSize: 32, seed: 1, features });
  t.is(b.numBatches, 3);
  const seen = [];
  for await (const batch of b) {
    t.is(batch.size, 6);
    t.is(batch.reference.length, 6 * 3 * 32 * 32);
    t.is(batch.tokens.length, 6 * batch.L);
    t.is(batch.labels.length, 6);
    const q0 = batch.queryIndex[0];
    t.deepEqual(Array.from(batch.eTxt.subarray(0, D)), [q0 * D, q0 * D + 1, q0 * D + 2]);
    t.deepEqual(Array.from(batch.eImg.subarray(0, D)), Array.from(features.imageVector(batch.queries[0].source)));
    for (let j = 0; j < batch.size; j++) for (let k = 0; k < batch.size; k++)
      t.is(batch.labels[j] === batch.labels[k], ds.hitKey(batch.queries[j].target) === ds.hitKey(batch.queries[k].target));
    seen.push(...batch.queryIndex);
  }
  t.is(new Set(seen).size, 18);
  // Same seed, same order.
  const b2 = new QueryBatcher({ dataset: ds, vocab, batchSize: 6, imageSize: 32, seed: 1, images: false });
  t.deepEqual(Array.from(b2.order), Array.from(b.order));
  // Corrupt one image used by the first batch: error naming it, or skipped with skipBad.
  const victim = ds.image(ds.queries('train')[b.order[0]].source).file;
  writeFileSync(victim, 'garbage');
  const e = await t.throwsAsync(async () => { for await (const _ of new QueryBatcher({ dataset: ds, vocab, batchSize: 6, imageSize: 32, seed: 1 })); });
  t.true(e.message.includes(victim));
  const sb = new QueryBatcher({ dataset: ds, vocab, batchSize: 6, imageSize: 32, seed: 1, skipBad: true });
  let total = 0;
  for await (const batch of sb) total += batch.size;
  t.true(sb.skipped >= 1);
  t.is(total, 18 - sb.skipped);
  t.true(sb.badFiles.has(victim));
  rmSync(dir, { recursive: true });
});

test('prefetcher prepares batch k+1 while k is consumed, in order', async (t) => {
  const log = [];
  const pf = new Prefetcher(4, async (k) => { log.push(`start ${k}`); await new Promise((r) => setTimeout(r, 5)); return k; }, 1);
  const got = [];
  for await (const k of pf) {
    log.push(`use ${k}`);
    got.push(k);
  }
  t.deepEqual(got, [0, 1, 2, 3]);
  t.true(log.indexOf('start 1') < log.indexOf('use 0'), log.join(', '));
  t.true(log.indexOf('start 2') < log.indexOf('use 1'), log.join(', '));
});
