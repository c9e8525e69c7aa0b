// FashionIQ in the layout its authors publish: captions/cap.<cat>.<split>.json,
// image_splits/split.<cat>.<split>.json, images/<asin>.<ext>. Texts joined per §8; evaluation
// per category on val, R@10 and R@50, gallery = the category's val images (§7).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BaseDataset, type EvalSet } from './dataset.js';
import { DataError } from './errors.js';
import { indexImageDir, readJson, requireDir } from './fsutil.js';
import { joinFashionIqCaptions } from './text.js';

export const FASHIONIQ_CATEGORIES = ['dress', 'shirt', 'toptee'] as const;

export interface FashionIqOptions {
  categories?: readonly string[];
  /** Splits to read (default train and val; test captions carry no targets and are skipped). */
  splits?: readonly string[];
}

export class FashionIqDataset extends BaseDataset {
  /** Images listed in the splits whose file is not in images/ (FashionIQ downloads often miss some). */
  missingFiles: string[] = [];
  readonly categories: string[];
  private readonly catGalleries = new Map<string, string[]>();

  constructor(root: string, opts: FashionIqOptions = {}) {
    super('fashioniq', 'fashioniq', root, 'id');
    this.categories = [...(opts.categories ?? FASHIONIQ_CATEGORIES)];
    this.evalSplit = 'val';
    this.ks = [10, 50];
    const splits = opts.splits ?? ['train', 'val'];
    requireDir(root, 'FashionIQ');
    for (const sub of ['captions', 'image_splits', 'images']) requireDir(join(root, sub), 'FashionIQ');
    const files = indexImageDir(join(root, 'images'));
    const ensure = (name: string, split: string, cat: string): void => {
      if (this.hasImage(name)) return;
      let file = files.get(name);
      if (!file) {
        file = join(root, 'images', `${name}.jpg`);
        this.missingFiles.push(name);
      }
      this.addImage({ id: name, file, split, category: cat });
    };
    for (const split of splits)
      for (const cat of this.categories) {
        const splitFile = join(root, 'image_splits', `split.${cat}.${split}.json`);
        const names = readJson<unknown>(splitFile, 'FashionIQ');
        if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) throw new DataError(`FashionIQ: ${splitFile} must be a JSON list of image names`, 'DWC_DATA_FORMAT', splitFile);
        for (const n of names) ensure(n, split, cat);
        this.catGalleries.set(`${cat}/${split}`, names as string[]);
        const capFile = join(root, 'captions', `cap.${cat}.${split}.json`);
        if (split === 'test' && !existsSync(capFile)) continue;
        const caps = readJson<unknown>(capFile, 'FashionIQ');
        if (!Array.isArray(caps)) throw new DataError(`FashionIQ: ${capFile} must be a JSON list`, 'DWC_DATA_FORMAT', capFile);
        caps.forEach((c: { candidate?: unknown; target?: unknown; captions?: unknown }, i) => {
          if (c.target === undefined && split === 'test') return;
          if (typeof c.candidate !== 'string' || typeof c.target !== 'string' || !Array.isArray(c.captions) || c.captions.length < 1)
            throw new DataError(`FashionIQ: ${capFile} entry ${i} needs candidate, target and captions`, 'DWC_DATA_FORMAT', capFile);
          ensure(c.candidate, split, cat);
          ensure(c.target, split, cat);
          const [c1, c2] = [String(c.captions[0]), String(c.captions[1] ?? '')];
          this.addQuery({ source: c.candidate, target: c.target, text: joinFashionIqCaptions(c1, c2), split, category: cat });
        });
      }
    for (const split of splits) for (const cat of this.categories) this.readAttributes(root, cat, split);
    for (const split of splits) {
      const all = new Set<string>();
      for (const cat of this.categories) for (const n of this.catGalleries.get(`${cat}/${split}`) ?? []) all.add(n);
      this.setGallery(split, [...all]);
    }
  }

  /**
   * Image captions from the attribute files where present (PL4CIR stage 2): tags/asin2attr.<cat>.<split>.json
   * (or .new.json), an object asin → attributes (a string, or a list of strings / lists of strings);
   * the caption is the attributes joined by spaces, in file order. Absent files are skipped.
   */
  private readAttributes(root: string, cat: string, split: string): void {
    const file = [join(root, 'tags', `asin2attr.${cat}.${split}.json`), join(root, 'tags', `asin2attr.${cat}.${split}.new.json`)].find((f) => existsSync(f));
    if (!file) return;
    const doc = readJson<unknown>(file, 'FashionIQ');
    if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new DataError(`FashionIQ: ${file} must be a JSON object asin → attributes`, 'DWC_DATA_FORMAT', file);
    for (const [asin, v] of Object.entries(doc as Record<string, unknown>)) {
      if (!this.hasImage(asin)) continue;
      const words = (Array.isArray(v) ? v.flat(2) : [v]).filter((x): x is string => typeof x === 'string' && x.trim() !== '').map((x) => x.trim());
      if (Array.isArray(v) ? !v.flat(2).every((x) => typeof x === 'string') : typeof v !== 'string')
        throw new DataError(`FashionIQ: ${file}: attributes of '${asin}' must be a string or a list of strings`, 'DWC_DATA_FORMAT', file);
      const rec = this.image(asin);
      if (words.length && rec.caption === undefined) rec.caption = words.join(' ');
    }
  }

  /** Per category (§7): queries of that category, gallery = that category's images of the split. */
  override evaluations(split = this.evalSplit): EvalSet[] {
    return this.categories.map((cat) => ({
      name: `fashioniq-${cat}`,
      split,
      queries: this.queries(split).filter((q) => q.category === cat),
      gallery: this.catGalleries.get(`${cat}/${split}`) ?? [],
      hit: 'id',
      ks: this.ks,
    }));
  }
}

export function loadFashionIQ(dir: string, opts: FashionIqOptions = {}): FashionIqDataset {
  return new FashionIqDataset(resolve(dir), opts);
}
