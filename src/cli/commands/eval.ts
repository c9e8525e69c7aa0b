// `dwc-native eval --checkpoint … [--data …]`: the dataset's protocol (spec §7) in eval mode.
import type { Command } from 'commander';
import { evaluateCheckpoint } from '../../eval/run.js';
import { formatEvalTable } from '../../eval/evaluate.js';
import { awEvalStats } from '../../eval/records.js';
import { Progress } from '../progress.js';
import { givenOptions, int, num, PRECISION_HELP } from '../options.js';
import { currentPrecision, usePrecision } from '../../precision.js';
import { addon } from '../../native.js';

export function register(program: Command): void {
  program
    .command('eval')
    .description("evaluate a checkpoint with its dataset's protocol (Recall@K, spec §7)")
    .requiredOption('--checkpoint <file>', 'checkpoint written by train (best.safetensors)')
    .option('--data <dir>', 'dataset folder (default: the one it was trained on)')
    .option('--dataset <kind>', 'synthetic | generic | fashioniq | shoes | fashion200k (default: as trained)')
    .option('--category <name>', 'FashionIQ category: dress | shirt | toptee | all')
    .option('--split <name>', "split to evaluate: val | test (default: the dataset's eval split, test)")
    .option('--preset <name>', 'refuse a checkpoint of another preset')
    .option('--batch-size <n>', 'embedding batch size', int)
    .option('--fusion-beta <b>', "both streams: score with this halves' weight β (β·s_G + s_L) instead of the checkpoint's stored β (docs/MODEL.md §7)", num)
    .option('--device <dev>', 'cpu | cuda | cuda:N')
    .option('--precision <p>', PRECISION_HELP)
    .option('--json', 'one JSON object per line on stdout')
    .action(async (_o: Record<string, unknown>, cmd: Command) => {
      const { precision, ...given } = givenOptions(cmd);
      usePrecision(precision as string | undefined, given.device as string | undefined); // this process's GEMMs and convolutions (src/precision.ts)
      const f = given as { checkpoint: string; data?: string; dataset?: string; category?: string; split?: string; preset?: string; batchSize?: number; device?: string; fusionBeta?: number; json?: boolean };
      f.checkpoint = String(cmd.opts().checkpoint);
      const p = new Progress({ json: !!f.json });
      const r = await evaluateCheckpoint({
        ...f,
        onProgress: (set, phase, done, total) => p.bar(`${set} ${phase}`, done, total),
      });
      p.endBar();
      for (const s of r.sets) {
        const aw = awEvalStats(s); // adaptive weighting on: mean |w − w*| per stream
        p.event({ event: 'eval', set: s.name, split: s.split, queries: s.queries, gallery: s.gallery, recall: s.recall, ...(s.fusionBeta !== undefined ? { fusionBeta: s.fusionBeta } : {}), ...(s.streams ? { streams: s.streams } : {}), ...(aw ? { aw } : {}), ...(s.breakdown ? { breakdown: s.breakdown } : {}) });
      }
      p.event({ event: 'done', checkpoint: f.checkpoint, recall: r.recall, mean: r.mean, precision: currentPrecision(), bf16Calls: addon().kernelStats().bf16Calls ?? 0 });
      p.print(formatEvalTable(r));
    });
}
