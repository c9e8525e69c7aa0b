// Gallery index in LanceDB (issue 16): one row per gallery image (id, path, content hash, file
// metadata, embedding), keyed by path and content hash so that an update embeds only new and
// changed images and drops removed ones. Exact search (in-memory GEMM) below a size threshold;
// above it an ANN index of LanceDB (IVF-flat by default) with its candidates re-ranked by the
// exact dot product.
// The URI may be a local folder or object storage (s3://, gs://, az://; storageOptions).
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import type * as LanceDB from '@lancedb/lancedb';
import type * as Arrow from 'apache-arrow';
import { createRequire } from 'node:module';
import sharp from 'sharp';
import { DataError } from '../data/errors.js';
import { mapLimit, defaultConcurrency } from '../data/images.js';
import { DwcError } from '../native.js';
import { runOpAsync, tensor, type Tensor } from '../tensor.js';
import { selectTopK } from '../eval/topk.js';
import { serialized } from './query_batcher.js';
import { checkImagesReadable as checkReadable, listGalleryImages, type GalleryEmbedder } from './gallery.js';

// LanceDB's JS layer is CommonJS and checks `instanceof` against the CommonJS build of apache-arrow:
// tables made with the ES-module build fail those checks, so this file uses the CommonJS one.
const require = createRequire(import.meta.url);
const arrow = require('apache-arrow') as typeof Arrow;
// LanceDB logs warnings such as "No existing dataset at …, it will be created" on every new
// table; errors only unless the user asks (LANCEDB_LOG=warn|info|debug). Read when it loads.
process.env.LANCEDB_LOG ??= 'error';
const lancedb = require('@lancedb/lancedb') as typeof LanceDB;

export const INDEX_FORMAT = 'dwc-gallery-index-1';
const TABLE = 'gallery';
const META = 'meta';

/** What an index records about itself (the `meta` table). */
export interface GalleryIndexMeta {
  format: string;
  /** sha256 of the checkpoint file that embedded the gallery; queries must come from the same. */
  checkpointId: string;
  /** The checkpoint's path when the index was built (informative). */
  checkpoint: string;
  /** Embedding dim. */
  dim: number;
  /** Absolute path of the gallery folder; rows hold paths relative to it. */
  galleryRoot: string;
  created: string;
}

/** One gallery image as stored. */
export interface GalleryRow {
  id: string;
  path: string;
  hash: string;
  size: number;
  mtime: number;
  width: number;
  height: number;
}

export interface IndexHit {
  rank: number;
  id: string;
  /** Path relative to the gallery root. */
  path: string;
  /** Exact dot product of the query and the image's embedding. */
  score: number;
}

/** LanceDB 0.31 vector index types offered (docs/SERVE.md, "Measurements"). */
export type AnnType = 'ivf_hnsw_sq' | 'ivf_hnsw_pq' | 'ivf_pq' | 'ivf_flat';
export const ANN_TYPES: readonly AnnType[] = ['ivf_hnsw_sq', 'ivf_hnsw_pq', 'ivf_pq', 'ivf_flat'];

/** ANN settings (LanceDB vector indexes); defaults tuned by `npm run bench -- search` (docs/SERVE.md). */
export interface AnnOptions {
  /** 'ivf_hnsw_sq' (IVF partitions each holding an HNSW graph of scalar-quantised vectors),
   *  'ivf_hnsw_pq' (the same over product-quantised vectors), 'ivf_pq' (IVF + product
   *  quantisation) or 'ivf_flat' (IVF over the full-precision vectors: a probed partition is
   *  scanned exactly). */
  type?: AnnType;
  /** HNSW: candidates kept while searching (default 64; more = better recall, slower). */
  ef?: number;
  /** Tables with at least this many rows get an ANN index (default 50,000); below it search is exact. */
  threshold?: number;
  /** IVF partitions (default ≈ √rows for ivf_flat and ivf_pq, rows / 100,000 rounded up for the HNSW types). */
  numPartitions?: number;
  /** PQ sub-vectors (default dim / 8). */
  numSubVectors?: number;
  /** Partitions probed per query (default 8 for ivf_flat, 32 for the others). */
  nprobes?: number;
  /** LanceDB refine factor: k × this rows re-read at full precision (default 1 = no refine step
   *  for ivf_flat, whose distances are exact already; 10 for the quantised indexes). */
  refineFactor?: number;
  /** Candidates re-ranked by our exact dot product: k × this (default 1). */
  rerank?: number;
}

