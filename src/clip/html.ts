// HTML character-reference decoding as CLIP's tokenizer applies it (CLIP-SPEC.md "Tokenizer":
// `html.unescape` twice). This reproduces Python's html.unescape exactly: the full HTML5 table of
// named references (html_entities.ts, 2231 names, legacy names also without ';', and the
// longest-prefix rule for them: "&notit;" → "¬it;"), decimal "&#65;" and hex "&#x41;" references
// with or without ';', 0 → U+FFFD, 0x80–0x9F → their windows-1252 characters, surrogates and
// values above U+10FFFF → U+FFFD, and the code points the standard forbids (C0/C1 controls other
// than whitespace, noncharacters) dropped. Anything else starting with '&' is left as it is.
import { HTML5_NAMED, INVALID_CHARREFS, INVALID_CODEPOINTS } from './html_entities.js';

// Python: &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)   ({1,32} counts code points)
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

function replaceCharref(s: string): string {
  if (s[0] === '#') {
    const hex = s[1] === 'x' || s[1] === 'X';
    const digits = (hex ? s.slice(2) : s.slice(1)).replace(/;$/, '');
    // parseInt of a very long digit string is inexact or Infinity, but then it is > 0x10FFFF anyway.
    const num = parseInt(digits, hex ? 16 : 10);
    const invalid = INVALID_CHARREFS.get(num);
    if (invalid !== undefined) return invalid;
    if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
    if (INVALID_CODEPOINTS.has(num)) return '';
    return String.fromCodePoint(num);
  }
  const whole = HTML5_NAMED.get(s);
  if (whole !== undefined) return whole;
  // Longest name that is a prefix (at least 2 code points, shorter than s).
  const cps = Array.from(s);
  for (let x = cps.length - 1; x > 1; x--) {
    const prefix = cps.slice(0, x).join('');
    const v = HTML5_NAMED.get(prefix);
    if (v !== undefined) return v + cps.slice(x).join('');
  }
  return '&' + s;
}

/** Python's `html.unescape(s)`. */
export function htmlUnescape(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(CHARREF, (_m, g1: string) => replaceCharref(g1));
}
