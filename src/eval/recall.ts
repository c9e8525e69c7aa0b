// Recall@K (spec §7): percentage of queries with a hit among their top K, the query's own
// reference image removed from its ranking; a hit is a gallery image sharing the target's key
// (same id, scene id or caption, per the dataset's rule).
import { topK, type TopK } from './topk.js';

export type Recall = Record<string, number>;

export interface RecallInput {
  /** [Q, D] query embeddings. */
  queries: Float32Array;
  /** [N, D] gallery embeddings. */
  gallery: Float32Array;
  D: number;
  /** Hit key of each gallery image. */
  galleryKeys: readonly string[];
  /** Hit key of each query's target. */
  targetKeys: readonly string[];
  /** Gallery index of each query's reference image (-1 when not in the gallery). */
  sourceIndex: Int32Array;
  ks: readonly number[];
}

export interface RecallResult {
  recall: Recall;
  /** Per query: rank (0-based) of the first hit within max(ks), or -1. */
  firstHit: Int32Array;
  top: TopK;
}

/** Recall@K from precomputed rankings; keys compared as strings. */
export function recallFromTopK(top: TopK, galleryKeys: readonly string[], targetKeys: readonly string[], ks: readonly number[]): { recall: Recall; firstHit: Int32Array } {
  const Q = targetKeys.length;
  const k = top.k;
  const firstHit = new Int32Array(Q).fill(-1);
  for (let q = 0; q < Q; q++) {
    for (let t = 0; t < k; t++) {
      const j = top.indices[q * k + t];
      if (j >= 0 && galleryKeys[j] === targetKeys[q]) {
        firstHit[q] = t;
        break;
      }
    }
  }
  const recall: Recall = {};
  for (const K of ks) {
    let hits = 0;
    for (let q = 0; q < Q; q++) if (firstHit[q] >= 0 && firstHit[q] < K) hits++;
    recall[String(K)] = Q ? (100 * hits) / Q : 0;
  }
  return { recall, firstHit };
}

export function computeRecall(inp: RecallInput, opts: { blockRows?: number } = {}): RecallResult {
  const kmax = Math.max(...inp.ks);
  const top = topK(inp.queries, inp.gallery, inp.D, kmax, { exclude: inp.sourceIndex, blockRows: opts.blockRows });
  const { recall, firstHit } = recallFromTopK(top, inp.galleryKeys, inp.targetKeys, inp.ks);
  return { recall, firstHit, top };
}

/** Mean of the recall values (the number best checkpoints are chosen by). */
export function meanRecall(r: Recall): number {
  const v = Object.values(r);
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0;
}