export interface OpenIndexOptions {
  /** Refuse the index unless it was built by this checkpoint (its sha256, see checkpointIdentity). */
  checkpointId?: string;
  /** Object-storage credentials and settings, passed to lancedb.connect. */
  storageOptions?: Record<string, string>;
  ann?: AnnOptions;
}

export interface UpdateOptions {
  /** Embeds image files into [n, dim] (e.g. Searcher.embedImages). */
  embed: GalleryEmbedder;
  /** Images per embed call (default 64). */
  batchSize?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface BuildOptions extends OpenIndexOptions, UpdateOptions {
  /** Folder or URI of the LanceDB database. */
  db: string;
  /** Folder of gallery images (recursive). */
  gallery: string;
  /** The checkpoint whose image tower embeds the gallery (its identity is recorded). */
  checkpoint: string;
  /** Drop an existing index first (also the way to switch checkpoints). */
  rebuild?: boolean;
}

export interface UpdateStats {
  added: number;
  changed: number;
  removed: number;
  unchanged: number;
  rows: number;
  ann: boolean;
}

/** Refuses an unknown ANN index type before anything is written. */
function checkAnn(a: AnnOptions | undefined): void {
  if (a?.type !== undefined && !ANN_TYPES.includes(a.type)) throw new DwcError(`unknown ANN index type '${a.type}' (one of ${ANN_TYPES.join(', ')})`, 'DWC_BAD_ARGUMENT');
}

/** sha256 of a file, streamed. */
export function fileHash(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (c) => h.update(c))
      .on('error', rej)
      .on('end', () => res(h.digest('hex')));
  });
}

/** Identity of a checkpoint: the sha256 of its file. */
export async function checkpointIdentity(checkpoint: string): Promise<string> {
  try {
    return await fileHash(checkpoint);
  } catch (e) {
    throw new DataError(`cannot read checkpoint ${checkpoint}: ${(e as Error).message}`, 'DWC_DATA_MISSING', checkpoint);
  }
}

/** Stable URL-safe id of a gallery path. */
export function pathId(rel: string): string {
  return createHash('sha256').update(rel).digest('hex').slice(0, 16);
}

const sqlStr = (s: string) => `'${s.replace(/'/g, "''")}'`;
const relPath = (root: string, f: string) => relative(root, f).split(sep).join('/');

function schema(dim: number): Arrow.Schema {
  return new arrow.Schema([
    new arrow.Field('id', new arrow.Utf8(), false),
    new arrow.Field('path', new arrow.Utf8(), false),
    new arrow.Field('hash', new arrow.Utf8(), false),
    new arrow.Field('size', new arrow.Float64(), false),
    new arrow.Field('mtime', new arrow.Float64(), false),
    new arrow.Field('width', new arrow.Int32(), false),
    new arrow.Field('height', new arrow.Int32(), false),
    new arrow.Field('vector', new arrow.FixedSizeList(dim, new arrow.Field('item', new arrow.Float32(), true)), false),
  ]);
}

/** Float32 values of a FixedSizeList<Float32>[dim] column, row-major. */
function vectorsOf(col: Arrow.Vector, dim: number): Float32Array {
  const out = new Float32Array(col.length * dim);
  let o = 0;
  for (const d of col.data) {
    const child = d.children[0];
    const vals = (child.values as Float32Array).subarray(child.offset + d.offset * dim, child.offset + (d.offset + d.length) * dim);
    out.set(vals, o);
    o += vals.length;
  }
  return out;
}

interface Snapshot {
  version: number;
  ids: string[];
  paths: string[];
  vectors: Float32Array;
  /** The vectors as a native [N, dim] tensor, made once per snapshot. */
  G?: Tensor;
}

/**
 * A gallery embedded by one checkpoint, stored in LanceDB.
 *
 * ```js
 * const searcher = await Searcher.open('best.safetensors');
 * const index = await GalleryIndex.build({ db: 'gallery.lance', gallery: 'images/', checkpoint: 'best.safetensors', embed: (f) => searcher.embedImages(f) });
 * const q = await searcher.embedQueries([{ image: 'ref.jpg', text: 'make it red' }]);
 * const [hits] = await index.search(q.embeddings, { k: 10 });
 * ```
 */
export class GalleryIndex {
  private snap?: Snapshot;
  private idToPath?: Map<string, string>;
  private snapVersion = -1;
  private readonly exactTurn = serialized();

