// The CLIP tokenizer tests' vocabulary: merges learnt by the library's deterministic BPE trainer
// (src/clip/bpe_train.ts) from a multilingual corpus, written both as an OpenAI merges file
// (.txt.gz) and as Hugging Face vocab.json + merges.txt.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { trainBpe as trainBpeLib, bpeVocabulary } from '../../lib/clip/bpe_train.js';
import { makeRng } from './index.js';

/** Merges the tests train (the fixture records their hash). */
export const N_MERGES = 400;

export function trainBpe(corpus, nMerges) {
  return trainBpeLib(corpus, { maxMerges: nMerges });
}

/** Writes dir/bpe_simple_vocab_test.txt.gz and dir/hf/{vocab.json,merges.txt}; returns their paths. */
export function writeVocab(dir, merges) {
  mkdirSync(join(dir, 'hf'), { recursive: true });
  const lines = merges.map(([a, b]) => `${a} ${b}`);
  const gz = join(dir, 'bpe_simple_vocab_test.txt.gz');
  writeFileSync(gz, gzipSync(Buffer.from(['"#version: 0.2" (trained by src/clip/bpe_train.ts)', ...lines].join('\n') + '\n', 'utf8')));
  const vocab = bpeVocabulary(merges);
  const obj = {};
  vocab.forEach((t, i) => {
    obj[t] = i;
  });
  const hfDir = join(dir, 'hf');
  writeFileSync(join(hfDir, 'vocab.json'), JSON.stringify(obj));
  writeFileSync(join(hfDir, 'merges.txt'), ['#version: 0.2', ...lines].join('\n') + '\n');
  return { gz, hfDir, vocabJson: join(hfDir, 'vocab.json'), mergesTxt: join(hfDir, 'merges.txt'), sha256: createHash('sha256').update(lines.join('\n')).digest('hex') };
}

/** The text the vocabulary is trained on. */
export const TRAIN_CORPUS = [
  'a photo of a cat sitting on the mat', 'a photo of the dog', 'the dog is playing with the ball',
  'a red dress with long sleeves', 'the shirt is blue and the shoes are black', 'photos of cats and dogs',
  "it's the dog's ball, isn't it? they're sure we've got it, i'm sure you'll see he'd like it",
  'café naïve résumé ångström crème brûlée', '東京タワーの写真 北京 东京 日本語のテキスト',
  'привет мир ёлка москва красный', '٣٤٥ ١٢ 12345 3.14 1,000,000 ½ ² Ⅻ',
  'emoji 🐱 👍🏽 🇫🇷 ❤️ 😀😀😀', 'wow!!! ... ?!?! --- ((( ))) ### @@@',
  'ολα καλα σας οδος', 'istanbul i̇stanbul straße',
  'the the the photo photo photo of of of a a a red red blue blue',
];

/** The texts whose ids are compared with the Python reference (CLIP-SPEC.md's details). */
export function testCorpus() {
  const fixed = [
    'a photo of a cat',
    "The dog's ball isn't theirs; we're sure they've I'm you'll he'd",
    "IT'S DON'T WE'RE THEY'VE I'M YOU'LL HE'D",
    "x 's 't 're 've 'm 'll 'd 'q ''s '",
    'Café naïve résumé Ångström e\u0301 CRÈME',
    '東京タワーの写真 北京东京',
    'Привет мир, ЁЛКА Москва',
    '٣ apples ٤٥ and ½ ² Ⅻ ๓ 1٢3',
    'emoji 🐱‍👤 👍🏽 🇫🇷 ❤️ 😀😀',
    'wow!!! ... ?!?! --- (((x))) a.b,c;d',
    '  multiple   spaces\t\ttabs\nnewlines \r\n end  ',
    '\x1c\x1dcontrol ends\x1e\x1f',
    '\x1f \x1c padded\x1d \x1e',
    'inside\x1cseparator and\x1fthis',
    'fish &amp; chips &lt;b&gt; &quot;q&quot; &#39;s &#x263A; &eacute; &nbsp;x',
    'double &amp;amp; &amp;lt;tag&amp;gt; &amp;#65; &amp;eacute;',
    'triple &amp;amp;amp; stays once',
    'legacy &notit; &ampxyz &copy2026 &#0; &#x80; &#1; &#xD800; &#99999999; &#65 &#x42 &bogus; &',
    '',
    '   ',
    '\t\n',
    '<|startoftext|> hello <|endoftext|> world',
    '<|STARTOFTEXT|> upper special <|EndOfText|>',
    'x<|endoftext|>y<|startoftext|>',
    "'ſ long s ſtartoftext <|ſtartoftext|>",
    'combining a\u0345b and e\u0301 and \u0345',
    'nel\u0085here bom\ufeffhere nbsp\u00a0x ideographic\u3000space thin\u2009space',
    'ΟΔΟΣ ΣΑΣ final sigma Σ',
    'İstanbul ǅ ß ﬁ Ｆｕｌｌ',
    'numbers 12345 3.14 1,000,000',
    'mixed123abc456',
    'quotes “curly” ‘single’ — dash',
  ];
  // Seeded random strings over an alphabet of the interesting characters.
  const alphabet = Array.from('aeiostnrdhlTHEAS \'’\t\n.,!?-&;#x0123456789éüñçåøÅ東京写真привЁ٣٤½²🐱👍🏽\x1c\x1f\u0085\u00a0\ufeff\u0345\u0301ΣσςK<|>/') ;
  const pieces = ['&amp;', '&lt;', '&#39;', '&amp;quot;', "'s", "'LL", '<|endoftext|>', '  ', 'the ', 'photo '];
  const rng = makeRng(20261201);
  const random = [];
  for (let i = 0; i < 120; i++) {
    let s = '';
    const len = 1 + rng.int(30);
    for (let k = 0; k < len; k++) s += rng.uniform() < 0.15 ? pieces[rng.int(pieces.length)] : alphabet[rng.int(alphabet.length)];
    random.push(s);
  }
  return [...fixed, ...random];
}

/** Texts too long for a context of 77. */
export const LONG_TEXTS = ['word '.repeat(100), '日本'.repeat(60), 'a '.repeat(75), 'a '.repeat(76)];
