// Checkpoint header checks done before any weights are loaded: a corrupt file, a file that is
// not a dwc-native checkpoint, or one of another preset fails here with a one-line message.
import { closeSync, openSync, readFileSync, readSync, renameSync, statSync, existsSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { DwcError } from '../native.js';
import { Vocabulary } from '../data/text.js';
import type { TrainConfig } from './config.js';

/** Metadata keys written by the trainer next to the model's own (safetensors __metadata__). */
export const META = {
  format: 'dwc.format',
  preset: 'dwc.preset',
  config: 'dwc.config',
  vocab: 'dwc.vocab',
  trainer: 'dwc.trainer',
} as const;
export const CHECKPOINT_FORMAT = 'dwc-native-checkpoint-1';

export interface TrainerState {
  /** Epoch to run next (0-based) and the batch within it to start at. */
  epoch: number;
  batch: number;
  step: number;
  /** Sums of the losses of the current epoch so far (exact resume of the epoch means). */
  lossSums: Record<string, number>;
  lossCount: number;
  /** fusionBeta 'auto': mean / recall at the best epoch's own β, stored in fusionBeta (docs/MODEL.md §7). */
  best: { epoch: number; mean: number; recall: Record<string, number>; fusionBeta?: number } | null;
}

export interface CheckpointInfo {
  path: string;
  metadata: Record<string, string>;
  tensorNames: string[];
  preset: string;
  config?: TrainConfig;
  vocab?: Vocabulary;
  trainer?: TrainerState;
}

function bad(path: string, msg: string): never {
  throw new DwcError(`checkpoint ${path} ${msg}`, 'DWC_FORMAT');
}

/** Reads and checks a checkpoint's header only (cheap: no tensor data is read). */
export function readCheckpointInfo(path: string): CheckpointInfo {
  if (!existsSync(path)) throw new DwcError(`checkpoint ${path} does not exist`, 'DWC_IO');
  const size = statSync(path).size;
  if (size < 8) bad(path, `is corrupt (${size} bytes, not a safetensors file)`);
  const fd = openSync(path, 'r');
  let header: Record<string, unknown>;
  try {
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const n = Number(lenBuf.readBigUInt64LE(0));
    if (n <= 0 || n > size - 8 || n > 100 * 1024 * 1024) bad(path, 'is corrupt (bad safetensors header length)');
    const hb = Buffer.alloc(n);
    readSync(fd, hb, 0, n, 8);
    try {
      header = JSON.parse(hb.toString('utf8')) as Record<string, unknown>;
    } catch {
      bad(path, 'is corrupt (safetensors header is not JSON)');
    }
    let end = 0;
    for (const [k, v] of Object.entries(header)) {
      if (k === '__metadata__') continue;
      const off = (v as { data_offsets?: number[] })?.data_offsets;
      if (!Array.isArray(off) || off.length !== 2) bad(path, `is corrupt (entry '${k}' has no data offsets)`);
      end = Math.max(end, off[1]);
    }
    if (8 + n + end > size) bad(path, `is truncated (${size} bytes, header needs ${8 + n + end})`);
  } finally {
    closeSync(fd);
  }
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  const info: CheckpointInfo = {
    path,
    metadata,
    tensorNames: Object.keys(header).filter((k) => k !== '__metadata__'),
    preset: metadata[META.preset] ?? '',
  };
  if (metadata[META.format] !== CHECKPOINT_FORMAT || !info.preset) bad(path, 'was not written by dwc-native train (no dwc.format/dwc.preset metadata)');
  try {
    if (metadata[META.config]) info.config = JSON.parse(metadata[META.config]) as TrainConfig;
    if (metadata[META.vocab]) info.vocab = Vocabulary.fromJSON(JSON.parse(metadata[META.vocab]));
    if (metadata[META.trainer]) info.trainer = JSON.parse(metadata[META.trainer]) as TrainerState;
  } catch (e) {
    bad(path, `has unreadable metadata (${(e as Error).message})`);
  }
  return info;
}

/** Throws when a checkpoint was trained with another preset than the one asked for. */
export function checkPreset(info: CheckpointInfo, preset: string | undefined): void {
  if (preset && info.preset !== preset) throw new DwcError(`checkpoint ${info.path} was trained with preset '${info.preset}', not '${preset}'`, 'DWC_FORMAT');
}

export function checkpointMetadata(cfg: TrainConfig, vocab: Vocabulary, state: TrainerState): Record<string, string> {
  return {
    [META.format]: CHECKPOINT_FORMAT,
    [META.preset]: cfg.preset,
    // the CLIP path absolute: search / index / serve load it from there (src/search/clip_inputs.ts)
    [META.config]: JSON.stringify(cfg.clip ? { ...cfg, clip: resolve(cfg.clip) } : cfg),
    [META.vocab]: JSON.stringify(vocab.toJSON()),
    [META.trainer]: JSON.stringify(state),
  };
}

/**
 * Replaces settings of the config stored in a checkpoint's metadata (e.g. the fusionBeta chosen
 * after training), leaving the tensors byte for byte; written to a temporary file and renamed.
 */
export function patchCheckpointConfig(path: string, patch: Partial<TrainConfig>): void {
  const info = readCheckpointInfo(path);
  if (!info.config) bad(path, 'has no config in its metadata');
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
  const meta = { ...((header.__metadata__ ?? {}) as Record<string, string>) };
  meta[META.config] = JSON.stringify({ ...info.config, ...patch });
  header.__metadata__ = meta;
  let hb = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (hb.length % 8)) % 8; // keep the data 8-byte aligned (header padded with spaces)
  if (pad) hb = Buffer.concat([hb, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hb.length));
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, Buffer.concat([len, hb, buf.subarray(8 + n)]));
  renameSync(tmp, path);
}
