// search / index / serve on a checkpoint whose global stream reads frozen CLIP features
// (`train --clip DIR`, docs/SERVE.md "Checkpoints trained on CLIP features"): the CLIP recorded in
// the checkpoint (or --clip DIR) computes e_I, e_T, e_tgt for new queries and galleries with the
// preprocessing of training, so search, the gallery index and a serve request score exactly as
// `eval` (which reads the cached feature file). Errors: the recorded CLIP is missing, a CLIP of
// another embed dim, a `--features` checkpoint.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { evaluateCheckpoint, generateSynthetic, createServer, Searcher, train as T, trainStages, writeRandomClip, TINY_CLIP_ARCH } from '../lib/index.js';
import { loadGeneric } from '../lib/data/dataset.js';
import { patchCheckpointConfig } from '../lib/train/checkpoint.js';
import { clipWeightsIdentity } from '../lib/search/clip_inputs.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'dwc-sclip-'));
const main = join(process.cwd(), 'lib/cli/main.js');
const cli = (env, ...a) => spawnSync(process.execPath, [main, ...a], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, ...env } });
const ARCH = { ...TINY_CLIP_ARCH, resolution: 24, grid: 3 };
const dims = { D: 16, C: 16, H: 4, W: 4, E: 16, Dc: 32, imageSize: 32 };

// one run of `train --clip` (1 epoch, tiny random CLIP of embed dim 32), shared by the tests
let fx;
const fixture = () => (fx ??= (async () => {
  const root = tmp();
  const env = { DWC_NATIVE_CACHE: join(root, 'cache') };
  process.env.DWC_NATIVE_CACHE = env.DWC_NATIVE_CACHE; // train and eval in this process use the same cache
  // CLIP's resolution (24) is not the images' (32): its own resize + crop runs, as in training
  const clip = writeRandomClip(join(root, 'clip'), ARCH);
  const s = await generateSynthetic({ out: join(root, 'synth'), train: 64, test: 24, val: 24, size: 32, seed: 5, noise: 0 });
  const cfg = T.resolveConfig(undefined, { dataset: 'generic', data: s.out, out: join(root, 'run'), dims, clip, epochs: 1, batchSize: 16, lr: 1e-3, evalBatchSize: 64, report: false, fusionBeta: 0.5 });
  const r = await T.train({ config: cfg });
  const ev = await evaluateCheckpoint({ checkpoint: r.bestCheckpoint });
  const set = ev.sets[0];
  const ds = await loadGeneric(s.out);
  // the eval gallery as a folder of its own (same files, same names), and the queries on it
  const gallery = join(root, 'gallery');
  mkdirSync(gallery);
  for (const id of set.galleryIds) copyFileSync(ds.image(id).file, join(gallery, basename(ds.image(id).file)));
  const idOfName = new Map(set.galleryIds.map((id) => [basename(ds.image(id).file), id]));
  const queries = set.set.queries.slice(0, 3).map((q, i) => {
    const name = basename(ds.image(q.source).file);
    // the reference image from the gallery folder when it is there: search leaves it out, as eval does
    const image = idOfName.has(name) ? join(gallery, name) : ds.image(q.source).file;
    const K = set.top.k;
    const expect = new Map();
    for (let j = 0; j < K; j++) {
      const g = set.top.indices[i * K + j];
      if (g >= 0) expect.set(basename(ds.image(set.galleryIds[g]).file), set.top.scores[i * K + j]);
    }
    return { image, text: q.text, expect };
  });
  return { root, env, clip, data: s.out, run: r, checkpoint: r.bestCheckpoint, ev, gallery, queries, ds, cache: env.DWC_NATIVE_CACHE };
})());

/** Every score of eval's top list of the query is the score search/serve gives the same image (1e-5). */
function sameScores(t, q, hits, what) {
  const got = new Map(hits.map((h) => [basename(h.path), h.score]));
  t.true(q.expect.size >= 5, 'eval ranked several images');
  let n = 0;
  for (const [name, score] of q.expect) {
    t.true(got.has(name), `${what}: ${name} of eval's top list is ranked`);
    t.true(Math.abs(got.get(name) - score) <= 1e-5, `${what}: ${name} score ${got.get(name)} vs eval ${score}`);
    n++;
  }
  // and the order: eval's top-K are search's first K
  const top = hits.slice(0, q.expect.size).map((h) => basename(h.path));
  t.deepEqual(new Set(top), new Set(q.expect.keys()), `${what}: the same top ${n}`);
}

