#!/usr/bin/env node
// `npm run experiments`: the full model (PL4CIR stage 2, then DWC with self-supervised adaptive
// weighting on both combiners), its ablations, and the baselines (CLIP zero-shot composition,
// image-only, text-only), 3 seeds each, at 0% and 20% training-label noise on the synthetic
// benchmark. Prints a markdown table of mean ± std R@1/R@5/R@10 with, per ablation, the per-seed
// paired difference of R@1 to full, and writes it to docs/EXPERIMENTS.md and README.md.
// Options: --seeds 3  --epochs N  --noise 0,0.2  --only full,no-ssg  --out runs/experiments  --dry  --no-write
//          --train-args "--image-size 32 --eval-every 2"  (passed to every `train`)
//          --full-args "--stages 2,3 --adaptive-weighting global,local"  (what "full" is; every
//            ablation is full plus its --ablation, except no-stage2, which drops --stages)
//          --jobs N  runs N trainings at once, each with cores/N threads (small shapes use one core
//          better than two: on 2 cores --jobs 2 finishes the grid sooner)
// The CLIP zero-shot baseline costs no run of its own: stage 2 of every full run scores it on the
// test split (docs/MODEL.md §14) and the runner reads it from that run's events.
// The staged ablations share full's stage 2 (same noise and seed): they run stage 3 on its CLIP.
// A finished run leaves result.json in its folder and is not run again (an interrupted grid
// continues where it stopped; delete the folder to redo a run; a folder made with other arguments is
// refused).
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// the options this runner takes: name → whether a value follows
const OPTIONS = { seeds: true, epochs: true, noise: true, only: true, out: true, 'train-args': true, 'full-args': true, jobs: true, dry: false, 'no-write': false, help: false };
const USAGE = `usage: npm run experiments -- [options]
  Trains the full model, its ablations and the baselines on the synthetic benchmark and writes
  the table to docs/EXPERIMENTS.md and README.md (finished runs are kept and not run again).
  --seeds N            model seeds per cell (default 3)
  --epochs N           epochs of every stage-3 run (default: the preset's)
  --noise LIST         training-label noise rates (default 0,0.2)
  --only LIST          variants to run (default all: full,no-stage2,no-aw,no-ssg,no-editors,fixed-w,
                       no-mutual,global-only,local-only,image-only,text-only)
  --out DIR            run folders (default runs/experiments)
  --train-args "..."   passed to every train (e.g. "--image-size 32 --eval-every 2")
  --full-args "..."    what full is (default "--stages 2,3 --adaptive-weighting global,local")
  --jobs N             trainings at once, each with cores/N threads (default 1)
  --dry                print the runs, train nothing
  --no-write           print the table, do not write the docs
  --help               this text`;
{
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const m = /^--(.+)$/.exec(a[i]);
    if (!m || !(m[1] in OPTIONS)) {
      console.error(`experiments: unknown argument '${a[i]}'\n${USAGE}`);
      process.exit(2);
    }
    if (m[1] === 'help') {
      console.log(USAGE);
      process.exit(0);
    }
    if (OPTIONS[m[1]]) {
      if (i + 1 >= a.length) {
        console.error(`experiments: --${m[1]} needs a value`);
        process.exit(2);
      }
      i++;
    }
  }
}
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
// [name, ablations, uses full's stage 2]. 'clip-zero-shot' is read from full's stage 2.
const VARIANTS = [
  ['full', [], true], ['no-stage2', [], false], ['no-aw', ['no-aw'], true], ['no-ssg', ['no-ssg'], true],
  ['no-editors', ['no-editors'], true], ['fixed-w', ['fixed-w'], true], ['no-mutual', ['no-mutual'], true],
  ['global-only', ['global-only'], true], ['local-only', ['local-only'], true],
  ['image-only', ['image-only'], true], ['text-only', ['text-only'], true],
];
const BASELINE_ZERO_SHOT = 'clip-zero-shot';
const seeds = Number(arg('seeds', '3'));
const noises = arg('noise', '0,0.2').split(',').map(Number);
const only = arg('only', '') ? arg('only').split(',') : null;
const epochs = arg('epochs', undefined);
const outRoot = resolve(root, arg('out', 'runs/experiments'));
const dry = process.argv.includes('--dry');
const noWrite = dry || process.argv.includes('--no-write');  // print the table only
const extra = arg('train-args', '').split(/\s+/).filter(Boolean);
const fullArgs = arg('full-args', '--stages 2,3 --adaptive-weighting global,local').split(/\s+/).filter(Boolean);
// full's arguments without the stage list (the no-stage2 ablation)
// (and without stage-2 options, which train refuses without --stages: --pretrain-* take a value)
const withoutStages = (a) => a.filter((x, i) => !/^--(stages|pretrain-)/.test(x) && !/^--(stages|pretrain-)/.test(a[i - 1] ?? ''));
const jobs = Math.max(1, Number(arg('jobs', '1')));
const threads = String(Math.max(1, Math.floor(availableParallelism() / jobs)));

