// Fused DWC kernels (spec §3–§5): finite differences, PyTorch fixtures, the fused ops against the
// same math composed from the plain ops (gemm, rowops, elementwise), and bad arguments.
import test from 'ava';
import { join } from 'node:path';
import { addon, runOp, tensor } from '../lib/index.js';
import { gradcheck, makeRng, freshSeed, randArray, relErr, loadFixtureCases, throwsNaming } from './helpers/index.js';
import { assertOpCase } from './helpers/accuracy.js';

const seed = freshSeed();
const rng = makeRng(seed);
const fixtures = loadFixtureCases(join(new URL('./fixtures/kernels/', import.meta.url).pathname, 'lstm_dwc.safetensors'));
const TOL = 1e-5; // fused vs composed
// Rows of norm 0.3 (0.4 for mutual) in the composition tests: with unit rows and 1/τ = 14 the
// softmaxes saturate and float32 rounding alone moves the gradients by up to 1e-3 relative (measured
// against float64), whatever the order of operations; the fixtures cover the unit-norm case.

const arr = (t) => t.toArray();
const unitRows = (B, D, scale = 1) => {
  const a = randArray([B, D], rng);
  for (let i = 0; i < B; i++) {
    let n = 0;
    for (let d = 0; d < D; d++) n += a[i * D + d] ** 2;
    n = Math.sqrt(n);
    for (let d = 0; d < D; d++) a[i * D + d] *= scale / n;
  }
  return a;
};
const sum = (...xs) => xs[0].map((_, i) => xs.reduce((s, x) => s + x[i], 0));
function close(t, got, want, what, tol = TOL) {
  const err = relErr(got, want);
  t.true(err <= tol, `${what}: relative error ${err.toExponential(2)} > ${tol} (seed ${seed})`);
}

test('every fused op matches its PyTorch fixtures', (t) => {
  const ops = new Set();
  for (const c of fixtures.filter((f) => !f.op.startsWith('lstm_'))) {
    assertOpCase(t, c, runOp(c.op, c.inputs, c.attrs)); // float64 answer, docs/ACCURACY.md rule
    ops.add(c.op);
  }
  for (const f of ['cross_attention', 'weighted_fusion', 'soft_labels', 'contrastive', 'mutual'])
    for (const d of ['forward', 'backward']) t.true(ops.has(`${f}_${d}`), `no fixture for ${f}_${d}`);
});

// ---------------- cross attention ----------------
const xaInputs = (B, L, D, P, lens) => {
  const ins = { T: [randArray([B, L, D], rng, 0.5), [B, L, D]], I: [randArray([B, D, P], rng, 0.5), [B, D, P]] };
  if (lens) ins.lengths = [Int32Array.from(lens), [B], 'int32'];
  return ins;
};

for (const lens of [null, [4, 1, 3]]) {
  test(`cross attention backward matches finite differences${lens ? ' (lengths)' : ''}`, (t) => {
    gradcheck(t, {
      forward: 'cross_attention_forward',
      backward: 'cross_attention_backward',
      inputs: xaInputs(3, 4, 5, 6, lens),
      outputs: ['S_hat', 'I_hat'],
      backwardInputs: (ins, outs, dys) => ({ ...ins, A_s: outs.A_s, A_w: outs.A_w, dS_hat: dys.S_hat, dI_hat: dys.I_hat }),
      grads: { T: 'dT', I: 'dI' },
      samples: 24,
      seed,
    });
  });
}

test('cross attention with other temperatures matches finite differences', (t) => {
  gradcheck(t, {
    forward: 'cross_attention_forward',
    backward: 'cross_attention_backward',
    inputs: xaInputs(2, 3, 4, 5, [2, 3]),
    attrs: { temp_s: 1.5, temp_w: 0.7 },
    outputs: ['S_hat', 'I_hat'],
    backwardInputs: (ins, outs, dys) => ({ ...ins, A_s: outs.A_s, A_w: outs.A_w, dS_hat: dys.S_hat, dI_hat: dys.I_hat }),
    grads: { T: 'dT', I: 'dI' },
    seed,
  });
});

