// Shared benchmark machinery (see ../shared/design/PERFORMANCE.md): median of timed runs after
// warm-up, the measured SGEMM ceiling, the PyTorch anchor when installed, and the output format
// (a human table, or one JSON object per line with --json; results also land in bench/results/).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { runOp, tensor, addon } from '../lib/index.js';

export const args = process.argv.slice(3);
export const wantJson = args.includes('--json');
export const device = 'cpu';

/** Value of `--name N` on the command line, else def. */
export function flag(name, def) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
}

/**
 * `--rounds N` (default 1): the engine and the anchor are timed alternately N times, so that a
 * machine whose speed drifts during the run (shared VMs do) slows both alike; the figures are the
 * medians over the rounds, and each round's pair is kept (`rounds` in the JSON row).
 */
export const rounds = Math.max(1, Math.floor(flag('rounds', 1)));

/** Summary of per-round {engine_s, anchor_s} pairs: medians, each round's ratio and their median. */
export function roundsSummary(pairs) {
  const withAnchor = pairs.filter((p) => p.anchor_s);
  return {
    engine_s: median(pairs.map((p) => p.engine_s)),
    anchor_s: withAnchor.length ? median(withAnchor.map((p) => p.anchor_s)) : null,
    rounds: pairs.map((p) => ({ ...p, ratio: p.anchor_s ? p.engine_s / p.anchor_s : null })),
    median_round_ratio: withAnchor.length ? median(withAnchor.map((p) => p.engine_s / p.anchor_s)) : null,
  };
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median seconds of fn() over `reps` runs after `warmup` untimed runs. fn may be async. */
export async function timeIt(fn, { warmup = 2, reps = 5 } = {}) {
  for (let i = 0; i < warmup; i++) await fn();
  const ts = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ts.push((performance.now() - t0) / 1000);
  }
  return median(ts);
}

export function randTensor(shape, seed = 1) {
  let a = seed >>> 0;
  const n = shape.reduce((x, y) => x * y, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    d[i] = (a / 4294967296 - 0.5) * 0.2;
  }
  return tensor(d, shape);
}

const peakCache = {};
/**
 * Measured GEMM rate (GFLOP/s) on a large square product through the engine's own GEMM entry
 * (runOp('gemm') = dwc::sgemm), on `backend` ('onednn' | 'cblas'; default: the one the engine
 * uses, info().gemm) at compute `precision` ('fp32' | 'bf16': bf16 operands, fp32 accumulation,
 * src/precision.ts). The engine's settings are restored afterwards.
 */
export async function gemmPeak({ backend, precision: p = 'fp32' } = {}) {
  const a = addon();
  const engineGemm = a.info().gemm;
  const b = backend ?? engineGemm;
  const key = `${b}/${p}`;
  if (peakCache[key]) return peakCache[key];
  const n = 2048;
  const A = randTensor([n, n], 1);
  const B = randTensor([n, n], 2);
  a.setKernels({ gemm: b });
  try {
    // the fastest of three medians: the first one in a process can run well below the others (threads
    // and clocks still waking up: 232 vs 305–309 GFLOP/s on a quiet Sapphire Rapids), which printed
    // "137% of peak" for the step
    let s = Infinity;
    for (let i = 0; i < 3; i++)
      s = Math.min(s, await atPrecision(p, () => timeIt(() => { for (const t of Object.values(runOp('gemm', { A, B }, {}))) t.release(); }, { warmup: 2, reps: 5 })));
    peakCache[key] = (2 * n * n * n) / s / 1e9;
  } finally {
    a.setKernels({ gemm: engineGemm });
    A.release();
    B.release();
  }
  return peakCache[key];
}

/** The fp32 SGEMM peak (gemmPeak at fp32). */
export function sgemmPeak(backend) {
  return gemmPeak({ backend });
}

/**
 * `--precision fp32|bf16` (default fp32; run.js has refused bf16 where it cannot run). With bf16
 * the suites time the engine in bf16 and in fp32, and the PyTorch anchor in fp32 and under
 * torch.autocast('cpu', dtype=torch.bfloat16), all in the same run (docs/PERFORMANCE.md "bf16").
 */
export const precision = (() => {
  const i = args.indexOf('--precision');
  return i >= 0 ? args[i + 1] : 'fp32';
})();
export const bf16 = precision === 'bf16';