function run(args, tag, command = 'train') {
  return new Promise((res, rej) => {
    const env = { ...process.env, DWC_NUM_THREADS: process.env.DWC_NUM_THREADS ?? threads };
    const p = spawn(process.execPath, [join(root, 'lib/cli/main.js'), command, '--json', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env });
    let done = null;
    let zeroShot = null;  // stage 2's test-split zero-shot composition (a staged run only)
    let buf = '';
    p.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const e = JSON.parse(line);
          if ((e.event === 'eval' || e.event === 'test') && e.recall) process.stderr.write(`    ${tag} epoch ${e.epoch} ${e.split ?? ''}: R@1 ${e.recall['1'].toFixed(1)}\n`);
          if (e.event === 'test' && Array.isArray(e.composition) && e.composition.length) zeroShot = meanRecall(e.composition.map((c) => c.recall));
          if (e.event === 'done') done = e;
        } catch { /* not JSON */ }
      }
    });
    p.on('close', (code) => (code === 0 && (done || zeroShot) ? res({ ...done, zeroShot }) : rej(new Error(`${command} ${args.join(' ')} exited with ${code}`))));
  });
}

// the mean Recall@K over evaluation sets (FashionIQ-style datasets have several; synthetic one)
function meanRecall(rs) {
  const out = {};
  for (const k of ['1', '5', '10']) out[k] = rs.reduce((a, r) => a + r[k], 0) / rs.length;
  return out;
}

const stats = (xs) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const s = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0;
  return `${m.toFixed(1)} ± ${s.toFixed(1)}`;
};

// R@1 of a variant minus full's, seed by seed (the seeds share benchmark, noise and init).
function pairedR1(runs, full) {
  if (!full || runs === full) return '';
  const d = [];
  for (let i = 0; i < Math.min(runs.length, full.length); i++) if (runs[i] && full[i]) d.push(runs[i]['1'] - full[i]['1']);
  if (!d.length) return '';
  const s = stats(d);
  return s.startsWith('-') ? s : `+${s}`;
}

export function table(results) {
  const lines = ['| noise | model | R@1 | R@5 | R@10 | R@1 − full (paired) |', '|---|---|---|---|---|---|'];
  for (const [noise, byVariant] of results) {
    const full = byVariant.get('full');
    for (const [name, runs] of byVariant) {
      const done = runs.filter(Boolean);
      if (!done.length) continue;
      lines.push(`| ${Math.round(noise * 100)}% | ${name} | ${['1', '5', '10'].map((k) => stats(done.map((r) => r[k]))).join(' | ')} | ${pairedR1(runs, full)} |`);
    }
  }
  return lines.join('\n');
}

