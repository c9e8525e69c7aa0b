// CLIP's byte-level BPE tokenizer (CLIP-SPEC.md "Tokenizer"; docs/CLIP-TOKENIZER.md).
// text → html unescape ×2 → strip → collapse whitespace → lower-case → split with CLIP's pattern →
// each piece's UTF-8 bytes through bytes_to_unicode → BPE by merge rank, '</w>' on the last symbol
// → ids. tokenize() wraps each text as [SOT] + ids + [EOT], zero-padded to the context length.
// ftfy.fix_text, which OpenAI runs first, is left out (see the docs for what that changes).
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { DataError, checkInt } from '../data/errors.js';
import { htmlUnescape } from './html.js';

export const SOT_TOKEN = '<|startoftext|>';
export const EOT_TOKEN = '<|endoftext|>';
const EOW = '</w>';
/** OpenAI's vocabulary uses the first 49152 − 256 − 2 merges of its file (CLIP-SPEC.md). */
export const CLIP_MAX_MERGES = 49152 - 256 - 2;

let byteTable: string[] | undefined;
/**
 * GPT-2's bytes_to_unicode as an ordered list of [byte, char]: the printable bytes '!'..'~',
 * '¡'..'¬', '®'..'ÿ' map to themselves, the other 68 bytes (in byte order) to U+0100 onwards.
 * The order of this list is the order of the first 256 vocabulary ids (id 0 is '!').
 */
export function bytesToUnicode(): [number, string][] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  return bs.map((b, i) => [b, String.fromCodePoint(cs[i])]);
}

function byteEncoder(): string[] {
  if (!byteTable) {
    byteTable = new Array<string>(256);
    for (const [b, c] of bytesToUnicode()) byteTable[b] = c;
  }
  return byteTable;
}

// Characters Python's str.strip() removes: Unicode White_Space plus U+001C–U+001F (str.isspace).
const PY_STRIP_START = /^[\p{White_Space}\x1c-\x1f]+/u;
const PY_STRIP_END = /[\p{White_Space}\x1c-\x1f]+$/u;
function pyStrip(s: string): string {
  return s.replace(PY_STRIP_START, '').replace(PY_STRIP_END, '');
}

/**
 * CLIP's split pattern, compiled as Python's `regex` module compiles it with IGNORECASE:
 * - the literals match case-insensitively by simple case folding (only 's' gains a variant
 *   beyond ASCII: U+017F 'ſ');
 * - `\s` is Unicode White_Space (the `regex` module's \s; JS's own \s differs: it has U+FEFF and
 *   lacks U+0085);
 * - under IGNORECASE `regex` keeps [\p{L}] and [\p{N}] as they are but removes from the negated
 *   class every character whose case variant is a letter: only U+0345 (COMBINING GREEK
 *   YPOGEGRAMMENI), which therefore matches no alternative and is dropped (checked by brute force
 *   over all code points against `regex` 2022.10.31).
 */
