// Library API for retrieval with a trained checkpoint: embed images, embed (image, text) queries,
// search a gallery folder (cached), and draw a preview strip.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import sharp from 'sharp';
import { DataError } from '../data/errors.js';
import { decodeRgb, normaliseInto } from '../data/images.js';
import type { Vocabulary } from '../data/text.js';
import { DwcError } from '../native.js';
import { topK } from '../eval/topk.js';
import { ImageStore } from '../train/batches.js';
import { checkPreset, readCheckpointInfo, type CheckpointInfo } from '../train/checkpoint.js';
import { modelOptions } from '../train/config.js';
import type { ModelFactory, QueryEmbeddings, RetrievalModel } from '../train/types.js';
import { getModelFactory } from '../train/wiring.js';
import { embedGallery, type CachedGallery } from './gallery.js';
import { fileSha256 } from '../clip/features.js';
import { ClipInputs, clipGalleryKey, planSearchClip, type SearchClipPlan } from './clip_inputs.js';
import type { DecodedQuery } from './query_batcher.js';
import { createHash } from 'node:crypto';
import { text as svgText } from '../report/svg.js';

export interface SearchHit {
  rank: number;
  path: string;
  score: number;
}

export interface SearchResult {
  query: { image: string; text: string };
  /** Combiner weights of the query (1 = the image decides, 0 = the text). */
  w: { global?: number; local?: number };
  results: SearchHit[];
  gallery: { dir: string; images: number; fromCache: boolean; cache: string };
}

export interface OpenOptions {
  /** Refuse a checkpoint of another preset. */
  preset?: string;
  modelFactory?: ModelFactory;
  device?: string;
  /**
   * CLIP weights (folder or file) for a checkpoint whose global stream reads frozen CLIP features
   * (`train --clip`, `--stages 2,3`; default: the path recorded in its config), or for a
   * `--features` checkpoint whose file `dwc-native features --clip DIR` wrote (docs/SERVE.md).
   */
  clip?: string;
}

/** Throws unless the text has at least one word of the training vocabulary. */
export function checkKnownWords(vocab: Vocabulary, text: string): void {
  const ids = vocab.encode(text);
  if (!ids.some((i) => i > 3))
    throw new DataError(`text "${text}" has no word the model knows (its vocabulary holds ${vocab.size - 4} words from training, e.g. ${vocab.words.slice(4, 10).join(', ')})`, 'DWC_BAD_ARGUMENT', 'text');
}

export class Searcher {
  private readonly store: ImageStore;
  private constructor(
    readonly checkpoint: string,
    readonly info: CheckpointInfo,
    readonly vocab: Vocabulary,
    private readonly model: RetrievalModel,
    /** The CLIP computing the global stream's features (checkpoints trained on CLIP features), else undefined. */
    readonly clip?: ClipInputs,
  ) {
    // no decode cache: a gallery file changed in place must be read again (index updates)
    this.store = new ImageStore(info.config!.dims.imageSize, undefined, 0);
    model.setTraining(false);
  }

  /** Reads a checkpoint written by `dwc-native train` (header checked first, then weights). */
  static async open(checkpoint: string, opts: OpenOptions = {}): Promise<Searcher> {
    const info = Searcher.inspect(checkpoint, opts.preset);
    const plan = Searcher.inspectClip(info, opts.clip);
    const clip = plan ? await ClipInputs.open(plan, info) : undefined;
    const factory = opts.modelFactory ?? (await getModelFactory());
    const cfg = { ...info.config!, device: opts.device ?? info.config!.device };
    const model = await factory.load(checkpoint, modelOptions(cfg, info.vocab!.size));
    return new Searcher(checkpoint, info, info.vocab!, model, clip);
  }

  /**
   * The CLIP a checkpoint needs for new queries and gallery images (header-only checks: the recorded
   * folder exists, a `--features` checkpoint is refused unless `clip` is given), or undefined.
   */
  static inspectClip(info: CheckpointInfo, clip?: string): SearchClipPlan | undefined {
    return planSearchClip(info, clip);
  }

