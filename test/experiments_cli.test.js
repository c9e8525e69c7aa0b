// `npm run experiments` (scripts/experiments.mjs) as a user meets it: --help prints the options and
// trains nothing; an unknown option or a missing value is refused by name before any run starts.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const runner = (...args) => {
  const r = spawnSync(process.execPath, [join(root, 'scripts/experiments.mjs'), ...args], { encoding: 'utf8', timeout: 30000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

test('--help prints the options and starts no run', (t) => {
  const out = join(mkdtempSync(join(tmpdir(), 'dwc-exp-')), 'runs');
  const r = runner('--help', '--out', out);
  t.is(r.code, 0, r.err);
  for (const o of ['--seeds', '--noise', '--only', '--train-args', '--full-args', '--jobs', '--dry']) t.true(r.out.includes(o), `usage names ${o}`);
  t.false(existsSync(out), 'no run folder was made');
});

test('an unknown option or a missing value is refused by name', (t) => {
  const out = join(mkdtempSync(join(tmpdir(), 'dwc-exp-')), 'runs');
  let r = runner('--seed', '2', '--out', out);
  t.is(r.code, 2);
  t.regex(r.err, /unknown argument '--seed'/);
  r = runner('--out', out, '--jobs');
  t.is(r.code, 2);
  t.regex(r.err, /--jobs needs a value/);
  t.false(existsSync(out), 'no run folder was made');
});

test('a failed run stops no other: the rest finish, the failures are listed, runs that read its stage 2 are not started, exit 1', (t) => {
  const out = join(mkdtempSync(join(tmpdir(), 'dwc-exp-')), 'runs');
  // every train refuses the unknown flag at once: full fails, no-aw (on full's stage 2) is not run, no-stage2 fails on its own
  const r = runner('--out', out, '--seeds', '1', '--noise', '0', '--only', 'full,no-aw,no-stage2', '--jobs', '2', '--no-write', '--train-args', '--no-such-flag');
  t.is(r.code, 1, r.err);
  t.regex(r.err, /3 of 3 runs failed/);
  t.regex(r.err, /full, noise 0, seed 0: train .*exited with/);
  t.regex(r.err, /no-stage2, noise 0, seed 0: train .*exited with/);
  t.regex(r.err, /no-aw, noise 0, seed 0: not run: the full run whose stage 2 it reads failed/);
  t.notRegex(r.err, /EPIPE|Unhandled/);
});
