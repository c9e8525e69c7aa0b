// Batch assembly for training and evaluation: images decoded once with sharp (raw RGB kept in
// memory for small images), normalised per batch into planar float32; texts tokenised with the
// training vocabulary (§8); labels per §5. The next batch is prepared while the current one trains.
import { decodeRgb, mapLimit, normaliseInto, defaultConcurrency, shiftInto } from '../data/images.js';
import { mirrorText, type Vocabulary } from '../data/text.js';
import type { Dataset, Query } from '../data/dataset.js';
import type { FeatureSource, ImageBatch, QueryBatch, TrainBatch } from './types.js';

/** Decodes images by file path, keeping raw RGB in memory up to a byte budget. */
export class ImageStore {
  private readonly cache = new Map<string, Buffer>();
  private bytes = 0;

  constructor(
    readonly size: number,
    readonly concurrency = defaultConcurrency(),
    /** Bytes of raw RGB to keep (default 1 GiB: 64×64 images cost 12 KiB each). */
    readonly budget = 1 << 30,
  ) {}

  async rgb(file: string): Promise<Buffer> {
    const hit = this.cache.get(file);
    if (hit) return hit;
    const buf = await decodeRgb(file, this.size);
    if (this.bytes + buf.length <= this.budget) {
      this.cache.set(file, buf);
      this.bytes += buf.length;
    }
    return buf;
  }

  /** Planar normalised [n,3,S,S] for these files; flips[i] mirrors image i left-right. */
  async load(files: readonly string[], flips?: readonly boolean[]): Promise<Float32Array> {
    const S = this.size;
    const per = 3 * S * S;
    const out = new Float32Array(files.length * per);
    await mapLimit(files, this.concurrency, async (f, i) => {
      let rgb: Uint8Array = await this.rgb(f);
      if (flips?.[i]) rgb = mirror(rgb, S);
      normaliseInto(rgb, S, out, i * per);
    });
    return out;
  }
}

function mirror(rgb: Uint8Array, S: number): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      const a = 3 * (y * S + x);
      const b = 3 * (y * S + (S - 1 - x));
      out[b] = rgb[a];
      out[b + 1] = rgb[a + 1];
      out[b + 2] = rgb[a + 2];
    }
  return out;
}

/** Deterministic PRNG (mulberry32) for shuffles and flips: the same seed gives the same order. */
export function rng32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The order of training queries in an epoch: a function of (seed, epoch) only, so resume is exact. */
export function epochOrder(n: number, seed: number, epoch: number): Int32Array {
  const r = rng32((seed * 1000003 + epoch * 7919 + 17) >>> 0);
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** Batches of an epoch: consecutive slices of the order; a last batch of < 2 queries is dropped. */
export function epochBatches(n: number, batchSize: number, seed: number, epoch: number): Int32Array[] {
  const order = epochOrder(n, seed, epoch);
  const out: Int32Array[] = [];
  for (let i = 0; i < n; i += batchSize) {
    const b = order.subarray(i, Math.min(n, i + batchSize));
    if (b.length >= 2) out.push(b);
  }
  return out;
}

/** Offset of a flipped training query's label (labels are dataset ids, far below this). */
const FLIPPED_LABEL = 1 << 30;

export interface BatchMaker {
  train(indices: ArrayLike<number>, epoch: number): Promise<TrainBatch>;
  queries(qs: readonly Query[], split: string, firstIndex: number): Promise<QueryBatch>;
  images(ids: readonly string[]): Promise<ImageBatch>;
}

export interface BatchMakerOptions {
  dataset: Dataset;
  vocab: Vocabulary;
  store: ImageStore;
  trainQueries: readonly Query[];
  trainLabels: Int32Array;
  maxLength: number;
  flip: boolean;
  /** Translation augmentation: reference and target of a training query move by one random (dx, dy) in [−shift, shift]² (0/unset: off). */
  shift?: number;
  seed: number;
  features?: FeatureSource;
  trainSplit: string;
}

function gatherFeatures(f: FeatureSource, rows: Float32Array[]): Float32Array {
  const out = new Float32Array(rows.length * f.dim);
  rows.forEach((r, i) => out.set(r, i * f.dim));
  return out;
}

export function makeBatchMaker(o: BatchMakerOptions): BatchMaker {
  const file = (id: string) => o.dataset.image(id).file;
  const S = o.store.size;
  return {
    async train(indices, epoch) {
      const qs = Array.from(indices, (i) => o.trainQueries[i]);
      const r = rng32((o.seed * 31 + epoch * 1009 + (indices[0] ?? 0)) >>> 0);
      const flips = o.flip ? qs.map(() => r() < 0.5) : undefined;
      const [images, targets] = await Promise.all([o.store.load(qs.map((q) => file(q.source)), flips), o.store.load(qs.map((q) => file(q.target)), flips)]);
      const sh = o.shift ?? 0;
      if (sh > 0)
        for (let i = 0, per = 3 * S * S; i < qs.length; i++) {
          // one translation for the pair: where things are relative to each other is what the text describes
          const dx = Math.floor(r() * (2 * sh + 1)) - sh, dy = Math.floor(r() * (2 * sh + 1)) - sh;
          shiftInto(images, i * per, S, dx, dy);
          shiftInto(targets, i * per, S, dx, dy);
        }
      // a flipped query is the mirrored pair: its text says left for right, and its target is
      // another scene (its own label, so that it is no positive of the unflipped target's queries)
      const enc = o.vocab.encodeBatch(qs.map((q, i) => (flips?.[i] ? mirrorText(q.text) : q.text)), { maxLength: o.maxLength });
      const labels = Int32Array.from(indices, (i, j) => (flips?.[j] ? o.trainLabels[i] + FLIPPED_LABEL : o.trainLabels[i]));
      const batch: TrainBatch = { B: qs.length, imageSize: S, images, targets, tokens: enc.tokens, lengths: enc.lengths, L: enc.L, labels };
      batch.sourceIds = qs.map((q) => q.source);
      batch.targetIds = qs.map((q) => q.target);
      if (flips) batch.flips = flips;
      if (o.features) {
        const f = o.features;
        batch.features = {
          img: gatherFeatures(f, qs.map((q) => f.image(q.source))),
          txt: gatherFeatures(f, Array.from(indices, (i) => f.text(o.trainSplit, i))),
          target: gatherFeatures(f, qs.map((q) => f.image(q.target))),
        };
      }
      return batch;
    },
    async queries(qs, split, firstIndex) {
      const images = await o.store.load(qs.map((q) => file(q.source)));
      const enc = o.vocab.encodeBatch(qs.map((q) => q.text), { maxLength: o.maxLength });
      const batch: QueryBatch = { B: qs.length, imageSize: S, images, tokens: enc.tokens, lengths: enc.lengths, L: enc.L, sourceIds: qs.map((q) => q.source) };
      if (o.features) {
        const f = o.features;
        batch.features = { img: gatherFeatures(f, qs.map((q) => f.image(q.source))), txt: gatherFeatures(f, qs.map((_, i) => f.text(split, firstIndex + i))) };
      }
      return batch;
    },
    async images(ids) {
      const images = await o.store.load(ids.map(file));
      const batch: ImageBatch = { B: ids.length, imageSize: S, images, ids: [...ids] };
      if (o.features) batch.features = gatherFeatures(o.features, ids.map((id) => o.features!.image(id)));
      return batch;
    },
  };
}
