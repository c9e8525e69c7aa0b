// Image pipeline (sharp): decode any format sharp reads, resize the shorter side and centre-crop
// to size×size, optional horizontal flip, normalise with the CLIP mean/std, write planar float32
// [3,H,W] into a preallocated batch buffer. Bad files throw DataError naming the file, or are
// skipped and counted with skipBad.
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import sharp from 'sharp';
import { DataError, checkArg, checkInt } from './errors.js';

export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

export interface ImageOptions {
  /** Output side (default 224). */
  size?: number;
  /** Mirror left-right (training augmentation). */
  flip?: boolean;
  mean?: readonly number[];
  std?: readonly number[];
  /** Resampling kernel for the resize (default 'cubic', as CLIP's bicubic). */
  kernel?: 'nearest' | 'linear' | 'cubic' | 'mitchell' | 'lanczos2' | 'lanczos3';
}

let lutCache: { key: string; lut: Float32Array } | undefined;

/** Per-channel lookup table v ↦ (v/255 − mean)/std for v = 0..255 (exact: the same float as the formula). */
function normLut(opts: ImageOptions): Float32Array {
  const mean = opts.mean ?? CLIP_MEAN;
  const std = opts.std ?? CLIP_STD;
  const key = `${mean.join(',')}/${std.join(',')}`;
  if (lutCache?.key === key) return lutCache.lut;
  checkArg(mean.length === 3 && mean.every(Number.isFinite), 'mean', 'must be 3 finite numbers');
  checkArg(std.length === 3 && std.every((s) => Number.isFinite(s) && s > 0), 'std', 'must be 3 positive finite numbers');
  const lut = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) for (let v = 0; v < 256; v++) lut[c * 256 + v] = (v / 255 - mean[c]) / std[c];
  lutCache = { key, lut };
  return lut;
}

/** Decodes, resizes and crops one file to raw 8-bit RGB (HWC). */
export async function decodeRgb(file: string | Buffer, size: number, opts: ImageOptions = {}): Promise<Buffer> {
  checkInt(size, 'size', 1, 16384);
  if (typeof file !== 'string') return decodeRgbBytes(file, size, opts, 'the uploaded image');
  if (!existsSync(file)) throw new DataError(`image file ${file} does not exist`, 'DWC_DATA_MISSING', file);
  return decodeRgbBytes(file, size, opts, file);
}

async function decodeRgbBytes(file: string | Buffer, size: number, opts: ImageOptions, name: string): Promise<Buffer> {
  try {
    let img = sharp(file, { failOn: 'error' })
      .flatten({ background: '#ffffff' })
      .toColourspace('srgb')
      .resize(size, size, { fit: 'cover', position: 'centre', kernel: opts.kernel ?? 'cubic' });
    if (opts.flip) img = img.flop();
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
    if (info.width !== size || info.height !== size) throw new Error(`decoded to ${info.width}x${info.height}`);
    if (info.channels === 3) return data;
    // Grey or grey+alpha: expand to RGB.
    const out = Buffer.alloc(size * size * 3);
    for (let i = 0; i < size * size; i++) {
      const base = i * info.channels;
      const g = data[base];
      out[3 * i] = info.channels >= 3 ? data[base] : g;
      out[3 * i + 1] = info.channels >= 3 ? data[base + 1] : g;
      out[3 * i + 2] = info.channels >= 3 ? data[base + 2] : g;
    }
    return out;
  } catch (e) {
    if (e instanceof DataError) throw e;
    throw new DataError(`cannot decode ${typeof file === 'string' ? `image ${name}` : name}: ${(e as Error).message}`, 'DWC_DATA_CORRUPT', name);
  }
}

/** Normalises raw RGB (HWC, 8-bit) into planar float32 [3,S,S] at out[offset..]. */
export function normaliseInto(rgb: Uint8Array, size: number, out: Float32Array, offset: number, opts: ImageOptions = {}): void {
  const lut = normLut(opts);
  const hw = size * size;
  checkArg(offset >= 0 && offset + 3 * hw <= out.length, 'offset', `${offset} + 3*${size}*${size} exceeds the buffer length ${out.length}`);
  checkArg(rgb.length >= 3 * hw, 'rgb', `has ${rgb.length} bytes, needs ${3 * hw}`);
  const o0 = offset;
  const o1 = offset + hw;
  const o2 = offset + 2 * hw;
  for (let i = 0, j = 0; i < hw; i++, j += 3) {
    out[o0 + i] = lut[rgb[j]];
    out[o1 + i] = lut[256 + rgb[j + 1]];
    out[o2 + i] = lut[512 + rgb[j + 2]];
  }
}

/** Decodes one image into out[offset .. offset + 3*size*size) (planar, normalised). */
export async function loadImageInto(file: string, out: Float32Array, offset: number, opts: ImageOptions = {}): Promise<void> {
  const size = opts.size ?? 224;
  const rgb = await decodeRgb(file, size, opts);
  normaliseInto(rgb, size, out, offset, opts);
}

/** Runs fn over items with at most `limit` in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

/** Default decode concurrency: the machine's cores (sharp runs each image on the libuv pool). */
export function defaultConcurrency(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}

export interface LoadManyOptions extends ImageOptions {
  concurrency?: number;
  /** Skip unreadable images instead of throwing; their slots are left zero and reported. */
  skipBad?: boolean;
  /** Per-image flip (overrides `flip`). */
  flips?: readonly boolean[];
}

export interface LoadManyResult {
  /** ok[i] is false when image i was skipped. */
  ok: boolean[];
  skipped: number;
  errors: DataError[];
}

/** Decodes many images concurrently into consecutive slots of `out` starting at `offset`. */
export async function loadImagesInto(files: readonly string[], out: Float32Array, offset = 0, opts: LoadManyOptions = {}): Promise<LoadManyResult> {
  const size = opts.size ?? 224;
  checkInt(size, 'size', 1, 16384);
  const per = 3 * size * size;
  checkArg(offset >= 0 && offset + files.length * per <= out.length, 'out', `holds ${out.length} floats, needs ${offset + files.length * per} for ${files.length} images of ${size}x${size}`);
  const conc = opts.concurrency ?? defaultConcurrency();
  checkInt(conc, 'concurrency', 1, 256);
  const errors: DataError[] = [];
  const ok = await mapLimit(files, conc, async (f, i) => {
    try {
      await loadImageInto(f, out, offset + i * per, { ...opts, size, flip: opts.flips ? opts.flips[i] : opts.flip });
      return true;
    } catch (e) {
      if (!opts.skipBad || !(e instanceof DataError) || e.code === 'DWC_BAD_ARGUMENT') throw e;
      out.fill(0, offset + i * per, offset + (i + 1) * per);
      errors.push(e);
      return false;
    }
  });
  return { ok, skipped: errors.length, errors };
}

/** Translates planar [3,S,S] in place by (dx, dy), repeating edge pixels. */
export function shiftInto(x: Float32Array, off: number, S: number, dx: number, dy: number): void {
  if (!dx && !dy) return;
  const tmp = new Float32Array(S * S);
  for (let c = 0; c < 3; c++) {
    const base = off + c * S * S;
    tmp.set(x.subarray(base, base + S * S));
    for (let y = 0; y < S; y++) {
      const sy = Math.min(S - 1, Math.max(0, y - dy));
      for (let xx = 0; xx < S; xx++) x[base + y * S + xx] = tmp[sy * S + Math.min(S - 1, Math.max(0, xx - dx))];
    }
  }
}
