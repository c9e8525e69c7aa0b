// The command line as a user meets it: bad input gives one clear line and exit code ≠ 0, no stack
// trace unless --verbose; --help lists the commands' flags.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { writeSafetensors } from '../lib/safetensors.js';
import { resolveConfig } from '../lib/train/config.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tmp = () => mkdtempSync(join(tmpdir(), 'dwc-cli-'));

function cli(...args) {
  const r = spawnSync(process.execPath, [join(root, 'lib/cli/main.js'), ...args], { encoding: 'utf8', env: { ...process.env, DWC_NATIVE_CACHE: join(tmpdir(), 'dwc-cli-cache') }, timeout: 60000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function fails(t, r, re) {
  t.not(r.code, 0, `exit code; stderr: ${r.err}`);
  t.regex(r.err, re);
  t.notRegex(r.err, /\n\s+at .+:\d+:\d+/, 'no stack trace');
}

/** A checkpoint header as `train` writes it (weights are not needed for the checks under test). */
function fakeCheckpoint(dir, preset = 'small', corrupt = false) {
  const p = join(dir, `${preset}.safetensors`);
  if (corrupt) {
    writeFileSync(p, Buffer.from('this is not a checkpoint at all, just some bytes'));
    return p;
  }
  const cfg = resolveConfig(undefined, { preset, out: join(dir, 'run') });
  const vocab = { format: 'dwc-vocab', version: 1, words: ['<UNK>', '<AND>', '<BOS>', '<EOS>', 'make', 'it', 'red', 'blue'] };
  writeSafetensors(p, { 'global.img_fc.0.bias': { dtype: 'F32', shape: [2], data: new Float32Array(2) } }, {
    'dwc.format': 'dwc-native-checkpoint-1', 'dwc.preset': preset, 'dwc.config': JSON.stringify(cfg), 'dwc.vocab': JSON.stringify(vocab),
  });
  return p;
}

async function gallery(dir, bad = false) {
  const g = join(dir, 'gallery');
  mkdirSync(g, { recursive: true });
  for (const [i, c] of ['#f00', '#00f'].entries()) await sharp({ create: { width: 16, height: 16, channels: 3, background: c } }).png().toFile(join(g, `${i}.png`));
  if (bad) writeFileSync(join(g, 'broken.jpg'), 'garbage, not a jpeg');
  return g;
}

test('train, eval and search are registered with their flags', (t) => {
  const r = cli('--help');
  t.is(r.code, 0);
  for (const c of ['train', 'eval', 'search']) t.regex(r.out, new RegExp(`\\b${c}\\b`));
  const tr = cli('train', '--help');
  for (const f of ['--preset', '--dataset', '--data', '--epochs', '--batch-size', '--lr', '--seed', '--device', '--out', '--features', '--trunk', '--ablation', '--resume', '--config', '--json']) t.true(tr.out.includes(f), f);
});

test('unknown flag', (t) => {
  fails(t, cli('train', '--epochz', '3'), /unknown option '--epochz'/);
});

test('bad flag values name the flag', (t) => {
  fails(t, cli('train', '--epochs', 'many'), /--epochs.*not an integer/);
  fails(t, cli('train', '--preset', 'huge'), /unknown preset 'huge'/);
  fails(t, cli('train', '--ablation', 'no-brain'), /ablations.*no-brain/);
});

test('config file: unknown setting and bad JSON', (t) => {
  const d = tmp();
  writeFileSync(join(d, 'a.json'), JSON.stringify({ epochs: 2, learningRate: 1 }));
  fails(t, cli('train', '--config', join(d, 'a.json')), /unknown setting 'learningRate'/);
  writeFileSync(join(d, 'b.json'), '{ epochs: 2');
  fails(t, cli('train', '--config', join(d, 'b.json')), /not valid JSON/);
});

test('missing dataset folder', (t) => {
  const d = tmp();
  fails(t, cli('train', '--dataset', 'generic', '--data', join(d, 'nope'), '--out', join(d, 'run')), /dataset folder .*nope does not exist/);
  fails(t, cli('train', '--dataset', 'shoes'), /needs its folder/);
});

test('corrupt checkpoint', (t) => {
  const d = tmp();
  const ck = fakeCheckpoint(d, 'small', true);
  fails(t, cli('eval', '--checkpoint', ck), /checkpoint .* (corrupt|truncated)/);
  fails(t, cli('eval', '--checkpoint', join(d, 'missing.safetensors')), /does not exist/);
  writeFileSync(join(d, 'empty.safetensors'), '');
  fails(t, cli('search', '--checkpoint', join(d, 'empty.safetensors'), '--gallery', d, '--image', 'x.png', '--text', 'red'), /corrupt/);
});

test('wrong-preset checkpoint', (t) => {
  const d = tmp();
  const ck = fakeCheckpoint(d, 'paper');
  fails(t, cli('eval', '--checkpoint', ck, '--preset', 'small'), /trained with preset 'paper', not 'small'/);
  fails(t, cli('train', '--resume', ck, '--preset', 'small'), /cannot resume a 'paper' run with preset 'small'/);
});

test('unreadable image in the gallery names the file', async (t) => {
  const d = tmp();
  const ck = fakeCheckpoint(d);
  const g = await gallery(d, true);
  fails(t, cli('search', '--checkpoint', ck, '--gallery', g, '--image', join(g, '0.png'), '--text', 'make it blue'), /broken\.jpg/);
  fails(t, cli('search', '--checkpoint', ck, '--gallery', join(d, 'none'), '--image', join(g, '0.png'), '--text', 'make it blue'), /gallery folder .* does not exist/);
});

test('text with no known words', async (t) => {
  const d = tmp();
  const ck = fakeCheckpoint(d);
  const g = await gallery(d);
  fails(t, cli('search', '--checkpoint', ck, '--gallery', g, '--image', join(g, '0.png'), '--text', 'zorgle blimp'), /"zorgle blimp" has no word the model knows/);
});

test('--verbose adds the stack trace', (t) => {
  const d = tmp();
  const r = cli('--verbose', 'eval', '--checkpoint', fakeCheckpoint(d, 'small', true));
  t.not(r.code, 0);
  t.regex(r.err, /\n\s+at .+:\d+:\d+/);
});
