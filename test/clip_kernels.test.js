// CLIP kernels (native/kernels/transformer.cpp, clip_loss.cpp): finite differences for every
// backward op, PyTorch fixtures (scripts/fixtures/gen_clip.py), and bad arguments named.
import test from 'ava';
import { existsSync } from 'node:fs';
import { runOp, tensor } from '../lib/index.js';
import { freshSeed, gradcheck, loadFixtureCases, makeRng, randArray, relErr, throwsNaming } from './helpers/index.js';
import { assertOpCase } from './helpers/accuracy.js';

const seed = freshSeed();
const rng = makeRng(seed);
const r = (shape, s = 1) => [randArray(shape, rng, s), shape];

test('layernorm: finite differences', (t) => {
  gradcheck(t, {
    forward: 'layernorm_forward',
    backward: 'layernorm_backward',
    inputs: { x: r([2, 3, 10]), gamma: r([10]), beta: r([10]) },
    outputs: ['y'],
    backwardInputs: (ins, outs, dys) => ({ x: ins.x, gamma: ins.gamma, mean: outs.mean, rstd: outs.rstd, dy: dys.y }),
    grads: { x: 'dx', gamma: 'dgamma', beta: 'dbeta' },
    seed,
  });
});

for (const act of ['quick_gelu', 'gelu']) {
  test(`${act}: finite differences`, (t) => {
    gradcheck(t, {
      forward: `${act}_forward`,
      backward: `${act}_backward`,
      inputs: { x: r([3, 17], 2) },
      outputs: ['y'],
      backwardInputs: (ins, outs, dys) => ({ x: ins.x, dy: dys.y }),
      grads: { x: 'dx' },
      seed,
    });
  });
}

for (const [name, attrs, mask] of [
  ['plain', { heads: 2 }, false],
  ['causal', { heads: 2, causal: true }, false],
  ['key padding', { heads: 3 }, true],
]) {
  test(`mha (${name}): finite differences`, (t) => {
    const B = 2, T = 5, w = 6;
    const inputs = { x: r([B, T, w]), in_w: r([3 * w, w], 0.5), in_b: r([3 * w], 0.1), out_w: r([w, w], 0.5), out_b: r([w], 0.1) };
    if (mask) inputs.key_padding_mask = [Int32Array.from([0, 0, 0, 1, 1, 0, 1, 0, 0, 0]), [B, T], 'int32'];
    gradcheck(t, {
      forward: 'mha_forward',
      backward: 'mha_backward',
      inputs,
      attrs,
      backwardAttrs: { heads: attrs.heads },
      outputs: ['y'],
      backwardInputs: (ins, outs, dys) => ({ x: ins.x, in_w: ins.in_w, out_w: ins.out_w, qkv: outs.qkv, att: outs.att, ctx: outs.ctx, dy: dys.y }),
      grads: { x: 'dx', in_w: 'd_in_w', in_b: 'd_in_b', out_w: 'd_out_w', out_b: 'd_out_b' },
      seed,
    });
  });
}

test('mha: causal and padded keys get exactly zero attention', (t) => {
  const B = 2, T = 4, w = 4;
  const kp = tensor(Int32Array.from([0, 0, 1, 0, 0, 0, 0, 0]), [B, T], 'int32');
  const o = runOp(
    'mha_forward',
    { x: tensor(randArray([B, T, w], rng), [B, T, w]), in_w: tensor(randArray([3 * w, w], rng), [3 * w, w]), in_b: tensor(undefined, [3 * w]),
      out_w: tensor(randArray([w, w], rng), [w, w]), out_b: tensor(undefined, [w]), key_padding_mask: kp },
    { heads: 2, causal: true },
  );
  const att = o.att.toArray();
  for (let b = 0; b < B; b++)
    for (let h = 0; h < 2; h++)
      for (let i = 0; i < T; i++) {
        let s = 0;
        for (let j = 0; j < T; j++) {
          const a = att[((b * 2 + h) * T + i) * T + j];
          s += a;
          if (j > i || (b === 0 && j === 2)) t.is(a, 0, `att[${b},${h},${i},${j}]`);
        }
        t.true(Math.abs(s - 1) < 1e-5, `row sums to 1: ${s}`);
      }
});

// Packed sequences of different lengths (seq_lens; the CLIP text tower runs each text as its
// first EOT + 1 tokens) and the one-query attention of a tower's last block at inference.
const mhaWeights = (w) => ({ in_w: r([3 * w, w], 0.5), in_b: r([3 * w], 0.1), out_w: r([w, w], 0.5), out_b: r([w], 0.1) });
const toTensors = (o) => Object.fromEntries(Object.entries(o).map(([k, [d, s, dt]]) => [k, tensor(d, s, dt ?? 'float32')]));

