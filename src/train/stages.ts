// PL4CIR stages in one run (PL4CIR-SPEC.md §1 and §4; docs/MODEL.md §16): `train --stages 2,3`
// runs stage 2 (domain transfer: the CLIP loss on the dataset's image–caption pairs, pretrain()
// into OUT/stage2, from given CLIP weights `clip` or a small CLIP from scratch) and then stage 3
// (DWC, train() into OUT with the global stream on the frozen stage-2 encoder: `clip` =
// OUT/stage2, features cached). OUT/stages.json (written atomically) holds the run's config and
// how far it got; `resume` continues the stage in progress with exactly the numbers of an
// uninterrupted run (stage 2 done: straight to stage 3). The test split is scored once, by stage 3.
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Dataset } from '../data/dataset.js';
import { DwcError } from '../native.js';
import { withPrecision } from '../precision.js';
import { STAGE2_DIR, validateStages, type TrainConfig } from './config.js';
import { pretrain, readPretrainMetrics, resolvePretrainConfig, type PretrainCallbacks, type PretrainConfig, type PretrainEvalRecord } from './pretrain.js';
import { train, type TrainCallbacks, type TrainResult } from './trainer.js';
import type { ModelFactory } from './types.js';
import type { ReportWriter } from '../eval/records.js';
import { openDataset } from './wiring.js';
import { writeJsonAtomic } from '../data/fsutil.js';

export const STAGES_FORMAT = 'dwc-native-stages-1';
export { STAGE2_DIR } from './config.js';
/** Stage-2 epochs of a staged run unless `pretrain.epochs` says otherwise (docs/MODEL.md §16: 2 keeps a staged run on the default benchmark near 10 minutes on two quiet cores). */
export const STAGE2_EPOCHS = 2;
/** Stage-2 peak learning rate when it continues given CLIP weights (`clip`); from scratch: pretrain's default. */
export const STAGE2_FINETUNE_LR = 1e-5;

/** OUT/stages.json. */
export interface StagesFile {
  format: string;
  /** The run's resolved config (stage 1 weights in `clip`, when given). */
  config: TrainConfig;
  stage2: { done: boolean };
  stage3: { started: boolean };
}

export interface StageInfo {
  stage: 2 | 3;
  /** 1-based position in config.stages and their count. */
  index: number;
  count: number;
  out: string;
  /** Continued from a checkpoint of this stage. */
  resumed: boolean;
  /** Done in an earlier run (resume): not run again. */
  skipped: boolean;
  /** Stage 2: the CLIP it starts from (a folder, or 'scratch'); stage 3: the stage-2 CLIP it reads. */
  from: string;
}

export interface StagesCallbacks {
  onLog?(msg: string): void;
  onStage?(info: StageInfo): void;
  pretrain?: PretrainCallbacks;
  train?: TrainCallbacks;
}

export interface StagesOptions {
  /** The resolved config (resolveConfig); `stages` must hold 2 (plain `train` otherwise). */
  config: TrainConfig;
  /** The run folder (OUT, holding stages.json) to continue. */
  resume?: string;
  signal?: AbortSignal;
  callbacks?: StagesCallbacks;
  dataset?: Dataset;
  modelFactory?: ModelFactory;
  reportWriter?: ReportWriter;
}

/** What stage 2 reached: its best validation record (model.safetensors) from its metrics.jsonl. */
export interface Stage2Summary {
  out: string;
  model: string;
  best?: PretrainEvalRecord;
  epochs: number;
}

export interface StagesResult {
  out: string;
  interrupted: boolean;
  /** The stage running when it stopped (interrupted), else 3. */
  stage: 2 | 3;
  stage2?: Stage2Summary;
  stage3?: TrainResult;
}

const bad = (msg: string): never => {
  throw new DwcError(msg, 'DWC_BAD_ARGUMENT');
};

/** The run folder of a resume argument: the folder itself, or the folder of a file in it (OUT/last.safetensors). */
export function stagesRunDir(p: string): string {
  const r = resolve(p);
  return existsSync(r) && statSync(r).isDirectory() ? r : dirname(r);
}

/** OUT/stages.json of a staged run, or undefined when the folder holds none (a plain `train` run). */
export function readStagesFile(dir: string): StagesFile | undefined {
  const p = join(dir, 'stages.json');
  if (!existsSync(p)) return undefined;
  let o: StagesFile;
  try {
    o = JSON.parse(readFileSync(p, 'utf8')) as StagesFile;
  } catch (e) {
    throw new DwcError(`${p} is not valid JSON (${(e as Error).message})`, 'DWC_FORMAT');
  }
  if (!o || o.format !== STAGES_FORMAT || !o.config || !o.stage2) throw new DwcError(`${p} was not written by dwc-native train --stages`, 'DWC_FORMAT');
  o.stage3 ??= { started: false };
  return o;
}

/** Stage 2's pretrain settings from a train config: the same dataset, synth settings, seed, workers and validation split; `pretrain` over them. */
export function stage2Config(cfg: TrainConfig, out: string): Partial<PretrainConfig> {
  const { arch, ...p } = cfg.pretrain;
  const over = Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined));
  return {
    dataset: cfg.dataset,
    ...(cfg.data ? { data: cfg.data } : {}),
    synth: { ...cfg.synth },
    out,
    ...(cfg.clip ? { clip: cfg.clip, lr: STAGE2_FINETUNE_LR } : { fromScratch: true, imageSize: cfg.dims.imageSize }),
    epochs: STAGE2_EPOCHS,
    seed: cfg.seed,
    workers: cfg.workers,
    evalBatchSize: cfg.evalBatchSize,
    ...(cfg.evalSplit ? { split: cfg.evalSplit } : {}),
    ...over,
    ...(arch ? { arch: arch as PretrainConfig['arch'] } : {}),
  };
}