test.serial('the checkpoint records its CLIP by absolute path; Searcher.open loads it (embed dim = Dc)', async (t) => {
  const f = await fixture();
  const info = T.readCheckpointInfo(f.checkpoint);
  t.is(info.config.clip, f.clip);
  t.true(f.clip.startsWith('/'));
  t.is(info.config.dims.Dc, TINY_CLIP_ARCH.embedDim);
  const s = await Searcher.open(f.checkpoint);
  try {
    t.truthy(s.clip);
    t.is(s.clip.plan.from, 'checkpoint');
    t.is(s.clip.dim, 32);
  } finally {
    s.dispose();
  }
});

test.serial('Searcher.search (library) and `search --json` (CLI) score as eval does, within 1e-5; the gallery cache is used the second time', async (t) => {
  const f = await fixture();
  const s = await Searcher.open(f.checkpoint);
  try {
    for (const q of f.queries) {
      const r = await s.search({ image: q.image, text: q.text, gallery: f.gallery, k: 50 });
      sameScores(t, q, r.results, 'library');
    }
    const again = await s.search({ image: f.queries[0].image, text: f.queries[0].text, gallery: f.gallery, k: 5 });
    t.true(again.gallery.fromCache);
  } finally {
    s.dispose();
  }
  const q = f.queries[1];
  const r = cli(f.env, 'search', '--checkpoint', f.checkpoint, '--gallery', f.gallery, '--image', q.image, '--text', q.text, '-k', '50', '--json');
  t.is(r.status, 0, r.stderr);
  const ev = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).find((e) => e.event === 'search');
  t.true(ev.gallery.fromCache, 'the CLI reads the cache the library wrote (same key: checkpoint + CLIP identity)');
  sameScores(t, q, ev.results, 'CLI');
});

test.serial('the query batcher batches CLIP queries: a batch gives each query the embedding it has alone', async (t) => {
  const f = await fixture();
  const s = await Searcher.open(f.checkpoint);
  try {
    const decoded = await Promise.all(f.queries.map((q) => s.prepareQuery(q.image, q.text)));
    t.truthy(decoded[0].clipPixels, 'CLIP pixels prepared outside the native call');
    const all = await s.embedDecodedQueries(decoded);
    for (let i = 0; i < decoded.length; i++) {
      const one = await s.embedDecodedQueries([decoded[i]]);
      for (let j = 0; j < one.dim; j++) t.true(Math.abs(one.embeddings[j] - all.embeddings[i * all.dim + j]) <= 1e-5, `query ${i} component ${j}`);
    }
    await t.throwsAsync(s.embedDecodedQueries([{ rgb: decoded[0].rgb, text: f.queries[0].text }]), { message: /carries no CLIP pixels.*prepareQuery/ });
  } finally {
    s.dispose();
  }
});

