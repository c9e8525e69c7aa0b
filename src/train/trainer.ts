// The epoch loop (spec §6 step delegated to the model): batches in a seed-determined order,
// per-epoch evaluation (§7), best/last checkpoints by mean recall, metrics.jsonl, interruption
// (AbortSignal, wired to Ctrl-C by the CLI) saves a checkpoint, and resume continues exactly.
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Dataset } from '../data/dataset.js';
import { Vocabulary } from '../data/text.js';
import { breakdownAt, evaluate, type EvalResult } from '../eval/evaluate.js';
import type { Recall } from '../eval/recall.js';
import { awEvalStats, type EpochRecord, type EvalRecord, type ReportWriter } from '../eval/records.js';
import { DwcError } from '../native.js';
import { withPrecision, type Precision } from '../precision.js';
import { ImageStore, epochBatches, makeBatchMaker } from './batches.js';
import { checkpointMetadata, patchCheckpointConfig, readCheckpointInfo, type TrainerState } from './checkpoint.js';
import { FUSION_BETA_GRID, epochFusion } from '../eval/fusion.js';
import type { FusionRecord } from '../eval/records.js';
import { cacheDir, clipFrozen, learningRate, modelOptions, writeConfig, type TrainConfig } from './config.js';
import { cachedClipFeatures } from '../clip/features.js';
import type { ModelFactory, RetrievalModel, StepLosses, TrainBatch } from './types.js';
import { getModelFactory, getReportWriter, openDataset, openFeatures } from './wiring.js';

export interface StepInfo {
  epoch: number;
  /** Batch index within the epoch (0-based) and the epoch's batch count. */
  batch: number;
  batches: number;
  step: number;
  losses: StepLosses;
  /** Sum of both streams' contrastive + mutual (+ adaptive-weighting) losses. */
  loss: number;
  itemsPerSec: number;
}

// the records of metrics.jsonl live below both the trainer and the report (src/eval/records.ts)
export type { EpochRecord, EvalRecord, FusionRecord, AwEvalStats, ReportWriter } from '../eval/records.js';
export { awEvalStats } from '../eval/records.js';

export interface TrainCallbacks {
  onLog?(msg: string): void;
  /** train --clip: progress of the CLIP feature extraction (phase 'images' | 'texts'). */
  onFeatureProgress?(phase: string, done: number, total: number): void;
  onStart?(info: { config: TrainConfig; trainQueries: number; batchesPerEpoch: number; startEpoch: number; startBatch: number; runDir: string }): void;
  onStep?(info: StepInfo): void;
  onEpoch?(rec: EpochRecord): void;
  onEvalProgress?(phase: 'gallery' | 'queries', done: number, total: number): void;
  onEval?(rec: EvalRecord, result: EvalResult): void;
  /** After the last epoch, when the per-epoch split is not the eval split: the eval split (test). */
  onTest?(rec: EvalRecord, result: EvalResult): void;
  /** fusionBeta 'auto': the β grid on the validation split and the β chosen (docs/MODEL.md §7). */
  onFusion?(rec: FusionRecord): void;
  /** Frozen trunk: progress of the cache build, and its outcome (reused or computed). */
  onTrunkCacheProgress?(done: number, total: number): void;
  onTrunkCache?(info: { reused: boolean; entries: number; seconds: number }): void;
}

export interface TrainOptions {
  config: TrainConfig;
  callbacks?: TrainCallbacks;
  /** Abort (e.g. on Ctrl-C): the current step finishes, last.safetensors is saved, train returns. */
  signal?: AbortSignal;
  /** Checkpoint (or run folder holding last.safetensors) to continue from. */
  resume?: string;
  /** Model factory (default: the native model). */
  modelFactory?: ModelFactory;
  /** Dataset (default: opened from the config). */
  dataset?: Dataset;
  /** Writes report.svg/png when config.report (default: the one registered with setReportWriter, src/api.ts). */
  reportWriter?: ReportWriter;
}

export interface TrainResult {
  runDir: string;
  /** Precision of the run's GEMMs and convolutions (config.precision, src/precision.ts). */
  precision: Precision;
  interrupted: boolean;
  epochsDone: number;
  steps: number;
  best: { epoch: number; mean: number; recall: Recall } | null;
  bestCheckpoint: string;
  lastCheckpoint: string;
  lastEval?: EvalResult;
  /** Split of the per-epoch evaluation (best-checkpoint choice). */
  evalSplit?: string;
  /** The eval split (test) of the best and, when another epoch, the last model; set when it differs from evalSplit. */
  test?: { best?: EvalRecord; last?: EvalRecord; result: EvalResult };
  /** fusionBeta 'auto' ran: the β grid on the validation split and the β stored in the checkpoints. */
  fusion?: FusionRecord;
  report?: string[];
}

