#!/usr/bin/env node
// `npm run experiments`: full DWC, its ablations and the image-only / text-only baselines, 3 seeds
// each, at 0% and 20% training-label noise on the synthetic benchmark. Prints a markdown table of
// mean ± std R@1/R@5/R@10 and writes it to docs/EXPERIMENTS.md and README.md.
// Options: --seeds 3  --epochs N  --noise 0,0.2  --only full,no-ssg  --out runs/experiments  --dry
//          --train-args "--image-size 32 --eval-every 2"  (passed to every `train`)
//          --jobs N  runs N trainings at once, each with cores/N threads (small shapes use one core
//          better than two: on 2 cores --jobs 2 finishes the grid sooner)
// A finished run leaves result.json in its folder and is not run again (an interrupted grid
// continues where it stopped; delete the folder to redo a run).
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const VARIANTS = [
  ['full', []], ['no-ssg', ['no-ssg']], ['no-editors', ['no-editors']], ['fixed-w', ['fixed-w']], ['no-mutual', ['no-mutual']],
  ['global-only', ['global-only']], ['local-only', ['local-only']], ['image-only', ['image-only']], ['text-only', ['text-only']],
];
const seeds = Number(arg('seeds', '3'));
const noises = arg('noise', '0,0.2').split(',').map(Number);
const only = arg('only', '') ? arg('only').split(',') : null;
const epochs = arg('epochs', undefined);
const outRoot = join(root, arg('out', 'runs/experiments'));
const dry = process.argv.includes('--dry');
const extra = arg('train-args', '').split(/\s+/).filter(Boolean);
const jobs = Math.max(1, Number(arg('jobs', '1')));
const threads = String(Math.max(1, Math.floor(availableParallelism() / jobs)));

function run(args, tag) {
  return new Promise((res, rej) => {
    const env = { ...process.env, DWC_NUM_THREADS: process.env.DWC_NUM_THREADS ?? threads };
    const p = spawn(process.execPath, [join(root, 'lib/cli/main.js'), 'train', '--json', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env });
    let done = null;
    let buf = '';
    p.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const e = JSON.parse(line);
          if (e.event === 'eval' || e.event === 'test') process.stderr.write(`    ${tag} epoch ${e.epoch} ${e.split ?? ''}: R@1 ${e.recall['1'].toFixed(1)}\n`);
          if (e.event === 'done') done = e;
        } catch { /* not JSON */ }
      }
    });
    p.on('close', (code) => (code === 0 && done ? res(done) : rej(new Error(`train ${args.join(' ')} exited with ${code}`))));
  });
}

const stats = (xs) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const s = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0;
  return `${m.toFixed(1)} ± ${s.toFixed(1)}`;
};

export function table(results) {
  const lines = ['| noise | model | R@1 | R@5 | R@10 |', '|---|---|---|---|---|'];
  for (const [noise, byVariant] of results)
    for (const [name, runs] of byVariant) lines.push(`| ${Math.round(noise * 100)}% | ${name} | ${['1', '5', '10'].map((k) => stats(runs.map((r) => r[k]))).join(' | ')} |`);
  return lines.join('\n');
}

const results = new Map();
const tasks = [];
const t0 = Date.now();
for (const noise of noises) {
  const byVariant = new Map();
  results.set(noise, byVariant);
  for (const [name, abl] of VARIANTS) {
    if (only && !only.includes(name)) continue;
    const runs = [];
    byVariant.set(name, runs);
    for (let seed = 0; seed < seeds; seed++) {
      const dir = join(outRoot, `noise${noise}-${name}-s${seed}`);
      const args = ['--seed', String(seed), '--noise', String(noise), '--out', dir, '--no-report'];
      if (abl.length) args.push('--ablation', abl.join(','));
      if (epochs) args.push('--epochs', epochs);
      args.push(...extra);
      tasks.push({ tag: `${name}, noise ${noise}, seed ${seed}`, args, dir, runs });
    }
  }
}
let next = 0;
let trainMinutes = 0;  // sum of the runs' own times (cached runs included when recorded)
async function worker() {
  while (next < tasks.length) {
    const task = tasks[next++];
    const saved = join(task.dir, 'result.json');
    if (dry) {
      task.runs.push({ 1: 0, 5: 0, 10: 0 });
      continue;
    }
    if (existsSync(saved)) {
      const prev = JSON.parse(readFileSync(saved, 'utf8'));
      task.runs.push(prev.recall);
      trainMinutes += prev.minutes ?? 0;
      process.stderr.write(`[${((Date.now() - t0) / 60000).toFixed(1)} min] ${task.tag}: done before (${saved})\n`);
      continue;
    }
    process.stderr.write(`[${((Date.now() - t0) / 60000).toFixed(1)} min] ${task.tag}\n`);
    const done = await run(task.args, task.tag);
    // test recall of the checkpoint chosen on the validation split (datasets without val: its eval split)
    const recall = done.test?.best?.recall ?? done.best.recall;
    task.runs.push(recall);
    trainMinutes += done.minutes ?? 0;
    writeFileSync(saved, JSON.stringify({ recall, split: done.test ? 'test (best on val)' : done.split, minutes: done.minutes, args: task.args }) + '\n');
  }
}
await Promise.all(Array.from({ length: jobs }, worker));
const md = table(results);
const cmd = `npm run experiments -- ${process.argv.slice(2).map((a) => (/\s/.test(a) ? `"${a}"` : a)).join(' ')}`.trim();
console.log(md);
mkdirSync(join(root, 'docs'), { recursive: true });
// The table goes between the markers of docs/EXPERIMENTS.md and of README.md (the rest of each
// page is kept; a page without the markers gets them appended).
const took = trainMinutes > 0 ? `${trainMinutes.toFixed(0)} min of training over ${jobs} parallel job${jobs > 1 ? 's' : ''}` : `${((Date.now() - t0) / 60000).toFixed(0)} min`;
const section = `<!-- experiments-table -->\nProduced by \`${cmd}\` (${took}; small preset, CPU; test recall of the epoch with the best validation mean recall; mean ± std over ${seeds} seeds; test queries are never noisy).\n\n${md}\n<!-- /experiments-table -->`;
const re = /<!-- experiments-table -->[\s\S]*<!-- \/experiments-table -->/;
for (const [page, fresh] of [[join(root, 'docs/EXPERIMENTS.md'), '# Experiments on the synthetic benchmark\n'], [join(root, 'README.md'), '']]) {
  if (dry && page.endsWith('README.md')) continue;
  const old = existsSync(page) ? readFileSync(page, 'utf8') : fresh;
  writeFileSync(page, re.test(old) ? old.replace(re, section) : `${old.trimEnd()}\n\n${section}\n`);
}
