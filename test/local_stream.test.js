// Local stream (spec §4, §9, §10): parameter names and inits, PyTorch parity of the whole stream
// (forward, every gradient, running stats; scripts/fixtures/gen_local_stream.py), finite
// differences through the full backward, masking, ablations, dropout, arena reuse, bad arguments.
import test from 'ava';
import { addon, runOp, tensor } from '../lib/index.js';
import { makeRng, freshSeed, randArray, relErr, loadFixtureCases, throwsNaming } from './helpers/index.js';
import { assertOpCase } from './helpers/accuracy.js';

// Tiny shapes: one thread (OpenMP regions only add overhead here, and this file is its own process).
addon().setNumThreads(1);

const seed = Number(process.env.DWC_TEST_SEED) || freshSeed(); // DWC_TEST_SEED replays a failure
const rng = makeRng(seed);
const dims = { D: 16, C: 24, E: 8, V: 20 };
const B = 3, H = 3, W = 2, L = 5;

// ---- expected §9 names and shapes, in spec order ----
function inceptionSpecs(prefix, cin, out, twoD) {
  const o8 = out / 8;
  const units = [
    ['branch0.', cin, 3 * o8, 1], ['branch1.0.', cin, 4 * o8, 1], ['branch1.2.', 4 * o8, 2 * o8, 3], ['branch2.0.', cin, 2 * o8, 1],
    ['branch2.2.', 2 * o8, o8, 3], ['branch2.4.', o8, 2 * o8, 3], ['branch3.1.', cin, o8, 1],
  ];
  const s = [];
  for (const [u, ci, co, k] of units) {
    s.push([`${prefix}${u}conv.weight`, twoD ? [co, ci, k, k] : [co, ci, k]]);
    for (const n of ['weight', 'bias', 'running_mean', 'running_var']) s.push([`${prefix}${u}bn.${n}`, [co]]);
    s.push([`${prefix}${u}bn.num_batches_tracked`, []]);
  }
  return s;
}
function expectedSpecs({ D, C, E, V }) {
  return [
    ['local.img_pool.p', [1]], ['local.img_fc.weight', [D, C]], ['local.img_fc.bias', [D]],
    ['local.txt_model.embedding_layer.weight', [V, E]],
    ['local.txt_model.lstm.weight_ih_l0', [4 * D, E]], ['local.txt_model.lstm.weight_hh_l0', [4 * D, D]],
    ['local.txt_model.lstm.bias_ih_l0', [4 * D]], ['local.txt_model.lstm.bias_hh_l0', [4 * D]],
    ...inceptionSpecs('local.imgconv.0.', C, D, true), ...inceptionSpecs('local.imgatt.0.', 2 * D, C, true),
    ...inceptionSpecs('local.txtatt.0.', 2 * D, D, false), ...inceptionSpecs('local.txt2img.0.', D, C, true),
    ...inceptionSpecs('local.img2txt.0.', D, D, false),
    ['local.pool_i.p', [1]], ['local.pool_t.p', [1]], ['local.fc_txt.weight', [D, D]], ['local.fc_txt.bias', [D]],
    ['local.dynamic_scalar.0.weight', [D, 2 * D]], ['local.dynamic_scalar.0.bias', [D]],
    ['local.dynamic_scalar.3.weight', [1, D]], ['local.dynamic_scalar.3.bias', [1]],
  ];
}

