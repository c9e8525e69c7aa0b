// Frozen encoder features (e.g. CLIP vectors computed elsewhere) in safetensors, keyed by image id
// and by query index, for the global stream (spec §3). Layout (docs/DATA.md):
//   'image'              F32 [N, Dc]  + metadata 'image_ids' = JSON list of the N image ids
//   'query_text.<split>' F32 [Q, Dc]  row q = text of dataset.queries(split)[q]
//   'text' (optional)    F32 [T, Dc]  + metadata 'texts' = JSON list of the T raw texts
import { readSafetensors, writeSafetensors, type StTensor } from '../safetensors.js';
import type { Dataset } from './dataset.js';
import { DataError, checkArg } from './errors.js';

export interface FeatureWriteInput {
  dim: number;
  imageIds: readonly string[];
  image: Float32Array;
  queryText?: Record<string, Float32Array>;
  texts?: readonly string[];
  text?: Float32Array;
}

function f32(name: string, data: Float32Array, dim: number, path: string): StTensor {
  if (data.length % dim !== 0) throw new DataError(`${path}: '${name}' has ${data.length} floats, not a multiple of dim ${dim}`, 'DWC_BAD_ARGUMENT', name);
  return { dtype: 'F32', shape: [data.length / dim, dim], data };
}

/** Writes a feature file in the layout above (atomically). */
export function writeFeatures(path: string, f: FeatureWriteInput): void {
  checkArg(Number.isInteger(f.dim) && f.dim > 0, 'dim', `must be a positive integer, got ${f.dim}`);
  checkArg(f.image.length === f.imageIds.length * f.dim, 'image', `has ${f.image.length} floats, expected ${f.imageIds.length} ids × dim ${f.dim}`);
  const tensors: Record<string, StTensor> = { image: f32('image', f.image, f.dim, path) };
  const metadata: Record<string, string> = { image_ids: JSON.stringify(f.imageIds) };
  for (const [split, d] of Object.entries(f.queryText ?? {})) tensors[`query_text.${split}`] = f32(`query_text.${split}`, d, f.dim, path);
  if (f.text || f.texts) {
    checkArg(!!f.text && !!f.texts && f.text.length === f.texts.length * f.dim, 'text', `needs texts and text with texts.length × dim floats`);
    tensors.text = f32('text', f.text!, f.dim, path);
    metadata.texts = JSON.stringify(f.texts);
  }
  writeSafetensors(path, tensors, metadata);
}

export class FeatureSet {
  readonly dim: number;
  readonly imageIds: string[];
  private readonly image: Float32Array;
  private readonly rowOf = new Map<string, number>();
  private readonly queryText = new Map<string, Float32Array>();
  private readonly textRow = new Map<string, number>();
  private readonly text?: Float32Array;

