#!/usr/bin/python3
"""Reference CLIP tokenizer, written from /work/shared/design/CLIP-SPEC.md ("Tokenizer"), without
ftfy (as the engine). Needs the `regex` module (Debian: python3-regex) for \\p{L} / \\p{N}.

    /usr/bin/python3 scripts/reference/clip_tokenizer_ref.py VOCAB [--context 77] < request.json
    /usr/bin/python3 scripts/reference/clip_tokenizer_ref.py --classify   (every code point, see classify())

VOCAB: an OpenAI merges file (bpe_simple_vocab_16e6.txt.gz or a plain .txt) or a folder with
Hugging Face vocab.json + merges.txt. request.json: {"texts": [...]}. Prints one JSON object:
{"vocab_size", "sot", "eot", "encode": [[ids]...], "tokenize": [row or {"error": msg}],
 "tokenize_truncated": [rows], "decode": [text...]}.
"""
import argparse, gzip, html, json, os, sys

import regex

SOT, EOT = '<|startoftext|>', '<|endoftext|>'
MAX_MERGES = 49152 - 256 - 2
PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


def byte_symbols():
    """GPT-2 bytes -> unicode: printable bytes map to themselves, the rest to 256, 257, ..."""
    keep = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # insertion order = vocabulary order


class RefTokenizer:
    def __init__(self, path):
        self.bytes = byte_symbols()
        self.unbytes = {c: b for b, c in self.bytes.items()}
        if os.path.isdir(path):
            with open(os.path.join(path, 'vocab.json'), encoding='utf-8') as f:
                self.encoder = json.load(f)
            with open(os.path.join(path, 'merges.txt'), encoding='utf-8') as f:
                lines = f.read().strip().split('\n')
            if lines and lines[0].startswith('#version'):
                lines = lines[1:]
            merges = [tuple(l.split()) for l in lines[:MAX_MERGES]]
        else:
            raw = open(path, 'rb').read()
            if raw[:2] == b'\x1f\x8b':
                raw = gzip.decompress(raw)
            lines = raw.decode('utf-8').split('\n')[1:1 + MAX_MERGES]
            while lines and not lines[-1].strip():
                lines.pop()
            merges = [tuple(l.split()) for l in lines]
            vocab = list(self.bytes.values())
            vocab += [v + '</w>' for v in vocab]
            vocab += [''.join(m) for m in merges]
            vocab += [SOT, EOT]
            self.encoder = {t: i for i, t in enumerate(vocab)}
            self.vocab_size = len(vocab)
        if not hasattr(self, 'vocab_size'):
            self.vocab_size = max(self.encoder.values()) + 1
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.rank = {}
        for i, m in enumerate(merges):
            self.rank.setdefault(m, i)
        self.sot, self.eot = self.encoder[SOT], self.encoder[EOT]
        self.memo = {SOT: SOT, EOT: EOT}

    @staticmethod
    def clean(text):
        text = html.unescape(html.unescape(text)).strip()
        text = regex.sub(r'\s+', ' ', text).strip()
        return text.lower()

    def bpe(self, token):
        if token in self.memo:
            return self.memo[token]
        symbols = list(token[:-1]) + [token[-1] + '</w>']
        while len(symbols) > 1:
            ranked = [(self.rank.get((a, b), float('inf')), k) for k, (a, b) in enumerate(zip(symbols, symbols[1:]))]
            best, _ = min(ranked)
            if best == float('inf'):
                break
            k = next(k for r, k in ranked if r == best)  # ranks are per pair: any k with this rank names it
            a, b = symbols[k], symbols[k + 1]
            merged, k = [], 0
            while k < len(symbols):
                if k + 1 < len(symbols) and symbols[k] == a and symbols[k + 1] == b:
                    merged.append(a + b)
                    k += 2
                else:
                    merged.append(symbols[k])
                    k += 1
            symbols = merged
        out = ' '.join(symbols)
        self.memo[token] = out
        return out

    def encode(self, text):
        ids = []
        for piece in PATTERN.findall(self.clean(text)):
            token = ''.join(self.bytes[b] for b in piece.encode('utf-8'))
            ids.extend(self.encoder[s] for s in self.bpe(token).split(' '))
        return ids

    def tokenize(self, text, context, truncate):
        ids = [self.sot] + self.encode(text) + [self.eot]
        if len(ids) > context:
            if not truncate:
                return {'error': 'too long: %d tokens' % len(ids)}
            ids = ids[:context]
            ids[-1] = self.eot
        return ids + [0] * (context - len(ids))

    def decode(self, ids):
        s = ''.join(self.decoder[i] for i in ids)
        return bytearray(self.unbytes[c] for c in s).decode('utf-8', errors='replace').replace('</w>', ' ')


def classify():
    """For every code point: how the cleaning and the split pattern treat it, one letter each —
    S whitespace (collapsed), X matched by no alternative, N a number (one piece per digit),
    L a letter (joins letters), O other (joins others, not letters), - unassigned in this Python's
    Unicode (no claim). Also the code points lower() changes, with their lower-case."""
    import unicodedata
    out, lower = [], {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or unicodedata.category(chr(cp)) == 'Cn':
            out.append('-')
            continue
        c = chr(cp)
        if regex.sub(r'\s+', ' ', 'a' + c) == 'a ':
            out.append('S')
        elif PATTERN.findall(c + c) == []:
            out.append('X')
        elif PATTERN.findall(c + c) == [c, c]:
            out.append('N')
        elif PATTERN.findall('a' + c) == ['a' + c]:
            out.append('L')
        else:
            out.append('O')
        if c.lower() != c:
            lower[cp] = c.lower()
    json.dump({'classes': ''.join(out), 'lower': lower, 'unidata_version': unicodedata.unidata_version}, sys.stdout)


def main():
    if sys.argv[1:] == ['--classify']:
        return classify()
    ap = argparse.ArgumentParser()
    ap.add_argument('vocab')
    ap.add_argument('--context', type=int, default=77)
    args = ap.parse_args()
    req = json.load(sys.stdin)
    tok = RefTokenizer(args.vocab)
    enc = [tok.encode(t) for t in req['texts']]
    json.dump({
        'vocab_size': tok.vocab_size, 'sot': tok.sot, 'eot': tok.eot,
        'encode': enc,
        'tokenize': [tok.tokenize(t, args.context, False) for t in req['texts']],
        'tokenize_truncated': [tok.tokenize(t, args.context, True) for t in req['texts']],
        'decode': [tok.decode(e) for e in enc],
        'regex_version': regex.__version__,
    }, sys.stdout, ensure_ascii=True)


if __name__ == '__main__':
    main()
