// Evaluation per spec §7: eval mode, queries and gallery embedded in batches, top-K by GEMM,
// Recall@K per protocol of the dataset (e.g. FashionIQ per category + mean).
import type { Dataset, EvalSet } from '../data/dataset.js';
import type { BatchMaker } from '../train/batches.js';
import type { RetrievalModel } from '../train/types.js';
import { computeRecall, meanRecall, type Recall } from './recall.js';
import type { TopK } from './topk.js';
import { scaleGlobalHalf } from './fusion.js';
import { formatBreakdown, recallBreakdown, type BreakdownGroup } from './breakdown.js';

export interface EvalSetResult {
  name: string;
  split: string;
  queries: number;
  gallery: number;
  recall: Recall;
  /** Diagnostic, with both streams: Recall@K scoring each half of the embeddings alone
   *  (q_G·t_G, q_L·t_L; §7 ranks by their sum). */
  streams?: { global: Recall; local: Recall };
  /** Queries that carry `dominance` / `op` (the synthetic benchmark): Recall@K per group, of the
   *  ranking and (both streams) of each half alone (src/eval/breakdown.ts). */
  breakdown?: BreakdownGroup[];
  /** With a β grid and a breakdown: the breakdown at each β of fusionCurve (same order; see breakdownAt). */
  fusionBreakdowns?: BreakdownGroup[][];
  /** Both streams: the halves' weight β the recall was scored with (s = β·s_G + s_L, §7). */
  fusionBeta?: number;
  /** Both streams and a β grid asked for: Recall@K of each β of the grid (same embeddings). */
  fusionCurve?: { beta: number; recall: Recall }[];
  /** Combiner w of each query (global stream, else local), for the report's histogram. */
  w?: Float32Array;
  wLocal?: Float32Array;
  /** Adaptive weighting on (PL4CIR-SPEC.md §3): the target w* of each query (one for both streams). */
  wStar?: Float32Array;
  /** Rankings (top max(ks)) and first-hit ranks, for the report's example grid. */
  top: TopK;
  firstHit: Int32Array;
  galleryIds: string[];
  set: EvalSet;
  /** Kept when asked for (evaluate's keepEmbeddings): the queries at β = 1 and the gallery. */
  embeddings?: SetEmbeddings;
}

/** The embeddings of one evaluation set and what scoring them needs (computeRecall's input less the queries' β). */
export interface SetEmbeddings {
  queries: Float32Array;
  gallery: Float32Array;
  D: number;
  galleryKeys: string[];
  targetKeys: string[];
  sourceIndex: Int32Array;
  ks: readonly number[];
}

export interface EvalResult {
  sets: EvalSetResult[];
  /** Recall averaged over the sets (one set: its recall). */
  recall: Recall;
  /** Mean over Ks of `recall`: the number best checkpoints are chosen by. */
  mean: number;
  /** A β grid asked for (two-stream model): recall of each β averaged over the sets, and its mean over Ks. */
  fusionCurve?: { beta: number; recall: Recall; mean: number }[];
}

export interface EvalProgress {
  (phase: 'gallery' | 'queries', done: number, total: number): void;
}