/** Runs fn() with the engine's process-wide compute precision p (setKernels), then the one before. */
export async function atPrecision(p, fn) {
  const a = addon();
  const before = a.setKernels().precision ?? 'fp32';
  if (p === before) return fn();
  a.setKernels({ precision: p });
  try {
    return await fn();
  } finally {
    a.setKernels({ precision: before });
  }
}

/** GEMM/conv calls that ran in bf16 so far (kernelStats().bf16Calls; 0 on an addon without them). */
export function bf16Calls() {
  return addon().kernelStats().bf16Calls ?? 0;
}

/** Issue 12's bf16 goals: engine fp32 / engine bf16 ≥ 2.5, engine bf16 / PyTorch autocast < 1. */
export const BF16_GOALS = { speedup_vs_fp32: 2.5, ratio_vs_autocast: 1 };

/**
 * Medians of bf16 rounds [{bf16_s, fp32_s, anchor_fp32_s, anchor_autocast_s, bf16_calls}] and the
 * goal ratios (of the medians).
 */
export function bf16Summary(rs) {
  const med = (k) => {
    const v = rs.map((r) => r[k]).filter((x) => typeof x === 'number');
    return v.length ? median(v) : null;
  };
  const engine_s = med('bf16_s'), engine_fp32_s = med('fp32_s');
  const anchor_fp32_s = med('anchor_fp32_s'), anchor_autocast_s = med('anchor_autocast_s');
  return { engine_s, engine_fp32_s, anchor_fp32_s, anchor_autocast_s, speedup_vs_fp32: engine_fp32_s / engine_s,
    ratio_vs_autocast: anchor_autocast_s ? engine_s / anchor_autocast_s : null, bf16_calls: Math.min(...rs.map((r) => r.bf16_calls ?? 0)), rounds: rs };
}

/**
 * Emits a bf16 row: engine bf16 against PyTorch autocast (the row's ratio), GFLOP/s against the bf16
 * GEMM peak, and the fp32 figures of the same run next to them; prints the goal line.
 */
export function emitBf16({ suite, name, flops, sum, peakBf16, peakFp32, anchorName, extra = {} }) {
  const row = emit({ suite, name: `${name} bf16`, engine_s: sum.engine_s, gflops: flops ? flops / sum.engine_s / 1e9 : null, peak_gflops: peakBf16,
    ...(sum.anchor_autocast_s ? { anchor: `${anchorName} autocast bf16`, anchor_s: sum.anchor_autocast_s } : {}),
    extra: { precision: 'bf16', engine_bf16_s: sum.engine_s, engine_fp32_s: sum.engine_fp32_s, anchor_fp32_s: sum.anchor_fp32_s, anchor_autocast_s: sum.anchor_autocast_s,
      gflops_fp32: flops ? flops / sum.engine_fp32_s / 1e9 : null, peak_fp32_gflops: peakFp32, peak_bf16_gflops: peakBf16,
      speedup_vs_fp32: sum.speedup_vs_fp32, ratio_vs_autocast: sum.ratio_vs_autocast, goals: BF16_GOALS,
      goal_speedup_met: sum.speedup_vs_fp32 >= BF16_GOALS.speedup_vs_fp32, goal_autocast_met: sum.ratio_vs_autocast !== null ? sum.ratio_vs_autocast < BF16_GOALS.ratio_vs_autocast : null,
      bf16_calls: sum.bf16_calls, bf16_rounds: sum.rounds, ...extra } });
  if (!wantJson) {
    const ms = (x) => (typeof x === 'number' ? `${(x * 1000).toFixed(1)} ms` : '-');
    console.log(`  engine bf16 ${ms(sum.engine_s)}, engine fp32 ${ms(sum.engine_fp32_s)}, PyTorch fp32 ${ms(sum.anchor_fp32_s)}, PyTorch autocast bf16 ${ms(sum.anchor_autocast_s)}` +
      (flops ? `; fp32 ${(flops / sum.engine_fp32_s / 1e9).toFixed(1)} GFLOP/s of ${peakFp32.toFixed(0)} (fp32 peak), bf16 of ${peakBf16.toFixed(0)} (bf16 peak)` : ''));
    console.log(`  goals: engine fp32 / bf16 = ${sum.speedup_vs_fp32.toFixed(2)} (≥ ${BF16_GOALS.speedup_vs_fp32}: ${row.goal_speedup_met ? 'met' : 'NOT met'})` +
      (sum.ratio_vs_autocast !== null ? `, engine bf16 / PyTorch autocast = ${sum.ratio_vs_autocast.toFixed(3)} (< 1: ${row.goal_autocast_met ? 'met' : 'NOT met'})` : ', no PyTorch anchor'));
    if (!(sum.bf16_calls > 0)) console.log('  warning: no GEMM/conv ran in bf16 in the bf16 timings (kernelStats().bf16Calls did not move): the "bf16" figure is fp32');
  }
  return row;
}

