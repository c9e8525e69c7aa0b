// The in-memory dataset every loader produces (spec §1, §7), and the generic on-disk format
// (docs/DATA.md): a folder with images/ and dataset.json (or dataset.jsonl).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { DataError } from './errors.js';

export interface ImageRecord {
  /** Unique id; queries and galleries refer to images by id. */
  id: string;
  /** Absolute path of the image file. */
  file: string;
  split: string;
  /** Scene id (synthetic data): images with the same scene are interchangeable targets. */
  scene?: string;
  /** Caption: a description of the image (synthetic: the scene; Fashion200k: the product
   *  description; FashionIQ: its attributes). Image–caption pairs for PL4CIR stage 2
   *  (`Dataset.captions`); under the hit rule 'caption' (Fashion200k) images with the same caption
   *  are interchangeable targets. */
  caption?: string;
  /** Category (FashionIQ: dress, shirt, toptee). */
  category?: string;
}

export interface Query {
  /** Reference image id. */
  source: string;
  /** Modification text, raw (tokenised later, §8). */
  text: string;
  /** Target image id. */
  target: string;
  split: string;
  /** Target label for the loss (§5): equal labels mean the same target. Default: the target's hit key. */
  label?: number | string;
  /** True for a training query whose text was made wrong or ambiguous on purpose (synthetic label noise). */
  noisy?: boolean;
  category?: string;
  /** Synthetic data: the operation (add, remove, colour, shape, size, move) and which modality dominates. */
  op?: string;
  dominance?: 'text' | 'image';
}

/** What makes a gallery image a hit for a query (§7): the same image, scene or caption as the target. */
export type HitRule = 'id' | 'scene' | 'caption';

/** One evaluation protocol: queries ranked against a gallery, Recall@K for each K (§7). */
export interface EvalSet {
  name: string;
  split: string;
  queries: Query[];
  gallery: string[];
  hit: HitRule;
  ks: number[];
}

export interface QueryOptions {
  /** Fashion200k builds training pairs on the fly: the epoch and seed select them (deterministic). */
  epoch?: number;
  seed?: number;
}

export type DatasetFormat = 'generic' | 'fashioniq' | 'shoes' | 'fashion200k';

export interface Dataset {
  readonly name: string;
  readonly format: DatasetFormat;
  readonly root: string;
  readonly images: readonly ImageRecord[];
  readonly splits: readonly string[];
  readonly hit: HitRule;
  readonly trainSplit: string;
  readonly evalSplit: string;
  /** Split of the validation queries (model selection during training); undefined when the dataset has none. */
  readonly valSplit?: string;
  /** Image–caption pairs of a split (every split when omitted), in image order: images without a caption are left out. */
  captions(split?: string): { id: string; caption: string }[];
  /** The image with this id; throws DataError DWC_DATA_MISSING_ID naming it. */
  image(id: string): ImageRecord;
  hasImage(id: string): boolean;
  /** The queries of a split, in a fixed order (feature files index them by this order). */
  queries(split: string, opts?: QueryOptions): Query[];
  /** Gallery image ids of a split. */
  gallery(split: string): string[];
  /** The evaluation protocols of §7 for a split (default: evalSplit). */
  evaluations(split?: string): EvalSet[];
  /** The training texts the vocabulary is built from, in order (§8). */
  trainTexts(): string[];
  /** The key two images must share to count as the same target (hit rule). */
  hitKey(imageId: string): string;
  /** Integer labels for a list of queries (§5): equal ints mean the same target. */
  labels(queries: readonly Query[]): Int32Array;
}

/** Shared implementation: images by id, queries and galleries per split. */
export class BaseDataset implements Dataset {
  readonly images: ImageRecord[] = [];
  protected readonly byId = new Map<string, ImageRecord>();
  protected readonly querySets = new Map<string, Query[]>();
  protected readonly galleries = new Map<string, string[]>();
  protected readonly labelIds = new Map<string, number>();
  splits: string[] = [];
  trainSplit = 'train';
  evalSplit = 'test';
  valSplit?: string;
  ks = [1, 5, 10];

  constructor(
    readonly name: string,
    readonly format: DatasetFormat,
    readonly root: string,
    readonly hit: HitRule = 'id',
  ) {}

  addImage(rec: ImageRecord): void {
    if (this.byId.has(rec.id)) throw new DataError(`${this.root}: image id '${rec.id}' is defined twice`, 'DWC_DATA_FORMAT', rec.id);
    this.byId.set(rec.id, rec);
    this.images.push(rec);
    if (!this.splits.includes(rec.split)) this.splits.push(rec.split);
  }