/** Plain-op composition over nb samples that all have n tokens: T [nb,n,D], I [nb,D,P], dS [nb,D,P], dIh [nb,D,n]. */
function xaComposed(T, I, dS, dIh, ts, tw) {
  const g = (A, B, o = {}) => runOp('gemm_batched', { A, B }, o).C;
  const sm = (x, scale) => runOp('softmax_rows_forward', { x }, { scale }).y;
  const smb = (y, dy, scale) => runOp('softmax_rows_backward', { y, dy }, { scale }).dx;
  const AsT = sm(g(I, T, { transA: 1, transB: 1 }), 1 / ts); // softmax over tokens of Sᵀ: [nb,P,n]
  const Aw = sm(g(T, I), 1 / tw); // [nb,n,P]
  const Shat = g(T, AsT, { transA: 1, transB: 1 }); // Tᵀ A_s
  const Ihat = g(I, Aw, { transB: 1 }); // I A_wᵀ
  const dStT = smb(AsT, g(dS, T, { transA: 1, transB: 1 }), 1 / ts);
  const dSw = smb(Aw, g(dIh, I, { transA: 1 }), 1 / tw);
  const dT = sum(arr(g(AsT, dS, { transA: 1, transB: 1 })), arr(g(dSw, I, { transB: 1 })), arr(g(dStT, I, { transA: 1, transB: 1 })));
  const dI = sum(arr(g(dIh, Aw)), arr(g(T, dSw, { transA: 1 })), arr(g(T, dStT, { transA: 1, transB: 1 })));
  return { Shat: arr(Shat), Ihat: arr(Ihat), AsT: arr(AsT), Aw: arr(Aw), dT, dI };
}

const slice = (a, off, n) => a.slice(off, off + n);

for (const [label, B, L, D, P, lens, ts, tw] of [
  ['full length', 4, 5, 16, 9, null, 7, 4],
  ['masked', 4, 6, 12, 7, [6, 2, 1, 4], 7, 4],
  ['masked, other temperatures', 3, 5, 8, 10, [3, 5, 2], 2.5, 0.5],
]) {
  test(`cross attention: fused = composition of gemm_batched + softmax_rows (${label})`, (t) => {
    const T = randArray([B, L, D], rng, 0.5);
    const I = randArray([B, D, P], rng, 0.5);
    const dS = randArray([B, D, P], rng);
    const dIh = randArray([B, D, L], rng);
    const ins = { T: tensor(T, [B, L, D]), I: tensor(I, [B, D, P]) };
    if (lens) ins.lengths = tensor(lens, [B], 'int32');
    const attrs = { temp_s: ts, temp_w: tw };
    const f = runOp('cross_attention_forward', ins, attrs);
    const b = runOp('cross_attention_backward', { ...ins, A_s: f.A_s, A_w: f.A_w, dS_hat: tensor(dS, [B, D, P]), dI_hat: tensor(dIh, [B, D, L]) }, attrs);
    // Reference, padded back to [B, L, ...] with zeros for masked tokens.
    const want = { S_hat: new Float32Array(B * D * P), I_hat: new Float32Array(B * D * L), A_s: new Float32Array(B * L * P) };
    Object.assign(want, { A_w: new Float32Array(B * L * P), dT: new Float32Array(B * L * D), dI: new Float32Array(B * D * P) });
    const groups = lens ? lens.map((n, i) => [i, 1, n]) : [[0, B, L]]; // [first sample, count, tokens]
    for (const [b0, nb, n] of groups) {
      const Tb = new Float32Array(nb * n * D);
      const dIb = new Float32Array(nb * D * n);
      for (let s = 0; s < nb; s++) {
        Tb.set(slice(T, (b0 + s) * L * D, n * D), s * n * D);
        for (let d = 0; d < D; d++) dIb.set(slice(dIh, ((b0 + s) * D + d) * L, n), (s * D + d) * n);
      }
      const r = xaComposed(
        tensor(Tb, [nb, n, D]),
        tensor(slice(I, b0 * D * P, nb * D * P), [nb, D, P]),
        tensor(slice(dS, b0 * D * P, nb * D * P), [nb, D, P]),
        tensor(dIb, [nb, D, n]),
        ts,
        tw,
      );
      want.S_hat.set(r.Shat, b0 * D * P);
      want.dI.set(r.dI, b0 * D * P);
      for (let s = 0; s < nb; s++) {
        const bb = b0 + s;
        want.dT.set(slice(r.dT, s * n * D, n * D), bb * L * D);
        for (let d = 0; d < D; d++) want.I_hat.set(slice(r.Ihat, (s * D + d) * n, n), (bb * D + d) * L);
        for (let l = 0; l < n; l++)
          for (let p = 0; p < P; p++) {
            want.A_s[(bb * L + l) * P + p] = r.AsT[(s * P + p) * n + l];
            want.A_w[(bb * L + l) * P + p] = r.Aw[(s * n + l) * P + p];
          }
      }
    }
    for (const k of ['S_hat', 'I_hat', 'A_s', 'A_w']) close(t, arr(f[k]), want[k], k);
    for (const k of ['dT', 'dI']) close(t, arr(b[k]), want[k], k);
    if (lens) {
      const As = arr(f.A_s);
      t.true(lens.every((n, bb) => As.subarray((bb * L + n) * P, (bb + 1) * L * P).every((v) => v === 0)), 'masked A_s rows are 0');
    }
  });
}