/** Anchor script args that run it under torch.autocast('cpu', dtype=torch.bfloat16) (bench/torch_timing.py). */
export const AUTOCAST_FLAG = '--autocast-bf16';

/** What the kernels run on: backend, its ISA, and the CPU's own features (issue 12 item 2). */
export function kernelsLine() {
  const i = addon().info();
  const be = i.gemm === 'onednn' ? `oneDNN ${i.onednn}` : 'CBLAS';
  return `kernels ${be}, ISA ${i.isa}; CPU ${i.cpu.brand || i.cpu.vendor}: ${i.cpu.features}; ${i.threads} threads`;
}

/** The system Python's PyTorch version, or null (anchors need /usr/bin/python3 with python3-torch). */
export function torchVersion() {
  try {
    return execFileSync('/usr/bin/python3', ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

// OpenBLAS cores with AVX2-or-better kernels; any other core on an AVX2 CPU is a generic fallback.
const FAST_OPENBLAS_CORES = new Set(['haswell', 'zen', 'skylakex', 'cooperlake', 'sapphirerapids']);

let torchCoreCache;
/**
 * The OpenBLAS core that PyTorch (the anchor) runs as installed, and the CPU's real core when that
 * one is a generic fallback on an AVX2-or-better CPU ({core, generic, real}); null when PyTorch
 * does not load OpenBLAS.
 */
export function torchOpenblasCore() {
  if (torchCoreCache !== undefined) return torchCoreCache;
  torchCoreCache = null;
  const py = [
    'import ctypes, torch',
    "libs = [l.split()[-1] for l in open('/proc/self/maps') if 'openblas' in l.split()[-1]]",
    'lib = ctypes.CDLL(libs[0]) if libs else None',
    'if lib: lib.openblas_get_corename.restype = ctypes.c_char_p',
    "print(lib.openblas_get_corename().decode() if lib else '')",
  ].join('\n');
  try {
    const env = { ...process.env };
    delete env.OPENBLAS_CORETYPE; // as installed
    const core = execFileSync('/usr/bin/python3', ['-c', py], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], env }).trim();
    if (core) {
      const cpu = addon().info().cpu;
      const generic = cpu.avx2 && !FAST_OPENBLAS_CORES.has(core.toLowerCase());
      const real = cpu.vendor === 'AuthenticAMD' ? 'Zen' : cpu.avx512_bf16 ? 'Cooperlake' : cpu.avx512 ? 'SkylakeX' : 'Haswell';
      torchCoreCache = { core, generic, real };
    }
  } catch {
    torchCoreCache = null;
  }
  return torchCoreCache;
}

/** Anchor settings of the last runTorchAnchor call (both runs when a generic core was found). */
export let lastAnchorRuns = [];

function runAnchorOnce(script, scriptArgs, extraEnv) {
  const env = { ...process.env, OMP_NUM_THREADS: String(addon().info().threads), ...extraEnv };
  if (!('OPENBLAS_CORETYPE' in extraEnv)) delete env.OPENBLAS_CORETYPE; // "as installed"
  const r = spawnSync('/usr/bin/python3', [script, ...scriptArgs], { encoding: 'utf8', env });
  if (r.status !== 0) {
    console.error(`anchor ${script} failed:\n${r.stderr}`);
    return null;
  }
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

/**
 * Runs a Python anchor script that prints one JSON line {name: seconds, ...}; null if unavailable.
 * The anchor gets its best ordinary settings (PERFORMANCE.md): when PyTorch's OpenBLAS falls back
 * to a generic core on this CPU, the script runs as installed and again with OPENBLAS_CORETYPE set
 * to the real core; both are printed and each timing is the faster of the two.
 */
export function runTorchAnchor(script, scriptArgs = []) {
  if (!torchVersion()) return null;
  const core = torchOpenblasCore();
  const asInstalled = runAnchorOnce(script, scriptArgs, {});
  lastAnchorRuns = [{ setting: `as installed${core ? ` (OpenBLAS core ${core.core})` : ''}`, result: asInstalled }];
  if (!core || !core.generic || !asInstalled) return asInstalled;
  const tuned = runAnchorOnce(script, scriptArgs, { OPENBLAS_CORETYPE: core.real });
  lastAnchorRuns.push({ setting: `OPENBLAS_CORETYPE=${core.real}`, result: tuned });
  if (!tuned) return asInstalled;
  const best = { ...asInstalled };
  for (const [k, v] of Object.entries(tuned)) if (typeof v === 'number' && typeof best[k] === 'number') best[k] = Math.min(best[k], v);
  if (!wantJson) {
    const fmt = (o) => Object.entries(o).filter(([, v]) => typeof v === 'number').map(([k, v]) => `${k} ${(v * 1000).toFixed(1)} ms`).join(', ');
    console.log(`  anchor: PyTorch's OpenBLAS runs the generic '${core.core}' core here; as installed: ${fmt(asInstalled)}`);
    console.log(`  anchor: with OPENBLAS_CORETYPE=${core.real}: ${fmt(tuned)}; ratios are taken against the faster`);
  }
  return best;
}

function kernelsInfo() {
  const i = addon().info();
  const tc = torchVersion() ? torchOpenblasCore() : null;
  return { gemm_backend: i.gemm, conv_impl: i.conv, isa: i.isa, cpu_features: i.cpu.features,
    ...(tc ? { anchor_openblas_core: tc.core, anchor_openblas_generic: tc.generic } : {}) };
}

const rows = [];
/** Records one benchmark result (fields as PERFORMANCE.md) and prints it. */
export function emit(r) {
  const row = { suite: r.suite, name: r.name, engine_s: r.engine_s, anchor: r.anchor ?? null, anchor_s: r.anchor_s ?? null,
    ratio: r.anchor_s ? r.engine_s / r.anchor_s : null, gflops: r.gflops ?? null, peak_gflops: r.peak_gflops ?? null, device, ...kernelsInfo(), ...r.extra };
  rows.push(row);
  if (wantJson) console.log(JSON.stringify(row));
  else {
    const f = (x, d = 2) => (x === null || x === undefined ? '-' : Number(x).toFixed(d));
    const pct = row.gflops && row.peak_gflops ? ` (${((100 * row.gflops) / row.peak_gflops).toFixed(0)}% of peak)` : '';
    console.log(`${row.name.padEnd(44)} ${(f(row.engine_s * 1000, 2) + ' ms').padStart(12)}  ${f(row.gflops, 1).padStart(7)} GFLOP/s${pct}` +
      (row.anchor_s ? `   ${row.anchor} ${f(row.anchor_s * 1000, 2)} ms  ratio ${f(row.ratio, 3)}` : ''));
  }
  return row;
}

/** Writes every result of this run to bench/results/<suite>.json. */
export function saveResults(suite) {
  const dir = join(new URL('.', import.meta.url).pathname, 'results');
  mkdirSync(dir, { recursive: true });
  const info = addon().info();
  writeFileSync(join(dir, `${suite}${bf16 ? '_bf16' : ''}.json`), JSON.stringify({ date: new Date().toISOString(), precision, blas: info.blas, gemm: info.gemm, isa: info.isa, cpu: info.cpu, threads: info.threads, results: rows }, null, 2));
  if (!wantJson) console.log(`results written to bench/results/${suite}${bf16 ? '_bf16' : ''}.json`);
}

export function header(title) {
  if (wantJson) return;
  const info = addon().info();
  console.log(`# ${title}  (${kernelsLine()})`);
  for (const w of info.blasWarnings) console.log(`# warning: ${w}`);
}

/** A deterministic random batch of the paper step (features given): bench/step.js, step_cpu.mjs. */
export function paperBatch({ B, Dc, C, H, W, L, vocab }) {
  let a = 12345;
  const rnd = () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a / 4294967296;
  };
  const f = (n, pos) => Float32Array.from({ length: n }, () => (pos ? rnd() : (rnd() - 0.5) * 2));
  const lengths = Int32Array.from({ length: B }, (_, i) => (i === 0 ? L : Math.max(1, Math.floor(L / 4) + Math.floor(rnd() * (L - Math.floor(L / 4) + 1)))));
  const tokens = new Int32Array(B * L);
  for (let i = 0; i < B; i++) for (let j = 0; j < L; j++) tokens[i * L + j] = j < lengths[i] ? 4 + Math.floor(rnd() * (vocab - 4)) : 0;
  return {
    B, eImg: f(B * Dc), eTxt: f(B * Dc), eTarget: f(B * Dc), fmap: f(B * C * H * W, true), fmapTarget: f(B * C * H * W, true),
    H, W, tokens, L, lengths, labels: Int32Array.from({ length: B }, (_, i) => i),
  };
}