const results = new Map();
const tasks = [];
const t0 = Date.now();
for (const noise of noises) {
  const byVariant = new Map();
  results.set(noise, byVariant);
  const zeroShotRuns = [];
  for (const [name, abl, staged] of VARIANTS) {
    if (only && !only.includes(name)) continue;
    const runs = [];
    byVariant.set(name, runs);
    if (name === 'full' && (!only || only.includes(BASELINE_ZERO_SHOT)) && fullArgs.includes('--stages')) byVariant.set(BASELINE_ZERO_SHOT, zeroShotRuns);
    for (let seed = 0; seed < seeds; seed++) {
      const dir = join(outRoot, `noise${noise}-${name}-s${seed}`);
      const args = ['--seed', String(seed), '--noise', String(noise), '--out', dir, '--no-report', ...fullArgs];
      if (abl.length) args.push('--ablation', abl.join(','));
      if (epochs) args.push('--epochs', epochs);
      args.push(...extra);
      // A staged ablation reads the stage-2 CLIP of full's run with the same noise and seed (stage 2
      // does not depend on the ablation, and stage 3 of `--stages 2,3` is `train --clip OUT/stage2`,
      // src/train/stages.ts), so it runs stage 3 only, after full's run; without full in the grid
      // it runs both stages itself.
      const fullKey = `${noise}/${seed}`;
      const sharesStage2 = staged && name !== 'full' && fullArgs.includes('--stages') && (!only || only.includes('full'));
      if (!staged || sharesStage2) args.splice(0, args.length, ...withoutStages(args));
      if (sharesStage2) args.push('--clip', join(outRoot, `noise${noise}-full-s${seed}`, 'stage2'));
      tasks.push({ tag: `${name}, noise ${noise}, seed ${seed}`, args, dir, runs, seed, zeroShot: name === 'full' ? zeroShotRuns : null,
        fullKey, isFull: name === 'full', after: sharesStage2 ? fullKey : null });
    }
  }
}
// full's run per noise/seed: the staged ablations wait for its stage 2
const fullDone = new Map();
for (const t of tasks) if (t.isFull) { let r; const p = new Promise((res) => (r = res)); fullDone.set(t.fullKey, { p, resolve: r }); }
let next = 0;
let trainMinutes = 0;  // sum of the runs' own times (cached runs included when recorded)
const failed = [];  // a failed run stops nothing else: the others finish (and are kept), then the runner exits 1
async function worker() {
  while (next < tasks.length) {
    const task = tasks[next++];
    try {
      await runTask(task);
    } catch (e) {
      failed.push({ task, e });
      process.stderr.write(`experiments: ${task.tag} failed: ${e.message}\n`);
    } finally {
      if (task.isFull) fullDone.get(task.fullKey).resolve();
    }
  }
}
async function runTask(task) {
  if (task.after) {
    await fullDone.get(task.after)?.p;
    if (failed.some((f) => f.task.isFull && f.task.fullKey === task.after)) throw new Error('not run: the full run whose stage 2 it reads failed');
  }
  const saved = join(task.dir, 'result.json');
  if (dry) {
    process.stderr.write(`${task.tag}: dwc-native train ${task.args.join(' ')}\n`);
    task.runs[task.seed] = { 1: 0, 5: 0, 10: 0 };
    if (task.zeroShot) task.zeroShot[task.seed] = { 1: 0, 5: 0, 10: 0 };
    return;
  }
  if (existsSync(saved)) {
    const prev = JSON.parse(readFileSync(saved, 'utf8'));
    if (prev.args && JSON.stringify(prev.args) !== JSON.stringify(task.args))
      throw new Error(`${task.dir} holds a run made with other arguments (${prev.args.join(' ')}); give another --out or delete that folder`);
    task.runs[task.seed] = prev.recall;
    if (task.zeroShot && prev.zeroShot) task.zeroShot[task.seed] = prev.zeroShot;
    trainMinutes += prev.minutes ?? 0;
    process.stderr.write(`[${((Date.now() - t0) / 60000).toFixed(1)} min] ${task.tag}: done before (${saved})\n`);
    return;
  }
  process.stderr.write(`[${((Date.now() - t0) / 60000).toFixed(1)} min] ${task.tag}\n`);
  const done = await run(task.args, task.tag);
  // test recall of the checkpoint chosen on the validation split (datasets without val: its eval split)
  const recall = done.test?.best?.recall ?? done.best.recall;
  task.runs[task.seed] = recall;  // by seed: the paired differences match seeds
  // the CLIP zero-shot baseline: full's stage-2 CLIP, no composed-retrieval training, on test
  // (`pretrain --epochs 0` scores given weights only: docs/MODEL.md §14)
  if (task.zeroShot && existsSync(join(task.dir, 'stage2'))) {
    const z = await run(['--clip', join(task.dir, 'stage2'), '--epochs', '0', '--seed', String(task.seed), '--out', join(task.dir, 'zero-shot')], `${task.tag} (zero-shot)`, 'pretrain');
    if (z.zeroShot) { task.zeroShot[task.seed] = z.zeroShot; done.zeroShot = z.zeroShot; }
  }
  trainMinutes += done.minutes ?? 0;
  writeFileSync(saved, JSON.stringify({ recall, zeroShot: done.zeroShot ?? undefined, split: done.test ? 'test (best on val)' : done.split, minutes: done.minutes, args: task.args }) + '\n');
}
await Promise.all(Array.from({ length: jobs }, worker));
if (failed.length) {
  console.error(`experiments: ${failed.length} of ${tasks.length} runs failed (the finished ones are kept; run again to retry only these):`);
  for (const { task, e } of failed) console.error(`  ${task.tag}: ${e.message}`);
  process.exit(1);
}
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
  if (noWrite) continue;  // --dry lists the grid, --no-write prints the table only
  const old = existsSync(page) ? readFileSync(page, 'utf8') : fresh;
  writeFileSync(page, re.test(old) ? old.replace(re, section) : `${old.trimEnd()}\n\n${section}\n`);
}