/** Checkpoint path of a resume argument: a file, or a run folder holding last.safetensors. */
export function resumePath(p: string): string {
  if (existsSync(p) && statSync(p).isDirectory()) return join(p, 'last.safetensors');
  return p;
}

function addLosses(sums: Record<string, number>, l: StepLosses): number {
  let total = 0;
  for (const s of ['global', 'local'] as const) {
    const v = l[s];
    if (!v) continue;
    sums[`${s}.contrastive`] = (sums[`${s}.contrastive`] ?? 0) + v.contrastive;
    sums[`${s}.mutual`] = (sums[`${s}.mutual`] ?? 0) + v.mutual;
    total += v.contrastive + v.mutual;
    if (v.aw !== undefined) {
      // adaptive weighting (PL4CIR-SPEC.md §3): L_w is part of the stream's loss; |w − w*| a diagnostic
      sums[`${s}.aw`] = (sums[`${s}.aw`] ?? 0) + v.aw;
      sums[`${s}.awGap`] = (sums[`${s}.awGap`] ?? 0) + (v.awGap ?? 0);
      total += v.aw;
    }
  }
  sums.total = (sums.total ?? 0) + total;
  return total;
}

export async function train(opts: TrainOptions): Promise<TrainResult> {
  // the run's GEMMs and convolutions at its precision, the caller's put back after (src/precision.ts)
  return withPrecision(opts.config.precision, () => trainRun(opts), opts.config.device);
}

