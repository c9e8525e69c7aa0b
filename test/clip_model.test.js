// The TypeScript CLIP (src/clip/model.ts) over the native model: loading both namings (with the
// architecture read from the shapes), embeddings equal to the PyTorch reference, save in the
// file's own naming, Adam fine-tuning, and errors that name the problem.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Clip, describeClip } from '../lib/index.js';
import { readSafetensors, writeSafetensors } from '../lib/safetensors.js';
import { clipCaseDir, clipCaseMeta, clipCaseWeights, writeClipCase } from './helpers/clip.js';
import { relErr } from './helpers/index.js';
import { relBound } from './helpers/accuracy.js';

const tmp = mkdtempSync(join(tmpdir(), 'dwc-clip-model-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const inputs = (c) => {
  const t = readSafetensors(join(clipCaseDir, c, 'inputs.safetensors')).tensors;
  return { pixels: t.get('pixel_values').data, ids: t.get('input_ids').data };
};
const expected = (c) => readSafetensors(join(clipCaseDir, c, 'expected.safetensors')).tensors;

for (const c of ['vit_openai', 'vit_hf_gelu']) {
  test.serial(`${c}: architecture from the shapes, embeddings equal the reference`, async (t) => {
    const meta = writeClipCase(c, join(tmp, c));
    const clip = c === 'vit_openai' ? Clip.load(join(tmp, c)) : await Clip.open(join(tmp, c));
    const a = meta.arch;
    t.is(clip.naming, meta.naming);
    t.is(clip.resolution, a.resolution);
    t.is(clip.contextLength, a.ctx);
    t.is(clip.embedDim, a.embed);
    t.is(clip.vocabSize, a.vocab);
    t.like(clip.arch, { visionWidth: a.width, visionLayers: a.layers, visionHeads: 1, patchSize: a.patch, grid: a.grid, textWidth: a.text_width,
      textLayers: a.text_layers, textHeads: 1, activation: meta.activation, image: 'vit' });
    const { pixels, ids } = inputs(c);
    const e = expected(c);
    // float64 answer, the bound of docs/ACCURACY.md
    const acc = clipCaseMeta(c).accuracy;
    t.true(relErr(await clip.embedImagesTensor(pixels), e.get('image_embeds').data) <= relBound(acc.image_embeds));
    t.true(relErr(await clip.embedTokenIds(ids), e.get('text_embeds').data) <= relBound(acc.text_embeds));
    // position_ids are kept as non-trainable extras (HF), nothing is ignored
    t.deepEqual(clip.ignored, []);
    t.is(clip.extras.size, meta.tensors.filter((x) => x[2] === 'arange').length);
  });

  test.serial(`${c}: save writes the file's own names, shapes and values`, async (t) => {
    const meta = clipCaseMeta(c);
    const src = clipCaseWeights(meta);
    const clip = Clip.fromTensors(src, { activation: meta.activation });
    const out = join(tmp, `${c}.saved.safetensors`);
    clip.save(out);
    const saved = readSafetensors(out);
    t.deepEqual([...saved.tensors.keys()], [...src.keys()]);
    for (const [n, s] of src) {
      const g = saved.tensors.get(n);
      t.deepEqual(g.shape, s.shape, n);
      t.is(g.dtype, s.dtype, n);
      t.deepEqual(Array.from(g.data, Number), Array.from(s.data, Number), n);
    }
    t.is(saved.metadata.activation, meta.activation);
    // the saved file loads back with its activation from the metadata
    t.is(Clip.load(out).arch.activation, meta.activation);
  });
}

test.serial('activation: config.json of a Hugging Face folder decides; the outputs differ', async (t) => {
  const c = 'vit_hf_gelu';
  writeClipCase(c, join(tmp, 'noconfig'), { config: false });
  const plain = Clip.load(join(tmp, 'noconfig'));
  t.is(plain.arch.activation, 'quick_gelu');
  const { pixels } = inputs(c);
  const e = expected(c).get('image_embeds').data;
  t.true(relErr(await plain.embedImagesTensor(pixels), e) > 1e-3);
  t.is(Clip.load(join(tmp, 'noconfig'), { activation: 'gelu' }).arch.activation, 'gelu');
  writeFileSync(join(tmp, 'noconfig', 'config.json'), JSON.stringify({ vision_config: { hidden_act: 'gelu' }, text_config: { hidden_act: 'quick_gelu' } }));
  t.throws(() => Clip.load(join(tmp, 'noconfig')), { message: /different activations/ });
  writeFileSync(join(tmp, 'noconfig', 'config.json'), JSON.stringify({ text_config: { hidden_act: 'silu' } }));
  t.throws(() => Clip.load(join(tmp, 'noconfig')), { message: /'silu'/ });
});

test.serial('fine-tuning: Adam steps lower the loss on a fixed batch; no arena growth after warm-up', async (t) => {
  const c = 'vit_openai';
  const clip = Clip.fromTensors(clipCaseWeights(clipCaseMeta(c)));
  const { pixels, ids } = inputs(c);
  const before = clip.fileTensors('param');
  const first = await clip.trainStep(pixels, ids, 1e-3);
  t.true(Math.abs(first.loss - clipCaseMeta(c).loss) < 1e-4 * clipCaseMeta(c).loss, 'first step sees the reference loss');
  let last = first;
  const grows = [];
  for (let i = 0; i < 5; i++) {
    last = await clip.trainStep(pixels, ids, { lr: 1e-3 });
    grows.push(clip.stats().arenaGrows);
  }
  t.is(last.step, 6);
  t.is(clip.step, 6);
  t.true(last.loss < 0.5 * first.loss, `loss ${first.loss} -> ${last.loss}`);
  t.is(new Set(grows).size, 1, `arena grew after warm-up: ${grows}`);
  const after = clip.fileTensors('param');
  for (const n of ['visual.conv1.weight', 'transformer.resblocks.1.attn.in_proj_weight', 'logit_scale', 'token_embedding.weight'])
    t.true(relErr(after.get(n).data, before.get(n).data) > 1e-6, `${n} unchanged`);
  t.true(clip.fileTensors('m').get('visual.proj').data.some((x) => x !== 0));
});

test.serial('trace gradients equal lossAndGrad + gradients()', async (t) => {
  const c = 'vit_hf_gelu';
  const meta = clipCaseMeta(c);
  const clip = Clip.fromTensors(clipCaseWeights(meta), { activation: 'gelu' });
  const { pixels, ids } = inputs(c);
  const tr = await clip.trace(pixels, ids);
  const e = expected(c);
  for (const [n, g] of tr.grads) t.true(relErr(g.data, e.get(`grad.${n}`).data) <= relBound(meta.accuracy[`grad.${n}`]), n);
  t.is(tr.step, 0, 'trace does not step');
  t.true(relErr(tr.logitsPerImage, e.get('logits_per_image').data) <= relBound(meta.accuracy.logits_per_image));
});

test.serial('errors name the problem', async (t) => {
  const c = 'vit_openai';
  const meta = clipCaseMeta(c);
  const w = () => clipCaseWeights(meta);
  const missing = w();
  missing.delete('visual.ln_post.bias');
  t.throws(() => Clip.fromTensors(missing), { message: /'visual\.ln_post\.bias'/ });
  const bad = w();
  bad.set('transformer.resblocks.0.mlp.c_fc.weight', { dtype: 'F32', shape: [100, 64], data: new Float32Array(6400) });
  t.throws(() => Clip.fromTensors(bad), { message: /'transformer\.resblocks\.0\.mlp\.c_fc\.weight'.*\[100,64\].*\[256,64\]/ });
  const hf = clipCaseWeights(clipCaseMeta('vit_hf_gelu'));
  hf.delete('text_model.encoder.layers.0.self_attn.v_proj.weight');
  t.throws(() => Clip.fromTensors(hf), { message: /'text_model\.encoder\.layers\.0\.self_attn\.v_proj\.weight'/ });
  const rn = w();
  rn.set('visual.attnpool.positional_embedding', { dtype: 'F32', shape: [50, 64], data: new Float32Array(3200) });
  t.throws(() => Clip.fromTensors(rn), { message: /ModifiedResNet image tower\) but no 'visual\.layer1\.0\.conv1\.weight'/ }); // a ViT file with a stray attnpool tensor
  t.throws(() => Clip.fromTensors(new Map([['foo', { dtype: 'F32', shape: [1], data: new Float32Array(1) }]])), { message: /neither OpenAI/ });
  const nan = w();
  nan.get('visual.proj').data[3] = NaN;
  t.throws(() => Clip.fromTensors(nan), { message: /'visual\.proj'.*non-finite/ });
  t.throws(() => Clip.load(join(tmp, 'no-such-dir')), { message: /does not exist/ });
  writeFileSync(join(tmp, 'x.txt'), '');
  t.throws(() => Clip.load(tmp), { message: /neither model\.safetensors nor open_clip_model\.safetensors/ });

  const clip = Clip.fromTensors(w());
  const { pixels, ids } = inputs(c);
  await t.throwsAsync(() => clip.embedImagesTensor(pixels.subarray(1)), { message: /'pixels'/ });
  await t.throwsAsync(() => clip.embedImagesTensor(new Float64Array(3072)), { message: /'pixels' must be a Float32Array/ });
  await t.throwsAsync(() => clip.embedTokenIds(Int32Array.from(ids).fill(100, 0, 1)), { message: /'ids' holds token id 100/ });
  await t.throwsAsync(() => clip.trainStep(pixels, ids.subarray(16), 1e-3), { message: /5 images.*4 texts/ });
  await t.throwsAsync(() => clip.trainStep(pixels, ids, { lr: 1e-3, momentum: 1 }), { message: /unknown option 'momentum'/ });
  const nanPx = Float32Array.from(pixels);
  nanPx[7] = NaN;
  await t.throwsAsync(() => clip.lossAndGrad(nanPx, ids), { message: /'pixels' holds a non-finite value at index 7/ });
  // one call at a time
  const p = clip.trainStep(pixels, ids, 1e-4);
  await t.throwsAsync(() => clip.embedTokenIds(ids), { code: 'DWC_BUSY' });
  await p;
  t.is(clip.step, 1);
});