test('parameter names, shapes, order and PyTorch default inits (spec §9)', (t) => {
  const out = runOp('local_stream_param_names', {}, { ...dims, seed: 5 });
  const exp = expectedSpecs(dims);
  const got = Object.keys(out).filter((k) => !k.startsWith('offset:'));
  t.deepEqual([...got].sort(), exp.map(([n]) => n).sort());
  const byOffset = [...got].sort((a, b) => out[`offset:${a}`].toArray()[0] - out[`offset:${b}`].toArray()[0]);
  t.deepEqual(byOffset, exp.map(([n]) => n), 'buffer order follows spec §9');
  for (const [name, shape] of exp) {
    t.deepEqual(out[name].shape, shape, `${name} shape`);
    const [, numel, trainable, counter] = out[`offset:${name}`].toArray();
    t.is(numel, shape.reduce((a, b) => a * b, 1), `${name} numel`);
    const stat = /running_|num_batches/.test(name);
    t.is(trainable, stat ? 0 : 1, `${name} trainable`);
    t.is(counter, name.endsWith('num_batches_tracked') ? 1 : 0, `${name} counter`);
    const v = out[name].toArray();
    const maxAbs = v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    const fanIn = shape.length >= 2 ? shape.slice(1).reduce((a, b) => a * b, 1) : 0;
    if (name.endsWith('.p')) t.deepEqual(Array.from(v), [3], name);
    else if (/bn\.weight|running_var/.test(name)) t.true(v.every((x) => x === 1), name);
    else if (/bn\.bias|running_mean|num_batches/.test(name)) t.true(v.every((x) => x === 0), name);
    else if (name.includes('embedding')) {
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      const sd = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
      t.true(Math.abs(mean) < 0.3 && sd > 0.75 && sd < 1.25, `${name}: N(0,1), got mean ${mean} sd ${sd}`);
    } else {
      let bound;
      if (name.includes('lstm')) bound = 1 / Math.sqrt(dims.D);
      else if (name.endsWith('.weight')) bound = 1 / Math.sqrt(fanIn);
      else bound = 1 / Math.sqrt(expectedSpecs(dims).find(([n]) => n === name.replace(/bias$/, 'weight'))[1][1]);
      t.true(maxAbs <= bound + 1e-7 && maxAbs > 0.5 * bound, `${name}: U(±${bound}), max |x| = ${maxAbs}`);
    }
  }
  const again = runOp('local_stream_param_names', {}, { ...dims, seed: 5 });
  const other = runOp('local_stream_param_names', {}, { ...dims, seed: 6 });
  t.deepEqual(again['local.fc_txt.weight'].toArray(), out['local.fc_txt.weight'].toArray(), 'same seed, same init');
  t.notDeepEqual(other['local.fc_txt.weight'].toArray(), out['local.fc_txt.weight'].toArray(), 'other seed, other init');
});

// ---- PyTorch parity of the whole stream ----
const cases = loadFixtureCases(new URL('./fixtures/model/local_stream.safetensors', import.meta.url).pathname);
test('local stream fixtures exist', (t) => t.is(cases.length, 4));
for (const c of cases) {
  test(`pytorch parity local stream: ${c.name}`, (t) => {
    const got = runOp(c.op, c.inputs, c.attrs);
    const names = Object.keys(c.expected);
    t.true(names.includes('query') && names.includes('target') && names.includes('weight'));
    // float64 PyTorch answer, every tensor by the rule of docs/ACCURACY.md (worst ratio logged)
    assertOpCase(t, c, got);
    // exactly the parameters PyTorch gives a gradient are touched (spec §10)
    const gotGrads = Object.keys(got).filter((k) => k.startsWith('grad.')).sort();
    t.deepEqual(gotGrads, names.filter((k) => k.startsWith('grad.')).sort());
    if (c.attrs.no_editors) {
      t.false(gotGrads.some((k) => /imgatt|txtatt/.test(k)), 'no_editors: gates get no gradient');
      t.false(gotGrads.some((k) => k.includes('dynamic_scalar')), 'fixed_w: combiner MLP gets no gradient');
      t.true(got.weight.toArray().every((w) => w === 0.5));
    }
  });
}

// ---- finite differences through the full backward (train-mode BN, outputs only) ----
function makeInputs(r) {
  const fmap = randArray([B, dims.C, H, W], r).map(Math.abs);
  const fmapT = randArray([B, dims.C, H, W], r).map(Math.abs);
  const tokens = Int32Array.from({ length: B * L }, () => r.int(dims.V));
  const lengths = Int32Array.from([L, 2, 4]);
  return {
    fmap: [fmap, [B, dims.C, H, W]],
    fmap_target: [fmapT, [B, dims.C, H, W]],
    tokens: [tokens, [B, L], 'int32'],
    lengths: [lengths, [B], 'int32'],
  };
}
const initParams = runOp('local_stream_param_names', {}, { ...dims, seed: 11 });
const paramInput = (name) => [initParams[name].toArray(), initParams[name].shape];
const mk = (entries) => Object.fromEntries(Object.entries(entries).map(([k, [d, s, dt]]) => [k, tensor(d, s, dt ?? 'float32')]));
const dot = (a, b) => a.reduce((s, v, i) => s + v * b[i], 0);

/**
 * Finite differences of L = Σ_o <r_o, y_o> against the gradients the same op returns
 * when given the dy's. The stream is piecewise smooth (ReLUs inside train-mode BN blocks couple
 * every activation, so kinks are dense): central and one-sided differences on steps 1e-4..1.6e-2,
 * at most one outlier in `samples` points,
 * half of them drawn among the larger gradient entries. Exact agreement is the PyTorch parity test.
 */
