// CLIP tokenizer (CLIP-SPEC.md "Tokenizer"): a small vocabulary trained here, loaded from the
// OpenAI and the Hugging Face formats, compared id for id with the Python reference
// (scripts/reference/clip_tokenizer_ref.py): against the committed fixture always, and live when
// /usr/bin/python3 has the `regex` module (python3-regex), which also catches a stale fixture.
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, mkdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { ClipTokenizer, bytesToUnicode, clipCleanText, clipSplit } from '../lib/clip/tokenizer.js';
import { htmlUnescape } from '../lib/clip/html.js';
import { trainBpe, writeVocab, TRAIN_CORPUS, testCorpus, LONG_TEXTS, N_MERGES } from './helpers/clip_bpe.js';

const fixture = JSON.parse(readFileSync(new URL('./fixtures/clip/tokenizer_ref.json', import.meta.url), 'utf8'));
const dir = mkdtempSync(join(tmpdir(), 'clip-tok-test-'));
const merges = trainBpe(TRAIN_CORPUS, N_MERGES);
const vocab = writeVocab(dir, merges);
const openai = ClipTokenizer.fromOpenAI(vocab.gz);
const hf = ClipTokenizer.fromHF(vocab.vocabJson, vocab.mergesTxt);
const TEXTS = [...testCorpus(), ...LONG_TEXTS];
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const pyHasRegex = (() => {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import regex'], { encoding: 'utf8' });
  return r.status === 0 ? '' : r.error ? `/usr/bin/python3 not runnable (${r.error.message})` : `/usr/bin/python3 lacks the regex module (apt-get install python3-regex): ${r.stderr.trim().split('\n').pop()}`;
})();

function rowsOf(flat, context) {
  const rows = [];
  for (let i = 0; i < flat.length; i += context) rows.push(Array.from(flat.subarray(i, i + context)));
  return rows;
}

function compareWithReference(t, tok, ref, label) {
  t.is(tok.vocabSize, ref.vocab_size, `${label}: vocab size`);
  t.is(tok.sotId, ref.sot, `${label}: SOT id`);
  t.is(tok.eotId, ref.eot, `${label}: EOT id`);
  let bad = 0;
  ref.texts.forEach((text, i) => {
    const ids = tok.encode(text);
    if (JSON.stringify(ids) !== JSON.stringify(ref.encode[i])) {
      bad++;
      t.log(`${label} text ${i} ${JSON.stringify(text)}: ours ${ids} reference ${ref.encode[i]}`);
    }
    if (tok.decode(ids) !== ref.decode[i]) {
      bad++;
      t.log(`${label} decode of text ${i} ${JSON.stringify(text)}: ${JSON.stringify(tok.decode(ids))} vs ${JSON.stringify(ref.decode[i])}`);
    }
    const want = ref.tokenize[i];
    if (Array.isArray(want)) t.deepEqual(rowsOf(tok.tokenize([text], { context: ref.context }), ref.context)[0], want, `${label} tokenize ${i}`);
    else {
      const n = Number(/(\d+) tokens/.exec(want.error)[1]);
      const err = t.throws(() => tok.tokenize(['ok', text], { context: ref.context }), undefined, `${label} tokenize ${i} must fail`);
      t.regex(err.message, new RegExp(`text 1 .*has ${n} tokens`), `${label}: the error names the text index and its token count`);
    }
    t.deepEqual(rowsOf(tok.tokenize([text], { context: ref.context, truncate: true }), ref.context)[0], ref.tokenize_truncated[i], `${label} truncated ${i}`);
  });
  t.is(bad, 0, `${label}: ${bad} texts differ from the reference`);
}

test('the trained vocabulary is the one the fixture was made with', (t) => {
  t.is(vocab.sha256, fixture.merges_sha256, 'the trainer changed: regenerate with node scripts/reference/gen_clip_tokenizer_fixture.mjs');
  t.is(merges.length, fixture.n_merges);
  t.deepEqual(fixture.texts, TEXTS, 'the corpus changed: regenerate the fixture');
  t.true(merges.length > 200, 'the vocabulary has enough merges to exercise BPE');
});