test.serial('describeClip prints the inferred architecture', (t) => {
  writeClipCase('vit_openai', join(tmp, 'desc'));
  const s = describeClip(join(tmp, 'desc'));
  t.regex(s, /ViT, width 64, 2 layers, 1 heads, patch 8, grid 4×4, resolution 32/);
  t.regex(s, /context 16, vocabulary 100/);
  t.regex(s, /OpenAI \/ open_clip names, quick_gelu/);
});

test.serial('embedding path (layers share buffers) equals the training path; batches of any size agree', async (t) => {
  // three text and vision layers: the shared output buffers ping-pong over more than two layers
  const w = clipCaseWeights(clipCaseMeta('vit_openai'));
  for (const p of ['visual.transformer.resblocks.', 'transformer.resblocks.'])
    for (const [n, v] of [...w]) if (n.startsWith(`${p}1.`)) w.set(n.replace(`${p}1.`, `${p}2.`), { ...v, data: v.data.map((x) => x * 0.9) });
  const clip = Clip.fromTensors(w);
  t.is(clip.arch.visionLayers, 3);
  t.is(clip.arch.textLayers, 3);
  const { pixels, ids } = inputs('vit_openai');
  const ref = await clip.lossAndGrad(pixels, ids);
  t.true(relErr(await clip.embedImagesTensor(pixels), ref.imageEmbeds) < 1e-6);
  t.true(relErr(await clip.embedTokenIds(ids), ref.textEmbeds) < 1e-6);
  const seen = [];
  t.true(relErr(await clip.embedImagesTensor(pixels, { batchSize: 2, onProgress: (d, n) => seen.push(`${d}/${n}`) }), ref.imageEmbeds) < 1e-5);
  t.deepEqual(seen, ['2/5', '4/5', '5/5']);
  t.true(relErr(await clip.embedTokenIds(ids, { batchSize: 3 }), ref.textEmbeds) < 1e-5);
  await t.throwsAsync(() => clip.embedTokenIds(ids, { batchSize: 0 }), { message: /'batchSize'/ });
});

