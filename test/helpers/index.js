// Shared test helpers: seeded random tensors, relative error, finite-difference gradient
// checks over registered ops, and the fixture loader for PyTorch parity.
import { tensor, runOp } from '../../lib/index.js';
import { readSafetensors } from '../../lib/safetensors.js';

/** mulberry32: small seeded PRNG for test data (the seed is printed on failure). */
export function makeRng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    uniform: next,
    normal() {
      const u = Math.max(next(), 1e-12);
      return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
    },
    int(n) {
      return Math.floor(next() * n);
    },
  };
}

// A fresh seed per run; DWC_TEST_SEED=N replays a run whose failure message quoted seed N.
export const freshSeed = () => (process.env.DWC_TEST_SEED ? Number(process.env.DWC_TEST_SEED) >>> 0 : (Date.now() ^ (process.pid << 8)) >>> 0);

export const numel = (shape) => shape.reduce((a, b) => a * b, 1);

/**
 * Whether a ReLU kink explains a finite-difference miss at entry i of w: at one of the steps (each
 * times `scale`) the one-sided differences disagree (rel > 4·tol) and the analytic gradient a
 * (that of the branch w[i] is on) equals one of them (rel ≤ tol). A wrong gradient matches neither
 * side. Every step is tried: at the smallest the clean side may still carry rounding noise, at the
 * largest the kink may be in both. `set(w)` writes w back into the model; w[i] is restored.
 */
export function kinkExplains({ loss, set, w, i, a, steps, rel, tol, scale = 1 }) {
  const orig = w[i];
  const l0 = loss();
  try {
    for (const h0 of steps) {
      const h = h0 * scale;
      w[i] = orig + h;
      set(w);
      const right = (loss() - l0) / h;
      w[i] = orig - h;
      set(w);
      const left = (l0 - loss()) / h;
      if (rel(left, right) > 4 * tol && Math.min(rel(right, a), rel(left, a)) <= tol) return true;
    }
    return false;
  } finally {
    w[i] = orig;
    set(w);
  }
}

export function randArray(shape, rng, scale = 1) {
  const a = new Float32Array(numel(shape));
  for (let i = 0; i < a.length; i++) a[i] = rng.normal() * scale;
  return a;
}

/** B random rows of D floats, each of unit L2 norm (partner embeddings of the streams' losses). */
export function unitRows(B, D, rng) {
  const a = randArray([B, D], rng);
  for (let i = 0; i < B; i++) {
    const n = Math.hypot(...a.subarray(i * D, (i + 1) * D));
    for (let j = 0; j < D; j++) a[i * D + j] /= n;
  }
  return a;
}

export function randn(shape, rng, scale = 1) {
  return tensor(randArray(shape, rng, scale), shape);
}

/** ‖a − b‖ / ‖b‖ (with a floor so that all-zero references compare absolutely). */
export function relErr(a, b) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-6);
}

