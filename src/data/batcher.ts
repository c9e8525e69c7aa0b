// Batching: a generic prefetcher (batch k+1 is prepared while batch k trains) and the query
// batcher that fills preallocated buffers with images (sharp pipeline), tokens and labels.
import type { Dataset, Query } from './dataset.js';
import { DataError, checkInt } from './errors.js';
import type { FeatureSet } from './features.js';
import { loadImagesInto, defaultConcurrency } from './images.js';
import { Rng } from './rng.js';
import { mirrorText, type Vocabulary } from './text.js';

/**
 * Runs make(k) for k = 0..count-1 with up to `depth` batches prepared ahead of the one being
 * consumed. make(k) may reuse buffer k % (depth + 1): a batch stays valid until the consumer
 * asks for the next one.
 */
export class Prefetcher<B> implements AsyncIterable<B> {
  constructor(
    readonly count: number,
    private readonly make: (k: number) => Promise<B>,
    readonly depth = 1,
  ) {
    checkInt(count, 'count', 0);
    checkInt(depth, 'depth', 0, 64);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<B> {
    const inflight: Promise<B>[] = [];
    let next = 0;
    const start = (): void => {
      if (next >= this.count) return;
      const p = this.make(next++);
      p.catch(() => undefined); // surfaced when awaited below
      inflight.push(p);
    };
    for (let i = 0; i <= this.depth; i++) start();
    while (inflight.length) {
      const b = await inflight.shift()!;
      yield b;
      start();
    }
  }
}

export interface QueryBatcherOptions {
  dataset: Dataset;
  vocab: Vocabulary;
  batchSize: number;
  /** Split to draw queries from (default the dataset's training split). */
  split?: string;
  /** Queries to batch instead of dataset.queries(split) (feature rows then follow `queryIndex`). */
  queries?: readonly Query[];
  /** Shuffle the order with (seed, epoch) (default true). */
  shuffle?: boolean;
  seed?: number;
  epoch?: number;
  /** Keep a last, smaller batch (default false). */
  keepLast?: boolean;
  /** Decode images (default true); set false when only frozen features are used. */
  images?: boolean;
  imageSize?: number;
  /** Random horizontal flip of reference and target together, left and right swapped in the text (default false). */
  flip?: boolean;
  /** Frozen features: fills eImg, eTxt, eTarget. */
  features?: FeatureSet;
  maxLength?: number;
  concurrency?: number;
  /** Drop queries whose images cannot be read (counted in `skipped`) instead of throwing. */
  skipBad?: boolean;
  /** Batches prepared ahead (default 1). */
  prefetch?: number;
}

export interface QueryBatch {
  index: number;
  /** Queries in this batch (≤ batchSize; smaller when bad images were skipped or for the last batch). */
  size: number;
  queries: Query[];
  /** Index of each query in the batched query list. */
  queryIndex: Int32Array;
  /** Normalised images [size, 3, S, S] (views into reused buffers). */
  reference?: Float32Array;
  target?: Float32Array;
  imageSize: number;
  /** Token ids [size, L] (0-padded) and lengths [size] (§8). */
  tokens: Int32Array;
  lengths: Int32Array;
  L: number;
  /** Target labels [size] (§5). */
  labels: Int32Array;
  /** Frozen features [size, Dc] when a FeatureSet is given. */
  eImg?: Float32Array;
  eTxt?: Float32Array;
  eTarget?: Float32Array;
  /** Queries dropped from this batch because an image could not be read (skipBad). */
  skipped: number;
}

export class QueryBatcher implements AsyncIterable<QueryBatch> {
  readonly queries: readonly Query[];
  readonly order: Int32Array;
  readonly numBatches: number;
  /** Queries skipped so far because of unreadable images, and the files at fault. */
  skipped = 0;
  readonly badFiles = new Set<string>();
  private readonly split: string;
  private readonly size: number;
  private readonly buffers: { ref?: Float32Array; tgt?: Float32Array; eImg?: Float32Array; eTxt?: Float32Array; eTarget?: Float32Array }[];

  constructor(private readonly o: QueryBatcherOptions) {
    checkInt(o.batchSize, 'batchSize', 1, 1 << 20);
    this.split = o.split ?? o.dataset.trainSplit;
    this.queries = o.queries ?? o.dataset.queries(this.split, { seed: o.seed, epoch: o.epoch });
    this.size = o.imageSize ?? 224;
    checkInt(this.size, 'imageSize', 1, 4096);
    const n = this.queries.length;
    const idx = Array.from({ length: n }, (_, i) => i);
    if (o.shuffle ?? true) new Rng(o.seed ?? 0, 200 + (o.epoch ?? 0)).shuffle(idx);
    this.order = Int32Array.from(idx);
    this.numBatches = o.keepLast ? Math.ceil(n / o.batchSize) : Math.floor(n / o.batchSize);
    const depth = o.prefetch ?? 1;
    checkInt(depth, 'prefetch', 0, 16);
    const B = o.batchSize;
    const per = 3 * this.size * this.size;
    const D = o.features?.dim ?? 0;
    this.buffers = Array.from({ length: depth + 1 }, () => ({
      ref: o.images === false ? undefined : new Float32Array(B * per),
      tgt: o.images === false ? undefined : new Float32Array(B * per),
      eImg: D ? new Float32Array(B * D) : undefined,
      eTxt: D ? new Float32Array(B * D) : undefined,
      eTarget: D ? new Float32Array(B * D) : undefined,
    }));
  }

