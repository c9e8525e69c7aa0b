// The accuracy rule of docs/ACCURACY.md: per tensor, the engine's error against the float64
// PyTorch answer may be at most max(1e-4·‖f64‖, 4 × PyTorch float32's error against float64,
// 3 × PyTorch float32's own spread when its inputs move by 1e-7). The generators
// (scripts/fixtures/common.py accuracy_stats) store the three figures per tensor as absolute
// 2-norms: {norm, f32_err, f32_spread}.

export const FLOOR = 1e-4;

/** The bound on ‖engine − f64‖ (absolute) for one tensor's stats (floor: a stricter relative floor
 * a test may ask for, never a looser one). */
export function accuracyBound(s, floor = FLOOR) {
  return Math.max(Math.min(floor, FLOOR) * s.norm, 4 * s.f32_err, 3 * s.f32_spread);
}

/** The same bound relative to ‖f64‖ (absolute where ‖f64‖ = 0), to compare with a relErr. */
export function relBound(s, floor = FLOOR) {
  const b = accuracyBound(s, floor);
  return s.norm > 0 ? b / s.norm : b;
}

const numel = (s) => s.reduce((a, b) => a * b, 1);
const rel = (x, n) => (n > 0 ? x / n : x);

/**
 * Compares every expected tensor with the engine's. got/exp: Map name -> {dtype, shape, data};
 * acc: name -> stats. Integer tensors must match exactly; a float tensor without stats is an
 * error (the generator must measure every tensor). Returns {bad: [messages], rows: [{name,
 * err, f32Err, spread, bound, ratio}]} with errors relative to ‖f64‖ (absolute where ‖f64‖ = 0)
 * and ratio = err / bound (≤ 1 passes). opts.floor: a stricter floor than 1e-4 (accuracyBound).
 */
export function checkAccuracy(got, exp, acc, { floor = FLOOR } = {}) {
  const bad = [];
  const rows = [];
  for (const [name, e] of exp) {
    const g = got.get(name);
    if (!g) {
      bad.push(`${name}: missing`);
      continue;
    }
    if (numel(g.shape) !== numel(e.shape)) {
      bad.push(`${name}: shape [${g.shape}] vs [${e.shape}]`);
      continue;
    }
    const isInt = e.dtype !== 'F32' && e.dtype !== 'F64';
    if (isInt) {
      if (e.dtype === 'I64' && g.dtype !== 'I64') bad.push(`${name}: dtype ${g.dtype}, expected I64`);
      for (let i = 0; i < e.data.length; i++) {
        if (Number(g.data[i]) !== Number(e.data[i])) {
          bad.push(`${name}[${i}]: ${g.data[i]} != ${e.data[i]}`);
          break;
        }
      }
      continue;
    }
    const s = acc[name];
    if (!s) {
      bad.push(`${name}: no accuracy stats in the fixture (regenerate it)`);
      continue;
    }
    let d = 0;
    for (let i = 0; i < e.data.length; i++) d += (Number(g.data[i]) - Number(e.data[i])) ** 2;
    d = Math.sqrt(d);
    const bound = accuracyBound(s, floor);
    const ratio = bound > 0 ? d / bound : d > 0 ? Infinity : 0;
    const row = { name, err: rel(d, s.norm), f32Err: rel(s.f32_err, s.norm), spread: rel(s.f32_spread, s.norm), bound: rel(bound, s.norm), ratio, absErr: d, absBound: bound, norm: s.norm };
    rows.push(row);
    if (!(d <= bound)) {
      bad.push(
        `${name}: err ${row.err.toExponential(2)} > bound ${row.bound.toExponential(2)} ` +
          `(PyTorch f32 err ${row.f32Err.toExponential(2)}, spread ${row.spread.toExponential(2)}${s.norm > 0 ? '' : ', absolute: f64 is 0'})`,
      );
    }
  }
  return { bad, rows };
}

/**
 * A copy of data moved by x·(1 + 1e-7·u), u ~ U(−1, 1), seeded: the input noise of the
 * generators' float32 spread runs (scripts/fixtures/common.py `moved`): the engine's runs on
 * such inputs re-judge the tensors over the bound (rejudgeKinks, docs/ACCURACY.md "Kinks").
 */
export function movedCopy(data, seed) {
  let a = seed >>> 0;
  const out = Float32Array.from(data);
  for (let i = 0; i < out.length; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    out[i] *= 1 + 1e-7 * ((((z ^ (z >>> 14)) >>> 0) / 4294967296) * 2 - 1);
  }
  return out;
}

/** At most this many engine runs on moved inputs per case (rejudgeKinks stops once every tensor
 *  over the bound is explained). */
export const KINK_RUNS = 4;

