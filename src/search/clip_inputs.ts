// The global stream's frozen CLIP features at query time (docs/SERVE.md "Checkpoints trained on
// CLIP features"): a checkpoint trained with `train --clip DIR` or `--stages 2,3` reads CLIP
// embeddings e_I, e_T, e_tgt (docs/MODEL.md §3) that training took from its feature cache. Search,
// index and serve compute them for new images and texts with the same CLIP, through the same
// preprocessing and tokenization (src/clip/features.ts clipPixels / clipTokenIds / clipPreprocessing).
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { DataError } from '../data/errors.js';
import { DwcError } from '../native.js';
import { Clip, resolveClipWeights } from '../clip/model.js';
import { clipPixels, clipPreprocessing, clipTokenIds } from '../clip/features.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import type { CheckpointInfo } from '../train/checkpoint.js';
import { clipFrozen } from '../train/config.js';

/** `--clip DIR` of search / index / serve. */
export const CLIP_OPTION_HELP =
  "CLIP weights folder for a checkpoint trained on CLIP features (train --clip / --stages 2,3; default: the folder recorded in the checkpoint), or for a --features checkpoint whose file `dwc-native features --clip DIR` wrote";

/** Which CLIP a checkpoint's queries and gallery images need. */
export interface SearchClipPlan {
  /** The CLIP folder (or file) given or recorded. */
  dir: string;
  /** Its weights file (resolveClipWeights). */
  weights: string;
  /** Where the path came from: the checkpoint's config (`clip`) or the caller (`--clip DIR`, OpenOptions.clip). */
  from: 'checkpoint' | 'option';
  /** Cheap identity of the weights file (clipWeightsIdentity): part of the gallery cache key and of the index's model id. */
  id: string;
}

/** True when the checkpoint's global stream reads frozen features (a `--clip`, staged or `--features` run with a global stream; not an unfrozen CLIP, `--encoder-lr`, whose weights are in the checkpoint). */
export function readsFrozenFeatures(info: CheckpointInfo): boolean {
  const c = info.config;
  if (!c) return false;
  return !!(c.features || clipFrozen(c)) && !(c.ablations ?? []).includes('local-only');
}

/**
 * Identity of CLIP weights without reading them all: sha256 over the file's size, its safetensors
 * header and 16 evenly spaced 64 KiB samples of the tensor data (fine-tuned weights of the same
 * architecture differ in every sample; a copy of the file keeps the identity).
 */
