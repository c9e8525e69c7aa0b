// The model code runs its kernels through the backend interface (issue #15, docs/CUDA.md "The model
// on the backend"): native/model/*.{cpp,h} never calls dwc::cpu (native/kernels/) or the BLAS
// directly, never includes a kernel header, and has no #ifdef for CUDA. The device option reaches
// the native model: an unavailable device is a clear error, never an abort.
import test from 'ava';
import { spawnSync } from 'node:child_process';
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

// Host dereferences of backend memory (docs/CUDA.md "The model on the backend"): on a device
// backend the parameters, the arenas and the uploaded batch are device memory, so model code reads
// and writes them only through the backend (kernels, fill, copy, upload / download, the ParamBuffer
// helpers init_* / scalar / count). Exempt: the JS-test ops (DWC_REGISTER_OP bodies, CPU backend
// only).
// ParamBuffer's init helpers draw on the host into a host vector, then upload.
const HOST_RNG_ALLOWED = { 'params.cpp': ['init_uniform', 'init_normal'] };
const BATCH_ARRAYS = 'tokens|lengths|labels|e_img|e_txt|e_target|fmap|fmap_target|images|images_target|aw_ref|aw_txt|aw_tgt';
const HOST_RULES = [
  [/\*\s*(?:\w+\.)*(?:params|pb)\.[pg]\(/, 'a host dereference of a parameter / gradient (use ParamBuffer::scalar, count, init_fill or a kernel)'],
  [/\b(?:params|pb)\.[pg]\([^()]*\)\s*\[/, 'a host subscript of a parameter / gradient pointer (backend memory)'],
  [/\bstd::(?:memcpy|memset)\b/, 'a host copy / fill of backend memory (use be_->copy / be_->fill)'],
  [/\bstd::(?:copy|fill)\s*\((?![^;]*touched)/, 'a host copy / fill of backend memory (use be_->copy / be_->fill, ParamBuffer::init_fill)'],
  [new RegExp(`\\b\\w+\\.(?:${BATCH_ARRAYS})\\s*\\[`), "a host read of a batch array (backend memory after Model::on_backend: use Batch::host_tokens() / host_lengths())"],
];

// Lines of DWC_REGISTER_OP bodies (JS-test ops: host tensors on the CPU backend).
function opLines(lines) {
  const inOp = new Set();
  for (let i = 0; i < lines.length; ++i) {
    if (!/^DWC_REGISTER_OP\(/.test(lines[i])) continue;
    let j = i;
    while (j < lines.length && !/^\s*\}\);\s*$/.test(lines[j])) inOp.add(j++);
    inOp.add(j);
    i = j;
  }
  return inOp;
}

export function scanHostAccess(name, src) {
  const problems = [];
  const lines = stripComments(src).split('\n');
  const ops = opLines(lines);
  // names bound to arena memory (x = arena.alloc(...), ar.alloc, arena_.alloc; not an out-parameter
  // *x = arena.alloc(...)): no subscript, no dereference. Members (name_) for the whole file, locals
  // within their function.
  const arenaNames = new Map();  // function ('' for members) -> names
  const namesAt = (fn) => arenaNames.get(fn) ?? arenaNames.set(fn, new Set()).get(fn);
  lines.forEach((line, i) => {
    if (/^\s*\*\s*\w+\s*=/.test(line)) return;
    for (const m of line.matchAll(/\b(\w+)\s*=\s*(?:\w+\.)?(?:arena_?|ar)\.alloc\(/g))
      namesAt(m[1].endsWith('_') ? '' : enclosingFunction(lines, i)).add(m[1]);
  });
  lines.forEach((line, i) => {
    if (ops.has(i)) return;
    const at = `${name}:${i + 1}`;
    for (const [re, why] of HOST_RULES) if (re.test(line)) problems.push(`${at}: ${why}: ${line.trim()}`);
    if (/\bfill_(?:uniform|normal)\s*\(/.test(line) && !(HOST_RNG_ALLOWED[name] ?? []).includes(enclosingFunction(lines, i)))
      problems.push(`${at}: a host RNG fill (into backend memory?): use ParamBuffer::init_uniform / init_normal: ${line.trim()}`);
    for (const v of [...namesAt(''), ...namesAt(enclosingFunction(lines, i))])
      if (new RegExp(`(?<![\\w.])${v}\\s*\\[|^\\s*\\*\\s*${v}\\s*[-+*/]?=(?!=)`).test(line))
        problems.push(`${at}: a host access to arena memory '${v}' (backend memory: use a kernel): ${line.trim()}`);
  });
  return problems;
}

test('model code does not dereference backend memory on the host (parameters, arenas, the uploaded batch)', (t) => {
  const problems = files.flatMap((f) => scanHostAccess(f, readFileSync(join(modelDir, f), 'utf8')));
  t.deepEqual(problems, []);
  // nothing refuses a device backend for host-memory reasons any more (docs/CUDA.md)
  for (const f of files) t.notRegex(readFileSync(join(modelDir, f), 'utf8'), /require_host_backend/, f);
});

test('the host-access scan catches the host writes it replaced, and exempts the JS-test ops', (t) => {
  const bad = [
    'void f() { *params.p(u.nbt) += 1.f; }',
    'void f() { *pb.p(u.nbt) = 0.0f; }',
    'void f() { be_->gem_forward(x, *params.p(o_pool_), y, B, C, P, nullptr, 1e-6f); }',
    'void f() { float v = params.p(o)[3]; }',
    'void f() { fill_uniform(params.p(o), n, -b, b, rng); }',
    'void f() { std::fill(pb.p(u.g), pb.p(u.g) + u.co, 1.0f); }',
    'void f() { std::memcpy(Phi_, b.fmap, sizeof(float) * n); }',
    'void f() { std::memset(dg, 0, n); }',
    'void f() { if (b.tokens[i] < 0) return; }',
    'void f() {\n  w_ = arena.alloc(B, false);\n  for (int i = 0; i < B; ++i) w_[i] = 0.5f;\n}',
    'void f() {\n  float* m = ar.alloc(n, false);\n  *m = 1.f;\n}',
  ];
  for (const src of bad) t.true(scanHostAccess('x.cpp', src).length > 0, `not caught: ${src}`);
  const good = [
    'void f() { params.init_fill(o_pool_, 1, 3.0f); p_ = params.scalar(o_pool_); params.count(u.nbt); }',
    'void f() { std::fill(params.touched.begin(), params.touched.end(), false); }',
    'void f() { const int32_t* tok = b.host_tokens(); if (tok[0] < 0) return; }',
    'void f() {\n  w_ = arena.alloc(B, false);\n  be_->fill(w_, 0.5f, B);\n}',
    'DWC_REGISTER_OP("x", "a -> y", [](OpCtx& c) {\n  std::copy(y, y + n, c.out("y", s).f32());\n  *pb.p(0) = 1.f;\n});',
  ];
  for (const src of good) t.deepEqual(scanHostAccess('x.cpp', src), [], src);
  t.true(scanHostAccess('x.cpp', 'DWC_REGISTER_OP("x", "a -> y", [](OpCtx& c) {\n});\nvoid f() { *pb.p(0) = 1.f; }').length > 0, 'code after an op is scanned');
});

// Model::on_backend's and ClipModel's uploads (a device backend's path) run on the CPU too with
// DWC_UPLOAD_BATCHES=1: training, eval embeddings, w* and trunk maps of several model kinds, the
// CLIP's steps, gradients and embeddings (ViT and ModifiedResNet, alone and as the DWC encoder) are
// the same bits as without (a wrong upload size or a host read of an uploaded array changes them).
const FINGERPRINT = `
import { createHash } from 'node:crypto';
const { Clip, DwcModel, randomClipTensors, TINY_CLIP_ARCH, TINY_RN_CLIP_ARCH } = await import(${JSON.stringify(join(root, 'lib', 'index.js'))});
const { CLIP_ENCODER_PREFIX } = await import(${JSON.stringify(join(root, 'lib', 'train', 'clip_encoder.js'))});
let s = 12345;
const r = () => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648 - 0.5; };
const f = (n, abs) => Float32Array.from({ length: n }, () => (abs ? Math.abs(r()) : r()));
const h = createHash('sha256');
let arrays = 0;
const add = (x) => {
  if (ArrayBuffer.isView(x)) { arrays++; h.update(Buffer.from(x.buffer, x.byteOffset, x.byteLength)); }
  else if (x && typeof x === 'object') for (const k of Object.keys(x).sort()) { h.update(k); add(x[k]); }
  else h.update(String(JSON.stringify(x)));
};
const B = 4, L = 3, Dc = 6, C = 8, Hi = 24, Wi = 16;
const tokens = Int32Array.from({ length: B * L }, (_, i) => 1 + (i * 7) % 9);
const lengths = Int32Array.from([3, 1, 2, 3]);
const labels = Int32Array.from([0, 1, 0, 2]);
const kinds = [
  [{ Dc, D: 8, C, E: 4, vocab: 10, trunk: 'small', trunkWidth: 4, encoder: 'shared', encGrid: 2 }, { seed: 3, awGlobal: true, awLocal: true }, true],
  [{ Dc, D: 8, vocab: 10, encoder: 'small', encChannels: 8, encE: 4, encGrid: 2 }, { seed: 4 }, true],
  [{ Dc, D: 8, C, E: 4, vocab: 10 }, { seed: 5, noEditors: true, fixedW: true }, false],
  [{ Dc, D: 8, C, E: 4, vocab: 10 }, { seed: 6, masked: false }, false],
];
for (const [d, o, img] of kinds) {
  const m = new DwcModel(d, o);
  for (let it = 0; it < 2; it++) {
    const b = img ? { B, images: f(B * 3 * Hi * Wi), imagesTarget: f(B * 3 * Hi * Wi), Hi, Wi, tokens, L, lengths, labels }
      : { B, eImg: f(B * Dc), eTxt: f(B * Dc), eTarget: f(B * Dc), fmap: f(B * C * 4, true), fmapTarget: f(B * C * 4, true), H: 2, W: 2, tokens, L, lengths, labels };
    add(await m.trainStep(b));
    for (const e of [await m.embedQueries(b), await m.embedTargets(b)]) for (const k of Object.keys(e).sort()) add(e[k]);
    if (o.awGlobal) add(await m.awTargets(b));
    if (d.trunk) add((await m.trunkFeatures(b.images, B, Hi, Wi)).fmap);
  }
  for (const p of m.params()) { add(m.getParam(p.name)); add(m.getOptimState(p.name).m); }
}
const ids = (n, ctx) => {
  const o = new Int32Array(n * ctx);
  for (let i = 0; i < n; i++) {
    const len = 2 + (i * 3) % (ctx - 2);
    o[i * ctx] = 512;
    for (let t = 1; t < len; t++) o[i * ctx + t] = (i * 31 + t * 7) % 500;
    o[i * ctx + len] = 513;
  }
  return o;
};
for (const arch of [TINY_CLIP_ARCH, TINY_RN_CLIP_ARCH]) {
  const c = Clip.fromTensors(randomClipTensors(arch, 5));
  const N = 3, R = arch.resolution;
  for (let it = 0; it < 2; it++) {
    const px = f(N * 3 * R * R), id = ids(N, arch.contextLength);
    add(await c.trainStep(px, id, { lr: 1e-3 }));
    add(await c.lossAndGrad(px, id, { bnTrain: true }));
    for (const [k, t] of c.gradients()) { h.update(k); add(t.data); }
    add(await c.embedImagesTensor(px));
    add(await c.embedTokenIds(id));
  }
  for (const [k, t] of c.fileTensors('m')) { h.update(k); add(t.data); }
  const V = 12, K = 3, Lc = 4;
  const m = new DwcModel({ Dc: arch.embedDim, D: 8, vocab: V, encoder: 'clip', clip: arch, clipPieces: K }, { seed: 9, awGlobal: true });
  for (const [name, t] of randomClipTensors(arch, 6)) m.setParam(CLIP_ENCODER_PREFIX + name, t.data);
  const map = new Float32Array((V + 1) * K).fill(-1);
  for (let w = 0; w < V; w++) for (let k = 0; k < 1 + (w % K); k++) map[w * K + k] = (w * 37 + k * 11) % 512;
  map[V * K] = 512;
  map[V * K + 1] = 513;
  m.setParam(CLIP_ENCODER_PREFIX + 'token_map', map);
  for (const S of [R, R + 4]) {  // the tower's size, and resized
    const tokens = Int32Array.from({ length: B * Lc }, (_, i) => (i * 5) % V);
    const lengths = Int32Array.from({ length: B }, (_, i) => 1 + ((i * 3) % Lc));
    const b = { B, images: f(B * 3 * S * S), imagesTarget: f(B * 3 * S * S), Hi: S, Wi: S, tokens, lengths, L: Lc, labels };
    add(await m.trainStep(b));
    add(await m.embedQueries(b));
    add(await m.embedTargets(b));
    add(await m.awTargets(b));
  }
  for (const p of m.params()) { add(m.getParam(p.name)); add(m.getOptimState(p.name).v); }
}
console.log(JSON.stringify({ hash: h.digest('hex'), arrays }));
`;

test('batches uploaded through the backend (DWC_UPLOAD_BATCHES=1) give the same bits as host batches', (t) => {
  const run = (env) => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', FINGERPRINT], { env: { ...process.env, ...env }, encoding: 'utf8' });
    t.is(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop());
  };
  const host = run({ DWC_UPLOAD_BATCHES: '0' });
  const up = run({ DWC_UPLOAD_BATCHES: '1' });
  t.true(host.arrays > 500, `only ${host.arrays} arrays compared`);
  t.deepEqual(up, host);
});

const G = { D: 8, Dc: 12 };

test('device cpu is the default and gives the same model', (t) => {
  const a = new DwcModel(G, { seed: 3 });
  const b = new DwcModel(G, { seed: 3, device: 'cpu' });
  t.deepEqual(Array.from(a.getParam('global.img_fc.0.weight')), Array.from(b.getParam('global.img_fc.0.weight')));
  a.release?.();
  b.release?.();
});

// CUDA devices of this machine (`dwc-native info --json`): a device that exists takes the model.
const info = JSON.parse(spawnSync(process.execPath, [join(root, 'lib/cli/main.js'), 'info', '--json'], { encoding: 'utf8' }).stdout);
const cudaDevices = (info.cudaDevices ?? []).length;

test('an unavailable or malformed device is a clear error, not an abort', (t) => {
  for (const device of ['cuda', 'cuda:0', 'cuda:7']) {
    const index = device === 'cuda' ? 0 : Number(device.slice(5));
    if (index < cudaDevices) {  // a GPU is here: the DWC model runs on it (cuda_backend.test.js compares it with the CPU)
      const m = new DwcModel(G, { seed: 1, device });
      t.is(m.getParam('global.img_fc.0.weight').length, G.D * G.Dc);
      m.release?.();
      continue;
    }
    const e = t.throws(() => new DwcModel(G, { seed: 1, device }));
    t.is(e.code, 'DWC_CUDA', `${device}: ${e.message}`);
    // names why: not compiled in, or no such device
    t.regex(e.message, new RegExp(`device '${device}'|device 'cuda:`));
    t.regex(e.message, /not compiled|no such CUDA device/);
  }
  for (const device of ['gpu', 'cuda:', 'cuda:x', 'CPU']) {
    const e = t.throws(() => new DwcModel(G, { seed: 1, device }));
    t.is(e.code, 'DWC_BAD_ARGUMENT', `${device}: ${e.message}`);
    t.regex(e.message, /is not one of 'cpu', 'cuda', 'cuda:N'/);
  }
  const e = t.throws(() => new DwcModel(G, { seed: 1, device: 3 }));
  t.regex(e.message, /option 'device' must be a string/);
});