function fdCheck(t, { op, inputs, attrs, bwAttrs, outputs, dyInputs, grads, samples = 8, h = 1e-3, tol = 5e-2 }) {
  const base = runOp(op, mk(inputs), attrs);
  const r = Object.fromEntries(outputs.map((o) => [o, randArray(base[o].shape, rng)]));
  const loss = (entries) => {
    const y = runOp(op, mk(entries), attrs);
    return outputs.reduce((s, o) => s + dot(y[o].toArray(), r[o]), 0);
  };
  const l0 = loss(inputs);
  const dys = Object.fromEntries(outputs.map((o) => [o, tensor(r[o], base[o].shape)]));
  const g = runOp(op, { ...mk(inputs), ...dyInputs(dys) }, bwAttrs ?? attrs);
  // float32 rounding of L bounds what finite differences can resolve: differences below 1e-3 of
  // the largest gradient anywhere in the op count as agreement
  const floor = 1e-3 * Object.values(grads).reduce((m, n) => Math.max(m, ...(g[n] ? g[n].toArray().map(Math.abs) : [0])), 0);
  for (const [inName, gName] of Object.entries(grads)) {
    t.truthy(g[gName], `${op} did not return '${gName}'`);
    if (!g[gName]) continue;
    const ga = g[gName].toArray();
    const data = inputs[inName][0];
    t.is(ga.length, data.length, `${gName} size`);
    const gscale = ga.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    t.true(gscale > 0, `${gName} is all zero`);
    const big = [...ga.keys()].filter((i) => Math.abs(ga[i]) >= 0.2 * gscale);
    const fails = [];
    for (let s = 0; s < samples; s++) {
      const i = s % 2 ? big[rng.int(big.length)] : rng.int(data.length);
      const step = h * Math.max(1, Math.abs(data[i]));
      const at = (v) => {
        const d = data.slice();
        d[i] = v;
        return { ...inputs, [inName]: [d, inputs[inName][1], inputs[inName][2]] };
      };
      // central and one-sided differences (a kink inside [x-kh, x+kh] leaves one side smooth) on a
      // ladder of steps: 0.1h first (fewest kinks), larger ones where float32 rounding dominates
      const rel = (fd) => Math.abs(fd - ga[i]) / Math.max(Math.abs(ga[i]), Math.abs(fd), 0.05 * gscale, floor, 1e-6);
      const fds = [];
      for (const k of [0.1, 1, 4, 16]) {
        if (fds.length && Math.min(...fds.map(rel)) <= tol) break;
        const lp = loss(at(data[i] + k * step));
        const lm = loss(at(data[i] - k * step));
        fds.push((lp - lm) / (2 * k * step), (lp - l0) / (k * step), (l0 - lm) / (k * step));
      }
      const errs = fds.map(rel);
      const err = Math.min(...errs);
      const fd = fds[errs.indexOf(err)];
      if (err > tol && process.env.DWC_FD_DEBUG) {
        const curve = [-16, -8, -4, -2, -1, 0, 1, 2, 4, 8, 16].map((k) => loss(at(data[i] + k * step)).toFixed(7));
        console.log(`${inName}[${i}] analytic ${ga[i]}, loss at x + k·h (k = -16..16): ${curve.join(' ')}`);
      }
      if (err > tol) fails.push(`${inName}[${i}]: analytic ${ga[i]} vs finite-difference ${fd}`);
    }
    t.true(fails.length <= 1, `${op}: gradient of '${inName}' off at ${fails.length}/${samples} points: ${fails.join('; ')} (seed ${seed})`);
  }
}

function streamGradcheck(t, attrs, paramNames, withInputs = false) {
  const inputs = makeInputs(rng);
  for (const n of paramNames) inputs[`param.${n}`] = paramInput(n);
  const grads = Object.fromEntries(paramNames.map((n) => [`param.${n}`, `grad.${n}`]));
  if (withInputs) Object.assign(grads, { fmap: 'dfmap', fmap_target: 'dfmap_target' });
  fdCheck(t, {
    op: 'local_stream_loss',
    inputs,
    attrs: { ...dims, seed: 11, ...attrs },
    bwAttrs: { ...dims, seed: 11, input_grads: 1, ...attrs },
    outputs: ['query', 'target'],
    dyInputs: (dys) => ({ dq: dys.query, dt: dys.target }),
    grads,
  });
}

