// CLIP trace cases (scripts/fixtures/gen_clip_trace.py): the weights are regenerated from the
// case's seed and tensor list, v = (u·2 − 1)·scale + offset with mulberry32 (makeRng), float32
// (kinds 'u' trainable and 'stat' BN running statistics; 'arange' / 'count' int64, not drawn).
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../../lib/safetensors.js';
import { makeRng } from './index.js';

export const clipCaseDir = new URL('../fixtures/clip/trace/', import.meta.url).pathname;

export function clipCases() {
  return existsSync(clipCaseDir) ? readdirSync(clipCaseDir).filter((c) => existsSync(join(clipCaseDir, c, 'case.json'))) : [];
}

export function clipCaseMeta(c) {
  return JSON.parse(readFileSync(join(clipCaseDir, c, 'case.json'), 'utf8'));
}

export function clipCaseWeights(meta) {
  const rng = makeRng(meta.seed);
  const out = new Map();
  for (const [name, shape, kind, scale, offset] of meta.tensors) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (kind === 'arange') {
      out.set(name, { dtype: 'I64', shape, data: BigInt64Array.from({ length: n }, (_, i) => BigInt(i)) });
      continue;
    }
    if (kind === 'count') {  // num_batches_tracked: int64 filled with `offset`, not drawn
      out.set(name, { dtype: 'I64', shape, data: new BigInt64Array(n).fill(BigInt(offset)) });
      continue;
    }
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = (rng.uniform() * 2 - 1) * scale + offset;
    out.set(name, { dtype: 'F32', shape, data: d });
  }
  return out;
}

/** Writes the case's weight file (and its config.json) into the folder `into`; returns the meta. */
export function writeClipCase(c, into, { config = true } = {}) {
  const meta = clipCaseMeta(c);
  mkdirSync(into, { recursive: true });
  writeSafetensors(join(into, meta.weights_file), clipCaseWeights(meta));
  if (config && meta.config) writeFileSync(join(into, 'config.json'), JSON.stringify(meta.config));
  return meta;
}
