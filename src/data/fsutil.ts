// File helpers: the loaders' readers (every failure a DataError naming the path) and the atomic
// writers every run folder uses (a temp file beside the target, then a rename: a half-written file
// never replaces a good one).
import { copyFileSync, existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { DataError } from './errors.js';

export function requireDir(path: string, what: string): void {
  if (!existsSync(path) || !statSync(path).isDirectory()) throw new DataError(`${what}: folder ${path} does not exist`, 'DWC_DATA_MISSING', path);
}

export function requireFile(path: string, what: string): void {
  if (!existsSync(path) || !statSync(path).isFile()) throw new DataError(`${what}: file ${path} does not exist`, 'DWC_DATA_MISSING', path);
}

export function readText(path: string, what: string): string {
  requireFile(path, what);
  return readFileSync(path, 'utf8');
}

export function readJson<T>(path: string, what: string): T {
  const text = readText(path, what);
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new DataError(`${what}: ${path} is not valid JSON (${(e as Error).message})`, 'DWC_DATA_FORMAT', path);
  }
}

export function readLines(path: string, what: string): string[] {
  return readText(path, what)
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
}

export const IMAGE_EXTS = ['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif', '.bmp'];

/** Image files directly in `dir`, by file name and by name without extension. */
export function indexImageDir(dir: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const f of readdirSync(dir)) {
    const ext = extname(f).toLowerCase();
    if (!IMAGE_EXTS.includes(ext)) continue;
    const p = join(dir, f);
    m.set(f, p);
    const stem = f.slice(0, -ext.length);
    if (!m.has(stem)) m.set(stem, p);
  }
  return m;
}

/** Image files anywhere below `dir` (depth-limited), keyed by file name. */
export function indexImagesRecursive(dir: string, accept: (relDir: string) => boolean, depth = 4): Map<string, string> {
  const m = new Map<string, string>();
  const walk = (d: string, rel: string, left: number): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (left > 0) walk(p, r, left - 1);
      } else if (IMAGE_EXTS.includes(extname(e.name).toLowerCase()) && accept(rel) && !m.has(e.name)) m.set(e.name, p);
    }
  };
  walk(dir, '', depth);
  return m;
}

/** Writes `text` to `path` atomically (temp file beside it, then a rename). */
export function writeTextAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** Writes `o` as JSON (one trailing newline) to `path` atomically; `indent` as JSON.stringify's. */
export function writeJsonAtomic(path: string, o: unknown, indent?: number): void {
  writeTextAtomic(path, JSON.stringify(o, null, indent) + '\n');
}

/** Copies `from` to `to` atomically. */
export function copyFileAtomic(from: string, to: string): void {
  const tmp = `${to}.tmp-${process.pid}`;
  copyFileSync(from, tmp);
  renameSync(tmp, to);
}
