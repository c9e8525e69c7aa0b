// Self-supervised adaptive weighting (PL4CIR-SPEC.md §3, this engine's formulation):
// w* = σ((cos(e_ref, e_tgt) − cos(e_txt, e_tgt))/τ_w), L_w = λ_w · mean BCE(w, w*), w* without
// gradient. Kernels against PyTorch fixtures and finite differences; the model's gradients with
// L_w against finite differences (both streams); w* from the pooled encoder carries no gradient;
// options, step statistics, eval-mode w*.
import test from 'ava';
import { join } from 'node:path';
import { runOp, tensor } from '../lib/index.js';
import { DwcModel } from '../lib/model.js';
import { nativeConfig } from '../lib/train/native_model.js';
import { modelOptions, resolveConfig } from '../lib/train/config.js';
import { flagsToConfig } from '../lib/cli/commands/train.js';
import { gradcheck, makeRng, freshSeed, randArray, relErr, loadFixtureCases, throwsNaming, unitRows as unitRowsOf } from './helpers/index.js';
import { assertOpCase } from './helpers/accuracy.js';

const seed = freshSeed();
const rng = makeRng(seed);
const fixtures = loadFixtureCases(join(new URL('./fixtures/kernels/', import.meta.url).pathname, 'adaptive_weight.safetensors'));

const sigmoid = (x) => 1 / (1 + Math.exp(-x));
const probs = (n, spread = 2) => Float32Array.from({ length: n }, () => sigmoid((rng.uniform() * 2 - 1) * spread));

test('adaptive-weighting kernels match their PyTorch fixtures (w*, L_w, dL_w/dw)', (t) => {
  const ops = new Set();
  for (const c of fixtures) {
    // float64 answer; the rule of docs/ACCURACY.md with a stricter floor (1e-5: short float chains)
    assertOpCase(t, c, runOp(c.op, c.inputs, c.attrs), { floor: 1e-5 });
    ops.add(c.op);
  }
  for (const op of ['adaptive_weight_target', 'adaptive_weight_loss_forward', 'adaptive_weight_loss_backward']) t.true(ops.has(op), `no fixture for ${op}`);
});

test('w* = σ((s_I − s_T)/τ_w): an image closer to the target than the text gives w* > 1/2; no gradient output for w*', (t) => {
  const B = 3, Dc = 4;
  const tgt = Float32Array.from([1, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0]);
  const ref = Float32Array.from([2, 0.1, 0, 0, 0, 0, 1, 0, 1, 1, 0, 0]); // row 0: ref ≈ target; row 1: ref ⟂ target; row 2: equal
  const txt = Float32Array.from([0, 1, 0, 0, 0, 3, 0, 0, 2, 2, 0, 0]); // row 1: text = target direction; row 2: equal
  const r = runOp('adaptive_weight_target', { e_ref: tensor(ref, [B, Dc]), e_txt: tensor(txt, [B, Dc]), e_tgt: tensor(tgt, [B, Dc]) }, { tau_w: 0.1 });
  const w = r.w_star.toArray();
  t.true(w[0] > 0.99, `image-dominant: ${w[0]}`);
  t.true(w[1] < 0.01, `text-dominant: ${w[1]}`);
  t.true(Math.abs(w[2] - 0.5) < 1e-6, `tie: ${w[2]}`);
  const cos0 = 2 / Math.hypot(2, 0.1);
  t.true(Math.abs(r.s_img.toArray()[0] - cos0) < 1e-6);
  t.true(Math.abs(w[0] - sigmoid((cos0 - 0) / 0.1)) < 1e-6);
  // the backward op returns dw only: nothing flows to w*
  const bw = runOp('adaptive_weight_loss_backward', { w: tensor(probs(B), [B]), w_star: r.w_star });
  t.deepEqual(Object.keys(bw), ['dw']);
});

