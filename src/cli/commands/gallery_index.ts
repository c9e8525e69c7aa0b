// `dwc-native index --checkpoint C --gallery DIR --db DIR [--rebuild] [--batch-size N] [--ann TYPE] [--json]`
// Embeds a gallery folder into a LanceDB index (docs/SERVE.md); incremental and resumable.
import type { Command } from 'commander';
import { ANN_TYPES, GalleryIndex, type AnnType } from '../../search/index_db.js';
import { Searcher } from '../../search/searcher.js';
import { Progress } from '../progress.js';
import { int } from '../options.js';
import { CLIP_OPTION_HELP } from '../../search/clip_inputs.js';

export function register(program: Command): void {
  program
    .command('index')
    .description('embed a gallery folder into a LanceDB index for `serve` (incremental: new images added, removed dropped, changed re-embedded)')
    .requiredOption('--checkpoint <file>', 'checkpoint written by train (its image tower embeds the gallery)')
    .requiredOption('--gallery <dir>', 'folder of images (recursive)')
    .requiredOption('--db <dir|uri>', 'LanceDB folder or URI (s3://…, gs://…, az://…) of the index')
    .option('--rebuild', 'drop the existing index first (needed to switch checkpoints)')
    .option('--batch-size <n>', 'images per embed call', int, 64)
    .option('--ann-threshold <n>', 'rows from which an ANN index is built (below: exact search)', int, 50_000)
    .option('--ann <type>', `ANN index type above the threshold: ${ANN_TYPES.join(' | ')} (default ivf_flat; docs/SERVE.md)`)
    .option('--device <dev>', 'cpu | cuda | cuda:N')
    .option('--clip <dir>', CLIP_OPTION_HELP)
    .option('--json', 'JSON lines on stdout')
    .action(async (o: { checkpoint: string; gallery: string; db: string; rebuild?: boolean; batchSize: number; annThreshold: number; ann?: string; device?: string; clip?: string; json?: boolean }) => {
      const p = new Progress({ json: !!o.json });
      if (!(o.batchSize >= 1)) throw new Error(`'--batch-size' must be ≥ 1, got ${o.batchSize}`);
      if (o.ann !== undefined && !ANN_TYPES.includes(o.ann as AnnType)) throw new Error(`'--ann' must be one of ${ANN_TYPES.join(', ')}, got '${o.ann}'`);
      Searcher.inspectClip(Searcher.inspect(o.checkpoint), o.clip); // header checks (and the CLIP's folder) before the weights load
      const s = await Searcher.open(o.checkpoint, { device: o.device, ...(o.clip ? { clip: o.clip } : {}) });
      const t0 = performance.now();
      try {
        const { index, stats } = await GalleryIndex.build({
          db: o.db,
          gallery: o.gallery,
          checkpoint: o.checkpoint,
          checkpointId: await s.identity(),
          rebuild: o.rebuild,
          batchSize: o.batchSize,
          ann: { threshold: o.annThreshold, ...(o.ann !== undefined ? { type: o.ann as AnnType } : {}) },
          embed: (files) => s.embedImages(files),
          onProgress: (d, t) => {
            const sec = (performance.now() - t0) / 1000;
            p.bar('embedding gallery', d, t, `${(d / Math.max(sec, 1e-3)).toFixed(1)} img/s`);
            p.event({ event: 'progress', done: d, total: t });
          },
        });
        p.endBar();
        const sec = (performance.now() - t0) / 1000;
        p.event({ event: 'index', db: o.db, ...stats, seconds: sec, dim: index.dim, checkpointId: index.meta.checkpointId });
        p.print(`index ${o.db}: ${stats.rows} images (${stats.added} added, ${stats.changed} re-embedded, ${stats.removed} removed, ${stats.unchanged} unchanged) in ${sec.toFixed(1)} s; search: ${stats.ann ? 'ANN index + exact scores' : 'exact'}`);
        index.close();
      } finally {
        s.dispose();
      }
    });
}
