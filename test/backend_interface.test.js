// The model code runs its kernels through the backend interface (issue #15, docs/CUDA.md "The model
// on the backend"): native/model/*.{cpp,h} never calls dwc::cpu (native/kernels/) or the BLAS
// directly, never includes a kernel header, and has no #ifdef for CUDA. The device option reaches
// the native model: an unavailable device is a clear error, never an abort.
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DwcModel } from '../lib/model.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const modelDir = join(root, 'native', 'model');

// What model code must not contain, with the reason shown on failure.
const RULES = [
  [/\bcpu::/, 'dwc::cpu (a kernel or its types): call the backend (be_->kernel) and use backend:: types'],
  [/#\s*include\s*"\.\.\/kernels\//, 'a kernel header: the backend interface (backend.h) is the only way to the kernels'],
  [/#\s*include\s*"\.\.\/core\/blas\.h"|\bsgemm\s*\(|\bcblas_/, 'a direct BLAS call: use be_->gemm'],
  [/#\s*if(def|ndef)?\b.*\b(CUDA|DWC_WITH_CUDA|__CUDACC__)\b/, '#ifdef CUDA: the backend object chooses, not the preprocessor'],
];

// Parallel loops over activations are kernels: none is left in model code (they moved to
// native/kernels/layout.h with CUDA twins). An entry here would name a file and a function that
// keeps one, with the reason in a comment.
const OMP_ALLOWED = {};

function stripComments(src) {
  return src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
}

// Name of the function whose body holds line i: the nearest preceding line that opens a
// function definition at the top level of a namespace or a class.
function enclosingFunction(lines, i) {
  for (let j = i; j >= 0; --j) {
    const m = lines[j].match(/^(?:[\w:<>,*&\s]+?\s)?[*&]?([A-Za-z_]\w*(?:::\w+)?)\s*\([^;]*$/);
    if (m && !/^\s*(if|for|while|switch|return)\b/.test(lines[j]) && /^\S/.test(lines[j])) return m[1].split('::').pop();
  }
  return '?';
}

export function scanModelSource(name, src) {
  const problems = [];
  const lines = stripComments(src).split('\n');
  lines.forEach((line, i) => {
    for (const [re, why] of RULES) if (re.test(line)) problems.push(`${name}:${i + 1}: ${why}: ${line.trim()}`);
    if (/#\s*pragma\s+omp\b/.test(line)) {
      const fn = enclosingFunction(lines, i);
      if (!(OMP_ALLOWED[name] ?? []).includes(fn))
        problems.push(`${name}:${i + 1}: a parallel loop in model code (in ${fn}): make it a backend kernel (or list it in OMP_ALLOWED with a reason)`);
    }
  });
  return problems;
}

const files = readdirSync(modelDir).filter((f) => /\.(cpp|h)$/.test(f));

test('model code calls its kernels only through the backend interface', (t) => {
  t.true(files.length >= 10, `native/model has ${files.length} sources`);
  const problems = files.flatMap((f) => scanModelSource(f, readFileSync(join(modelDir, f), 'utf8')));
  t.deepEqual(problems, []);
  // the files do call the backend (the scan is not vacuous)
  const calls = files.map((f) => (readFileSync(join(modelDir, f), 'utf8').match(/\bbe_->\w+\(/g) ?? []).length).reduce((a, b) => a + b, 0);
  t.true(calls > 150, `only ${calls} backend calls found in native/model`);
});

test('the scan catches direct kernel calls, kernel headers, BLAS, #ifdef CUDA and new parallel loops', (t) => {
  const bad = [
    'void f(const float* x, float* y) { cpu::relu_forward(x, y, 4); }',
    '#include "../kernels/gemm.h"',
    'void g() { sgemm(CblasNoTrans, CblasNoTrans, 1, 1, 1, 1.f, a, 1, b, 1, 0.f, c, 1); }',
    '#ifdef DWC_WITH_CUDA',
    'void h(float* p, int n) {\n#pragma omp parallel for\n  for (int i = 0; i < n; ++i) p[i] = 0;\n}',
  ];
  for (const src of bad) t.true(scanModelSource('x.cpp', src).length > 0, `not caught: ${src}`);
  // comments and the allowed loops pass
  t.deepEqual(scanModelSource('x.cpp', '// cpu::relu_forward is what the CPU backend runs\nvoid f() { be_->relu_forward(a, b, 4); }'), []);
  OMP_ALLOWED['y.cpp'] = ['allowed_loop'];
  t.deepEqual(scanModelSource('y.cpp', 'void allowed_loop(float* d, long n) {\n#pragma omp parallel for simd\n  for (;;) {}\n}'), []);
  t.true(scanModelSource('y.cpp', 'void other_loop(float* d, long n) {\n#pragma omp parallel for simd\n  for (;;) {}\n}').length > 0);
  delete OMP_ALLOWED['y.cpp'];
});

const G = { D: 8, Dc: 12 };

test('device cpu is the default and gives the same model', (t) => {
  const a = new DwcModel(G, { seed: 3 });
  const b = new DwcModel(G, { seed: 3, device: 'cpu' });
  t.deepEqual(Array.from(a.getParam('global.img_fc.0.weight')), Array.from(b.getParam('global.img_fc.0.weight')));
  a.release?.();
  b.release?.();
});

test('an unavailable or malformed device is a clear error, not an abort', (t) => {
  for (const device of ['cuda', 'cuda:0', 'cuda:7']) {
    const e = t.throws(() => new DwcModel(G, { seed: 1, device }));
    t.is(e.code, 'DWC_CUDA', `${device}: ${e.message}`);
    // names why: not compiled in, no such device, or (with a GPU) the model memory not on the backend yet
    t.regex(e.message, new RegExp(`device '${device}'|device 'cuda:`));
    t.regex(e.message, /not compiled|no such CUDA device|not supported yet/);
  }
  for (const device of ['gpu', 'cuda:', 'cuda:x', 'CPU']) {
    const e = t.throws(() => new DwcModel(G, { seed: 1, device }));
    t.is(e.code, 'DWC_BAD_ARGUMENT', `${device}: ${e.message}`);
    t.regex(e.message, /is not one of 'cpu', 'cuda', 'cuda:N'/);
  }
  const e = t.throws(() => new DwcModel(G, { seed: 1, device: 3 }));
  t.regex(e.message, /option 'device' must be a string/);
});
