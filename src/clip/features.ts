// Frozen CLIP features of a whole dataset for the global stream (MODEL.md §3), natively: every
// image through CLIP's preprocessing and image tower, every query text through the tokenizer and
// the text tower, written in the layout of docs/DATA.md "Frozen feature files" (src/data/features.ts):
//   'image'               [N, E] rows in dataset.images order, metadata 'image_ids'
//   'query_text.<split>'  [Q, E] row q = dataset.queries(split)[q].text
// Resumable: rows are appended to `<out>.partial/rows.f32` and `<out>.partial/state.json` (written
// atomically after the rows are synced) says how many are valid and for which weights + dataset;
// a restart truncates to that count and continues. The final file is written via temp + rename.
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, existsSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { DwcError } from '../native.js';
import { precisionKey } from '../precision.js';
import type { Dataset } from '../data/dataset.js';
import { writeFeatures } from '../data/features.js';
import { readSafetensors } from '../safetensors.js';
import { Clip, resolveClipWeights } from './model.js';
import { preprocessClipImages, type ClipResample } from './preprocess.js';
import { ClipTokenizer } from './tokenizer.js';

/** Bumped when what the rows hold changes (preprocessing, layout): older caches are not reused. */
export const CLIP_FEATURES_VERSION = 1;

export type ClipFeaturesPhase = 'images' | 'texts';

/**
 * How the global stream's CLIP inputs are made: the ONE definition used by the features of
 * training (computeClipFeatures, `train --clip`, `--stages 2,3`) and by the queries and galleries
 * of search / index / serve (src/search/searcher.ts), so both see the same vectors.
 */
export interface ClipInputOptions {
  /** Image resampler (default 'pil', PIL-exact: what training's cache key assumes). */
  resample?: ClipResample;
  /** Cut texts longer than CLIP's context (default true). */
  truncate?: boolean;
}

/** The image preprocessing options of CLIP features (CLIP-SPEC.md "Preprocessing", src/clip/preprocess.ts). */
export function clipPreprocessing(o: ClipInputOptions = {}): { resample: ClipResample } {
  return { resample: o.resample ?? 'pil' };
}

/** Normalised CLIP pixels [n, 3, R, R] of images (files or encoded bytes), exactly as Clip.embedImages prepares them for the features. */
export function clipPixels(clip: Clip, images: readonly (string | Buffer)[], o: ClipInputOptions & { concurrency?: number } = {}): Promise<Float32Array> {
  return preprocessClipImages(images, clip.resolution, { ...clipPreprocessing(o), ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}) });
}

/** CLIP token ids [n, contextLength] of texts, as the features tokenize them (the model's context; cut unless truncate is false). */
export function clipTokenIds(clip: Clip, tok: ClipTokenizer, texts: readonly string[], o: ClipInputOptions = {}): Int32Array {
  return tok.tokenize(texts, { context: clip.contextLength, truncate: o.truncate ?? true });
}

export interface ClipFeaturesOptions {
  /** CLIP weights: a safetensors file or a folder (model.safetensors / open_clip_model.safetensors). */
  clip: string;
  dataset: Dataset;
  /** Output feature file (safetensors). */
  out: string;
  /** Tokenizer (default: the vocabulary in the weights' folder, ClipTokenizer.fromDir). */
  tokenizer?: ClipTokenizer;
  /** Items per native call (default 32). */
  batchSize?: number;
  /** Rows between two saves of the partial progress (default 512, rounded up to batches). */
  saveEvery?: number;
  /** Cut texts longer than CLIP's context instead of failing (default true: one long caption must not stop a long run). */
  truncate?: boolean;
  resample?: ClipResample;
  /** Images decoded at once (default: the cores, at most 8). */
  concurrency?: number;
  /** Restart from scratch even when a matching partial file exists. */
  restart?: boolean;
  /** Stops after the current batch, keeping the partial progress (result.interrupted). */
  signal?: AbortSignal;
  onProgress?: (phase: ClipFeaturesPhase, done: number, total: number) => void;
  onLog?: (msg: string) => void;
  /** SHA-256 of the weights file when the caller has it (else computed). */
  weightsSha256?: string;
}

