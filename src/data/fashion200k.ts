// Fashion200k in its published layout: labels/<cat>_<split>_detect_all.txt (path \t score \t
// caption), test_queries.txt ("source target" per line), images at <root>/<path>. Training pairs
// are built on the fly from captions that differ in one word (as the reference TIRG loader);
// texts are `replace <w1> with <w2> and get <target caption>` (§8); a hit is any gallery image
// with the target's caption (§7).
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BaseDataset, type Query, type QueryOptions } from './dataset.js';
import { DataError } from './errors.js';
import { readLines, requireDir } from './fsutil.js';
import { Rng } from './rng.js';
import { fashion200kText } from './text.js';

/** The first word of the source not in the target, and of the target not in the source (reference). */
export function differentWords(source: string, target: string): [string, string] {
  const s = source.split(/\s+/).filter(Boolean);
  const t = target.split(/\s+/).filter(Boolean);
  const w1 = s.find((w) => !t.includes(w)) ?? s[s.length - 1] ?? '';
  const w2 = t.find((w) => !s.includes(w)) ?? t[t.length - 1] ?? '';
  return [w1, w2];
}

export class Fashion200kDataset extends BaseDataset {
  /** Training images whose caption has a one-word sibling (usable as a query source). */
  readonly modifiable: number[] = [];
  private readonly trainIds: string[] = [];
  private readonly parentsOf = new Map<string, string[]>();
  private readonly childrenOf = new Map<string, string[]>();
  private readonly idsOfCaption = new Map<string, string[]>();
  private cache?: { key: string; qs: Query[] };

  constructor(root: string) {
    super('fashion200k', 'fashion200k', root, 'caption');
    this.evalSplit = 'test';
    this.ks = [1, 10, 50];
    requireDir(root, 'Fashion200k');
    const labels = join(root, 'labels');
    requireDir(labels, 'Fashion200k');
    for (const split of ['train', 'test']) {
      const files = readdirSync(labels).filter((f) => f.endsWith(`_${split}_detect_all.txt`)).sort();
      if (!files.length) throw new DataError(`Fashion200k: no labels/*_${split}_detect_all.txt in ${labels}`, 'DWC_DATA_MISSING', join(labels, `*_${split}_detect_all.txt`));
      for (const f of files)
        readLines(join(labels, f), 'Fashion200k').forEach((line, i) => {
          const parts = line.split('\t');
          if (parts.length < 3) throw new DataError(`Fashion200k: ${join(labels, f)} line ${i + 1} needs path, score and caption separated by tabs`, 'DWC_DATA_FORMAT', join(labels, f));
          const id = parts[0].trim();
          if (this.hasImage(id)) return;
          this.addImage({ id, file: join(root, id), split, caption: parts.slice(2).join(' ').trim() });
          if (split === 'train') this.trainIds.push(id);
        });
    }
    // Test queries.
    readLines(join(root, 'test_queries.txt'), 'Fashion200k').forEach((line, i) => {
      const [src, tgt] = line.split(/\s+/);
      for (const id of [src, tgt])
        if (!id || !this.hasImage(id)) throw new DataError(`Fashion200k: test_queries.txt line ${i + 1} refers to '${id}', not in the test labels`, 'DWC_DATA_MISSING_ID', id);
      const sc = this.image(src).caption!;
      const tc = this.image(tgt).caption!;
      const [w1, w2] = differentWords(sc, tc);
      this.addQuery({ source: src, target: tgt, text: fashion200kText(w1, w2, tc), split: 'test' });
    });
    this.indexCaptions();
  }

  /** Parent captions (one word removed) and their children, as the reference's caption index. */
  private indexCaptions(): void {
    for (const id of this.trainIds) {
      const c = this.image(id).caption!;
      let ids = this.idsOfCaption.get(c);
      if (!ids) this.idsOfCaption.set(c, (ids = []));
      ids.push(id);
    }
    for (const c of this.idsOfCaption.keys())
      for (const w of c.split(/\s+/).filter(Boolean)) {
        const p = c.split(w).join('').split('  ').join(' ').trim();
        let ch = this.childrenOf.get(p);
        if (!ch) this.childrenOf.set(p, (ch = []));
        if (!ch.includes(c)) ch.push(c);
      }
    for (const [p, ch] of this.childrenOf)
      if (ch.length >= 2)
        for (const c of ch) {
          let ps = this.parentsOf.get(c);
          if (!ps) this.parentsOf.set(c, (ps = []));
          ps.push(p);
        }
    this.trainIds.forEach((id, i) => {
      if (this.parentsOf.has(this.image(id).caption!)) this.modifiable.push(i);
    });
  }

  /** One training pair per training image, sampled deterministically for (seed, epoch). */
  override queries(split: string, opts: QueryOptions = {}): Query[] {
    if (split !== 'train') return super.queries(split);
    const seed = opts.seed ?? 0;
    const epoch = opts.epoch ?? 0;
    const key = `${seed}/${epoch}`;
    if (this.cache?.key === key) return this.cache.qs;
    if (!this.modifiable.length) throw new DataError(`Fashion200k: no two training captions differ in one word in ${this.root}`, 'DWC_DATA_FORMAT', this.root);
    const rng = new Rng(seed, 100 + epoch);
    const qs: Query[] = this.trainIds.map((_, idx) => {
      let i = idx;
      const cap = (k: number): string => this.image(this.trainIds[k]).caption!;
      if (!this.parentsOf.has(cap(i))) i = this.modifiable[rng.int(this.modifiable.length)];
      const sc = cap(i);
      let tc = sc;
      while (tc === sc) tc = rng.pick(this.childrenOf.get(rng.pick(this.parentsOf.get(sc)!))!);
      const tgt = rng.pick(this.idsOfCaption.get(tc)!);
      const [w1, w2] = differentWords(sc, tc);
      return { source: this.trainIds[i], target: tgt, text: fashion200kText(w1, w2, tc), split: 'train' };
    });
    this.cache = { key, qs };
    return qs;
  }

  /** Vocabulary source (§8): the fixed words of the template, then every training caption. */
  override trainTexts(): string[] {
    return ['replace with and get', ...this.trainIds.map((id) => this.image(id).caption!)];
  }
}

export function loadFashion200k(dir: string): Fashion200kDataset {
  return new Fashion200kDataset(resolve(dir));
}

