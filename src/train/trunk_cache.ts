// Frozen-trunk mode (issue 5 item 4): the local trunk's eval-mode feature maps are computed once
// per image and cached next to the run; the heads then train from the cache (Batch.fmap), the
// trunk gets no update. Files: <dir>/trunk_cache.f32 (row i = image ids[i], [C,H,W] float32,
// read with positioned reads, never loaded whole) and <dir>/trunk_cache.json (index: format,
// trunk weights hash, image size, C, H, W, ids). The cache is reused when the hash (SHA-256 of
// every local.img_model.* tensor, names included) and image size match and it holds every id.
import { createHash } from 'node:crypto';
import { precisionKey } from '../precision.js';
import { closeSync, existsSync, openSync, readFileSync, readSync, renameSync, writeSync } from 'node:fs';
import { writeJsonAtomic } from '../data/fsutil.js';
import { join } from 'node:path';
import type { DwcModel } from '../model.js';
import { DwcError } from '../native.js';
import { TRUNK_PREFIX } from '../trunk.js';
import type { TrunkCacheContext } from './types.js';

const FORMAT = 'dwc-native trunk cache 1';

interface CacheIndex {
  format: string;
  hash: string;
  imageSize: number;
  C: number;
  H: number;
  W: number;
  ids: string[];
}

/** SHA-256 of the local trunk's tensors (parameters and running statistics). */
export function trunkHash(model: DwcModel): string {
  const h = createHash('sha256');
  for (const p of model.params()) {
    if (!p.name.startsWith(TRUNK_PREFIX)) continue;
    const a = model.getParam(p.name);
    h.update(p.name);
    h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  }
  // maps computed in bf16 are their own (src/precision.ts); fp32 hashes stay as they were
  const { precision } = precisionKey();
  if (precision) h.update(`precision\0${precision}`);
  return h.digest('hex');
}

export class TrunkCache {
  private readonly row: Map<string, number>;
  private fd: number;
  readonly per: number;

  private constructor(
    readonly file: string,
    readonly index: CacheIndex,
  ) {
    this.row = new Map(index.ids.map((id, i) => [id, i]));
    this.per = index.C * index.H * index.W;
    this.fd = openSync(file, 'r');
  }

  get C(): number {
    return this.index.C;
  }
  get H(): number {
    return this.index.H;
  }
  get W(): number {
    return this.index.W;
  }
  has(id: string): boolean {
    return this.row.has(id);
  }

  /** Maps of these images [n,C,H,W]; flips[i] mirrors map i along W (the flip augmentation). */
  gather(ids: readonly string[], flips?: readonly boolean[]): Float32Array {
    const out = new Float32Array(ids.length * this.per);
    const bytes = this.per * 4;
    ids.forEach((id, i) => {
      const r = this.row.get(id);
      if (r === undefined) throw new DwcError(`trunk cache ${this.file}: no entry for image '${id}'`, 'DWC_BAD_ARGUMENT');
      const n = readSync(this.fd, new Uint8Array(out.buffer, i * bytes, bytes), 0, bytes, r * bytes);
      if (n !== bytes) throw new DwcError(`trunk cache ${this.file}: short read for image '${id}' (truncated file?)`, 'DWC_IO');
      if (flips?.[i]) mirrorW(out.subarray(i * this.per, (i + 1) * this.per), this.index.W);
    });
    return out;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  /** Opens the cache of `dir` if valid for this trunk (hash), image size and ids; else null. */
  static open(dir: string, hash: string, imageSize: number, ids: readonly string[]): TrunkCache | null {
    const ip = join(dir, 'trunk_cache.json');
    const fp = join(dir, 'trunk_cache.f32');
    if (!existsSync(ip) || !existsSync(fp)) return null;
    let idx: CacheIndex;
    try {
      idx = JSON.parse(readFileSync(ip, 'utf8')) as CacheIndex;
    } catch {
      return null;
    }
    if (idx.format !== FORMAT || idx.hash !== hash || idx.imageSize !== imageSize || !Array.isArray(idx.ids)) return null;
    const have = new Set(idx.ids);
    if (!ids.every((id) => have.has(id))) return null;
    return new TrunkCache(fp, idx);
  }

  /** Computes the maps of every id (eval mode, in batches) and writes the cache atomically. */
  static async build(model: DwcModel, hash: string, ctx: TrunkCacheContext): Promise<TrunkCache> {
    const fp = join(ctx.dir, 'trunk_cache.f32');
    const ip = join(ctx.dir, 'trunk_cache.json');
    const tmp = `${fp}.tmp-${process.pid}`;
    const fd = openSync(tmp, 'w');
    const S = ctx.imageSize;
    let shape: { C: number; H: number; W: number } | undefined;
    try {
      for (let i = 0; i < ctx.ids.length; i += ctx.batchSize) {
        const ids = ctx.ids.slice(i, i + ctx.batchSize);
        const images = await ctx.load(ids);
        const r = await model.trunkFeatures(images, ids.length, S, S);
        shape = { C: r.C, H: r.H, W: r.W };
        writeSync(fd, new Uint8Array(r.fmap.buffer, r.fmap.byteOffset, r.fmap.byteLength));
        ctx.onProgress?.(Math.min(ctx.ids.length, i + ctx.batchSize), ctx.ids.length);
      }
    } finally {
      closeSync(fd);
    }
    if (!shape) throw new DwcError('trunk cache: no images to cache', 'DWC_BAD_ARGUMENT');
    renameSync(tmp, fp);
    const idx: CacheIndex = { format: FORMAT, hash, imageSize: S, ...shape, ids: [...ctx.ids] };
    writeJsonAtomic(ip, idx);
    return new TrunkCache(fp, idx);
  }
}

function mirrorW(m: Float32Array, W: number): void {
  for (let r = 0; r < m.length; r += W)
    for (let a = r, b = r + W - 1; a < b; a++, b--) {
      const t = m[a];
      m[a] = m[b];
      m[b] = t;
    }
}
