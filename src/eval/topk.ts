// Top-K retrieval (spec §7): scores of a block of queries against the whole gallery by one GEMM,
// then a size-K min-heap per row (O(N log K)), never a full sort of a row.
import { runOp, tensor } from '../tensor.js';
import { DwcError } from '../native.js';

export interface TopK {
  /** [Q, k] gallery indices, best first; -1 where the gallery has fewer than k candidates. */
  indices: Int32Array;
  /** [Q, k] scores matching `indices` (-Infinity for empty slots). */
  scores: Float32Array;
  k: number;
}

export interface TopKOptions {
  /** Per query, a gallery index to leave out of its ranking (its own reference image), or -1. */
  exclude?: Int32Array;
  /** Queries per GEMM block (default: as many as keep the score block ≤ 32 MiB). */
  blockRows?: number;
  /** Score function override (tests): rows [r0, r1) of Q·Gᵀ into out [r1-r0, N]. */
  scoreBlock?: (r0: number, r1: number) => Float32Array;
}

/** Inserts (s, j) into the min-heap of size k held in hs/hi (hs[0] is the smallest kept). */
function heapPush(hs: Float32Array, hi: Int32Array, size: number, k: number, s: number, j: number): number {
  if (size < k) {
    let c = size++;
    while (c > 0) {
      const p = (c - 1) >> 1;
      if (hs[p] < s || (hs[p] === s && hi[p] > j)) break;
      hs[c] = hs[p];
      hi[c] = hi[p];
      c = p;
    }
    hs[c] = s;
    hi[c] = j;
    return size;
  }
  // Full: replace the root if better (ties: lower index wins, as a stable sort would keep it).
  if (s < hs[0] || (s === hs[0] && j > hi[0])) return size;
  let c = 0;
  for (;;) {
    const l = 2 * c + 1;
    if (l >= k) break;
    const r = l + 1;
    let m = l;
    if (r < k && (hs[r] < hs[l] || (hs[r] === hs[l] && hi[r] > hi[l]))) m = r;
    if (hs[m] > s || (hs[m] === s && hi[m] < j)) break;
    hs[c] = hs[m];
    hi[c] = hi[m];
    c = m;
  }
  hs[c] = s;
  hi[c] = j;
  return size;
}

/** Selects the k best of one row of scores (skipping `skip`) into out*, best first. */
export function selectTopK(row: Float32Array, k: number, skip: number, outIdx: Int32Array, outScore: Float32Array, off = 0): void {
  const hs = new Float32Array(k);
  const hi = new Int32Array(k);
  let size = 0;
  for (let j = 0; j < row.length; j++) {
    if (j === skip) continue;
    const s = row[j];
    if (s !== s) continue; // NaN never ranks
    size = heapPush(hs, hi, size, k, s, j);
  }
  // Pop the heap into descending order.
  const n = size;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => hs[b] - hs[a] || hi[a] - hi[b]);
  for (let t = 0; t < k; t++) {
    if (t < n) {
      outIdx[off + t] = hi[order[t]];
      outScore[off + t] = hs[order[t]];
    } else {
      outIdx[off + t] = -1;
      outScore[off + t] = -Infinity;
    }
  }
}

/**
 * Top-k gallery items for every query by dot product. queries [Q, D], gallery [N, D] row-major.
 * One GEMM per block of queries (runOp('gemm', {A, B}, {transB: true})), then selection per row.
 */
export function topK(queries: Float32Array, gallery: Float32Array, D: number, k: number, opts: TopKOptions = {}): TopK {
  if (!(D > 0) || queries.length % D !== 0 || gallery.length % D !== 0)
    throw new DwcError(`topK: embedding dim ${D} does not divide the query (${queries.length}) and gallery (${gallery.length}) lengths`, 'DWC_BAD_ARGUMENT');
  const Q = queries.length / D;
  const N = gallery.length / D;
  if (!Number.isInteger(k) || k < 1) throw new DwcError(`topK: 'k' must be a positive integer, got ${k}`, 'DWC_BAD_ARGUMENT');
  if (opts.exclude && opts.exclude.length !== Q) throw new DwcError(`topK: 'exclude' has ${opts.exclude.length} entries for ${Q} queries`, 'DWC_BAD_ARGUMENT');
  const indices = new Int32Array(Q * k);
  const scores = new Float32Array(Q * k);
  if (Q === 0) return { indices, scores, k };
  const block = opts.blockRows ?? Math.max(1, Math.min(Q, Math.floor((32 << 20) / 4 / Math.max(1, N))));
  const G = N > 0 && !opts.scoreBlock ? tensor(gallery, [N, D]) : undefined;
  try {
    for (let r0 = 0; r0 < Q; r0 += block) {
      const r1 = Math.min(Q, r0 + block);
      let S: Float32Array;
      if (opts.scoreBlock) S = opts.scoreBlock(r0, r1);
      else if (N === 0) S = new Float32Array(0);
      else {
        const A = tensor(queries.subarray(r0 * D, r1 * D), [r1 - r0, D]);
        const { C } = runOp('gemm', { A, B: G! }, { transB: true });
        S = C.toArray() as Float32Array;
        A.release();
        C.release();
      }
      for (let r = r0; r < r1; r++) {
        const row = S.subarray((r - r0) * N, (r - r0 + 1) * N);
        selectTopK(row, k, opts.exclude ? opts.exclude[r] : -1, indices, scores, r * k);
      }
    }
  } finally {
    G?.release();
  }
  return { indices, scores, k };
}

/** Brute force (full sort) top-k, for tests. */
export function topKBruteForce(queries: Float32Array, gallery: Float32Array, D: number, k: number, exclude?: Int32Array): TopK {
  const Q = queries.length / D;
  const N = gallery.length / D;
  const indices = new Int32Array(Q * k).fill(-1);
  const scores = new Float32Array(Q * k).fill(-Infinity);
  for (let q = 0; q < Q; q++) {
    const s: { j: number; v: number }[] = [];
    for (let j = 0; j < N; j++) {
      if (exclude && exclude[q] === j) continue;
      let v = 0;
      for (let d = 0; d < D; d++) v += queries[q * D + d] * gallery[j * D + d];
      s.push({ j, v });
    }
    s.sort((a, b) => b.v - a.v || a.j - b.j);
    for (let t = 0; t < Math.min(k, s.length); t++) {
      indices[q * k + t] = s[t].j;
      scores[q * k + t] = s[t].v;
    }
  }
  return { indices, scores, k };
}