  addQuery(q: Query): void {
    for (const id of [q.source, q.target]) if (!this.byId.has(id)) throw new DataError(`${this.root}: query '${q.text}' refers to unknown image id '${id}'`, 'DWC_DATA_MISSING_ID', id);
    let qs = this.querySets.get(q.split);
    if (!qs) this.querySets.set(q.split, (qs = []));
    qs.push(q);
    if (!this.splits.includes(q.split)) this.splits.push(q.split);
  }

  setGallery(split: string, ids: string[]): void {
    for (const id of ids) if (!this.byId.has(id)) throw new DataError(`${this.root}: gallery '${split}' lists unknown image id '${id}'`, 'DWC_DATA_MISSING_ID', id);
    this.galleries.set(split, ids);
  }

  image(id: string): ImageRecord {
    const r = this.byId.get(id);
    if (!r) throw new DataError(`${this.name}: no image with id '${id}'`, 'DWC_DATA_MISSING_ID', id);
    return r;
  }

  hasImage(id: string): boolean {
    return this.byId.has(id);
  }

  queries(split: string, _opts?: QueryOptions): Query[] {
    return this.querySets.get(split) ?? [];
  }

  gallery(split: string): string[] {
    const g = this.galleries.get(split);
    if (g) return g;
    const all = this.images.filter((r) => r.split === split).map((r) => r.id);
    this.galleries.set(split, all);
    return all;
  }

  evaluations(split = this.evalSplit): EvalSet[] {
    return [{ name: this.name, split, queries: this.queries(split), gallery: this.gallery(split), hit: this.hit, ks: this.ks }];
  }

  trainTexts(): string[] {
    return this.queries(this.trainSplit).map((q) => q.text);
  }

  captions(split?: string): { id: string; caption: string }[] {
    const out: { id: string; caption: string }[] = [];
    for (const r of this.images) if (r.caption !== undefined && (split === undefined || r.split === split)) out.push({ id: r.id, caption: r.caption });
    return out;
  }

  hitKey(imageId: string): string {
    const r = this.image(imageId);
    if (this.hit === 'scene') return r.scene ?? r.id;
    if (this.hit === 'caption') return r.caption ?? r.id;
    return r.id;
  }

  labels(queries: readonly Query[]): Int32Array {
    const out = new Int32Array(queries.length);
    queries.forEach((q, i) => {
      const key = q.label !== undefined ? `label:${q.label}` : `key:${this.hitKey(q.target)}`;
      let v = this.labelIds.get(key);
      if (v === undefined) this.labelIds.set(key, (v = this.labelIds.size));
      out[i] = v;
    });
    return out;
  }
}

// ---------------------------------------------------------------- generic on-disk format

export const GENERIC_FORMAT = 'dwc-dataset';
export const GENERIC_VERSION = 1;

/** The JSON written to dataset.json (docs/DATA.md). Image files are relative to the folder. */
export interface GenericImageJson {
  id: string;
  file: string;
  split: string;
  scene?: string;
  caption?: string;
  category?: string;
}
export interface GenericQueryJson {
  source: string;
  text: string;
  target: string;
  split: string;
  label?: number | string;
  noisy?: boolean;
  category?: string;
  op?: string;
  dominance?: 'text' | 'image';
}
export interface GenericDatasetJson {
  format: typeof GENERIC_FORMAT;
  version: number;
  name?: string;
  hit?: HitRule;
  trainSplit?: string;
  evalSplit?: string;
  valSplit?: string;
  ks?: number[];
  images: GenericImageJson[];
  queries: GenericQueryJson[];
  galleries?: Record<string, string[]>;
  [extra: string]: unknown;
}

function formatError(file: string, msg: string, subject?: string): DataError {
  return new DataError(`${file}: ${msg}`, 'DWC_DATA_FORMAT', subject ?? file);
}

function str(o: Record<string, unknown>, key: string, file: string, where: string, optional = false): string | undefined {
  const v = o[key];
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'string' || !v) throw formatError(file, `${where}: field '${key}' must be a non-empty string`, key);
  return v;
}

