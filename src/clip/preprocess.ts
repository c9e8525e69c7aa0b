// CLIP image preprocessing (CLIP-SPEC.md "Preprocessing"; docs/CLIP-TOKENIZER.md): resize the
// shorter side to the resolution with bicubic, centre crop square, RGB, scale to [0,1], normalise
// with CLIP's mean/std → float32 [3,R,R]. The geometry is torchvision's (Resize(R) on a PIL image:
// the longer side becomes int(R·long/short); CenterCrop: offsets round((size − R)/2), Python's
// half-to-even round).
//
// Two resamplers:
// - 'pil' (default): our implementation of Pillow's bicubic convolution (a = −0.5, support 2·scale
//   when shrinking, horizontal pass then vertical, 8-bit fixed-point coefficients with 22 fraction
//   bits, each pass rounded and clipped to 8 bits; RGBA / LA premultiplied around the resize as
//   Pillow does). sharp only decodes. Matches the PyTorch/PIL pipeline to the pixel level on
//   lossless inputs (test/clip_preprocess.test.js measures it).
// - 'sharp': libvips's 'cubic' kernel (Catmull-Rom, the same a = −0.5 curve) inside sharp. Faster,
//   but libvips shrinks by a box filter first for large factors and rounds differently, so pixels
//   differ from PIL by a few levels (measured in the test).
import { existsSync } from 'node:fs';
import sharp from 'sharp';
import { DataError, checkArg, checkInt } from '../data/errors.js';
import { CLIP_MEAN, CLIP_STD, defaultConcurrency, mapLimit, normaliseInto } from '../data/images.js';

export { CLIP_MEAN, CLIP_STD };

export type ClipResample = 'pil' | 'sharp';

export interface ClipPreprocessOptions {
  /** Resampler (default 'pil', see the file header). */
  resample?: ClipResample;
  mean?: readonly number[];
  std?: readonly number[];
}

export interface ClipPreprocessManyOptions extends ClipPreprocessOptions {
  /** Images decoded at once (default: the machine's cores, at most 8). */
  concurrency?: number;
}

/** torchvision Resize(R) output size for a w×h image: the shorter side R, the longer int(R·long/short). */
export function clipResizedSize(w: number, h: number, resolution: number): [number, number] {
  if (w <= h) return [resolution, Math.trunc((resolution * h) / w)];
  return [Math.trunc((resolution * w) / h), resolution];
}

/** Python's round() (half to even) of x ≥ 0. */
function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** torchvision CenterCrop offsets (left, top) of an R×R crop from a w×h image. */
export function clipCropOffsets(w: number, h: number, resolution: number): [number, number] {
  return [pyRound((w - resolution) / 2), pyRound((h - resolution) / 2)];
}

// ---- Pillow-style bicubic resampling (8 bits per channel) ----
const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs {
  ksize: number;
  /** per output index: first input index and tap count */
  bounds: Int32Array;
  /** fixed-point weights, ksize per output index */
  kk: Float64Array;
}

function precomputeCoeffs(inSize: number, outSize: number): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    // C's (int) truncates toward zero.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss: number): number {
  const v = Math.floor(ss / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Pillow's Image.resize((ow, oh), BICUBIC) of interleaved 8-bit pixels (c channels), followed by
 * the r×r crop at (left, top): only the crop's pixels are computed (each output pixel of Pillow's
 * two passes depends on its own taps only, so the values are the same).
 */