  private constructor(
    readonly uri: string,
    private readonly conn: LanceDB.Connection,
    private readonly table: LanceDB.Table,
    readonly meta: GalleryIndexMeta,
    /** The ANN options given (open/build); the rest are annDefaults of the index type. */
    private readonly annGiven: AnnOptions = {},
  ) {
    this.ann = GalleryIndex.annDefaults(annGiven);
  }

  private readonly ann: ReturnType<typeof GalleryIndex.annDefaults>;

  /**
   * ANN defaults, per index type (measured with `npm run bench -- search`, docs/SERVE.md): ivf_flat
   * (√rows partitions, 8 probed, no refine step) met the 1,000,000-vector goals on 2 cores;
   * quantised indexes need a refine step and more probes.
   */
  private static annDefaults(a: AnnOptions = {}) {
    const type = a.type ?? 'ivf_flat';
    const per = type === 'ivf_flat' ? { nprobes: 8, refineFactor: 1 } : { nprobes: 32, refineFactor: 10 };
    return { type, ef: 64, threshold: 50_000, ...per, rerank: 1, ...a };
  }

  /** Opens an existing index (error if there is none at `uri`, or if it belongs to another checkpoint). */
  static async open(uri: string, opts: OpenIndexOptions = {}): Promise<GalleryIndex> {
    checkAnn(opts.ann);
    const conn = await lancedb.connect(uri, opts.storageOptions ? { storageOptions: opts.storageOptions } : undefined);
    const names = await conn.tableNames();
    if (!names.includes(TABLE) || !names.includes(META))
      throw new DataError(`no gallery index at ${uri} (build one with \`dwc-native index --checkpoint C --gallery DIR --db ${uri}\`)`, 'DWC_DATA_MISSING', uri);
    const metaRows = (await (await conn.openTable(META)).query().toArray()) as { key: string; value: string }[];
    const m = Object.fromEntries(metaRows.map((r) => [r.key, r.value]));
    if (m.format !== INDEX_FORMAT) throw new DataError(`${uri}: not a dwc-native gallery index (format '${m.format ?? 'none'}', expected '${INDEX_FORMAT}')`, 'DWC_DATA_FORMAT', uri);
    const meta: GalleryIndexMeta = { format: m.format, checkpointId: m.checkpointId, checkpoint: m.checkpoint, dim: Number(m.dim), galleryRoot: m.galleryRoot, created: m.created };
    if (opts.checkpointId && opts.checkpointId !== meta.checkpointId)
      throw new DataError(
        `the gallery index at ${uri} was built by another checkpoint (${meta.checkpoint}, sha256 ${meta.checkpointId.slice(0, 12)}…, not ${opts.checkpointId.slice(0, 12)}…): its embeddings do not match this model's queries; rebuild it with \`dwc-native index --rebuild\``,
        'DWC_BAD_ARGUMENT',
        uri,
      );
    return new GalleryIndex(uri, conn, await conn.openTable(TABLE), meta, opts.ann);
  }

  /** Creates the index (or opens and updates it: new images added, removed dropped, changed re-embedded). */
  static async build(o: BuildOptions): Promise<{ index: GalleryIndex; stats: UpdateStats }> {
    checkAnn(o.ann);
    // the model's identity: the checkpoint's sha256, or what the caller computed (Searcher.identity: checkpoint + CLIP)
    const checkpointId = o.checkpointId ?? (await checkpointIdentity(o.checkpoint));
    const conn = await lancedb.connect(o.db, o.storageOptions ? { storageOptions: o.storageOptions } : undefined);
    const names = await conn.tableNames();
    if (o.rebuild) for (const n of [TABLE, META]) if (names.includes(n)) await conn.dropTable(n);
    const exists = !o.rebuild && names.includes(TABLE) && names.includes(META);
    let index: GalleryIndex;
    if (exists) index = await GalleryIndex.open(o.db, { ...o, checkpointId });
    else {
      const root = resolve(o.gallery);
      const first = listGalleryImages(root).slice(0, 1);
      await checkReadable(first);
      const { dim } = await o.embed(first); // the dim, from the model itself
      const meta: GalleryIndexMeta = { format: INDEX_FORMAT, checkpointId, checkpoint: resolve(o.checkpoint), dim, galleryRoot: root, created: new Date().toISOString() };
      await conn.createTable(META, Object.entries(meta).map(([key, value]) => ({ key, value: String(value) })), { mode: 'overwrite' });
      const table = await conn.createEmptyTable(TABLE, schema(dim), { mode: 'overwrite' });
      index = new GalleryIndex(o.db, conn, table, meta, o.ann);
    }
    if (resolve(o.gallery) !== index.meta.galleryRoot)
      throw new DataError(`the index at ${o.db} holds the gallery ${index.meta.galleryRoot}, not ${resolve(o.gallery)} (use another --db, or --rebuild)`, 'DWC_BAD_ARGUMENT', o.gallery);
    const stats = await index.update(o);
    return { index, stats };
  }

