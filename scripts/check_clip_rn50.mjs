// Real-size ModifiedResNet parity, engine side: node scripts/check_clip_rn50.mjs DIR after
// /usr/bin/python3 scripts/check_clip_rn50.py DIR. Prints the embedding's and every visual
// gradient's relative error against the float64 reference (median and worst four) and timings.
import { join } from 'node:path';
import { Clip } from '../lib/index.js';
import { readSafetensors } from '../lib/safetensors.js';
const D = process.argv[2];
const ref = readSafetensors(join(D, 'ref.safetensors')).tensors;
const rel = (a, b) => { let n = 0, d = 0; for (let i = 0; i < b.length; i++) { n += (a[i] - b[i]) ** 2; d += b[i] ** 2; } return Math.sqrt(n) / Math.max(Math.sqrt(d), 1e-6); };
const clip = Clip.load(D);
console.log(JSON.stringify({ arch: { rnWidth: clip.arch.rnWidth, rnLayers: clip.arch.rnLayers, rnHeads: clip.arch.rnHeads, res: clip.arch.resolution, E: clip.arch.embedDim } }));
const px = ref.get('pixel_values').data, ids = ref.get('input_ids').data;
let t0 = performance.now();
const emb = await clip.embedImagesTensor(px);
const tEmb = performance.now() - t0;
t0 = performance.now();
const r = await clip.lossAndGrad(px, ids);
const tGrad = performance.now() - t0;
const g = clip.gradients();
const errs = [];
for (const [k, v] of ref) if (k.startsWith('grad.visual')) errs.push([rel(g.get(k.slice(5)).data, v.data), k]);
errs.sort((a, b) => b[0] - a[0]);
const med = errs[Math.floor(errs.length / 2)][0];
console.log(JSON.stringify({ embedRel: rel(emb, ref.get('image_embeds').data), loss: r.loss, refLoss: ref.get('loss').data[0], nGrads: errs.length, medianGradRel: med, worst: errs.slice(0, 4), embedMs2: tEmb, lossAndGradMs2: tGrad }));
