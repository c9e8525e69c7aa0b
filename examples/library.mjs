// Library example: train a (tiny) DWC model on the synthetic benchmark, then search with it.
// Run from the repository after `npm install`:  node examples/library.mjs
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { train, Searcher } from '../lib/index.js';

const out = join(tmpdir(), 'dwc-example-run');
const config = train.resolveConfig(undefined, {
  out,
  epochs: 1,
  limitTrain: 256, // a quick run: the first 256 training queries
  synth: { seed: 1, noise: 0, trainQueries: 400, testQueries: 100 },
  report: false,
});

const result = await train.train({
  config,
  callbacks: {
    onStep: (s) => s.step % 4 === 0 && console.log(`step ${s.step}: loss ${s.loss.toFixed(3)}`),
    onEval: (rec) => console.log(`epoch ${rec.epoch}: R@1 ${rec.recall['1'].toFixed(1)}%`),
  },
});
console.log(`checkpoint: ${result.bestCheckpoint}`);

// Search the synthetic gallery with the trained model.
const searcher = await Searcher.open(join(out, 'last.safetensors'));
const gallery = join(train.syntheticDir(config), 'images');
const { readdirSync } = await import('node:fs');
const first = readdirSync(gallery).sort()[0];
const hits = await searcher.search({ image: join(gallery, first), text: 'make the circle red', gallery, k: 5 });
console.log(`w (image weight): ${JSON.stringify(hits.w)}`);
for (const h of hits.results) console.log(`${h.rank}. ${h.path}  ${h.score.toFixed(3)}`);
searcher.dispose();
