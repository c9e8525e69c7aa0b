// Batch-norm test inputs and the float64 reference of the train-mode forward (docs/MODEL.md,
// BatchNorm as torch.nn.BatchNorm2d), shared by the plain (norm.test.js) and blocked
// (trunk_blocked.test.js) kernels' tests.
import { randArray } from './index.js';

/** x ([N, C, ...] shifted by offset, scaled), γ, β and running statistics, as [data, shape] pairs. */
export function bnInputs(rng, shape, offset = 0, scale = 1) {
  const C = shape[1];
  const x = randArray(shape, rng, scale).map((v) => v + offset);
  const gamma = Float32Array.from({ length: C }, () => 0.5 + rng.uniform());
  const beta = randArray([C], rng);
  const rm = randArray([C], rng, 0.1);
  const rv = Float32Array.from({ length: C }, () => 0.5 + rng.uniform());
  return { x: [x, shape], gamma: [gamma, [C]], beta: [beta, [C]], running_mean: [rm, [C]], running_var: [rv, [C]] };
}

/** float64 train-mode forward: y and the updated running statistics (momentum, unbiased variance). */
export function bnRef(x, shape, gamma, beta, rm, rv, momentum, eps) {
  const [N, C] = shape;
  const P = x.length / (N * C);
  const M = N * P;
  const y = new Float64Array(x.length);
  const nrm = new Float64Array(C);
  const nrv = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let n = 0; n < N; n++) for (let p = 0; p < P; p++) s += x[(n * C + c) * P + p];
    const mean = s / M;
    let v = 0;
    for (let n = 0; n < N; n++) for (let p = 0; p < P; p++) v += (x[(n * C + c) * P + p] - mean) ** 2;
    const invstd = 1 / Math.sqrt(v / M + eps);
    for (let n = 0; n < N; n++)
      for (let p = 0; p < P; p++) {
        const i = (n * C + c) * P + p;
        y[i] = (x[i] - mean) * invstd * gamma[c] + beta[c];
      }
    nrm[c] = (1 - momentum) * rm[c] + momentum * mean;
    nrv[c] = (1 - momentum) * rv[c] + (momentum * v) / (M - 1);
  }
  return { y, nrm, nrv };
}
