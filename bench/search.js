// npm run bench -- search [--n 1000000] [--dim 256] [--queries 200] [--ann ivf_flat|ivf_pq|ivf_hnsw_sq|ivf_hnsw_pq]
//   [--partitions P] [--sub-vectors M] [--nprobes N] [--refine 10] [--ef 64] [--sweep]
//   [--skip-vectors] [--skip-http] [--json]
// Search as a service (issue 16, docs/SERVE.md):
//  1. vector search over --n synthetic embeddings of the model's dim (clustered, unit norm, like
//     real embeddings; queries are perturbed gallery vectors): ANN index build time, latency p50/p99
//     one query at a time, recall@10 against exact search; exact GEMM search at the same size.
//  2. with a small-preset checkpoint trained here on the synthetic benchmark: index build images/s,
//     end-to-end HTTP p50 (query embedding included) and throughput under 200 concurrent queries.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { args, emit, flag, header, saveResults, wantJson } from './common.js';
import { GalleryIndex, createServer, Searcher, generateSynthetic, train as T } from '../lib/index.js';
import { topK } from '../lib/eval/topk.js';

const log = (m) => !wantJson && console.log(m);
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const work = mkdtempSync(join(tmpdir(), 'dwc-bench-search-'));

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function gauss(r) {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}
function normalise(v, off, dim) {
  let n = 0;
  for (let d = 0; d < dim; d++) n += v[off + d] ** 2;
  n = 1 / Math.sqrt(n);
  for (let d = 0; d < dim; d++) v[off + d] *= n;
}

/** N unit vectors around C centres (spread σ per dim relative to the centre's), and Q queries. */
function synthVectors(N, dim, Q, seed = 1) {
  const r = rng(seed);
  const C = Math.max(16, Math.round(Math.sqrt(N)));
  const centres = new Float32Array(C * dim);
  for (let i = 0; i < centres.length; i++) centres[i] = gauss(r);
  for (let c = 0; c < C; c++) normalise(centres, c * dim, dim);
  const spread = 0.5 / Math.sqrt(dim); // noise norm ≈ 0.5 of the centre's
  const vectors = new Float32Array(N * dim);
  for (let i = 0; i < N; i++) {
    const c = Math.floor(r() * C);
    for (let d = 0; d < dim; d++) vectors[i * dim + d] = centres[c * dim + d] + spread * gauss(r);
    normalise(vectors, i * dim, dim);
  }
  const queries = new Float32Array(Q * dim);
  for (let q = 0; q < Q; q++) {
    const i = Math.floor(r() * N);
    for (let d = 0; d < dim; d++) queries[q * dim + d] = vectors[i * dim + d] + (0.3 / Math.sqrt(dim)) * gauss(r);
    normalise(queries, q * dim, dim);
  }
  return { vectors, queries };
}

