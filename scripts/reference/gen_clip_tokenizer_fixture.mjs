// Regenerates test/fixtures/clip/tokenizer_ref.json: trains the tests' small BPE vocabulary
// (test/helpers/clip_bpe.js), runs the Python reference tokenizer (clip_tokenizer_ref.py, needs
// /usr/bin/python3 with the `regex` module, Debian python3-regex) on the test corpus, and stores its
// answers. Run after `npm run build:ts`:  node scripts/reference/gen_clip_tokenizer_fixture.mjs
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { trainBpe, writeVocab, TRAIN_CORPUS, testCorpus, LONG_TEXTS, N_MERGES } from '../../test/helpers/clip_bpe.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'clip-bpe-'));
try {
  const merges = trainBpe(TRAIN_CORPUS, N_MERGES);
  const v = writeVocab(dir, merges);
  const texts = [...testCorpus(), ...LONG_TEXTS];
  const out = execFileSync('/usr/bin/python3', [join(root, 'scripts/reference/clip_tokenizer_ref.py'), v.gz, '--context', '77'], { input: JSON.stringify({ texts }), maxBuffer: 1 << 26 });
  const ref = JSON.parse(out.toString('utf8'));
  const fixture = { generated_by: 'scripts/reference/gen_clip_tokenizer_fixture.mjs', merges_sha256: v.sha256, n_merges: merges.length, context: 77, texts, ...ref };
  const path = join(root, 'test/fixtures/clip/tokenizer_ref.json');
  writeFileSync(path, JSON.stringify(fixture) + '\n');
  console.log(`wrote ${path}: ${texts.length} texts, ${merges.length} merges, regex ${ref.regex_version}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