const allGroups = [
  'local.img_pool.p', 'local.img_fc.weight', 'local.img_fc.bias', 'local.txt_model.embedding_layer.weight',
  'local.txt_model.lstm.weight_ih_l0', 'local.txt_model.lstm.weight_hh_l0', 'local.txt_model.lstm.bias_hh_l0',
  'local.imgconv.0.branch2.4.conv.weight', 'local.imgconv.0.branch1.0.bn.weight', 'local.imgconv.0.branch3.1.conv.weight',
  'local.imgatt.0.branch1.2.conv.weight', 'local.imgatt.0.branch0.bn.bias', 'local.txtatt.0.branch2.2.conv.weight',
  'local.txtatt.0.branch3.1.bn.weight', 'local.txt2img.0.branch0.conv.weight', 'local.txt2img.0.branch2.0.bn.bias',
  'local.img2txt.0.branch1.2.conv.weight', 'local.img2txt.0.branch3.1.conv.weight', 'local.pool_i.p', 'local.pool_t.p',
  'local.fc_txt.weight', 'local.fc_txt.bias', 'local.dynamic_scalar.0.weight', 'local.dynamic_scalar.3.bias',
];

test('backward matches finite differences (masked, default)', (t) => {
  streamGradcheck(t, { masked: 1 }, allGroups, true);
});
test('backward matches finite differences (unmasked reference)', (t) => {
  streamGradcheck(t, { masked: 0 }, ['local.txt_model.lstm.weight_hh_l0', 'local.txtatt.0.branch0.conv.weight', 'local.pool_t.p',
    'local.imgatt.0.branch2.4.conv.weight', 'local.dynamic_scalar.0.bias'], true);
});
test('backward matches finite differences (dropout 0.5 with a fixed mask)', (t) => {
  streamGradcheck(t, { dropout: 0.5, dropout_seed: 3 }, ['local.dynamic_scalar.0.weight', 'local.dynamic_scalar.3.weight',
    'local.fc_txt.weight', 'local.img_fc.weight']);
});
test('backward matches finite differences (ablations no_editors + fixed_w)', (t) => {
  streamGradcheck(t, { no_editors: 1, fixed_w: 1 }, ['local.txt2img.0.branch1.2.conv.weight', 'local.img2txt.0.branch0.bn.weight',
    'local.txt_model.lstm.weight_ih_l0', 'local.imgconv.0.branch0.conv.weight'], true);
});

// ---- semantics ----

test('masking: padded tokens do not change the outputs; unmasked they do (spec §10)', (t) => {
  const ins = makeInputs(rng);
  const tok2 = ins.tokens[0].slice();
  tok2[1 * L + 3] = (tok2[1 * L + 3] + 1) % dims.V; // sample 1 has length 2: position 3 is padding
  const alt = { ...ins, tokens: [tok2, [B, L], 'int32'] };
  for (const masked of [1, 0]) {
    const a = runOp('local_stream_loss', mk(ins), { ...dims, seed: 2, masked });
    const b = runOp('local_stream_loss', mk(alt), { ...dims, seed: 2, masked });
    const d = relErr(b.query.toArray(), a.query.toArray());
    if (masked) t.is(d, 0, 'masked: padding ignored');
    else t.true(d > 1e-6, 'unmasked: padding takes part');
  }
});

test('dropout: train masks depend on the rng, eval ignores dropout; train BN updates running stats', (t) => {
  const ins = mk(makeInputs(rng));
  const a = runOp('local_stream_loss', ins, { ...dims, seed: 2, dropout: 0.5, dropout_seed: 1 });
  const a2 = runOp('local_stream_loss', ins, { ...dims, seed: 2, dropout: 0.5, dropout_seed: 1 });
  const b = runOp('local_stream_loss', ins, { ...dims, seed: 2, dropout: 0.5, dropout_seed: 2 });
  t.deepEqual(a.weight.toArray(), a2.weight.toArray());
  t.notDeepEqual(a.weight.toArray(), b.weight.toArray());
  const e1 = runOp('local_stream_loss', ins, { ...dims, seed: 2, dropout: 0.5, train: 0 });
  const e2 = runOp('local_stream_loss', ins, { ...dims, seed: 2, dropout: 0, train: 0 });
  t.deepEqual(e1.weight.toArray(), e2.weight.toArray());
  t.deepEqual(e1.query.toArray(), e2.query.toArray());
  const n = 'param.local.imgconv.0.branch0.bn.';
  t.deepEqual(Array.from(a[`${n}num_batches_tracked`].toArray()), [1]);
  t.deepEqual(Array.from(e1[`${n}num_batches_tracked`].toArray()), [0]);
  t.true(a[`${n}running_var`].toArray().some((v) => v !== 1));
  t.true(e1[`${n}running_var`].toArray().every((v) => v === 1));
});

