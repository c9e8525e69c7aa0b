// `dwc-native pretrain`: PL4CIR stage 2 (domain transfer, PL4CIR-SPEC.md §1) — the CLIP loss on a
// dataset's image–caption pairs, from given CLIP weights (--clip) or a small CLIP from scratch
// (--from-scratch); per-epoch image↔caption recall and zero-shot composition (§4) on the
// validation split; Ctrl-C saves last.safetensors, --resume continues exactly (src/train/pretrain.ts).
import { CommanderError, type Command } from 'commander';
import { pretrain, type PretrainCallbacks, type PretrainConfig, type PretrainEvalRecord } from '../../train/pretrain.js';
import { DATASETS } from '../../train/config.js';
import { Progress, fmtRecall } from '../progress.js';
import { givenOptions, int, num } from '../options.js';
import { DwcError } from '../../native.js';

function toConfig(f: Record<string, unknown>): Partial<PretrainConfig> {
  const c: Record<string, unknown> = {};
  const direct = ['dataset', 'data', 'clip', 'fromScratch', 'merges', 'epochs', 'batchSize', 'lr', 'warmup', 'lrMinFactor', 'beta1', 'beta2', 'eps', 'weightDecay',
    'imageSize', 'shift', 'rephrase', 'seed', 'out', 'evalBatchSize', 'limitTrain', 'split', 'evalComposition', 'workers'];
  for (const k of direct) if (f[k] !== undefined) c[k] = f[k];
  if (c.dataset !== undefined && !DATASETS.includes(c.dataset as never)) throw new DwcError(`--dataset must be one of ${DATASETS.join(', ')}, got '${String(c.dataset)}'`, 'DWC_BAD_ARGUMENT');
  if (c.dataset !== undefined && c.dataset !== 'synthetic' && !c.data) throw new DwcError(`--dataset ${String(c.dataset)} needs its folder: pass --data <dir>`, 'DWC_BAD_ARGUMENT');
  const arch: Record<string, unknown> = {};
  for (const [flag, key] of [['patch', 'patchSize'], ['visionWidth', 'visionWidth'], ['visionLayers', 'visionLayers'], ['textWidth', 'textWidth'], ['textLayers', 'textLayers'], ['context', 'contextLength'], ['embedDim', 'embedDim']])
    if (f[flag] !== undefined) arch[key] = f[flag];
  if (Object.keys(arch).length) {
    if (!f.fromScratch) throw new DwcError(`--${Object.keys(arch).map((k) => k).join(', --')}: size flags only apply with --from-scratch`, 'DWC_BAD_ARGUMENT');
    c.arch = arch;
  }
  const synth: Record<string, unknown> = {};
  for (const [flag, key] of [['synthSeed', 'seed'], ['noise', 'noise'], ['trainQueries', 'trainQueries'], ['testQueries', 'testQueries'], ['valQueries', 'valQueries']]) if (f[flag] !== undefined) synth[key] = f[flag];
  if (Object.keys(synth).length) c.synth = synth;
  return c as Partial<PretrainConfig>;
}

const compLine = (r: PretrainEvalRecord) => (r.composition?.length ? `  zero-shot composition ${r.composition.map((s) => `${r.composition!.length > 1 ? s.name + ' ' : ''}${fmtRecall(s.recall)}`).join(' | ')}` : '');

/**
 * Console and --json output of a pretrain run (this command, and stage 2 of `train --stages 2,3`):
 * `tag` is added to every --json event (train: { stage: 2 }), `indent` to every line.
 */