function resizeCropPil(src: Uint8Array, w: number, h: number, c: number, ow: number, oh: number, left: number, top: number, r: number): Uint8Array {
  const out = new Uint8Array(r * r * c);
  if (ow === w && oh === h) {
    // Pillow returns the image unchanged.
    for (let y = 0; y < r; y++) out.set(src.subarray(((y + top) * w + left) * c, ((y + top) * w + left + r) * c), y * r * c);
    return out;
  }
  const needH = ow !== w;
  const needV = oh !== h;
  // Input rows the crop's output rows read (all rows when there is no vertical pass).
  const vert = needV ? precomputeCoeffs(h, oh) : undefined;
  const first = vert ? vert.bounds[2 * top] : top;
  const last = vert ? vert.bounds[2 * (top + r - 1)] + vert.bounds[2 * (top + r - 1) + 1] : top + r;
  const rows = last - first;
  // Horizontal pass over those rows, the crop's columns only: tmp is rows × r × c.
  let tmp: Uint8Array;
  if (needH) {
    const horiz = precomputeCoeffs(w, ow);
    tmp = new Uint8Array(rows * r * c);
    for (let y = 0; y < rows; y++) {
      const rowIn = (y + first) * w * c;
      for (let j = 0; j < r; j++) {
        const xx = left + j;
        const xmin = horiz.bounds[2 * xx];
        const n = horiz.bounds[2 * xx + 1];
        const k0 = xx * horiz.ksize;
        for (let ch = 0; ch < c; ch++) {
          let ss = ONE / 2;
          for (let x = 0, p = rowIn + xmin * c + ch; x < n; x++, p += c) ss += src[p] * horiz.kk[k0 + x];
          tmp[(y * r + j) * c + ch] = clip8(ss);
        }
      }
    }
  } else {
    tmp = new Uint8Array(rows * r * c);
    for (let y = 0; y < rows; y++) tmp.set(src.subarray(((y + first) * w + left) * c, ((y + first) * w + left + r) * c), y * r * c);
  }
  if (!vert) return tmp; // rows === r
  const stride = r * c;
  for (let i = 0; i < r; i++) {
    const yy = top + i;
    const ymin = vert.bounds[2 * yy] - first;
    const n = vert.bounds[2 * yy + 1];
    const k0 = yy * vert.ksize;
    for (let q = 0; q < stride; q++) {
      let ss = ONE / 2;
      for (let y = 0, p = ymin * stride + q; y < n; y++, p += stride) ss += tmp[p] * vert.kk[k0 + y];
      out[i * stride + q] = clip8(ss);
    }
  }
  return out;
}

/**
 * Pillow's resize for palette ("P") and 1-bit ("1") images, which Pillow always does with NEAREST:
 * source column trunc(x0), trunc(x0 + s), … accumulated in doubles from x0 = s/2 (s = in/out),
 * likewise for rows; then the r×r crop at (left, top).
 */
function resizeCropNearest(src: Uint8Array, w: number, h: number, c: number, ow: number, oh: number, left: number, top: number, r: number): Uint8Array {
  const table = (inSize: number, outSize: number): Int32Array => {
    const t = new Int32Array(outSize);
    const a = inSize / outSize;
    let xo = a * 0.5;
    for (let x = 0; x < outSize; x++) {
      t[x] = Math.min(inSize - 1, xo < 0 ? 0 : Math.trunc(xo));
      xo += a;
    }
    return t;
  };
  const same = ow === w && oh === h;
  const xs = same ? Int32Array.from({ length: ow }, (_, i) => i) : table(w, ow);
  const ys = same ? Int32Array.from({ length: oh }, (_, i) => i) : table(h, oh);
  const out = new Uint8Array(r * r * c);
  for (let i = 0; i < r; i++) {
    const row = ys[top + i] * w;
    for (let j = 0; j < r; j++) {
      const from = (row + xs[left + j]) * c;
      for (let ch = 0; ch < c; ch++) out[(i * r + j) * c + ch] = src[from + ch];
    }
  }
  return out;
}

/** Pillow's RGBA → RGBa (and LA → La): colour · alpha / 255 with its MULDIV255 rounding. */
function premultiply(px: Uint8Array, c: number): void {
  for (let i = 0; i < px.length; i += c) {
    const a = px[i + c - 1];
    for (let ch = 0; ch < c - 1; ch++) {
      const t = px[i + ch] * a + 128;
      px[i + ch] = ((t >> 8) + t) >> 8;
    }
  }
}

/** Pillow's RGBa → RGBA: colour · 255 / alpha (integer division, clipped), alpha 0 or 255 unchanged. */
function unpremultiply(px: Uint8Array, c: number): void {
  for (let i = 0; i < px.length; i += c) {
    const a = px[i + c - 1];
    if (a === 0 || a === 255) continue;
    for (let ch = 0; ch < c - 1; ch++) px[i + ch] = Math.min(255, Math.trunc((255 * px[i + ch]) / a));
  }
}

type Input = string | Buffer;
const describe = (input: Input): string => (typeof input === 'string' ? input : `<buffer of ${input.length} bytes>`);