for (const causal of [true, false]) {
  test(`mha (packed seq_lens, ${causal ? 'causal' : 'plain'}): finite differences`, (t) => {
    const lens = [4, 1, 3], w = 6;
    const rows = lens.reduce((a, b) => a + b, 0);
    gradcheck(t, {
      forward: 'mha_forward',
      backward: 'mha_backward',
      inputs: { x: r([1, rows, w]), ...mhaWeights(w), seq_lens: [Int32Array.from(lens), [lens.length], 'int32'] },
      attrs: { heads: 2, causal },
      backwardAttrs: { heads: 2 },
      outputs: ['y'],
      backwardInputs: (ins, outs, dys) => ({ x: ins.x, in_w: ins.in_w, out_w: ins.out_w, qkv: outs.qkv, att: outs.att, ctx: outs.ctx, dy: dys.y, seq_lens: ins.seq_lens }),
      grads: { x: 'dx', in_w: 'd_in_w', in_b: 'd_in_b', out_w: 'd_out_w', out_b: 'd_out_b' },
      seed,
    });
  });
}

test('mha packed: each sequence equals that sequence run alone; causal: the first L rows of the padded batch', (t) => {
  const lens = [5, 2, 7, 1], w = 8, H = 2, T = 7;
  const rows = lens.reduce((a, b) => a + b, 0);
  const W = toTensors(mhaWeights(w));
  const [xd] = r([1, rows, w]);
  const packed = runOp('mha_forward', { x: tensor(xd, [1, rows, w]), ...W, seq_lens: tensor(Int32Array.from(lens), [lens.length], 'int32') }, { heads: H, causal: true });
  t.deepEqual(packed.att.shape, [H * lens.reduce((a, l) => a + l * l, 0)]);
  const y = packed.y.toArray(), att = packed.att.toArray();
  // the same texts padded to T with arbitrary rows after their ends
  const pad = new Float32Array(lens.length * T * w).map(() => rng.normal());
  let r0 = 0, a0 = 0;
  for (const [b, L] of lens.entries()) {
    pad.set(xd.subarray(r0 * w, (r0 + L) * w), b * T * w);
    const alone = runOp('mha_forward', { x: tensor(xd.slice(r0 * w, (r0 + L) * w), [1, L, w]), ...W }, { heads: H, causal: true });
    t.true(relErr(y.subarray(r0 * w, (r0 + L) * w), alone.y.toArray()) < 1e-6, `sequence ${b}: y`);
    t.true(relErr(att.subarray(a0, a0 + H * L * L), alone.att.toArray()) < 1e-6, `sequence ${b}: att`);
    r0 += L;
    a0 += H * L * L;
  }
  const full = runOp('mha_forward', { x: tensor(pad, [lens.length, T, w]), ...W }, { heads: H, causal: true }).y.toArray();
  r0 = 0;
  for (const [b, L] of lens.entries()) {
    t.true(relErr(y.subarray(r0 * w, (r0 + L) * w), full.subarray(b * T * w, (b * T + L) * w)) < 1e-5, `sequence ${b}: padded batch`);
    r0 += L;
  }
});

for (const packed of [false, true]) {
  for (const causal of [false, true]) {
    test(`mha_forward_query (${packed ? 'packed' : 'uniform'}, ${causal ? 'causal' : 'plain'}) equals the query rows of mha_forward`, (t) => {
      const w = 12, H = 3, B = 3, T = 6;
      const lens = packed ? [6, 2, 4] : [T, T, T];
      const rows = lens.reduce((a, b) => a + b, 0);
      const qpos = packed ? [5, 0, 2] : [0, 3, 5];
      const W = toTensors(mhaWeights(w));
      const [xd] = r([packed ? 1 : B, packed ? rows : T, w]);
      const x = tensor(xd, packed ? [1, rows, w] : [B, T, w]);
      const sl = packed ? { seq_lens: tensor(Int32Array.from(lens), [B], 'int32') } : {};
      const y = runOp('mha_forward', { x, ...W, ...sl }, { heads: H, causal }).y.toArray();
      const q = runOp('mha_forward_query', { x, ...W, ...sl, query_pos: tensor(Int32Array.from(qpos), [B], 'int32') }, { heads: H, causal });
      t.deepEqual(q.y.shape, [B, w]);
      const yq = q.y.toArray();
      let r0 = 0;
      for (let b = 0; b < B; b++) {
        const row = r0 + qpos[b];
        t.true(relErr(yq.subarray(b * w, (b + 1) * w), y.subarray(row * w, (row + 1) * w)) < 1e-5, `sequence ${b}`);
        r0 += lens[b];
      }
    });
  }
}

test('mha packed / query: bad seq_lens and query_pos name the argument', (t) => {
  const w = 4;
  const W = toTensors(mhaWeights(w));
  const x = tensor(undefined, [1, 5, w]);
  const sl = (a) => tensor(Int32Array.from(a), [a.length], 'int32');
  t.notThrows(() => runOp('mha_forward', { x, ...W, seq_lens: sl([2, 3]) }, { heads: 2 }));
  throwsNaming(t, () => runOp('mha_forward', { x, ...W, seq_lens: sl([2, 2]) }, { heads: 2 }), 'seq_lens', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('mha_forward', { x, ...W, seq_lens: sl([5, 0]) }, { heads: 2 }), 'seq_lens', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('mha_forward', { x: tensor(undefined, [2, 5, w]), ...W, seq_lens: sl([5, 5]) }, { heads: 2 }), 'x', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('mha_forward_query', { x, ...W, seq_lens: sl([2, 3]), query_pos: sl([1, 3]) }, { heads: 2 }), 'query_pos', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('mha_forward_query', { x, ...W, seq_lens: sl([2, 3]), query_pos: sl([1]) }, { heads: 2 }), 'query_pos', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('mha_forward_query', { x, ...W, seq_lens: sl([2, 3]) }, { heads: 2 }), 'query_pos', 'DWC_BAD_ARGUMENT');
});