export function pretrainCallbacks(p: Progress, o: { epochs?: number; resumed: boolean; tag?: Record<string, unknown>; indent?: string }): PretrainCallbacks {
  const ev = (e: object) => p.event({ ...e, ...o.tag });
  const ind = o.indent ?? '';
  let label = '';
  let avg = 0;
  return {
    onLog: (m) => p.info(ind + m),
    onStart: (s) => {
      const a = s.arch;
      const tower = a.image === 'resnet' ? `ResNet [${a.rnLayers.join(',')}] width ${a.rnWidth} at ${a.resolution}²` : `ViT ${a.visionLayers}×${a.visionWidth} patch ${a.patchSize} at ${a.resolution}²`;
      p.info(`${ind}pretraining CLIP (${tower}, text ${a.textLayers}×${a.textWidth} context ${a.contextLength}, embed ${a.embedDim}, vocabulary ${s.vocabSize}) on ${s.pairs} image–caption pairs, ${s.batchesPerEpoch} batches/epoch → ${s.out}`);
      if (s.truncated) p.info(`${ind}note: ${s.truncated} training captions are longer than the context ${s.context} and are truncated`);
      ev({ event: 'start', pairs: s.pairs, valPairs: s.valPairs, batchesPerEpoch: s.batchesPerEpoch, out: s.out, arch: s.arch, vocabSize: s.vocabSize, truncated: s.truncated, rephrase: s.rephrase, resumedAt: o.resumed ? { epoch: s.startEpoch, batch: s.startBatch } : null });
    },
    onStep: (s) => {
      avg = s.batch === 0 || !avg ? s.loss : 0.9 * avg + 0.1 * s.loss;
      label = `${ind}epoch ${s.epoch + 1}${o.epochs ? `/${o.epochs}` : ''}`;
      p.bar(label, s.batch + 1, s.batches, `loss ${avg.toFixed(4)}  lr ${s.lr.toExponential(2)}  ${s.itemsPerSec.toFixed(0)} pairs/s`);
    },
    onEpoch: (e) => {
      p.endBar(`${label || `${ind}epoch ${e.epoch}`}: loss ${e.loss.toFixed(4)}  ${e.itemsPerSec.toFixed(1)} pairs/s  ${e.seconds.toFixed(1)} s`);
      ev({ ...e });
    },
    onEvalProgress: (phase, done, total) => p.bar(`${ind}  eval ${phase}`, done, total),
    onEval: (e) => {
      p.endBar(`${ind}${pretrainEvalLine(e)}`);
      ev({ ...e });
    },
  };
}

/** One line of a pretrain evaluation record. */
export function pretrainEvalLine(ev: PretrainEvalRecord): string {
  const head = ev.event === 'test' ? `  ${ev.split} (model.safetensors, epoch ${ev.epoch})` : `  eval epoch ${ev.epoch} (${ev.split})`;
  const it = Object.keys(ev.imageToText).length ? `: image→caption ${fmtRecall(ev.imageToText)}  caption→image ${fmtRecall(ev.textToImage)}` : ':';
  return `${head}${it}${compLine(ev)}${ev.best ? '  (best)' : ''}`;
}