  [Symbol.asyncIterator](): AsyncIterator<QueryBatch> {
    return new Prefetcher(this.numBatches, (k) => this.batch(k), this.buffers.length - 1)[Symbol.asyncIterator]();
  }

  /** Prepares batch k into buffer set k % (prefetch + 1). */
  async batch(k: number): Promise<QueryBatch> {
    const { o } = this;
    const B = o.batchSize;
    const buf = this.buffers[k % this.buffers.length];
    let qi = Array.from(this.order.subarray(k * B, Math.min((k + 1) * B, this.order.length)));
    let skipped = 0;
    const flipped: boolean[] = [];
    let imgs: { reference?: Float32Array; target?: Float32Array } = {};
    if (buf.ref && buf.tgt) {
      const per = 3 * this.size * this.size;
      const rng = new Rng(o.seed ?? 0, 300 + k + 7919 * (o.epoch ?? 0));
      const flips = qi.map(() => !!o.flip && rng.next() < 0.5);
      const conc = o.concurrency ?? defaultConcurrency();
      const common = { size: this.size, concurrency: conc, skipBad: o.skipBad };
      const file = (id: string): string => o.dataset.image(id).file;
      const [r, t] = await Promise.all([
        loadImagesInto(qi.map((i) => file(this.queries[i].source)), buf.ref, 0, { ...common, flips }),
        loadImagesInto(qi.map((i) => file(this.queries[i].target)), buf.tgt, 0, { ...common, flips }),
      ]);
      for (const e of [...r.errors, ...t.errors]) if (e.subject) this.badFiles.add(e.subject);
      // Compact: keep the queries whose two images both decoded.
      const keep: number[] = [];
      qi.forEach((q, j) => {
        if (r.ok[j] && t.ok[j]) {
          if (keep.length !== j) {
            buf.ref!.copyWithin(keep.length * per, j * per, (j + 1) * per);
            buf.tgt!.copyWithin(keep.length * per, j * per, (j + 1) * per);
          }
          keep.push(q);
          flipped.push(flips[j]);
        }
      });
      skipped = qi.length - keep.length;
      this.skipped += skipped;
      qi = keep;
      imgs = { reference: buf.ref.subarray(0, qi.length * per), target: buf.tgt.subarray(0, qi.length * per) };
    }
    const queries = qi.map((i) => this.queries[i]);
    // a mirrored pair's text says left for right (src/data/text.ts mirrorText)
    const enc = o.vocab.encodeBatch(queries.map((q, j) => (flipped[j] ? mirrorText(q.text) : q.text)), { maxLength: o.maxLength });
    const out: QueryBatch = {
      index: k,
      size: qi.length,
      queries,
      queryIndex: Int32Array.from(qi),
      ...imgs,
      imageSize: this.size,
      tokens: enc.tokens,
      lengths: enc.lengths,
      L: enc.L,
      labels: o.dataset.labels(queries),
      skipped,
    };
    if (o.features && buf.eImg && buf.eTxt && buf.eTarget) {
      const f = o.features;
      const D = f.dim;
      f.gatherImages(queries.map((q) => q.source), buf.eImg);
      f.gatherImages(queries.map((q) => q.target), buf.eTarget);
      qi.forEach((i, j) => buf.eTxt!.set(f.queryVector(this.split, i, this.queries[i].text), j * D));
      out.eImg = buf.eImg.subarray(0, qi.length * D);
      out.eTxt = buf.eTxt.subarray(0, qi.length * D);
      out.eTarget = buf.eTarget.subarray(0, qi.length * D);
    }
    if (qi.length === 0 && !o.skipBad) throw new DataError(`batch ${k} is empty`, 'DWC_DATA_FORMAT');
    return out;
  }
}

/** Decodes a list of gallery images in chunks (for evaluation): yields [n, 3, S, S] blocks. */
export async function* imageChunks(
  ds: Dataset,
  ids: readonly string[],
  opts: { chunk: number; imageSize?: number; concurrency?: number; skipBad?: boolean },
): AsyncGenerator<{ start: number; ids: readonly string[]; images: Float32Array; ok: boolean[] }> {
  checkInt(opts.chunk, 'chunk', 1);
  const size = opts.imageSize ?? 224;
  const per = 3 * size * size;
  const bufs = [new Float32Array(opts.chunk * per), new Float32Array(opts.chunk * per)];
  const n = Math.ceil(ids.length / opts.chunk);
  const pf = new Prefetcher(n, async (k) => {
    const part = ids.slice(k * opts.chunk, (k + 1) * opts.chunk);
    const buf = bufs[k % 2];
    const r = await loadImagesInto(part.map((id) => ds.image(id).file), buf, 0, { size, concurrency: opts.concurrency, skipBad: opts.skipBad });
    return { start: k * opts.chunk, ids: part, images: buf.subarray(0, part.length * per), ok: r.ok };
  });
  for await (const c of pf) yield c;
}