// ---------------- weighted fusion ----------------
test('weighted fusion: finite differences and composition of mul ops', (t) => {
  const [B, D] = [5, 7];
  const a = randArray([B, D], rng);
  const b = randArray([B, D], rng);
  const w = Float32Array.from({ length: B }, () => rng.uniform());
  gradcheck(t, {
    forward: 'weighted_fusion_forward',
    backward: 'weighted_fusion_backward',
    inputs: { a: [a, [B, D]], b: [b, [B, D]], w: [w, [B]] },
    outputs: ['out'],
    backwardInputs: (ins, outs, dys) => ({ ...ins, dout: dys.out }),
    grads: { a: 'da', b: 'db', w: 'dw' },
    seed,
  });
  const dout = randArray([B, D], rng);
  const ins = { a: tensor(a, [B, D]), b: tensor(b, [B, D]), w: tensor(w, [B]) };
  const f = runOp('weighted_fusion_forward', ins).out;
  const g = runOp('weighted_fusion_backward', { ...ins, dout: tensor(dout, [B, D]) });
  const W = tensor(Float32Array.from({ length: B * D }, (_, i) => w[Math.floor(i / D)]), [B, D]);
  const W1 = tensor(Float32Array.from({ length: B * D }, (_, i) => 1 - w[Math.floor(i / D)]), [B, D]);
  const dy = tensor(dout, [B, D]);
  close(t, arr(f), sum(arr(runOp('mul_forward', { a: W, b: ins.a }).y), arr(runOp('mul_forward', { a: W1, b: ins.b }).y)), 'out');
  const ga = runOp('mul_backward', { a: W, b: ins.a, dy });
  const gb = runOp('mul_backward', { a: W1, b: ins.b, dy });
  close(t, arr(g.da), arr(ga.db), 'da');
  close(t, arr(g.db), arr(gb.db), 'db');
  const dw = new Float32Array(B);
  const dwa = arr(ga.da);
  const dwb = arr(gb.da);
  for (let i = 0; i < B * D; i++) dw[Math.floor(i / D)] += dwa[i] - dwb[i];
  close(t, arr(g.dw), dw, 'dw');
});

// ---------------- soft labels ----------------
test('soft labels backward matches finite differences', (t) => {
  const [B, D] = [6, 5];
  gradcheck(t, {
    forward: 'soft_labels_forward',
    backward: 'soft_labels_backward',
    inputs: { t: [unitRows(B, D), [B, D]], labels: [Int32Array.from([1, 2, 1, 0, 2, 1]), [B], 'int32'] },
    attrs: { alpha: 0.3, tau: 0.2 },
    outputs: ['Q'],
    backwardInputs: (ins, outs, dys) => ({ t: ins.t, sim_softmax: outs.sim_softmax, dQ: dys.Q }),
    grads: { t: 'dt' },
    seed,
  });
});

