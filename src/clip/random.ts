// Random CLIP weights of a given architecture (OpenAI names), deterministic from a seed: for the
// examples, tests and benchmarks, since no real weights can be downloaded there. Uniform
// ±sqrt(3/fan_in) for matrices, 1 ± 0.1 for LayerNorm weights, 0.02 spread elsewhere,
// logit_scale = log(1/0.07) (CLIP's initial temperature); BatchNorm scales and running variances 1 ± 0.1.
import { expectedShapes, type ClipArch } from './weights.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors, type StTensor } from '../safetensors.js';

/** A small ViT CLIP (resolution 32, embed 32, 2 + 2 layers of width 64, context 16, the 514-symbol byte vocabulary). */
export const TINY_CLIP_ARCH: ClipArch = {
  image: 'vit', naming: 'openai', activation: 'quick_gelu', embedDim: 32, resolution: 32, patchSize: 8, grid: 4,
  visionWidth: 64, visionLayers: 2, visionHeads: 1, contextLength: 16, vocabSize: 514, textWidth: 64, textLayers: 2, textHeads: 1, rnWidth: 0, rnLayers: [], rnHeads: 0,
};

/** A small ModifiedResNet CLIP (RN50's layout: 3-conv stem, [1,1,1,1] bottlenecks, attention pooling; stem width 4, 64², embed 32, 1 text layer of width 64, context 64, byte vocabulary). */
export const TINY_RN_CLIP_ARCH: ClipArch = {
  image: 'resnet', naming: 'openai', activation: 'quick_gelu', embedDim: 32, resolution: 64, patchSize: 0, grid: 2,
  visionWidth: 128, visionLayers: 0, visionHeads: 2, contextLength: 64, vocabSize: 514, textWidth: 64, textLayers: 1, textHeads: 1, rnWidth: 4, rnLayers: [1, 1, 1, 1], rnHeads: 2,
};

/** ViT-B/32's shapes (random values): for speed figures. */
export const VIT_B32_ARCH: ClipArch = {
  image: 'vit', naming: 'openai', activation: 'quick_gelu', embedDim: 512, resolution: 224, patchSize: 32, grid: 7,
  visionWidth: 768, visionLayers: 12, visionHeads: 12, contextLength: 77, vocabSize: 49408, textWidth: 512, textLayers: 12, textHeads: 8, rnWidth: 0, rnLayers: [], rnHeads: 0,
};

/** Tensors (OpenAI names) of a CLIP with random weights; load with Clip.fromTensors or save with writeSafetensors. */
export function randomClipTensors(arch: ClipArch, seed = 1): Map<string, StTensor> {
  let s = (seed >>> 0) || 1;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296) * 2 - 1;
  const out = new Map<string, StTensor>();
  for (const [name, shape] of expectedShapes(arch)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const d = new Float32Array(n);
    // LayerNorm / BatchNorm scales and BatchNorm running variances near 1 (a variance must be positive)
    const nearOne = /(ln_\w+|ln_final)\.weight$/.test(name) || /\.(bn\d|downsample\.1)\.(weight|running_var)$/.test(name);
    const a = shape.length >= 2 ? Math.sqrt(3 / shape.slice(1).reduce((x, y) => x * y, 1)) : 0.02;
    for (let i = 0; i < n; i++) d[i] = name === 'logit_scale' ? Math.log(1 / 0.07) : nearOne ? 1 + 0.1 * rnd() : a * rnd();
    out.set(name, { dtype: 'F32', shape: name === 'logit_scale' ? [] : shape, data: d });
  }
  return out;
}

/**
 * Writes a folder a CLIP can be opened from (Clip.load(dir), `--clip dir`): model.safetensors with
 * random weights and, when the vocabulary is the 514 byte symbols, a merges file without merges
 * (bpe_simple_vocab_16e6.txt: byte-level BPE, each UTF-8 byte one token).
 */
export function writeRandomClip(dir: string, arch: ClipArch = TINY_CLIP_ARCH, seed = 1): string {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), randomClipTensors(arch, seed), { format: 'pt', activation: arch.activation });
  if (arch.vocabSize === 514) writeFileSync(join(dir, 'bpe_simple_vocab_16e6.txt'), '"bpe_simple_vocab_16e6.txt#version: 0.2\n');
  return dir;
}