  /**
   * Identity of what embeds the gallery: the checkpoint's sha256, combined with the CLIP's identity
   * when the global stream reads CLIP features (a gallery index built with another CLIP is refused).
   */
  async identity(): Promise<string> {
    const ck = await fileSha256(this.checkpoint); // = checkpointIdentity of src/search/index_db.ts (not imported: LanceDB stays out of search)
    return this.clip ? createHash('sha256').update(`${ck}\0clip\0${this.clip.plan.id}`).digest('hex') : ck;
  }

  /** Header-only checks: corrupt file, not ours, wrong preset, no vocabulary. */
  static inspect(checkpoint: string, preset?: string): CheckpointInfo {
    const info = readCheckpointInfo(checkpoint);
    checkPreset(info, preset);
    if (!info.vocab || !info.config) throw new DwcError(`checkpoint ${checkpoint} has no vocabulary or config in its metadata`, 'DWC_FORMAT');
    return info;
  }

  get dims() {
    return this.model.dims;
  }

  /** Target embeddings [n, dim] of image files. */
  async embedImages(files: string[]): Promise<{ embeddings: Float32Array; dim: number }> {
    const [images, features] = await Promise.all([this.store.load(files), this.clip?.embedImageFiles(files)]);
    return this.model.embedImages({ B: files.length, imageSize: this.store.size, images, ...(features ? { features } : {}) });
  }

  /** Query embeddings of (image, text) pairs, with the combiner weights; an image is a file or its bytes. */
  async embedQueries(pairs: { image: string | Buffer; text: string }[]): Promise<QueryEmbeddings> {
    for (const p of pairs) checkKnownWords(this.vocab, p.text);
    const decoded = await Promise.all(pairs.map((p) => this.prepareQuery(p.image, p.text)));
    return this.embedDecodedQueries(decoded);
  }

  /**
   * Decodes a query (image file or bytes, text) into what embedDecodedQueries needs: the model's
   * RGB input and, for a checkpoint on CLIP features, CLIP's preprocessed pixels of the same image.
   * Only decoding: the server runs it per request, outside the serialized native calls.
   */
  async prepareQuery(image: string | Buffer, text: string): Promise<DecodedQuery> {
    const [rgb, clipPixels] = await Promise.all([this.decodeImage(image), this.clip?.pixels([image])]);
    return { rgb, text, ...(clipPixels ? { clipPixels } : {}) };
  }

  /**
   * Whether a query's embedding is independent of the other queries of its batch: true when the
   * checkpoint masks padded tokens (the default, DWC-SPEC §10); a `--no-mask-padding` model's
   * local stream reads the padding, so its batches must hold texts of one length (textLength).
   */
  get batchIndependent(): boolean {
    return this.info.config!.maskPadding !== false;
  }

  /** Tokens the model reads of a text (its padded batch length when alone). */
  textLength(text: string): number {
    return Math.min(this.vocab.encode(text).length, this.info.config!.maxLength);
  }

  /** Side of the square images the model reads. */
  get imageSize(): number {
    return this.store.size;
  }

  /** Decodes a query image (file path or encoded bytes) to the model's RGB input; bad input is a DataError naming it. */
  decodeImage(image: string | Buffer): Promise<Buffer> {
    return typeof image === 'string' ? this.store.rgb(image) : decodeRgb(image, this.store.size);
  }

  /** Query embeddings of already decoded images (decodeImage) and texts: one native call for the batch. */
  async embedDecodedQueries(pairs: DecodedQuery[]): Promise<QueryEmbeddings> {
    for (const p of pairs) checkKnownWords(this.vocab, p.text);
    // CLIP features of the batch: one image and one text call for all its queries (docs/SERVE.md)
    let features: { img: Float32Array; txt: Float32Array } | undefined;
    if (this.clip) {
      const per = this.clip.clip.resolution ** 2 * 3;
      const px = new Float32Array(pairs.length * per);
      pairs.forEach((p, i) => {
        if (!p.clipPixels || p.clipPixels.length !== per)
          throw new DwcError(`query ${i + 1} carries no CLIP pixels [3, ${this.clip!.clip.resolution}, ${this.clip!.clip.resolution}]: this checkpoint reads CLIP features; decode its queries with Searcher.prepareQuery`, 'DWC_BAD_ARGUMENT');
        px.set(p.clipPixels, i * per);
      });
      const img = await this.clip.embedPixels(px);
      const txt = await this.clip.embedTexts(pairs.map((p) => p.text));
      features = { img, txt };
    }
    const S = this.store.size;
    const per = 3 * S * S;
    const images = new Float32Array(pairs.length * per);
    pairs.forEach((p, i) => normaliseInto(p.rgb, S, images, i * per));
    const enc = this.vocab.encodeBatch(pairs.map((p) => p.text), { maxLength: this.info.config!.maxLength });
    return this.model.embedQueries({ B: pairs.length, imageSize: S, images, tokens: enc.tokens, lengths: enc.lengths, L: enc.L, ...(features ? { features } : {}) });
  }

