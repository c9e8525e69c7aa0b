import test from 'ava';
import { runOp, tensor } from '../lib/index.js';
import { gradcheck, makeRng, freshSeed, randArray, relErr, throwsNaming } from './helpers/index.js';

const seed = freshSeed();
const rng = makeRng(seed);

// Reference: alpha * op(A)[M,K] * op(B)[K,N] + beta * C, in double.
function refGemm(A, B, M, N, K, tA, tB, alpha = 1, beta = 0, C = null) {
  const out = new Float32Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += (tA ? A[k * M + i] : A[i * K + k]) * (tB ? B[j * K + k] : B[k * N + j]);
      out[i * N + j] = alpha * s + (C ? beta * C[i * N + j] : 0);
    }
  }
  return out;
}

const combos = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];

// Random op(A) [M,K], op(B) [K,N] and C [M,N]: the arrays and the tensors (A, B stored transposed when asked).
function operands(M, N, K, tA, tB) {
  const a = randArray([M * K], rng);
  const b = randArray([K * N], rng);
  const c = randArray([M * N], rng);
  return { a, b, c, A: tensor(a, tA ? [K, M] : [M, K]), B: tensor(b, tB ? [N, K] : [K, N]) };
}

test('gemm matches a reference for every transpose combination, alpha and beta', (t) => {
  const [M, N, K] = [13, 9, 17];
  for (const [tA, tB] of combos) {
    const { a, b, c, A, B } = operands(M, N, K, tA, tB);
    const plain = runOp('gemm', { A, B }, { transA: tA, transB: tB });
    t.deepEqual(plain.C.shape, [M, N]);
    t.true(relErr(plain.C.toArray(), refGemm(a, b, M, N, K, tA, tB)) < 1e-5, `transA=${tA} transB=${tB}; seed ${seed}`);
    const C = tensor(c, [M, N]);
    const full = runOp('gemm', { A, B, C }, { transA: tA, transB: tB, alpha: -0.5, beta: 2 });
    t.true(relErr(full.C.toArray(), refGemm(a, b, M, N, K, tA, tB, -0.5, 2, c)) < 1e-5, `alpha/beta transA=${tA} transB=${tB}`);
    t.deepEqual(C.toArray(), c, 'input C is not modified');
  }
});

test('gemm split over threads (dwc::sgemm: by rows when op(A) is larger, else by columns) matches the reference', (t) => {
  // products above the split threshold (2^20 multiply-adds), extents not multiples of the split alignment
  for (const [M, N, K] of [[301, 37, 113], [37, 301, 113], [200, 200, 40]]) {
    for (const [tA, tB] of combos) {
      const { a, b, c, A, B } = operands(M, N, K, tA, tB);
      const r = runOp('gemm', { A, B, C: tensor(c, [M, N]) }, { transA: tA, transB: tB, alpha: 0.75, beta: -1 });
      t.true(relErr(r.C.toArray(), refGemm(a, b, M, N, K, tA, tB, 0.75, -1, c)) < 1e-5, `${M}x${N}x${K} transA=${tA} transB=${tB}; seed ${seed}`);
    }
  }
});

test('skinny x·Wᵀ products (computed transposed, dwc::sgemm) match the reference, with and without beta', (t) => {
  // M ≤ 64 rows against N ≥ 512, K ≥ 256 (blas.cpp sgemm_skinny_nt), next to the same sizes in the other orientations
  for (const [M, N, K] of [[32, 600, 300], [64, 512, 256], [1, 700, 260], [65, 520, 256]]) {
    for (const [tA, tB] of combos) {
      const { a, b, c, A, B } = operands(M, N, K, tA, tB);
      const plain = runOp('gemm', { A, B }, { transA: tA, transB: tB });
      t.true(relErr(plain.C.toArray(), refGemm(a, b, M, N, K, tA, tB)) < 1e-5, `${M}x${N}x${K} transA=${tA} transB=${tB}; seed ${seed}`);
      const r = runOp('gemm', { A, B, C: tensor(c, [M, N]) }, { transA: tA, transB: tB, alpha: -1.5, beta: 0.5 });
      t.true(relErr(r.C.toArray(), refGemm(a, b, M, N, K, tA, tB, -1.5, 0.5, c)) < 1e-5, `${M}x${N}x${K} alpha/beta transA=${tA} transB=${tB}; seed ${seed}`);
    }
  }
});

test('gemm_batched matches a reference (small and larger products, strided batches)', (t) => {
  for (const [b, M, N, K] of [
    [5, 4, 6, 3],
    [3, 50, 40, 60],
  ]) {
    for (const [tA, tB] of combos) {
      const a = randArray([b * M * K], rng);
      const bb = randArray([b * K * N], rng);
      const out = runOp(
        'gemm_batched',
        { A: tensor(a, tA ? [b, K, M] : [b, M, K]), B: tensor(bb, tB ? [b, N, K] : [b, K, N]) },
        { transA: tA, transB: tB, alpha: 1.5 },
      );
      t.deepEqual(out.C.shape, [b, M, N]);
      const got = out.C.toArray();
      for (let p = 0; p < b; p++) {
        const ref = refGemm(a.subarray(p * M * K, (p + 1) * M * K), bb.subarray(p * K * N, (p + 1) * K * N), M, N, K, tA, tB, 1.5);
        t.true(relErr(got.subarray(p * M * N, (p + 1) * M * N), ref) < 1e-5, `batch ${p} of ${b}x${M}x${N}x${K} tA=${tA} tB=${tB}`);
      }
    }
  }
});