test('OpenAI .txt.gz and HF vocab.json + merges.txt load to identical tokenizers', (t) => {
  t.is(openai.vocabSize, 512 + merges.length + 2);
  t.is(openai.sotId, 512 + merges.length);
  t.is(openai.eotId, 513 + merges.length);
  for (const k of ['vocabSize', 'sotId', 'eotId']) t.is(hf[k], openai[k], k);
  t.deepEqual(hf.merges, openai.merges);
  for (let id = 0; id < openai.vocabSize; id++) t.is(hf.idToToken(id), openai.idToToken(id), `id ${id}`);
  t.is(openai.idToToken(0), '!', 'id 0 is "!" (bytes_to_unicode order)');
  t.is(openai.idToToken(256), '!</w>');
  t.is(openai.idToToken(255), String.fromCodePoint(0x143), 'the last byte symbol is U+0143');
  for (const text of TEXTS) t.deepEqual(hf.encode(text), openai.encode(text));
  // fromDir finds either layout; load() takes a folder, a vocab.json or a merges file.
  t.deepEqual(ClipTokenizer.fromDir(dir).merges, openai.merges);
  t.deepEqual(ClipTokenizer.fromDir(vocab.hfDir).merges, openai.merges);
  t.is(ClipTokenizer.load(vocab.vocabJson).vocabSize, openai.vocabSize);
  t.is(ClipTokenizer.load(vocab.gz).vocabSize, openai.vocabSize);
});

test('ids match the Python reference (committed fixture), both formats', (t) => {
  compareWithReference(t, openai, fixture, 'openai');
  compareWithReference(t, hf, fixture, 'hf');
});

test('ids match the Python reference run now (live)', (t) => {
  if (pyHasRegex) {
    t.log(`LIVE REFERENCE NOT RUN: ${pyHasRegex}; the fixture test above still compares`);
    t.pass();
    return;
  }
  for (const [label, path, tok] of [['openai', vocab.gz, openai], ['hf', vocab.hfDir, hf]]) {
    const out = execFileSync('/usr/bin/python3', ['scripts/reference/clip_tokenizer_ref.py', path, '--context', '77'], { input: JSON.stringify({ texts: TEXTS }), maxBuffer: 1 << 26 });
    compareWithReference(t, tok, { ...JSON.parse(out.toString('utf8')), texts: TEXTS, context: 77 }, `live ${label}`);
  }
});

test('the details of CLIP-SPEC.md hold on their own', (t) => {
  // bytes_to_unicode: a bijection onto 256 characters, printable bytes unchanged.
  const table = bytesToUnicode();
  t.is(new Set(table.map(([, c]) => c)).size, 256);
  t.is(new Set(table.map(([b]) => b)).size, 256);
  t.deepEqual(table[0], [0x21, '!']);
  t.deepEqual(table.find(([b]) => b === 0x20), [0x20, '\u0120']);
  // strip removes U+001C..U+001F (str.strip), \s does not match them inside a text.
  t.is(clipCleanText('\x1c\x1d Hi \x1e\x1f'), 'hi');
  t.deepEqual(clipSplit(clipCleanText('a\x1cb')), ['a', '\x1c', 'b']);
  // NEL is whitespace, BOM is not (the `regex` module's \s, not JS's).
  t.is(clipCleanText('a\u0085b'), 'a b');
  t.deepEqual(clipSplit(clipCleanText('a\ufeffb')), ['a', '\ufeff', 'b']);
  // Whitespace runs collapse; the text is lower-cased.
  t.is(clipCleanText('  A \t\n\r B  '), 'a b');
  // Contractions, numbers one digit at a time, punctuation runs, U+0345 dropped as regex does.
  t.deepEqual(clipSplit(clipCleanText("It'S 123 ?!.")), ['it', "'s", '1', '2', '3', '?!.']);
  t.deepEqual(clipSplit('a\u0345b'), ['a', 'b']);
  t.deepEqual(clipSplit("x'ſ"), ['x', "'ſ"]);
  // Literal special tokens become the special ids; upper-case ones too (lower-cased first).
  t.deepEqual(openai.encode('<|startoftext|>x<|ENDOFTEXT|>'), [openai.sotId, ...openai.encode('x'), openai.eotId]);
  // Empty text → [SOT, EOT, 0...].
  const row = openai.tokenize(['', ' \t'], { context: 5 });
  t.deepEqual(Array.from(row), [openai.sotId, openai.eotId, 0, 0, 0, openai.sotId, openai.eotId, 0, 0, 0]);
  // The last symbol of every word carries </w>: decode puts a space after each word.
  t.is(openai.decode(openai.encode('A photo, of cats')), 'a photo , of cats ');
});

