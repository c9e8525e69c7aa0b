// The halves' weight β of a two-stream model (docs/MODEL.md §7): a query·gallery score
// s = β·s_G + s_L, i.e. the global half q_G of every query embedding [q_G; q_L] scaled by β
// (β = 1 is the paper's sum). One helper for every place that scores: the native model's
// embedQueries (eval, search, serve and the gallery index all read it) and the β grid of
// `fusionBeta: 'auto'` (evaluateSet, from embeddings taken once at β = 1).

/** Candidate β of `--fusion-beta auto`, tried on the validation split after training. */
export const FUSION_BETA_GRID: readonly number[] = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.5, 2];

/** Largest β accepted (a larger one is the global half alone in all but ties). */
export const FUSION_BETA_MAX = 100;

/** Rows [n, D] = [global | local] halves: the global half of each row scaled by β (a copy; β = 1: the input). */
export function scaleGlobalHalf(e: Float32Array, D: number, beta: number): Float32Array {
  if (beta === 1) return e;
  if (D % 2 !== 0) throw new RangeError(`scaleGlobalHalf: the dim ${D} is not two equal halves`);
  const out = new Float32Array(e);
  const h = D / 2;
  for (let r = 0, n = e.length / D; r < n; r++) {
    const o = r * D;
    for (let j = 0; j < h; j++) out[o + j] *= beta;
  }
  return out;
}

/**
 * The β of a grid with the best mean recall; ties go to the β nearest 1 (the paper's sum), then
 * the smaller one.
 */
export function pickFusionBeta(curve: readonly { beta: number; mean: number }[]): number {
  let best = curve[0];
  for (const c of curve.slice(1)) {
    if (c.mean > best.mean + 1e-9) best = c;
    else if (Math.abs(c.mean - best.mean) <= 1e-9 && Math.abs(c.beta - 1) < Math.abs(best.beta - 1)) best = c;
  }
  return best.beta;
}

/** One point of a β curve: Recall@K and its mean over Ks. */
export interface FusionPoint {
  beta: number;
  recall: Record<string, number>;
  mean: number;
}

/** What a per-epoch evaluation is judged by (best checkpoint, the `eval` record). */
export interface EpochFusion {
  recall: Record<string, number>;
  mean: number;
  /** A β curve was scored: the β of its best mean (pickFusionBeta), at which recall / mean are. */
  fusionBeta?: number;
  fusionCurve?: FusionPoint[];
  /** Per eval set (several protocols, e.g. FashionIQ's categories): recall at that β. */
  sets?: { name: string; recall: Record<string, number> }[];
}

/**
 * `fusionBeta: 'auto'` per epoch (docs/MODEL.md §7): an evaluation that scored the β grid (same
 * embeddings, the global half scaled) is judged at the grid's best β; the epoch with the best
 * mean at its own β is the best checkpoint, and that β is stored with it. Without a curve (one
 * stream, or a fixed β): the evaluation as scored.
 */
export function epochFusion(r: { recall: Record<string, number>; mean: number; fusionCurve?: FusionPoint[]; sets: { name: string; recall: Record<string, number>; fusionCurve?: { beta: number; recall: Record<string, number> }[] }[] }): EpochFusion {
  const sets = (at?: number) => r.sets.map((s) => ({ name: s.name, recall: (at !== undefined ? s.fusionCurve?.find((c) => c.beta === at)?.recall : undefined) ?? s.recall }));
  if (!r.fusionCurve?.length) return { recall: r.recall, mean: r.mean, sets: sets() };
  const beta = pickFusionBeta(r.fusionCurve);
  const at = r.fusionCurve.find((c) => c.beta === beta)!;
  return { recall: at.recall, mean: at.mean, fusionBeta: beta, fusionCurve: r.fusionCurve, sets: sets(beta) };
}