test('patch embedding: finite differences', (t) => {
  gradcheck(t, {
    forward: 'patch_embed_forward',
    backward: 'patch_embed_backward',
    inputs: { x: r([2, 3, 6, 6]), W: r([4, 3, 3, 3]), class_embedding: r([4]), positional_embedding: r([5, 4]) },
    outputs: ['y'],
    backwardInputs: (ins, outs, dys) => ({ x: ins.x, W: ins.W, dy: dys.y }),
    grads: { x: 'dx', W: 'dW', class_embedding: 'dclass_embedding', positional_embedding: 'dpositional_embedding' },
    seed,
  });
});

test('clip loss: finite differences', (t) => {
  gradcheck(t, {
    forward: 'clip_loss_forward',
    backward: 'clip_loss_backward',
    inputs: { image_embeds: r([4, 6]), text_embeds: r([4, 6]), logit_scale: [Float32Array.from([Math.log(3)]), [1]] },
    outputs: ['loss'],
    backwardInputs: (ins, outs, dys) => ({
      image_norm: outs.image_norm, text_norm: outs.text_norm, norms_image: outs.norms_image, norms_text: outs.norms_text,
      logits_per_image: outs.logits_per_image, lse_rows: outs.lse_rows, lse_cols: outs.lse_cols, logit_scale: ins.logit_scale, dloss: dys.loss,
    }),
    grads: { image_embeds: 'd_image_embeds', text_embeds: 'd_text_embeds', logit_scale: 'd_logit_scale' },
    seed,
  });
});

// ---- PyTorch fixtures ----
const fixture = new URL('./fixtures/clip/kernels.safetensors', import.meta.url).pathname;
test('clip kernel fixtures exist', (t) => {
  t.true(existsSync(fixture), `missing ${fixture}: run /usr/bin/python3 scripts/fixtures/gen_clip.py`);
});
if (existsSync(fixture)) {
  for (const c of loadFixtureCases(fixture)) {
    test(`pytorch parity: ${c.name} (${c.op})`, (t) => {
      assertOpCase(t, c, runOp(c.op, c.inputs, c.attrs)); // float64 answer, docs/ACCURACY.md rule
    });
  }
}

// ---- bad arguments ----
test('bad arguments name the argument', (t) => {
  const x = tensor(undefined, [2, 3, 8]);
  throwsNaming(t, () => runOp('layernorm_forward', { x, gamma: tensor(undefined, [7]), beta: tensor(undefined, [8]) }), 'gamma', 'DWC_BAD_ARGUMENT');
  const w = 8;
  const mha = (over, attrs = { heads: 2 }) =>
    runOp('mha_forward', { x, in_w: tensor(undefined, [3 * w, w]), in_b: tensor(undefined, [3 * w]), out_w: tensor(undefined, [w, w]), out_b: tensor(undefined, [w]), ...over }, attrs);
  throwsNaming(t, () => mha({ in_w: tensor(undefined, [w, w]) }), 'in_w', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => mha({ out_b: tensor(undefined, [3]) }), 'out_b', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => mha({}, { heads: 3 }), 'heads', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => mha({ key_padding_mask: tensor(undefined, [2, 2], 'int32') }), 'key_padding_mask', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => mha({ key_padding_mask: tensor(undefined, [2, 3]) }), 'key_padding_mask', 'DWC_BAD_ARGUMENT');
  const px = tensor(undefined, [1, 3, 10, 10]);
  const pe = (over) =>
    runOp('patch_embed_forward', { x: px, W: tensor(undefined, [4, 3, 5, 5]), class_embedding: tensor(undefined, [4]), positional_embedding: tensor(undefined, [5, 4]), ...over });
  t.notThrows(() => pe({}));
  throwsNaming(t, () => pe({ W: tensor(undefined, [4, 3, 3, 3]), positional_embedding: tensor(undefined, [10, 4]) }), 'x', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => pe({ positional_embedding: tensor(undefined, [4, 4]) }), 'positional_embedding', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => pe({ W: tensor(undefined, [4, 1, 5, 5]) }), 'W', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('clip_loss_forward', { image_embeds: tensor(undefined, [2, 4]), text_embeds: tensor(undefined, [3, 4]), logit_scale: tensor(undefined, [1]) }), 'text_embeds', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('quick_gelu_backward', { x: tensor(undefined, [3]), dy: tensor(undefined, [4]) }), 'dy', 'DWC_BAD_ARGUMENT');
});