export interface ClipFeaturesResult {
  out: string;
  dim: number;
  images: number;
  /** Query texts per split. */
  texts: Record<string, number>;
  /** Splits whose texts are not in the file (Fashion200k's training pairs are drawn per epoch). */
  skippedSplits: string[];
  /** Rows found in a partial file from an earlier run and kept. */
  resumedRows: number;
  /** Rows computed by this call. */
  computedRows: number;
  interrupted: boolean;
  seconds: number;
  /** Identity of weights + dataset + version (the cache key of train --clip). */
  key: string;
  weightsSha256: string;
}

/** SHA-256 of a file's bytes (streamed). */
export async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  await new Promise<void>((res, rej) => {
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('end', () => res())
      .on('error', (e) => rej(new DwcError(`cannot read ${path}: ${e.message}`, 'DWC_IO')));
  });
  return h.digest('hex');
}

/** The texts of each split, in query order; splits whose queries are drawn per epoch are skipped. */
function splitTexts(ds: Dataset): { texts: Map<string, string[]>; skipped: string[] } {
  const texts = new Map<string, string[]>();
  const skipped: string[] = [];
  for (const split of ds.splits) {
    const qs = ds.queries(split);
    if (!qs.length) continue;
    if (ds.format === 'fashion200k' && split === ds.trainSplit) {
      skipped.push(split);
      continue;
    }
    texts.set(split, qs.map((q) => q.text));
  }
  return { texts, skipped };
}

/** A hash of what the features depend on in the dataset: its root, images (id, file, size) and the query texts. */
export function datasetIdentity(ds: Dataset): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ format: ds.format, root: resolve(ds.root), name: ds.name }));
  for (const r of ds.images) {
    let size = -1;
    try {
      size = statSync(r.file).size;
    } catch {
      // a missing file is reported when it is read
    }
    h.update(JSON.stringify([r.id, r.file, size]));
  }
  const { texts } = splitTexts(ds);
  for (const [split, t] of texts) h.update(JSON.stringify([split, t]));
  return h.digest('hex');
}

interface PartialState {
  version: number;
  key: string;
  dim: number;
  total: number;
  rows: number;
}