test.serial('`index` (CLI) + a serve request score as eval does; an index is tied to its CLIP', async (t) => {
  const f = await fixture();
  const db = join(f.root, 'db');
  const r = cli(f.env, 'index', '--checkpoint', f.checkpoint, '--gallery', f.gallery, '--db', db, '--json');
  t.is(r.status, 0, r.stderr);
  const done = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).find((e) => e.event === 'index');
  t.is(done.rows, readdirSync(f.gallery).length);
  const app = await createServer({ checkpoint: f.checkpoint, db, logger: false, batch: { maxBatch: 8, windowMs: 5 } });
  try {
    t.is((await app.inject({ method: 'GET', url: '/healthz' })).json().clip, f.clip);
    // concurrent requests: they share native calls (the batcher) and each gets its own scores
    const res = await Promise.all(
      f.queries.map((q) => app.inject({ method: 'POST', url: '/search', payload: { image: readFileSync(q.image).toString('base64'), text: q.text, k: 50 } })),
    );
    res.forEach((x, i) => {
      t.is(x.statusCode, 200, x.body);
      const q = f.queries[i];
      // an uploaded image is not known to be the gallery's: drop its own file from the hits, as eval does
      const hits = x.json().results.filter((h) => join(f.gallery, h.path) !== q.image);
      sameScores(t, q, hits, `serve query ${i}`);
    });
  } finally {
    await app.close();
  }
  // another CLIP of the same dim via --clip: the index was built with the recorded one, so it is refused
  const other = writeRandomClip(join(f.root, 'clip-other'), ARCH, 7);
  t.not(clipWeightsIdentity(join(other, 'model.safetensors')), clipWeightsIdentity(join(f.clip, 'model.safetensors')));
  await t.throwsAsync(createServer({ checkpoint: f.checkpoint, db, clip: other, logger: false }), { message: /built by another checkpoint/ });
  // a copy of the same CLIP elsewhere has the same identity: the index is accepted
  const copy = join(f.root, 'clip-copy');
  mkdirSync(copy);
  for (const n of readdirSync(f.clip)) copyFileSync(join(f.clip, n), join(copy, n));
  const app2 = await createServer({ checkpoint: f.checkpoint, db, clip: copy, logger: false });
  await app2.close();
  t.pass();
});

test.serial('the recorded CLIP folder missing: a clear error naming it and --clip DIR; --clip DIR then works', async (t) => {
  const f = await fixture();
  const ck = join(f.root, 'moved.safetensors');
  copyFileSync(f.checkpoint, ck);
  const gone = join(f.root, 'no-such-clip');
  patchCheckpointConfig(ck, { clip: gone });
  await t.throwsAsync(Searcher.open(ck), { message: new RegExp(`trained on the CLIP features of ${gone}, which does not exist here; pass .*--clip DIR`) });
  const r = cli(f.env, 'search', '--checkpoint', ck, '--gallery', f.gallery, '--image', f.queries[0].image, '--text', f.queries[0].text);
  t.not(r.status, 0);
  t.regex(r.stderr, /no-such-clip, which does not exist here/);
  t.notRegex(r.stderr, /\n\s+at .+:\d+:\d+/, 'no stack trace');
  const s = await Searcher.open(ck, { clip: f.clip });
  try {
    t.is(s.clip.plan.from, 'option');
    const q = f.queries[0];
    sameScores(t, q, (await s.search({ image: q.image, text: q.text, gallery: f.gallery, k: 50 })).results, '--clip override');
  } finally {
    s.dispose();
  }
});

test.serial('a CLIP of another embed dim than the checkpoint\'s Dc is refused, naming both dims', async (t) => {
  const f = await fixture();
  const small = writeRandomClip(join(f.root, 'clip16'), { ...ARCH, embedDim: 16 }, 2);
  await t.throwsAsync(Searcher.open(f.checkpoint, { clip: small }), { message: /embeds into 16 dims but checkpoint .* reads 32-dim features/ });
  const r = cli(f.env, 'index', '--checkpoint', f.checkpoint, '--gallery', f.gallery, '--db', join(f.root, 'db16'), '--clip', small);
  t.not(r.status, 0);
  t.regex(r.stderr, /embeds into 16 dims/);
  t.notRegex(r.stderr, /\n\s+at .+:\d+:\d+/, 'no stack trace');
});