/** Stage 3's train config: the run's, the global stream on the stage-2 CLIP. */
export function stage3Config(cfg: TrainConfig): TrainConfig {
  return { ...cfg, dims: { ...cfg.dims }, synth: { ...cfg.synth }, clip: join(cfg.out, STAGE2_DIR) };
}

function stage2Summary(dir: string): Stage2Summary {
  const m = readPretrainMetrics(dir);
  const evals = m.filter((r): r is PretrainEvalRecord => r.event === 'eval');
  const best = [...evals].reverse().find((r) => r.best);
  return { out: dir, model: join(dir, 'model.safetensors'), best, epochs: m.filter((r) => r.event === 'epoch').length };
}

/** Runs config.stages in order (PL4CIR-SPEC.md §1), each checkpointed and resumable. */
export async function trainStages(opts: StagesOptions): Promise<StagesResult> {
  // both stages at the run's precision (src/precision.ts)
  return withPrecision(opts.config.precision, () => trainStagesRun(opts), opts.config.device);
}

async function trainStagesRun(opts: StagesOptions): Promise<StagesResult> {
  const cfg = opts.config;
  const cb = opts.callbacks ?? {};
  const log = (m: string) => cb.onLog?.(m);
  validateStages(cfg);
  if (!cfg.stages.includes(2)) bad("trainStages: 'stages' has no stage 2; run train() for stage 3 alone");
  const out = resolve(cfg.out);
  const s2dir = join(out, STAGE2_DIR);
  const stagesPath = join(out, 'stages.json');
  let file: StagesFile;
  if (opts.resume) {
    const dir = stagesRunDir(opts.resume);
    const f = readStagesFile(dir);
    if (!f) throw new DwcError(`nothing to resume: ${dir} holds no staged run (no stages.json)`, 'DWC_IO');
    if (dir !== out) bad(`--resume ${dir} and --out ${out} differ: a staged run continues in its own folder`);
    file = { ...f, config: cfg };
  } else file = { format: STAGES_FORMAT, config: cfg, stage2: { done: false }, stage3: { started: false } };
  // stage-2 settings checked before anything runs (a bad one fails now, not after the dataset is built)
  const p2 = stage2Config(cfg, s2dir);
  resolvePretrainConfig(p2);
  mkdirSync(out, { recursive: true });
  writeJsonAtomic(stagesPath, file, 2);

  const ds = opts.dataset ?? (await openDataset(cfg, log));
  const count = cfg.stages.length;
  // stage 2: domain transfer (pretrain into OUT/stage2)
  if (!file.stage2.done) {
    const resume2 = opts.resume && existsSync(join(s2dir, 'last.safetensors')) ? s2dir : undefined;
    cb.onStage?.({ stage: 2, index: 1, count, out: s2dir, resumed: !!resume2, skipped: false, from: cfg.clip ?? 'scratch' });
    const r2 = await pretrain({ config: resume2 ? {} : p2, resume: resume2, signal: opts.signal, callbacks: cb.pretrain, dataset: ds, skipTest: true });
    if (r2.interrupted) return { out, interrupted: true, stage: 2, stage2: stage2Summary(s2dir) };
    file.stage2.done = true;
    writeJsonAtomic(stagesPath, file, 2);
  } else cb.onStage?.({ stage: 2, index: 1, count, out: s2dir, resumed: false, skipped: true, from: cfg.clip ?? 'scratch' });
  const stage2 = stage2Summary(s2dir);
  if (!existsSync(stage2.model)) throw new DwcError(`stage 2 is marked done but ${stage2.model} is missing`, 'DWC_IO');
  // Ctrl-C during stage 2's last epoch: stage 2 finished; stop before stage 3 starts
  if (opts.signal?.aborted) {
    log(`interrupted after stage 2; continue with --resume ${out}`);
    return { out, interrupted: true, stage: 3, stage2 };
  }

  // stage 3: DWC on the stage-2 encoder (train into OUT)
  const resume3 = opts.resume && file.stage3.started && existsSync(join(out, 'last.safetensors')) ? out : undefined;
  // a fresh stage 3: no checkpoint of an earlier run in this folder may be taken for its own later
  if (!resume3) rmSync(join(out, 'last.safetensors'), { force: true });
  file.stage3.started = true;
  writeJsonAtomic(stagesPath, file, 2);
  const c3 = stage3Config(cfg);
  cb.onStage?.({ stage: 3, index: 2, count, out, resumed: !!resume3, skipped: false, from: c3.clip as string });
  let r3: TrainResult;
  try {
    r3 = await train({ config: c3, resume: resume3, signal: opts.signal, callbacks: cb.train, dataset: ds, modelFactory: opts.modelFactory, reportWriter: opts.reportWriter });
  } catch (e) {
    // Ctrl-C during the CLIP feature extraction: its partial rows are kept, the next run continues
    if (opts.signal?.aborted && (e as DwcError).code === 'DWC_INTERRUPTED') {
      log(`interrupted in stage 3 (CLIP features); continue with --resume ${out}`);
      return { out, interrupted: true, stage: 3, stage2 };
    }
    throw e;
  }
  return { out, interrupted: r3.interrupted, stage: 3, stage2, stage3: r3 };
}
