// Recall@K per kind of query (docs/MODEL.md §7): when a dataset's queries carry `op` and / or
// `dominance` (the synthetic generator writes them, src/data/synth.ts), the recall of the ranking
// and of each stream's half alone over the queries of each operation and each dominant modality.
import type { Query } from '../data/dataset.js';
import type { Recall } from './recall.js';

export interface BreakdownGroup {
  /** The query field grouped by. */
  by: 'dominance' | 'op';
  /** Its value (e.g. 'text', 'move'). */
  value: string;
  /** Queries in the group. */
  queries: number;
  /** Recall@K of the ranking (at the set's β) over the group's queries. */
  recall: Recall;
  /** Both streams: each half alone over the same queries. */
  global?: Recall;
  local?: Recall;
}

/** First-hit ranks (0-based, −1: none within max K) of one ranking per query, as recallFromTopK gives them. */
export interface FirstHits {
  combined: Int32Array;
  global?: Int32Array;
  local?: Int32Array;
}

function groupRecall(idx: readonly number[], firstHit: Int32Array, ks: readonly number[]): Recall {
  const r: Recall = {};
  for (const K of ks) {
    let hits = 0;
    for (const q of idx) if (firstHit[q] >= 0 && firstHit[q] < K) hits++;
    r[String(K)] = idx.length ? (100 * hits) / idx.length : 0;
  }
  return r;
}

/**
 * Groups the queries by `dominance`, then by `op` (values in order of first appearance) and scores
 * each group from the first-hit ranks; undefined when no query carries either field. A query
 * without the field is in no group of it.
 */
export function recallBreakdown(queries: readonly Query[], hits: FirstHits, ks: readonly number[]): BreakdownGroup[] | undefined {
  const n = queries.length;
  for (const [name, a] of Object.entries(hits)) if (a && a.length !== n) throw new Error(`recallBreakdown: ${name} first hits for ${a.length} queries, expected ${n}`);
  const out: BreakdownGroup[] = [];
  for (const by of ['dominance', 'op'] as const) {
    const groups = new Map<string, number[]>();
    queries.forEach((q, i) => {
      const v = q[by];
      if (v === undefined || v === null || v === '') return;
      let g = groups.get(String(v));
      if (!g) groups.set(String(v), (g = []));
      g.push(i);
    });
    for (const [value, idx] of groups) {
      out.push({
        by,
        value,
        queries: idx.length,
        recall: groupRecall(idx, hits.combined, ks),
        ...(hits.global ? { global: groupRecall(idx, hits.global, ks) } : {}),
        ...(hits.local ? { local: groupRecall(idx, hits.local, ks) } : {}),
      });
    }
  }
  return out.length ? out : undefined;
}

/** Plain-text table of a breakdown: one row per group, R@K of the ranking and of each half alone. */
export function formatBreakdown(groups: readonly BreakdownGroup[], k?: string): string {
  if (!groups.length) return '';
  const K = k ?? Object.keys(groups[0].recall)[0];
  const halves = groups.some((g) => g.global || g.local);
  const head = ['queries', 'n', `R@${K}`, ...(halves ? [`global R@${K}`, `local R@${K}`] : [])];
  const f = (r?: Recall) => (r && r[K] !== undefined ? r[K].toFixed(1) : '–');
  const rows = groups.map((g) => [`${g.by} ${g.value}`, String(g.queries), f(g.recall), ...(halves ? [f(g.global), f(g.local)] : [])]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  return [line(head), line(w.map((x) => '-'.repeat(x))), ...rows.map(line)].join('\n');
}