/** Embeds [0, n) in batches of bs; the next batch is loaded (decoded, normalised) while the model embeds this one. */
async function embedAll<X, T>(n: number, bs: number, load: (i0: number, i1: number) => Promise<X>, embed: (x: X, i0: number) => Promise<T>, onBatch?: (done: number) => void): Promise<T[]> {
  const out: T[] = [];
  let next: Promise<X> | undefined = n > 0 ? load(0, Math.min(n, bs)) : undefined;
  try {
    for (let i = 0; i < n; i += bs) {
      const i1 = Math.min(n, i + bs);
      const x = await next!;
      next = i1 < n ? load(i1, Math.min(n, i1 + bs)) : undefined;
      out.push(await embed(x, i));
      onBatch?.(i1);
    }
  } finally {
    next?.catch(() => undefined); // an error above: the prefetched batch is not awaited
  }
  return out;
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export async function evaluateSet(model: RetrievalModel, ds: Dataset, set: EvalSet, batches: BatchMaker, bs: number, progress?: EvalProgress, betaGrid?: readonly number[], keep = false): Promise<EvalSetResult> {
  const gal = set.gallery;
  // the queries' reference images are gallery images: their trunk maps are kept from the gallery
  // pass (one trunk forward per image, not two)
  const sources = new Set(set.queries.map((q) => q.source));
  model.keepTrunkMaps?.(sources);
  try {
    return await embedAndScore(model, ds, set, batches, bs, progress, betaGrid, keep);
  } finally {
    model.keepTrunkMaps?.(null);
  }
}

async function embedAndScore(model: RetrievalModel, ds: Dataset, set: EvalSet, batches: BatchMaker, bs: number, progress: EvalProgress | undefined, betaGrid: readonly number[] | undefined, keep: boolean): Promise<EvalSetResult> {
  const gal = set.gallery;
  const gParts = await embedAll(gal.length, bs, (i0, i1) => batches.images(gal.slice(i0, i1)), (b) => model.embedImages(b), (d) => progress?.('gallery', d, gal.length));
  const qs = set.queries;
  const qParts = await embedAll(qs.length, bs, (i0, i1) => batches.queries(qs.slice(i0, i1), set.split, i0), (b) => model.embedQueries(b, { fusionBeta: 1 }), (d) => progress?.('queries', d, qs.length));
  const D = qParts[0]?.dim ?? gParts[0]?.dim ?? 1;
  const gIndex = new Map<string, number>();
  gal.forEach((id, j) => gIndex.set(id, j));
  // w* (adaptive weighting on): query batches with their targets
  let wStar: Float32Array | undefined;
  if (model.adaptiveTargets && qs.length) {
    const parts = await embedAll(
      qs.length,
      bs,
      (i0, i1) => {
        const part = qs.slice(i0, i1);
        return Promise.all([batches.queries(part, set.split, i0), batches.images(part.map((q) => q.target))]);
      },
      ([qb, tb]) => model.adaptiveTargets!({ ...qb, targets: tb.images, targetFeatures: tb.features }),
    );
    if (parts.every((p) => p)) wStar = concat(parts as Float32Array[]);
  }
  const wG = qParts.every((p) => p.wGlobal) && qParts.length ? concat(qParts.map((p) => p.wGlobal!)) : undefined;
  const wL = qParts.every((p) => p.wLocal) && qParts.length ? concat(qParts.map((p) => p.wLocal!)) : undefined;
  // the queries at β = 1 ([q_G; q_L]); both streams: scored with the model's β (src/eval/fusion.ts,
  // the same scaling the model's embedQueries applies for search and serve)
  const queries = concat(qParts.map((p) => p.embeddings));
  const gallery = concat(gParts.map((p) => p.embeddings));
  const rest = {
    galleryKeys: gal.map((id) => ds.hitKey(id)),
    targetKeys: qs.map((q) => ds.hitKey(q.target)),
    sourceIndex: Int32Array.from(qs, (q) => gIndex.get(q.source) ?? -1),
    ks: set.ks,
  };
  const two = !!(wG && wL && D % 2 === 0);
  const beta = two ? (model.fusionBeta ?? 1) : 1;
  const r = computeRecall({ queries: scaleGlobalHalf(queries, D, beta), gallery, D, ...rest });
  const emb: SetEmbeddings = { queries, gallery, D, ...rest };
  const curveHits = two && betaGrid?.length ? setFusionCurve(emb, betaGrid) : undefined;
  const fusionCurve = curveHits?.map(({ beta: b, recall }) => ({ beta: b, recall }));
  // both streams: [global | local] halves of every row
  let streams: EvalSetResult['streams'];
  let halfHits: { global: Int32Array; local: Int32Array } | undefined;
  if (two) {
    const half = (e: Float32Array, second: boolean) => {
      const h = D / 2;
      const out = new Float32Array((e.length / D) * h);
      for (let i = 0, n = e.length / D; i < n; i++) out.set(e.subarray(i * D + (second ? h : 0), i * D + (second ? D : h)), i * h);
      return out;
    };
    const of = (second: boolean) => computeRecall({ queries: half(queries, second), gallery: half(gallery, second), D: D / 2, ...rest });
    const g = of(false), l = of(true);
    streams = { global: g.recall, local: l.recall };
    halfHits = { global: g.firstHit, local: l.firstHit };
  }
  const breakdown = recallBreakdown(qs, { combined: r.firstHit, ...halfHits }, set.ks);
  const fusionBreakdowns = breakdown && curveHits ? curveHits.map((c) => recallBreakdown(qs, { combined: c.firstHit, ...halfHits }, set.ks)!) : undefined;
  return { name: set.name, split: set.split, queries: qs.length, gallery: gal.length, recall: r.recall, streams, ...(breakdown ? { breakdown } : {}), ...(fusionBreakdowns ? { fusionBreakdowns } : {}), ...(two ? { fusionBeta: beta } : {}), ...(fusionCurve ? { fusionCurve } : {}), w: wG, wLocal: wL, wStar, top: r.top, firstHit: r.firstHit, galleryIds: gal, set, ...(keep && two ? { embeddings: emb } : {}) };
}

/** Recall@K (and first hits) of each β of the grid on one set's embeddings (s = β·s_G + s_L, docs/MODEL.md §7). */
function setFusionCurve(e: SetEmbeddings, betaGrid: readonly number[]): { beta: number; recall: Recall; firstHit: Int32Array }[] {
  return betaGrid.map((b) => {
    const r = computeRecall({ ...e, queries: scaleGlobalHalf(e.queries, e.D, b) });
    return { beta: b, recall: r.recall, firstHit: r.firstHit };
  });
}

/** A set's per-group breakdown with the ranking scored at β (a β of its grid; else, or β omitted, as evaluated). */
export function breakdownAt(s: Pick<EvalSetResult, 'breakdown' | 'fusionBreakdowns' | 'fusionCurve'>, beta?: number): BreakdownGroup[] | undefined {
  const i = beta === undefined || !s.fusionCurve || !s.fusionBreakdowns ? -1 : s.fusionCurve.findIndex((c) => c.beta === beta);
  return i >= 0 ? s.fusionBreakdowns![i] : s.breakdown;
}

function avgRecall(rs: Recall[]): Recall {
  const out: Recall = {};
  for (const x of rs) for (const [k, v] of Object.entries(x)) out[k] = (out[k] ?? 0) + v / rs.length;
  return out;
}

/** The β grid averaged over the sets (EvalResult.fusionCurve) from per-set curves. */
function averageCurves(curves: { beta: number; recall: Recall }[][]): NonNullable<EvalResult['fusionCurve']> {
  return curves[0].map((c, i) => {
    const rec = avgRecall(curves.map((s) => s[i].recall));
    return { beta: c.beta, recall: rec, mean: meanRecall(rec) };
  });
}

/** Evaluates every protocol of the dataset's eval split in eval mode; restores train mode after. */
export async function evaluate(
  model: RetrievalModel,
  ds: Dataset,
  batches: BatchMaker,
  opts: { batchSize: number; split?: string; progress?: EvalProgress; restoreTraining?: boolean; betaGrid?: readonly number[]; /** keep each set's embeddings (two-stream model) */ keepEmbeddings?: boolean },
): Promise<EvalResult> {
  model.setTraining(false);
  try {
    const sets: EvalSetResult[] = [];
    for (const set of ds.evaluations(opts.split)) sets.push(await evaluateSet(model, ds, set, batches, opts.batchSize, opts.progress, opts.betaGrid, !!opts.keepEmbeddings));
    const recall = avgRecall(sets.map((s) => s.recall));
    let fusionCurve: EvalResult['fusionCurve'];
    if (sets.length && sets.every((s) => s.fusionCurve)) fusionCurve = averageCurves(sets.map((s) => s.fusionCurve!));
    return { sets, recall, mean: meanRecall(recall), ...(fusionCurve ? { fusionCurve } : {}) };
  } finally {
    if (opts.restoreTraining !== false) model.setTraining(true);
  }
}

/** Plain-text table of an evaluation (one row per protocol, plus the mean when several). */
export function formatEvalTable(r: EvalResult): string {
  const ks = Object.keys(r.recall);
  const head = ['set', 'queries', 'gallery', ...ks.map((k) => `R@${k}`)];
  const rows = r.sets.map((s) => [s.name, String(s.queries), String(s.gallery), ...ks.map((k) => (s.recall[k] ?? NaN).toFixed(2))]);
  if (r.sets.length > 1) rows.push(['mean', '', '', ...ks.map((k) => r.recall[k].toFixed(2))]);
  // per-stream diagnostics (each half of the embeddings alone)
  for (const s of r.sets)
    for (const [name, rec] of Object.entries(s.streams ?? {}))
      rows.push([`${r.sets.length > 1 ? `${s.name} ` : ''}(${name} stream alone)`, String(s.queries), String(s.gallery), ...ks.map((k) => (rec[k] ?? NaN).toFixed(2))]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  const beta = r.sets[0]?.fusionBeta;
  const note = beta !== undefined && beta !== 1 ? [`(score β·s_G + s_L with the halves' weight β = ${beta}, docs/MODEL.md §7)`] : [];
  // queries with op / dominance (synthetic benchmark): R@1 per kind of query
  const per = r.sets.filter((s) => s.breakdown).flatMap((s) => ['', `${r.sets.length > 1 ? `${s.name}: ` : ''}per kind of query`, formatBreakdown(s.breakdown!)]);
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line), ...note, ...per].join('\n');
}
