// `dwc-native train`: the small preset on the built-in synthetic benchmark by default; every
// setting of the config as a flag; --config JSON file; --resume; Ctrl-C saves a checkpoint.
import { CommanderError, type Command } from 'commander';
import { readCheckpointInfo } from '../../train/checkpoint.js';
import { readConfigFile, resolveConfig, type PartialConfig, type TrainConfig } from '../../train/config.js';
import { resumePath, train } from '../../train/trainer.js';
import { writeReport } from '../../report/report.js';
import type { Ablation } from '../../train/types.js';
import { fmtRecall, Progress } from '../progress.js';
import { givenOptions, int, list, num, PRECISION_HELP } from '../options.js';
import { checkPrecision } from '../../precision.js';

/** Maps the given flags onto the config's shape. */
export function flagsToConfig(f: Record<string, unknown>): PartialConfig {
  const c: PartialConfig = {};
  const dims: Record<string, number> = {};
  const synth: Record<string, number> = {};
  const direct: [string, keyof TrainConfig][] = [
    ['preset', 'preset'], ['dataset', 'dataset'], ['data', 'data'], ['category', 'category'], ['epochs', 'epochs'],
    ['batchSize', 'batchSize'], ['lr', 'lr'], ['lrLocal', 'lrLocal'], ['lrSchedule', 'lrSchedule'], ['weightDecay', 'weightDecay'], ['seed', 'seed'], ['device', 'device'],
    ['out', 'out'], ['features', 'features'], ['clip', 'clip'], ['trunk', 'trunk'], ['encoderTrunk', 'encoderTrunk'], ['encoderGrid', 'encoderGrid'], ['trunkWeights', 'trunkWeights'], ['maskPadding', 'maskPadding'], ['mutualTarget', 'mutualTarget'],
    ['detachSoftLabels', 'detachSoftLabels'], ['maxLength', 'maxLength'], ['evalEvery', 'evalEvery'], ['evalBatchSize', 'evalBatchSize'], ['split', 'evalSplit'],
    ['flip', 'flip'], ['workers', 'workers'], ['limitTrain', 'limitTrain'], ['report', 'report'],
  ];
  for (const [flag, key] of direct) if (f[flag] !== undefined) (c as Record<string, unknown>)[key] = f[flag];
  if (f.ablation !== undefined) c.ablations = f.ablation as Ablation[];
  if (f.adaptiveWeighting !== undefined) {
    const v = f.adaptiveWeighting as string[];
    c.adaptiveWeighting = (v.length === 1 && v[0] === 'none' ? [] : v) as ('global' | 'local')[];
  }
  if (f.awTau !== undefined) c.awTau = f.awTau as number;
  if (f.awLambda !== undefined) c.awLambda = f.awLambda as number;
  const dimFlags: [string, string][] = [['dim', 'D'], ['channels', 'C'], ['embed', 'E'], ['featureDim', 'Dc'], ['imageSize', 'imageSize']];
  for (const [flag, key] of dimFlags) if (f[flag] !== undefined) dims[key] = f[flag] as number;
  if (f.mapSize !== undefined) dims.H = dims.W = f.mapSize as number;
  if (f.synthSeed !== undefined) synth.seed = f.synthSeed as number;
  if (f.noise !== undefined) synth.noise = f.noise as number;
  if (f.trainQueries !== undefined) synth.trainQueries = f.trainQueries as number;
  if (f.testQueries !== undefined) synth.testQueries = f.testQueries as number;
  if (f.valQueries !== undefined) synth.valQueries = f.valQueries as number;
  if (Object.keys(dims).length) c.dims = dims;
  if (Object.keys(synth).length) c.synth = synth;
  return c;
}