test('dL_w/dw matches finite differences (λ, dL, saturated and balanced targets)', (t) => {
  for (const [lambda, B] of [[0.1, 8], [0.7, 5], [2, 6]]) {
    const w = probs(B);
    const ws = probs(B, 6);
    ws[0] = 0;
    ws[1] = 1;
    ws[2] = 0.5;
    gradcheck(t, {
      forward: 'adaptive_weight_loss_forward',
      backward: 'adaptive_weight_loss_backward',
      inputs: { w: [w, [B]], w_star: [ws, [B]] },
      attrs: { lambda },
      outputs: ['loss'],
      backwardInputs: (ins, outs, dys) => ({ w: ins.w, w_star: ins.w_star, dL: dys.loss }),
      grads: { w: 'dw' },
      seed,
    });
    // the option dL scales dw
    const a = runOp('adaptive_weight_loss_backward', { w: tensor(w, [B]), w_star: tensor(ws, [B]) }, { lambda }).dw.toArray();
    const b = runOp('adaptive_weight_loss_backward', { w: tensor(w, [B]), w_star: tensor(ws, [B]) }, { lambda, dL: 0.3 }).dw.toArray();
    t.true(relErr(b, a.map((x) => x * 0.3)) < 1e-6, 'dL scales dw');
  }
  // L_w = λ · mean BCE, by hand
  const w = Float32Array.from([0.2, 0.9]);
  const ws = Float32Array.from([0.5, 1]);
  const L = runOp('adaptive_weight_loss_forward', { w: tensor(w, [2]), w_star: tensor(ws, [2]) }, { lambda: 0.5 }).loss.toArray()[0];
  const want = (0.5 * (-(0.5 * Math.log(0.2) + 0.5 * Math.log(0.8)) - Math.log(0.9))) / 2;
  t.true(Math.abs(L - want) < 1e-6, `${L} vs ${want}`);
});

test('adaptive-weighting ops name bad arguments', (t) => {
  const w = tensor(Float32Array.from([0.5, 0.5]), [2]);
  throwsNaming(t, () => runOp('adaptive_weight_loss_forward', { w, w_star: tensor(Float32Array.from([0.5, 1.5]), [2]) }), 'w_star');
  throwsNaming(t, () => runOp('adaptive_weight_loss_forward', { w: tensor(Float32Array.from([0.5, -0.1]), [2]), w_star: w }), 'w');
  throwsNaming(t, () => runOp('adaptive_weight_loss_backward', { w, w_star: tensor(Float32Array.from([0.5]), [1]) }), 'w_star');
  throwsNaming(t, () => runOp('adaptive_weight_loss_forward', { w, w_star: w }, { lambda: -1 }), 'lambda');
  const e = tensor(randArray([2, 3], rng), [2, 3]);
  throwsNaming(t, () => runOp('adaptive_weight_target', { e_ref: e, e_txt: e, e_tgt: tensor(randArray([2, 4], rng), [2, 4]) }), 'e_tgt');
  throwsNaming(t, () => runOp('adaptive_weight_target', { e_ref: e, e_txt: e, e_tgt: e }, { tau_w: 0 }), 'tau_w');
});

// ------------------------------------------------------------------ the model

const FULL = { Dc: 6, D: 8, C: 8, E: 4, vocab: 10 };
const unitRows = (B, D) => unitRowsOf(B, D, rng);
function fullBatch(B, d, H = 2, W = 2, L = 3) {
  const tokens = new Int32Array(B * L);
  for (let i = 0; i < tokens.length; i++) tokens[i] = 1 + rng.int(d.vocab - 1);
  const fm = () => Float32Array.from(randArray([B, d.C, H, W], rng), (x) => Math.abs(x));
  return {
    B, eImg: randArray([B, d.Dc], rng), eTxt: randArray([B, d.Dc], rng), eTarget: randArray([B, d.Dc], rng),
    labels: Int32Array.from({ length: B }, (_, i) => i % 3), fmap: fm(), fmapTarget: fm(), H, W, tokens, L, lengths: Int32Array.from({ length: B }, (_, i) => 1 + (i % L)),
  };
}