async function vectorBench() {
  const N = flag('n', 1_000_000);
  const dim = flag('dim', 256); // [q_G; q_L] of the small preset (D = 128 per stream)
  const Q = flag('queries', 200);
  const k = 10;
  header(`search: vector search over ${N} synthetic ${dim}-d embeddings, ${Q} queries, k = ${k}`);
  let t0 = performance.now();
  const { vectors, queries } = synthVectors(N, dim, Q);
  log(`  generated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  // exact reference (batched GEMM top-k)
  t0 = performance.now();
  const truth = topK(queries, vectors, dim, k);
  const exactBatchedS = (performance.now() - t0) / 1000;
  const paths = Array.from({ length: N }, (_, i) => `v${i}`);
  const db = join(work, 'vec.lance');
  t0 = performance.now();
  let index = await GalleryIndex.fromVectors({ db, dim, paths, vectors, checkpointId: 'synthetic', galleryRoot: work, ann: { threshold: Infinity } });
  const writeS = (performance.now() - t0) / 1000;
  log(`  LanceDB write: ${writeS.toFixed(1)} s (${(N / writeS).toFixed(0)} rows/s)`);
  // exact search through the index (in-memory GEMM), one query at a time
  const exactLat = [];
  await index.search(queries.subarray(0, dim), { k, exact: true }); // loads the snapshot
  for (let q = 0; q < Math.min(Q, 50); q++) {
    const s = performance.now();
    await index.search(queries.subarray(q * dim, (q + 1) * dim), { k, exact: true });
    exactLat.push(performance.now() - s);
  }
  emit({ suite: 'search', name: `exact GEMM search ${N}x${dim} (1 query)`, engine_s: pct(exactLat, 50) / 1000, extra: { p50_ms: pct(exactLat, 50), p99_ms: pct(exactLat, 99), n: N, dim } });
  emit({ suite: 'search', name: `exact GEMM search ${N}x${dim} (${Q} queries in one GEMM, per query)`, engine_s: exactBatchedS / Q, extra: { n: N, dim, queries: Q } });
  index.close();

  const ai = args.indexOf('--ann');
  const type = ai >= 0 ? args[ai + 1] : 'ivf_flat';
  const hnsw = type.startsWith('ivf_hnsw');
  const pq = type.endsWith('_pq');
  // the index's own defaults (GalleryIndex, annDefaults) unless given
  const partitions = flag('partitions', hnsw ? Math.max(1, Math.ceil(N / 100_000)) : Math.round(Math.sqrt(N)));
  const subVectors = flag('sub-vectors', dim / 8);
  index = await GalleryIndex.open(db, { ann: { threshold: 1, type } });
  t0 = performance.now();
  await index.createAnnIndex({ type, numPartitions: partitions, numSubVectors: subVectors });
  const annBuildS = (performance.now() - t0) / 1000;
  log(`  ${type} build (${partitions} partitions${pq ? `, ${subVectors} sub-vectors` : ''}): ${annBuildS.toFixed(1)} s`);
  emit({ suite: 'search', name: `${type} build ${N}x${dim}`, engine_s: annBuildS, extra: { type, partitions, sub_vectors: pq ? subVectors : null } });

  const defaults = { ivf_flat: { nprobes: 8, refine: 1 }, ivf_pq: { nprobes: 32, refine: 10 } }[type] ?? { nprobes: partitions, refine: 10 };
  const sweep =
    type === 'ivf_flat' ? [1, 2, 4, 8, 16, 32].map((nprobes) => ({ nprobes, refine: 1, ef: 64 }))
    : type === 'ivf_pq' ? [8, 16, 32, 64].flatMap((nprobes) => [5, 10, 20, 50].map((refine) => ({ nprobes, refine, ef: 64 })))
    : [1, 2, 4].filter((p) => p <= partitions).flatMap((nprobes) => [32, 64, 128].map((ef) => ({ nprobes, refine: flag('refine', 10), ef })));
  const settings = args.includes('--sweep') ? sweep : [{ nprobes: flag('nprobes', defaults.nprobes), refine: flag('refine', defaults.refine), ef: flag('ef', 64) }];
  for (const st of settings) {
    const lat = [];
    const cpu = []; // CPU time of the process (all threads) per query: the work, less sensitive than the wall time to other jobs on the machine
    let found = 0;
    // warm-up: 20 untimed queries (the first searches after a build or an open load the index's
    // partitions into memory; a serving index answers from a warm cache)
    for (let q = 0; q < Math.min(20, Q); q++) await index.search(queries.subarray(q * dim, (q + 1) * dim), { k, nprobes: st.nprobes, refineFactor: st.refine, ef: st.ef });
    for (let q = 0; q < Q; q++) {
      const s = performance.now();
      const c = process.cpuUsage();
      const [hits] = await index.search(queries.subarray(q * dim, (q + 1) * dim), { k, nprobes: st.nprobes, refineFactor: st.refine, ef: st.ef });
      lat.push(performance.now() - s);
      const dc = process.cpuUsage(c);
      cpu.push((dc.user + dc.system) / 1000);
      const want = new Set(Array.from(truth.indices.subarray(q * k, (q + 1) * k), (i) => `v${i}`));
      found += hits.filter((h) => want.has(h.path)).length;
    }
    const recall = found / (Q * k);
    emit({
      suite: 'search',
      name: `${type} search nprobes ${st.nprobes} refine ${st.refine} ef ${st.ef}`,
      engine_s: pct(lat, 50) / 1000,
      extra: { p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), cpu_p50_ms: pct(cpu, 50), cpu_p99_ms: pct(cpu, 99), recall_at_10: recall, ...st, n: N, dim, load_avg: loadavg()[0], goals: 'p50 <= 10 ms, p99 <= 50 ms, recall@10 >= 0.95' },
    });
    log(`    p50 ${pct(lat, 50).toFixed(2)} ms  p99 ${pct(lat, 99).toFixed(2)} ms  recall@10 ${recall.toFixed(3)}  (CPU time per query p50 ${pct(cpu, 50).toFixed(2)} ms, p99 ${pct(cpu, 99).toFixed(2)} ms; load average ${loadavg()[0].toFixed(1)})`);
  }
  index.close();
}

async function serviceBench() {
  header('search: index build and HTTP service with a small-preset checkpoint');
  const s = await generateSynthetic({ out: join(work, 'synth'), train: flag('images', 600) - 100, test: 100, size: 64, seed: 5, noise: 0 });
  const cfg = T.resolveConfig(undefined, { dataset: 'generic', data: s.out, out: join(work, 'run'), epochs: 1, limitTrain: 64, report: false });
  const run = await T.train({ config: cfg });
  const searcher = await Searcher.open(run.lastCheckpoint);
  const gallery = join(s.out, 'images');
  const n = readdirSync(gallery).length;
  let t0 = performance.now();
  const { index } = await GalleryIndex.build({ db: join(work, 'g.lance'), gallery, checkpoint: run.lastCheckpoint, embed: (f) => searcher.embedImages(f) });
  const buildS = (performance.now() - t0) / 1000;
  emit({ suite: 'search', name: `index build (${n} images ${cfg.dims.imageSize}px, small preset)`, engine_s: buildS / n, extra: { images_per_s: n / buildS, images: n } });
  log(`  ${(n / buildS).toFixed(1)} images/s`);
  const app = await createServer({ searcher, index, logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${app.server.address().port}/search`;
  const names = readdirSync(gallery).sort();
  const texts = ['make it red', 'add a small star', 'make the circle blue', 'remove the square'];
  const body = (i) => JSON.stringify({ image: names[(i * 13) % names.length], text: texts[i % texts.length], k: 10 });
  const ask = async (i) => {
    const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body(i) });
    await r.json();
    return r.status;
  };
  for (let i = 0; i < 5; i++) await ask(i);
  const lat = [];
  for (let i = 0; i < 100; i++) {
    const t = performance.now();
    await ask(i);
    lat.push(performance.now() - t);
  }
  emit({ suite: 'search', name: 'HTTP POST /search one at a time (embed + exact search)', engine_s: pct(lat, 50) / 1000, extra: { p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), gallery: n } });
  const C = 200;
  t0 = performance.now();
  const statuses = await Promise.all(Array.from({ length: C }, (_, i) => ask(i).catch(() => 0)));
  const sec = (performance.now() - t0) / 1000;
  const errors = statuses.filter((x) => x !== 200).length;
  emit({ suite: 'search', name: `HTTP ${C} concurrent POST /search`, engine_s: sec / C, extra: { queries_per_s: C / sec, errors, wall_s: sec } });
  log(`  ${C} concurrent: ${(C / sec).toFixed(1)} queries/s, ${errors} errors`);
  await app.close();
}

try {
  if (!args.includes('--skip-vectors')) await vectorBench();
  if (!args.includes('--skip-http')) await serviceBench();
  saveResults('search');
} finally {
  rmSync(work, { recursive: true, force: true });
}