test('query and target paths run apart; gradients only where they flow', (t) => {
  const ins = makeInputs(rng);
  const dt = tensor(randArray([B, dims.D], rng), [B, dims.D]);
  const only = runOp('local_stream_loss', { fmap_target: mk(ins).fmap_target, dt }, { ...dims, seed: 2 });
  t.falsy(only.query);
  t.deepEqual(only.target.shape, [B, dims.D]);
  t.deepEqual(Object.keys(only).filter((k) => k.startsWith('grad.')).sort(),
    ['grad.local.img_fc.bias', 'grad.local.img_fc.weight', 'grad.local.img_pool.p']);
  const both = runOp('local_stream_loss', { ...mk(ins), dt }, { ...dims, seed: 2 });
  t.deepEqual(both.target.toArray(), only.target.toArray());
  const norms = [];
  const q = both.query.toArray();
  for (let b = 0; b < B; b++) norms.push(Math.hypot(...q.slice(b * dims.D, (b + 1) * dims.D)));
  t.true(norms.every((v) => Math.abs(v - 1) < 1e-5), 'query rows are unit vectors');
});

test('activation arena: no growth after the warm-up step', (t) => {
  const ins = makeInputs(rng);
  const dq = tensor(randArray([B, dims.D], rng), [B, dims.D]);
  const o = runOp('local_stream_loss', { ...mk(ins), dq, dt: dq }, { ...dims, seed: 2, repeat: 4, dropout: 0.5 });
  const g = Array.from(o.arena_grows.toArray());
  t.is(g[3], g[1], `arena grew after warm-up: ${g}`);
  t.true(g[1] <= 1);
});

test('bad arguments name the argument', (t) => {
  const ins = makeInputs(rng);
  const base = mk(ins);
  const bad = (over, attrs = {}) => () => runOp('local_stream_loss', { ...base, ...over }, { ...dims, ...attrs });
  const tokBad = ins.tokens[0].slice();
  tokBad[0] = dims.V;
  throwsNaming(t, bad({ tokens: tensor(tokBad, [B, L], 'int32') }), 'tokens', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, bad({ tokens: tensor(new Float32Array(B * L), [B, L]) }), 'tokens', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, bad({ lengths: tensor(Int32Array.from([L, 0, 1]), [B], 'int32') }), 'lengths', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, bad({ lengths: tensor(Int32Array.from([L + 1, 1, 1]), [B], 'int32') }), 'lengths', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, bad({ fmap_target: tensor(new Float32Array(B * dims.C * H * W), [B, dims.C, W, H]) }), 'fmap_target');
  throwsNaming(t, bad({ dq: tensor(new Float32Array(B * 3), [B, 3]) }), 'dq', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, bad({ 'param.local.fc_txt.weight': tensor(new Float32Array(4), [2, 2]) }), 'param.local.fc_txt.weight');
  throwsNaming(t, () => runOp('local_stream_loss', { tokens: base.tokens }, dims), 'fmap', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('local_stream_loss', { fmap: base.fmap }, dims), 'tokens', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, bad({}, { dropout: Number.NaN }), 'dropout', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, bad({}, { dropout: 1 }), 'dropout', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, bad({}, { D: 12 }), 'D', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('local_stream_loss', base, { D: 16, E: 8 }), 'V', 'DWC_BAD_ARGUMENT');
  const fm = randArray([B, 12, H, W], rng);
  throwsNaming(t, () => runOp('local_stream_loss', { ...base, fmap: tensor(fm, [B, 12, H, W]), fmap_target: tensor(fm, [B, 12, H, W]) },
    dims), 'C', 'DWC_BAD_ARGUMENT');
});

// ---- one Inception block on its own (op inception_block) ----
for (const twoD of [1, 0]) {
  test(`inception block (${twoD ? '2d' : '1d'}) backward matches finite differences`, (t) => {
    const shape = twoD ? [3, 6, 3, 4] : [3, 6, 5];
    const x = randArray(shape, rng);
    const names = ['branch0.conv.weight', 'branch1.2.conv.weight', 'branch2.4.conv.weight', 'branch2.0.bn.weight', 'branch3.1.bn.bias'];
    const init = runOp('inception_block', { x: tensor(x, shape) }, { in: 6, out: 16, two_d: twoD, seed: 4 });
    const inputs = { x: [x, shape] };
    for (const n of names) inputs[`param.${n}`] = [init[`param.${n}`].toArray(), init[`param.${n}`].shape];
    fdCheck(t, {
      op: 'inception_block',
      inputs,
      attrs: { in: 6, out: 16, two_d: twoD, seed: 4 },
      outputs: ['y'],
      dyInputs: (dys) => ({ dy: dys.y }),
      grads: { x: 'dx', ...Object.fromEntries(names.map((n) => [`param.${n}`, `grad.${n}`])) },
    });
  });
}

