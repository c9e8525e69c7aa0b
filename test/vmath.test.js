// The shared vectorised exp / log (native/core/vmath.h, op vmath_eval; docs/ACCURACY.md):
// max ulp error against double-precision Math.exp / Math.log over the whole float range,
// denormal inputs and results, and the IEEE limits.
import test from 'ava';
import { runOp, tensor } from '../lib/index.js';
import { makeRng, freshSeed } from './helpers/index.js';

const f32 = new Float32Array(1);
const i32 = new Int32Array(f32.buffer);
const fromBits = (b) => {
  i32[0] = b;
  return f32[0];
};
const bitsOf = (x) => {
  f32[0] = x;
  return i32[0];
};
// one float32 ulp at the (rounded) value r: 2^(e−23) for normals, 2^−149 for denormals and 0
function ulpAt(r) {
  const e = (bitsOf(r) >>> 23) & 0xff;
  return e === 0 ? 2 ** -149 : 2 ** (e - 127 - 23);
}
// error of y in ulps of the correctly rounded answer to ref (a double); Infinity when a limit is wrong
function ulpErr(y, ref) {
  if (Number.isNaN(ref)) return Number.isNaN(y) ? 0 : Infinity;
  const r = Math.fround(ref);
  if (!Number.isFinite(r)) return y === r ? 0 : Infinity;
  if (!Number.isFinite(y)) return Infinity;
  return Math.abs(y - ref) / ulpAt(r);
}

function worst(fn, xs, ref) {
  const y = runOp('vmath_eval', { x: tensor(xs, [xs.length]) }, { fn }).y.toArray();
  let w = 0;
  let wx = 0;
  for (let i = 0; i < xs.length; i++) {
    const e = ulpErr(y[i], ref(xs[i]));
    if (!(e <= w)) {
      w = e;
      wx = xs[i];
    }
  }
  return { w, wx };
}

const seed = freshSeed();
// n random bit patterns in [lo, hi] (inclusive) plus every pattern within `edge` of both ends
function patterns(rng, lo, hi, n, edge = 4096) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(fromBits(lo + Math.floor(rng.uniform() * (hi - lo + 1))));
  for (let b = lo; b < lo + edge && b <= hi; b++) out.push(fromBits(b));
  for (let b = hi; b > hi - edge && b >= lo; b--) out.push(fromBits(b));
  return Float32Array.from(out);
}

test('vm::exp is within 2 ulp of exp over [-104, 89]: denormal results, overflow edge, both signs', (t) => {
  const rng = makeRng(seed);
  // positive x up to 89 (bits 0x42b20000), negative down to -104 (sign bit set)
  const pos = patterns(rng, 0, bitsOf(89), 600000);
  const neg = patterns(rng, bitsOf(-0) | 0, bitsOf(-104), 600000);
  // the limits: ln(FLT_MAX) = 88.7228391, denormal results below -87.336, underflow to 0 near -103.97
  const edges = [];
  for (const c of [88.7228391, -87.3365448, -103.972084, -103.278931, 0, 1, -1]) {
    const b = bitsOf(c);
    for (let k = -3000; k <= 3000; k++) edges.push(fromBits(b + k));
  }
  let max = 0;
  for (const xs of [pos, neg, Float32Array.from(edges)]) {
    const { w, wx } = worst(0, xs, Math.exp);
    t.true(w <= 2, `exp(${wx}): ${w} ulp (seed ${seed})`);
    max = Math.max(max, w);
  }
  t.log(`max ${max.toFixed(3)} ulp (seed ${seed})`);
});

test('vm::log is within 2 ulp of log over all positive floats, denormals included', (t) => {
  const rng = makeRng(seed + 1);
  const normal = patterns(rng, 0x00800000, 0x7f7fffff, 1000000);
  const denorm = patterns(rng, 1, 0x007fffff, 200000);
  const near1 = [];
  for (let k = -20000; k <= 20000; k++) near1.push(fromBits(0x3f800000 + k));
  let max = 0;
  for (const xs of [normal, denorm, Float32Array.from(near1)]) {
    const { w, wx } = worst(1, xs, Math.log);
    t.true(w <= 2, `log(${wx}): ${w} ulp (seed ${seed})`);
    max = Math.max(max, w);
  }
  t.log(`max ${max.toFixed(3)} ulp (seed ${seed})`);
});

test('vm::exp and vm::log give the IEEE results at the limits', (t) => {
  const xs = Float32Array.from([NaN, Infinity, -Infinity, 0, -0, 89, 1000, -104, -1000, -1, 2 ** -149, 3.4028234663852886e38]);
  const e = runOp('vmath_eval', { x: tensor(xs, [xs.length]) }, { fn: 0 }).y.toArray();
  const l = runOp('vmath_eval', { x: tensor(xs, [xs.length]) }, { fn: 1 }).y.toArray();
  t.true(Number.isNaN(e[0]) && Number.isNaN(l[0]), 'NaN');
  t.deepEqual([e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8]], [Infinity, 0, 1, 1, Infinity, Infinity, 0, 0]);
  t.deepEqual([l[1], l[3], l[4]], [Infinity, -Infinity, -Infinity]);
  t.true(Number.isNaN(l[2]) && Number.isNaN(l[9]), 'log of a negative number is NaN');
  t.true(ulpErr(l[10], Math.log(2 ** -149)) <= 2 && ulpErr(l[11], Math.log(3.4028234663852886e38)) <= 2);
  t.true(ulpErr(e[9], Math.exp(-1)) <= 2);
});

test('vmath_eval rejects an unknown function', (t) => {
  const err = t.throws(() => runOp('vmath_eval', { x: tensor(Float32Array.of(1), [1]) }, { fn: 2 }));
  t.regex(err.message, /'fn'/);
});