  /** Embeds (or reads from the cache) a gallery folder. */
  async gallery(dir: string, onProgress?: (done: number, total: number) => void): Promise<CachedGallery & { fromCache: boolean; cachePath: string }> {
    return embedGallery(this.checkpoint, dir, (files) => this.embedImages(files), { onProgress, key: clipGalleryKey(this.clip?.plan) });
  }

  /** Ranks the gallery folder for one query; the query image itself is left out if it is in the gallery. */
  async search(q: { image: string; text: string; gallery: string; k?: number; onProgress?: (done: number, total: number) => void }): Promise<SearchResult> {
    checkKnownWords(this.vocab, q.text);
    if (!existsSync(q.image)) throw new DataError(`query image ${q.image} does not exist`, 'DWC_DATA_MISSING', q.image);
    const g = await this.gallery(q.gallery, q.onProgress);
    const e = await this.embedQueries([{ image: q.image, text: q.text }]);
    const self = g.files.indexOf(resolve(q.image));
    const k = Math.min(q.k ?? 10, g.files.length - (self >= 0 ? 1 : 0));
    const top = topK(e.embeddings, g.embeddings, g.dim, Math.max(1, k), { exclude: Int32Array.of(self) });
    const results: SearchHit[] = [];
    for (let t = 0; t < k; t++) if (top.indices[t] >= 0) results.push({ rank: t + 1, path: g.files[top.indices[t]], score: top.scores[t] });
    return {
      query: { image: q.image, text: q.text },
      w: { global: e.wGlobal?.[0], local: e.wLocal?.[0] },
      results,
      gallery: { dir: q.gallery, images: g.files.length, fromCache: g.fromCache, cache: g.cachePath },
    };
  }

  dispose(): void {
    this.model.dispose?.();
  }
}

/** Draws the query and its ranked results as one PNG strip. */
export async function writePreview(r: SearchResult, path: string, thumb = 128): Promise<void> {
  const n = r.results.length;
  const pad = 16;
  const W = pad + (thumb + pad) * (n + 1) + 30;
  const H = thumb + 110;
  const b64 = async (f: string) => {
    try {
      return `data:image/png;base64,${(await sharp(f).resize(thumb, thumb, { fit: 'cover' }).png().toBuffer()).toString('base64')}`;
    } catch {
      return undefined;
    }
  };
  const imgs = await Promise.all([r.query.image, ...r.results.map((x) => x.path)].map(b64));
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="${W}" height="${H}">`, `<rect width="${W}" height="${H}" fill="#fafafa"/>`];
  const wtxt = [r.w.global !== undefined ? `w_G=${r.w.global.toFixed(2)}` : '', r.w.local !== undefined ? `w_L=${r.w.local.toFixed(2)}` : ''].filter(Boolean).join('  ');
  parts.push(svgText(pad, 22, `“${r.query.text}”  ${wtxt}`, { size: 15, weight: 'bold' }));
  const place = (i: number, href: string | undefined, label: string, color: string) => {
    const x = pad + i * (thumb + pad) + (i > 0 ? 30 : 0);
    parts.push(`<rect x="${x - 2}" y="36" width="${thumb + 4}" height="${thumb + 4}" fill="${color}"/>`);
    if (href) parts.push(`<image x="${x}" y="38" width="${thumb}" height="${thumb}" xlink:href="${href}" href="${href}"/>`);
    parts.push(svgText(x + thumb / 2, 38 + thumb + 18, label, { size: 12, anchor: 'middle' }));
  };
  place(0, imgs[0], 'query', '#1f77b4');
  r.results.forEach((x, i) => place(i + 1, imgs[i + 1], `${x.rank}. ${x.score.toFixed(3)}`, '#ccc'));
  parts.push('</svg>');
  await sharp(Buffer.from(parts.join('\n'))).png().toFile(path);
}