/** One writer per partial folder: a lock file with the pid (a dead owner's lock is taken over). */
function takeLock(lock: string, out: string): void {
  try {
    writeFileSync(lock, String(process.pid), { flag: 'wx' });
    return;
  } catch {
    // held: by a live process?
  }
  const pid = Number(readFileSync(lock, 'utf8').trim());
  let alive = false;
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) {
    try {
      process.kill(pid, 0);
      alive = true;
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  if (alive) throw new DwcError(`features: another process (pid ${pid}) is computing ${out} (lock ${lock}); wait for it, or delete the lock if that process is gone`, 'DWC_BUSY');
  writeFileSync(lock, String(process.pid));
}

function writeJsonAtomic(path: string, o: unknown): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, JSON.stringify(o) + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/**
 * Computes the global stream's frozen features of a dataset with a CLIP (docs/CLIP.md "Features
 * and train --clip") and writes them to `out` in the layout `--features` reads.
 */
export async function computeClipFeatures(o: ClipFeaturesOptions): Promise<ClipFeaturesResult> {
  const t0 = Date.now();
  const ds = o.dataset;
  const out = resolve(o.out);
  const bs = o.batchSize ?? 32;
  if (!Number.isInteger(bs) || bs < 1) throw new DwcError(`features: 'batchSize' must be a positive integer, got ${bs}`, 'DWC_BAD_ARGUMENT');
  const saveEvery = Math.max(bs, Math.ceil((o.saveEvery ?? 512) / bs) * bs);
  const weights = resolveClipWeights(o.clip);
  const clip = await Clip.open(weights);
  // the vocabulary is checked before any image is decoded: a missing one fails at once
  const tok = o.tokenizer ?? ClipTokenizer.fromDir(dirname(weights));
  clip.setTokenizer(tok);
  const E = clip.embedDim;
  const images = ds.images;
  if (!images.length) throw new DwcError(`features: dataset ${ds.name} has no images`, 'DWC_BAD_ARGUMENT');
  const { texts, skipped } = splitTexts(ds);
  const allTexts = [...texts.values()].flat();
  const truncate = o.truncate ?? true;
  // tokenize everything first: an over-long text (with truncate off) fails before hours of images
  const ids = clipTokenIds(clip, tok, allTexts, { truncate });
  const L = clip.contextLength;
  const total = images.length + allTexts.length;

  const weightsSha256 = o.weightsSha256 ?? (await fileSha256(weights));
  const key = createHash('sha256')
    .update(JSON.stringify({ v: CLIP_FEATURES_VERSION, weightsSha256, dataset: datasetIdentity(ds), resample: o.resample ?? 'pil', truncate, E, L, ...precisionKey() }))
    .digest('hex');

  const dir = `${out}.partial`;
  const statePath = join(dir, 'state.json');
  const rowsPath = join(dir, 'rows.f32');
  let rows = 0;
  mkdirSync(dir, { recursive: true });
  takeLock(join(dir, 'lock'), out);
  const discard = () => {
    rmSync(rowsPath, { force: true });
    rmSync(statePath, { force: true });
  };
  if (o.restart) discard();
  if (existsSync(statePath)) {
    let st: PartialState | undefined;
    try {
      st = JSON.parse(readFileSync(statePath, 'utf8')) as PartialState;
    } catch {
      st = undefined;
    }
    if (st && st.version === CLIP_FEATURES_VERSION && st.key === key && st.dim === E && st.total === total && existsSync(rowsPath) && statSync(rowsPath).size >= st.rows * E * 4) {
      rows = st.rows;
      o.onLog?.(`resuming: ${rows} of ${total} rows already computed in ${dir}`);
    } else {
      o.onLog?.(`${dir} belongs to other weights, data or precision: starting over`);
      discard();
    }
  }
  let fd: number;
  try {
    fd = openSync(rowsPath, existsSync(rowsPath) ? 'r+' : 'w+');
  } catch (e) {
    rmSync(join(dir, 'lock'), { force: true });
    throw new DwcError(`cannot open ${rowsPath}: ${(e as Error).message}`, 'DWC_IO');
  }
  const resumedRows = rows;
  let interrupted = false;
  try {
    // rows past the recorded count (a crash between the append and the state file) are dropped
    ftruncateSync(fd, rows * E * 4);
    writeJsonAtomic(statePath, { version: CLIP_FEATURES_VERSION, key, dim: E, total, rows } satisfies PartialState);
    let sinceSave = 0;
    const append = (emb: Float32Array) => {
      writeSync(fd, new Uint8Array(emb.buffer, emb.byteOffset, emb.byteLength), 0, emb.byteLength, rows * E * 4);
      rows += emb.length / E;
      sinceSave += emb.length / E;
      if (sinceSave >= saveEvery || rows === total) {
        fsyncSync(fd);
        writeJsonAtomic(statePath, { version: CLIP_FEATURES_VERSION, key, dim: E, total, rows } satisfies PartialState);
        sinceSave = 0;
      }
    };
    const files = images.map((r) => r.file);
    // images: rows [0, N) — decoded a batch ahead of the embedding (Clip.embedImages)
    while (rows < images.length && !o.signal?.aborted) {
      const start = rows;
      const end = Math.min(images.length, start + saveEvery);
      const emb = await clip.embedImages(files.slice(start, end), {
        batchSize: bs,
        ...clipPreprocessing(o),
        ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
        onProgress: (d) => o.onProgress?.('images', start + d, images.length),
      });
      append(emb);
      if (o.signal?.aborted) break;
    }
    // texts: rows [N, N + T), splits in dataset order
    while (rows >= images.length && rows < total && !o.signal?.aborted) {
      const start = rows - images.length;
      const end = Math.min(allTexts.length, start + saveEvery);
      const emb = await clip.embedTokenIds(ids.subarray(start * L, end * L), {
        batchSize: bs,
        onProgress: (d) => o.onProgress?.('texts', start + d, allTexts.length),
      });
      append(emb);
    }
    if (rows < total) {
      interrupted = true;
      fsyncSync(fd);
      writeJsonAtomic(statePath, { version: CLIP_FEATURES_VERSION, key, dim: E, total, rows } satisfies PartialState);
    }
  } finally {
    closeSync(fd);
    if (o.signal?.aborted || rows < total) rmSync(join(dir, 'lock'), { force: true });
  }
  const texts0: Record<string, number> = Object.fromEntries([...texts].map(([s, t]) => [s, t.length]));
  const result = (): ClipFeaturesResult => ({
    out, dim: E, images: images.length, texts: texts0, skippedSplits: skipped, resumedRows, computedRows: rows - resumedRows, interrupted,
    seconds: (Date.now() - t0) / 1000, key, weightsSha256,
  });
  if (interrupted) return result();

  // assemble the final file from the rows (temp + rename in writeFeatures)
  const rfd = openSync(rowsPath, 'r');
  let all: Float32Array;
  try {
    const bytes = total * E * 4;
    if (fstatSync(rfd).size < bytes) throw new DwcError(`features: ${rowsPath} is shorter than its state says; delete ${dir} and run again`, 'DWC_IO');
    all = new Float32Array(total * E);
    const view = new Uint8Array(all.buffer);
    for (let off = 0; off < bytes; ) {
      const n = readSync(rfd, view, off, Math.min(1 << 28, bytes - off), off);
      if (n <= 0) throw new DwcError(`features: short read from ${rowsPath}`, 'DWC_IO');
      off += n;
    }
  } finally {
    closeSync(rfd);
  }
  const queryText: Record<string, Float32Array> = {};
  let at = images.length;
  for (const [split, t] of texts) {
    queryText[split] = all.subarray(at * E, (at + t.length) * E);
    at += t.length;
  }
  for (let i = 0; i < all.length; i++) if (!Number.isFinite(all[i])) throw new DwcError(`features: row ${Math.floor(i / E)} holds a non-finite value; the weights are broken`, 'DWC_NUMERIC');
  mkdirSync(dirname(out), { recursive: true });
  writeFeatures(out, { dim: E, imageIds: images.map((r) => r.id), image: all.subarray(0, images.length * E), queryText });
  rmSync(dir, { recursive: true, force: true });
  return result();
}

export interface CachedClipFeatures {
  path: string;
  dim: number;
  /** True when the file was already in the cache. */
  reused: boolean;
  result?: ClipFeaturesResult;
}

/**
 * The features of `dataset` under `cacheDir`, keyed by the weights' SHA-256 and the dataset's
 * identity (`clip-features-<hash>.safetensors`); computed (resumably) on first use.
 */
export async function cachedClipFeatures(o: Omit<ClipFeaturesOptions, 'out'> & { cacheDir: string }): Promise<CachedClipFeatures> {
  const weights = resolveClipWeights(o.clip);
  const weightsSha256 = o.weightsSha256 ?? (await fileSha256(weights));
  const h = createHash('sha256')
    .update(JSON.stringify({ v: CLIP_FEATURES_VERSION, w: weightsSha256, d: datasetIdentity(o.dataset), resample: o.resample ?? 'pil', truncate: o.truncate ?? true, ...precisionKey() }))
    .digest('hex')
    .slice(0, 16);
  const path = join(o.cacheDir, `clip-features-${h}.safetensors`);
  if (existsSync(path)) {
    try {
      const f = readSafetensors(path);
      const img = f.tensors.get('image');
      if (img && img.shape.length === 2) {
        o.onLog?.(`CLIP features: reusing ${path}`);
        return { path, dim: img.shape[1], reused: true };
      }
    } catch {
      // unreadable: recomputed below
    }
  }
  mkdirSync(o.cacheDir, { recursive: true });
  o.onLog?.(`CLIP features: computing ${o.dataset.images.length} images and the query texts into ${path} (cached after)`);
  const result = await computeClipFeatures({ ...o, out: path, weightsSha256 });
  if (result.interrupted) throw new DwcError(`CLIP features: interrupted after ${result.computedRows + result.resumedRows} rows; the next run continues from there`, 'DWC_INTERRUPTED');
  return { path, dim: result.dim, reused: false, result };
}