// Finite differences of the stream's whole loss (L_con + L_mut + L_w) w.r.t. sampled entries of the
// parameters `only` selects; dropout off.
function fdCheck(t, stream, m, batch, only, { samples = 6, tol = 3e-2, steps = [1e-2, 3e-3, 1e-3], D = FULL.D } = {}) {
  const B = batch.B;
  const partner = { query: unitRows(B, D), target: unitRows(B, D) };
  const loss = () => {
    const r = m.lossAndGrad(stream, batch, partner, 3);
    return r.contrastive + r.mutual + r.aw;
  };
  const base = m.lossAndGrad(stream, batch, partner, 3);
  t.true(base.aw > 0, `${stream}: L_w reported`);
  const grads = new Map(m.params().map((p) => [p.name, m.getGrad(p.name)]));
  const failures = [];
  // float32 losses: differences below ~1e-2 of the largest gradient are rounding
  const gall = [...grads.values()].reduce((a, g) => g.reduce((x, y) => Math.max(x, Math.abs(y)), a), 0);
  const checked = m.params().filter((p) => only(p.name));
  t.true(checked.length > 0);
  for (const p of checked) {
    const g = grads.get(p.name);
    const w = m.getParam(p.name);
    const gscale = g.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
    const picks = new Set();
    while (picks.size < Math.min(samples, w.length)) picks.add(rng.int(w.length));
    const off = [];
    for (const i of picks) {
      let err = Infinity, fd = 0;
      for (const h0 of steps) {
        const h = h0 * Math.max(1, Math.abs(w[i]));
        const orig = w[i];
        w[i] = orig + h;
        m.setParam(p.name, w);
        const lp = loss();
        w[i] = orig - h;
        m.setParam(p.name, w);
        const lm = loss();
        w[i] = orig;
        m.setParam(p.name, w);
        const f = (lp - lm) / (2 * h);
        const e = Math.abs(f - g[i]) / Math.max(Math.abs(g[i]), Math.abs(f), 0.05 * gscale, 0.01 * gall, 2e-3);
        if (e < err) [err, fd] = [e, f];
      }
      if (err > tol) off.push(`${p.name}[${i}]: analytic ${g[i]} vs finite-difference ${fd} (err ${err.toExponential(2)})`);
    }
    if (off.length > 1) failures.push(...off);
  }
  t.deepEqual(failures, [], `gradient errors, seed ${seed}`);
  return grads;
}

test('global stream with L_w (frozen features as the w* source): gradients match finite differences, L_w moves the combiner', (t) => {
  const G = { Dc: 6, D: 10 };
  const s = rng.int(1000);
  const batch = fullBatch(4, { ...FULL, ...G });
  for (const k of ['fmap', 'fmapTarget', 'tokens', 'lengths']) delete batch[k];
  const on = new DwcModel(G, { seed: s, dropout: 0, awGlobal: true, awLambda: 2, awTau: 0.2 });
  const grads = fdCheck(t, 'global', on, batch, () => true, { samples: 5, D: 10, steps: [3e-3, 1e-3, 3e-4] });
  const off = new DwcModel(G, { seed: s, dropout: 0 });
  const r = off.lossAndGrad('global', batch, { query: unitRows(4, 10), target: unitRows(4, 10) }, 3);
  t.is(r.aw, undefined, 'off: no L_w');
  t.true(relErr(grads.get('global.dynamic_scalar.3.weight'), off.getGrad('global.dynamic_scalar.3.weight')) > 1e-3, 'L_w changes the combiner gradient');
  // the step statistics: L_w, mean |w − w*| and w* as the kernels compute them
  const ra = on.lossAndGrad('global', batch, null, 3);
  const ws = runOp('adaptive_weight_target', { e_ref: tensor(batch.eImg, [4, 6]), e_txt: tensor(batch.eTxt, [4, 6]), e_tgt: tensor(batch.eTarget, [4, 6]) }, { tau_w: 0.2 }).w_star.toArray();
  t.true(relErr(ra.wStar, ws) < 1e-6);
  const gap = ra.weight.reduce((a, w, i) => a + Math.abs(w - ws[i]), 0) / 4;
  t.true(Math.abs(ra.awGap - gap) < 1e-6);
  const L = runOp('adaptive_weight_loss_forward', { w: tensor(ra.weight, [4]), w_star: tensor(ws, [4]) }, { lambda: 2 }).loss.toArray()[0];
  t.true(Math.abs(ra.aw - L) < 1e-6 * Math.max(1, L));
});

