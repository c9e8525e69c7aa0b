// A/B helper for the CLIP bench cases (docs/CLIP.md "Speed"): one process, one build (pick it with
// DWC_NATIVE_ADDON=path/to/dwc_native.node), ViT-B/32 shapes at batch 32 with random weights;
// prints one JSON line per case with wall, process-CPU, system-CPU and minor-page-fault medians, and the resident set after
// each phase (what holds the fine-tuning case's memory). Alternate two builds' processes in a
// shell loop to compare them on a loaded machine (CPU time is the steadier figure there).
// node bench/clip_ab.js [--reps N] [--cases images,texts,full,step]
import { Clip } from '../lib/index.js';
import { expectedShapes } from '../lib/clip/weights.js';

const args = process.argv.slice(2);
const opt = (k, d) => (args.includes(`--${k}`) ? args[args.indexOf(`--${k}`) + 1] : d);
const reps = Number(opt('reps', 5));
const want = new Set(opt('cases', 'images,texts,full,step').split(','));
const P = { embedDim: 512, resolution: 224, patchSize: 32, grid: 7, visionWidth: 768, visionLayers: 12, visionHeads: 12, contextLength: 77,
  vocabSize: 49408, textWidth: 512, textLayers: 12, textHeads: 8 };
const N = 32;
const mib = () => Math.round(process.memoryUsage.rss() / 2 ** 20);
const peak = () => Math.round(process.resourceUsage().maxRSS / 1024);
const rssLog = [];
const mark = (what) => rssLog.push({ what, rss_mib: mib(), peak_rss_mib: peak() });

let seed = 12345;
const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296) * 2 - 1;
mark('start');
const tensors = new Map();
for (const [name, shape] of expectedShapes({ image: 'vit', naming: 'openai', activation: 'quick_gelu', ...P })) {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  const a = shape.length === 2 ? Math.sqrt(3 / shape[shape.length - 1]) : 0.02;
  for (let i = 0; i < n; i++) d[i] = name === 'logit_scale' ? Math.log(1 / 0.07) : /ln_\w+\.weight$|ln_final\.weight$/.test(name) ? 1 + 0.1 * rnd() : a * rnd();
  tensors.set(name, { dtype: 'F32', shape, data: d });
}
const clip = Clip.fromTensors(tensors);
tensors.clear();
if (globalThis.gc) globalThis.gc();
mark('model built');
const R = P.resolution, L = P.contextLength;
const px = Float32Array.from({ length: N * 3 * R * R }, rnd);
const ids = (full) => {
  const a = new Int32Array(N * L);
  for (let i = 0; i < N; i++) {
    const len = full ? L : 2 + ((i * 7 + 3) % (L - 1));
    a[i * L] = P.vocabSize - 2;
    for (let t = 1; t < len - 1; t++) a[i * L + t] = 1 + Math.floor(((rnd() + 1) / 2) * (P.vocabSize - 4));
    a[i * L + len - 1] = P.vocabSize - 1;
  }
  return a;
};
const tk = ids(false), tkFull = ids(true);
const cases = {
  images: () => clip.embedImagesTensor(px, { batchSize: N }),
  texts: () => clip.embedTokenIds(tk, { batchSize: N }),
  full: () => clip.embedTokenIds(tkFull, { batchSize: N }),
  step: () => clip.trainStep(px, tk, 1e-6),
};
const med = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
for (const [k, fn] of Object.entries(cases)) {
  if (!want.has(k)) continue;
  await fn();
  mark(`${k} warm-up`);
  const wall = [], cpu = [], sys = [], faults = [];
  for (let i = 0; i < reps; i++) {
    const c0 = process.cpuUsage(), f0 = process.resourceUsage().minorPageFault, t0 = performance.now();
    await fn();
    wall.push((performance.now() - t0) / 1000);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e6);
    sys.push(c.system / 1e6);
    faults.push(process.resourceUsage().minorPageFault - f0);  // buffers mapped and faulted in per call
  }
  mark(`${k} timed`);
  const s = clip.stats();
  console.log(JSON.stringify({ case: k, wall_s: med(wall), cpu_s: med(cpu), walls: wall.map((x) => +x.toFixed(3)), sys_s: med(sys), minor_faults: med(faults), arena_mib: Math.round(s.arenaBytes / 2 ** 20),
    arena_grows: s.arenaGrows, peak_rss_mib: peak(), addon: process.env.DWC_NATIVE_ADDON ?? 'build/Release' }));
}
console.log(JSON.stringify({ rss: rssLog }));
