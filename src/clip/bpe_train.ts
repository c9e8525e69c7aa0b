// A deterministic byte-level BPE trainer for CLIP's tokenizer (CLIP-SPEC.md "Tokenizer";
// docs/CLIP-TOKENIZER.md): used when a CLIP is trained from scratch (PL4CIR stage 2,
// `dwc-native pretrain --from-scratch`) to build a vocabulary from a dataset's captions and
// modification texts. Pieces come from CLIP's clean-up and split pattern, each piece's UTF-8 bytes
// go through bytes_to_unicode, the last symbol of a word carries '</w>'; the most frequent
// adjacent pair is merged (ties: the smallest "a b" string), counts weighted by piece frequency.
// The vocabulary is laid out as OpenAI's code lays it out (256 bytes, the same with '</w>', one
// token per merge, <|startoftext|>, <|endoftext|>), written as Hugging Face vocab.json + merges.txt,
// which ClipTokenizer.fromDir loads.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DataError, checkInt } from '../data/errors.js';
import { writeTextAtomic } from '../data/fsutil.js';
import { bytesToUnicode, clipCleanText, clipSplit, CLIP_MAX_MERGES, EOT_TOKEN, SOT_TOKEN } from './tokenizer.js';

const EOW = '</w>';

export interface BpeTrainOptions {
  /** Most merges to learn (default 1000; at most OpenAI's 48894). */
  maxMerges?: number;
  /** Stop when the most frequent pair occurs fewer times than this (default 1: until no pair is left). */
  minFrequency?: number;
}

/** Learns BPE merges from texts, in rank order. Deterministic for the same texts and options. */
export function trainBpe(texts: Iterable<string>, opts: BpeTrainOptions = {}): [string, string][] {
  const maxMerges = opts.maxMerges ?? 1000;
  const minFrequency = opts.minFrequency ?? 1;
  checkInt(maxMerges, 'maxMerges', 0, CLIP_MAX_MERGES);
  checkInt(minFrequency, 'minFrequency', 1, Number.MAX_SAFE_INTEGER);
  const be = new Array<string>(256);
  for (const [b, c] of bytesToUnicode()) be[b] = c;
  const counts = new Map<string, number>();
  for (const text of texts) {
    if (typeof text !== 'string') throw new DataError(`trainBpe: every text must be a string, got ${typeof text}`, 'DWC_BAD_ARGUMENT', 'texts');
    for (const piece of clipSplit(clipCleanText(text))) {
      if (piece === SOT_TOKEN || piece === EOT_TOKEN) continue;
      let tok = '';
      for (const b of Buffer.from(piece, 'utf8')) tok += be[b];
      counts.set(tok, (counts.get(tok) ?? 0) + 1);
    }
  }
  let words = [...counts].map(([tok, n]) => {
    const syms = Array.from(tok);
    syms[syms.length - 1] += EOW;
    return { syms, n };
  });
  const merges: [string, string][] = [];
  while (merges.length < maxMerges) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of words)
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = syms[i] + ' ' + syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + n);
      }
    let best: string | undefined;
    let bestN = 0;
    for (const [k, n] of pairs) if (n > bestN || (n === bestN && best !== undefined && k < best)) [best, bestN] = [k, n];
    if (best === undefined || bestN < minFrequency) break;
    const [a, b] = best.split(' ');
    merges.push([a, b]);
    words = words.map(({ syms, n }) => {
      const out: string[] = [];
      for (let i = 0; i < syms.length; ) {
        if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
          out.push(a + b);
          i += 2;
        } else out.push(syms[i++]);
      }
      return { syms: out, n };
    });
  }
  return merges;
}

/** The vocabulary of a merge list in id order, as OpenAI's code builds it. */
export function bpeVocabulary(merges: readonly (readonly [string, string])[]): string[] {
  const vocab = bytesToUnicode().map(([, c]) => c);
  for (let i = 0; i < 256; i++) vocab.push(vocab[i] + EOW);
  for (const [a, b] of merges) vocab.push(a + b);
  vocab.push(SOT_TOKEN, EOT_TOKEN);
  return vocab;
}

/** Writes dir/vocab.json (token → id) and dir/merges.txt ("#version: 0.2", then one merge a line), each atomically. */
export function writeHfVocab(dir: string, merges: readonly (readonly [string, string])[]): { vocabJson: string; mergesTxt: string; vocabSize: number } {
  mkdirSync(dir, { recursive: true });
  const vocab = bpeVocabulary(merges);
  const obj: Record<string, number> = {};
  vocab.forEach((t, i) => {
    obj[t] = i; // a repeated token keeps its last id, as Python's dict(zip(vocab, ids))
  });
  const vocabJson = join(dir, 'vocab.json');
  const mergesTxt = join(dir, 'merges.txt');
  writeTextAtomic(vocabJson, JSON.stringify(obj));
  writeTextAtomic(mergesTxt, ['#version: 0.2', ...merges.map(([a, b]) => `${a} ${b}`)].join('\n') + '\n');
  return { vocabJson, mergesTxt, vocabSize: vocab.length };
}