test.serial('a --features checkpoint cannot embed new images: the error says so and what to do; with the CLIP that wrote the file it works', async (t) => {
  const f = await fixture();
  // the feature file of the --clip run (what `dwc-native features --clip` writes) as an external --features file
  const file = join(f.cache, readdirSync(f.cache).find((n) => n.startsWith('clip-features-') && n.endsWith('.safetensors')));
  const features = join(f.root, 'external.safetensors');
  copyFileSync(file, features);
  const cfg = T.resolveConfig(undefined, { dataset: 'generic', data: f.data, out: join(f.root, 'run-features'), dims, features, epochs: 1, batchSize: 16, lr: 1e-3, evalBatchSize: 64, report: false, fusionBeta: 0.5 });
  const r = await T.train({ config: cfg });
  await t.throwsAsync(Searcher.open(r.bestCheckpoint), { message: /trained on frozen features read from the file .*external\.safetensors \(--features\): search, index and serve cannot compute those features for new images and texts\. .*--clip DIR/ });
  const c = cli(f.env, 'serve', '--checkpoint', r.bestCheckpoint, '--db', join(f.root, 'nodb'), '--port', '0');
  t.not(c.status, 0);
  t.regex(c.stderr, /cannot compute those features for new images/);
  t.notRegex(c.stderr, /\n\s+at .+:\d+:\d+/, 'no stack trace');
  // with --clip (the CLIP that wrote the file) search scores as eval of that checkpoint does
  const ev = await evaluateCheckpoint({ checkpoint: r.bestCheckpoint });
  const set = ev.sets[0];
  const q0 = set.set.queries[0];
  const K = set.top.k;
  const expect = new Map();
  for (let j = 0; j < K; j++) expect.set(basename(f.ds.image(set.galleryIds[set.top.indices[j]]).file), set.top.scores[j]);
  const s = await Searcher.open(r.bestCheckpoint, { clip: f.clip });
  try {
    const name = basename(f.ds.image(q0.source).file);
    const image = readdirSync(f.gallery).includes(name) ? join(f.gallery, name) : f.ds.image(q0.source).file;
    sameScores(t, { expect }, (await s.search({ image, text: q0.text, gallery: f.gallery, k: 50 })).results, '--features + --clip');
  } finally {
    s.dispose();
  }
  // a checkpoint without frozen features refuses --clip (nothing would use it)
  const plain = T.resolveConfig(undefined, { dataset: 'generic', data: f.data, out: join(f.root, 'run-plain'), dims: { ...dims, Dc: 16 }, epochs: 1, batchSize: 16, lr: 1e-3, evalBatchSize: 64, report: false, limitTrain: 16 });
  const p = await T.train({ config: plain });
  await t.throwsAsync(Searcher.open(p.lastCheckpoint, { clip: f.clip }), { message: /does not read frozen CLIP features.*leave --clip out/ });
});

test.serial('a staged run (--stages 2,3): search reads OUT/stage2 as its CLIP and scores as eval does', async (t) => {
  const f = await fixture();
  const out = join(f.root, 'staged');
  const PRETRAIN = { epochs: 1, batchSize: 32, lr: 2e-3, warmup: 2, arch: { patchSize: 8, visionWidth: 64, visionLayers: 1, textWidth: 64, textLayers: 1, embedDim: 32 } };
  const cfg = T.resolveConfig(undefined, { dataset: 'generic', data: f.data, out, dims, epochs: 1, batchSize: 16, lr: 1e-3, evalBatchSize: 64, report: false, stages: [2, 3], pretrain: PRETRAIN, fusionBeta: 0.5 });
  const r = await trainStages({ config: cfg });
  const ck = r.stage3.bestCheckpoint;
  t.is(T.readCheckpointInfo(ck).config.clip, join(out, 'stage2'));
  const ev = await evaluateCheckpoint({ checkpoint: ck });
  const set = ev.sets[0];
  const s = await Searcher.open(ck);
  try {
    t.is(s.clip.plan.dir, join(out, 'stage2'));
    for (let i = 0; i < 2; i++) {
      const q = set.set.queries[i];
      const K = set.top.k;
      const expect = new Map();
      for (let j = 0; j < K; j++) expect.set(basename(f.ds.image(set.galleryIds[set.top.indices[i * K + j]]).file), set.top.scores[i * K + j]);
      const name = basename(f.ds.image(q.source).file);
      const image = readdirSync(f.gallery).includes(name) ? join(f.gallery, name) : f.ds.image(q.source).file;
      sameScores(t, { expect }, (await s.search({ image, text: q.text, gallery: f.gallery, k: 50 })).results, `staged query ${i}`);
    }
  } finally {
    s.dispose();
  }
});
