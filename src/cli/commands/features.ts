// `dwc-native features`: the global stream's frozen CLIP features of a whole dataset, natively
// (src/clip/features.ts), in the layout `train --features` reads (docs/DATA.md). Resumable: an
// interrupted run (Ctrl-C, a crash) continues where it stopped when started again.
import { CommanderError, type Command } from 'commander';
import { computeClipFeatures } from '../../clip/features.js';
import { ClipTokenizer } from '../../clip/tokenizer.js';
import { loadDataset } from '../../data/index.js';
import { DwcError } from '../../native.js';
import { int, PRECISION_HELP } from '../options.js';
import { usePrecision } from '../../precision.js';
import { Progress } from '../progress.js';

const KINDS = ['generic', 'synthetic', 'fashioniq', 'shoes', 'fashion200k', 'auto'];

interface FeaturesFlags {
  clip: string;
  dataset: string;
  data: string;
  out: string;
  vocab?: string;
  batchSize: number;
  saveEvery: number;
  workers?: number;
  resample: string;
  truncate: boolean;
  restart?: boolean;
  json?: boolean;
  precision?: string;
}

export function register(program: Command): void {
  program
    .command('features')
    .description("compute the global stream's frozen CLIP features of a dataset (images through CLIP's preprocessing, query texts through its tokenizer) for train --features")
    .requiredOption('--clip <dir>', 'CLIP weights: a folder with model.safetensors / open_clip_model.safetensors and its vocabulary, or a safetensors file')
    .option('--dataset <kind>', `dataset layout: ${KINDS.join(' | ')}`, 'auto')
    .requiredOption('--data <dir>', 'dataset folder')
    .requiredOption('--out <file>', 'feature file to write (safetensors; partial progress in <file>.partial/)')
    .option('--vocab <path>', 'tokenizer vocabulary (default: the one in the --clip folder)')
    .option('--batch-size <n>', 'items per native call', int, 32)
    .option('--save-every <n>', 'rows between saves of the partial progress', int, 512)
    .option('--workers <n>', 'images decoded at once (default: the cores, at most 8)', int)
    .option('--resample <r>', "pil (Pillow's bicubic, as CLIP was trained) | sharp (libvips, faster, a few levels off)", 'pil')
    .option('--no-truncate', 'fail on a text longer than the context instead of cutting it')
    .option('--restart', 'ignore the partial progress of an earlier run')
    .option('--precision <p>', `${PRECISION_HELP} (partial progress made at the other precision is started over)`)
    .option('--json', 'one JSON object per line and event on stdout')
    .addHelpText('after', '\nExample:\n  dwc-native features --clip weights/ViT-B-32 --dataset fashioniq --data data/fashioniq --out fiq-clip.safetensors\n  dwc-native train --dataset fashioniq --data data/fashioniq --features fiq-clip.safetensors --feature-dim 512\n')
    .action(async (f: FeaturesFlags) => {
      const p = new Progress({ json: !!f.json });
      usePrecision(f.precision); // CLIP's GEMMs and convolutions (src/precision.ts)
      if (!KINDS.includes(f.dataset)) throw new DwcError(`--dataset must be one of ${KINDS.join(', ')}, got '${f.dataset}'`, 'DWC_BAD_ARGUMENT');
      if (f.resample !== 'pil' && f.resample !== 'sharp') throw new DwcError(`--resample must be pil or sharp, got '${f.resample}'`, 'DWC_BAD_ARGUMENT');
      const format = f.dataset === 'synthetic' ? 'generic' : (f.dataset as 'generic');
      const ds = loadDataset(f.data, { format });
      const ac = new AbortController();
      const onSig = () => {
        if (ac.signal.aborted) process.exit(130);
        p.info('\nstopping after this batch; run the same command again to continue (Ctrl-C again to quit at once)');
        ac.abort();
      };
      process.on('SIGINT', onSig);
      try {
        p.info(`features of ${ds.name} (${ds.format}): ${ds.images.length} images, query texts of ${ds.splits.join(', ')} → ${f.out}`);
        const r = await computeClipFeatures({
          clip: f.clip,
          dataset: ds,
          out: f.out,
          ...(f.vocab ? { tokenizer: ClipTokenizer.load(f.vocab) } : {}),
          batchSize: f.batchSize,
          saveEvery: f.saveEvery,
          ...(f.workers ? { concurrency: f.workers } : {}),
          resample: f.resample as 'pil' | 'sharp',
          truncate: f.truncate,
          restart: !!f.restart,
          signal: ac.signal,
          onLog: (m) => {
            p.info(m);
            p.event({ event: 'log', message: m });
          },
          onProgress: (phase, done, total) => {
            p.bar(`  ${phase}`, done, total);
            if (done === total) p.endBar(`  ${phase}: ${total}`);
          },
        });
        p.event({ event: r.interrupted ? 'interrupted' : 'done', ...r });
        if (r.interrupted) {
          p.info(`interrupted after ${r.resumedRows + r.computedRows} rows; run the same command to continue`);
          throw new CommanderError(130, 'dwc-native.interrupted', '');
        }
        const per = r.computedRows / Math.max(r.seconds, 1e-9);
        p.print(`wrote ${r.out}: image [${r.images}, ${r.dim}], ${Object.entries(r.texts).map(([s, n]) => `query_text.${s} [${n}, ${r.dim}]`).join(', ')}` +
          `${r.resumedRows ? ` (${r.resumedRows} rows resumed)` : ''}, ${r.seconds.toFixed(1)} s, ${per.toFixed(1)} rows/s`);
        if (r.skippedSplits.length) p.print(`not written: query texts of ${r.skippedSplits.join(', ')} (drawn per epoch)`);
        p.print(`train with: dwc-native train --dataset ${ds.format} --data ${f.data} --features ${f.out} --feature-dim ${r.dim}`);
      } finally {
        process.off('SIGINT', onSig);
      }
    });
}