test('HTML unescaping follows Python html.unescape, twice', (t) => {
  t.is(htmlUnescape('&amp;lt;'), '&lt;');
  t.is(clipCleanText('&amp;lt;b&amp;gt;'), '<b>');
  t.is(clipCleanText('&amp;amp;amp;'), '&amp;');
  t.is(htmlUnescape('&#65;&#x42;&#X43;&#68'), 'ABCD');
  t.is(htmlUnescape('&#0;&#x80;&#xD800;&#1114112;&#1;'), '\ufffd€\ufffd\ufffd');
  t.is(htmlUnescape('&notit; &ampxyz &copy2026 &bogus; & x'), '¬it; &xyz ©2026 &bogus; & x');
  t.is(htmlUnescape('&NotNestedGreaterGreater; &fjlig; &eacute;'), '\u2AA2\u0338 fj é');
  if (!pyHasRegex) {
    // A sweep against Python itself over every name in the table and some numeric references.
    const probes = ['&eacute', '&Eacute;', '&lt', '&LT;', '&amp;amp;', '&#x1F600;', '&#128512', '&#x110000;', '&#xfffe;', '&#127;', '&#13;', '&nbsp&nbsp;'];
    const out = execFileSync('/usr/bin/python3', ['-c', 'import html, json, sys; d = json.load(sys.stdin); print(json.dumps([html.unescape(s) for s in d]))'], { input: JSON.stringify(probes) });
    t.deepEqual(probes.map(htmlUnescape), JSON.parse(out.toString()));
  }
});

test('over-long texts: an error naming the text and its count, or truncation ending in EOT', (t) => {
  const long = 'word '.repeat(100);
  const n = openai.encode(long).length + 2;
  const err = t.throws(() => openai.tokenize(['short', long]));
  t.regex(err.message, new RegExp(`text 1 .*${n} tokens.*context length 77`));
  const rows = openai.tokenize(['short', long], { truncate: true });
  t.is(rows.length, 2 * 77);
  t.is(rows[77], openai.sotId);
  t.is(rows[2 * 77 - 1], openai.eotId);
  t.deepEqual(Array.from(rows.subarray(78, 2 * 77 - 1)), openai.encode(long).slice(0, 75));
  // Exactly context tokens fit.
  const fits = 'a '.repeat(75);
  t.is(openai.encode(fits).length, 75);
  t.notThrows(() => openai.tokenize([fits]));
  t.throws(() => openai.tokenize(['a '.repeat(76)]), { message: /text 0 .*78 tokens/ });
  t.throws(() => openai.tokenize(['x'], { context: 1 }), { message: /'context'/ });
});