test('soft labels: fused = gemm + softmax_rows composition; rows of Q sum to 1', (t) => {
  const [B, D] = [8, 12];
  const alpha = 0.2;
  const tau = 0.07;
  const tv = unitRows(B, D, 0.3);
  const labels = Int32Array.from([0, 3, 0, 5, 3, 0, 7, 5]);
  const T = tensor(tv, [B, D]);
  const f = runOp('soft_labels_forward', { t: T, labels: tensor(labels, [B], 'int32') }, { alpha, tau });
  const dQ = randArray([B, B], rng);
  const g = runOp('soft_labels_backward', { t: T, sim_softmax: f.sim_softmax, dQ: tensor(dQ, [B, B]) }, { alpha, tau });
  const sim = runOp('gemm', { A: T, B: T }, { transB: 1 }).C;
  const sm = runOp('softmax_rows_forward', { x: sim }, { scale: 1 / tau }).y;
  const smv = arr(sm);
  const Q = new Float32Array(B * B);
  for (let i = 0; i < B; i++) {
    let cnt = 0;
    for (let j = 0; j < B; j++) cnt += labels[i] === labels[j] ? 1 : 0;
    for (let j = 0; j < B; j++) Q[i * B + j] = alpha * smv[i * B + j] + (1 - alpha) * (labels[i] === labels[j] ? 1 / cnt : 0);
  }
  close(t, arr(f.sim_softmax), smv, 'sim_softmax');
  close(t, arr(f.Q), Q, 'Q');
  const Qv = arr(f.Q);
  for (let i = 0; i < B; i++) t.true(Math.abs(Qv.subarray(i * B, (i + 1) * B).reduce((s, v) => s + v, 0) - 1) < 1e-5);
  const dsim = runOp('softmax_rows_backward', { y: sm, dy: tensor(dQ.map((v) => alpha * v), [B, B]) }, { scale: 1 / tau }).dx;
  const dt = sum(arr(runOp('gemm', { A: dsim, B: T }).C), arr(runOp('gemm', { A: dsim, B: T }, { transA: 1 }).C));
  close(t, arr(g.dt), dt, 'dt');
});

// ---------------- contrastive ----------------
test('contrastive backward matches finite differences (q, t and Q)', (t) => {
  const [B, D] = [5, 6];
  const Q = Float32Array.from({ length: B * B }, () => rng.uniform() / B);
  gradcheck(t, {
    forward: 'contrastive_forward',
    backward: 'contrastive_backward',
    inputs: { q: [unitRows(B, D), [B, D]], t: [unitRows(B, D), [B, D]], Q: [Q, [B, B]] },
    attrs: { tau: 0.1 },
    outputs: ['loss'],
    backwardInputs: (ins, outs, dys) => ({ ...ins, logp: outs.logp, dL: dys.loss }),
    grads: { q: 'dq', t: 'dt', Q: 'dQ' },
    seed,
  });
});

test('contrastive: fused = gemm + log_softmax_rows + mul composition; dL scales', (t) => {
  const [B, D] = [8, 16];
  const tau = 0.07;
  const q = tensor(unitRows(B, D, 0.3), [B, D]);
  const tt = tensor(unitRows(B, D, 0.3), [B, D]);
  const Q = tensor(Float32Array.from({ length: B * B }, () => rng.uniform() / B), [B, B]);
  const f = runOp('contrastive_forward', { q, t: tt, Q }, { tau });
  const g = runOp('contrastive_backward', { q, t: tt, Q, logp: f.logp }, { tau, dL: 0.5 });
  const g2 = runOp('contrastive_backward', { q, t: tt, Q, logp: f.logp, dL: tensor([0.5], [1]) }, { tau });
  const logp = runOp('log_softmax_rows_forward', { x: runOp('gemm', { A: q, B: tt }, { transB: 1 }).C }, { scale: 1 / tau }).y;
  const prod = arr(runOp('mul_forward', { a: Q, b: logp }).y);
  const loss = -prod.reduce((s, v) => s + v, 0) / B;
  close(t, arr(f.logp), arr(logp), 'logp');
  close(t, arr(f.loss), [loss], 'loss');
  const k = 0.5 / B;
  const dlogp = runOp('mul_backward', { a: Q, b: logp, dy: tensor(new Float32Array(B * B).fill(-k), [B, B]) });
  const dZ = runOp('log_softmax_rows_backward', { y: logp, dy: dlogp.db }, { scale: 1 / tau }).dx;
  close(t, arr(g.dq), arr(runOp('gemm', { A: dZ, B: tt }).C), 'dq');
  close(t, arr(g.dt), arr(runOp('gemm', { A: dZ, B: q }, { transA: 1 }).C), 'dt');
  close(t, arr(g.dQ), arr(dlogp.da), 'dQ');
  for (const k2 of ['dq', 'dt', 'dQ']) t.deepEqual(arr(g2[k2]), arr(g[k2]), `dL input = dL option (${k2})`);
});

// ---------------- mutual ----------------
test('mutual backward matches finite differences', (t) => {
  const [B, D] = [5, 6];
  gradcheck(t, {
    forward: 'mutual_forward',
    backward: 'mutual_backward',
    inputs: { q: [unitRows(B, D), [B, D]], t: [unitRows(B, D), [B, D]], q2: [unitRows(B, D), [B, D]], t2: [unitRows(B, D), [B, D]] },
    attrs: { s: 3 },
    outputs: ['loss'],
    backwardInputs: (ins, outs, dys) => ({ q: ins.q, t: ins.t, logp1: outs.logp1, p2: outs.p2, dL: dys.loss }),
    grads: { q: 'dq', t: 'dt' },
    seed,
  });
});

