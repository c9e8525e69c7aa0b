// Random initialisation of a small CLIP from scratch in OpenAI naming (PL4CIR-SPEC.md §1 stage 1
// when no pretrained weights exist; CLIP-SPEC.md for the architecture). As OpenAI's
// CLIP.initialize_parameters: token_embedding N(0, 0.02), text positional_embedding N(0, 0.01),
// text blocks in_proj N(0, w^-½), out_proj and c_proj N(0, w^-½·(2L)^-½), c_fc N(0, (2w)^-½),
// text_projection N(0, w^-½); the ViT's class_embedding, positional_embedding and proj N(0, w^-½);
// what OpenAI leaves to PyTorch keeps PyTorch's defaults (Linear: weight and bias
// U(±1/√fan_in); MultiheadAttention: in_proj Xavier-uniform, in_proj_bias and out_proj.bias 0;
// Conv2d without bias: U(±1/√fan_in); LayerNorm 1 and 0); logit_scale = ln(1/0.07).
// Seeded (mulberry32 streams, src/data/rng.ts): the same options give the same tensors.
import { Rng } from '../data/rng.js';
import { checkInt } from '../data/errors.js';
import type { StTensor } from '../safetensors.js';
import { DwcError } from '../native.js';

export interface ClipInitOptions {
  /** Image side (default 64); must be a multiple of patchSize. */
  resolution?: number;
  patchSize?: number; // default 8
  visionWidth?: number; // default 128 (heads = width / 64)
  visionLayers?: number; // default 4
  textWidth?: number; // default 128
  textLayers?: number; // default 4
  contextLength?: number; // default 32
  embedDim?: number; // default 128
  /** Rows of the token embedding (the tokenizer's vocabSize). */
  vocabSize: number;
  seed?: number; // default 0
}

/** The small ViT the synthetic benchmark uses by default (64² images, patch 8, 4 × 128 towers). */
export const SMALL_CLIP: Required<Omit<ClipInitOptions, 'vocabSize' | 'seed'>> = {
  resolution: 64,
  patchSize: 8,
  visionWidth: 128,
  visionLayers: 4,
  textWidth: 128,
  textLayers: 4,
  contextLength: 32,
  embedDim: 128,
};

