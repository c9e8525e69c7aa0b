// Stage 3 with the CLIP encoder unfrozen (PL4CIR-SPEC.md §1, docs/MODEL.md §16): what the native
// encoder "clip" (native/model/clip_encoder.h) is built from — the CLIP's architecture and
// weights (OpenAI names, stored under global.clip.*) and the token table that turns the DWC
// vocabulary's word ids into CLIP BPE ids (global.clip.token_map [V + 1, K]; row V: SOT, EOT).
// Built once when training starts; a checkpoint carries all of it, so eval / search / serve of
// such a checkpoint need no CLIP folder.
import { dirname } from 'node:path';
import { DwcError } from '../native.js';
import { readSafetensors } from '../safetensors.js';
import { Clip, resolveClipWeights } from '../clip/model.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import { clipBindings, detectNaming, gatherCanonical, type ClipArch } from '../clip/weights.js';
import { SPECIAL_TOKENS } from '../data/text.js';

/** Prefix of the CLIP's tensors inside a DWC checkpoint (native ClipEncoder::kPrefix). */
export const CLIP_ENCODER_PREFIX = 'global.clip.';
/** Default K: the most CLIP pieces one vocabulary word keeps (longer words are cut). */
export const CLIP_PIECES = 8;

/** The DWC vocabulary's markers as CLIP text: <AND> is the word "and"; <UNK>, <BOS>, <EOS> add nothing. */
const MARKER_TEXT: Record<string, string> = { '<UNK>': '', '<AND>': 'and', '<BOS>': '', '<EOS>': '' };

export interface ClipEncoderInit {
  arch: ClipArch;
  /** Native tensor name (global.clip.*) → values, every tensor of the CLIP. */
  tensors: Map<string, Float32Array>;
  /** global.clip.token_map [V + 1, K] as floats (−1 = no piece). */
  tokenMap: Float32Array;
  pieces: number;
  /** Vocabulary words cut to K pieces. */
  cut: number;
}

/** The token table: row i holds the CLIP BPE ids of word i (at most K, then −1); row V holds SOT, EOT. */
export function clipTokenMap(tok: ClipTokenizer, words: readonly string[], K = CLIP_PIECES): { map: Float32Array; cut: number } {
  if (!Number.isInteger(K) || K < 2 || K > 64) throw new DwcError(`clip encoder: pieces per word must be an integer in [2, 64], got ${K}`, 'DWC_BAD_ARGUMENT');
  const V = words.length;
  const map = new Float32Array((V + 1) * K).fill(-1);
  let cut = 0;
  words.forEach((w, i) => {
    const text = (SPECIAL_TOKENS as readonly string[]).includes(w) ? MARKER_TEXT[w] : w;
    const ids = text ? tok.encode(text) : [];
    if (ids.length > K) cut++;
    for (let k = 0; k < Math.min(K, ids.length); k++) map[i * K + k] = ids[k];
  });
  map[V * K] = tok.sotId;
  map[V * K + 1] = tok.eotId;
  return { map, cut };
}

/** Reads the CLIP of `clipPath` (a folder with its vocabulary, or a weights file beside it) for the DWC vocabulary `words`. */
export function loadClipEncoder(clipPath: string, words: readonly string[], K = CLIP_PIECES): ClipEncoderInit {
  const file = resolveClipWeights(clipPath);
  const arch = Clip.load(file).arch; // architecture and activation as Clip reads them
  const st = readSafetensors(file);
  const names = [...st.tensors.keys()];
  const tensors = new Map<string, Float32Array>();
  for (const b of clipBindings(detectNaming(names), names)) tensors.set(CLIP_ENCODER_PREFIX + b.canonical, gatherCanonical(b, st.tensors).data);
  const tok = ClipTokenizer.fromDir(dirname(file));
  if (tok.vocabSize !== arch.vocabSize)
    throw new DwcError(`clip encoder: the tokenizer in ${dirname(file)} has ${tok.vocabSize} ids but the weights' token embedding has ${arch.vocabSize} rows`, 'DWC_BAD_ARGUMENT');
  const { map, cut } = clipTokenMap(tok, words, K);
  return { arch, tensors, tokenMap: map, pieces: K, cut };
}
