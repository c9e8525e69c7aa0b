// Data layer public surface (datasets, loaders, image pipeline, text, features, synthetic data).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadGeneric, type Dataset, type DatasetFormat } from './dataset.js';
import { DataError } from './errors.js';
import { loadFashionIQ } from './fashioniq.js';
import { loadFashion200k } from './fashion200k.js';
import { loadShoes } from './shoes.js';

export { DataError, type DataErrorCode } from './errors.js';
export {
  BaseDataset,
  loadGeneric,
  GENERIC_FORMAT,
  GENERIC_VERSION,
  type Dataset,
  type DatasetFormat,
  type EvalSet,
  type HitRule,
  type ImageRecord,
  type Query,
  type QueryOptions,
  type GenericDatasetJson,
  type GenericImageJson,
  type GenericQueryJson,
} from './dataset.js';
export { FashionIqDataset, loadFashionIQ, FASHIONIQ_CATEGORIES, type FashionIqOptions } from './fashioniq.js';
export { ShoesDataset, loadShoes } from './shoes.js';
export { Fashion200kDataset, loadFashion200k, differentWords } from './fashion200k.js';
export { CLIP_MEAN, CLIP_STD, decodeRgb, normaliseInto, loadImageInto, loadImagesInto, mapLimit, defaultConcurrency, type ImageOptions, type LoadManyOptions, type LoadManyResult } from './images.js';
export { Vocabulary, tokenize, mirrorText, joinFashionIqCaptions, fashion200kText, SPECIAL_TOKENS, UNK, AND, BOS, EOS, type EncodedBatch, type VocabularyJson } from './text.js';
export { FeatureSet, loadFeatures, openFeatures, writeFeatures, type FeatureWriteInput } from './features.js';
export { Prefetcher, QueryBatcher, imageChunks, type QueryBatch, type QueryBatcherOptions } from './batcher.js';
export { generateSynthetic, writePreview, renderSvgPng, parseSceneCaption, rephraseSceneCaption, SHAPES, COLOURS, SIZES, OPS, type SynthOptions, type SynthSummary, type SynthOp, type PreviewOptions } from './synth.js';
export { Rng } from './rng.js';

/** Which layout a folder holds, or null. */
export function detectFormat(dir: string): DatasetFormat | null {
  const root = resolve(dir);
  if (existsSync(join(root, 'dataset.json')) || existsSync(join(root, 'dataset.jsonl'))) return 'generic';
  if (existsSync(join(root, 'captions')) && existsSync(join(root, 'image_splits'))) return 'fashioniq';
  if (existsSync(join(root, 'relative_captions_shoes.json'))) return 'shoes';
  if (existsSync(join(root, 'labels')) && existsSync(join(root, 'test_queries.txt'))) return 'fashion200k';
  return null;
}

/** Loads a dataset folder in any supported layout (auto-detected unless `format` is given). */
export function loadDataset(dir: string, opts: { format?: DatasetFormat | 'auto' } = {}): Dataset {
  const root = resolve(dir);
  if (!existsSync(root)) throw new DataError(`dataset folder ${root} does not exist`, 'DWC_DATA_MISSING', root);
  const format = !opts.format || opts.format === 'auto' ? detectFormat(root) : opts.format;
  switch (format) {
    case 'generic':
      return loadGeneric(root);
    case 'fashioniq':
      return loadFashionIQ(root);
    case 'shoes':
      return loadShoes(root);
    case 'fashion200k':
      return loadFashion200k(root);
    default:
      throw new DataError(
        `${root}: not a dataset folder I recognise (expected dataset.json, FashionIQ captions/ + image_splits/, Shoes relative_captions_shoes.json, or Fashion200k labels/ + test_queries.txt)`,
        'DWC_DATA_FORMAT',
        root,
      );
  }
}
