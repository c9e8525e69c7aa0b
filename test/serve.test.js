// Search as a service (issue 16): the LanceDB gallery index (incremental, resumable, checkpoint
// identity, exact and ANN search) and the HTTP API on a real server on 127.0.0.1 (port 0) with a
// tiny trained checkpoint; a bounded loopback load test; the CLI's index and serve commands.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { GalleryIndex, createServer, Searcher, checkpointIdentity } from '../lib/index.js';
import { QueryBatcher } from '../lib/search/query_batcher.js';
import { tinyCheckpoint, tmp } from './helpers/serve_fixture.js';
import { relErr } from './helpers/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let fx;
const fixture = () => (fx ??= (async () => {
  const f = await tinyCheckpoint();
  const searcher = await Searcher.open(f.checkpoint);
  const db = join(f.root, 'db');
  const { index, stats } = await GalleryIndex.build({ db, gallery: f.gallery, checkpoint: f.checkpoint, embed: (x) => searcher.embedImages(x) });
  const app = await createServer({ searcher, index, logger: false, maxUploadBytes: 64 << 10, maxK: 50, batch: { maxBatch: 16, windowMs: 3 } });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${app.server.address().port}`;
  const images = readdirSync(f.gallery).filter((n) => n.endsWith('.png')).sort();
  return { ...f, searcher, db, index, stats, app, url, images };
})());
test.after.always(async () => {
  if (fx) await (await fx).app.close();
});

const post = async (url, body) => {
  const r = await fetch(`${url}/search`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
};
const postForm = async (url, fields) => {
  const fd = new FormData();
  for (const [k, v] of Object.entries(fields)) fd.append(k, ...(Buffer.isBuffer(v) ? [new Blob([v]), 'q.png'] : [v]));
  const r = await fetch(`${url}/search`, { method: 'POST', body: fd });
  return { status: r.status, body: await r.json() };
};
// 1 to 9 tokens: batches mix text lengths (padding is masked, so any lengths share a call)
const TEXTS = ['make it red', 'make the circle blue', 'blue', 'add a large star', 'add a large red star make the circle green', 'make it green'];

test.serial('index build: every gallery image, the model dim and the checkpoint identity are stored', async (t) => {
  const f = await fixture();
  t.is(f.stats.rows, f.images.length);
  t.is(f.stats.added, f.images.length);
  t.is(await f.index.count(), f.images.length);
  t.is(f.index.dim, 32); // [q_G; q_L], D = 16 each
  t.is(f.index.meta.checkpointId, await checkpointIdentity(f.checkpoint));
  const again = await f.index.update({ embed: () => t.fail('nothing changed: no image may be embedded again') });
  t.like(again, { added: 0, changed: 0, removed: 0, unchanged: f.images.length });
});

test.serial('index update: new images added, removed ones dropped, changed ones re-embedded; resumable', async (t) => {
  const f = await fixture();
  const s = f.searcher;
  const g = join(tmp(), 'gallery');
  mkdirSync(g);
  for (const n of f.images.slice(0, 40)) copyFileSync(join(f.gallery, n), join(g, n));
  const db = join(tmp(), 'db');
  // an interrupted first build: the embedder fails on its third batch (its first call learns the dim)
  let calls = 0;
  const failing = (x) => (++calls === 4 ? Promise.reject(new Error('interrupted')) : s.embedImages(x));
  await t.throwsAsync(GalleryIndex.build({ db, gallery: g, checkpoint: f.checkpoint, batchSize: 8, embed: failing }), { message: /interrupted/ });
  const embedded = [];
  const counting = (x) => (embedded.push(...x), s.embedImages(x));
  const { index, stats } = await GalleryIndex.build({ db, gallery: g, checkpoint: f.checkpoint, batchSize: 8, embed: counting });
  t.is(stats.rows, 40);
  t.is(embedded.length, 40 - 16, 'the two committed batches are not embedded again');
  // change one, remove one, add one
  copyFileSync(join(f.gallery, f.images[50]), join(g, f.images[1]));
  rmSync(join(g, f.images[2]));
  copyFileSync(join(f.gallery, f.images[60]), join(g, 'new.png'));
  embedded.length = 0;
  const st = await index.update({ embed: counting });
  t.like(st, { added: 1, changed: 1, removed: 1, rows: 40 });
  t.deepEqual(embedded.map((p) => p.split('/').pop()).sort(), [f.images[1], 'new.png'].sort());
  t.is(await index.lookup(f.images[2]), undefined);
  // the changed image's row holds the new content's embedding: its dot product with it is
  // |t_G|² + |t_L|² = 2 (two unit-norm streams); the old content's is not
  const score = async (file) => {
    const e = await s.embedImages([file]);
    const [hits] = await index.search(e.embeddings, { k: 40 });
    return hits.find((h) => h.path === f.images[1]).score;
  };
  const s50 = await score(join(f.gallery, f.images[50]));
  t.true(Math.abs(s50 - 2) < 1e-4, `${s50}`);
  t.true((await score(join(f.gallery, f.images[1]))) < 2 - 1e-3);
  index.close();
});

test.serial('an index built by another checkpoint is refused', async (t) => {
  const f = await fixture();
  await t.throwsAsync(GalleryIndex.open(f.db, { checkpointId: 'f'.repeat(64) }), { message: /built by another checkpoint/ });
  await t.throwsAsync(GalleryIndex.open(join(tmp(), 'nothing')), { message: /no gallery index at/ });
  const other = await tinyCheckpoint({ train: 48, test: 16 });
  await t.throwsAsync(createServer({ checkpoint: other.checkpoint, db: f.db, logger: false }), { message: /built by another checkpoint/ });
  await t.throwsAsync(GalleryIndex.build({ db: f.db, gallery: f.gallery, checkpoint: other.checkpoint, embed: () => t.fail() }), { message: /built by another checkpoint/ });
});

// 600 tiny image files with clustered synthetic embeddings (the ANN path does not need a model)
async function annGallery() {
  const g = join(tmp(), 'g');
  mkdirSync(g);
  const N = 600;
  const D = 32;
  const vec = new Map();
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const centres = Array.from({ length: 12 }, () => Float32Array.from({ length: D }, rnd));
  const png = await sharp({ create: { width: 2, height: 2, channels: 3, background: '#888' } }).png().toBuffer();
  for (let i = 0; i < N; i++) {
    const name = `img-${String(i).padStart(4, '0')}.png`;
    writeFileSync(join(g, name), png);
    const c = centres[i % 12];
    const v = Float32Array.from({ length: D }, (_, d) => c[d] + 0.3 * rnd());
    const n = Math.hypot(...v);
    vec.set(name, v.map((x) => x / n));
  }
  const embed = async (files) => {
    const out = new Float32Array(files.length * D);
    files.forEach((f, i) => out.set(vec.get(f.split('/').pop()), i * D));
    return { embeddings: out, dim: D };
  };
  const ck = join(tmp(), 'fake.safetensors');
  writeFileSync(ck, 'identity only');
  const queries = new Float32Array(20 * D);
  for (let q = 0; q < 20; q++) queries.set(vec.get(`img-${String(q * 29).padStart(4, '0')}.png`).map((x) => x + 0.05 * rnd()), q * D);
  return { g, D, vec, embed, ck, queries };
}

/** Checks the ANN answers (exact scores, sorted) and returns recall@10 against the exact search. */
async function annRecall(t, index, { D, vec, queries }, o = {}) {
  const ann = await index.search(queries, { k: 10, ...o });
  const exact = await index.search(queries, { k: 10, exact: true });
  let found = 0;
  for (let q = 0; q < 20; q++) {
    const truth = new Set(exact[q].map((h) => h.path));
    found += ann[q].filter((h) => truth.has(h.path)).length;
    t.is(ann[q].length, 10);
    for (const h of ann[q]) {
      const v = vec.get(h.path);
      let s = 0;
      for (let d = 0; d < D; d++) s += v[d] * queries[q * D + d];
      t.true(Math.abs(s - h.score) < 1e-5, 'ANN scores are exact dot products');
    }
    for (let i = 1; i < 10; i++) t.true(ann[q][i - 1].score >= ann[q][i].score);
  }
  return found / 200;
}

const annCases = {
  ivf_flat: { numPartitions: 8, nprobes: 4 },
  ivf_pq: { numPartitions: 8, numSubVectors: 4, nprobes: 4, refineFactor: 5 },
  ivf_hnsw_sq: { numPartitions: 2, nprobes: 2, refineFactor: 10 },
  ivf_hnsw_pq: { numPartitions: 2, numSubVectors: 4, nprobes: 2, refineFactor: 10 },
};
const lanceName = { ivf_flat: 'IvfFlat', ivf_pq: 'IvfPq', ivf_hnsw_sq: 'IvfHnswSq', ivf_hnsw_pq: 'IvfHnswPq' };
for (const [type, ann] of Object.entries(annCases)) test.serial(`ANN (${type}) above the threshold: exact scores, recall@10 against exact search`, async (t) => {
  const a = await annGallery();
  const { index, stats } = await GalleryIndex.build({ db: join(tmp(), 'db'), gallery: a.g, checkpoint: a.ck, embed: a.embed, ann: { type, threshold: 500, ...ann } });
  t.true(stats.ann);
  t.true(await index.usesAnn());
  t.deepEqual((await index.table.listIndices()).map((i) => i.indexType), [lanceName[type]], 'the index of the type asked for');
  const recall = await annRecall(t, index, a);
  t.true(recall >= 0.9, `recall@10 ${recall}`);
  index.close();
});

test.serial('ANN default above the threshold is ivf_flat; a reopened index searches with the settings of the type it holds', async (t) => {
  const a = await annGallery();
  const db = join(tmp(), 'db');
  const { index } = await GalleryIndex.build({ db, gallery: a.g, checkpoint: a.ck, embed: a.embed, ann: { threshold: 500 } });
  t.deepEqual((await index.table.listIndices()).map((i) => i.indexType), ['IvfFlat']);
  const recall = await annRecall(t, index, a);
  t.true(recall >= 0.95, `recall@10 ${recall}`);
  await t.throwsAsync(index.createAnnIndex({ type: 'ivf_bogus' }), { message: /unknown ANN index type 'ivf_bogus' \(one of ivf_hnsw_sq, ivf_hnsw_pq, ivf_pq, ivf_flat\)/ });
  const bogusDb = join(tmp(), 'bogus');
  await t.throwsAsync(GalleryIndex.build({ db: bogusDb, gallery: a.g, checkpoint: a.ck, embed: a.embed, ann: { type: 'hnsw' } }), { message: /unknown ANN index type 'hnsw'/ });
  t.false(existsSync(bogusDb), 'refused before anything is written');
  await t.throwsAsync(GalleryIndex.open(db, { ann: { type: 'IVF_FLAT' } }), { message: /unknown ANN index type 'IVF_FLAT'/ });
  await index.createAnnIndex({ type: 'ivf_pq', numPartitions: 8, numSubVectors: 4 });
  index.close();
  // opened with the defaults (type ivf_flat): the table holds an IVF-PQ index, searched with the
  // quantised indexes' refine step (without it the 4-sub-vector PQ order alone ranks the 10)
  const again = await GalleryIndex.open(db, { ann: { threshold: 500 } });
  t.deepEqual((await again.table.listIndices()).map((i) => i.indexType), ['IvfPq']);
  const r2 = await annRecall(t, again, a);
  const flatSettings = await annRecall(t, again, a, { nprobes: 8, refineFactor: 1 });
  t.log(`recall@10 ${r2} (ivf_flat's settings on this PQ index: ${flatSettings})`);
  t.true(r2 >= 0.9, `recall@10 ${r2}`);
  t.true(flatSettings < r2, 'the refine step matters on PQ: the test tells the two settings apart');
  again.close();
});

test.serial('POST /search (JSON gallery path, JSON base64, multipart) equals the library search', async (t) => {
  const f = await fixture();
  const img = f.images[5];
  const lib = await f.searcher.search({ image: join(f.gallery, img), text: 'make it red', gallery: f.gallery, k: 5 });
  const a = await post(f.url, { image: img, text: 'make it red', k: 5 });
  t.is(a.status, 200, JSON.stringify(a.body));
  t.deepEqual(a.body.results.map((r) => r.path), lib.results.map((r) => r.path.split('/').pop()));
  a.body.results.forEach((r, i) => {
    t.is(r.rank, i + 1);
    t.true(Math.abs(r.score - lib.results[i].score) < 1e-4);
  });
  t.true(Math.abs(a.body.w.global - lib.w.global) < 1e-5);
  t.true(typeof a.body.took_ms === 'number');
  t.false(a.body.results.some((r) => r.path === img), 'the reference image is left out');
  // the same image as uploaded bytes: the same scores (the reference is then a result too)
  const bytes = readFileSync(join(f.gallery, img));
  const b = await post(f.url, { image: bytes.toString('base64'), text: 'make it red', k: 6 });
  const c = await postForm(f.url, { image: bytes, text: 'make it red', k: '6' });
  t.is(b.status, 200);
  t.is(c.status, 200);
  t.deepEqual(b.body.results, c.body.results);
  // (the reference ranks among the 6 or not, depending on the trained model: the first 5 others are a's)
  t.deepEqual(b.body.results.filter((r) => r.path !== img).slice(0, 5).map((r) => r.path), a.body.results.map((r) => r.path));
  const dataUrl = await post(f.url, { image: `data:image/png;base64,${bytes.toString('base64')}`, text: 'make it red', k: 6 });
  t.deepEqual(dataUrl.body.results, b.body.results);
});

test.serial('GET /images/:id serves gallery images; GET /healthz; GET / serves the page', async (t) => {
  const f = await fixture();
  const a = await post(f.url, { image: f.images[0], text: 'make it blue', k: 2 });
  const r = await fetch(f.url + a.body.results[0].url);
  t.is(r.status, 200);
  t.is(r.headers.get('content-type'), 'image/png');
  t.deepEqual(Buffer.from(await r.arrayBuffer()), readFileSync(join(f.gallery, a.body.results[0].path)));
  const nf = await fetch(`${f.url}/images/0123456789abcdef`);
  t.is(nf.status, 404);
  t.regex((await nf.json()).error.message, /no gallery image with id/);
  t.is((await fetch(`${f.url}/images/..%2F..%2Fetc%2Fpasswd`)).status, 404);
  const h = await (await fetch(`${f.url}/healthz`)).json();
  t.like(h, { status: 'ok', images: f.images.length, dim: 32, ann: false });
  const page = await fetch(`${f.url}/`);
  t.is(page.status, 200);
  t.regex(page.headers.get('content-type'), /text\/html/);
  t.regex(await page.text(), /<label for="text">/);
  t.is((await fetch(`${f.url}/app.js`)).status, 200);
});

test.serial('bad input gets a 4xx JSON error naming the problem, and the server keeps serving', async (t) => {
  const f = await fixture();
  const img = f.images[3];
  const big = await sharp({ create: { width: 400, height: 400, channels: 3, background: '#123' } }).png({ compressionLevel: 0 }).toBuffer();
  t.true(big.length > 64 << 10);
  const cases = [
    [() => post(f.url, { text: 'make it red' }), 400, 'NO_IMAGE', /no query image/],
    [() => postForm(f.url, { text: 'make it red', k: '3' }), 400, 'NO_IMAGE', /no query image/],
    [() => post(f.url, { image: Buffer.from('not an image at all').toString('base64'), text: 'make it red' }), 400, 'BAD_IMAGE', /unreadable/],
    [() => postForm(f.url, { image: Buffer.from('garbage bytes'), text: 'make it red' }), 400, 'BAD_IMAGE', /unreadable/],
    [() => post(f.url, { image: 'no-such-image.png', text: 'make it red' }), 400, 'BAD_IMAGE', /neither a gallery path/],
    [() => post(f.url, { image: img, text: '   ' }), 400, 'EMPTY_TEXT', /'text' is empty/],
    [() => post(f.url, { image: img }), 400, 'EMPTY_TEXT', /'text' is empty/],
    [() => post(f.url, { image: img, text: 'zorgle blimp' }), 400, 'DWC_BAD_ARGUMENT', /no word the model knows/],
    [() => post(f.url, { image: img, text: 'make it red', k: 0 }), 400, 'BAD_K', /'k' must be an integer in \[1, 50\]/],
    [() => post(f.url, { image: img, text: 'make it red', k: 51 }), 400, 'BAD_K', /'k'/],
    [() => postForm(f.url, { image: img, text: 'make it red', k: 'ten' }), 400, 'BAD_K', /'k'/],
    [() => post(f.url, { image: 12, text: 'make it red' }), 400, 'BAD_IMAGE', /'image' must be a string/],
    [() => post(f.url, [1, 2]), 400, 'BAD_BODY', /JSON object/],
    [() => postForm(f.url, { image: big, text: 'make it red' }), 413, 'TOO_LARGE', /upload too large.*65536/],
    [() => post(f.url, { image: big.toString('base64'), text: 'make it red' }), 413, 'TOO_LARGE', /upload too large/],
    [async () => { const r = await fetch(`${f.url}/search`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"image": ' }); return { status: r.status, body: await r.json() }; }, 400, undefined, /JSON/i],
    [async () => { const r = await fetch(`${f.url}/index`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"rescan": true}' }); return { status: r.status, body: await r.json() }; }, 403, 'ADMIN_OFF', /--admin/],
  ];
  for (const [call, status, code, re] of cases) {
    const r = await call();
    t.is(r.status, status, JSON.stringify(r.body));
    if (code) t.is(r.body.error.code, code, r.body.error.message);
    t.regex(r.body.error.message, re);
  }
  const ok = await post(f.url, { image: img, text: 'make it red', k: 3 });
  t.is(ok.status, 200, 'still serving');
  t.is(ok.body.results.length, 3);
});

test.serial('whole model: a batch of queries with texts of different lengths embeds each as it is embedded alone', async (t) => {
  const f = await fixture();
  const s = f.searcher;
  t.true(s.batchIndependent, 'the checkpoint masks padding (the default)');
  const pairs = TEXTS.map((text, i) => ({ image: join(f.gallery, f.images[(i * 5) % f.images.length]), text }));
  const lens = pairs.map((p) => s.textLength(p.text));
  t.true(new Set(lens).size >= 4, `text lengths ${lens}`);
  const batch = await s.embedQueries(pairs);
  const D = batch.dim;
  for (let i = 0; i < pairs.length; i++) {
    const alone = await s.embedQueries([pairs[i]]);
    const err = relErr(batch.embeddings.slice(i * D, (i + 1) * D), alone.embeddings);
    t.true(err <= 1e-6, `query ${i} (${lens[i]} tokens, batch padded to ${Math.max(...lens)}): relative error ${err.toExponential(3)}`);
    for (const k of ['wGlobal', 'wLocal']) t.true(Math.abs(batch[k][i] - alone[k][0]) <= 1e-6, `${k} of query ${i}: ${batch[k][i]} vs ${alone[k][0]}`);
  }
});

test.serial('200 concurrent queries: none lost, every answer equal to the one-at-a-time answer, batched', async (t) => {
  const f = await fixture();
  const queries = Array.from({ length: 200 }, (_, i) => ({ image: f.images[(i * 7) % f.images.length], text: TEXTS[i % TEXTS.length], k: 5 }));
  const distinct = new Map();
  for (const q of queries) {
    const key = `${q.image}|${q.text}`;
    if (!distinct.has(key)) distinct.set(key, (await post(f.url, q)).body); // one at a time
  }
  const before = { ...(await (await fetch(`${f.url}/healthz`)).json()).batches };
  const t0 = performance.now();
  const answers = await Promise.all(queries.map((q) => post(f.url, q)));
  const sec = (performance.now() - t0) / 1000;
  t.true(sec < 60, `${sec} s`);
  const after = (await (await fetch(`${f.url}/healthz`)).json()).batches;
  t.is(answers.length, 200);
  answers.forEach((a, i) => {
    t.is(a.status, 200, JSON.stringify(a.body));
    const ref = distinct.get(`${queries[i].image}|${queries[i].text}`);
    t.deepEqual(a.body.results.map((r) => r.path), ref.results.map((r) => r.path));
    a.body.results.forEach((r, j) => t.true(Math.abs(r.score - ref.results[j].score) < 1e-5, `score ${r.score} vs ${ref.results[j].score}`));
    t.true(Math.abs(a.body.w.global - ref.w.global) < 1e-6 && Math.abs(a.body.w.local - ref.w.local) < 1e-6);
  });
  t.is(after.queries - before.queries, 200);
  t.true(after.batches - before.batches < 200, `${after.batches - before.batches} native calls for 200 queries`);
  t.true(after.largestBatch > 1);
  t.log(`200 concurrent queries in ${sec.toFixed(2)} s (${(200 / sec).toFixed(0)}/s), ${after.batches - before.batches} native embed calls`);
});

test.serial('QueryBatcher: at most maxBatch per call, a window, one call at a time, failures reach their callers', async (t) => {
  const calls = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const b = new QueryBatcher(async (batch) => {
    calls.push(batch.length);
    maxInFlight = Math.max(maxInFlight, ++inFlight);
    await new Promise((r) => setTimeout(r, 5));
    inFlight--;
    if (batch.some((q) => q.text === 'boom')) throw new Error('native failure');
    const D = 2;
    return { embeddings: Float32Array.from(batch.flatMap((q) => [q.rgb[0], q.text.length])), dim: D, wGlobal: Float32Array.from(batch, () => 0.25) };
  }, { maxBatch: 4, windowMs: 2 });
  const rs = await Promise.all(Array.from({ length: 10 }, (_, i) => b.submit({ rgb: Uint8Array.of(i), text: 'x'.repeat(i + 1) })));
  // grouped: texts of different keys never share a call
  const seen = [];
  const g = new QueryBatcher(async (batch) => (seen.push(batch.map((q) => q.text.length)), { embeddings: new Float32Array(batch.length), dim: 1 }), { maxBatch: 8, windowMs: 2, groupKey: (q) => q.text.length % 2 });
  await Promise.all(Array.from({ length: 12 }, (_, i) => g.submit({ rgb: Uint8Array.of(i), text: 'y'.repeat(i + 1) })));
  t.true(seen.every((c) => c.every((n) => n % 2 === c[0] % 2)), JSON.stringify(seen));
  t.is(seen.flat().length, 12);
  rs.forEach((r, i) => t.deepEqual(Array.from(r.embedding), [i, i + 1]));
  t.is(rs[0].w.global, 0.25);
  t.true(calls.every((n) => n <= 4));
  t.is(calls.reduce((a, c) => a + c, 0), 10);
  t.is(maxInFlight, 1);
  await t.throwsAsync(b.submit({ rgb: Uint8Array.of(1), text: 'boom' }), { message: /native failure/ });
  await b.close();
  await t.throwsAsync(b.submit({ rgb: Uint8Array.of(1), text: 'x' }), { message: /closed/ });
  t.throws(() => new QueryBatcher(async () => ({}), { maxBatch: 0 }), { message: /maxBatch/ });
});

test.serial('POST /index (admin) adds an uploaded image, searchable at once', async (t) => {
  const f = await fixture();
  const g = join(tmp(), 'gallery');
  mkdirSync(g);
  for (const n of f.images.slice(0, 20)) copyFileSync(join(f.gallery, n), join(g, n));
  const db = join(tmp(), 'db');
  const { index } = await GalleryIndex.build({ db, gallery: g, checkpoint: f.checkpoint, embed: (x) => f.searcher.embedImages(x) });
  index.close();
  const app = await createServer({ checkpoint: f.checkpoint, db, admin: true, logger: false });
  try {
    await app.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${app.server.address().port}`;
    const fd = new FormData();
    const bytes = readFileSync(join(f.gallery, f.images[100]));
    fd.append('image', new Blob([bytes]), 'extra.png');
    const r = await fetch(`${url}/index`, { method: 'POST', body: fd });
    const body = await r.json();
    t.is(r.status, 200, JSON.stringify(body));
    t.is(body.images, 21);
    t.regex(body.added[0], /^uploads\/[0-9a-f]{16}\.png$/);
    const s = await post(url, { image: body.added[0], text: 'make it red', k: 20 });
    t.is(s.status, 200, JSON.stringify(s.body));
    const bad = new FormData();
    bad.append('image', new Blob([Buffer.from('nope')]), 'bad.png');
    const rb = await fetch(`${url}/index`, { method: 'POST', body: bad });
    t.is(rb.status, 400);
    t.regex((await rb.json()).error.message, /bad\.png/);
    const rescan = await fetch(`${url}/index`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"rescan": true}' });
    t.like(await rescan.json(), { added: 0, removed: 0, rows: 21 });
  } finally {
    await app.close();
  }
});

test.serial('CLI: index (--json, incremental) and serve (listens, answers, stops on SIGTERM)', async (t) => {
  const f = await fixture();
  const db = join(tmp(), 'db');
  const cli = (...a) => spawnSync(process.execPath, [join(root, 'lib/cli/main.js'), ...a], { encoding: 'utf8', timeout: 120_000 });
  const r = cli('index', '--checkpoint', f.checkpoint, '--gallery', f.gallery, '--db', db, '--json');
  t.is(r.status, 0, r.stderr);
  const ev = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).find((e) => e.event === 'index');
  t.like(ev, { rows: f.images.length, added: f.images.length, ann: false });
  const r2 = cli('index', '--checkpoint', f.checkpoint, '--gallery', f.gallery, '--db', db);
  t.is(r2.status, 0, r2.stderr);
  t.regex(r2.stdout, new RegExp(`${f.images.length} images \\(0 added, 0 re-embedded, 0 removed, ${f.images.length} unchanged\\)`));
  const bad = cli('index', '--checkpoint', f.checkpoint, '--gallery', join(f.root, 'none'), '--db', join(tmp(), 'db2'));
  t.not(bad.status, 0);
  t.regex(bad.stderr, /gallery folder .*none does not exist/);
  const db3 = join(tmp(), 'db3');
  const badAnn = cli('index', '--checkpoint', f.checkpoint, '--gallery', f.gallery, '--db', db3, '--ann', 'hnsw');
  t.not(badAnn.status, 0);
  t.regex(badAnn.stderr, /'--ann' must be one of .*ivf_flat.*got 'hnsw'/);
  t.false(existsSync(db3), 'a refused --ann writes nothing');
  t.regex(cli('serve', '--help').stdout, /--admin[\s\S]*--log-level/);

  const p = spawn(process.execPath, [join(root, 'lib/cli/main.js'), 'serve', '--checkpoint', f.checkpoint, '--db', db, '--port', '0', '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const url = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`no listen line: ${out}`)), 60_000);
    p.stdout.on('data', (d) => {
      out += d;
      const m = /"msg":"Server listening at (http:\/\/127\.0\.0\.1:\d+)"/.exec(out);
      if (m) clearTimeout(timer), res(m[1]);
    });
    p.on('exit', (c) => rej(new Error(`serve exited ${c}: ${out}`)));
  });
  const s = await post(url, { image: f.images[0], text: 'make it red', k: 3 });
  t.is(s.status, 200);
  const code = await new Promise((res) => {
    p.removeAllListeners('exit');
    p.on('exit', (c) => res(c));
    p.kill('SIGTERM');
  });
  t.is(code, 0);
  const logs = out.trim().split('\n').map((l) => JSON.parse(l));
  t.true(logs.some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM'));
  t.true(logs.some((l) => l.req?.url === '/search'), 'pino request logs');
});