async function trainRun(opts: TrainOptions): Promise<TrainResult> {
  const cfg = opts.config;
  const cb = opts.callbacks ?? {};
  const log = (m: string) => cb.onLog?.(m);
  const runDir = cfg.out;
  mkdirSync(runDir, { recursive: true });
  const lastPath = join(runDir, 'last.safetensors');
  const bestPath = join(runDir, 'best.safetensors');
  const metricsPath = join(runDir, 'metrics.jsonl');

  const factory = opts.modelFactory ?? (await getModelFactory());
  const ds = opts.dataset ?? (await openDataset(cfg, log));
  // --clip: the frozen features computed natively (cached by weights + dataset); Dc = CLIP's embed dim
  let clipFeatures: string | undefined;
  // the unfrozen encoder with adaptive weighting: w* keeps coming from the CLIP's frozen features (docs/MODEL.md §16)
  const awFromFrozen = !!cfg.clip && !clipFrozen(cfg) && cfg.adaptiveWeighting.length > 0 && !cfg.ablations.includes('no-aw');
  if (clipFrozen(cfg) || awFromFrozen) {
    const c = await cachedClipFeatures({ clip: cfg.clip!, dataset: ds, cacheDir: cacheDir(), onLog: log, onProgress: cb.onFeatureProgress, signal: opts.signal });
    clipFeatures = c.path;
    if (!awFromFrozen) cfg.dims.Dc = c.dim;
  }
  const features = await openFeatures(cfg, ds, clipFeatures ?? cfg.features);
  if (features && !awFromFrozen && features.dim !== cfg.dims.Dc)
    throw new DwcError(`feature file ${cfg.features} holds ${features.dim}-dim vectors but the global stream's Dc is ${cfg.dims.Dc}; pass --feature-dim ${features.dim}`, 'DWC_BAD_ARGUMENT');

  let state: TrainerState = { epoch: 0, batch: 0, step: 0, lossSums: {}, lossCount: 0, best: null };
  let vocab: Vocabulary;
  let model: RetrievalModel;
  if (opts.resume) {
    const ck = resumePath(opts.resume);
    const info = readCheckpointInfo(ck);
    if (!info.vocab || !info.trainer) throw new DwcError(`checkpoint ${ck} holds no trainer state to resume from`, 'DWC_FORMAT');
    if (info.preset !== cfg.preset) throw new DwcError(`checkpoint ${ck} was trained with preset '${info.preset}', not '${cfg.preset}'`, 'DWC_FORMAT');
    const ckPrecision = info.config?.precision ?? 'fp32';
    if (ckPrecision !== cfg.precision) throw new DwcError(`checkpoint ${ck} was trained at precision ${ckPrecision}, not ${cfg.precision}: a resumed run keeps its precision`, 'DWC_BAD_ARGUMENT');
    vocab = info.vocab;
    state = info.trainer;
    model = await factory.load(ck, modelOptions(cfg, vocab.size));
    log(`resuming from ${ck} at epoch ${state.epoch + 1}, batch ${state.batch}`);
  } else {
    vocab = Vocabulary.build(ds.trainTexts());
    model = await factory.create({ ...modelOptions(cfg, vocab.size), vocabWords: vocab.words });
    writeFileSync(metricsPath, '');
  }
  // the unfrozen CLIP encoder (docs/MODEL.md §16): Dc is its embedding dim
  if (cfg.clip && !clipFrozen(cfg)) cfg.dims.Dc = model.dims.Dc;
  writeConfig(cfg);
  writeFileSync(join(runDir, 'vocab.json'), JSON.stringify(vocab.toJSON()) + '\n');

  // per-epoch evaluation and model selection on the validation split (--split overrides)
  const evalSplit = cfg.evalSplit ?? ds.valSplit ?? ds.evalSplit;
  if (!ds.queries(evalSplit).length) throw new DwcError(`dataset ${ds.name} has no queries in split '${evalSplit}' (splits: ${ds.splits.join(', ')})`, 'DWC_BAD_ARGUMENT');
  if (evalSplit === ds.trainSplit) throw new DwcError(`--split '${evalSplit}' is the training split; choose val or test`, 'DWC_BAD_ARGUMENT');
  let trainQueries = ds.queries(ds.trainSplit, { epoch: 0, seed: cfg.seed });
  const limit = (qs: typeof trainQueries) => (cfg.limitTrain > 0 ? qs.slice(0, cfg.limitTrain) : qs);
  trainQueries = limit(trainQueries);
  if (trainQueries.length < 2) throw new DwcError(`dataset ${ds.name} has ${trainQueries.length} training queries in split '${ds.trainSplit}'; at least 2 are needed`, 'DWC_BAD_ARGUMENT');
  const store = new ImageStore(cfg.dims.imageSize, cfg.workers || undefined);
  const makeBatches = (qs: typeof trainQueries) =>
    makeBatchMaker({ dataset: ds, vocab, store, trainQueries: qs, trainLabels: ds.labels(qs), maxLength: cfg.maxLength, flip: cfg.flip, shift: cfg.shift, seed: cfg.seed, features, trainSplit: ds.trainSplit });
  let batches = makeBatches(trainQueries);
  const perEpoch = epochBatches(trainQueries.length, cfg.batchSize, cfg.seed, 0).length;
  cb.onStart?.({ config: cfg, trainQueries: trainQueries.length, batchesPerEpoch: perEpoch, startEpoch: state.epoch, startBatch: state.batch, runDir });

  const save = async (path: string) => {
    await model.save(path, checkpointMetadata(cfg, vocab, state));
  };
  const record = (o: object) => appendFileSync(metricsPath, JSON.stringify(o) + '\n');

  if (cfg.trunk === 'frozen') {
    // frozen trunk (issue 5 item 4): maps of every training image, computed once, cached in the run folder
    if (!model.prepareTrunkCache) throw new DwcError("this model does not support --trunk frozen", 'DWC_NOT_BUILT');
    const ids = [...new Set(trainQueries.flatMap((q) => [q.source, q.target]))];
    const t0 = Date.now();
    const r = await model.prepareTrunkCache({
      ids,
      load: (xs) => store.load(xs.map((id) => ds.image(id).file)),
      imageSize: cfg.dims.imageSize,
      dir: runDir,
      batchSize: cfg.evalBatchSize,
      onProgress: cb.onTrunkCacheProgress,
      onLog: log,
    });
    cb.onTrunkCache?.({ ...r, seconds: (Date.now() - t0) / 1000 });
  }

  // fusionBeta 'auto' with a validation split: every per-epoch evaluation scores the β grid and the
  // best (epoch, β) is kept (docs/MODEL.md §7, src/eval/fusion.ts epochFusion)
  const betaGrid = cfg.fusionBeta === 'auto' && evalSplit !== ds.evalSplit ? FUSION_BETA_GRID : undefined;
  let lastEval: EvalResult | undefined;
  let lastBeta: number | undefined; // the β chosen on the last evaluated epoch (the last checkpoint's)
  let test: TrainResult['test'];
  let fusion: TrainResult['fusion'];
  let interrupted = false;
  model.setTraining(true);
  try {
    for (let epoch = state.epoch; epoch < cfg.epochs; epoch++) {
      if (epoch > 0 && ds.format === 'fashion200k') batches = makeBatches((trainQueries = limit(ds.queries(ds.trainSplit, { epoch, seed: cfg.seed }))));
      const list = epochBatches(trainQueries.length, cfg.batchSize, cfg.seed, epoch);
      const t0 = Date.now();
      let items = 0;
      let next: Promise<TrainBatch> | undefined = state.batch < list.length ? batches.train(list[state.batch], epoch) : undefined;
      for (let b = state.batch; b < list.length; b++) {
        const tb = Date.now();
        const batch = await next!;
        next = b + 1 < list.length ? batches.train(list[b + 1], epoch) : undefined;
        model.setLearningRate?.(learningRate(cfg, epoch * perEpoch + b, cfg.epochs * perEpoch));
        const losses = await model.step(batch);
        const loss = addLosses(state.lossSums, losses);
        if (!Number.isFinite(loss)) throw new DwcError(`training diverged: loss is ${loss} at epoch ${epoch + 1}, batch ${b + 1} (try a lower --lr)`, 'DWC_NUMERIC');
        state.lossCount++;
        state.step++;
        state.batch = b + 1;
        items += batch.B;
        cb.onStep?.({ epoch, batch: b, batches: list.length, step: state.step, losses, loss, itemsPerSec: batch.B / Math.max(1e-3, (Date.now() - tb) / 1000) });
        if (opts.signal?.aborted && b + 1 < list.length) {
          await next?.catch(() => undefined);
          await save(lastPath);
          log(`interrupted: saved ${lastPath} (epoch ${epoch + 1}, batch ${b + 1}); continue with --resume ${runDir}`);
          interrupted = true;
          return { runDir, precision: cfg.precision, interrupted, epochsDone: epoch, steps: state.step, best: state.best, bestCheckpoint: bestPath, lastCheckpoint: lastPath };
        }
      }
      const seconds = (Date.now() - t0) / 1000;
      const n = Math.max(1, state.lossCount);
      const rec: EpochRecord = {
        event: 'epoch',
        epoch: epoch + 1,
        step: state.step,
        loss: Object.fromEntries(Object.entries(state.lossSums).map(([k, v]) => [k, v / n])),
        itemsPerSec: items / Math.max(1e-3, seconds),
        seconds,
      };
      record(rec);
      cb.onEpoch?.(rec);
      state.epoch = epoch + 1;
      state.batch = 0;
      state.lossSums = {};
      state.lossCount = 0;

      const isLast = epoch + 1 === cfg.epochs;
      let improved = false;
      if ((epoch + 1) % cfg.evalEvery === 0 || isLast) {
        lastEval = await evaluate(model, ds, batches, { batchSize: cfg.evalBatchSize, split: evalSplit, progress: cb.onEvalProgress, ...(betaGrid ? { betaGrid } : {}) });
        const sel = epochFusion(lastEval); // at the epoch's best β when the grid was scored
        lastBeta = sel.fusionBeta;
        improved = !state.best || sel.mean > state.best.mean;
        if (improved) state.best = { epoch: epoch + 1, mean: sel.mean, recall: sel.recall, ...(sel.fusionBeta !== undefined ? { fusionBeta: sel.fusionBeta } : {}) };
        const ev: EvalRecord = { event: 'eval', epoch: epoch + 1, split: evalSplit, recall: sel.recall, mean: sel.mean, best: improved };
        if (sel.fusionBeta !== undefined) Object.assign(ev, { fusionBeta: sel.fusionBeta, fusionCurve: sel.fusionCurve });
        const aws = lastEval.sets[0] && awEvalStats(lastEval.sets[0]);
        if (aws) ev.aw = aws;
        if (lastEval.sets.length > 1) ev.sets = sel.sets;
        const bd = lastEval.sets[0] && breakdownAt(lastEval.sets[0], sel.fusionBeta); // per op / dominance, at the epoch's β
        if (bd) ev.breakdown = bd;
        record(ev);
        cb.onEval?.(ev, lastEval);
      }
      await save(lastPath);
      if (improved) {
        const tmp = `${bestPath}.tmp-${process.pid}`;
        copyFileSync(lastPath, tmp);
        // the best checkpoint carries its own β (search / serve on it mid-run score as chosen)
        if (state.best?.fusionBeta !== undefined) patchCheckpointConfig(tmp, { fusionBeta: state.best.fusionBeta });
        renameSync(tmp, bestPath);
      }
      if (opts.signal?.aborted && !isLast) {
        log(`interrupted: saved ${lastPath} after epoch ${epoch + 1}; continue with --resume ${runDir}`);
        interrupted = true;
        return { runDir, precision: cfg.precision, interrupted, epochsDone: epoch + 1, steps: state.step, best: state.best, bestCheckpoint: bestPath, lastCheckpoint: lastPath, lastEval, evalSplit };
      }
    }
    // fusionBeta 'auto' (docs/MODEL.md §7): the β chosen with the best epoch, stored as a number in
    // both checkpoints and config.json; its curve (the best epoch's eval record) as a 'fusion' record
    if (cfg.fusionBeta === 'auto' && lastEval) {
      let beta = 1;
      if (!betaGrid) log(`--fusion-beta auto: the per-epoch split '${evalSplit}' is the eval split (no validation split); keeping β = 1`);
      else if (state.best?.fusionBeta === undefined) log('--fusion-beta auto: the model has one stream; β does not apply');
      else {
        const best = state.best;
        beta = best.fusionBeta!;
        const curve = readMetrics(metricsPath).filter((m): m is EvalRecord => m.event === 'eval' && m.epoch === best.epoch && !!m.fusionCurve).pop()?.fusionCurve;
        if (curve) {
          fusion = { event: 'fusion', epoch: best.epoch, split: evalSplit, curve, beta };
          record(fusion);
          cb.onFusion?.(fusion);
        }
      }
      // each checkpoint keeps the β chosen on val for its own weights (config.json: the best one's)
      const ownLast = betaGrid && lastBeta !== undefined ? lastBeta : beta;
      cfg.fusionBeta = beta;
      model.fusionBeta = ownLast;
      if (existsSync(lastPath)) patchCheckpointConfig(lastPath, { fusionBeta: ownLast });
      if (existsSync(bestPath)) patchCheckpointConfig(bestPath, { fusionBeta: beta });
      writeConfig(cfg);
      model.setTraining(true);
    }
    // The eval split (test) once at the end: the last model, and the best one when another epoch
    // (the per-epoch numbers are validation numbers).
    if (evalSplit !== ds.evalSplit && lastEval) {
      const testOf = async (m: RetrievalModel, which: 'best' | 'last', ep: number): Promise<[EvalRecord, EvalResult]> => {
        const r = await evaluate(m, ds, batches, { batchSize: cfg.evalBatchSize, split: ds.evalSplit, progress: cb.onEvalProgress });
        const rec: EvalRecord = { event: 'test', epoch: ep, split: ds.evalSplit, model: which, recall: r.recall, mean: r.mean, best: which === 'best' };
        const fb = r.sets[0]?.fusionBeta;
        if (fb !== undefined) rec.fusionBeta = fb;
        const aws = r.sets[0] && awEvalStats(r.sets[0]);
        if (aws) rec.aw = aws;
        if (r.sets.length > 1) rec.sets = r.sets.map((x) => ({ name: x.name, recall: x.recall }));
        if (r.sets[0]?.breakdown) rec.breakdown = r.sets[0].breakdown;
        record(rec);
        cb.onTest?.(rec, r);
        return [rec, r];
      };
      const [lastRec, lastRes] = await testOf(model, 'last', state.epoch);
      test = { last: lastRec, result: lastRes };
      if (state.best && state.best.epoch !== state.epoch && existsSync(bestPath)) {
        const bm = await factory.load(bestPath, modelOptions(cfg, vocab.size));
        try {
          const [bestRec, bestRes] = await testOf(bm, 'best', state.best.epoch);
          test = { best: bestRec, last: lastRec, result: bestRes };
        } finally {
          bm.dispose?.();
        }
      } else test.best = { ...lastRec, model: 'best', best: true };
      model.setTraining(true);
    }
  } finally {
    model.dispose?.();
  }
  let report: string[] | undefined;
  const writeReport = opts.reportWriter ?? getReportWriter();
  if (cfg.report && lastEval && !writeReport) log('no report: no report writer is registered (train from src/api.ts or pass reportWriter)');
  if (cfg.report && lastEval && writeReport) {
    report = await writeReport({ runDir, metrics: readMetrics(metricsPath).filter((m): m is EpochRecord | EvalRecord => m.event !== 'fusion'), evalResult: test?.result ?? lastEval, dataset: ds, title: `DWC ${cfg.preset} on ${ds.name}` });
  }
  return { runDir, precision: cfg.precision, interrupted, epochsDone: state.epoch, steps: state.step, best: state.best, bestCheckpoint: bestPath, lastCheckpoint: lastPath, lastEval, evalSplit, test, ...(fusion ? { fusion } : {}), report };
}

export function readMetrics(path: string): (EpochRecord | EvalRecord | FusionRecord)[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as EpochRecord | EvalRecord | FusionRecord);
}