test('inception block: bad arguments name the argument', (t) => {
  const x = tensor(randArray([2, 6, 3, 3], rng), [2, 6, 3, 3]);
  throwsNaming(t, () => runOp('inception_block', { x }, { in: 6, out: 12 }), 'out', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('inception_block', { x }, { in: 5, out: 16 }), 'x', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('inception_block', { x, dy: x }, { in: 6, out: 16 }), 'dy', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('inception_block', { x }, { in: 6, out: 16, two_d: 0 }), 'x', 'DWC_BAD_ARGUMENT');
});

// ---- padded texts: batch-independent query embeddings (spec §10, masking of the Inc1d) ----

// x [N,C,L] -> sample n cut to its first len positions, [1,C,len]
function cutSample(x, C, L, n, len) {
  const out = new Float32Array(C * len);
  for (let c = 0; c < C; c++) out.set(x.subarray((n * C + c) * L, (n * C + c) * L + len), c * len);
  return out;
}
// y [N,C,L] -> [C,len] rows of sample n, and its padded values
function realPart(y, C, L, n, len) {
  const real = [], pad = [];
  for (let c = 0; c < C; c++)
    for (let p = 0; p < L; p++) (p < len ? real : pad).push(y[(n * C + c) * L + p]);
  return { real, pad };
}
const INC1D_UNITS = { 'branch0.': 6, 'branch1.0.': 8, 'branch1.2.': 4, 'branch2.0.': 4, 'branch2.2.': 2, 'branch2.4.': 4, 'branch3.1.': 2 }; // out 16
function inc1dEvalParams(r) {
  const p = {};
  for (const [u, co] of Object.entries(INC1D_UNITS)) {
    p[`param.${u}bn.running_mean`] = tensor(randArray([co], r, 0.3), [co]);
    p[`param.${u}bn.running_var`] = tensor(Float32Array.from({ length: co }, () => 0.5 + r.uniform()), [co]);
    p[`param.${u}bn.weight`] = tensor(Float32Array.from({ length: co }, () => 0.5 + r.uniform()), [co]);
    p[`param.${u}bn.bias`] = tensor(randArray([co], r, 0.5), [co]);
  }
  return p;
}

test('masked Inc1d (eval): each text of a padded batch gets what it gets alone; padded outputs are 0; unmasked they differ', (t) => {
  const N = 4, C = 6, L = 7, lens = [7, 3, 1, 5];
  const x = randArray([N, C, L], rng); // garbage at padded positions too: the block masks its input
  const params = inc1dEvalParams(rng);
  const attrs = { in: 6, out: 16, two_d: 0, seed: 4, train: 0 };
  const lengths = tensor(Int32Array.from(lens), [N], 'int32');
  const y = runOp('inception_block', { x: tensor(x, [N, C, L]), lengths, ...params }, attrs).y.toArray();
  const yu = runOp('inception_block', { x: tensor(x, [N, C, L]), ...params }, attrs).y.toArray();
  let unmaskedWorst = 0;
  lens.forEach((len, n) => {
    const alone = runOp('inception_block', { x: tensor(cutSample(x, C, L, n, len), [1, C, len]), ...params }, attrs).y.toArray();
    const { real, pad } = realPart(y, 16, L, n, len);
    const err = relErr(real, Array.from(alone));
    t.true(err <= 1e-6, `sample ${n} (length ${len} of ${L}): relative error ${err.toExponential(3)} against alone`);
    t.true(pad.every((v) => v === 0), `sample ${n}: padded outputs are 0`);
    if (len < L) unmaskedWorst = Math.max(unmaskedWorst, relErr(realPart(yu, 16, L, n, len).real, Array.from(alone)));
  });
  t.true(unmaskedWorst > 1e-3, `unmasked (reference) the padding leaks in: ${unmaskedWorst}`);
});