  /**
   * Creates an index from embeddings computed elsewhere by the checkpoint `checkpointId` (no image
   * is read; benchmarks use it with synthetic vectors). vectors: [paths.length, dim] row-major.
   */
  static async fromVectors(o: { db: string; dim: number; paths: string[]; vectors: Float32Array; checkpointId: string; galleryRoot: string; storageOptions?: Record<string, string>; ann?: AnnOptions; chunk?: number }): Promise<GalleryIndex> {
    const { dim, paths, vectors } = o;
    checkAnn(o.ann);
    if (vectors.length !== paths.length * dim) throw new DwcError(`fromVectors: ${vectors.length} values for ${paths.length} paths of dim ${dim}`, 'DWC_BAD_ARGUMENT');
    const conn = await lancedb.connect(o.db, o.storageOptions ? { storageOptions: o.storageOptions } : undefined);
    const meta: GalleryIndexMeta = { format: INDEX_FORMAT, checkpointId: o.checkpointId, checkpoint: '', dim, galleryRoot: resolve(o.galleryRoot), created: new Date().toISOString() };
    await conn.createTable(META, Object.entries(meta).map(([key, value]) => ({ key, value: String(value) })), { mode: 'overwrite' });
    const sch = schema(dim);
    const table = await conn.createEmptyTable(TABLE, sch, { mode: 'overwrite' });
    const chunk = o.chunk ?? 50_000;
    for (let i = 0; i < paths.length; i += chunk) {
      const n = Math.min(chunk, paths.length - i);
      const ps = paths.slice(i, i + n);
      const vecType = sch.fields[7].type as Arrow.FixedSizeList;
      const child = arrow.makeData({ type: new arrow.Float32(), length: n * dim, data: vectors.subarray(i * dim, (i + n) * dim) });
      const vec = arrow.makeData({ type: vecType, length: n, nullCount: 0, child });
      const col = <T extends Arrow.DataType>(xs: unknown[], type: T) => arrow.vectorFromArray(xs, type).data[0];
      const children = [
        col(ps.map(pathId), new arrow.Utf8()),
        col(ps, new arrow.Utf8()),
        col(ps.map(() => ''), new arrow.Utf8()),
        col(ps.map(() => 0), new arrow.Float64()),
        col(ps.map(() => 0), new arrow.Float64()),
        col(ps.map(() => 0), new arrow.Int32()),
        col(ps.map(() => 0), new arrow.Int32()),
        vec,
      ];
      const batch = new arrow.RecordBatch(sch, arrow.makeData({ type: new arrow.Struct(sch.fields), length: n, nullCount: 0, children }));
      const t = new arrow.Table([batch]);
      await table.add(t);
    }
    const index = new GalleryIndex(o.db, conn, table, meta, o.ann);
    await index.maintainAnn(true);
    return index;
  }

  get galleryRoot(): string {
    return this.meta.galleryRoot;
  }
  get dim(): number {
    return this.meta.dim;
  }

  /** Rows in the index. */
  count(): Promise<number> {
    return this.table.countRows();
  }

  private async rows(): Promise<GalleryRow[]> {
    return (await this.table.query().select(['id', 'path', 'hash', 'size', 'mtime', 'width', 'height']).toArray()) as GalleryRow[];
  }