test('local stream with L_w: gradients of its combiner and heads match finite differences', (t) => {
  const m = new DwcModel(FULL, { seed: rng.int(1000), dropout: 0, awLocal: true, awLambda: 1 });
  fdCheck(t, 'local', m, fullBatch(4, FULL), (n) => n.startsWith('local.dynamic_scalar.') || n.startsWith('local.fc_txt.') || n === 'local.pool_t.p', { samples: 5 });
});

test('w* from the trainable pooled encoder carries no gradient: the gradients equal those with the same w* given as constants', async (t) => {
  const d = { ...FULL, trunk: 'small', trunkWidth: 4, encoder: 'shared' };
  const B = 4;
  const batch = fullBatch(B, FULL);
  for (const k of ['eImg', 'eTxt', 'eTarget']) delete batch[k];
  const s = rng.int(1000);
  const m = new DwcModel(d, { seed: s, dropout: 0, awGlobal: true, awLambda: 3 });
  const partner = { query: unitRows(B, FULL.D), target: unitRows(B, FULL.D) };
  const a = m.lossAndGrad('global', batch, partner, 3);
  const gA = new Map(m.params().map((p) => [p.name, m.getGrad(p.name)]));
  // the eval-mode w* of the same batch (the encoder has no dropout/BN: equal to the train-mode one)
  const wsEval = Array.from(await m.awTargets(batch));
  t.true(relErr(a.wStar, wsEval) < 1e-5, 'awTargets gives the step w*');
  // the same w* from constant 2-d embeddings: s_I = δ/2, s_T = −δ/2 with δ = τ_w·logit(w*)
  const tau = 0.1;
  const awRef = new Float32Array(2 * B), awTxt = new Float32Array(2 * B), awTgt = new Float32Array(2 * B);
  for (let i = 0; i < B; i++) {
    // w* may round to exactly 0 or 1 in float32 (|s_I − s_T| / τ_w up to 20): its logit is then
    // infinite, so invert a w* moved inside (1e-6, 1 − 1e-6) — the same w* to far below the bounds
    const ws = Math.min(Math.max(a.wStar[i], 1e-6), 1 - 1e-6);
    const delta = tau * Math.log(ws / (1 - ws));
    const [c1, c2] = [delta / 2, -delta / 2];
    awRef.set([c1, Math.sqrt(1 - c1 * c1)], 2 * i);
    awTxt.set([c2, Math.sqrt(1 - c2 * c2)], 2 * i);
    awTgt.set([1, 0], 2 * i);
  }
  const b = m.lossAndGrad('global', { ...batch, awDim: 2, awRef, awTxt, awTgt }, partner, 3);
  t.true(relErr(b.wStar, a.wStar) < 1e-5, 'same w*');
  t.true(Math.abs(a.aw - b.aw) < 1e-5 * a.aw);
  let enc = 0;
  for (const p of m.params()) {
    if (!p.trainable) continue;
    const gb = m.getGrad(p.name);
    const ga = gA.get(p.name);
    const e = relErr(ga, gb);
    if (ga.some((x) => x !== 0) || gb.some((x) => x !== 0)) t.true(e < 1e-4, `${p.name}: gradient with encoder-derived w* differs from constant w* (${e.toExponential(2)})`);
    if (p.name.startsWith('global.img_enc.') || p.name.startsWith('global.txt_enc.')) enc += ga.some((x) => x !== 0) ? 1 : 0;
  }
  t.true(enc > 0, 'the encoder gets a gradient (through f_I, f_T, t), just not through w*');
  // a w* source of the wrong size is named
  throwsNaming(t, () => m.lossAndGrad('global', { ...batch, awDim: 3, awRef, awTxt, awTgt }, partner, 3), 'awRef');
});