test('masked Inc1d (train): more padding changes nothing (BN statistics over real positions); no gradient at padded positions', (t) => {
  const N = 3, C = 6, lens = [5, 2, 4];
  const run = (L) => {
    const x = new Float32Array(N * C * L), dy = new Float32Array(N * 16 * L);
    const r = makeRng(seed ^ 0x5a5a); // the same real values for both L; fresh garbage at padded positions
    for (let n = 0; n < N; n++)
      for (let c = 0; c < C; c++) for (let p = 0; p < L; p++) x[(n * C + c) * L + p] = p < lens[n] ? r.normal() : 10 * rng.normal();
    for (let n = 0; n < N; n++)
      for (let c = 0; c < 16; c++) for (let p = 0; p < L; p++) dy[(n * 16 + c) * L + p] = p < lens[n] ? r.normal() : 10 * rng.normal();
    return runOp('inception_block', { x: tensor(x, [N, C, L]), dy: tensor(dy, [N, 16, L]), lengths: tensor(Int32Array.from(lens), [N], 'int32') },
      { in: 6, out: 16, two_d: 0, seed: 4 });
  };
  const a = run(5), b = run(9);
  for (let n = 0; n < N; n++) {
    t.true(relErr(realPart(b.y.toArray(), 16, 9, n, lens[n]).real, realPart(a.y.toArray(), 16, 5, n, lens[n]).real) <= 1e-6, `y of sample ${n}`);
    t.true(relErr(realPart(b.dx.toArray(), C, 9, n, lens[n]).real, realPart(a.dx.toArray(), C, 5, n, lens[n]).real) <= 1e-6, `dx of sample ${n}`);
    t.true(realPart(b.dx.toArray(), C, 9, n, lens[n]).pad.every((v) => v === 0), `dx of sample ${n} is 0 at padded positions`);
  }
  for (const k of Object.keys(a).filter((k) => k.startsWith('grad.') || /running_/.test(k))) {
    const err = relErr(b[k].toArray(), a[k].toArray());
    t.true(err <= 1e-6, `${k}: relative error ${err.toExponential(3)}`);
  }
  t.true(a['param.branch2.2.bn.running_var'].toArray().some((v) => v !== 1), 'running stats moved');
});

test('masked Inc1d backward matches finite differences at lengths < L', (t) => {
  const shape = [3, 6, 5];
  const x = randArray(shape, rng);
  const names = ['branch0.conv.weight', 'branch1.2.conv.weight', 'branch2.4.conv.weight', 'branch2.2.bn.weight', 'branch3.1.conv.weight', 'branch3.1.bn.bias'];
  const init = runOp('inception_block', { x: tensor(x, shape) }, { in: 6, out: 16, two_d: 0, seed: 4 });
  const inputs = { x: [x, shape], lengths: [Int32Array.from([5, 2, 1]), [3], 'int32'] };
  for (const n of names) inputs[`param.${n}`] = [init[`param.${n}`].toArray(), init[`param.${n}`].shape];
  fdCheck(t, {
    op: 'inception_block',
    inputs,
    attrs: { in: 6, out: 16, two_d: 0, seed: 4 },
    outputs: ['y'],
    dyInputs: (dys) => ({ dy: dys.y }),
    grads: { x: 'dx', ...Object.fromEntries(names.map((n) => [`param.${n}`, `grad.${n}`])) },
    samples: 12,
  });
});

test('masked avgpool3 of padded sequences: each row as unpadded avgpool3, 0 beyond; backward is its adjoint', (t) => {
  const C = 3, N = 4, L = 6, lens = [6, 1, 2, 4];
  const x = randArray([C, N, L], rng), dy = randArray([C, N, L], rng);
  const lengths = tensor(Int32Array.from(lens), [N], 'int32');
  const y = runOp('avgpool3_len_forward', { x: tensor(x, [C, N, L]), lengths }).y.toArray();
  const dx = runOp('avgpool3_len_backward', { dy: tensor(dy, [C, N, L]), lengths }).dx.toArray();
  let ydy = 0, xdx = 0;
  for (let c = 0; c < C; c++)
    for (let n = 0; n < N; n++) {
      const o = (c * N + n) * L, len = lens[n];
      const alone = runOp('avgpool3_forward', { x: tensor(x.slice(o, o + len), [1, 1, len]) }).y.toArray();
      t.deepEqual(Array.from(y.slice(o, o + len)), Array.from(alone), `row (${c}, ${n}) bit-identical to its unpadded avgpool3`);
      t.true(Array.from(y.slice(o + len, o + L)).every((v) => v === 0) && Array.from(dx.slice(o + len, o + L)).every((v) => v === 0));
      for (let p = 0; p < len; p++) (ydy += y[o + p] * dy[o + p]), (xdx += x[o + p] * dx[o + p]);
    }
  t.true(Math.abs(ydy - xdx) <= 1e-5 * Math.max(1, Math.abs(ydy)), `<y, dy> = ${ydy} vs <x, dx> = ${xdx}`);
  throwsNaming(t, () => runOp('avgpool3_len_forward', { x: tensor(x, [C, N, L]), lengths: tensor(Int32Array.from([7, 1, 1, 1]), [N], 'int32') }), 'lengths', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('inception_block', { x: tensor(randArray([2, 6, 3, 3], rng), [2, 6, 3, 3]), lengths: tensor(Int32Array.from([1, 1]), [2], 'int32') },
    { in: 6, out: 16 }), 'lengths', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('inception_block', { x: tensor(randArray([2, 6, 3], rng), [2, 6, 3]), lengths: tensor(Int32Array.from([4, 1]), [2], 'int32') },
    { in: 6, out: 16, two_d: 0 }), 'lengths', 'DWC_BAD_ARGUMENT');
});

