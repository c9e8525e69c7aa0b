// safetensors: 8-byte little-endian header length, JSON header, raw little-endian data.
// Used for checkpoints, trace files, feature files and test fixtures.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { DwcError } from './native.js';

export type StDType = 'F32' | 'I32' | 'I64' | 'F64' | 'U8' | 'F16' | 'BF16';
export interface StTensor {
  dtype: StDType;
  shape: number[];
  data: Float32Array | Int32Array | BigInt64Array | Float64Array | Uint8Array | Uint16Array; // F16 / BF16: raw 16-bit words (see toFloat32)
}
export interface StFile {
  tensors: Map<string, StTensor>;
  metadata: Record<string, string>;
}

const BYTES: Record<StDType, number> = { F32: 4, I32: 4, I64: 8, F64: 8, U8: 1, F16: 2, BF16: 2 };

function fail(path: string, msg: string): never {
  throw new DwcError(`${path}: not a valid safetensors file: ${msg}`, 'DWC_FORMAT');
}

export function parseSafetensors(buf: Buffer, path = '<buffer>'): StFile {
  if (buf.length < 8) fail(path, `file is ${buf.length} bytes, shorter than the 8-byte header length`);
  const n = Number(buf.readBigUInt64LE(0));
  if (n > buf.length - 8 || n > 100 * 1024 * 1024) fail(path, `header length ${n} exceeds the file size ${buf.length}`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    fail(path, `header is not JSON (${(e as Error).message})`);
  }
  const base = 8 + n;
  const tensors = new Map<string, StTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = (v ?? {}) as Record<string, string>;
      continue;
    }
    const e = v as { dtype?: string; shape?: number[]; data_offsets?: [number, number] };
    if (!e || typeof e.dtype !== 'string' || !Array.isArray(e.shape) || !Array.isArray(e.data_offsets)) fail(path, `entry '${name}' is malformed`);
    const dtype = e.dtype as StDType;
    if (!(dtype in BYTES)) fail(path, `entry '${name}' has unsupported dtype ${e.dtype}`);
    const [s, t] = e.data_offsets;
    const numel = e.shape.reduce((a, b) => a * b, 1);
    if (!(s >= 0 && t >= s && base + t <= buf.length)) fail(path, `entry '${name}' data [${s}, ${t}) lies outside the file (truncated?)`);
    if (t - s !== numel * BYTES[dtype]) fail(path, `entry '${name}' has ${t - s} bytes but shape [${e.shape}] ${dtype} needs ${numel * BYTES[dtype]}`);
    const bytes = buf.subarray(base + s, base + t);
    const copy = new ArrayBuffer(bytes.length);
    new Uint8Array(copy).set(bytes);
    const data =
      dtype === 'F32'
        ? new Float32Array(copy)
        : dtype === 'I32'
          ? new Int32Array(copy)
          : dtype === 'I64'
            ? new BigInt64Array(copy)
            : dtype === 'F64'
              ? new Float64Array(copy)
              : dtype === 'F16' || dtype === 'BF16'
                ? new Uint16Array(copy)
                : new Uint8Array(copy);
    tensors.set(name, { dtype, shape: e.shape, data });
  }
  return { tensors, metadata };
}

/** A float tensor's values as float32 (F32 as is; F64, F16 and BF16 converted). */
export function toFloat32(t: StTensor): Float32Array {
  if (t.dtype === 'F32') return t.data as Float32Array;
  if (t.dtype === 'F64') return Float32Array.from(t.data as Float64Array);
  const h = t.data as Uint16Array;
  const out = new Float32Array(h.length);
  if (t.dtype === 'BF16') {
    new Uint32Array(out.buffer).set(Uint32Array.from(h, (x) => x << 16));
    return out;
  }
  if (t.dtype !== 'F16') throw new DwcError(`safetensors: dtype ${t.dtype} is not a float type`, 'DWC_FORMAT');
  for (let i = 0; i < h.length; i++) {
    const s = h[i] & 0x8000 ? -1 : 1, e = (h[i] >> 10) & 0x1f, m = h[i] & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

export function readSafetensors(path: string): StFile {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new DwcError(`cannot read ${path}: ${(e as Error).message}`, 'DWC_IO');
  }
  return parseSafetensors(buf, path);
}

export function serializeSafetensors(tensors: Map<string, StTensor> | Record<string, StTensor>, metadata: Record<string, string> = {}): Buffer {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const [name, t] of entries) {
    const nb = t.data.byteLength;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + nb] };
    off += nb;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const hb = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + hb.length + off);
  out.writeBigUInt64LE(BigInt(hb.length), 0);
  hb.copy(out, 8);
  let p = 8 + hb.length;
  for (const [, t] of entries) {
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, p);
    p += t.data.byteLength;
  }
  return out;
}

/** Writes atomically: temp file in the same folder, fsync, rename. A crash never leaves a half file. */
export function writeSafetensors(path: string, tensors: Map<string, StTensor> | Record<string, StTensor>, metadata: Record<string, string> = {}): void {
  const buf = serializeSafetensors(tensors, metadata);
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w');
    writeSync(fd, buf);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* nothing to clean */
    }
    throw new DwcError(`cannot write ${path}: ${(e as Error).message}`, 'DWC_IO');
  }
}
