// Trainer, evaluation, report and search around a small deterministic fake model (the native
// model plugs into the same interface, src/train/types.ts).
import test from 'ava';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, existsSync, utimesSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import {
  resolveConfig, readConfigFile, defaultConfig, train, readMetrics, topK, topKBruteForce, computeRecall,
  renderReportSvg, svgToPng, embedGallery, Searcher, readCheckpointInfo, epochOrder, learningRate, LR_MIN_FACTOR,
} from '../lib/api.js';
import { readSafetensors, writeSafetensors } from '../lib/safetensors.js';
import { evaluateCheckpoint } from '../lib/eval/run.js';
import { makeRng, randArray } from './helpers/index.js';
import { nativeConfig } from '../lib/train/native_model.js';
import { modelOptions } from '../lib/train/config.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'dwc-product-'));

// ------------------------------------------------------------------ fake model
// q = norm(Wq [pool(img); bow(text)]), t = norm(Wt pool(img)); one SGD step on -mean(q·t) with
// a seed+step dependent perturbation, so resume must restore the step count to match.
function pool(images, B, S) {
  const G = 4, F = 3 * G * G, out = new Float64Array(B * F), cell = S / G;
  for (let b = 0; b < B; b++)
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < S; y++)
        for (let x = 0; x < S; x++) out[b * F + c * G * G + Math.floor(y / cell) * G + Math.floor(x / cell)] += images[((b * 3 + c) * S + y) * S + x] / (cell * cell);
  return { f: out, F };
}
function mulNorm(W, rows, cols, x, B) {
  const out = new Float32Array(B * rows);
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += W[r * cols + c] * x[b * cols + c];
      out[b * rows + r] = s;
      n += s * s;
    }
    n = Math.sqrt(n) || 1;
    for (let r = 0; r < rows; r++) out[b * rows + r] /= n;
  }
  return out;
}
export function fakeFactory(log = {}) {
  const D = 8;
  const make = (o, state) => {
    const V = o.vocabSize, F = 48, Xq = F + V;
    const rng = makeRng(o.seed + 1);
    const m = {
      preset: o.preset, dims: o.dims, training: true,
      Wq: state?.Wq ?? Float64Array.from({ length: D * Xq }, () => rng.normal() * 0.3),
      Wt: state?.Wt ?? Float64Array.from({ length: D * F }, () => rng.normal() * 0.3),
      stepCount: state?.step ?? 0,
      // the halves' weight β as the native model applies it (docs/MODEL.md §7): the first half of q scaled
      fusionBeta: o.fusionBeta ?? 1,
      setTraining(on) { this.training = on; },
      qx(batch) {
        const { f } = pool(batch.images, batch.B, batch.imageSize);
        const x = new Float64Array(batch.B * Xq);
        for (let b = 0; b < batch.B; b++) {
          x.set(f.subarray(b * F, (b + 1) * F), b * Xq);
          for (let l = 0; l < batch.lengths[b]; l++) x[b * Xq + F + batch.tokens[b * batch.L + l]] += 1;
        }
        return x;
      },
      async step(batch) {
        const x = this.qx(batch), y = pool(batch.targets, batch.B, batch.imageSize).f;
        const q = mulNorm(this.Wq, D, Xq, x, batch.B), t = mulNorm(this.Wt, D, F, y, batch.B);
        let loss = 0;
        for (let i = 0; i < batch.B * D; i++) loss -= (q[i] * t[i]) / batch.B;
        const r = makeRng(o.seed * 7919 + this.stepCount);
        const lr = o.lr * 100;
        for (let b = 0; b < batch.B; b++)
          for (let d = 0; d < D; d++) {
            for (let c = 0; c < Xq; c++) this.Wq[d * Xq + c] += (lr * t[b * D + d] * x[b * Xq + c]) / batch.B;
            for (let c = 0; c < F; c++) this.Wt[d * F + c] += (lr * q[b * D + d] * y[b * F + c]) / batch.B;
          }
        this.Wq[r.int(this.Wq.length)] += 0.01 * r.normal();
        this.stepCount++;
        log.steps = (log.steps ?? 0) + 1;
        return { global: { contrastive: loss, mutual: 0.1 }, local: { contrastive: loss * 0.5, mutual: 0.05 } };
      },
      async embedQueries(batch, opt) {
        const q = mulNorm(this.Wq, D, Xq, this.qx(batch), batch.B);
        const w = Float32Array.from({ length: batch.B }, (_, i) => 1 / (1 + Math.exp(-q[i * D])));
        const beta = opt?.fusionBeta ?? this.fusionBeta;
        if (beta !== 1) for (let i = 0; i < q.length; i++) if (i % D < D / 2) q[i] *= beta;
        return { embeddings: q, dim: D, wGlobal: w, wLocal: Float32Array.from(w, (v) => 1 - v) };
      },
      async embedImages(batch) {
        log.imagesEmbedded = (log.imagesEmbedded ?? 0) + batch.B;
        return { embeddings: mulNorm(this.Wt, D, F, pool(batch.images, batch.B, batch.imageSize).f, batch.B), dim: D };
      },
      save(path, metadata) {
        writeSafetensors(path, { Wq: { dtype: 'F64', shape: [this.Wq.length], data: this.Wq }, Wt: { dtype: 'F64', shape: [this.Wt.length], data: this.Wt } }, { ...metadata, step: String(this.stepCount) });
      },
    };
    return m;
  };
  return {
    create: (o) => make(o),
    load: (path, o) => {
      const f = readSafetensors(path);
      return make(o, { Wq: f.tensors.get('Wq').data, Wt: f.tensors.get('Wt').data, step: Number(f.metadata.step) });
    },
  };
}