test('mutual: fused = gemm + (log_)softmax_rows + mul composition (KL(p2 || p1))', (t) => {
  const [B, D] = [8, 16];
  const s = 10;
  const [q, tt, q2, t2] = [0, 1, 2, 3].map(() => tensor(unitRows(B, D, 0.4), [B, D]));
  const f = runOp('mutual_forward', { q, t: tt, q2, t2 }, { s });
  const g = runOp('mutual_backward', { q, t: tt, logp1: f.logp1, p2: f.p2 }, { s, dL: 1.5 });
  const X1 = runOp('gemm', { A: q, B: tt }, { transB: 1, alpha: s }).C;
  const X2 = runOp('gemm', { A: q2, B: t2 }, { transB: 1, alpha: s }).C;
  const logp1 = runOp('log_softmax_rows_forward', { x: X1 }).y;
  const p2 = runOp('softmax_rows_forward', { x: X2 }).y;
  const logp2 = arr(runOp('log_softmax_rows_forward', { x: X2 }).y);
  const diff = tensor(logp2.map((v, i) => v - arr(logp1)[i]), [B, B]);
  const kl = arr(runOp('mul_forward', { a: p2, b: diff }).y).reduce((a, v) => a + v, 0) / B;
  close(t, arr(f.logp1), arr(logp1), 'logp1');
  close(t, arr(f.p2), arr(p2), 'p2');
  close(t, arr(f.loss), [kl], 'loss');
  t.true(arr(f.loss)[0] >= 0, 'KL is non-negative');
  const dlogp1 = tensor(arr(p2).map((v) => (-1.5 / B) * v), [B, B]);
  const dX1 = runOp('log_softmax_rows_backward', { y: logp1, dy: dlogp1 }).dx;
  close(t, arr(g.dq), arr(runOp('gemm', { A: dX1, B: tt }, { alpha: s }).C), 'dq');
  close(t, arr(g.dt), arr(runOp('gemm', { A: dX1, B: q }, { transA: 1, alpha: s }).C), 'dt');
  const same = runOp('mutual_forward', { q, t: tt, q2: q, t2: tt }, { s });
  t.true(Math.abs(arr(same.loss)[0]) < 1e-6, 'KL(p || p) = 0');
});

