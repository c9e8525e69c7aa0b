// The few lines that connect the trainer to the model (src/model.ts) and the data layer
// (src/data/index.ts). Modules are looked up at run time so this file compiles before they exist;
// once they land, replace the lookups by plain imports.
import { existsSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DwcError } from '../native.js';
import { loadGeneric, type Dataset } from '../data/dataset.js';
import { DataError } from '../data/errors.js';
import type { ReportWriter } from '../eval/records.js';
import type { TrainConfig } from './config.js';
import { syntheticDir } from './config.js';
import type { FeatureSource, ModelFactory, SynthGenerator } from './types.js';
import { nativeModelFactory } from './native_model.js';

type AnyModule = Record<string, unknown>;

async function tryImport(spec: string): Promise<AnyModule | undefined> {
  try {
    return (await import(spec)) as AnyModule;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND') return undefined;
    throw e;
  }
}

let reportWriter: ReportWriter | undefined;
/** The report writer train() uses by default (src/api.ts registers src/report's; src/train never imports src/report). */
export function setReportWriter(w: ReportWriter | undefined): void {
  reportWriter = w;
}
export function getReportWriter(): ReportWriter | undefined {
  return reportWriter;
}

let factoryOverride: ModelFactory | undefined;
/** Library/test hook: use this factory instead of the native model. */
export function setModelFactory(f: ModelFactory | undefined): void {
  factoryOverride = f;
}

/** The native model's factory (src/train/native_model.ts) unless a test/library set another. */
export async function getModelFactory(): Promise<ModelFactory> {
  return factoryOverride ?? nativeModelFactory;
}

/** The synthetic generator of the data layer (`generateSynthetic(opts)`). */
export async function getSynthGenerator(): Promise<SynthGenerator> {
  const m = await tryImport('../data/index.js');
  const g = (m?.generateSynthetic ?? m?.synth) as SynthGenerator | undefined;
  if (typeof g !== 'function') throw new DwcError('the synthetic benchmark generator is not available in this build (src/data/index.ts does not export generateSynthetic)', 'DWC_NOT_BUILT');
  return g;
}

/** Opens the dataset of a config; generates the built-in synthetic benchmark on first use. */
export async function openDataset(cfg: TrainConfig, log?: (msg: string) => void): Promise<Dataset> {
  if (cfg.dataset === 'synthetic') {
    const dir = cfg.data ?? syntheticDir(cfg);
    if (!cfg.data && !existsSync(join(dir, 'dataset.json')) && !existsSync(join(dir, 'dataset.jsonl'))) {
      log?.(`generating the synthetic benchmark into ${dir} (first use; reused after)`);
      const gen = await getSynthGenerator();
      // Generated into a private folder and renamed into place: a run that starts meanwhile (e.g.
      // parallel experiments) never reads a half-written benchmark; when two generate at once,
      // the first rename wins and the other's identical copy is dropped.
      const tmp = `${dir}.tmp-${process.pid}`;
      rmSync(tmp, { recursive: true, force: true });
      try {
        // src/data/synth.ts names: train/test query counts, size = image side.
        await (gen as unknown as (o: Record<string, unknown>) => Promise<unknown>)({ out: tmp, seed: cfg.synth.seed, size: cfg.dims.imageSize, noise: cfg.synth.noise, train: cfg.synth.trainQueries, test: cfg.synth.testQueries, val: cfg.synth.valQueries });
        try {
          renameSync(tmp, dir);
        } catch (e) {
          if (!existsSync(join(dir, 'dataset.json'))) throw e;
        }
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    }
    return loadGeneric(dir);
  }
  if (!cfg.data || !existsSync(cfg.data)) throw new DataError(`dataset folder ${cfg.data ?? '(none)'} does not exist`, 'DWC_DATA_MISSING', cfg.data);
  if (cfg.dataset === 'generic') return loadGeneric(cfg.data);
  const m = await tryImport('../data/index.js');
  const load = m?.loadDataset as ((path: string, opts: { format?: string }) => Dataset) | undefined;
  if (typeof load !== 'function') throw new DwcError(`the ${cfg.dataset} loader is not available in this build (src/data/index.ts does not export loadDataset)`, 'DWC_NOT_BUILT');
  // TODO(lead): pass cfg.category once loadDataset/loadFashionIQ take it.
  return load(cfg.data, { format: cfg.dataset });
}

/** Frozen feature file for the global stream (`openFeatures(path, dataset)` of the data layer). */
export async function openFeatures(cfg: TrainConfig, ds: Dataset, path = cfg.features): Promise<FeatureSource | undefined> {
  if (!path) return undefined;
  if (!existsSync(path)) throw new DataError(`feature file ${path} does not exist`, 'DWC_DATA_MISSING', path);
  const m = await tryImport('../data/index.js');
  const open = m?.openFeatures as ((path: string, ds: Dataset) => Promise<FeatureSource> | FeatureSource) | undefined;
  if (typeof open !== 'function') throw new DwcError('frozen feature files are not available in this build (src/data/index.ts does not export openFeatures)', 'DWC_NOT_BUILT');
  return open(path, ds);
}
