// `dwc-native train`: the small preset on the built-in synthetic benchmark by default; every
// setting of the config as a flag; --config JSON file; --resume; Ctrl-C saves a checkpoint;
// --stages 2,3 runs PL4CIR stage 2 (pretrain) before DWC (src/train/stages.ts).
import { CommanderError, InvalidArgumentError, type Command } from 'commander';
import { readCheckpointInfo } from '../../train/checkpoint.js';
import { ConfigError, readConfigFile, resolveConfig, type PartialConfig, type TrainConfig } from '../../train/config.js';
import { resumePath, train, type TrainCallbacks, type TrainResult } from '../../train/trainer.js';
import { readStagesFile, stagesRunDir, trainStages, STAGE2_EPOCHS, STAGE2_FINETUNE_LR } from '../../train/stages.js';
import { pretrainCallbacks, pretrainEvalLine } from './pretrain.js';
import { writeReport } from '../../report/report.js';
import type { Ablation } from '../../train/types.js';
import { fmtRecall, Progress } from '../progress.js';
import { formatBreakdown } from '../../eval/breakdown.js';
import { givenOptions, int, list, num, onOff, PRECISION_HELP } from '../options.js';
import { checkPrecision } from '../../precision.js';
import { addon } from '../../native.js';

/** Maps the given flags onto the config's shape. */
export function flagsToConfig(f: Record<string, unknown>): PartialConfig {
  const c: PartialConfig = {};
  const dims: Record<string, number> = {};
  const synth: Record<string, number> = {};
  const direct: [string, keyof TrainConfig][] = [
    ['preset', 'preset'], ['dataset', 'dataset'], ['data', 'data'], ['category', 'category'], ['epochs', 'epochs'],
    ['batchSize', 'batchSize'], ['lr', 'lr'], ['lrLocal', 'lrLocal'], ['lrSchedule', 'lrSchedule'], ['lrWarmup', 'lrWarmup'], ['weightDecay', 'weightDecay'], ['tau', 'tau'], ['seed', 'seed'], ['device', 'device'],
    ['out', 'out'], ['features', 'features'], ['clip', 'clip'], ['encoderLr', 'encoderLr'], ['trunk', 'trunk'], ['encoderTrunk', 'encoderTrunk'], ['encoderGrid', 'encoderGrid'], ['globalDropout', 'globalDropout'], ['globalTextRelu', 'globalTextRelu'], ['mutualWeightGlobal', 'mutualWeightGlobal'], ['mutualWeightLocal', 'mutualWeightLocal'], ['trunkWeights', 'trunkWeights'], ['maskPadding', 'maskPadding'], ['mutualTarget', 'mutualTarget'],
    ['detachSoftLabels', 'detachSoftLabels'], ['maxLength', 'maxLength'], ['evalEvery', 'evalEvery'], ['evalBatchSize', 'evalBatchSize'], ['split', 'evalSplit'],
    ['flip', 'flip'], ['shift', 'shift'], ['workers', 'workers'], ['limitTrain', 'limitTrain'], ['report', 'report'], ['precision', 'precision'],
  ];
  for (const [flag, key] of direct) if (f[flag] !== undefined) (c as Record<string, unknown>)[key] = f[flag];
  if (f.ablation !== undefined) c.ablations = f.ablation as Ablation[];
  if (f.adaptiveWeighting !== undefined) {
    const v = f.adaptiveWeighting as string[];
    c.adaptiveWeighting = (v.length === 1 && v[0] === 'none' ? [] : v) as ('global' | 'local')[];
  }
  if (f.awTau !== undefined) c.awTau = f.awTau as number;
  if (f.awLambda !== undefined) c.awLambda = f.awLambda as number;
  if (f.fusionBeta !== undefined) c.fusionBeta = f.fusionBeta as number | 'auto';
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
  if (f.stages !== undefined) c.stages = f.stages as number[];
  const pre: Record<string, unknown> = {};
  const arch: Record<string, unknown> = {};
  for (const [flag, key] of PRETRAIN_FLAGS) if (f[flag] !== undefined) pre[key] = f[flag];
  for (const [flag, key] of PRETRAIN_ARCH_FLAGS) if (f[flag] !== undefined) arch[key] = f[flag];
  if (Object.keys(arch).length) pre.arch = arch;
  if (Object.keys(pre).length) c.pretrain = pre;
  return c;
}

