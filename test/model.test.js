// The native DWC model (spec §3, §5, §6, §9, §10): finite-difference gradients of the global
// stream's loss w.r.t. every parameter, Adam semantics, ablations, checkpoints, async/busy,
// no arena growth after warm-up, argument validation.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DwcModel } from '../lib/model.js';
import { readSafetensors } from '../lib/safetensors.js';
import { freshSeed, kinkExplains, makeRng, randArray, relErr } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);
const tmp = mkdtempSync(join(tmpdir(), 'dwc-model-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const G = { Dc: 6, D: 10 };
const FULL = { Dc: 6, D: 8, C: 8, E: 4, vocab: 10 };

function unitRows(B, D) {
  const a = randArray([B, D], rng);
  for (let i = 0; i < B; i++) {
    let n = 0;
    for (let j = 0; j < D; j++) n += a[i * D + j] ** 2;
    n = Math.sqrt(n);
    for (let j = 0; j < D; j++) a[i * D + j] /= n;
  }
  return a;
}

function globalBatch(B, Dc, labels) {
  return {
    B,
    eImg: randArray([B, Dc], rng),
    eTxt: randArray([B, Dc], rng),
    eTarget: randArray([B, Dc], rng),
    labels: Int32Array.from(labels ?? Array.from({ length: B }, (_, i) => i)),
  };
}

function fullBatch(B, d, H = 2, W = 2, L = 3) {
  const tokens = new Int32Array(B * L);
  for (let i = 0; i < tokens.length; i++) tokens[i] = 1 + rng.int(d.vocab - 1);
  const lengths = Int32Array.from({ length: B }, (_, i) => 1 + (i % L));
  const fm = () => Float32Array.from(randArray([B, d.C, H, W], rng), (x) => Math.abs(x));
  return { ...globalBatch(B, d.Dc, Array.from({ length: B }, (_, i) => i % 3)), fmap: fm(), fmapTarget: fm(), H, W, tokens, L, lengths };
}

// Finite differences of L_con + L_mut of the global stream w.r.t. sampled entries of every
// parameter that gets a gradient (dropout on, with fixed masks: rngStream is fixed).
// dims/batch/only: another model (e.g. with the pooled encoder), its batch, the parameters checked.
function fdCheck(t, options, { samples = 8, tol = 3e-2, dims = G, batch: given, only = () => true, steps = [1e-3, 3e-4, 1e-4] } = {}) {
  const m = new DwcModel(dims, { seed: rng.int(1000), ...options });
  const B = 4;
  const batch = given ?? globalBatch(B, G.Dc, [0, 1, 0, 2]);
  const partner = { query: unitRows(B, dims.D), target: unitRows(B, dims.D) };
  const loss = () => {
    const r = m.lossAndGrad('global', batch, partner, 7);
    return r.contrastive + r.mutual;
  };
  const base = m.lossAndGrad('global', batch, partner, 7);
  t.true(base.mutual > 0 && base.contrastive > 0);
  const grads = new Map(m.params().map((p) => [p.name, m.getGrad(p.name)]));
  // A ReLU kink inside the difference interval spoils a sample: each parameter may have one
  // sample off (a wrong gradient is off on all of them).
  const gall = [...grads.values()].reduce((a, g) => g.reduce((x, y) => Math.max(x, Math.abs(y)), a), 0);
  const failures = [];
  const checked = m.params().filter((p) => only(p.name));
  t.true(checked.length > 0, 'parameters to check');
  for (const p of checked) {
    const g = grads.get(p.name);
    const w = m.getParam(p.name);
    const gscale = g.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
    const n = Math.min(samples, w.length);
    const rel = (f, a) => Math.abs(f - a) / Math.max(Math.abs(a), Math.abs(f), 0.05 * gscale, 0.01 * gall, 2e-3);
    const off = [];
    // distinct entries: one entry at a kink must not count twice
    const picks = new Set();
    while (picks.size < n) picks.add(rng.int(w.length));
    for (const i of picks) {
      // central differences at three step sizes; the best one
      let err = Infinity;
      let fd = 0;
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
        const e = rel(f, g[i]);
        if (e < err) [err, fd] = [e, f];
      }
      // a ReLU kink within a step (seed 20261202: txt_enc.fc.bias[1], kink within 1e-3 on the left)
      if (err > tol && kinkExplains({ loss, set: (x) => m.setParam(p.name, x), w, i, a: g[i], steps, rel, tol, scale: Math.max(1, Math.abs(w[i])) })) continue;
      if (err > tol) off.push(`${p.name}[${i}]: analytic ${g[i]} vs finite-difference ${fd} (err ${err.toExponential(2)})`);
    }
    if (off.length > (n > 1 ? 1 : 0)) failures.push(...off);
  }
  t.deepEqual(failures, [], `gradient errors, seed ${seed}`);
  return { m, grads };
}

test('global stream: parameters and names of spec §9', (t) => {
  const m = new DwcModel(G);
  const names = m.params().map((p) => p.name);
  for (const pre of ['img_fc.0', 'txt_fc.0', 'atten_I.0', 'atten_I.3', 'atten_T.0', 'atten_T.3', 'dynamic_scalar.0', 'dynamic_scalar.3'])
    for (const k of ['weight', 'bias']) t.true(names.includes(`global.${pre}.${k}`), `global.${pre}.${k}`);
  t.is(names.length, 16);
  const p = m.params().find((q) => q.name === 'global.atten_I.0.weight');
  t.deepEqual(p.shape, [G.D, 2 * G.D]);
  t.deepEqual(m.params().find((q) => q.name === 'global.dynamic_scalar.3.weight').shape, [1, G.D]);
  t.false(m.hasLocal);
});

test('global stream: loss gradient w.r.t. every parameter matches finite differences', (t) => {
  fdCheck(t, { dropout: 0.5 });
});

test('global stream: finite differences with the text projection\'s ReLU off (textRelu, docs/MODEL.md §3)', (t) => {
  fdCheck(t, { dropout: 0.5, textRelu: false });
  fdCheck(t, { dropout: 0, textRelu: false });
});

test('global stream: finite differences without dropout, without SSG, and with the ablations', (t) => {
  fdCheck(t, { dropout: 0 });
  fdCheck(t, { dropout: 0, noSsg: true });
  const a = fdCheck(t, { dropout: 0, noEditors: true });
  for (const n of ['atten_I.0.weight', 'atten_T.3.bias']) t.true(a.grads.get(`global.${n}`).every((x) => x === 0), `no_editors: ${n} gets no gradient`);
  const b = fdCheck(t, { dropout: 0, fixedW: true });
  t.true(b.grads.get('global.dynamic_scalar.0.weight').every((x) => x === 0));
});

test('pooled encoder (shared: GeM + Linear over the local trunk maps; text: Embedding + LSTM + mean + Linear): gradients match finite differences', (t) => {
  const d = { ...FULL, trunk: 'small', trunkWidth: 4, encoder: 'shared' };
  const B = 4;
  const batch = fullBatch(B, FULL, 2, 2, 3);
  for (const k of ['eImg', 'eTxt', 'eTarget']) delete batch[k];
  // At this size (D = 8, B = 4) about 2% of random inits start with global.txt_fc.0 or img_fc.0's
  // ReLU dead on the whole batch, which leaves the encoder behind it without a gradient: a fact
  // of the init, not of the engine. Draw the model seed until both projections are alive.
  const alive = (seed) => {
    const m = new DwcModel(d, { seed, dropout: 0 });
    m.lossAndGrad('global', batch, { query: unitRows(B, d.D), target: unitRows(B, d.D) }, 7);
    // (the LSTM's recurrent weights too: only the texts of 2–3 tokens reach them, and a ReLU dead on
    // just those rows starves them — seen once in a fresh-clone CI run)
    return ['global.img_fc.0.weight', 'global.txt_fc.0.weight', 'global.txt_enc.lstm.weight_hh_l0'].every((n) => m.getGrad(n).some((x) => x !== 0));
  };
  let seed = rng.int(1000);
  for (let tries = 0; tries < 20 && !alive(seed); tries++) seed = rng.int(1000);
  t.true(alive(seed), 'a model seed with live projections within 20 draws');
  const { grads } = fdCheck(t, { dropout: 0, seed }, { dims: d, batch, only: (n) => n.startsWith('global.img_enc.') || n.startsWith('global.txt_enc.'), samples: 6,
    // smooth in these parameters; larger steps lift the small LSTM-bias gradients above float32 noise
    steps: [1e-2, 3e-3, 1e-3] });
  for (const n of ['global.img_enc.pool.p', 'global.img_enc.fc.weight', 'global.txt_enc.lstm.weight_hh_l0', 'global.txt_enc.embedding.weight'])
    t.true(grads.get(n).some((x) => x !== 0), `${n} gets a gradient`);
});

test('pooled encoder with a g×g pooling grid (overlapping windows): gradients match finite differences, own trunk included', (t) => {
  // shared: a 3×5 map, g = 2 → 2×3 windows at rows {0,1}, columns {0,2} (both overlap)
  const d = { ...FULL, trunk: 'small', trunkWidth: 4, encoder: 'shared', encGrid: 2 };
  const batch = fullBatch(4, FULL, 3, 5, 3);
  for (const k of ['eImg', 'eTxt', 'eTarget']) delete batch[k];
  const a = fdCheck(t, { dropout: 0 }, { dims: d, batch, only: (n) => n.startsWith('global.img_enc.'), samples: 6, steps: [1e-2, 3e-3, 1e-3] });
  t.deepEqual(a.m.params().find((p) => p.name === 'global.img_enc.fc.weight').shape, [FULL.Dc, FULL.C * 4]);
  // own trunk: the window gradients are scattered back onto its 3×2 maps (24×16 images)
  const o = { Dc: 6, D: 8, vocab: 10, encoder: 'small', encChannels: 8, encE: 4, encGrid: 2 };
  const B = 4;
  const img = () => randArray([B, 3, 24, 16], rng);
  const tokens = Int32Array.from({ length: B * 3 }, () => 1 + rng.int(9));
  const ib = { B, images: img(), imagesTarget: img(), Hi: 24, Wi: 16, tokens, L: 3, labels: Int32Array.from([0, 1, 0, 2]) };
  const b = fdCheck(t, { dropout: 0 }, { dims: o, batch: ib, only: (n) => n.startsWith('global.img_enc.trunk.layer') && n.endsWith('conv2.weight'), samples: 4, tol: 5e-2 });
  t.true([...b.grads].some(([n, g]) => n.startsWith('global.img_enc.trunk.') && g.some((x) => x !== 0)), 'the own trunk gets a gradient');
});

test('pooled encoder: g = 1 ignores where things are in the map, g = 3 does not', async (t) => {
  const B = 2, C = FULL.C, H = 6, W = 6;
  const fm = Float32Array.from(randArray([B, C, H, W], rng), (x) => Math.abs(x));
  const mirrored = new Float32Array(fm.length); // left-right mirror of every plane
  for (let p = 0; p < B * C; p++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) mirrored[(p * H + y) * W + x] = fm[(p * H + y) * W + W - 1 - x];
  const tokens = Int32Array.from({ length: B * 2 }, () => 1 + rng.int(9));
  const embed = async (m, map) => (await m.embedTargets({ B, fmap: map, fmapTarget: map, H, W, tokens, L: 2 })).global;
  for (const g of [1, 3]) {
    const m = new DwcModel({ ...FULL, trunk: 'small', trunkWidth: 4, encoder: 'shared', encGrid: g }, { seed: 5 });
    const diff = relErr(await embed(m, fm), await embed(m, mirrored));
    if (g === 1) t.true(diff < 1e-5, `g = 1: mirrored map, same embedding (rel. diff ${diff})`);
    else t.true(diff > 1e-2, `g = 3: mirrored map, another embedding (rel. diff ${diff})`);
  }
});

test('global stream: detach_soft_labels changes only the target-side gradient path', (t) => {
  // How much the soft-label term moves img_fc's gradient depends on the draw (about 2% of random
  // batches move it by < 1e-4 relative): the largest change over three draws must be clear.
  let imgChange = 0;
  for (let k = 0; k < 3; k++) {
    const batch = globalBatch(4, G.Dc, [0, 1, 0, 2]);
    const a = new DwcModel(G, { seed: 3, dropout: 0 });
    const b = new DwcModel(G, { seed: 3, dropout: 0, detachSoftLabels: true });
    const ra = a.lossAndGrad('global', batch);
    const rb = b.lossAndGrad('global', batch);
    t.is(ra.contrastive, rb.contrastive);
    t.is(ra.mutual, 0, 'no partner: no mutual term');
    // txt_fc feeds only the query: its gradient is the same either way; img_fc feeds the target too
    t.true(relErr(a.getGrad('global.txt_fc.0.weight'), b.getGrad('global.txt_fc.0.weight')) < 1e-5); // reduction order may vary with thread scheduling under load
    imgChange = Math.max(imgChange, relErr(a.getGrad('global.img_fc.0.weight'), b.getGrad('global.img_fc.0.weight')));
  }
  t.true(imgChange > 1e-4, `img_fc gradient change ${imgChange}`);
});

test('global-only train step: Adam (L2 decay) on touched parameters, untouched ones stay put; loss decreases', async (t) => {
  const opts = { seed: 11, dropout: 0, lr: 1e-3, noEditors: true };
  const m = new DwcModel(G, opts);
  const batch = globalBatch(6, G.Dc, [0, 1, 2, 3, 4, 5]);
  const before = m.getParams();
  m.lossAndGrad('global', batch);
  const g = m.getGrad('global.img_fc.0.weight');
  const r = await m.trainStep(batch);
  t.is(r.iteration, 1);
  t.is(r.local, undefined);
  t.is(r.global.query.length, 6 * G.D);
  // step 1 of Adam: p − lr·ĝ/(|ĝ|+eps), ĝ = g + wd·p
  const p0 = before.get('global.img_fc.0.weight');
  const p1 = m.getParam('global.img_fc.0.weight');
  const want = p0.map((p, i) => {
    const gg = g[i] + 1e-6 * p;
    return p - (1e-3 * gg) / (Math.abs(gg) + 1e-8);
  });
  t.true(relErr(p1, want) < 1e-5, `Adam update off: ${relErr(p1, want)}`);
  t.deepEqual(m.getParam('global.atten_I.0.weight'), before.get('global.atten_I.0.weight'), 'no_editors: editor params untouched');
  t.true(m.getOptimState('global.atten_I.0.weight').m.every((x) => x === 0));
  let last = r.global.contrastive;
  for (let i = 0; i < 30; i++) last = (await m.trainStep(batch)).global.contrastive;
  t.true(last < r.global.contrastive, `loss ${r.global.contrastive} -> ${last}`);
});

test('fixed_w: w = 0.5 and the combiner is untouched', async (t) => {
  const m = new DwcModel(G, { seed: 2, fixedW: true });
  const before = m.getParam('global.dynamic_scalar.0.weight');
  const r = await m.trainStep(globalBatch(3, G.Dc));
  t.true(r.global.weight.every((w) => w === 0.5));
  t.deepEqual(m.getParam('global.dynamic_scalar.0.weight'), before);
});

test('localLrFactor: the local stream (and its trunk) steps lr × factor, the global stream lr', async (t) => {
  // first Adam step: Δp = −lr·ĝ/(|ĝ|+eps) ≈ ∓lr per entry, so the steps' ratio is the factor
  const d = { ...FULL, trunk: 'small', trunkWidth: 4 };
  const B = 4;
  const img = () => randArray([B, 3, 16, 16], rng);
  const tokens = Int32Array.from({ length: B * 3 }, () => 1 + rng.int(FULL.vocab - 1));
  const batch = { ...globalBatch(B, FULL.Dc, [0, 1, 0, 2]), images: img(), imagesTarget: img(), Hi: 16, Wi: 16, tokens, L: 3 };
  const step = async (factor) => {
    const m = new DwcModel(d, { seed: 9, dropout: 0, lr: 1e-3, ...(factor ? { localLrFactor: factor } : {}) });
    const before = m.getParams();
    await m.trainStep(batch);
    const moved = (n) => m.getParam(n).reduce((a, x, i) => Math.max(a, Math.abs(x - before.get(n)[i])), 0);
    return { local: moved('local.img_fc.weight'), trunk: moved('local.img_model.conv1.weight'), global: moved('global.img_fc.0.weight') };
  };
  const one = await step(undefined);
  const five = await step(5);
  for (const k of ['local', 'trunk']) t.true(Math.abs(five[k] / one[k] - 5) < 0.05, `${k}: ${five[k]} vs ${one[k]}`);
  t.true(Math.abs(five.global / one.global - 1) < 1e-3, `global: ${five.global} vs ${one.global}`);
});

test('full model: one iteration, both streams, losses finite, same seed same numbers', async (t) => {
  const batch = fullBatch(4, FULL);
  const a = new DwcModel(FULL, { seed: 5 });
  const b = new DwcModel(FULL, { seed: 5 });
  t.true(a.hasLocal);
  const ra = await a.trainStep(batch);
  const rb = await b.trainStep(batch);
  for (const s of ['global', 'local']) {
    t.true(Number.isFinite(ra[s].contrastive) && Number.isFinite(ra[s].mutual) && ra[s].mutual > 0, s);
    t.deepEqual(ra[s].query, rb[s].query);
    t.is(ra[s].contrastive, rb[s].contrastive);
  }
  t.true(a.params().some((p) => p.counter && p.dtype === 'int64'));
  const nbt = a.params().find((p) => p.counter).name;
  t.is(a.getParam(nbt)[0], 2, 'Inception BN updated in steps 1 and 4 (spec §6)');
  const c = new DwcModel(FULL, { seed: 5, noMutual: true });
  const rc = await c.trainStep(batch);
  t.is(rc.global.mutual, 0);
  t.is(rc.local.mutual, 0);
});

test('no arena growth after warm-up; embeddings are unit rows of [global; local]', async (t) => {
  const m = new DwcModel(FULL, { seed: 9 });
  const batch = fullBatch(4, FULL);
  await m.trainStep(batch);
  const g = m.stats().arenaGrows;
  t.true(g > 0);
  for (let i = 0; i < 3; i++) await m.trainStep(batch);
  t.is(m.stats().arenaGrows, g, 'arena grew after warm-up');
  t.true(m.stats().arenaBytes > 0);
  const q = await m.embedQueries(batch);
  t.is(q.dim, 2 * FULL.D);
  t.is(q.embedding.length, 4 * 2 * FULL.D);
  for (const part of [q.global, q.local])
    for (let i = 0; i < 4; i++) {
      let n = 0;
      for (let j = 0; j < FULL.D; j++) n += part[i * FULL.D + j] ** 2;
      t.true(Math.abs(n - 1) < 1e-5);
    }
  t.is(q.globalWeight.length, 4);
  const q2 = await m.embedQueries(batch);
  t.deepEqual(q2.embedding, q.embedding, 'eval mode is deterministic');
  const tg = await m.embedTargets({ B: 4, eTarget: batch.eTarget, fmapTarget: batch.fmapTarget, H: 2, W: 2 });
  t.is(tg.embedding.length, 4 * 2 * FULL.D);
});

test('checkpoint: save/load restores params, optimizer state, steps; training continues identically', async (t) => {
  const m = new DwcModel(FULL, { seed: 4 });
  const batch = fullBatch(4, FULL);
  await m.trainStep(batch);
  await m.trainStep(batch);
  const path = join(tmp, 'ck.safetensors');
  m.save(path);
  const f = readSafetensors(path);
  t.is(f.tensors.get('optim.global.step').dtype, 'I64');
  t.is(Number(f.tensors.get('optim.local.step').data[0]), 2);
  t.true(f.tensors.has('optim.global.m.global.img_fc.0.weight'));
  t.true(f.tensors.has('optim.local.v.local.fc_txt.weight'));
  const nbt = [...f.tensors.keys()].find((k) => k.endsWith('num_batches_tracked') && !k.startsWith('optim.'));
  t.is(f.tensors.get(nbt).dtype, 'I64');
  const n = DwcModel.load(path);
  t.deepEqual(n.getParam('local.fc_txt.weight'), m.getParam('local.fc_txt.weight'));
  t.deepEqual(n.getOptimState('global.img_fc.0.bias'), m.getOptimState('global.img_fc.0.bias'));
  const ra = await m.trainStep(batch);
  const rb = await n.trainStep(batch);
  t.deepEqual(rb.local.query, ra.local.query);
  t.deepEqual(n.getParam('global.atten_T.0.weight'), m.getParam('global.atten_T.0.weight'));
});

test('async: a model in use refuses a second call with DWC_BUSY', async (t) => {
  const m = new DwcModel({ Dc: 256, D: 256, C: 64, E: 16, vocab: 50 }, { seed: 1 });
  const batch = fullBatch(16, { Dc: 256, D: 256, C: 64, E: 16, vocab: 50 }, 4, 4, 6);
  const p = m.trainStep(batch);
  t.true(m.busy);
  const e1 = await t.throwsAsync(m.trainStep(batch));
  t.is(e1.code, 'DWC_BUSY');
  const e2 = t.throws(() => m.getParam('global.img_fc.0.weight'));
  t.is(e2.code, 'DWC_BUSY');
  await t.throwsAsync(m.embedQueries(batch), { code: 'DWC_BUSY' });
  await p;
  t.false(m.busy);
  t.notThrows(() => m.getParam('global.img_fc.0.weight'));
});

test('bad arguments name the argument', async (t) => {
  const bad = (f, re) => {
    const e = t.throws(f);
    if (e) t.regex(e.message, re);
  };
  bad(() => new DwcModel({ Dc: 0, D: 4 }), /'Dc'/);
  bad(() => new DwcModel({ Dc: 4 }), /'D'/);
  bad(() => new DwcModel({ Dc: 4, D: 4, C: 8 }), /'E'/);
  bad(() => new DwcModel(G, { dropout: 1.5 }), /'dropout'/);
  bad(() => new DwcModel(G, { lr: Number.NaN }), /'lr'/);
  bad(() => new DwcModel(G, { noSuchOption: true }), /'noSuchOption'/);
  const m = new DwcModel(G);
  const b = globalBatch(3, G.Dc);
  await t.throwsAsync(m.trainStep({ ...b, eImg: new Float32Array(5) }), { message: /'eImg' has 5 elements/ });
  await t.throwsAsync(m.trainStep({ ...b, labels: new Float32Array(3) }), { message: /'labels' must be a Int32Array/ });
  await t.throwsAsync(m.trainStep({ ...b, labels: undefined }), { message: /'labels'/ });
  await t.throwsAsync(m.trainStep({ ...b, eTarget: undefined }), { message: /target inputs/ });
  bad(() => m.setParam('global.img_fc.0.weight', new Float32Array(3)), /'global\.img_fc\.0\.weight' has shape \[10, 6\]/);
  bad(() => m.setParam('global.nope', new Float32Array(3)), /'global\.nope'/);
  bad(() => m.setParam('global.img_fc.0.bias', Float32Array.from({ length: 10 }, (_, i) => (i === 2 ? Number.NaN : i))), /non-finite/);
  const ts = Object.fromEntries(m.params().map((p) => [p.name, { dtype: 'F32', shape: p.shape, data: m.getParam(p.name) }]));
  delete ts['global.txt_fc.0.bias'];
  ts['global.img_fc.0.weight'] = { dtype: 'F32', shape: [6, 10], data: new Float32Array(60) };
  ts['global.atten_I.3.bias'] = { dtype: 'I32', shape: [10], data: new Int32Array(10) };
  const e = t.throws(() => m.setParams(ts));
  t.regex(e.message, /missing 'global\.txt_fc\.0\.bias'/);
  t.regex(e.message, /'global\.img_fc\.0\.weight' has shape \[6, 10\], expected \[10, 6\]/);
  t.regex(e.message, /'global\.atten_I\.3\.bias' has dtype I32, expected F32/);
  const f = new DwcModel(FULL);
  const fb = fullBatch(2, FULL);
  await t.throwsAsync(f.trainStep({ ...fb, tokens: Int32Array.from(fb.tokens, () => 99) }), { message: /'tokens'/ });
  await t.throwsAsync(f.trainStep({ ...fb, fmap: new Float32Array(3) }), { message: /'fmap'/ });
});
