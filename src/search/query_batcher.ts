// Micro-batcher of query embeddings (issue 16): queries that arrive together are embedded by one
// native call. A batch is collected for at most `windowMs` after its first query, or until it
// holds `maxBatch`; one batch runs at a time (the native model refuses concurrent use), and the
// next one collects meanwhile. The native call is async: the event loop never waits on it.
import { DwcError } from '../native.js';
import type { QueryEmbeddings } from '../train/types.js';

/** One decoded query: the model's RGB input (Searcher.decodeImage) and the modification text. */
export interface DecodedQuery {
  rgb: Uint8Array;
  text: string;
  /** CLIP's preprocessed pixels [3, R, R] of the same image (checkpoints on CLIP features; Searcher.prepareQuery). */
  clipPixels?: Float32Array;
}

/** One query's embedding with its combiner weights (1 = the image decides, 0 = the text). */
export interface QueryVector {
  embedding: Float32Array;
  dim: number;
  w: { global?: number; local?: number };
}

export interface QueryBatcherOptions {
  /** Most queries per native call (default 32). */
  maxBatch?: number;
  /** Longest wait for more queries after the first of a batch, in ms (default 3). */
  windowMs?: number;
  /**
   * Queries with different keys never share a native call (default: none: any queries, texts of
   * any lengths, share a call). With padding masked (the default, DWC-SPEC §10) a query's
   * embedding does not depend on the other queries of its batch, so the server needs no key; it
   * keys by token count only for a checkpoint trained with `--no-mask-padding`, whose local
   * stream reads the padding (docs/SERVE.md, "Micro-batching").
   */
  groupKey?: (q: DecodedQuery) => string | number;
}

export interface QueryBatcherStats {
  batches: number;
  queries: number;
  largestBatch: number;
}

interface Pending {
  q: DecodedQuery;
  resolve: (v: QueryVector) => void;
  reject: (e: unknown) => void;
}

export class QueryBatcher {
  readonly maxBatch: number;
  readonly windowMs: number;
  private readonly groupKey?: (q: DecodedQuery) => string | number;
  private queue: Pending[] = [];
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private closed = false;
  readonly stats: QueryBatcherStats = { batches: 0, queries: 0, largestBatch: 0 };

  constructor(
    private readonly embed: (batch: DecodedQuery[]) => Promise<QueryEmbeddings>,
    o: QueryBatcherOptions = {},
  ) {
    this.maxBatch = o.maxBatch ?? 32;
    this.windowMs = o.windowMs ?? 3;
    this.groupKey = o.groupKey;
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1) throw new DwcError(`QueryBatcher: 'maxBatch' must be a positive integer, got ${o.maxBatch}`, 'DWC_BAD_ARGUMENT');
    if (!(this.windowMs >= 0)) throw new DwcError(`QueryBatcher: 'windowMs' must be ≥ 0, got ${o.windowMs}`, 'DWC_BAD_ARGUMENT');
  }

  /** Embeds one query, together with whatever else arrives within the window. */
  submit(q: DecodedQuery): Promise<QueryVector> {
    if (this.closed) return Promise.reject(new DwcError('the query batcher is closed (the server is shutting down)', 'DWC_CLOSED'));
    return new Promise((resolve, reject) => {
      this.queue.push({ q, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.running) return; // the running batch picks the queue up when it ends
    if (this.queue.length >= this.maxBatch) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.flush();
    } else if (!this.timer) this.timer = setTimeout(() => ((this.timer = undefined), this.flush()), this.windowMs);
  }

  private flush(): void {
    if (this.running || !this.queue.length) return;
    let batch: Pending[];
    if (!this.groupKey) batch = this.queue.splice(0, this.maxBatch);
    else {
      // the oldest query's group, in arrival order; the others wait for the next call
      const key = this.groupKey(this.queue[0].q);
      batch = [];
      const rest: Pending[] = [];
      for (const p of this.queue) (batch.length < this.maxBatch && this.groupKey(p.q) === key ? batch : rest).push(p);
      this.queue = rest;
    }
    this.stats.batches++;
    this.stats.queries += batch.length;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length);
    this.running = this.embed(batch.map((p) => p.q))
      .then((e) => {
        const dim = e.dim;
        batch.forEach((p, i) =>
          p.resolve({ embedding: e.embeddings.slice(i * dim, (i + 1) * dim), dim, w: { global: e.wGlobal?.[i], local: e.wLocal?.[i] } }),
        );
      })
      .catch((err) => batch.forEach((p) => p.reject(err)))
      .finally(() => {
        this.running = undefined;
        // queries that arrived during the call have waited already: run them now
        if (this.queue.length) this.flush();
      });
  }

  /** Refuses new queries and waits for the queued ones. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.running || this.queue.length) {
      if (!this.running) this.flush();
      await this.running;
    }
  }
}

/** Runs async jobs one at a time, in call order (the native model takes one call at a time). */
export function serialized(): <T>(job: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(job: () => Promise<T>) => {
    const run = tail.then(job, job);
    tail = run.catch(() => undefined);
    return run;
  };
}