export function register(program: Command): void {
  program
    .command('train')
    .description('train DWC (default: the small preset on the built-in synthetic benchmark, CPU)')
    .option('--config <file>', 'JSON file with any of the settings below (flags override it)')
    .option('--preset <name>', 'small | paper (spec §12)')
    .option('--dataset <kind>', 'synthetic | generic | fashioniq | shoes | fashion200k')
    .option('--data <dir>', 'dataset folder (synthetic: generated into the cache when omitted)')
    .option('--category <name>', 'FashionIQ category: dress | shirt | toptee | all')
    .option('--noise <rate>', 'synthetic: fraction of training queries with wrong text', num)
    .option('--synth-seed <n>', 'synthetic: generator seed', int)
    .option('--train-queries <n>', 'synthetic: training queries', int)
    .option('--test-queries <n>', 'synthetic: test queries', int)
    .option('--val-queries <n>', 'synthetic: validation queries (default: as many as test)', int)
    .option('--dim <D>', 'embedding dim', int)
    .option('--channels <C>', 'feature-map channels', int)
    .option('--map-size <H>', 'feature-map side (H = W)', int)
    .option('--embed <E>', 'word-embedding dim', int)
    .option('--feature-dim <Dc>', 'frozen feature dim of the global stream', int)
    .option('--image-size <px>', 'input image side', int)
    .option('--epochs <n>', 'epochs', int)
    .option('--batch-size <n>', 'batch size', int)
    .option('--lr <rate>', 'Adam learning rate (the global stream; the local stream too unless --lr-local)', num)
    .option('--lr-local <rate>', 'Adam learning rate of the local stream and its trunk (small preset: 5e-3; else --lr)', num)
    .option('--lr-schedule <s>', 'cosine (decay to 2% of --lr by the last iteration) | constant')
    .option('--weight-decay <v>', 'L2 weight decay', num)
    .option('--seed <n>', 'seed of initialisation, data order and dropout', int)
    .option('--device <dev>', 'cpu | cuda | cuda:N')
    .option('--out <dir>', 'run folder (config.json, metrics.jsonl, checkpoints, report)')
    .option('--features <file>', 'frozen global-stream features (safetensors)')
    .option('--clip <dir>', "CLIP weights folder (with its vocabulary): the global stream's frozen features computed natively and cached (Dc = CLIP's embed dim; excludes --features)")
    .option('--trunk <mode>', 'finetune | frozen (trunk maps computed once, cached next to the run; only the heads train)')
    .option('--encoder-trunk <kind>', "global stream's pooled encoder without --features: shared (GeM over the local trunk's maps, default) | own (a small trunk of its own, trained with the global stream)")
    .option('--encoder-grid <g>', "pooled encoder: GeM over each window of a g×g grid of the map, concatenated (default 1: one global GeM)", int)
    .option('--trunk-weights <file>', 'torchvision-named safetensors weights of the local trunk (e.g. ImageNet ResNet-50 for the paper preset)')
    .option('--ablation <names>', 'no-ssg, no-editors, fixed-w, no-mutual, global-only, local-only, image-only, text-only, no-aw (comma list)', list)
    .option('--adaptive-weighting <streams>', 'self-supervised adaptive weighting of the combiner w (PL4CIR, docs/MODEL.md): global,local | global | local | none (default none)', list)
    .option('--aw-tau <t>', 'adaptive weighting: temperature τ_w of w* = σ((s_I − s_T)/τ_w) (default 0.1)', num)
    .option('--aw-lambda <l>', 'adaptive weighting: weight λ_w of L_w = λ_w · mean BCE(w, w*) (default 0.1)', num)
    .option('--no-mask-padding', "run the LSTM, attention, the text editor's convolutions and pooling over padded tokens (the reference's behaviour, §10; embeddings then depend on the batch's padded length)")
    .option('--mutual-target <from>', 'target | reference: image the other stream embeds for L_mut (§10; small preset: reference, paper: target)')
    .option('--detach-soft-labels', 'no gradient through the soft labels (§5)')
    .option('--max-length <n>', 'max tokens per text', int)
    .option('--eval-every <n>', 'evaluate every n epochs', int)
    .option('--split <name>', "split of the per-epoch evaluation and best-checkpoint choice: val | test (default: the dataset's validation split, else its eval split; test is reported at the end)")
    .option('--eval-batch-size <n>', 'batch size for evaluation', int)
    .option('--flip', 'horizontal-flip augmentation')
    .option('--workers <n>', 'image decode concurrency (0 = cores)', int)
    .option('--limit-train <n>', 'use only the first n training queries', int)
    .option('--no-report', 'skip report.svg/report.png')
    .option('--resume <path>', 'continue a run from its folder or a last.safetensors')
    .option('--precision <p>', PRECISION_HELP)
    .option('--json', 'one JSON object per line and event on stdout')
    .action(async (_opts: Record<string, unknown>, cmd: Command) => {
      const given = givenOptions(cmd);
      checkPrecision(given.precision as string | undefined);
      delete given.precision;
      const p = new Progress({ json: !!given.json });
      const file = given.config ? readConfigFile(String(given.config)) : undefined;
      const resume = given.resume ? resumePath(String(given.resume)) : undefined;
      const base = resume ? readCheckpointInfo(resume).config : undefined;
      const cfg = resolveConfig(file, flagsToConfig(given), base);
      const ac = new AbortController();
      const onSig = () => {
        if (ac.signal.aborted) process.exit(130);
        p.info('\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)');
        ac.abort();
      };
      process.on('SIGINT', onSig);
      let epochLabel = '';
      let lossAvg = 0;
      let started = Date.now();
      try {
        const r = await train({
          config: cfg,
          resume,
          signal: ac.signal,
          reportWriter: writeReport,
          callbacks: {
            onLog: (m) => p.info(m),
            onFeatureProgress: (phase, done, total) => {
              p.bar(`  CLIP features: ${phase}`, done, total);
              if (done === total) {
                p.endBar(`  CLIP features: ${total} ${phase}`);
                p.event({ event: 'features', phase, total });
              }
            },
            onStart: (s) => {
              started = Date.now();
              p.info(`training ${cfg.preset} on ${cfg.dataset}: ${s.trainQueries} queries, ${s.batchesPerEpoch} batches/epoch, ${cfg.epochs} epochs → ${s.runDir}`);
              p.event({ event: 'start', preset: cfg.preset, dataset: cfg.dataset, trainQueries: s.trainQueries, batchesPerEpoch: s.batchesPerEpoch, epochs: cfg.epochs, out: s.runDir, resumedAt: resume ? { epoch: s.startEpoch, batch: s.startBatch } : null });
            },
            onStep: (s) => {
              lossAvg = s.batch === 0 || !lossAvg ? s.loss : 0.9 * lossAvg + 0.1 * s.loss;
              epochLabel = `epoch ${s.epoch + 1}/${cfg.epochs}`;
              p.bar(epochLabel, s.batch + 1, s.batches, `loss ${lossAvg.toFixed(4)}  ${s.itemsPerSec.toFixed(0)} items/s`);
            },
            onEpoch: (e) => {
              p.endBar(`${epochLabel || `epoch ${e.epoch}`}: loss ${e.loss.total?.toFixed(4)}  ${e.itemsPerSec.toFixed(1)} items/s  ${e.seconds.toFixed(1)} s`);
              p.event({ ...e });
            },
            onEvalProgress: (phase, done, total) => p.bar(`  eval ${phase}`, done, total),
            onEval: (ev, result) => {
              // each stream's half of the embeddings scored alone (one eval set: shown on the line)
              const st = result.sets.length === 1 ? result.sets[0].streams : undefined;
              const k = Object.keys(ev.recall)[0];
              const alone = st && k ? `  [alone: global R@${k} ${st.global[k].toFixed(1)}, local R@${k} ${st.local[k].toFixed(1)}]` : '';
              const aw = ev.aw ? `  [|w − w*|: ${Object.entries(ev.aw).map(([s, a]) => `${s} ${a.gap.toFixed(3)}`).join(', ')}]` : '';
              p.endBar(`  eval epoch ${ev.epoch} (${ev.split}): ${fmtRecall(ev.recall)}${ev.best ? '  (best)' : ''}${alone}${aw}`);
              p.event({ event: 'eval', epoch: ev.epoch, split: ev.split, recall: ev.recall, mean: ev.mean, best: ev.best, ...(ev.sets ? { sets: ev.sets } : {}), ...(st ? { streams: st } : {}), ...(ev.aw ? { aw: ev.aw } : {}) });
            },
            onTest: (ev, result) => {
              const st = result.sets.length === 1 ? result.sets[0].streams : undefined;
              p.endBar(`  ${ev.split} (${ev.model} model, epoch ${ev.epoch}): ${fmtRecall(ev.recall)}`);
              p.event({ event: 'test', epoch: ev.epoch, split: ev.split, model: ev.model, recall: ev.recall, mean: ev.mean, ...(ev.sets ? { sets: ev.sets } : {}), ...(st ? { streams: st } : {}), ...(ev.aw ? { aw: ev.aw } : {}) });
            },
          },
        });
        if (r.interrupted) {
          p.event({ event: 'interrupted', checkpoint: r.lastCheckpoint, epochsDone: r.epochsDone, steps: r.steps });
          throw new CommanderError(130, 'dwc-native.interrupted', '');
        }
        const mins = ((Date.now() - started) / 60000).toFixed(1);
        p.info('');
        p.print(r.best ? `best on ${r.evalSplit}: ${fmtRecall(r.best.recall)} (epoch ${r.best.epoch}) in ${mins} min` : 'no evaluation ran');
        if (r.test?.best) p.print(`${r.test.best.split} (best checkpoint): ${fmtRecall(r.test.best.recall)}`);
        if (r.test?.last && r.test.last.epoch !== r.test.best?.epoch) p.print(`${r.test.last.split} (last, epoch ${r.test.last.epoch}): ${fmtRecall(r.test.last.recall)}`);
        p.print(`checkpoint: ${r.bestCheckpoint}`);
        if (r.report) p.print(`report:     ${r.report[r.report.length - 1]}`);
        p.event({ event: 'done', best: r.best, split: r.evalSplit, test: r.test ? { best: r.test.best, last: r.test.last } : null, checkpoint: r.bestCheckpoint, last: r.lastCheckpoint, report: r.report ?? null, out: r.runDir, minutes: Number(mins) });
      } finally {
        process.off('SIGINT', onSig);
      }
    });
}
