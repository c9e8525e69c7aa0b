// A tiny trained checkpoint and its gallery, for the search-service tests (issue 16): the
// synthetic benchmark at 32×32 with tiny dims, one short training run (as test/e2e.test.js).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSynthetic, train as T } from '../../lib/index.js';

export const tmp = (p = 'dwc-serve-') => mkdtempSync(join(tmpdir(), p));

/** { checkpoint, gallery, data, texts } — texts are training modifications the vocabulary knows. */
export async function tinyCheckpoint({ train = 64, test = 32, epochs = 1 } = {}) {
  const root = tmp();
  const s = await generateSynthetic({ out: join(root, 'synth'), train, test, size: 32, seed: 3, noise: 0 });
  const cfg = T.resolveConfig(undefined, {
    dataset: 'generic',
    data: s.out,
    out: join(root, 'run'),
    dims: { D: 16, C: 16, H: 4, W: 4, E: 16, Dc: 16, imageSize: 32 },
    epochs,
    batchSize: 16,
    lr: 1e-3,
    evalBatchSize: 64,
    report: false,
  });
  const r = await T.train({ config: cfg });
  return { root, checkpoint: r.lastCheckpoint, data: s.out, gallery: join(s.out, 'images') };
}