  constructor(
    readonly path: string,
    tensors: Map<string, StTensor>,
    metadata: Record<string, string>,
  ) {
    const get2d = (name: string): StTensor => {
      const t = tensors.get(name)!;
      if (t.dtype !== 'F32' || t.shape.length !== 2) throw new DataError(`${path}: tensor '${name}' must be F32 [rows, dim], got ${t.dtype} [${t.shape}]`, 'DWC_DATA_FORMAT', name);
      return t;
    };
    if (!tensors.has('image')) throw new DataError(`${path}: feature file has no tensor 'image' [N, Dc]`, 'DWC_DATA_FORMAT', 'image');
    const img = get2d('image');
    this.dim = img.shape[1];
    this.image = img.data as Float32Array;
    let ids: unknown;
    try {
      ids = JSON.parse(metadata.image_ids ?? 'null');
    } catch {
      ids = null;
    }
    if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'string'))
      throw new DataError(`${path}: metadata 'image_ids' must be a JSON list of image ids`, 'DWC_DATA_FORMAT', 'image_ids');
    if (ids.length !== img.shape[0]) throw new DataError(`${path}: metadata 'image_ids' lists ${ids.length} ids but 'image' has ${img.shape[0]} rows`, 'DWC_DATA_FORMAT', 'image_ids');
    this.imageIds = ids as string[];
    this.imageIds.forEach((id, i) => {
      if (this.rowOf.has(id)) throw new DataError(`${path}: image id '${id}' appears twice in 'image_ids'`, 'DWC_DATA_FORMAT', id);
      this.rowOf.set(id, i);
    });
    for (const name of tensors.keys()) {
      if (name.startsWith('query_text.')) {
        const t = get2d(name);
        if (t.shape[1] !== this.dim) throw new DataError(`${path}: '${name}' has dim ${t.shape[1]}, 'image' has ${this.dim}`, 'DWC_DATA_FORMAT', name);
        this.queryText.set(name.slice('query_text.'.length), t.data as Float32Array);
      }
    }
    if (tensors.has('text')) {
      const t = get2d('text');
      if (t.shape[1] !== this.dim) throw new DataError(`${path}: 'text' has dim ${t.shape[1]}, 'image' has ${this.dim}`, 'DWC_DATA_FORMAT', 'text');
      let texts: unknown;
      try {
        texts = JSON.parse(metadata.texts ?? 'null');
      } catch {
        texts = null;
      }
      if (!Array.isArray(texts) || texts.length !== t.shape[0]) throw new DataError(`${path}: metadata 'texts' must list the ${t.shape[0]} texts of 'text'`, 'DWC_DATA_FORMAT', 'texts');
      (texts as string[]).forEach((s, i) => this.textRow.set(String(s), i));
      this.text = t.data as Float32Array;
    }
  }

  static load(path: string): FeatureSet {
    const f = readSafetensors(path);
    return new FeatureSet(path, f.tensors, f.metadata);
  }

  hasImage(id: string): boolean {
    return this.rowOf.has(id);
  }

  /** The feature row of an image (a view); DataError DWC_DATA_MISSING_ID naming the id if absent. */
  imageVector(id: string): Float32Array {
    const r = this.rowOf.get(id);
    if (r === undefined) throw new DataError(`${this.path}: no feature for image id '${id}'`, 'DWC_DATA_MISSING_ID', id);
    return this.image.subarray(r * this.dim, (r + 1) * this.dim);
  }

  /** Copies the rows of `ids` into out (row-major [ids.length, dim]) from `offset`. */
  gatherImages(ids: readonly string[], out: Float32Array, offset = 0): void {
    ids.forEach((id, i) => out.set(this.imageVector(id), offset + i * this.dim));
  }

  hasQueryText(split: string): boolean {
    return this.queryText.has(split);
  }

  /** Text feature of query `index` of `split` (by the split's query order), or else of its raw text. */
  queryVector(split: string, index: number, text?: string): Float32Array {
    const q = this.queryText.get(split);
    if (q) {
      if (!(index >= 0 && (index + 1) * this.dim <= q.length)) throw new DataError(`${this.path}: 'query_text.${split}' has no row ${index}`, 'DWC_DATA_MISSING_ID', `query_text.${split}[${index}]`);
      return q.subarray(index * this.dim, (index + 1) * this.dim);
    }
    if (this.text && text !== undefined) {
      const r = this.textRow.get(text);
      if (r === undefined) throw new DataError(`${this.path}: no feature for text '${text}'`, 'DWC_DATA_MISSING_ID', text);
      return this.text.subarray(r * this.dim, (r + 1) * this.dim);
    }
    throw new DataError(`${this.path}: no tensor 'query_text.${split}' (and no text-keyed 'text')`, 'DWC_DATA_MISSING_ID', `query_text.${split}`);
  }

  /**
   * Checks the file against a dataset: every image the splits' queries and galleries use has a
   * row, and each 'query_text.<split>' has one row per query. Throws DataError naming the first
   * missing id.
   */
  validate(ds: Dataset, splits: readonly string[] = ds.splits): void {
    for (const split of splits) {
      const qs = ds.queries(split);
      for (const q of qs) for (const id of [q.source, q.target]) this.imageVector(id);
      for (const id of ds.gallery(split)) this.imageVector(id);
      const t = this.queryText.get(split);
      if (t && t.length / this.dim !== qs.length)
        throw new DataError(`${this.path}: 'query_text.${split}' has ${t.length / this.dim} rows but split '${split}' has ${qs.length} queries`, 'DWC_DATA_FORMAT', `query_text.${split}`);
      if (!t && this.text) for (const q of qs) this.queryVector(split, 0, q.text);
    }
  }
}

export function loadFeatures(path: string, ds?: Dataset, splits?: readonly string[]): FeatureSet {
  const f = FeatureSet.load(path);
  if (ds) f.validate(ds, splits);
  return f;
}

/**
 * A feature file as the trainer's feature source (src/train/types.ts FeatureSource): image rows by
 * id, text rows by split and query index (or, without `query_text.<split>`, by the query's raw
 * text in the 'text' tensor). Checked against the dataset's splits first.
 */
export function openFeatures(path: string, ds: Dataset): { dim: number; image(id: string): Float32Array; text(split: string, index: number): Float32Array } {
  const f = loadFeatures(path, ds);
  return {
    dim: f.dim,
    image: (id) => f.imageVector(id),
    text: (split, index) => f.queryVector(split, index, f.hasQueryText(split) ? undefined : ds.queries(split)[index]?.text),
  };
}