/** Box–Muller normals from one stream. */
class Gauss {
  private spare: number | undefined;
  constructor(private readonly rng: Rng) {}
  next(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    let u = 0;
    while (u <= 1e-300) u = this.rng.next();
    const v = this.rng.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

/** Named tensors of a randomly initialised CLIP (OpenAI names) that Clip.fromTensors accepts. */
export function initClip(o: ClipInitOptions): Map<string, StTensor> {
  const a = { ...SMALL_CLIP, seed: 0, ...o };
  checkInt(a.vocabSize, 'vocabSize', 2, 1 << 24);
  checkInt(a.patchSize, 'patchSize', 1, 1024);
  checkInt(a.resolution, 'resolution', a.patchSize, 4096);
  if (a.resolution % a.patchSize) throw new DwcError(`initClip: 'resolution' ${a.resolution} is not a multiple of 'patchSize' ${a.patchSize}`, 'DWC_BAD_ARGUMENT');
  for (const k of ['visionWidth', 'textWidth'] as const) {
    checkInt(a[k], k, 64, 1 << 16);
    if (a[k] % 64) throw new DwcError(`initClip: '${k}' ${a[k]} must be a multiple of the head dim 64`, 'DWC_BAD_ARGUMENT');
  }
  checkInt(a.visionLayers, 'visionLayers', 1, 256);
  checkInt(a.textLayers, 'textLayers', 1, 256);
  checkInt(a.contextLength, 'contextLength', 2, 1 << 16);
  checkInt(a.embedDim, 'embedDim', 1, 1 << 16);
  checkInt(a.seed, 'seed', 0, 0xffffffff);

  const out = new Map<string, StTensor>();
  let stream = 0;
  // one RNG stream per tensor, in a fixed order: a tensor's values do not depend on the others' sizes
  const next = () => new Rng(a.seed, 7_000_000 + stream++);
  const put = (name: string, shape: number[], fill: (i: number) => number) => {
    const n = shape.reduce((x, y) => x * y, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = fill(i);
    out.set(name, { dtype: 'F32', shape, data });
  };
  const normal = (name: string, shape: number[], std: number) => {
    const g = new Gauss(next());
    put(name, shape, () => std * g.next());
  };
  const uniform = (name: string, shape: number[], bound: number) => {
    const r = next();
    put(name, shape, () => r.range(-bound, bound));
  };
  const constant = (name: string, shape: number[], v: number) => {
    next();
    put(name, shape, () => v);
  };
  const ln = (p: string, w: number) => {
    constant(`${p}.weight`, [w], 1);
    constant(`${p}.bias`, [w], 0);
  };
  /** Residual blocks: `openai` = OpenAI's explicit stds (text tower), else PyTorch's defaults (ViT). */
  const blocks = (prefix: string, w: number, L: number, openai: boolean) => {
    const attnStd = w ** -0.5;
    const projStd = w ** -0.5 * (2 * L) ** -0.5;
    const fcStd = (2 * w) ** -0.5;
    for (let i = 0; i < L; i++) {
      const p = `${prefix}${i}.`;
      ln(p + 'ln_1', w);
      if (openai) normal(p + 'attn.in_proj_weight', [3 * w, w], attnStd);
      else uniform(p + 'attn.in_proj_weight', [3 * w, w], Math.sqrt(6 / (w + 3 * w))); // xavier_uniform on [3w, w]
      constant(p + 'attn.in_proj_bias', [3 * w], 0);
      if (openai) normal(p + 'attn.out_proj.weight', [w, w], projStd);
      else uniform(p + 'attn.out_proj.weight', [w, w], 1 / Math.sqrt(w));
      constant(p + 'attn.out_proj.bias', [w], 0);
      ln(p + 'ln_2', w);
      if (openai) normal(p + 'mlp.c_fc.weight', [4 * w, w], fcStd);
      else uniform(p + 'mlp.c_fc.weight', [4 * w, w], 1 / Math.sqrt(w));
      uniform(p + 'mlp.c_fc.bias', [4 * w], 1 / Math.sqrt(w));
      if (openai) normal(p + 'mlp.c_proj.weight', [w, 4 * w], projStd);
      else uniform(p + 'mlp.c_proj.weight', [w, 4 * w], 1 / Math.sqrt(4 * w));
      uniform(p + 'mlp.c_proj.bias', [w], 1 / Math.sqrt(4 * w));
    }
  };

  const vw = a.visionWidth;
  const grid = a.resolution / a.patchSize;
  const vscale = vw ** -0.5;
  normal('visual.class_embedding', [vw], vscale);
  normal('visual.positional_embedding', [grid * grid + 1, vw], vscale);
  normal('visual.proj', [vw, a.embedDim], vscale);
  uniform('visual.conv1.weight', [vw, 3, a.patchSize, a.patchSize], 1 / Math.sqrt(3 * a.patchSize * a.patchSize));
  ln('visual.ln_pre', vw);
  blocks('visual.transformer.resblocks.', vw, a.visionLayers, false);
  ln('visual.ln_post', vw);
  const tw = a.textWidth;
  normal('token_embedding.weight', [a.vocabSize, tw], 0.02);
  normal('positional_embedding', [a.contextLength, tw], 0.01);
  blocks('transformer.resblocks.', tw, a.textLayers, true);
  ln('ln_final', tw);
  normal('text_projection', [tw, a.embedDim], tw ** -0.5);
  out.set('logit_scale', { dtype: 'F32', shape: [], data: new Float32Array([Math.log(1 / 0.07)]) });
  return out;
}
