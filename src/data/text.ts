// Tokenizer and vocabulary of spec §8: lower-case, drop non-ASCII, delete punctuation, split on
// whitespace; vocabulary in order of first appearance over the training texts; ids 0..3 reserved.
import { DataError, checkInt } from './errors.js';

export const SPECIAL_TOKENS = ['<UNK>', '<AND>', '<BOS>', '<EOS>'] as const;
export const UNK = 0;
export const AND = 1;
export const BOS = 2;
export const EOS = 3;

const SPECIAL_RE = /(<UNK>|<AND>|<BOS>|<EOS>)/;
// Python's string.punctuation.
const PUNCT_RE = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/g;
// eslint-disable-next-line no-control-regex
const NON_ASCII_RE = /[^\x00-\x7f]/g;

/** Cleans one piece of text into words (§8). */
function words(s: string): string[] {
  return s.toLowerCase().replace(NON_ASCII_RE, '').replace(PUNCT_RE, '').split(/\s+/).filter(Boolean);
}

/**
 * The text of a left-right mirrored image pair: "left" and "right" swapped (whole words, any case),
 * so that a flipped training query still says where things are (docs/EXPERIMENTS.md "Flips and τ").
 */
export function mirrorText(text: string): string {
  return text.replace(/\b(left|right)\b/gi, (w) => {
    const m = w.toLowerCase() === 'left' ? 'right' : 'left';
    return w[0] === w[0].toUpperCase() ? m[0].toUpperCase() + m.slice(1) : m;
  });
}

/**
 * Splits a text into tokens. The markers <UNK> <AND> <BOS> <EOS> (upper case, as FashionIQ's
 * joined captions carry them) stay single tokens; everything between them is cleaned per §8.
 */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  for (const part of text.split(SPECIAL_RE)) {
    if ((SPECIAL_TOKENS as readonly string[]).includes(part)) out.push(part);
    else out.push(...words(part));
  }
  return out;
}

/** FashionIQ's two captions joined as `<BOS> c1 <AND> c2 <EOS>` (§8). */
export function joinFashionIqCaptions(c1: string, c2: string): string {
  return `<BOS> ${c1} <AND> ${c2} <EOS>`;
}

/** Fashion200k's modification text `replace <w1> with <w2> and get <target caption>` (§8). */
export function fashion200kText(w1: string, w2: string, targetCaption: string): string {
  return `replace ${w1} with ${w2} and get ${targetCaption}`;
}

export interface EncodedBatch {
  /** Token ids, row-major [B, L], padded with 0. */
  tokens: Int32Array;
  /** Real token count per row [B] (after truncation to maxLength). */
  lengths: Int32Array;
  B: number;
  /** Longest length in the batch (at least 1), or maxLength if smaller. */
  L: number;
}

export interface VocabularyJson {
  format: 'dwc-vocab';
  version: 1;
  words: string[];
}

export class Vocabulary {
  private readonly index = new Map<string, number>();
  readonly words: string[];

  constructor(words: readonly string[] = SPECIAL_TOKENS) {
    for (let i = 0; i < SPECIAL_TOKENS.length; i++)
      if (words[i] !== SPECIAL_TOKENS[i]) throw new DataError(`vocabulary: 'words' must start with ${SPECIAL_TOKENS.join(' ')} (id ${i} is '${words[i]}')`, 'DWC_DATA_FORMAT', 'words');
    this.words = [...words];
    this.words.forEach((w, i) => {
      if (this.index.has(w)) throw new DataError(`vocabulary: word '${w}' appears twice`, 'DWC_DATA_FORMAT', w);
      this.index.set(w, i);
    });
  }

  /** Builds the vocabulary from training texts in order of first appearance (§8). */
  static build(texts: Iterable<string>): Vocabulary {
    const v = new Vocabulary();
    for (const t of texts) for (const w of tokenize(t)) v.add(w);
    return v;
  }

  private add(w: string): void {
    if (!this.index.has(w)) {
      this.index.set(w, this.words.length);
      this.words.push(w);
    }
  }

  get size(): number {
    return this.words.length;
  }

  id(word: string): number {
    return this.index.get(word) ?? UNK;
  }

  /** Token ids of one text; unknown words map to 0. */
  encode(text: string): number[] {
    return tokenize(text).map((w) => this.id(w));
  }

  decode(ids: ArrayLike<number>): string {
    return Array.from(ids, (i) => this.words[i] ?? SPECIAL_TOKENS[UNK]).join(' ');
  }

  /** Encodes a batch: tokens [B, L] padded with 0, lengths [B]; L = longest row, capped at maxLength. */
  encodeBatch(texts: readonly string[], opts: { maxLength?: number } = {}): EncodedBatch {
    if (opts.maxLength !== undefined) checkInt(opts.maxLength, 'maxLength', 1);
    const rows = texts.map((t) => {
      const ids = this.encode(t);
      return opts.maxLength !== undefined && ids.length > opts.maxLength ? ids.slice(0, opts.maxLength) : ids;
    });
    const B = rows.length;
    const L = rows.reduce((m, r) => Math.max(m, r.length), 1);
    const tokens = new Int32Array(B * L);
    const lengths = new Int32Array(B);
    rows.forEach((r, i) => {
      tokens.set(r, i * L);
      lengths[i] = r.length;
    });
    return { tokens, lengths, B, L };
  }

  toJSON(): VocabularyJson {
    return { format: 'dwc-vocab', version: 1, words: this.words };
  }

  static fromJSON(json: unknown): Vocabulary {
    const o = (typeof json === 'string' ? JSON.parse(json) : json) as Partial<VocabularyJson>;
    if (!o || o.format !== 'dwc-vocab' || !Array.isArray(o.words) || !o.words.every((w) => typeof w === 'string'))
      throw new DataError("vocabulary JSON must be {format: 'dwc-vocab', version: 1, words: string[]}", 'DWC_DATA_FORMAT', 'words');
    return new Vocabulary(o.words);
  }
}
