// `dwc-native clip tokenize` (src/cli/commands/clip.ts) on a vocabulary trained by the test.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ClipTokenizer } from '../lib/clip/tokenizer.js';
import { trainBpe, writeVocab, TRAIN_CORPUS, N_MERGES } from './helpers/clip_bpe.js';

const root = new URL('..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'clip-cli-test-'));
const vocab = writeVocab(dir, trainBpe(TRAIN_CORPUS, N_MERGES));
const tok = ClipTokenizer.fromOpenAI(vocab.gz);
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const cli = (...args) => spawnSync(process.execPath, [join(root, 'lib/cli/main.js'), ...args], { encoding: 'utf8', timeout: 60000 });

test('clip tokenize --json prints the library ids, for every vocabulary layout', (t) => {
  const texts = ['A photo of a cat', "it's &amp;amp; 東京", ''];
  const want = [];
  const flat = tok.tokenize(texts, { context: 20 });
  for (let i = 0; i < texts.length; i++) want.push(Array.from(flat.subarray(i * 20, (i + 1) * 20)));
  for (const v of [vocab.gz, vocab.hfDir, vocab.vocabJson, dir]) {
    const r = cli('clip', 'tokenize', '--vocab', v, '--context', '20', '--json', ...texts);
    t.is(r.status, 0, r.stderr);
    t.deepEqual(JSON.parse(r.stdout), { input_ids: want }, v);
  }
});

test('clip tokenize without --json prints a table naming each token', (t) => {
  const r = cli('clip', 'tokenize', '--vocab', vocab.gz, 'a photo of a cat');
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /\[0\] "a photo of a cat" → 7 tokens \(\+70 padding\)/);
  t.regex(r.stdout, /"photo<\/w>"/);
  t.regex(r.stdout, new RegExp(`<\\|startoftext\\|> = ${tok.sotId}`));
});

test('clip tokenize: over-long text fails naming it unless --truncate; bad flags and files are one-line errors', (t) => {
  const long = 'photo '.repeat(30);
  const r = cli('clip', 'tokenize', '--vocab', vocab.gz, '--context', '10', 'short', long);
  t.is(r.status, 1);
  t.regex(r.stderr, /text 1 .*has 32 tokens.*context length 10/);
  const ok = cli('clip', 'tokenize', '--vocab', vocab.gz, '--context', '10', '--truncate', '--json', long);
  t.is(ok.status, 0, ok.stderr);
  const row = JSON.parse(ok.stdout).input_ids[0];
  t.is(row.length, 10);
  t.is(row[9], tok.eotId);
  t.regex(cli('clip', 'tokenize', '--vocab', join(dir, 'missing.gz'), 'x').stderr, /missing\.gz does not exist/);
  t.regex(cli('clip', 'tokenize', '--vocab', vocab.gz, '--context', 'ten', 'x').stderr, /--context.*not an integer/);
  t.regex(cli('clip', 'tokenize', 'x').stderr, /required option '--vocab <path>'/);
  const help = cli('clip', 'tokenize', '--help');
  t.is(help.status, 0);
  t.regex(help.stdout, /--truncate/);
  t.regex(help.stdout, /ftfy/);
  t.regex(cli('clip', '--help').stdout, /tokenize/);
});
