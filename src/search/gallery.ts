// Gallery embeddings cached next to the checkpoint. The cache key hashes every image's relative
// path, size and mtime plus the checkpoint's own size and mtime: change an image (or retrain) and
// the gallery is embedded again.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import sharp from 'sharp';
import { DataError } from '../data/errors.js';
import { mapLimit, defaultConcurrency } from '../data/images.js';
import { readSafetensors, writeSafetensors } from '../safetensors.js';
import { precisionKey } from '../precision.js';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif', '.bmp'];

/** Image files under dir (recursive), sorted by relative path. */
export function listGalleryImages(dir: string): string[] {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new DataError(`gallery folder ${root} does not exist`, 'DWC_DATA_MISSING', root);
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && IMAGE_EXTENSIONS.some((x) => e.name.toLowerCase().endsWith(x))) out.push(p);
    }
  };
  walk(root);
  out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (!out.length) throw new DataError(`gallery folder ${root} holds no images (${IMAGE_EXTENSIONS.join(' ')})`, 'DWC_DATA_MISSING', root);
  return out;
}

/**
 * Hash of (relative path, size, mtime) of every file, and of the checkpoint; `key` adds whatever
 * else embeds the gallery (the CLIP of a checkpoint on CLIP features: its identity, src/search/clip_inputs.ts).
 */
export function galleryHash(dir: string, files: readonly string[], checkpoint: string, key?: string): string {
  const h = createHash('sha256');
  const cs = statSync(checkpoint);
  h.update(`ckpt\0${cs.size}\0${cs.mtimeMs}\n`);
  if (key) h.update(`key\0${key}\n`);
  // embeddings made in bf16 are not those of fp32 (src/precision.ts); fp32 keys stay as they were
  const { precision } = precisionKey();
  if (precision) h.update(`precision\0${precision}\n`);
  for (const f of files) {
    const s = statSync(f);
    h.update(`${relative(dir, f)}\0${s.size}\0${s.mtimeMs}\n`);
  }
  return h.digest('hex');
}

/** Cache file for a gallery folder: <checkpoint>.gallery-<hash of the folder path>.safetensors */
export function galleryCachePath(checkpoint: string, dir: string): string {
  const key = createHash('sha256').update(resolve(dir)).digest('hex').slice(0, 12);
  return `${resolve(checkpoint)}.gallery-${key}.safetensors`;
}

export interface CachedGallery {
  files: string[];
  embeddings: Float32Array;
  dim: number;
}

/** Reads the cache if it exists and matches the hash; else undefined. */
export function readGalleryCache(path: string, hash: string): CachedGallery | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const f = readSafetensors(path);
    if (f.metadata.hash !== hash) return undefined;
    const t = f.tensors.get('embeddings');
    if (!t || t.dtype !== 'F32' || t.shape.length !== 2) return undefined;
    const files = JSON.parse(f.metadata.files) as string[];
    if (files.length !== t.shape[0]) return undefined;
    return { files, embeddings: t.data as Float32Array, dim: t.shape[1] };
  } catch {
    return undefined; // a damaged cache is rebuilt, never fatal
  }
}

export function writeGalleryCache(path: string, hash: string, g: CachedGallery): void {
  writeSafetensors(path, { embeddings: { dtype: 'F32', shape: [g.files.length, g.dim], data: g.embeddings } }, { hash, files: JSON.stringify(g.files), format: 'dwc-gallery-1' });
}

/** Checks that sharp can read every image's header; the first bad file is an error naming it. */
export async function checkImagesReadable(files: readonly string[]): Promise<void> {
  await mapLimit(files, defaultConcurrency(), async (f) => {
    try {
      const m = await sharp(f).metadata();
      if (!m.width || !m.height) throw new Error('no size');
    } catch (e) {
      throw new DataError(`cannot read gallery image ${f}: ${(e as Error).message}`, 'DWC_DATA_CORRUPT', f);
    }
  });
}

export interface GalleryEmbedder {
  /** Embeds images (by path) into [n, dim]. */
  (files: string[]): Promise<{ embeddings: Float32Array; dim: number }>;
}

/** Embeds a gallery folder once; later calls read the cache until a file or the checkpoint changes. */
export async function embedGallery(
  checkpoint: string,
  dir: string,
  embed: GalleryEmbedder,
  opts: { batchSize?: number; onProgress?: (done: number, total: number) => void; cache?: boolean; key?: string } = {},
): Promise<CachedGallery & { fromCache: boolean; cachePath: string }> {
  const files = listGalleryImages(dir);
  const hash = galleryHash(resolve(dir), files, checkpoint, opts.key);
  const cachePath = galleryCachePath(checkpoint, dir);
  if (opts.cache !== false) {
    const c = readGalleryCache(cachePath, hash);
    if (c) return { ...c, fromCache: true, cachePath };
  }
  await checkImagesReadable(files);
  const bs = opts.batchSize ?? 64;
  const parts: Float32Array[] = [];
  let dim = 0;
  for (let i = 0; i < files.length; i += bs) {
    const r = await embed(files.slice(i, i + bs));
    dim = r.dim;
    parts.push(r.embeddings);
    opts.onProgress?.(Math.min(files.length, i + bs), files.length);
  }
  const embeddings = new Float32Array(files.length * dim);
  let o = 0;
  for (const p of parts) {
    embeddings.set(p, o);
    o += p.length;
  }
  const g = { files, embeddings, dim };
  if (opts.cache !== false) writeGalleryCache(cachePath, hash, g);
  return { ...g, fromCache: false, cachePath };
}