  /**
   * Brings the index in line with the gallery folder. Every batch is committed as it is embedded,
   * so an interrupted update resumes where it stopped. Unchanged files (same size and mtime, or
   * same content hash) are not embedded again.
   */
  async update(o: UpdateOptions): Promise<UpdateStats> {
    const root = this.meta.galleryRoot;
    const files = listGalleryImages(root);
    const have = new Map((await this.rows()).map((r) => [r.path, r]));
    const onDisk = new Set<string>();
    const todo: { file: string; rel: string; hash: string; size: number; mtime: number; changed: boolean }[] = [];
    let unchanged = 0;
    await mapLimit(files, defaultConcurrency(), async (file) => {
      const rel = relPath(root, file);
      onDisk.add(rel);
      const st = statSync(file);
      const old = have.get(rel);
      if (old && old.size === st.size && old.mtime === st.mtimeMs) return void unchanged++;
      const hash = await fileHash(file);
      if (old && old.hash === hash) {
        unchanged++;
        await this.table.update({ values: { mtime: st.mtimeMs }, where: `path = ${sqlStr(rel)}` });
        return;
      }
      todo.push({ file, rel, hash, size: st.size, mtime: st.mtimeMs, changed: !!old });
    });
    todo.sort((a, b) => (a.rel < b.rel ? -1 : 1));
    const removed = [...have.keys()].filter((p) => !onDisk.has(p));
    for (let i = 0; i < removed.length; i += 500) await this.table.delete(`path IN (${removed.slice(i, i + 500).map(sqlStr).join(', ')})`);
    await this.embedAndStore(todo, o);
    const rows = await this.count();
    const ann = await this.maintainAnn(todo.length + removed.length > 0);
    return { added: todo.filter((t) => !t.changed).length, changed: todo.filter((t) => t.changed).length, removed: removed.length, unchanged, rows, ann };
  }

  /** Adds (or replaces) these image files, which must lie under the gallery root. */
  async add(files: string[], o: UpdateOptions): Promise<{ added: string[] }> {
    const root = this.meta.galleryRoot;
    const todo = [];
    for (const f of files) {
      const abs = resolve(f);
      const rel = relPath(root, abs);
      if (rel.startsWith('..') || isAbsolute(rel)) throw new DataError(`image ${abs} is not under the gallery folder ${root}`, 'DWC_BAD_ARGUMENT', abs);
      const st = statSync(abs);
      todo.push({ file: abs, rel, hash: await fileHash(abs), size: st.size, mtime: st.mtimeMs, changed: true });
    }
    await this.embedAndStore(todo, o);
    await this.maintainAnn(true);
    return { added: todo.map((t) => t.rel) };
  }

  private async embedAndStore(todo: { file: string; rel: string; hash: string; size: number; mtime: number; changed: boolean }[], o: UpdateOptions): Promise<void> {
    if (!todo.length) return;
    await checkReadable(todo.map((t) => t.file));
    const bs = o.batchSize ?? 64;
    o.onProgress?.(0, todo.length);
    for (let i = 0; i < todo.length; i += bs) {
      const part = todo.slice(i, i + bs);
      const [{ embeddings, dim }, sizes] = await Promise.all([o.embed(part.map((t) => t.file)), Promise.all(part.map((t) => sharp(t.file).metadata()))]);
      if (dim !== this.meta.dim) throw new DwcError(`the model embeds into ${dim} dims but the index at ${this.uri} holds ${this.meta.dim}`, 'DWC_BAD_ARGUMENT');
      const rows = part.map((t, j) => ({
        id: pathId(t.rel),
        path: t.rel,
        hash: t.hash,
        size: t.size,
        mtime: t.mtime,
        width: sizes[j].width ?? 0,
        height: sizes[j].height ?? 0,
        vector: embeddings.slice(j * dim, (j + 1) * dim),
      }));
      // replace by path: the delete and the add are one merge (no window without the row)
      await this.table.mergeInsert('path').whenMatchedUpdateAll().whenNotMatchedInsertAll().execute(rows);
      o.onProgress?.(Math.min(todo.length, i + bs), todo.length);
    }
  }

  /** Creates the ANN index once the table reaches the threshold; folds new rows into it after. */
  private async maintainAnn(changed: boolean): Promise<boolean> {
    const n = await this.count();
    const has = (await this.table.listIndices()).some((i) => i.columns.includes('vector'));
    if (n < this.ann.threshold) return has;
    if (!has) await this.createAnnIndex();
    else if (changed) await this.table.optimize();
    return true;
  }