function dot(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Central finite differences against a registered backward op.
 * spec = {
 *   forward, backward: op names
 *   inputs: { name: Float32Array|Int32Array with shape }   as { name: [data, shape, dtype?] }
 *   attrs, backwardAttrs
 *   outputs: [names of differentiable forward outputs]
 *   backwardInputs(ins, outs, dys) -> { name: Tensor }     (ins/outs/dys are Tensors)
 *   grads: { inputName: backwardOutputName }
 *   eps (1e-3), tol (2e-2), samples (per input, default 16), seed
 *   floor (1e-3): the smallest gradient magnitude errors are measured against (the finite
 *     difference of float32 outputs has an absolute noise of about ulp(loss)/eps)
 * }
 * L = Σ_o <r_o, y_o> with fixed random r_o; checks dL/d(input) element-wise on samples.
 */
export function gradcheck(t, spec) {
  const seed = spec.seed ?? freshSeed();
  const rng = makeRng(seed);
  const eps = spec.eps ?? 1e-3;
  const tol = spec.tol ?? 2e-2;
  const mk = (entries) => {
    const o = {};
    for (const [k, [data, shape, dtype]] of Object.entries(entries)) o[k] = tensor(data, shape, dtype ?? 'float32');
    return o;
  };
  const base = Object.fromEntries(Object.entries(spec.inputs).map(([k, [d, s, dt]]) => [k, [d.slice(), s, dt]]));
  const outs = runOp(spec.forward, mk(base), spec.attrs ?? {});
  const r = {};
  for (const o of spec.outputs) r[o] = randArray(outs[o].shape, rng);
  const loss = (entries) => {
    const y = runOp(spec.forward, mk(entries), spec.attrs ?? {});
    let s = 0;
    for (const o of spec.outputs) s += dot(y[o].toArray(), r[o]);
    return s;
  };
  const dys = {};
  for (const o of spec.outputs) dys[o] = tensor(r[o], outs[o].shape);
  const grads = runOp(spec.backward, spec.backwardInputs(mk(base), outs, dys), spec.backwardAttrs ?? spec.attrs ?? {});
  for (const [inName, gName] of Object.entries(spec.grads)) {
    t.truthy(grads[gName], `backward op ${spec.backward} did not return '${gName}'`);
    const g = grads[gName].toArray();
    const [data, shape] = base[inName];
    t.deepEqual(grads[gName].shape, shape, `${gName} shape`);
    const n = data.length;
    const samples = Math.min(n, spec.samples ?? 16);
    let gscale = 0;
    for (let i = 0; i < n; i++) gscale = Math.max(gscale, Math.abs(g[i]));
    let worst = 0;
    let worstMsg = '';
    for (let s = 0; s < samples; s++) {
      const i = samples === n ? s : rng.int(n);
      const plus = Object.fromEntries(Object.entries(base).map(([k, [d, sh, dt]]) => [k, [k === inName ? d.slice() : d, sh, dt]]));
      const minus = Object.fromEntries(Object.entries(base).map(([k, [d, sh, dt]]) => [k, [k === inName ? d.slice() : d, sh, dt]]));
      const h = eps * Math.max(1, Math.abs(data[i]));
      plus[inName][0][i] = data[i] + h;
      minus[inName][0][i] = data[i] - h;
      const hp = plus[inName][0][i] - data[i];
      const hm = data[i] - minus[inName][0][i];
      const fd = (loss(plus) - loss(minus)) / (hp + hm);
      const err = Math.abs(fd - g[i]) / Math.max(Math.abs(g[i]), Math.abs(fd), 0.05 * gscale, spec.floor ?? 1e-3);
      if (err > worst) {
        worst = err;
        worstMsg = `${inName}[${i}]: analytic ${g[i]} vs finite-difference ${fd}`;
      }
    }
    t.true(worst <= tol, `${spec.forward}: gradient of '${inName}' off by ${worst.toExponential(2)} (${worstMsg}); seed ${seed}`);
  }
}

/** Loads test/fixtures/<file> and returns [{name, op, attrs, inputs: {k: Tensor}, expected: {k: {dtype, data, shape}},
 * accuracy}] (accuracy: per expected tensor {norm, f32_err, f32_spread}, docs/ACCURACY.md; judged by
 * test/helpers/accuracy.js assertOpCase). */
export function loadFixtureCases(path) {
  const f = readSafetensors(path);
  const cases = [];
  for (const [name, json] of Object.entries(f.metadata)) {
    const { op, attrs, accuracy } = JSON.parse(json);
    const inputs = {};
    const expected = {};
    for (const [k, v] of f.tensors) {
      if (k.startsWith(`${name}/in.`)) inputs[k.slice(name.length + 4)] = tensor(v.data, v.shape, v.dtype === 'I32' ? 'int32' : 'float32');
      else if (k.startsWith(`${name}/out.`)) expected[k.slice(name.length + 5)] = { dtype: v.dtype, data: v.data, shape: v.shape };
    }
    cases.push({ name, op, attrs, inputs, expected, accuracy });
  }
  return cases;
}

/** Asserts that fn throws a native error whose message names `argName` (and optionally has `code`). */
export function throwsNaming(t, fn, argName, code) {
  const err = t.throws(fn);
  if (!err) return;
  t.true(err.message.includes(`'${argName}'`), `error should name '${argName}': ${err.message}`);
  if (code) t.is(err.code, code, err.message);
}

/** C = alpha·op(A)·op(B) + beta·C in double (row-major; C may be null). */
export function gemmRef(tA, tB, M, N, K, alpha, A, B, beta, C) {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += (tA ? A[k * M + i] : A[i * K + k]) * (tB ? B[j * K + k] : B[k * N + j]);
      out[i * N + j] = alpha * s + (C ? beta * C[i * N + j] : 0);
    }
  return out;
}

// erf by Abramowitz & Stegun 7.1.26 is too coarse for a float64 reference: a series / continued
// fraction to ~1e-15 instead.
export function erf(x) {
  const ax = Math.abs(x);
  let r;
  if (ax < 3) {
    let term = ax, s = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const c = term / (2 * n + 1);
      s += c;
      if (Math.abs(c) < 1e-17 * Math.abs(s)) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * s;
  } else {
    // erfc continued fraction (Lentz), converges fast for x ≥ 3
    let f = ax, C = ax, D = 0;
    for (let n = 1; n < 200; n++) {
      const an = n / 2;
      D = ax + an * D;
      D = 1 / D;
      C = ax + an / C;
      const delta = C * D;
      f *= delta;
      if (Math.abs(delta - 1) < 1e-16) break;
    }
    r = 1 - Math.exp(-ax * ax) / (f * Math.sqrt(Math.PI));
  }
  return x < 0 ? -r : r;
}