/** Decodes, resizes and crops one image to 8-bit RGB (HWC, R×R×3). */
export async function clipImageRgb(input: Input, resolution = 224, opts: ClipPreprocessOptions = {}): Promise<Uint8Array> {
  checkInt(resolution, 'resolution', 1, 16384);
  const resample = opts.resample ?? 'pil';
  checkArg(resample === 'pil' || resample === 'sharp', 'resample', `must be 'pil' or 'sharp', got ${JSON.stringify(resample)}`);
  const name = describe(input);
  if (typeof input === 'string' && !existsSync(input)) throw new DataError(`image file ${input} does not exist`, 'DWC_DATA_MISSING', input);
  try {
    const meta = await sharp(input, { failOn: 'error' }).metadata();
    const w = meta.width;
    const h = meta.height;
    if (!w || !h) throw new Error('no image size in the header');
    const [ow, oh] = clipResizedSize(w, h, resolution);
    const [left, top] = clipCropOffsets(ow, oh, resolution);
    let px: Uint8Array;
    let c: number;
    if (resample === 'sharp') {
      const { data, info } = await sharp(input, { failOn: 'error' })
        .resize(ow, oh, { fit: 'fill', kernel: 'cubic', fastShrinkOnLoad: false })
        .extract({ left, top, width: resolution, height: resolution })
        .raw()
        .toBuffer({ resolveWithObject: true });
      px = data;
      c = info.channels;
    } else {
      const { data, info } = await sharp(input, { failOn: 'error' }).raw().toBuffer({ resolveWithObject: true });
      if (info.width !== w || info.height !== h) throw new Error(`decoded to ${info.width}x${info.height}, the header says ${w}x${h}`);
      c = info.channels;
      const src = new Uint8Array(data.buffer, data.byteOffset, data.length);
      if (meta.isPalette || meta.bitsPerSample === 1) {
        // Pillow opens these as "P" / "1" and resizes them with NEAREST whatever is asked.
        px = resizeCropNearest(src, w, h, c, ow, oh, left, top, resolution);
      } else {
        const alpha = c === 2 || c === 4;
        if (alpha && (ow !== w || oh !== h)) premultiply(src, c);
        px = resizeCropPil(src, w, h, c, ow, oh, left, top, resolution);
        if (alpha && (ow !== w || oh !== h)) unpremultiply(px, c);
      }
    }
    // RGB: drop alpha, grey → three equal channels.
    const hw = resolution * resolution;
    if (c === 3) return px;
    const out = new Uint8Array(hw * 3);
    for (let i = 0; i < hw; i++) {
      const b = i * c;
      if (c >= 3) {
        out[3 * i] = px[b];
        out[3 * i + 1] = px[b + 1];
        out[3 * i + 2] = px[b + 2];
      } else out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = px[b];
    }
    return out;
  } catch (e) {
    if (e instanceof DataError) throw e;
    throw new DataError(`cannot decode image ${name}: ${(e as Error).message}`, 'DWC_DATA_CORRUPT', name);
  }
}

/** One image → CLIP's input, float32 [3, R, R] (planar, normalised). */
export async function preprocessClipImage(input: Input, resolution = 224, opts: ClipPreprocessOptions = {}): Promise<Float32Array> {
  const rgb = await clipImageRgb(input, resolution, opts);
  const out = new Float32Array(3 * resolution * resolution);
  normaliseInto(rgb, resolution, out, 0, { mean: opts.mean ?? CLIP_MEAN, std: opts.std ?? CLIP_STD });
  return out;
}

/** Many images → float32 [N, 3, R, R]; decodes `concurrency` at once; the first bad file is an error naming it. */
export async function preprocessClipImages(inputs: readonly Input[], resolution = 224, opts: ClipPreprocessManyOptions = {}): Promise<Float32Array> {
  checkInt(resolution, 'resolution', 1, 16384);
  const conc = opts.concurrency ?? defaultConcurrency();
  checkInt(conc, 'concurrency', 1, 256);
  const per = 3 * resolution * resolution;
  const out = new Float32Array(inputs.length * per);
  await mapLimit(inputs, conc, async (input, i) => {
    const rgb = await clipImageRgb(input, resolution, opts);
    normaliseInto(rgb, resolution, out, i * per, { mean: opts.mean ?? CLIP_MEAN, std: opts.std ?? CLIP_STD });
  });
  return out;
}