test('train step: both streams report L_w and |w − w*| with the options on; off by default', async (t) => {
  const d = { ...FULL, trunk: 'small', trunkWidth: 4, encoder: 'shared' };
  const B = 4;
  const batch = fullBatch(B, FULL);
  for (const k of ['eImg', 'eTxt', 'eTarget', 'fmap', 'fmapTarget']) delete batch[k];
  const S = 16;
  batch.images = randArray([B, 3, S, S], rng);
  batch.imagesTarget = randArray([B, 3, S, S], rng);
  batch.Hi = batch.Wi = S;
  const on = new DwcModel(d, { seed: 5, awGlobal: true, awLocal: true });
  const r = await on.trainStep(batch);
  for (const s of ['global', 'local']) {
    t.true(r[s].aw > 0 && Number.isFinite(r[s].aw), `${s} L_w`);
    t.true(r[s].awGap >= 0 && r[s].awGap < 1, `${s} gap`);
    t.is(r[s].wStar.length, B);
  }
  t.deepEqual(Array.from(r.global.wStar), Array.from(r.local.wStar), 'one w* per query for both streams');
  const off = await new DwcModel(d, { seed: 5 }).trainStep(batch);
  t.is(off.global.aw, undefined);
  t.is(off.local.aw, undefined);
  t.is(off.global.contrastive, r.global.contrastive, 'the first forward is the same; L_w only adds a term');
  const ws = await on.awTargets({ ...batch });
  t.is(ws.length, B);
  t.true(ws.every((x) => x >= 0 && x <= 1), `w* in [0, 1]: ${Array.from(ws)}`);
  // local only: w* still from the encoder outputs of the global step
  const lo = await new DwcModel(d, { seed: 5, awLocal: true }).trainStep(batch);
  t.is(lo.global.aw, undefined);
  t.true(lo.local.aw > 0);
  t.throws(() => new DwcModel(d, { awTau: 0 }), { message: /awTau/ });
  t.throws(() => new DwcModel(d, { awLambda: -1 }), { message: /awLambda/ });
});

test('config and flags: --adaptive-weighting global,local|none, --aw-tau, --aw-lambda, the no-aw ablation; off by default', (t) => {
  const def = resolveConfig(undefined, {});
  t.deepEqual(def.adaptiveWeighting, []);
  t.is(modelOptions(def, 20).adaptiveWeighting, undefined);
  t.is(nativeConfig(modelOptions(def, 20)).options.awGlobal, undefined);
  const f = flagsToConfig({ adaptiveWeighting: ['global', 'local'], awTau: 0.2, awLambda: 0.5 });
  const c = resolveConfig(undefined, f);
  t.deepEqual(modelOptions(c, 20).adaptiveWeighting, { global: true, local: true, tau: 0.2, lambda: 0.5 });
  const o = nativeConfig(modelOptions(c, 20)).options;
  t.like(o, { awGlobal: true, awLocal: true, awTau: 0.2, awLambda: 0.5 });
  t.deepEqual(resolveConfig(undefined, flagsToConfig({ adaptiveWeighting: ['none'] })).adaptiveWeighting, []);
  const noaw = resolveConfig(undefined, { ...f, ablations: ['no-aw'] });
  t.is(nativeConfig(modelOptions(noaw, 20)).options.awGlobal, undefined);
  // local-only: only the local stream's switch
  const lo = nativeConfig(modelOptions(resolveConfig(undefined, { ...f, ablations: ['local-only'] }), 20)).options;
  t.is(lo.awGlobal, undefined);
  t.true(lo.awLocal);
  t.throws(() => resolveConfig(undefined, { adaptiveWeighting: ['both'] }), { message: /adaptiveWeighting/ });
  t.throws(() => resolveConfig(undefined, { awTau: 0 }), { message: /awTau/ });
  t.throws(() => resolveConfig(undefined, { awLambda: -1 }), { message: /awLambda/ });
});