/** Reads the generic format from a folder holding dataset.json or dataset.jsonl. */
export function loadGeneric(dir: string): BaseDataset {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new DataError(`dataset folder ${root} does not exist`, 'DWC_DATA_MISSING', root);
  const jsonPath = join(root, 'dataset.json');
  const jsonlPath = join(root, 'dataset.jsonl');
  let doc: GenericDatasetJson;
  let file: string;
  if (existsSync(jsonPath)) {
    file = jsonPath;
    try {
      doc = JSON.parse(readFileSync(jsonPath, 'utf8')) as GenericDatasetJson;
    } catch (e) {
      throw formatError(jsonPath, `not valid JSON (${(e as Error).message})`);
    }
  } else if (existsSync(jsonlPath)) {
    file = jsonlPath;
    doc = parseJsonl(jsonlPath);
  } else {
    throw new DataError(`${root} holds neither dataset.json nor dataset.jsonl`, 'DWC_DATA_MISSING', jsonPath);
  }
  if (!doc || typeof doc !== 'object') throw formatError(file, 'top level must be an object');
  if (doc.format !== undefined && doc.format !== GENERIC_FORMAT) throw formatError(file, `'format' is '${String(doc.format)}', expected '${GENERIC_FORMAT}'`, 'format');
  if (!Array.isArray(doc.images)) throw formatError(file, "'images' must be an array", 'images');
  if (!Array.isArray(doc.queries)) throw formatError(file, "'queries' must be an array", 'queries');
  const hit = doc.hit ?? 'id';
  if (!['id', 'scene', 'caption'].includes(hit)) throw formatError(file, `'hit' must be id, scene or caption, got '${String(hit)}'`, 'hit');
  const ds = new BaseDataset(doc.name ?? root.split(/[\\/]/).pop() ?? 'dataset', 'generic', root, hit);
  if (doc.trainSplit) ds.trainSplit = doc.trainSplit;
  if (doc.evalSplit) ds.evalSplit = doc.evalSplit;
  if (doc.valSplit !== undefined) {
    if (typeof doc.valSplit !== 'string' || !doc.valSplit) throw formatError(file, "'valSplit' must be a non-empty string", 'valSplit');
    ds.valSplit = doc.valSplit;
  }
  if (Array.isArray(doc.ks) && doc.ks.every((k) => Number.isInteger(k) && k > 0)) ds.ks = doc.ks;
  doc.images.forEach((im, i) => {
    const o = im as unknown as Record<string, unknown>;
    const where = `images[${i}]`;
    const f = str(o, 'file', file, where)!;
    ds.addImage({
      id: str(o, 'id', file, where)!,
      file: isAbsolute(f) ? f : join(root, f),
      split: str(o, 'split', file, where)!,
      scene: str(o, 'scene', file, where, true),
      caption: str(o, 'caption', file, where, true),
      category: str(o, 'category', file, where, true),
    });
  });
  doc.queries.forEach((q, i) => {
    const o = q as unknown as Record<string, unknown>;
    const where = `queries[${i}]`;
    if (typeof o.text !== 'string') throw formatError(file, `${where}: field 'text' must be a string`, 'text');
    const rec: Query = { source: str(o, 'source', file, where)!, text: o.text, target: str(o, 'target', file, where)!, split: str(o, 'split', file, where)! };
    if (o.label !== undefined) rec.label = o.label as number | string;
    if (o.noisy !== undefined) rec.noisy = !!o.noisy;
    for (const k of ['category', 'op'] as const) if (typeof o[k] === 'string') rec[k] = o[k] as string;
    if (o.dominance === 'text' || o.dominance === 'image') rec.dominance = o.dominance;
    ds.addQuery(rec);
  });
  if (doc.galleries) for (const [split, ids] of Object.entries(doc.galleries)) {
    if (!Array.isArray(ids)) throw formatError(file, `galleries.${split} must be an array of image ids`, split);
    ds.setGallery(split, ids);
  }
  // no valSplit given: a split named 'val' with queries (other than train/eval) is the validation split
  if (doc.valSplit === undefined && ds.trainSplit !== 'val' && ds.evalSplit !== 'val' && ds.queries('val').length) ds.valSplit = 'val';
  else if (ds.valSplit && !ds.queries(ds.valSplit).length) throw formatError(file, `'valSplit' is '${ds.valSplit}' but no query has that split`, 'valSplit');
  return ds;
}

/** JSONL variant: one object per line with "type": "meta" | "image" | "query" | "gallery". */
function parseJsonl(path: string): GenericDatasetJson {
  const doc: GenericDatasetJson = { format: GENERIC_FORMAT, version: GENERIC_VERSION, images: [], queries: [], galleries: {} };
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (!line.trim()) return;
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch (e) {
        throw formatError(path, `line ${i + 1} is not valid JSON (${(e as Error).message})`);
      }
      const { type, ...rest } = o;
      if (type === 'image') doc.images.push(rest as unknown as GenericImageJson);
      else if (type === 'query') doc.queries.push(rest as unknown as GenericQueryJson);
      else if (type === 'gallery') doc.galleries![String(rest.split)] = rest.ids as string[];
      else if (type === 'meta') Object.assign(doc, rest);
      else throw formatError(path, `line ${i + 1}: 'type' must be meta, image, query or gallery, got '${String(type)}'`, 'type');
    });
  return doc;
}