test('linear backward matches finite differences (with and without leading dims)', (t) => {
  for (const xs of [
    [4, 5],
    [2, 3, 5],
  ]) {
    gradcheck(t, {
      forward: 'linear_forward',
      backward: 'linear_backward',
      inputs: { x: [randArray(xs, rng), xs], W: [randArray([3, 5], rng), [3, 5]], b: [randArray([3], rng), [3]] },
      outputs: ['y'],
      backwardInputs: (ins, outs, dys) => ({ x: ins.x, W: ins.W, dy: dys.y }),
      grads: { x: 'dx', W: 'dW', b: 'db' },
      seed,
    });
  }
});

test('linear forward equals gemm(x, W, transB) + b; large shapes take the threaded paths', (t) => {
  const [N, inF, out] = [300, 70, 260];
  const x = randArray([N, inF], rng);
  const W = randArray([out, inF], rng);
  const b = randArray([out], rng);
  const y = runOp('linear_forward', { x: tensor(x, [N, inF]), W: tensor(W, [out, inF]), b: tensor(b, [out]) }).y.toArray();
  const ref = refGemm(x, W, N, out, inF, false, true);
  for (let i = 0; i < N; i++) for (let j = 0; j < out; j++) ref[i * out + j] += b[j];
  t.true(relErr(y, ref) < 1e-5);
  const dy = randArray([N, out], rng);
  const g = runOp('linear_backward', { x: tensor(x, [N, inF]), W: tensor(W, [out, inF]), dy: tensor(dy, [N, out]) });
  const db = new Float32Array(out);
  for (let i = 0; i < N; i++) for (let j = 0; j < out; j++) db[j] += dy[i * out + j];
  t.true(relErr(g.db.toArray(), db) < 1e-5, 'db = column sums of dy');
  t.true(relErr(g.dW.toArray(), refGemm(dy, x, out, inF, N, true, false)) < 1e-5, 'dW = dyᵀ x');
  t.true(relErr(g.dx.toArray(), refGemm(dy, W, N, inF, out, false, false)) < 1e-5, 'dx = dy W');
});

test('gemm on 2048x2048 (the SGEMM peak measurement) is correct and BLAS-fast', (t) => {
  const n = 2048;
  const a = randArray([n, n], rng, 0.1);
  const b = randArray([n, n], rng, 0.1);
  const A = tensor(a, [n, n]);
  const B = tensor(b, [n, n]);
  runOp('gemm', { A, B }); // warm-up
  let s = Infinity;
  let C;
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    C = runOp('gemm', { A, B }).C.toArray();
    s = Math.min(s, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const gflops = (2 * n ** 3) / s / 1e9;
  t.log(`2048^3 SGEMM: ${(s * 1e3).toFixed(1)} ms, ${gflops.toFixed(1)} GFLOP/s`);
  for (let s2 = 0; s2 < 8; s2++) {
    const i = rng.int(n);
    const j = rng.int(n);
    let ref = 0;
    for (let k = 0; k < n; k++) ref += a[i * n + k] * b[k * n + j];
    t.true(Math.abs(C[i * n + j] - ref) <= 1e-4 * Math.max(1, Math.abs(ref)), `C[${i},${j}] = ${C[i * n + j]} vs ${ref}`);
  }
  // A naive triple loop manages well under 5 GFLOP/s; any BLAS is far above.
  t.true(gflops > 5, `${gflops.toFixed(1)} GFLOP/s`);
});

test('bad arguments name the argument', (t) => {
  const A = tensor(randArray([3, 4], rng), [3, 4]);
  const B = tensor(randArray([4, 2], rng), [4, 2]);
  throwsNaming(t, () => runOp('gemm', { A: tensor([1, 2], [2]), B }), 'A', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('gemm', { A, B: tensor(randArray([3, 2], rng), [3, 2]) }), 'B', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('gemm', { A, B }, { transB: true }), 'B', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('gemm', { A, B, C: tensor(randArray([2, 3], rng), [2, 3]) }), 'C', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('gemm', { A: tensor([1, 2, 3, 4], [2, 2], 'int32'), B }), 'A', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('gemm', { A }), 'B', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('gemm', { A, B }, { alpha: Number.NaN }), 'alpha', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('gemm', { A, B }, { beta: Number.POSITIVE_INFINITY }), 'beta', 'DWC_BAD_ARGUMENT');
  const A3 = tensor(randArray([2, 3, 4], rng), [2, 3, 4]);
  throwsNaming(t, () => runOp('gemm_batched', { A: A3, B: tensor(randArray([3, 4, 2], rng), [3, 4, 2]) }), 'B', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('gemm_batched', { A: A3, B: tensor(randArray([2, 5, 2], rng), [2, 5, 2]) }), 'B', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('gemm_batched', { A, B }), 'A', 'DWC_BAD_ARGUMENT');
  const W = tensor(randArray([2, 4], rng), [2, 4]);
  throwsNaming(t, () => runOp('linear_forward', { x: tensor(randArray([3, 5], rng), [3, 5]), W }), 'x', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('linear_forward', { x: A, W, b: tensor([1, 2, 3], [3]) }), 'b', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('linear_forward', { x: A }), 'W', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('linear_backward', { x: A, W, dy: tensor(randArray([3, 3], rng), [3, 3]) }), 'dy', 'DWC_BAD_ARGUMENT');
  throwsNaming(t, () => runOp('linear_backward', { x: A, W }), 'dy', 'DWC_BAD_ARGUMENT');
});