const PRETRAIN_FLAGS: [string, string][] = [['pretrainEpochs', 'epochs'], ['pretrainLr', 'lr'], ['pretrainBatchSize', 'batchSize'], ['pretrainWarmup', 'warmup'], ['pretrainWeightDecay', 'weightDecay'], ['pretrainShift', 'shift']];
const PRETRAIN_ARCH_FLAGS: [string, string][] = [['pretrainPatch', 'patchSize'], ['pretrainVisionWidth', 'visionWidth'], ['pretrainVisionLayers', 'visionLayers'], ['pretrainTextWidth', 'textWidth'], ['pretrainTextLayers', 'textLayers'], ['pretrainEmbedDim', 'embedDim']];

/** `--fusion-beta B|auto` (range checked by the config). */
export function fusionBetaArg(v: string): number | 'auto' {
  if (v.trim() === 'auto') return 'auto';
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`'${v}' is neither a number nor auto.`);
  return n;
}

/** `--stages 2,3`: stage numbers (checked for order and range by the config, src/train/config.ts validateStages). */
export function stageList(v: string): number[] {
  const parts = v.split(',').map((x) => x.trim());
  if (parts.length === 1 && parts[0] === '') return [];
  for (const x of parts) if (!/^\d+$/.test(x)) throw new InvalidArgumentError(`'${x}' is not a stage number (give 2,3 or 3).`);
  return parts.map(Number);
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
    .option('--batch-size <n>', 'training queries per step (small preset: 64, paper: 32, the spec\'s)', int)
    .option('--lr <rate>', 'Adam learning rate (the global stream; the local stream too unless --lr-local)', num)
    .option('--lr-local <rate>', 'Adam learning rate of the local stream and its trunk (small preset: 5e-3; else --lr)', num)
    .option('--lr-schedule <s>', 'cosine (decay to 2% of --lr by the last iteration) | constant')
    .option('--lr-warmup <steps>', 'linear warm-up of both streams\' rates over the first steps (then --lr-schedule over the rest; small preset 250, paper none)', int)
    .option('--weight-decay <v>', 'L2 weight decay', num)
    .option('--tau <t>', 'temperature τ of the contrastive loss and of SSG\'s soft labels (spec §5: 0.07; small preset: 0.05)', num)
    .option('--seed <n>', 'seed of initialisation, data order and dropout', int)
    .option('--device <dev>', 'cpu | cuda | cuda:N')
    .option('--out <dir>', 'run folder (config.json, metrics.jsonl, checkpoints, report)')
    .option('--features <file>', 'frozen global-stream features (safetensors)')
    .option('--clip <dir>', "CLIP weights folder (with its vocabulary): the global stream's frozen features computed natively and cached (Dc = CLIP's embed dim; excludes --features)")
    .option('--encoder-lr <rate>', "stage 3 with the CLIP encoder unfrozen (docs/MODEL.md §16): the CLIP of --clip DIR (with --stages 2,3: the stage-2 CLIP) becomes the global stream's encoder, trained at this Adam learning rate (scaled by --lr-schedule like --lr; the checkpoint then holds the CLIP: eval/search/serve need no CLIP folder). Without it the CLIP is frozen", num)
    .option('--trunk <mode>', 'finetune | frozen (trunk maps computed once, cached next to the run; only the heads train)')
    .option('--encoder-trunk <kind>', "global stream's pooled encoder without --features: shared (GeM over the local trunk's maps, default) | own (a small trunk of its own, trained with the global stream)")
    .option('--encoder-grid <g>', "pooled encoder: GeM over each window of a g×g grid of the map, concatenated (default 1: one global GeM)", int)
    .option('--global-dropout <p>', "dropout of the global stream's projections, editors and combiner (spec §3: 0.5, the paper preset's, as the local stream; small preset 0.1)", num)
    .option('--global-text-relu <on|off>', "ReLU in the global stream's text projection f_T (spec §3: on, the paper preset's; the small preset's default is off: f_T = norm(Dropout(W e_T + b)))", onOff)
    .option('--mutual-weight-global <w>', "weight of L_mut in the global stream's loss (spec §5; default 1)", num)
    .option('--mutual-weight-local <w>', "weight of L_mut in the local stream's loss (spec §5; default 1)", num)
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
    .option('--flip', 'horizontal-flip augmentation: half the training queries mirrored (both images; left and right swapped in the text; small preset: on)')
    .option('--no-flip', 'no flip augmentation (the paper preset\'s default)')
    .option('--shift <px>', 'translation augmentation: each training query\'s reference and target move together by a random offset of up to px pixels in x and y, edges repeated (default 0 = off)', int)
    .option('--workers <n>', 'image decode concurrency (0 = cores)', int)
    .option('--limit-train <n>', 'use only the first n training queries', int)
    .option('--no-report', 'skip report.svg/report.png')
    .option('--fusion-beta <b>', "both streams: the halves' weight β of the score β·s_G + s_L (docs/MODEL.md §7; 1 = the paper's sum) | auto (chosen on the validation split at every evaluation from 0, 0.1, …, 1, 1.5, 2, the best (epoch, β) kept and β stored in the checkpoints; default: auto in the small preset, 1 in the paper preset)", fusionBetaArg)
    .option('--stages <list>', 'PL4CIR stages to run, in order (docs/MODEL.md §16): 3 (DWC alone, default) | 2,3 (stage 2: the CLIP loss on the dataset\'s image–caption pairs into OUT/stage2, from --clip DIR or a small CLIP from scratch; then stage 3: DWC reading that CLIP, into OUT)', stageList)
    .option('--pretrain-epochs <n>', `stage 2: epochs (default ${STAGE2_EPOCHS})`, int)
    .option('--pretrain-lr <rate>', `stage 2: peak Adam learning rate (default 5e-4 from scratch, 1e-5 with --clip)`, num)
    .option('--pretrain-batch-size <n>', 'stage 2: image–caption pairs per step (default 64)', int)
    .option('--pretrain-warmup <steps>', 'stage 2: linear warm-up steps (default 100)', int)
    .option('--pretrain-weight-decay <v>', 'stage 2: L2 weight decay (default 0)', num)
    .option('--pretrain-shift <px>', 'stage 2: random-translation augmentation in pixels (default 0)', int)
    .option('--pretrain-patch <px>', 'stage 2 from scratch: ViT patch size (default 8)', int)
    .option('--pretrain-vision-width <w>', 'stage 2 from scratch: image tower width, a multiple of 64 (default 128)', int)
    .option('--pretrain-vision-layers <n>', 'stage 2 from scratch: image tower layers (default 4)', int)
    .option('--pretrain-text-width <w>', 'stage 2 from scratch: text tower width, a multiple of 64 (default 128)', int)
    .option('--pretrain-text-layers <n>', 'stage 2 from scratch: text tower layers (default 4)', int)
    .option('--pretrain-embed-dim <n>', 'stage 2 from scratch: joint embedding dim (default 128)', int)
    .option('--resume <path>', 'continue a run from its folder or a last.safetensors (a staged run: its folder; the stage in progress continues)')
    .option('--precision <p>', PRECISION_HELP)
    .option('--json', 'one JSON object per line and event on stdout (staged runs: each carries "stage")')
    .addHelpText('after', '\nExamples:\n  dwc-native train                                   # the small preset on the built-in benchmark\n  dwc-native train --stages 2,3 --out runs/staged    # stage 2 (a small CLIP from scratch) then DWC on it\n  dwc-native train --dataset fashioniq --data fiq/ --clip RN50/ --stages 2,3 --out runs/fiq\n  dwc-native train --resume runs/staged              # continue the stage in progress\n')
    .action(async (_opts: Record<string, unknown>, cmd: Command) => {
      const given = givenOptions(cmd);
      // a bad value or a CPU without bf16 fails before any data is read; train() applies it (src/precision.ts)
      if (given.precision !== undefined) checkPrecision(given.precision as string, given.device as string | undefined);
      const p = new Progress({ json: !!given.json });
      const file = given.config ? readConfigFile(String(given.config)) : undefined;
      // a staged run resumes from its folder's stages.json; a plain one from its checkpoint
      const staged0 = given.resume ? readStagesFile(stagesRunDir(String(given.resume))) : undefined;
      const resume = given.resume && !staged0 ? resumePath(String(given.resume)) : undefined;
      const base = staged0 ? staged0.config : resume ? readCheckpointInfo(resume).config : undefined;
      const flags = flagsToConfig(given);
      const asked = flags.stages ?? file?.stages;
      if (base && asked !== undefined && JSON.stringify(base.stages ?? [3]) !== JSON.stringify(asked))
        throw new ConfigError(`--resume continues the run's stages ${(base.stages ?? [3]).join(',')}; 'stages' cannot change (got ${Array.isArray(asked) ? asked.join(',') : JSON.stringify(asked)})`);
      const cfg = resolveConfig(file, flags, base);
      const ac = new AbortController();
      const onSig = () => {
        if (ac.signal.aborted) process.exit(130);
        p.info('\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)');
        ac.abort();
      };
      process.on('SIGINT', onSig);
      const t0 = Date.now();
      try {
        if (cfg.stages.includes(2)) {
          // PL4CIR stages 2 then 3 (src/train/stages.ts)
          const tc = trainCallbacks(p, cfg, { tag: { stage: 3 }, indent: '  ' });
          const r = await trainStages({
            config: cfg,
            resume: staged0 ? stagesRunDir(String(given.resume)) : undefined,
            signal: ac.signal,
            reportWriter: writeReport,
            callbacks: {
              onLog: (m) => p.info(m),
              onStage: (s) => {
                const what = s.stage === 2 ? `domain transfer: the CLIP loss on the dataset's image–caption pairs, from ${s.from === 'scratch' ? 'a small CLIP from scratch' : s.from}` : `composed retrieval: DWC, the global stream on the stage-2 CLIP ${s.from}`;
                p.info(`stage ${s.stage}/3: ${what} → ${s.out}${s.skipped ? ' (done: skipped)' : s.resumed ? ' (resumed)' : ''}`);
                p.event({ event: 'stage', ...s });
              },
              pretrain: pretrainCallbacks(p, { epochs: cfg.pretrain.epochs ?? STAGE2_EPOCHS, resumed: !!staged0, tag: { stage: 2 }, indent: '  ' }),
              train: tc.callbacks,
            },
          });
          if (r.interrupted) {
            p.event({ event: 'interrupted', stage: r.stage, out: r.out, ...(r.stage3 ? { checkpoint: r.stage3.lastCheckpoint, epochsDone: r.stage3.epochsDone, steps: r.stage3.steps } : {}) });
            throw new CommanderError(130, 'dwc-native.interrupted', '');
          }
          const mins = ((Date.now() - t0) / 60000).toFixed(1);
          const s2 = r.stage2;
          p.info('');
          p.print(s2?.best ? `stage 2 (CLIP ${s2.model}, epoch ${s2.best.epoch})${pretrainEvalLine(s2.best).replace(/^ +eval epoch \d+/, '')}` : 'stage 2: no evaluation ran');
          printSummary(p, r.stage3 as TrainResult, mins, 'stage 3 ');
          p.event({ event: 'done', stage: 3, stage2: s2 ? { model: s2.model, out: s2.out, epochs: s2.epochs, best: s2.best ?? null } : null, ...doneEvent(r.stage3 as TrainResult, mins) });
          return;
        }
        const tc = trainCallbacks(p, cfg, { resumed: !!resume });
        const r = await train({ config: cfg, resume, signal: ac.signal, reportWriter: writeReport, callbacks: tc.callbacks });
        if (r.interrupted) {
          p.event({ event: 'interrupted', checkpoint: r.lastCheckpoint, epochsDone: r.epochsDone, steps: r.steps });
          throw new CommanderError(130, 'dwc-native.interrupted', '');
        }
        const mins = ((Date.now() - tc.started()) / 60000).toFixed(1);
        p.info('');
        printSummary(p, r, mins, '');
        p.event({ event: 'done', ...doneEvent(r, mins) });
      } finally {
        process.off('SIGINT', onSig);
      }
    });
}

