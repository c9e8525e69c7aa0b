// Library example for the search service: train a tiny model on the synthetic benchmark, index its
// gallery in LanceDB, start the HTTP server on a free port, ask it one query, and stop.
// Run from the repository after `npm install`:  node examples/serve.mjs
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { train, generateSynthetic, Searcher, GalleryIndex, createServer } from '../lib/index.js';

const work = mkdtempSync(join(tmpdir(), 'dwc-serve-example-'));
const synth = await generateSynthetic({ out: join(work, 'synth'), train: 96, test: 32, size: 32, seed: 1, noise: 0 });
const config = train.resolveConfig(undefined, {
  dataset: 'generic',
  data: synth.out,
  out: join(work, 'run'),
  dims: { D: 32, C: 32, H: 4, W: 4, E: 16, Dc: 32, imageSize: 32 },
  epochs: 1,
  batchSize: 16,
  report: false,
});
const { lastCheckpoint } = await train.train({ config });

// 1. the gallery index: embeds every image once; run it again and only changes are embedded
const gallery = join(synth.out, 'images');
const searcher = await Searcher.open(lastCheckpoint);
const { index, stats } = await GalleryIndex.build({
  db: join(work, 'gallery.lance'), // or an object-storage URI such as s3://bucket/gallery.lance
  gallery,
  checkpoint: lastCheckpoint,
  embed: (files) => searcher.embedImages(files),
  onProgress: (done, total) => done === total && console.log(`indexed ${total} images`),
});
console.log(`index: ${stats.rows} rows, ${stats.ann ? 'ANN' : 'exact'} search`);

// 2. the server (fastify): createServer returns it; listen on 127.0.0.1, any free port
const app = await createServer({ searcher, index, logLevel: 'warn' });
await app.listen({ host: '127.0.0.1', port: 0 });
const url = `http://127.0.0.1:${app.server.address().port}`;
console.log(`serving on ${url}`);

// 3. one query: a gallery image as the reference, a modification text
const reference = readdirSync(gallery).sort()[0];
const res = await fetch(`${url}/search`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ image: reference, text: 'make the circle red', k: 5 }),
});
const answer = await res.json();
console.log(`w (image share): ${JSON.stringify(answer.w)}, ${answer.took_ms} ms`);
for (const r of answer.results) console.log(`${r.rank}. ${r.path}  ${r.score.toFixed(3)}  ${url}${r.url}`);

await app.close(); // also closes the batcher; the searcher and index we opened are ours to close
index.close();
searcher.dispose();