export function clipWeightsIdentity(file: string): string {
  const h = createHash('sha256');
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    h.update(`clip\0${size}\n`);
    const chunk = Buffer.alloc(64 << 10);
    const read = (pos: number, n: number) => {
      const got = readSync(fd, chunk, 0, Math.min(n, chunk.length), pos);
      h.update(chunk.subarray(0, got));
    };
    const len = Buffer.alloc(8);
    readSync(fd, len, 0, 8, 0);
    const hl = Math.min(Number(len.readBigUInt64LE(0)), Math.max(0, size - 8));
    for (let o = 0; o < 8 + hl; o += chunk.length) read(o, Math.min(chunk.length, 8 + hl - o));
    const n = 16;
    for (let i = 0; i < n; i++) read(Math.max(0, Math.floor(((size - chunk.length) * i) / (n - 1))), chunk.length);
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/**
 * The CLIP a checkpoint needs at query time, or undefined when its global stream does not read
 * frozen features. `override` (`--clip DIR`) replaces the recorded path. Errors name the problem:
 * the recorded folder is missing (use --clip DIR), or the checkpoint read a `--features` file that
 * nothing here can recompute for new images.
 */
export function planSearchClip(info: CheckpointInfo, override?: string): SearchClipPlan | undefined {
  const c = info.config;
  if (!c || !readsFrozenFeatures(info)) {
    if (override) throw new DwcError(`--clip ${override}: checkpoint ${info.path} does not read frozen CLIP features (it was trained without --clip / --features / --stages 2,3); leave --clip out`, 'DWC_BAD_ARGUMENT');
    return undefined;
  }
  if (override) {
    const dir = resolve(override);
    if (!existsSync(dir)) throw new DataError(`--clip ${dir} does not exist (give the CLIP weights folder or file the checkpoint was trained with)`, 'DWC_DATA_MISSING', dir);
    const weights = resolveClipWeights(dir);
    return { dir, weights, from: 'option', id: clipWeightsIdentity(weights) };
  }
  if (!c.clip)
    throw new DwcError(
      `checkpoint ${info.path} was trained on frozen features read from the file ${c.features} (--features): search, index and serve cannot compute those features for new images and texts. ` +
        'If that file was written by `dwc-native features --clip DIR`, pass the same CLIP with --clip DIR (library: Searcher.open(checkpoint, { clip: DIR })); otherwise train with --clip DIR so that dwc-native computes the features itself, or without --features.',
      'DWC_BAD_ARGUMENT',
    );
  const dir = resolve(c.clip);
  if (!existsSync(dir))
    throw new DataError(
      `checkpoint ${info.path} was trained on the CLIP features of ${dir}, which does not exist here; pass that CLIP's weights folder with --clip DIR (library: Searcher.open(checkpoint, { clip: DIR }))`,
      'DWC_DATA_MISSING',
      dir,
    );
  let weights: string;
  try {
    weights = resolveClipWeights(dir);
  } catch (e) {
    throw new DataError(`checkpoint ${info.path} was trained on the CLIP features of ${dir}: ${(e as Error).message}; pass the CLIP weights folder with --clip DIR`, 'DWC_DATA_MISSING', dir);
  }
  return { dir, weights, from: 'checkpoint', id: clipWeightsIdentity(weights) };
}

/** What a gallery cache key adds for a checkpoint on CLIP features (src/search/gallery.ts galleryHash `key`). */
export function clipGalleryKey(plan: SearchClipPlan | undefined): string | undefined {
  return plan ? `clip\0${plan.id}` : undefined;
}

/** A loaded CLIP producing the global stream's features of gallery images and queries. */
export class ClipInputs {
  private constructor(
    readonly plan: SearchClipPlan,
    readonly clip: Clip,
    private readonly tok: ClipTokenizer,
  ) {}

  /** Loads the plan's CLIP and its tokenizer; its embed dim must be the checkpoint's Dc. */
  static async open(plan: SearchClipPlan, info: CheckpointInfo): Promise<ClipInputs> {
    const clip = await Clip.open(plan.weights);
    const Dc = info.config?.dims.Dc;
    if (clip.embedDim !== Dc)
      throw new DwcError(
        `the CLIP ${plan.dir} embeds into ${clip.embedDim} dims but checkpoint ${info.path}'s global stream reads ${Dc}-dim features (Dc); ${plan.from === 'option' ? 'this is not the CLIP it was trained with: pass that one with --clip DIR' : 'the weights at that path changed since training: pass the CLIP it was trained with via --clip DIR'}`,
        'DWC_BAD_ARGUMENT',
      );
    // the vocabulary of the weights' folder, as computeClipFeatures reads it
    const tok = ClipTokenizer.fromDir(dirname(plan.weights));
    clip.setTokenizer(tok);
    return new ClipInputs(plan, clip, tok);
  }

  get dim(): number {
    return this.clip.embedDim;
  }

  /** CLIP pixels [n, 3, R, R] of query images (decoding only: run it outside the model's serialized calls). */
  pixels(images: readonly (string | Buffer)[]): Promise<Float32Array> {
    return clipPixels(this.clip, images);
  }

  /** e_tgt [n, Dc] of gallery image files, as training's feature file holds them. */
  embedImageFiles(files: readonly string[], batchSize = 32): Promise<Float32Array> {
    return this.clip.embedImages(files, { batchSize, ...clipPreprocessing() });
  }

  /** e_I [n, Dc] of already prepared pixels (pixels()). */
  embedPixels(pixels: Float32Array, batchSize = 32): Promise<Float32Array> {
    return this.clip.embedImagesTensor(pixels, { batchSize });
  }

  /** e_T [n, Dc] of modification texts. */
  embedTexts(texts: readonly string[], batchSize = 32): Promise<Float32Array> {
    return this.clip.embedTokenIds(clipTokenIds(this.clip, this.tok, texts), { batchSize });
  }
}
