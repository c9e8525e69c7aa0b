// Issue #12 item 1: after warm-up, no oneDNN primitive is created inside a CLIP step, whatever
// the batch size or the texts' lengths (the packed text tower has one row count per total text
// length; the fused-epilogue matmul primitives take the row count as a runtime dimension,
// docs/PERFORMANCE.md "Fused Linear epilogues"). Also: the outputs of a batch do not depend on the
// batch it ran in (the same primitive serves every row count).
import test from 'ava';
import { Clip, addon } from '../lib/index.js';
import { expectedShapes } from '../lib/clip/weights.js';
import { freshSeed, makeRng, relErr } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed).uniform;
const a = addon();
const hasDnnl = a.info().onednn !== null;

const P = { embedDim: 32, resolution: 32, patchSize: 8, grid: 4, visionWidth: 64, visionLayers: 2, visionHeads: 2, contextLength: 16,
  vocabSize: 120, textWidth: 64, textLayers: 2, textHeads: 2 };
function randomClip() {
  const arch = { image: 'vit', naming: 'openai', activation: 'quick_gelu', ...P };
  const tensors = new Map();
  for (const [name, shape] of expectedShapes(arch)) {
    const n = shape.reduce((x, y) => x * y, 1);
    const d = new Float32Array(n);
    const lnW = /ln_\w+\.weight$|ln_final\.weight$/.test(name);
    const s = shape.length === 2 ? Math.sqrt(3 / shape[shape.length - 1]) : 0.02;
    for (let i = 0; i < n; i++) d[i] = name === 'logit_scale' ? Math.log(1 / 0.07) : lnW ? 1 + 0.1 * (rng() * 2 - 1) : s * (rng() * 2 - 1);
    tensors.set(name, { dtype: 'F32', shape, data: d });
  }
  return Clip.fromTensors(tensors);
}
const R = P.resolution, L = P.contextLength;
const pixels = (n) => Float32Array.from({ length: n * 3 * R * R }, () => rng() * 2 - 1);
// texts of the given lengths (SOT … EOT, zero-padded): the EOT is the largest id
function ids(lens) {
  const x = new Int32Array(lens.length * L);
  lens.forEach((len, i) => {
    x[i * L] = P.vocabSize - 2;
    for (let t = 1; t < len - 1; t++) x[i * L + t] = 1 + Math.floor(rng() * (P.vocabSize - 4));
    x[i * L + len - 1] = P.vocabSize - 1;
  });
  return x;
}
const randLens = (n) => Array.from({ length: n }, () => 2 + Math.floor(rng() * (L - 1)));
const created = () => {
  const s = a.kernelStats();
  return { matmul: s.matmulPrimitivesCreated, conv: s.primitivesCreated };
};

test.serial('no primitive is created after warm-up: embeddings and fine-tuning steps over batch sizes and text lengths', async (t) => {
  const clip = randomClip();
  const before = created();
  // warm-up: one call of each kind
  await clip.embedImagesTensor(pixels(3));
  await clip.embedTokenIds(ids([4, 9, 2]));
  await clip.trainStep(pixels(3), ids([5, 16, 3]), 1e-5);
  const warm = created();
  if (hasDnnl) t.true(warm.matmul > before.matmul, 'the warm-up creates the matmul primitives (the counter counts)');
  else t.is(warm.matmul, 0, 'a CBLAS-only build creates no matmul primitive');
  const seen = new Set();
  for (const n of [1, 2, 5, 7, 4]) {
    await clip.embedImagesTensor(pixels(n));
    const lens = randLens(n);
    seen.add(lens.reduce((x, y) => x + y, 0));
    await clip.embedTokenIds(ids(lens));
    await clip.trainStep(pixels(n), ids(randLens(n)), 1e-5);
    await clip.lossAndGrad(pixels(n), ids(randLens(n)));
  }
  t.true(seen.size >= 3, `several total text lengths were run (${[...seen]})`);
  t.deepEqual(created(), warm, `nothing created after warm-up; seed ${seed}`);
});

test.serial('a text or image embeds the same alone and inside batches of other sizes and lengths', async (t) => {
  const clip = randomClip();
  const px = pixels(6);
  const lens = [3, 16, 2, 9, 11, 5];
  const tk = ids(lens);
  const E = P.embedDim;
  const allImg = await clip.embedImagesTensor(px);
  const allTxt = await clip.embedTokenIds(tk);
  for (const i of [0, 1, 4]) {
    const img = await clip.embedImagesTensor(px.subarray(i * 3 * R * R, (i + 1) * 3 * R * R));
    const txt = await clip.embedTokenIds(tk.subarray(i * L, (i + 1) * L));
    t.true(relErr(img, allImg.subarray(i * E, (i + 1) * E)) < 1e-5, `image ${i}; seed ${seed}`);
    t.true(relErr(txt, allTxt.subarray(i * E, (i + 1) * E)) < 1e-5, `text ${i} (length ${lens[i]}); seed ${seed}`);
  }
});