export function register(program: Command): void {
  program
    .command('pretrain')
    .description('PL4CIR stage 2: train CLIP with its contrastive loss on image–caption pairs of a dataset (given weights or a small CLIP from scratch)')
    .option('--dataset <kind>', 'synthetic (default: the built-in benchmark) | generic | fashioniq | shoes | fashion200k — every image with a caption is a pair')
    .option('--data <dir>', 'dataset folder (synthetic: generated into the cache when omitted)')
    .option('--clip <dir>', 'CLIP weights to continue from (a folder with model.safetensors / open_clip_model.safetensors and its vocabulary)')
    .option('--from-scratch', 'a small CLIP initialised here (sizes below; vocabulary learnt from the training captions and texts)')
    .option('--patch <px>', 'from scratch: ViT patch size (default 8)', int)
    .option('--vision-width <w>', 'from scratch: image tower width, a multiple of 64 (default 128)', int)
    .option('--vision-layers <n>', 'from scratch: image tower layers (default 4)', int)
    .option('--text-width <w>', 'from scratch: text tower width, a multiple of 64 (default 128)', int)
    .option('--text-layers <n>', 'from scratch: text tower layers (default 4)', int)
    .option('--context <n>', 'from scratch: text context length (default: the longest training caption, a multiple of 8, ≤ 77)', int)
    .option('--embed-dim <n>', 'from scratch: joint embedding dim (default 128)', int)
    .option('--merges <n>', 'from scratch: most BPE merges of the vocabulary (default 1000)', int)
    .option('--epochs <n>', 'epochs (default 5; 0 = only evaluate the given weights)', int)
    .option('--batch-size <n>', 'image–caption pairs per step (default 64)', int)
    .option('--lr <rate>', 'peak Adam learning rate (default 5e-4; use ~1e-5 for pretrained weights)', num)
    .option('--warmup <steps>', 'linear warm-up steps before the cosine decay (default 100)', int)
    .option('--lr-min-factor <f>', 'cosine decay ends at f × lr (default 0)', num)
    .option('--weight-decay <v>', 'L2 weight decay added to the gradient (default 0)', num)
    .option('--image-size <px>', 'image side (default 64; with --clip: its resolution)', int)
    .option('--shift <px>', 'augmentation: random translation by up to px pixels (default 0; no flip: captions name left/right)', int)
    .option('--rephrase <mode>', "auto (default: the synthetic generator's captions re-phrased every epoch) | off")
    .option('--seed <n>', 'seed of initialisation, data order, phrasing and augmentation (default 0)', int)
    .option('--split <name>', "validation split (default: the dataset's, else its eval split)")
    .option('--no-eval-composition', 'skip the zero-shot composition baseline in validation and test')
    .option('--eval-batch-size <n>', 'batch size of the embedding passes (default 128)', int)
    .option('--limit-train <n>', 'use only the first n training pairs', int)
    .option('--workers <n>', 'image decode concurrency (0 = cores)', int)
    .option('--synth-seed <n>', 'synthetic: generator seed', int)
    .option('--noise <rate>', 'synthetic: fraction of noisy training queries', num)
    .option('--train-queries <n>', 'synthetic: training queries', int)
    .option('--test-queries <n>', 'synthetic: test queries', int)
    .option('--val-queries <n>', 'synthetic: validation queries', int)
    .option('--out <dir>', 'run folder: model.safetensors, vocab.json, merges.txt, config.json, metrics.jsonl, last.safetensors (default runs/pretrain)')
    .option('--resume <dir>', 'continue an interrupted run from its folder (its settings; --epochs may raise the count)')
    .option('--json', 'one JSON object per line and event on stdout')
    .addHelpText('after', '\nExamples:\n  dwc-native pretrain --from-scratch --epochs 3 --out runs/clip-small\n  dwc-native pretrain --clip weights/ --dataset fashioniq --data fashioniq/ --lr 1e-5 --out runs/clip-fiq\n  dwc-native pretrain --clip runs/clip-small --epochs 0 --out runs/zero-shot   (evaluate only)\n')
    .action(async (_o: Record<string, unknown>, cmd: Command) => {
      const given = givenOptions(cmd);
      if (cmd.getOptionValueSource('evalComposition') === 'cli') given.evalComposition = false;
      const p = new Progress({ json: !!given.json });
      const config = toConfig(given);
      if (!given.resume && !config.out) config.out = 'runs/pretrain';
      if (given.resume && Object.keys(config).some((k) => k !== 'epochs')) throw new DwcError(`--resume continues with the run's own settings; only --epochs may be given with it (got ${Object.keys(config).filter((k) => k !== 'epochs').join(', ')})`, 'DWC_BAD_ARGUMENT');
      const ac = new AbortController();
      const onSig = () => {
        if (ac.signal.aborted) process.exit(130);
        p.info('\nstopping after this step and saving last.safetensors (Ctrl-C again to quit at once)');
        ac.abort();
      };
      process.on('SIGINT', onSig);
      const t0 = Date.now();
      try {
        const r = await pretrain({
          config,
          resume: given.resume ? String(given.resume) : undefined,
          signal: ac.signal,
          callbacks: pretrainCallbacks(p, { epochs: config.epochs, resumed: !!given.resume }),
        });
        if (r.interrupted) {
          p.event({ event: 'interrupted', last: r.last, epochsDone: r.epochsDone, steps: r.steps });
          throw new CommanderError(130, 'dwc-native.interrupted', '');
        }
        const mins = ((Date.now() - t0) / 60000).toFixed(1);
        p.print(`CLIP: ${r.model} (best epoch ${r.best?.epoch ?? '-'}), tokenizer: ${r.out}/vocab.json + merges.txt, ${mins} min`);
        p.event({ event: 'done', model: r.model, last: r.last, best: r.best, test: r.test ?? null, out: r.out, minutes: Number(mins) });
      } finally {
        process.off('SIGINT', onSig);
      }
    });
}