// ---------------- bad arguments ----------------
test('fused ops: bad arguments name the argument', (t) => {
  const [B, L, D, P] = [2, 3, 4, 5];
  const T = tensor(undefined, [B, L, D]);
  const I = tensor(undefined, [B, D, P]);
  const bad = (op, ins, attrs, name) => throwsNaming(t, () => runOp(op, ins, attrs), name, 'DWC_BAD_ARGUMENT');
  bad('cross_attention_forward', { T, I: tensor(undefined, [B, D + 1, P]) }, {}, 'I');
  bad('cross_attention_forward', { T, I: tensor(undefined, [B + 1, D, P]) }, {}, 'I');
  bad('cross_attention_forward', { T: tensor(undefined, [L, D]), I }, {}, 'T');
  bad('cross_attention_forward', { T }, {}, 'I');
  bad('cross_attention_forward', { T, I, lengths: tensor([1, 2], [B]) }, {}, 'lengths');
  bad('cross_attention_forward', { T, I, lengths: tensor([1, L + 1], [B], 'int32') }, {}, 'lengths');
  bad('cross_attention_forward', { T, I }, { temp_s: Number.NaN }, 'temp_s');
  bad('cross_attention_forward', { T, I }, { temp_w: 0 }, 'temp_w');
  const f = runOp('cross_attention_forward', { T, I });
  const bw = { T, I, A_s: f.A_s, A_w: f.A_w, dS_hat: f.S_hat, dI_hat: f.I_hat };
  bad('cross_attention_backward', { ...bw, dI_hat: f.S_hat }, {}, 'dI_hat');
  bad('cross_attention_backward', { ...bw, A_w: f.S_hat }, {}, 'A_w');
  const a = tensor(undefined, [B, D]);
  bad('weighted_fusion_forward', { a, b: a, w: tensor(undefined, [B + 1]) }, {}, 'w');
  bad('weighted_fusion_forward', { a, b: tensor(undefined, [B, D + 1]), w: tensor(undefined, [B]) }, {}, 'b');
  bad('weighted_fusion_backward', { a, b: a, w: tensor(undefined, [B]), dout: tensor(undefined, [B, 1]) }, {}, 'dout');
  const labels = tensor([0, 1], [B], 'int32');
  bad('soft_labels_forward', { t: a, labels: tensor([0, 1], [B]) }, {}, 'labels');
  bad('soft_labels_forward', { t: a, labels: tensor([0, 1, 2], [3], 'int32') }, {}, 'labels');
  bad('soft_labels_forward', { t: a, labels }, { tau: Number.POSITIVE_INFINITY }, 'tau');
  bad('soft_labels_forward', { t: a, labels }, { tau: -1 }, 'tau');
  bad('soft_labels_forward', { t: a, labels }, { alpha: 2 }, 'alpha');
  bad('soft_labels_backward', { t: a, sim_softmax: tensor(undefined, [B, B]), dQ: tensor(undefined, [B, B + 1]) }, {}, 'dQ');
  const Q = tensor(undefined, [B, B]);
  bad('contrastive_forward', { q: a, t: tensor(undefined, [B, D + 1]), Q }, {}, 't');
  bad('contrastive_forward', { q: a, t: a, Q: tensor(undefined, [B, B + 1]) }, {}, 'Q');
  bad('contrastive_forward', { q: a, t: a, Q }, { tau: Number.NaN }, 'tau');
  bad('contrastive_backward', { q: a, t: a, Q, logp: Q, dL: tensor([1, 2], [2]) }, {}, 'dL');
  bad('contrastive_backward', { q: a, t: a, Q, logp: Q }, { dL: Number.NaN }, 'dL');
  bad('mutual_forward', { q: a, t: a, q2: tensor(undefined, [B + 1, D]), t2: a }, {}, 'q2');
  bad('mutual_forward', { q: a, t: a, q2: a }, {}, 't2');
  bad('mutual_forward', { q: a, t: a, q2: a, t2: a }, { s: Number.NaN }, 's');
  bad('mutual_backward', { q: a, t: a, logp1: Q, p2: tensor(undefined, [B]) }, {}, 'p2');
});

// Each sample's products run on one thread (one parallel loop over samples): the same bits at 1
// and 2 threads, and for a sample alone as inside its batch (docs/PERFORMANCE.md).
test('cross attention: bit-identical at 1 and 2 threads and for each sample alone', (t) => {
  // L, D, P of the small preset: the per-sample GEMM shapes where oneDNN's 2-thread split rounded
  // differently from one thread before the change
  const [B, L, D, P] = [6, 12, 128, 64];
  const lens = [12, 3, 1, 5, 12, 2];
  const T = randArray([B, L, D], rng, 0.5);
  const I = randArray([B, D, P], rng, 0.5);
  const dS = randArray([B, D, P], rng);
  const dI = randArray([B, D, L], rng);
  const run = (b0, n) => {
    const ins = { T: tensor(slice(T, b0 * L * D, n * L * D), [n, L, D]), I: tensor(slice(I, b0 * D * P, n * D * P), [n, D, P]), lengths: tensor(Int32Array.from(lens.slice(b0, b0 + n)), [n], 'int32') };
    const f = runOp('cross_attention_forward', ins, {});
    const g = runOp('cross_attention_backward', { ...ins, A_s: f.A_s, A_w: f.A_w, dS_hat: tensor(slice(dS, b0 * D * P, n * D * P), [n, D, P]), dI_hat: tensor(slice(dI, b0 * D * L, n * D * L), [n, D, L]) }, {});
    return { S_hat: arr(f.S_hat), I_hat: arr(f.I_hat), dT: arr(g.dT), dI: arr(g.dI) };
  };
  const prev = addon().info().threads;
  addon().setNumThreads(2);
  try {
    const two = run(0, B);
    addon().setNumThreads(1);
    const one = run(0, B);
    for (const k of Object.keys(two)) t.deepEqual(one[k], two[k], `${k}: 1 vs 2 threads`);
    addon().setNumThreads(2);
    const per = { S_hat: D * P, I_hat: D * L, dT: L * D, dI: D * P };
    for (let b = 0; b < B; b++) {
      const alone = run(b, 1);
      for (const k of Object.keys(per)) t.deepEqual(alone[k], slice(two[k], b * per[k], per[k]), `${k}: sample ${b} alone vs in its batch`);
    }
  } finally {
    addon().setNumThreads(prev);
  }
});
