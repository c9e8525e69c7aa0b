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