test('bad vocabulary files give clear errors', (t) => {
  t.throws(() => ClipTokenizer.fromOpenAI(join(dir, 'nope.txt.gz')), { message: /nope\.txt\.gz does not exist/ });
  const bad = join(dir, 'bad.txt.gz');
  writeFileSync(bad, gzipSync(Buffer.from('header\na b\nthree symbols here\n')));
  t.throws(() => ClipTokenizer.fromOpenAI(bad), { message: /bad\.txt\.gz line 3: a merge must be two symbols/ });
  const trunc = join(dir, 'trunc.txt.gz');
  writeFileSync(trunc, gzipSync(Buffer.from('header\na b\n')).subarray(0, 12));
  t.throws(() => ClipTokenizer.fromOpenAI(trunc), { message: /cannot gunzip.*trunc\.txt\.gz/ });
  const hd = join(dir, 'hfbad');
  mkdirSync(hd);
  writeFileSync(join(hd, 'vocab.json'), '{"a": 0');
  copyFileSync(vocab.mergesTxt, join(hd, 'merges.txt'));
  t.throws(() => ClipTokenizer.fromDir(hd), { message: /hfbad\/vocab\.json is not valid JSON/ });
  const obj = JSON.parse(readFileSync(vocab.vocabJson, 'utf8'));
  delete obj['<|endoftext|>'];
  writeFileSync(join(hd, 'vocab.json'), JSON.stringify(obj));
  t.throws(() => ClipTokenizer.fromDir(hd), { message: /has no <\|endoftext\|> token/ });
  const obj2 = JSON.parse(readFileSync(vocab.vocabJson, 'utf8'));
  delete obj2[merges[5][0] + merges[5][1]];
  writeFileSync(join(hd, 'vocab.json'), JSON.stringify(obj2));
  t.throws(() => ClipTokenizer.fromDir(hd), { message: /merges\.txt line 7: the merge result .* is not in/ });
  const empty = join(dir, 'empty');
  mkdirSync(empty);
  t.throws(() => ClipTokenizer.fromDir(empty), { message: /neither vocab\.json \+ merges\.txt nor a bpe_simple_vocab/ });
  t.throws(() => openai.decode([openai.vocabSize]), { message: /id \d+ at position 0 is not in the vocabulary/ });
});

test('the cache does not change results', (t) => {
  const fresh = ClipTokenizer.fromOpenAI(vocab.gz);
  const texts = testCorpus();
  const first = texts.map((s) => fresh.encode(s));
  const second = texts.map((s) => fresh.encode(s));
  t.deepEqual(first, second);
  t.deepEqual(first, texts.map((s) => ClipTokenizer.fromOpenAI(vocab.gz).encode(s)));
});

test('every code point is cleaned and split as Python regex does (live, code points assigned in its Unicode)', (t) => {
  if (pyHasRegex) {
    t.log(`LIVE CODE-POINT SWEEP NOT RUN: ${pyHasRegex}`);
    t.pass();
    return;
  }
  const out = execFileSync('/usr/bin/python3', ['scripts/reference/clip_tokenizer_ref.py', '--classify'], { maxBuffer: 1 << 26 });
  const ref = JSON.parse(out.toString('utf8'));
  const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  let compared = 0;
  let laterUnicode = 0;
  const bad = [];
  for (let cp = 0; cp < 0x110000; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const c = String.fromCodePoint(cp);
    const want = ref.classes[cp];
    let got;
    if (clipCleanText('a' + c + 'b') === 'a b') got = 'S';
    else if (clipSplit(c + c).length === 0) got = 'X';
    else if (same(clipSplit(c + c), [c, c])) got = 'N';
    else if (same(clipSplit('a' + c), ['a' + c])) got = 'L';
    else got = 'O';
    if (want === '-') {
      if (got !== 'O') laterUnicode++;
      continue;
    }
    compared++;
    if (got !== want) bad.push(`U+${cp.toString(16).toUpperCase()} ${want}→${got}`);
    const lower = ref.lower[cp] ?? c;
    if (c.toLowerCase() !== lower) bad.push(`U+${cp.toString(16).toUpperCase()} lower ${JSON.stringify(lower)}→${JSON.stringify(c.toLowerCase())}`);
  }
  t.log(`${compared} code points assigned in Python's Unicode ${ref.unidata_version} compared; ${laterUnicode} code points unassigned there are letters/numbers/whitespace in Node's Unicode ${process.versions.unicode}`);
  t.true(compared > 100000);
  t.deepEqual(bad.slice(0, 20), [], `${bad.length} code points differ`);
});