  /** (Re)trains the ANN index (`type`, default this index's) over the vector column. */
  async createAnnIndex(o: { type?: AnnType; numPartitions?: number; numSubVectors?: number } = {}): Promise<void> {
    const n = await this.count();
    const type = o.type ?? this.ann.type;
    checkAnn({ type });
    const hnsw = type === 'ivf_hnsw_sq' || type === 'ivf_hnsw_pq';
    // IVF alone: ≈ √rows partitions; IVF + HNSW: few large partitions, each one graph
    const numPartitions = o.numPartitions ?? this.ann.numPartitions ?? (hnsw ? Math.max(1, Math.ceil(n / 100_000)) : Math.max(1, Math.round(Math.sqrt(n))));
    const numSubVectors = o.numSubVectors ?? this.ann.numSubVectors ?? Math.max(1, Math.floor(this.dim / 8));
    // L2: every gallery vector has the same norm ([t_G; t_L], each stream unit-norm), so the L2
    // order is the dot-product order, and graph/quantiser training behaves better under a metric
    const distanceType = 'l2' as const;
    const config =
      type === 'ivf_pq' ? lancedb.Index.ivfPq({ distanceType, numPartitions, numSubVectors })
      : type === 'ivf_flat' ? lancedb.Index.ivfFlat({ distanceType, numPartitions })
      : type === 'ivf_hnsw_pq' ? lancedb.Index.hnswPq({ distanceType, numPartitions, numSubVectors })
      : lancedb.Index.hnswSq({ distanceType, numPartitions });
    await this.table.createIndex('vector', { config, replace: true });
  }

  /** True when searches go through the ANN index. */
  async usesAnn(): Promise<boolean> {
    return (await this.annIndexType()) !== undefined;
  }

  /** Type of the ANN index the searches go through (undefined: exact search). */
  private async annIndexType(): Promise<AnnType | undefined> {
    if ((await this.count()) < this.ann.threshold) return undefined;
    const i = (await this.table.listIndices()).find((i) => i.columns.includes('vector'));
    if (!i) return undefined;
    // LanceDB's names: IvfFlat, IvfPq, IvfHnswSq, IvfHnswPq
    const t = i.indexType.replace(/[A-Z]/g, (c, at) => (at ? '_' : '') + c.toLowerCase()) as AnnType;
    return ANN_TYPES.includes(t) ? t : this.ann.type;
  }

  /** Every id, path and vector, read once per table version (exact search and id lookups). */
  private async snapshot(): Promise<Snapshot> {
    const v = await this.table.version();
    if (this.snap && this.snap.version === v) return this.snap;
    this.snap?.G?.release();
    this.snap = undefined;
    const t = await this.table.query().select(['id', 'path', 'vector']).toArrow();
    const ids = t.getChild('id')!.toArray() as string[];
    const paths = t.getChild('path')!.toArray() as string[];
    this.snap = { version: v, ids: Array.from(ids), paths: Array.from(paths), vectors: vectorsOf(t.getChild('vector')!, this.dim) };
    return this.snap;
  }

  private async idMap(): Promise<Map<string, string>> {
    const v = await this.table.version();
    if (!this.idToPath || this.snapVersion !== v) {
      const rows = (await this.table.query().select(['id', 'path']).toArray()) as { id: string; path: string }[];
      this.idToPath = new Map(rows.map((r) => [r.id, r.path]));
      this.snapVersion = v;
    }
    return this.idToPath;
  }

  /** Path (relative to the gallery root) of an id, or undefined. */
  async pathOf(id: string): Promise<string | undefined> {
    return (await this.idMap()).get(id);
  }

  /** Row of a gallery path (relative to the root, or absolute under it), or undefined. */
  async lookup(path: string): Promise<GalleryRow | undefined> {
    const rel = isAbsolute(path) ? relPath(this.galleryRoot, path) : path.split(sep).join('/');
    const r = await this.table.query().where(`path = ${sqlStr(rel)}`).select(['id', 'path', 'hash', 'size', 'mtime', 'width', 'height']).limit(1).toArray();
    return r[0] as GalleryRow | undefined;
  }