// ------------------------------------------------------------------ a tiny generic dataset
const COLORS = { red: [220, 30, 30], green: [30, 180, 40], blue: [30, 60, 220], yellow: [230, 210, 20], black: [10, 10, 10], white: [245, 245, 245] };
const SHAPES = ['square', 'circle'];
export async function makeDataset(dir, { val = false } = {}) {
  mkdirSync(join(dir, 'images'), { recursive: true });
  const images = [], queries = [];
  const splits = val ? ['train', 'test', 'val'] : ['train', 'test'];
  for (const split of splits)
    for (const [cname, rgb] of Object.entries(COLORS))
      for (const shape of SHAPES) {
        const id = `${split}-${cname}-${shape}`;
        const file = `images/${id}.png`;
        const body = shape === 'square' ? `<rect x="8" y="8" width="16" height="16" fill="rgb(${rgb})"/>` : `<circle cx="16" cy="16" r="9" fill="rgb(${rgb})"/>`;
        await sharp(Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><rect width="32" height="32" fill="#888"/>${body}</svg>`)).png().toFile(join(dir, file));
        images.push({ id, file, split, scene: `${cname}-${shape}` });
      }
  const names = Object.keys(COLORS);
  for (const split of splits)
    for (const a of names)
      for (const b of names)
        for (const shape of SHAPES) {
          if (a === b || (split === 'test' && (names.indexOf(a) + names.indexOf(b)) % 3) || (split === 'val' && (names.indexOf(a) + names.indexOf(b)) % 3 !== 1)) continue;
          queries.push({ source: `${split}-${a}-${shape}`, text: `make it ${b}`, target: `${split}-${b}-${shape}`, split });
        }
  writeFileSync(join(dir, 'dataset.json'), JSON.stringify({ format: 'dwc-dataset', version: 1, name: 'colours', hit: 'scene', ks: [1, 5, 10], images, queries }));
  return dir;
}

function cfgFor(dataDir, out, extra = {}) {
  return resolveConfig(undefined, { dataset: 'generic', data: dataDir, out, epochs: 3, batchSize: 8, lr: 1e-3, dims: { imageSize: 16 }, evalBatchSize: 16, ...extra });
}

// ------------------------------------------------------------------ config
test('config: defaults < preset < file < flags, unknown settings named', (t) => {
  const d = tmp();
  const file = join(d, 'c.json');
  writeFileSync(file, JSON.stringify({ preset: 'paper', epochs: 7, lr: 0.001, dims: { D: 512 } }));
  const c = resolveConfig(readConfigFile(file), { epochs: 3, dims: { E: 64 } });
  t.is(c.preset, 'paper');
  t.is(c.epochs, 3, 'flag beats file');
  t.is(c.lr, 0.001, 'file beats preset');
  t.deepEqual([c.dims.D, c.dims.C, c.dims.E, c.dims.H, c.dims.imageSize], [512, 2048, 64, 7, 224]);
  t.is(resolveConfig(undefined, undefined).dims.D, defaultConfig('small').dims.D);
  t.is(resolveConfig(undefined, undefined).dims.imageSize, 64);
  writeFileSync(file, JSON.stringify({ epocs: 3 }));
  t.throws(() => readConfigFile(file), { message: /unknown setting 'epocs'/ });
  t.throws(() => resolveConfig(undefined, { dims: { Q: 1 } }), { message: /dims\.Q/ });
  t.throws(() => resolveConfig(undefined, { batchSize: 1 }), { message: /batchSize/ });
  t.throws(() => resolveConfig(undefined, { ablations: ['no-foo'] }), { message: /ablations/ });
  t.throws(() => resolveConfig(undefined, { dataset: 'shoes' }), { message: /--data/ });
  t.throws(() => resolveConfig(undefined, { preset: 'paper' }, resolveConfig(undefined, {})), { message: /resume/ });
});

test('presets: small trains the local stream at lrLocal 5e-3 with the reference mutual targets; paper at lr with target images; old runs resume at lr', (t) => {
  const small = resolveConfig(undefined, {});
  t.is(small.lrLocal, 5e-3);
  t.is(small.mutualTarget, 'reference');
  t.is(small.epochs, 16);
  t.is(small.batchSize, 64, 'docs/EXPERIMENTS.md "Batch 64"');
  t.is(small.lr, 5e-3, 'both streams at 5e-3 (docs/EXPERIMENTS.md "The global half: options")');
  t.is(nativeConfig(modelOptions(small, 20)).options.localLrFactor, undefined, 'lrLocal = lr: no factor');
  t.is(nativeConfig(modelOptions({ ...small, lr: 1e-3 }, 20)).options.localLrFactor, 5);
  const paper = resolveConfig(undefined, { preset: 'paper' });
  t.is(paper.lrLocal, undefined);
  t.is(paper.mutualTarget, 'target');
  t.is(paper.batchSize, 32, 'the spec\'s batch');
  t.is(nativeConfig(modelOptions(paper, 20)).options.localLrFactor, undefined);
  t.is(resolveConfig(undefined, { lrLocal: 2e-3 }).lrLocal, 2e-3);
  t.throws(() => resolveConfig(undefined, { lrLocal: -1 }), { message: /lrLocal/ });
  // a config stored before lrLocal existed: both streams at lr, as it was trained
  const old = { ...small };
  delete old.lrLocal;
  t.is(resolveConfig(undefined, {}, old).lrLocal, undefined);
  t.is(resolveConfig(undefined, { lrLocal: 3e-3 }, old).lrLocal, 3e-3);
});

test('presets: small flips (mirrored texts) at τ = 0.05, paper keeps the spec (no flip, τ = 0.07); τ reaches the native model; old runs resume at 0.07', (t) => {
  const small = resolveConfig(undefined, {});
  t.is(small.flip, true);
  t.is(small.tau, 0.05);
  t.is(nativeConfig(modelOptions(small, 20)).options.tau, 0.05);
  const paper = resolveConfig(undefined, { preset: 'paper' });
  t.is(paper.flip, false);
  t.is(paper.tau, 0.07);
  t.is(nativeConfig(modelOptions(paper, 20)).options.tau, 0.07);
  t.is(resolveConfig(undefined, { tau: 0.1, flip: false }).tau, 0.1);
  t.is(resolveConfig(undefined, { flip: false }).flip, false);
  for (const bad of [0, -0.05, Number.NaN, '0.05']) t.throws(() => resolveConfig(undefined, { tau: bad }), { message: /'tau'/ });
  // a config stored before tau was a setting trained at the spec's 0.07 (its flip is stored)
  const old = { ...small, flip: false };
  delete old.tau;
  t.is(resolveConfig(undefined, {}, old).tau, 0.07);
  t.is(resolveConfig(undefined, {}, old).flip, false);
  t.is(resolveConfig(undefined, { tau: 0.03 }, old).tau, 0.03);
});

test('encoderGrid: default 1 (one global GeM); a grid larger than the map is refused by name; a grid reaches the native dims', (t) => {
  const c = resolveConfig(undefined, {});
  t.is(c.encoderGrid, 1);
  t.throws(() => resolveConfig(undefined, { encoderGrid: 9 }), { message: /encoderGrid/ });
  t.throws(() => resolveConfig(undefined, { encoderGrid: 0 }), { message: /encoderGrid/ });
  t.is(nativeConfig(modelOptions(resolveConfig(undefined, { encoderGrid: 3 }), 20)).dims.encGrid, 3);
  t.is(nativeConfig(modelOptions(c, 20)).dims.encGrid, undefined);
});

test('learning-rate schedule: small decays by cosine to LR_MIN_FACTOR, paper keeps the reference constant rate', (t) => {
  const small = resolveConfig(undefined, { lrWarmup: 0 });
  t.is(small.lrSchedule, 'cosine');
  t.is(resolveConfig(undefined, { preset: 'paper' }).lrSchedule, 'constant');
  const T = 101;
  const lrs = Array.from({ length: T }, (_, i) => learningRate(small, i, T));
  t.is(lrs[0], small.lr);
  t.true(Math.abs(lrs[T - 1] - small.lr * LR_MIN_FACTOR) < 1e-12);
  t.true(Math.abs(lrs[50] - small.lr * (1 + LR_MIN_FACTOR) / 2) < 1e-12, 'half-way: the mean of both ends');
  t.true(lrs.every((v, i) => i === 0 || v < lrs[i - 1]), 'strictly decreasing');
  t.is(learningRate({ ...small, lrSchedule: 'constant' }, 70, T), small.lr);
  t.throws(() => resolveConfig(undefined, { lrSchedule: 'step' }), { message: /lrSchedule/ });
});

test('learning-rate warm-up (--lr-warmup): linear to lr over the first steps, then the cosine over the rest', (t) => {
  const c = resolveConfig(undefined, { lrWarmup: 10 });
  t.is(c.lrWarmup, 10);
  t.is(resolveConfig(undefined, {}).lrWarmup, 250, 'the small preset');
  t.is(resolveConfig(undefined, { preset: 'paper' }).lrWarmup, undefined);
  const T = 111;
  const lrs = Array.from({ length: T }, (_, i) => learningRate(c, i, T));
  for (let i = 0; i < 10; i++) t.true(Math.abs(lrs[i] - (c.lr * (i + 1)) / 10) < 1e-15, `warm-up step ${i}`);
  t.is(lrs[10], c.lr, 'the peak right after the warm-up');
  t.true(Math.abs(lrs[T - 1] - c.lr * LR_MIN_FACTOR) < 1e-12, 'the cosine still ends at LR_MIN_FACTOR');
  t.true(Math.abs(lrs[60] - c.lr * (1 + LR_MIN_FACTOR) / 2) < 1e-12, 'half-way through the cosine part');
  t.is(learningRate({ ...c, lrSchedule: 'constant' }, 5, T), (c.lr * 6) / 10);
  t.is(learningRate({ ...c, lrSchedule: 'constant' }, 50, T), c.lr);
  t.is(learningRate({ ...c, lrWarmup: 0 }, 0, T), c.lr, '0: none');
  for (const bad of [-1, 2.5, '10']) t.throws(() => resolveConfig(undefined, { lrWarmup: bad }), { message: /lrWarmup/ });
  // a run stored before these small-preset defaults keeps what it was trained with (resume, eval)
  const old = resolveConfig(undefined, {});
  for (const k of ['lrWarmup', 'globalDropout', 'globalTextRelu']) delete old[k];
  const r = resolveConfig(undefined, {}, old);
  t.is(r.lrWarmup, undefined);
  t.is(r.globalDropout, undefined);
  t.is(r.globalTextRelu, undefined);
  t.is(resolveConfig(undefined, { lrWarmup: 5 }, old).lrWarmup, 5, 'a flag still sets it');
});

test('epoch order is a permutation fixed by (seed, epoch)', (t) => {
  const a = epochOrder(50, 3, 2);
  t.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
  t.deepEqual(a, epochOrder(50, 3, 2));
  t.notDeepEqual(a, epochOrder(50, 3, 3));
});

// ------------------------------------------------------------------ top-K and recall
test('top-K by GEMM + heap selection equals a full sort, with exclusion and any block size', (t) => {
  const rng = makeRng(12345);
  for (const [Q, N, D, k, block] of [[37, 101, 16, 10, 5], [5, 7, 3, 7, 2], [64, 300, 32, 1, 64], [3, 4, 8, 10, 1]]) {
    const q = randArray([Q * D], rng), g = randArray([N * D], rng);
    const exclude = Int32Array.from({ length: Q }, (_, i) => (i % 3 === 0 ? -1 : rng.int(N)));
    const a = topK(q, g, D, k, { exclude, blockRows: block });
    const b = topKBruteForce(q, g, D, k, exclude);
    t.deepEqual(Array.from(a.indices), Array.from(b.indices), `Q=${Q} N=${N} k=${k}`);
    for (let i = 0; i < a.scores.length; i++) if (b.indices[i] >= 0) t.true(Math.abs(a.scores[i] - b.scores[i]) < 1e-4);
    for (let i = 0; i < Q; i++) for (let j = 0; j < k; j++) t.not(a.indices[i * k + j], exclude[i] >= 0 ? exclude[i] : -2);
  }
  t.throws(() => topK(new Float32Array(6), new Float32Array(8), 4, 1), { message: /dim 4/ });
});

test('Recall@K on hand-made embeddings, own reference removed from the ranking', (t) => {
  // gallery: 4 images on axes; queries point between images. Query 0's source is image 0,
  // which would rank first; removed, its target (scene "b") is first.
  const g = Float32Array.from([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
  const q = Float32Array.from([0.9, 0.5, 0.1, 0, 0, 0.2, 0.3, 0.9, 0.6, 0.5, 0.4, 0]);
  const r = computeRecall({
    queries: q, gallery: g, D: 4,
    galleryKeys: ['a', 'b', 'c', 'd'], targetKeys: ['b', 'c', 'd'],
    sourceIndex: Int32Array.from([0, 3, -1]), ks: [1, 2, 3],
  });
  // q0 → [b, c, d] hit@1; q1 (d removed) → [c, b, a] hit@1; q2 → [a, b, c]: target d not in top 3.
  t.deepEqual(r.recall, { 1: 200 / 3, 2: 200 / 3, 3: 200 / 3 });
  t.deepEqual(Array.from(r.firstHit), [0, 0, -1]);
  const noExcl = computeRecall({ queries: q, gallery: g, D: 4, galleryKeys: ['a', 'b', 'c', 'd'], targetKeys: ['b', 'c', 'd'], sourceIndex: Int32Array.from([-1, -1, -1]), ks: [1] });
  t.is(noExcl.recall['1'], 0, 'without removal the reference image wins for q0 and q1');
});

// ------------------------------------------------------------------ report
test('report renders loss/recall curves, w histogram and examples to a PNG', async (t) => {
  const d = tmp();
  const img = join(d, 'a.png');
  await sharp({ create: { width: 32, height: 32, channels: 3, background: '#c33' } }).png().toFile(img);
  const metrics = [];
  for (let e = 1; e <= 6; e++) {
    metrics.push({ event: 'epoch', epoch: e, step: e * 10, loss: { total: 3 / e, 'global.contrastive': 2 / e, 'local.contrastive': 1 / e }, itemsPerSec: 100, seconds: 1 });
    metrics.push({ event: 'eval', epoch: e, recall: { 1: 10 * e, 5: 12 * e, 10: 14 * e }, mean: 12 * e, best: true });
  }
  const rng = makeRng(5);
  const svg = await renderReportSvg({
    title: 'test report', metrics, recall: { 1: 60, 5: 72, 10: 84 },
    w: { global: Float32Array.from({ length: 200 }, () => rng.uniform()), local: Float32Array.from({ length: 200 }, () => rng.uniform() ** 2) },
    examples: [{ refFile: img, text: 'make it blue and bigger', targetFile: img, w: 0.3, results: [0, 1, 2, 3, 4].map((i) => ({ file: img, hit: i === 1, score: 0.9 - i / 10 })) }],
  });
  t.regex(svg, /Training loss/);
  t.regex(svg, /Combiner weight w/);
  t.regex(svg, /data:image\/png;base64/);
  const png = join(d, 'r.png');
  await svgToPng(svg, png);
  const meta = await sharp(png).metadata();
  t.true(meta.width >= 1200 && meta.height >= 400);
  const { data } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  const colours = new Set();
  for (let i = 0; i < data.length; i += 3 * 97) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  t.true(colours.size > 20, 'the PNG is not blank');
});

// ------------------------------------------------------------------ gallery cache
test('gallery embeddings are cached and rebuilt when an image changes or is added', async (t) => {
  const d = tmp();
  const gal = join(d, 'gallery');
  mkdirSync(gal);
  for (const [i, c] of ['#f00', '#0f0', '#00f'].entries()) await sharp({ create: { width: 8, height: 8, channels: 3, background: c } }).png().toFile(join(gal, `${i}.png`));
  const ck = join(d, 'ck.safetensors');
  writeFileSync(ck, 'x');
  let calls = 0;
  const embed = async (files) => {
    calls += files.length;
    return { embeddings: Float32Array.from(files.flatMap((f) => [f.length, 1])), dim: 2 };
  };
  const a = await embedGallery(ck, gal, embed);
  t.false(a.fromCache);
  t.is(calls, 3);
  const b = await embedGallery(ck, gal, embed);
  t.true(b.fromCache);
  t.is(calls, 3, 'second call reads the cache');
  t.deepEqual(Array.from(b.embeddings), Array.from(a.embeddings));
  const later = new Date(Date.now() + 5000);
  utimesSync(join(gal, '1.png'), later, later);
  t.false((await embedGallery(ck, gal, embed)).fromCache, 'mtime change invalidates');
  t.is(calls, 6);
  await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ff0' } }).png().toFile(join(gal, '3.png'));
  const c = await embedGallery(ck, gal, embed);
  t.false(c.fromCache, 'new file invalidates');
  t.is(c.files.length, 4);
  writeFileSync(join(gal, 'bad.png'), 'not an image');
  await t.throwsAsync(embedGallery(ck, gal, embed), { message: /bad\.png/ });
});

// ------------------------------------------------------------------ training end to end (fake model)
test('train writes config, metrics, best/last checkpoints, vocabulary and report; eval and search use them', async (t) => {
  const d = tmp();
  const data = await makeDataset(join(d, 'data'));
  const out = join(d, 'run');
  const events = [];
  const r = await train({ config: cfgFor(data, out), modelFactory: fakeFactory(), callbacks: { onEval: (e) => events.push(e), onEpoch: (e) => events.push(e) } });
  t.false(r.interrupted);
  for (const f of ['config.json', 'metrics.jsonl', 'best.safetensors', 'last.safetensors', 'vocab.json', 'report.svg', 'report.png']) t.true(existsSync(join(out, f)), f);
  const m = readMetrics(join(out, 'metrics.jsonl'));
  t.deepEqual(m.map((x) => `${x.event}${x.epoch}`), ['epoch1', 'eval1', 'epoch2', 'eval2', 'epoch3', 'eval3']);
  t.deepEqual(Object.keys(m[1].recall), ['1', '5', '10']);
  t.true(m.filter((x) => x.event === 'eval').every((x) => x.recall['10'] >= x.recall['1'] && x.recall['1'] >= 0 && x.recall['10'] <= 100));
  const best = m.filter((x) => x.event === 'eval').reduce((a, b) => (b.mean > a.mean ? b : a));
  t.is(r.best.epoch, best.epoch);
  const info = readCheckpointInfo(r.bestCheckpoint);
  t.is(info.preset, 'small');
  t.is(info.vocab.id('yellow') > 3, true);
  t.is(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).epochs, 3);

  // search with the trained (fake) model: ranked, own image left out, w reported
  const s = await Searcher.open(r.bestCheckpoint, { modelFactory: fakeFactory() });
  const q = join(data, 'images', 'test-red-square.png');
  const res = await s.search({ image: q, text: 'make it blue', gallery: join(data, 'images'), k: 5 });
  t.is(res.results.length, 5);
  t.false(res.results.some((h) => h.path === q));
  for (let i = 1; i < 5; i++) t.true(res.results[i - 1].score >= res.results[i].score);
  t.true(res.w.global > 0 && res.w.global < 1);
  t.true((await s.search({ image: q, text: 'make it blue', gallery: join(data, 'images'), k: 5 })).gallery.fromCache);
  await t.throwsAsync(s.search({ image: q, text: 'zzz qqq', gallery: join(data, 'images') }), { message: /no word the model knows/ });
});

test('an interrupted run resumed with --resume ends with exactly the numbers of an uninterrupted run', async (t) => {
  const d = tmp();
  const data = await makeDataset(join(d, 'data'));
  const full = await train({ config: cfgFor(data, join(d, 'full'), { report: false }), modelFactory: fakeFactory() });
  // Interrupt mid-epoch 2 (after its 2nd batch), then resume.
  const ac = new AbortController();
  const cfgB = cfgFor(data, join(d, 'cut'), { report: false });
  const part = await train({ config: cfgB, modelFactory: fakeFactory(), signal: ac.signal, callbacks: { onStep: (s) => s.epoch === 1 && s.batch === 1 && ac.abort() } });
  t.true(part.interrupted);
  t.is(readCheckpointInfo(part.lastCheckpoint).trainer.batch, 2);
  const rest = await train({ config: cfgB, modelFactory: fakeFactory(), resume: join(d, 'cut') });
  t.false(rest.interrupted);
  t.is(rest.steps, full.steps);
  const A = readSafetensors(full.lastCheckpoint), B = readSafetensors(rest.lastCheckpoint);
  t.deepEqual(Array.from(B.tensors.get('Wq').data), Array.from(A.tensors.get('Wq').data));
  t.deepEqual(Array.from(B.tensors.get('Wt').data), Array.from(A.tensors.get('Wt').data));
  const strip = (p) => readMetrics(p).map((x) => ({ ...x, seconds: 0, itemsPerSec: 0 }));
  t.deepEqual(strip(join(d, 'cut', 'metrics.jsonl')), strip(join(d, 'full', 'metrics.jsonl')));
  t.deepEqual(rest.best, full.best);
  rmSync(d, { recursive: true, force: true });
});

test('train: per-epoch evaluation and best checkpoint on the val split; test reported once at the end; --split test restores the old behaviour', async (t) => {
  const d = tmp();
  const data = await makeDataset(join(d, 'data'), { val: true });
  const nVal = JSON.parse(readFileSync(join(data, 'dataset.json'), 'utf8')).queries.filter((q) => q.split === 'val').length;
  const tests = [];
  const r = await train({ config: cfgFor(data, join(d, 'v'), { report: false }), modelFactory: fakeFactory(), callbacks: { onTest: (e, res) => tests.push([e, res]) } });
  t.is(r.evalSplit, 'val');
  const m = readMetrics(join(d, 'v', 'metrics.jsonl'));
  const evs = m.filter((x) => x.event === 'eval');
  t.is(evs.length, 3);
  t.true(evs.every((x) => x.split === 'val'));
  const last = m.filter((x) => x.event === 'test' && x.model === 'last');
  t.is(last.length, 1);
  t.is(last[0].split, 'test');
  t.is(tests[0][1].sets[0].queries, JSON.parse(readFileSync(join(data, 'dataset.json'), 'utf8')).queries.filter((q) => q.split === 'test').length);
  t.true(tests.some(([e]) => e.model === 'last'));
  t.is(r.lastEval.sets[0].queries, nVal);
  // the records match an independent evaluation of the checkpoints
  const evLastVal = await evaluateCheckpoint({ checkpoint: r.lastCheckpoint, split: 'val', modelFactory: fakeFactory() });
  t.deepEqual(evLastVal.recall, evs[2].recall);
  const evLastTest = await evaluateCheckpoint({ checkpoint: r.lastCheckpoint, split: 'test', modelFactory: fakeFactory() });
  t.deepEqual(evLastTest.recall, last[0].recall);
  const evBestTest = await evaluateCheckpoint({ checkpoint: r.bestCheckpoint, split: 'test', modelFactory: fakeFactory() });
  t.deepEqual(evBestTest.recall, r.test.best.recall);
  t.is(r.test.best.epoch, r.best.epoch);
  // --split test: per-epoch test evaluation, no extra record
  const r2 = await train({ config: cfgFor(data, join(d, 't'), { report: false, evalSplit: 'test' }), modelFactory: fakeFactory() });
  t.is(r2.evalSplit, 'test');
  t.is(r2.test, undefined);
  const m2 = readMetrics(join(d, 't', 'metrics.jsonl'));
  t.false(m2.some((x) => x.event === 'test'));
  // (run 't' has no validation split to choose β on: it scores with β = 1, so compare at β = 1)
  const evLastTest1 = await evaluateCheckpoint({ checkpoint: r.lastCheckpoint, split: 'test', fusionBeta: 1, modelFactory: fakeFactory() });
  t.deepEqual(m2.filter((x) => x.event === 'eval').at(-1).recall, evLastTest1.recall, 'same training, the same test numbers');
  await t.throwsAsync(train({ config: cfgFor(data, join(d, 'x'), { report: false, evalSplit: 'nope' }), modelFactory: fakeFactory() }), { message: /no queries in split 'nope'/ });
  rmSync(d, { recursive: true, force: true });
});
