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

let peakCache;
/** Measured SGEMM rate (GFLOP/s) of the BLAS in use on a large square product. */
export async function sgemmPeak() {
  if (peakCache) return peakCache;
  const n = 2048;
  const A = randTensor([n, n], 1);
  const B = randTensor([n, n], 2);
  const s = await timeIt(() => runOp('gemm', { A, B }, {}), { warmup: 2, reps: 5 });
  peakCache = (2 * n * n * n) / s / 1e9;
  return peakCache;
}

/** The system Python's PyTorch version, or null (anchors need /usr/bin/python3 with python3-torch). */
export function torchVersion() {
  try {
    return execFileSync('/usr/bin/python3', ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** Runs a Python anchor script that prints one JSON line {name: seconds, ...}; null if unavailable. */
export function runTorchAnchor(script, scriptArgs = []) {
  if (!torchVersion()) return null;
  const r = spawnSync('/usr/bin/python3', [script, ...scriptArgs], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(addon().info().threads) } });
  if (r.status !== 0) {
    console.error(`anchor ${script} failed:\n${r.stderr}`);
    return null;
  }
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

const rows = [];
/** Records one benchmark result (fields as PERFORMANCE.md) and prints it. */
export function emit(r) {
  const row = { suite: r.suite, name: r.name, engine_s: r.engine_s, anchor: r.anchor ?? null, anchor_s: r.anchor_s ?? null,
    ratio: r.anchor_s ? r.engine_s / r.anchor_s : null, gflops: r.gflops ?? null, peak_gflops: r.peak_gflops ?? null, device, ...r.extra };
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
  writeFileSync(join(dir, `${suite}.json`), JSON.stringify({ date: new Date().toISOString(), blas: info.blas, threads: info.threads, results: rows }, null, 2));
  if (!wantJson) console.log(`results written to bench/results/${suite}.json`);
}

export function header(title) {
  if (wantJson) return;
  const info = addon().info();
  console.log(`# ${title}  (${info.blas.split(' ').slice(0, 2).join(' ')}, ${info.threads} threads)`);
}
