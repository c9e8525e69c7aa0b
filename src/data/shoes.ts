// Shoes in its published layout: relative_captions_shoes.json, train_im_names.txt,
// eval_im_names.txt, images under womens_* folders (any depth below the root). §7: R@1/10/50,
// gallery = the eval images.
import { join, resolve } from 'node:path';
import { BaseDataset } from './dataset.js';
import { DataError } from './errors.js';
import { indexImagesRecursive, readJson, readLines, requireDir } from './fsutil.js';

export class ShoesDataset extends BaseDataset {
  missingFiles: string[] = [];
  /** Captions skipped because an image is in neither name list. */
  skippedCaptions = 0;

  constructor(root: string) {
    super('shoes', 'shoes', root, 'id');
    this.evalSplit = 'test';
    this.ks = [1, 10, 50];
    requireDir(root, 'Shoes');
    const caps = readJson<unknown>(join(root, 'relative_captions_shoes.json'), 'Shoes');
    const train = readLines(join(root, 'train_im_names.txt'), 'Shoes');
    const evalNames = readLines(join(root, 'eval_im_names.txt'), 'Shoes');
    const files = indexImagesRecursive(root, (rel) => rel.split('/').some((p) => p.startsWith('womens_')), 5);
    if (files.size === 0) throw new DataError(`Shoes: no images under womens_* folders in ${root}`, 'DWC_DATA_MISSING', root);
    for (const [names, split] of [[train, 'train'], [evalNames, 'test']] as const)
      for (const n of names) {
        if (this.hasImage(n)) continue;
        let file = files.get(n);
        if (!file) {
          file = join(root, n);
          this.missingFiles.push(n);
        }
        this.addImage({ id: n, file, split });
      }
    if (!Array.isArray(caps)) throw new DataError(`Shoes: ${join(root, 'relative_captions_shoes.json')} must be a JSON list`, 'DWC_DATA_FORMAT', 'relative_captions_shoes.json');
    caps.forEach((c: { ImageName?: unknown; ReferenceImageName?: unknown; RelativeCaption?: unknown }, i) => {
      if (typeof c.ImageName !== 'string' || typeof c.ReferenceImageName !== 'string' || typeof c.RelativeCaption !== 'string')
        throw new DataError(`Shoes: relative_captions_shoes.json entry ${i} needs ImageName, ReferenceImageName and RelativeCaption`, 'DWC_DATA_FORMAT', 'relative_captions_shoes.json');
      if (!this.hasImage(c.ImageName) || !this.hasImage(c.ReferenceImageName)) {
        this.skippedCaptions++;
        return;
      }
      const split = this.image(c.ImageName).split;
      this.addQuery({ source: c.ReferenceImageName, target: c.ImageName, text: c.RelativeCaption, split });
    });
    this.setGallery('test', [...new Set(evalNames)]);
  }
}

export function loadShoes(dir: string): ShoesDataset {
  return new ShoesDataset(resolve(dir));
}