test('F16 and BF16 weights load (converted to float32)', async (t) => {
  const { toFloat32 } = await import('../lib/safetensors.js');
  const h = toFloat32({ dtype: 'F16', shape: [6], data: Uint16Array.from([0x3c00, 0xc100, 0x7bff, 0x0001, 0x7c00, 0x8000]) });
  t.deepEqual(Array.from(h), [1, -2.5, 65504, 2 ** -24, Infinity, -0]);
  t.deepEqual(Array.from(toFloat32({ dtype: 'BF16', shape: [2], data: Uint16Array.from([0x3f80, 0xc020]) })), [1, -2.5]);
  // the same (bf16-representable) weights as BF16 and as F32 give the same model
  const f32 = clipCaseWeights(clipCaseMeta('vit_openai'));
  const bf16 = new Map();
  for (const [n, v] of f32) {
    if (v.dtype !== 'F32') continue;
    const words = Uint16Array.from(new Uint32Array(v.data.buffer, v.data.byteOffset, v.data.length), (x) => x >>> 16);
    bf16.set(n, { dtype: 'BF16', shape: v.shape, data: words });
    f32.set(n, { ...v, data: new Float32Array(Uint32Array.from(words, (x) => x << 16).buffer) });
  }
  const path = join(tmp, 'bf16.safetensors');
  writeSafetensors(path, bf16);
  const a = Clip.load(path);
  const b = Clip.fromTensors(f32);
  const { ids } = inputs('vit_openai');
  t.deepEqual(await a.embedTokenIds(ids), await b.embedTokenIds(ids));
});