function ci(lit: string): string {
  let out = '';
  for (const ch of lit) {
    if (/[a-z]/.test(ch)) out += ch === 's' ? '[sS\u017f]' : `[${ch}${ch.toUpperCase()}]`;
    else out += ch.replace(/[|\\^$.*+?()[\]{}]/g, '\\$&');
  }
  return out;
}
const SPLIT_SOURCE = [SOT_TOKEN, EOT_TOKEN, "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map(ci).join('|') + '|\\p{L}+|\\p{N}|[^\\p{White_Space}\\p{L}\\p{N}\\u0345]+';
const SPLIT = new RegExp(SPLIT_SOURCE, 'gu');

/**
 * CLIP's text clean-up before splitting: html unescape twice, strip, whitespace runs → one
 * space, strip, lower-case (without ftfy).
 */
export function clipCleanText(text: string): string {
  let t = htmlUnescape(htmlUnescape(text));
  t = pyStrip(t);
  t = t.replace(/\p{White_Space}+/gu, ' ');
  t = pyStrip(t);
  return t.toLowerCase();
}

/** The pieces CLIP's pattern splits a cleaned text into (before bytes and BPE). */
export function clipSplit(cleaned: string): string[] {
  return cleaned.match(SPLIT) ?? [];
}

export interface TokenizeOptions {
  /** Row length (default 77, CLIP's context). */
  context?: number;
  /** Cut over-long texts to `context` ids, the last being EOT; otherwise an over-long text is an error. */
  truncate?: boolean;
}

const CACHE_LIMIT = 100_000;

export class ClipTokenizer {
  /** Number of rows of the token embedding this vocabulary indexes (max id + 1). */
  readonly vocabSize: number;
  readonly sotId: number;
  readonly eotId: number;
  /** The merges in rank order (rank = index). */
  readonly merges: readonly (readonly [string, string])[];
  private readonly encoder: Map<string, number>;
  private readonly decoder: Map<number, string>;
  private readonly ranks: Map<string, number>;
  private readonly cache = new Map<string, number[]>();
  private readonly byteDecoder: Map<string, number>;

  /**
   * Builds a tokenizer from a token → id map and the merges in rank order. Prefer the loaders
   * (fromOpenAI, fromHF, fromDir, load).
   */
  constructor(encoder: Map<string, number>, merges: readonly (readonly [string, string])[], source = 'vocabulary') {
    this.encoder = encoder;
    this.merges = merges;
    this.decoder = new Map();
    let maxId = -1;
    for (const [tok, id] of encoder) {
      if (!Number.isInteger(id) || id < 0) throw new DataError(`${source}: token ${JSON.stringify(tok)} has id ${id}, not a non-negative integer`, 'DWC_DATA_FORMAT', source);
      // Python's dict(zip(vocab, ids)) keeps the last id of a repeated token; the decoder keeps every id.
      this.decoder.set(id, tok);
      if (id > maxId) maxId = id;
    }
    this.vocabSize = maxId + 1;
    const sot = encoder.get(SOT_TOKEN);
    const eot = encoder.get(EOT_TOKEN);
    if (sot === undefined || eot === undefined) throw new DataError(`${source} has no ${sot === undefined ? SOT_TOKEN : EOT_TOKEN} token`, 'DWC_DATA_FORMAT', source);
    this.sotId = sot;
    this.eotId = eot;
    this.ranks = new Map();
    merges.forEach(([a, b], i) => {
      const key = a + ' ' + b;
      if (!this.ranks.has(key)) this.ranks.set(key, i);
    });
    for (const c of byteEncoder()) {
      if (!encoder.has(c) || !encoder.has(c + EOW)) throw new DataError(`${source} lacks the byte symbol ${JSON.stringify(c)} or ${JSON.stringify(c + EOW)}`, 'DWC_DATA_FORMAT', source);
    }
    this.byteDecoder = new Map(bytesToUnicode().map(([b, c]) => [c, b]));
  }

  /** The vocabulary OpenAI's code builds from a list of merges (256 bytes, 256 with '</w>', one per merge, SOT, EOT). */
  static fromMerges(merges: readonly (readonly [string, string])[], source = 'merges'): ClipTokenizer {
    const used = merges.slice(0, CLIP_MAX_MERGES);
    const vocab: string[] = bytesToUnicode().map(([, c]) => c);
    for (let i = 0; i < 256; i++) vocab.push(vocab[i] + EOW);
    for (const [a, b] of used) vocab.push(a + b);
    vocab.push(SOT_TOKEN, EOT_TOKEN);
    const enc = new Map<string, number>();
    vocab.forEach((t, i) => enc.set(t, i));
    const tok = new ClipTokenizer(enc, used, source);
    // vocabSize is the list's length (the embedding rows), even if a merge repeats a token.
    (tok as { vocabSize: number }).vocabSize = vocab.length;
    return tok;
  }

  /** OpenAI's `bpe_simple_vocab_16e6.txt.gz` (gzip or plain text): a header line, then one merge "a b" per line. */
  static fromOpenAI(path: string): ClipTokenizer {
    const buf = readVocabFile(path);
    let text: string;
    try {
      text = (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b ? gunzipSync(buf) : buf).toString('utf8');
    } catch (e) {
      throw new DataError(`cannot gunzip the BPE merges file ${path}: ${(e as Error).message}`, 'DWC_DATA_CORRUPT', path);
    }
    const lines = text.split('\n');
    const body = lines.slice(1, 1 + CLIP_MAX_MERGES);
    // A file shorter than OpenAI's ends with a newline: ignore empty lines at the end.
    while (body.length && body[body.length - 1].trim() === '') body.pop();
    return ClipTokenizer.fromMerges(parseMerges(body, path, 2), path);
  }

  /** Hugging Face's `vocab.json` (token → id) and `merges.txt` ("#version" header, then merges). */
  static fromHF(vocabJsonPath: string, mergesTxtPath: string): ClipTokenizer {
    let obj: unknown;
    try {
      obj = JSON.parse(readVocabFile(vocabJsonPath).toString('utf8'));
    } catch (e) {
      if (e instanceof DataError) throw e;
      throw new DataError(`${vocabJsonPath} is not valid JSON: ${(e as Error).message}`, 'DWC_DATA_FORMAT', vocabJsonPath);
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new DataError(`${vocabJsonPath} must hold a JSON object token → id`, 'DWC_DATA_FORMAT', vocabJsonPath);
    const enc = new Map<string, number>(Object.entries(obj as Record<string, number>));
    const lines = readVocabFile(mergesTxtPath).toString('utf8').replace(/\s+$/, '').split('\n');
    const first = lines[0]?.startsWith('#version') ? 1 : 0;
    const body = lines.slice(first, first + CLIP_MAX_MERGES);
    const merges = parseMerges(body, mergesTxtPath, first + 1);
    for (let i = 0; i < merges.length; i++) {
      const t = merges[i][0] + merges[i][1];
      if (!enc.has(t)) throw new DataError(`${mergesTxtPath} line ${i + first + 1}: the merge result ${JSON.stringify(t)} is not in ${vocabJsonPath}`, 'DWC_DATA_FORMAT', mergesTxtPath);
    }
    return new ClipTokenizer(enc, merges, vocabJsonPath);
  }

  /** A folder with vocab.json + merges.txt, or with a bpe_simple_vocab*.txt(.gz). */
  static fromDir(dir: string): ClipTokenizer {
    if (!existsSync(dir)) throw new DataError(`tokenizer folder ${dir} does not exist`, 'DWC_DATA_MISSING', dir);
    const v = join(dir, 'vocab.json');
    const m = join(dir, 'merges.txt');
    if (existsSync(v) && existsSync(m)) return ClipTokenizer.fromHF(v, m);
    const bpe = readdirSync(dir).filter((f) => /^bpe_simple_vocab.*\.txt(\.gz)?$/.test(f)).sort();
    if (bpe.length) return ClipTokenizer.fromOpenAI(join(dir, bpe[0]));
    throw new DataError(`tokenizer folder ${dir} has neither vocab.json + merges.txt nor a bpe_simple_vocab*.txt.gz`, 'DWC_DATA_MISSING', dir);
  }

  /** A folder (fromDir), a vocab.json (merges.txt beside it), or an OpenAI merges file. */
  static load(path: string): ClipTokenizer {
    if (!existsSync(path)) throw new DataError(`tokenizer vocabulary ${path} does not exist`, 'DWC_DATA_MISSING', path);
    if (statSync(path).isDirectory()) return ClipTokenizer.fromDir(path);
    if (/\.json$/i.test(path)) return ClipTokenizer.fromHF(path, join(path, '..', 'merges.txt'));
    return ClipTokenizer.fromOpenAI(path);
  }

  /** BPE of one byte-encoded piece (CLIP's bpe()): symbols after merging, the last with '</w>'. */
  private bpe(token: string): string[] {
    const word = Array.from(token);
    word[word.length - 1] += EOW;
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.ranks.get(word[i] + ' ' + word[i + 1]);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best];
      const second = word[best + 1];
      // Merge every non-overlapping occurrence, left to right.
      let w = 0;
      for (let i = 0; i < word.length; ) {
        if (i + 1 < word.length && word[i] === first && word[i + 1] === second) {
          word[w++] = first + second;
          i += 2;
        } else word[w++] = word[i++];
      }
      word.length = w;
    }
    return word;
  }

  private encodePiece(piece: string): number[] {
    const hit = this.cache.get(piece);
    if (hit) return hit;
    let ids: number[];
    if (piece === SOT_TOKEN) ids = [this.sotId];
    else if (piece === EOT_TOKEN) ids = [this.eotId];
    else {
      const be = byteEncoder();
      let token = '';
      for (const b of Buffer.from(piece, 'utf8')) token += be[b];
      ids = this.bpe(token).map((sym) => {
        const id = this.encoder.get(sym);
        if (id === undefined) throw new DataError(`the vocabulary has no entry for the BPE symbol ${JSON.stringify(sym)} (from ${JSON.stringify(piece)})`, 'DWC_DATA_FORMAT', piece);
        return id;
      });
    }
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(piece, ids);
    return ids;
  }

  /** Ids of one text, without SOT/EOT. */
  encode(text: string): number[] {
    if (typeof text !== 'string') throw new DataError(`encode() needs a string, got ${typeof text}`, 'DWC_BAD_ARGUMENT', 'text');
    const out: number[] = [];
    for (const piece of clipSplit(clipCleanText(text))) for (const id of this.encodePiece(piece)) out.push(id);
    return out;
  }

  /**
   * CLIP's tokenize(): row i = [SOT] + encode(texts[i]) + [EOT], zero-padded to `context`;
   * returns int32 [N, context] row-major.
   */
  tokenize(texts: string | readonly string[], opts: TokenizeOptions = {}): Int32Array {
    const list = typeof texts === 'string' ? [texts] : texts;
    const context = opts.context ?? 77;
    checkInt(context, 'context', 2, 1 << 20);
    const out = new Int32Array(list.length * context);
    list.forEach((text, i) => {
      const ids = [this.sotId, ...this.encode(text), this.eotId];
      if (ids.length > context) {
        if (!opts.truncate) {
          const shown = text.length > 60 ? JSON.stringify(text.slice(0, 60)) + '…' : JSON.stringify(text);
          throw new DataError(`text ${i} (${shown}) has ${ids.length} tokens with SOT and EOT, more than the context length ${context}; shorten it or pass truncate`, 'DWC_BAD_ARGUMENT', `text ${i}`);
        }
        ids.length = context;
        ids[context - 1] = this.eotId;
      }
      out.set(ids, i * context);
    });
    return out;
  }

  /** CLIP's decode(): tokens joined, bytes decoded as UTF-8 (invalid → U+FFFD), '</w>' → ' '. */
  decode(ids: ArrayLike<number>): string {
    const bytes: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const tok = this.decoder.get(ids[i]);
      if (tok === undefined) throw new DataError(`decode: id ${ids[i]} at position ${i} is not in the vocabulary (size ${this.vocabSize})`, 'DWC_BAD_ARGUMENT', 'ids');
      for (const ch of tok) {
        const b = this.byteDecoder.get(ch);
        if (b === undefined) throw new DataError(`decode: token ${JSON.stringify(tok)} has the character ${JSON.stringify(ch)} outside bytes_to_unicode`, 'DWC_DATA_FORMAT', 'ids');
        bytes.push(b);
      }
    }
    return Buffer.from(bytes).toString('utf8').split(EOW).join(' ');
  }

  /** Token string of an id (undefined when absent). */
  idToToken(id: number): string | undefined {
    return this.decoder.get(id);
  }

  /** Id of a token string (undefined when absent). */
  tokenToId(token: string): number | undefined {
    return this.encoder.get(token);
  }
}

function readVocabFile(path: string): Buffer {
  if (!existsSync(path)) throw new DataError(`tokenizer file ${path} does not exist`, 'DWC_DATA_MISSING', path);
  return readFileSync(path);
}

function parseMerges(lines: readonly string[], path: string, firstLineNo: number): [string, string][] {
  return lines.map((line, i) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2 || !parts[0] || !parts[1]) throw new DataError(`${path} line ${i + firstLineNo}: a merge must be two symbols separated by a space, got ${JSON.stringify(line)}`, 'DWC_DATA_FORMAT', path);
    return [parts[0], parts[1]];
  });
}