  /**
   * Top-k gallery images for each query embedding (queries [Q, dim] row-major), best first.
   * `exclude[q]`: a gallery path to leave out of query q's ranking (its own reference image).
   * `exact` forces the exact search even when an ANN index exists.
   */
  async search(queries: Float32Array, o: { k: number; exclude?: (string | undefined)[]; exact?: boolean; nprobes?: number; refineFactor?: number; rerank?: number; ef?: number }): Promise<IndexHit[][]> {
    const D = this.dim;
    if (queries.length % D !== 0) throw new DwcError(`search: query length ${queries.length} is not a multiple of the index dim ${D}`, 'DWC_BAD_ARGUMENT');
    if (!Number.isInteger(o.k) || o.k < 1) throw new DwcError(`search: 'k' must be a positive integer, got ${o.k}`, 'DWC_BAD_ARGUMENT');
    const Q = queries.length / D;
    const built = o.exact ? undefined : await this.annIndexType();
    if (built) {
      // the search settings of the index on the table (it may be of another type than this
      // handle's `ann.type`, e.g. built earlier with other defaults)
      const d = built === this.ann.type ? this.ann : GalleryIndex.annDefaults({ ...this.annGiven, type: built });
      return Promise.all(Array.from({ length: Q }, (_, q) => this.searchAnn(queries.subarray(q * D, (q + 1) * D), o.k, o.exclude?.[q], o, d)));
    }
    return this.searchExact(queries, o.k, o.exclude);
  }

  private searchExact(queries: Float32Array, k: number, exclude?: (string | undefined)[]): Promise<IndexHit[][]> {
    // one exact search at a time: the snapshot's native tensor takes one async call at a time,
    // and a snapshot is replaced (its tensor released) only between searches
    return this.exactTurn(() => this.searchExactNow(queries, k, exclude));
  }

  private async searchExactNow(queries: Float32Array, k: number, exclude?: (string | undefined)[]): Promise<IndexHit[][]> {
    const s = await this.snapshot();
    const D = this.dim;
    const Q = queries.length / D;
    const N = s.paths.length;
    const out: IndexHit[][] = [];
    if (N === 0) return Array.from({ length: Q }, () => []);
    // one GEMM for the block of queries, off the event loop (runOpAsync)
    const A = tensor(queries, [Q, D]);
    s.G ??= tensor(s.vectors, [N, D]);
    let S: Float32Array;
    try {
      const { C } = await runOpAsync('gemm', { A, B: s.G }, { transB: true });
      S = C.toArray() as Float32Array;
      C.release();
    } finally {
      A.release();
    }
    const kk = Math.min(k, N);
    const idx = new Int32Array(kk);
    const sc = new Float32Array(kk);
    for (let q = 0; q < Q; q++) {
      const skip = exclude?.[q] !== undefined ? s.paths.indexOf(exclude[q]!) : -1;
      selectTopK(S.subarray(q * N, (q + 1) * N), kk, skip, idx, sc);
      const hits: IndexHit[] = [];
      for (let t = 0; t < kk; t++) if (idx[t] >= 0) hits.push({ rank: hits.length + 1, id: s.ids[idx[t]], path: s.paths[idx[t]], score: sc[t] });
      out.push(hits);
    }
    return out;
  }

  private async searchAnn(q: Float32Array, k: number, exclude: string | undefined, o: { nprobes?: number; refineFactor?: number; rerank?: number; ef?: number }, d: ReturnType<typeof GalleryIndex.annDefaults>): Promise<IndexHit[]> {
    const cand = k * (o.rerank ?? d.rerank) + (exclude ? 1 : 0);
    const refine = o.refineFactor ?? d.refineFactor;
    let vq = this.table
      .vectorSearch(q)
      .distanceType('l2')
      .nprobes(o.nprobes ?? d.nprobes)
      .ef(Math.max(o.ef ?? d.ef, cand * refine)) // HNSW needs ef ≥ the rows it hands to the refine step
      .limit(cand);
    // refine ≤ 1: no LanceDB refine step (ivf_flat compares full-precision vectors already; the
    // candidates are re-ranked below by the exact dot product in any case)
    if (refine > 1) vq = vq.refineFactor(refine);
    const rows = (await vq.select(['id', 'path', 'vector', '_distance']).toArray()) as { id: string; path: string; vector: { toArray(): Float32Array } }[];
    // re-rank the candidates by the exact dot product
    const scored = rows
      .filter((r) => r.path !== exclude)
      .map((r) => {
        const v = r.vector.toArray();
        let s = 0;
        for (let d = 0; d < v.length; d++) s += v[d] * q[d];
        return { id: r.id, path: r.path, score: s };
      });
    scored.sort((a, b) => b.score - a.score || (a.path < b.path ? -1 : 1));
    return scored.slice(0, k).map((r, i) => ({ rank: i + 1, ...r }));
  }

  /** Closes the tables (wait for running searches first). */
  close(): void {
    this.snap?.G?.release();
    this.snap = undefined;
    this.table.close();
    this.conn.close();
  }
}