function printSummary(p: Progress, r: TrainResult, mins: string, prefix: string): void {
  p.print(r.best ? `${prefix}best on ${r.evalSplit}: ${fmtRecall(r.best.recall)} (epoch ${r.best.epoch}) in ${mins} min` : `${prefix}no evaluation ran`);
  if (r.fusion) p.print(`${prefix}β chosen on ${r.fusion.split}: ${r.fusion.beta} (score β·s_G + s_L; R@1 ${r.fusion.curve.map((c) => `β ${c.beta}: ${(c.recall[Object.keys(c.recall)[0]] ?? NaN).toFixed(1)}`).join(', ')})`);
  if (r.test?.best) p.print(`${r.test.best.split} (best checkpoint)${r.test.best.fusionBeta !== undefined && r.test.best.fusionBeta !== 1 ? ` with β ${r.test.best.fusionBeta}` : ''}: ${fmtRecall(r.test.best.recall)}`);
  if (r.test?.last && r.test.last.epoch !== r.test.best?.epoch) p.print(`${r.test.last.split} (last, epoch ${r.test.last.epoch}): ${fmtRecall(r.test.last.recall)}`);
  p.print(`checkpoint: ${r.bestCheckpoint}`);
  if (r.report) p.print(`report:     ${r.report[r.report.length - 1]}`);
}

