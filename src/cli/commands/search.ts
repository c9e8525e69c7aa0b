// `dwc-native search --checkpoint … --gallery DIR --image q.jpg --text "…" [-k 10] [--preview out.png]`
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { DataError } from '../../data/errors.js';
import { checkImagesReadable, galleryCachePath, galleryHash, listGalleryImages, readGalleryCache } from '../../search/gallery.js';
import { checkKnownWords, Searcher, writePreview } from '../../search/searcher.js';
import { Progress } from '../progress.js';
import { int, PRECISION_HELP } from '../options.js';
import { usePrecision } from '../../precision.js';
import { CLIP_OPTION_HELP, clipGalleryKey } from '../../search/clip_inputs.js';

export function register(program: Command): void {
  program
    .command('search')
    .description('rank a folder of images for a query (reference image + modification text)')
    .requiredOption('--checkpoint <file>', 'checkpoint written by train')
    .requiredOption('--gallery <dir>', 'folder of images to search (embedded once, cached next to the checkpoint)')
    .requiredOption('--image <file>', 'reference image of the query')
    .requiredOption('--text <text>', 'modification text')
    .option('-k, --k <n>', 'results to return', int, 10)
    .option('--preview <png>', 'draw the query and its results as a PNG strip')
    .option('--preset <name>', 'refuse a checkpoint of another preset')
    .option('--device <dev>', 'cpu | cuda | cuda:N')
    .option('--precision <p>', PRECISION_HELP)
    .option('--clip <dir>', CLIP_OPTION_HELP)
    .option('--json', 'one JSON object on stdout')
    .action(async (o: { checkpoint: string; gallery: string; image: string; text: string; k: number; preview?: string; preset?: string; device?: string; json?: boolean; precision?: string; clip?: string }) => {
      usePrecision(o.precision, o.device); // the gallery's and the query's embeddings at this precision
      const p = new Progress({ json: !!o.json });
      if (!(o.k >= 1)) throw new DataError(`'-k' must be ≥ 1, got ${o.k}`, 'DWC_BAD_ARGUMENT', 'k');
      // Everything that can be checked without the weights is checked first.
      const info = Searcher.inspect(o.checkpoint, o.preset);
      const clip = Searcher.inspectClip(info, o.clip); // a checkpoint on CLIP features: its CLIP (recorded path or --clip)
      checkKnownWords(info.vocab!, o.text);
      if (!existsSync(o.image)) throw new DataError(`query image ${o.image} does not exist`, 'DWC_DATA_MISSING', o.image);
      await checkImagesReadable([o.image]);
      const files = listGalleryImages(o.gallery);
      if (!readGalleryCache(galleryCachePath(o.checkpoint, o.gallery), galleryHash(resolve(o.gallery), files, o.checkpoint, clipGalleryKey(clip)))) await checkImagesReadable(files);
      const s = await Searcher.open(o.checkpoint, { preset: o.preset, device: o.device, ...(o.clip ? { clip: o.clip } : {}) });
      try {
        const r = await s.search({ image: o.image, text: o.text, gallery: o.gallery, k: o.k, onProgress: (d, t) => p.bar('embedding gallery', d, t) });
        p.endBar();
        if (o.preview) await writePreview(r, o.preview);
        p.event({ event: 'search', ...r, preview: o.preview ?? null });
        const w = [r.w.global !== undefined ? `w_G ${r.w.global.toFixed(3)}` : '', r.w.local !== undefined ? `w_L ${r.w.local.toFixed(3)}` : ''].filter(Boolean).join(', ');
        p.print(`query: ${o.image} + "${o.text}"${w ? `  (${w}; 1 = image decides, 0 = text)` : ''}`);
        p.print(`gallery: ${r.gallery.images} images${r.gallery.fromCache ? ' (cached)' : ''}`);
        for (const h of r.results) p.print(`${String(h.rank).padStart(3)}  ${h.score.toFixed(4)}  ${h.path}`);
        if (o.preview) p.print(`preview: ${o.preview}`);
      } finally {
        s.dispose();
      }
    });
}