// whole local stream: B texts of lengths 1..L embedded together vs each alone (L = its length)
function streamEvalParams(r) {
  const p = {};
  for (const name of Object.keys(initParams)) {
    if (name.startsWith('offset:')) continue;
    const shape = initParams[name].shape, n = initParams[name].numel;
    if (name.endsWith('running_mean')) p[`param.${name}`] = tensor(randArray(shape, r, 0.3), shape);
    else if (name.endsWith('running_var')) p[`param.${name}`] = tensor(Float32Array.from({ length: n }, () => 0.5 + r.uniform()), shape);
  }
  return p;
}
function streamSample(ins, n, len, Lfull) {
  const per = dims.C * H * W;
  return {
    fmap: tensor(ins.fmap[0].slice(n * per, (n + 1) * per), [1, dims.C, H, W]),
    tokens: tensor(ins.tokens[0].slice(n * Lfull, n * Lfull + len), [1, len], 'int32'),
    lengths: tensor(Int32Array.of(len), [1], 'int32'),
  };
}

test('local stream (eval): a batch of texts of different lengths embeds each query as it is embedded alone', (t) => {
  const ins = makeInputs(rng); // lengths L, 2, 4
  const lens = Array.from(ins.lengths[0]);
  const params = streamEvalParams(rng);
  const attrs = { ...dims, seed: 11, train: 0 };
  const batch = runOp('local_stream_loss', { fmap: tensor(...ins.fmap), tokens: tensor(...ins.tokens), lengths: tensor(...ins.lengths), ...params }, attrs);
  const q = batch.query.toArray(), w = batch.weight.toArray();
  lens.forEach((len, n) => {
    const alone = runOp('local_stream_loss', { ...streamSample(ins, n, len, L), ...params }, attrs);
    const err = relErr(q.slice(n * dims.D, (n + 1) * dims.D), alone.query.toArray());
    t.true(err <= 1e-6, `query ${n} (length ${len} of ${L}): relative error ${err.toExponential(3)} against alone`);
    t.true(Math.abs(w[n] - alone.weight.toArray()[0]) <= 1e-6 * Math.abs(w[n]), `w of query ${n}: ${w[n]} vs ${alone.weight.toArray()[0]}`);
  });
});

test('local stream (train): padding a batch further changes no output, gradient or running statistic', (t) => {
  const ins = makeInputs(rng);
  const lens = Array.from(ins.lengths[0]);
  const dq = tensor(randArray([B, dims.D], rng), [B, dims.D]);
  const run = (Lp) => {
    const tok = new Int32Array(B * Lp);
    for (let n = 0; n < B; n++) for (let p = 0; p < Lp; p++) tok[n * Lp + p] = p < lens[n] ? ins.tokens[0][n * L + p] : rng.int(dims.V);
    return runOp('local_stream_loss', { fmap: tensor(...ins.fmap), tokens: tensor(tok, [B, Lp], 'int32'), lengths: tensor(...ins.lengths), dq },
      { ...dims, seed: 11, input_grads: 1 });
  };
  const a = run(L), b = run(L + 3);
  const keys = ['query', 'weight', 'dfmap', ...Object.keys(a).filter((k) => k.startsWith('grad.') || /running_/.test(k))];
  t.true(keys.length > 100);
  let worst = [0, ''];
  for (const k of keys) {
    const err = relErr(b[k].toArray(), a[k].toArray());
    // forward values to 1e-6; gradients to 1e-4 (the parity bound of spec §11): they are sums over
    // N·L columns whose GEMM blocking changes with L, and some (BN γ, GeM p) cancel to a few digits;
    // a GeM exponent's gradient Σ h(v_i) with small v_i (a row's values close) magnifies input
    // rounding ~2·δx/(x·v): 1e-3 for those (seen 1.03e-4 in CI), a masking error would be O(1)
    const tol = k === 'query' || k === 'weight' || k.includes('running_') ? 1e-6 : /pool_[a-z]+\.p$/.test(k) ? 1e-3 : 1e-4;
    t.true(err <= tol, `${k}: relative error ${err.toExponential(3)} with 3 more padded positions`);
    if (err > worst[0]) worst = [err, k];
  }
  t.log(`worst relative change: ${worst[0].toExponential(2)} (${worst[1]})`);
});
