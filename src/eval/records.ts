// The records a training run writes to metrics.jsonl (and its --json events): per-epoch losses,
// per-epoch evaluations and the final test evaluation. Below both src/train/ (which writes them)
// and src/report/ (which plots them): imports nothing above src/eval/.
import type { Dataset } from '../data/dataset.js';
import type { EvalResult } from './evaluate.js';
import type { Recall } from './recall.js';
import type { BreakdownGroup } from './breakdown.js';

export interface EpochRecord {
  event: 'epoch';
  epoch: number;
  step: number;
  /** Mean losses over the epoch: total and per component (global.contrastive, ...; with adaptive weighting global.aw = L_w, global.awGap = mean |w − w*|). */
  loss: Record<string, number>;
  itemsPerSec: number;
  seconds: number;
}

export interface EvalRecord {
  /** 'eval': the per-epoch evaluation (validation split by default); 'test': the eval split after the last epoch. */
  event: 'eval' | 'test';
  epoch: number;
  /** Split evaluated. */
  split?: string;
  /** Which model a 'test' record scored: the best checkpoint (by the per-epoch split) or the last. */
  model?: 'best' | 'last';
  /** Recall@K in percent, keys "1", "5", "10" (per the dataset's protocol). */
  recall: Recall;
  mean: number;
  best: boolean;
  sets?: { name: string; recall: Recall }[];
  /** Adaptive weighting on: mean |w − w*| and mean w, w* over the evaluated queries, per stream (first set). */
  aw?: { global?: AwEvalStats; local?: AwEvalStats };
  /** Both streams: the halves' weight β the recall was scored with (docs/MODEL.md §7); a per-epoch
   *  'eval' with `fusionBeta: 'auto'`: the β of the curve's best mean, chosen on this epoch. */
  fusionBeta?: number;
  /** A per-epoch 'eval' with `fusionBeta: 'auto'`: Recall@K of every β of the grid (epochFusion, src/eval/fusion.ts). */
  fusionCurve?: { beta: number; recall: Recall; mean: number }[];
  /** Queries that carry `dominance` / `op` (synthetic benchmark): Recall@K per group, of the ranking
   *  at the record's β and of each half alone (first set; src/eval/breakdown.ts). */
  breakdown?: BreakdownGroup[];
}

/** `fusionBeta: 'auto'`: the β grid scored on the validation split with the best checkpoint, and the β chosen (docs/MODEL.md §7). */
export interface FusionRecord {
  event: 'fusion';
  /** Epoch of the checkpoint scored (the best one). */
  epoch: number;
  split: string;
  curve: { beta: number; recall: Recall; mean: number }[];
  beta: number;
}

export interface AwEvalStats {
  gap: number;
  w: number;
  wStar: number;
}

/** Mean |w − w*|, w and w* per stream of an eval set with w* (adaptive weighting). */
export function awEvalStats(s: { w?: Float32Array; wLocal?: Float32Array; wStar?: Float32Array }): EvalRecord['aw'] {
  if (!s.wStar) return undefined;
  const ws = s.wStar;
  const of = (w?: Float32Array): AwEvalStats | undefined => {
    if (!w || w.length !== ws.length || !w.length) return undefined;
    let gap = 0, mw = 0, mt = 0;
    for (let i = 0; i < w.length; i++) {
      gap += Math.abs(w[i] - ws[i]);
      mw += w[i];
      mt += ws[i];
    }
    return { gap: gap / w.length, w: mw / w.length, wStar: mt / w.length };
  };
  const out: NonNullable<EvalRecord['aw']> = {};
  const g = of(s.w), l = of(s.wLocal);
  if (g) out.global = g;
  if (l) out.local = l;
  return Object.keys(out).length ? out : undefined;
}

/** What a run's report is drawn from (src/report/report.ts writeReport). */
export interface WriteReportOptions {
  runDir: string;
  metrics: (EpochRecord | EvalRecord)[];
  evalResult: EvalResult;
  dataset: Dataset;
  title: string;
}

/** Writes a run's report files and returns their paths; handed to the trainer from above (src/api.ts, the CLI). */
export type ReportWriter = (o: WriteReportOptions) => Promise<string[]>;