const dist = (a, b) => {
  let d = 0;
  for (let i = 0; i < b.length; i++) d += (Number(a[i]) - Number(b[i])) ** 2;
  return Math.sqrt(d);
};

/**
 * Re-judges the tensors over the bound on the given inputs (docs/ACCURACY.md "Kinks"). A ReLU
 * (or max-pool) input within rounding of zero can flip for the engine's summation order and in
 * neither of PyTorch's spread runs; one such flip moves every gradient computed after it. A
 * tensor over the bound passes iff, on some engine run on inputs moved by the spread runs' 1e-7
 * noise (`moved(i)`, i = 1..KINK_RUNS),
 *   (a) it is within its ordinary bound — the engine is right on an input indistinguishable from
 *       the given one at rounding level, exactly what PyTorch's own spread runs are held to; and
 *   (b) its error on the given input is at most 3 × the engine's spread (|given − moved|): the
 *       error is noise the engine itself reproduces.
 * A wrong kernel is wrong on the moved inputs too and fails (a), however many tensors it touches,
 * so no share of "explained" tensors is capped.
 *
 * over: [{name, err, bound, norm, got, exp}] (err and bound relative to norm; got: the engine on
 * the given inputs, exp: float64); moved: async (i) => (name) => the engine's tensor on the i-th
 * moved input. Returns {kinks: [{name, err, bound, movedErr, spread, run}], unexplained: [the
 * `over` entries left, with their best movedErr and spread], runs: moved runs made}.
 */
export async function rejudgeKinks(over, moved, runs = KINK_RUNS) {
  const left = new Map(over.map((o) => [o.name, { ...o, spread: 0, movedErr: Infinity }]));
  const kinks = [];
  let done = 0;
  for (let i = 1; i <= runs && left.size; i++) {
    const get = await moved(i);
    done = i;
    for (const o of left.values()) {
      const b = get(o.name);
      const spread = dist(o.got, b) / o.norm;
      const movedErr = dist(b, o.exp) / o.norm;
      o.spread = Math.max(o.spread, spread);
      o.movedErr = Math.min(o.movedErr, movedErr);
      if (movedErr <= o.bound && o.err <= 3 * spread) {
        kinks.push({ name: o.name, err: o.err, bound: o.bound, movedErr, spread, run: i });
        left.delete(o.name);
      }
    }
  }
  return { kinks, unexplained: [...left.values()], runs: done };
}

/** The row with the largest err / bound (null for no rows). */
export function worstRow(rows) {
  return rows.reduce((w, r) => (w === null || r.ratio > w.ratio ? r : w), null);
}

/** One line for t.log: the worst ratio of a case. */
export function worstLine(label, rows) {
  const w = worstRow(rows);
  if (!w) return `${label}: no float tensor`;
  // a tensor that is zero up to rounding (‖f64‖ below PyTorch float32's own error: e.g. the key
  // bias gradient of attention) is shown in absolute terms
  const zero = !(w.f32Err <= 1);
  const what = zero ? `absolute err ${w.absErr.toExponential(2)}, bound ${w.absBound.toExponential(2)}, ‖f64‖ ${w.norm.toExponential(2)}` : `err ${w.err.toExponential(2)}, bound ${w.bound.toExponential(2)}`;
  return `${label}: worst err/bound ${w.ratio.toExponential(2)} (${w.name}: ${what})`;
}

/**
 * Judges one op fixture case (test/helpers/index.js loadFixtureCases: expected {dtype, shape, data}
 * and the generator's accuracy stats) against runOp's result `got` ({name: Tensor}) by the rule
 * above: every expected output present with its shape, integer outputs exact, float outputs within
 * the bound. Fails t for each bad tensor, logs the case's worst ratio and returns its rows.
 */
export function assertOpCase(t, c, got, opts = {}) {
  t.true(Object.keys(c.expected).length > 0, `${c.name}: no expected outputs`);
  t.truthy(c.accuracy, `${c.name}: the fixture has no accuracy stats (regenerate it with its scripts/fixtures/gen_*.py)`);
  const g = new Map();
  const e = new Map();
  for (const [k, v] of Object.entries(c.expected)) {
    e.set(k, v);
    const o = got[k];
    if (!o) continue;
    // (one element: 0-d and [1] agree, common.save_safetensors writes 0-d tensors as [1])
    if (!(numel(v.shape) === 1 && numel(o.shape) === 1)) t.deepEqual(o.shape, v.shape, `${c.name}.${k} shape`);
    g.set(k, { dtype: o.dtype, shape: o.shape, data: o.toArray() });
  }
  const { bad, rows } = checkAccuracy(g, e, c.accuracy ?? {}, opts);
  for (const m of bad) t.fail(`${c.name} (${c.op}): ${m}`);
  t.log(worstLine(`${c.name} (${c.op})`, rows));
  return rows;
}