function doneEvent(r: TrainResult, mins: string): Record<string, unknown> {
  // precision and the GEMM/conv calls that ran in bf16 in this process (src/precision.ts)
  return { precision: r.precision, bf16Calls: addon().kernelStats().bf16Calls ?? 0, best: r.best, split: r.evalSplit, ...(r.fusion ? { fusion: { beta: r.fusion.beta, split: r.fusion.split, curve: r.fusion.curve } } : {}), test: r.test ? { best: r.test.best, last: r.test.last } : null, checkpoint: r.bestCheckpoint, last: r.lastCheckpoint, report: r.report ?? null, out: r.runDir, minutes: Number(mins) };
}

/**
 * Console and --json output of a DWC training run (plain, or stage 3 of a staged one): `tag` is
 * added to every --json event, `indent` to every line; started() is when training began.
 */
function trainCallbacks(p: Progress, cfg: TrainConfig, o: { resumed?: boolean; tag?: Record<string, unknown>; indent?: string }): { callbacks: TrainCallbacks; started: () => number } {
  const ev = (e: object) => p.event({ ...e, ...o.tag });
  const ind = o.indent ?? '';
  let epochLabel = '';
  let lossAvg = 0;
  let started = Date.now();
  const callbacks: TrainCallbacks = {
    onLog: (m) => p.info(ind + m),
    onFeatureProgress: (phase, done, total) => {
      p.bar(`${ind}  CLIP features: ${phase}`, done, total);
      if (done === total) {
        p.endBar(`${ind}  CLIP features: ${total} ${phase}`);
        ev({ event: 'features', phase, total });
      }
    },
    onStart: (s) => {
      started = Date.now();
      const resumedAt = s.startEpoch || s.startBatch || o.resumed ? { epoch: s.startEpoch, batch: s.startBatch } : null;
      p.info(`${ind}training ${cfg.preset} on ${cfg.dataset}: ${s.trainQueries} queries, ${s.batchesPerEpoch} batches/epoch, ${cfg.epochs} epochs${cfg.precision !== 'fp32' ? `, GEMMs and convolutions in ${cfg.precision}` : ''} → ${s.runDir}`);
      ev({ event: 'start', preset: cfg.preset, dataset: cfg.dataset, trainQueries: s.trainQueries, batchesPerEpoch: s.batchesPerEpoch, epochs: cfg.epochs, out: s.runDir, resumedAt, precision: cfg.precision });
    },
    onStep: (s) => {
      lossAvg = s.batch === 0 || !lossAvg ? s.loss : 0.9 * lossAvg + 0.1 * s.loss;
      epochLabel = `${ind}epoch ${s.epoch + 1}/${cfg.epochs}`;
      p.bar(epochLabel, s.batch + 1, s.batches, `loss ${lossAvg.toFixed(4)}  ${s.itemsPerSec.toFixed(0)} items/s`);
    },
    onEpoch: (e) => {
      p.endBar(`${epochLabel || `${ind}epoch ${e.epoch}`}: loss ${e.loss.total?.toFixed(4)}  ${e.itemsPerSec.toFixed(1)} items/s  ${e.seconds.toFixed(1)} s`);
      ev({ ...e });
    },
    onEvalProgress: (phase, done, total) => p.bar(`${ind}  eval ${phase}`, done, total),
    onEval: (e, result) => {
      // each stream's half of the embeddings scored alone (one eval set: shown on the line)
      const st = result.sets.length === 1 ? result.sets[0].streams : undefined;
      const k = Object.keys(e.recall)[0];
      const alone = st && k ? `  [alone: global R@${k} ${st.global[k].toFixed(1)}, local R@${k} ${st.local[k].toFixed(1)}]` : '';
      const aw = e.aw ? `  [|w − w*|: ${Object.entries(e.aw).map(([s, a]) => `${s} ${a.gap.toFixed(3)}`).join(', ')}]` : '';
      p.endBar(`${ind}  eval epoch ${e.epoch} (${e.split}): ${fmtRecall(e.recall)}${e.fusionBeta !== undefined ? ` at β ${e.fusionBeta}` : ''}${e.best ? '  (best)' : ''}${alone}${aw}`);
      ev({ event: 'eval', epoch: e.epoch, split: e.split, recall: e.recall, mean: e.mean, best: e.best, ...(e.fusionBeta !== undefined ? { fusionBeta: e.fusionBeta, fusionCurve: e.fusionCurve } : {}), ...(e.sets ? { sets: e.sets } : {}), ...(st ? { streams: st } : {}), ...(e.aw ? { aw: e.aw } : {}), ...(e.breakdown ? { breakdown: e.breakdown } : {}) });
    },
    onTest: (e, result) => {
      const st = result.sets.length === 1 ? result.sets[0].streams : undefined;
      p.endBar(`${ind}  ${e.split} (${e.model} model, epoch ${e.epoch}): ${fmtRecall(e.recall)}`);
      // queries with op / dominance (synthetic benchmark): R@1 per kind of query, each half alone too
      if (e.breakdown) p.info(formatBreakdown(e.breakdown).split('\n').map((l) => `${ind}    ${l}`).join('\n'));
      ev({ event: 'test', epoch: e.epoch, split: e.split, model: e.model, recall: e.recall, mean: e.mean, ...(e.fusionBeta !== undefined ? { fusionBeta: e.fusionBeta } : {}), ...(e.sets ? { sets: e.sets } : {}), ...(st ? { streams: st } : {}), ...(e.aw ? { aw: e.aw } : {}), ...(e.breakdown ? { breakdown: e.breakdown } : {}) });
    },
    onFusion: (f) => {
      const k = Object.keys(f.curve[0]?.recall ?? {})[0];
      p.info(`${ind}  β on ${f.split} (epoch ${f.epoch}): ${f.curve.map((c) => `${c.beta}→${(c.recall[k] ?? NaN).toFixed(1)}`).join('  ')}  (R@${k}); chosen β = ${f.beta}`);
      ev({ ...f });
    },
  };
  return { callbacks, started: () => started };
}
