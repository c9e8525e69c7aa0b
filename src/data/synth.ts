// Synthetic composed-retrieval benchmark (spec §1, §7): CSS-style scenes of simple objects
// (shape × colour × size on a grid) rendered with sharp from SVG; queries (reference scene,
// modification text) → target scene; a scene id decides hits. Deterministic for a seed.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { DataError, checkInt, checkNumber } from './errors.js';
import { GENERIC_FORMAT, GENERIC_VERSION, type GenericDatasetJson, type GenericImageJson, type GenericQueryJson } from './dataset.js';
import { mapLimit, defaultConcurrency } from './images.js';
import { Rng } from './rng.js';

export const SHAPES = ['circle', 'square', 'triangle', 'diamond', 'star', 'cross'] as const;
export const COLOURS = ['red', 'green', 'blue', 'yellow', 'purple', 'orange', 'cyan', 'black'] as const;
export const SIZES = ['small', 'medium', 'large'] as const;
export const OPS = ['add', 'remove', 'colour', 'shape', 'size', 'move'] as const;
export type SynthOp = (typeof OPS)[number];

const RGB: Record<(typeof COLOURS)[number], [number, number, number]> = {
  red: [220, 30, 40],
  green: [40, 170, 60],
  blue: [40, 80, 220],
  yellow: [245, 215, 20],
  purple: [140, 40, 180],
  orange: [245, 130, 30],
  cyan: [40, 200, 230],
  black: [30, 30, 30],
};
/** Half-extent of an object as a fraction of the cell side, per size. */
const SIZE_FRAC = [0.2, 0.3, 0.42];
const GRID = 3;
const ROWS = ['top', 'middle', 'bottom'];
const COLS = ['left', 'centre', 'right'];

export interface SynthOptions {
  /** Output folder (created; a previous synth output there is replaced). */
  out: string;
  /** Number of training queries (default 4000). */
  train?: number;
  /** Number of test queries (default 1000). */
  test?: number;
  /** Number of validation queries (default: as many as test; 0 = no val split). Generated after train and test
   *  from their own RNG stream, so train and test are the same with or without them. */
  val?: number;
  /** Image side in pixels (default 64; 224 for the paper preset). */
  size?: number;
  seed?: number;
  /** Fraction of TRAIN queries whose text is wrong or ambiguous (default 0.2). Test queries are never noisy. */
  noise?: number;
  /** Fraction of text-dominant queries (default 0.5); the rest are image-dominant. */
  textDominant?: number;
  /** Images rendered at once (default: cores × 2). */
  concurrency?: number;
  onProgress?: (phase: string, done: number, total: number) => void;
}

export interface SynthSummary {
  out: string;
  images: number;
  scenes: number;
  queries: { train: number; test: number; val: number };
  noisy: number;
  gallery: number;
  size: number;
  seed: number;
  seconds: number;
}

interface Obj {
  shape: number;
  colour: number;
  size: number;
  cell: number;
}
type Scene = Obj[];

const sortScene = (s: Scene): Scene => [...s].sort((a, b) => a.cell - b.cell);
const sceneKey = (s: Scene): string => sortScene(s).map((o) => `${o.cell}:${o.size}${o.colour}${o.shape}`).join(';');
const posName = (cell: number): string => {
  const r = Math.floor(cell / GRID);
  const c = cell % GRID;
  if (r === 1 && c === 1) return 'centre';
  if (r === 1) return COLS[c];
  if (c === 1) return ROWS[r];
  return `${ROWS[r]} ${COLS[c]}`;
};
const objWords = (o: Obj, parts: { size?: boolean; colour?: boolean }): string =>
  [parts.size ? SIZES[o.size] : '', parts.colour ? COLOURS[o.colour] : '', SHAPES[o.shape]].filter(Boolean).join(' ');
const fullObj = (o: Obj): string => objWords(o, { size: true, colour: true });

/** Shortest description that singles `o` out in `scene` (image-dominant), or the full one (text-dominant). */
function describe(scene: Scene, o: Obj, full: boolean): string {
  if (full) return `${fullObj(o)} at the ${posName(o.cell)}`;
  const others = scene.filter((x) => x !== o);
  const tries: { size?: boolean; colour?: boolean }[] = [{}, { colour: true }, { size: true }, { size: true, colour: true }];
  for (const p of tries) {
    const unique = others.every((x) => x.shape !== o.shape || (p.colour && x.colour !== o.colour) || (p.size && x.size !== o.size));
    if (unique) return objWords(o, p);
  }
  return `${objWords(o, { colour: true })} at the ${posName(o.cell)}`;
}

const TEMPLATES: Record<SynthOp, string[]> = {
  add: ['add a {new} at the {pos}', 'put a {new} at the {pos}', 'place a {new} in the {pos}', 'there should also be a {new} at the {pos}', 'include a {new} at the {pos}'],
  remove: ['remove the {obj}', 'take away the {obj}', 'delete the {obj}', 'get rid of the {obj}', 'the same without the {obj}'],
  colour: ['make the {obj} {colour}', 'change the colour of the {obj} to {colour}', 'paint the {obj} {colour}', 'turn the {obj} {colour}', 'the {obj} should be {colour}'],
  shape: ['turn the {obj} into a {shape}', 'make the {obj} a {shape}', 'replace the {obj} with a {newobj}', 'change the {obj} to a {shape}', 'the {obj} should be a {shape}'],
  size: ['make the {obj} {sizeword}', 'the {obj} should be {sizeword}', 'resize the {obj} to {sizeabs}', 'change the {obj} to {sizeabs}'],
  move: ['move the {obj} to the {pos}', 'put the {obj} at the {pos}', 'shift the {obj} to the {pos}', 'the {obj} should be at the {pos}'],
};
const VAGUE = ['change it', 'make it different', 'something like this but different', 'modify one of the objects', 'a slightly different picture', 'make a change', 'not quite this one', 'similar but better'];

function fill(t: string, vars: Record<string, string>): string {
  return t.replace(/\{(\w+)\}/g, (_, k: string) => vars[k] ?? k);
}

function randomObj(rng: Rng, cell: number): Obj {
  return { shape: rng.int(SHAPES.length), colour: rng.int(COLOURS.length), size: rng.int(SIZES.length), cell };
}

function randomScene(rng: Rng, nObj: number): Scene {
  const cells = rng.shuffle(Array.from({ length: GRID * GRID }, (_, i) => i)).slice(0, nObj);
  return sortScene(cells.map((c) => randomObj(rng, c)));
}

const emptyCells = (s: Scene): number[] => Array.from({ length: GRID * GRID }, (_, i) => i).filter((c) => !s.some((o) => o.cell === c));

/** Applies one operation; returns the target scene and the text, or null when the op does not fit. */
function applyOp(rng: Rng, scene: Scene, op: SynthOp, full: boolean): { target: Scene; text: string } | null {
  const o = rng.pick(scene);
  const i = scene.indexOf(o);
  const tpl = rng.pick(TEMPLATES[op]);
  const obj = describe(scene, o, full);
  const replaced = (n: Obj): Scene => sortScene(scene.map((x, j) => (j === i ? n : x)));
  switch (op) {
    case 'add': {
      const free = emptyCells(scene);
      if (!free.length || scene.length >= 5) return null;
      const n = randomObj(rng, rng.pick(free));
      return { target: sortScene([...scene, n]), text: fill(tpl, { new: fullObj(n), pos: posName(n.cell) }) };
    }
    case 'remove':
      if (scene.length < 2) return null;
      return { target: scene.filter((x) => x !== o), text: fill(tpl, { obj }) };
    case 'colour': {
      const c = (o.colour + 1 + rng.int(COLOURS.length - 1)) % COLOURS.length;
      return { target: replaced({ ...o, colour: c }), text: fill(tpl, { obj, colour: COLOURS[c] }) };
    }
    case 'shape': {
      const s = (o.shape + 1 + rng.int(SHAPES.length - 1)) % SHAPES.length;
      const n = { ...o, shape: s };
      return { target: replaced(n), text: fill(tpl, { obj, shape: SHAPES[s], newobj: objWords(n, { size: full, colour: true }) }) };
    }
    case 'size': {
      const s = (o.size + 1 + rng.int(SIZES.length - 1)) % SIZES.length;
      const word = full ? SIZES[s] : s > o.size ? (s - o.size > 1 ? 'much bigger' : 'bigger') : o.size - s > 1 ? 'much smaller' : 'smaller';
      return { target: replaced({ ...o, size: s }), text: fill(tpl, { obj, sizeword: word, sizeabs: SIZES[s] }) };
    }
    case 'move': {
      const free = emptyCells(scene);
      if (!free.length) return null;
      const cell = rng.pick(free);
      return { target: replaced({ ...o, cell }), text: fill(tpl, { obj, pos: posName(cell) }) };
    }
  }
}

interface PendingImage {
  id: string;
  split: string;
  scene: string;
  svg: string;
}

// Captions (PL4CIR stage 2, docs/DATA.md): the full scene description, one phrasing per image
// chosen from its own RNG stream (seed, 2_000_000 + image index), so captions never move the
// other streams' draws.
const CAPTION_TEMPLATES = ['{list}', 'a picture of {list}', 'there is {list}', '{n}: {list}', 'a scene with {list}', 'on a light background: {list}'];
const COUNT_WORDS = ['no objects', 'one object', 'two objects', 'three objects', 'four objects', 'five objects'];

/** Full description of a scene: every object with size, colour, shape and position. */
export function sceneCaption(scene: Scene, rng: Rng): string {
  const order = rng.next() < 0.5 ? sortScene(scene) : rng.shuffle([...scene]);
  const withPos = rng.next() < 0.5;
  const items = order.map((o) => (withPos ? `a ${fullObj(o)} at the ${posName(o.cell)}` : `a ${fullObj(o)} in the ${posName(o.cell)}`));
  const list = items.length > 1 ? `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}` : items[0] ?? 'nothing';
  return fill(rng.pick(CAPTION_TEMPLATES), { list, n: COUNT_WORDS[scene.length] ?? `${scene.length} objects` });
}

const POS_CELL = new Map(Array.from({ length: GRID * GRID }, (_, c) => [posName(c), c] as [string, number]));
const CAPTION_OBJ = new RegExp(`\\ba (${SIZES.join('|')}) (${COLOURS.join('|')}) (${SHAPES.join('|')}) (?:at|in) the (${[...POS_CELL.keys()].sort((x, y) => y.length - x.length).join('|')})\\b`, 'g');

/** The scene a caption of this generator describes (its objects in caption order), or undefined when it is not one. */
export function parseSceneCaption(caption: string): Scene | undefined {
  const scene: Scene = [];
  for (const m of caption.matchAll(CAPTION_OBJ))
    scene.push({ size: SIZES.indexOf(m[1] as never), colour: COLOURS.indexOf(m[2] as never), shape: SHAPES.indexOf(m[3] as never), cell: POS_CELL.get(m[4]) as number });
  if (!scene.length || new Set(scene.map((o) => o.cell)).size !== scene.length) return undefined;
  return sortScene(scene);
}

/**
 * Another phrasing of a synthetic caption (PL4CIR stage 2: the phrasings are sampled per epoch):
 * the same scene re-described by sceneCaption with the RNG stream (seed, stream). Texts that are
 * not captions of this generator come back unchanged.
 */
export function rephraseSceneCaption(caption: string, seed: number, stream: number): string {
  const scene = parseSceneCaption(caption);
  return scene ? sceneCaption(scene, new Rng(seed, stream)) : caption;
}

/** SVG of one scene with per-image jitter (position, size, rotation, colour, background). */
function sceneSvg(scene: Scene, size: number, rng: Rng): string {
  const f = (x: number): string => x.toFixed(2);
  const cell = size / GRID;
  const bg = Math.round(rng.range(225, 250));
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 ${size} ${size}">`, `<rect width="${size}" height="${size}" fill="rgb(${bg},${bg},${Math.min(255, bg + rng.int(8))})"/>`];
  for (const o of scene) {
    const cx = (o.cell % GRID + 0.5 + rng.range(-0.08, 0.08)) * cell;
    const cy = (Math.floor(o.cell / GRID) + 0.5 + rng.range(-0.08, 0.08)) * cell;
    const r = SIZE_FRAC[o.size] * cell * rng.range(0.92, 1.08);
    const rot = rng.range(-10, 10);
    const [cr, cg, cb] = RGB[COLOURS[o.colour]].map((v) => Math.max(0, Math.min(255, Math.round(v + rng.range(-14, 14)))));
    const fill = `fill="rgb(${cr},${cg},${cb})" transform="rotate(${f(rot)} ${f(cx)} ${f(cy)})"`;
    const poly = (pts: [number, number][]): string => `<polygon points="${pts.map(([x, y]) => `${f(cx + x * r)},${f(cy + y * r)}`).join(' ')}" ${fill}/>`;
    switch (SHAPES[o.shape]) {
      case 'circle':
        parts.push(`<circle cx="${f(cx)}" cy="${f(cy)}" r="${f(r)}" ${fill}/>`);
        break;
      case 'square':
        parts.push(poly([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]));
        break;
      case 'triangle':
        parts.push(poly([[0, -1], [0.95, 0.8], [-0.95, 0.8]]));
        break;
      case 'diamond':
        parts.push(poly([[0, -1.1], [0.8, 0], [0, 1.1], [-0.8, 0]]));
        break;
      case 'star': {
        const pts: [number, number][] = [];
        for (let k = 0; k < 10; k++) {
          const a = -Math.PI / 2 + (k * Math.PI) / 5;
          const rr = k % 2 ? 0.45 : 1.05;
          pts.push([rr * Math.cos(a), rr * Math.sin(a)]);
        }
        parts.push(poly(pts));
        break;
      }
      case 'cross': {
        const w = 0.35;
        parts.push(poly([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]]));
        break;
      }
    }
  }
  parts.push('</svg>');
  return parts.join('');
}

/** Renders an SVG to PNG bytes with fixed encoder options (byte-identical for the same input). */
export async function renderSvgPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg), { density: 72 }).removeAlpha().png({ compressionLevel: 6, adaptiveFiltering: false, palette: false, effort: 7 }).toBuffer();
}

function prepareOut(out: string): void {
  if (existsSync(out)) {
    if (!statSync(out).isDirectory()) throw new DataError(`'out' ${out} exists and is not a folder`, 'DWC_BAD_ARGUMENT', 'out');
    const entries = readdirSync(out);
    if (entries.length) {
      let ours = false;
      try {
        const doc = JSON.parse(readFileSync(join(out, 'dataset.json'), 'utf8')) as { generator?: { tool?: string } };
        ours = doc.generator?.tool === 'dwc-native synth';
      } catch {
        ours = false;
      }
      if (!ours) throw new DataError(`'out' ${out} is not empty and holds no earlier synth output; choose an empty or new folder`, 'DWC_BAD_ARGUMENT', 'out');
      rmSync(join(out, 'images'), { recursive: true, force: true });
      rmSync(join(out, 'dataset.json'), { force: true });
    }
  }
  mkdirSync(join(out, 'images'), { recursive: true });
}

/** One entry per line inside the arrays: diffable and still plain JSON. */
function stringifyDataset(doc: GenericDatasetJson): string {
  const lines: string[] = ['{'];
  const keys = Object.keys(doc);
  keys.forEach((k, ki) => {
    const v = doc[k];
    const comma = ki < keys.length - 1 ? ',' : '';
    if (Array.isArray(v) && (k === 'images' || k === 'queries')) {
      lines.push(`  ${JSON.stringify(k)}: [`);
      v.forEach((e, i) => lines.push(`    ${JSON.stringify(e)}${i < v.length - 1 ? ',' : ''}`));
      lines.push(`  ]${comma}`);
    } else lines.push(`  ${JSON.stringify(k)}: ${JSON.stringify(v)}${comma}`);
  });
  lines.push('}');
  return lines.join('\n') + '\n';
}

/** Generates the benchmark into opts.out in the generic format (docs/DATA.md). */
export async function generateSynthetic(opts: SynthOptions): Promise<SynthSummary> {
  const t0 = Date.now();
  const nTrain = opts.train ?? 4000;
  const nTest = opts.test ?? 1000;
  const nVal = opts.val ?? nTest;
  const size = opts.size ?? 64;
  const seed = opts.seed ?? 1;
  const noise = opts.noise ?? 0.2;
  const textDominant = opts.textDominant ?? 0.5;
  checkInt(nTrain, 'train', 0, 10_000_000);
  checkInt(nTest, 'test', 1, 10_000_000);
  checkInt(nVal, 'val', 0, 10_000_000);
  checkInt(size, 'size', 16, 1024);
  checkInt(seed, 'seed', 0, 0xffffffff);
  checkNumber(noise, 'noise', 0, 1);
  checkNumber(textDominant, 'textDominant', 0, 1);
  const conc = opts.concurrency ?? defaultConcurrency() * 2;
  checkInt(conc, 'concurrency', 1, 256);
  const out = resolve(opts.out);
  prepareOut(out);

  const sceneIds = new Map<string, string>();
  const pending: PendingImage[] = [];
  const sceneOfImage = new Map<string, Scene>();
  const images: GenericImageJson[] = [];
  const queries: GenericQueryJson[] = [];
  const newImage = (split: string, scene: Scene): PendingImage => {
    const key = sceneKey(scene);
    let sid = sceneIds.get(key);
    if (!sid) sceneIds.set(key, (sid = `scene-${String(sceneIds.size).padStart(6, '0')}`));
    const id = `${split}-${String(pending.length).padStart(6, '0')}`;
    const caption = sceneCaption(scene, new Rng(seed, 2_000_000 + pending.length));
    const im = { id, split, scene: sid, svg: sceneSvg(scene, size, new Rng(seed, 1_000_000 + pending.length)) };
    pending.push(im);
    sceneOfImage.set(id, scene);
    images.push({ id, file: `images/${id}.png`, split, scene: sid, caption });
    return im;
  };

  // RNG streams: 1 train, 2 test, 3 label noise, 4 val (val comes last: train/test unchanged by it)
  for (const [split, n, stream] of [['train', nTrain, 1], ['test', nTest, 2], ['val', nVal, 4]] as const) {
    const rng = new Rng(seed, stream);
    const pool: { img: PendingImage; scene: Scene }[] = [];
    for (let qi = 0; qi < n; qi++) {
      const textDom = rng.next() < textDominant;
      const [lo, hi] = textDom ? [1, 2] : [3, 5];
      let ref: { img: PendingImage; scene: Scene } | undefined;
      if (pool.length && rng.next() < 0.3) {
        const c = rng.pick(pool);
        if (c.scene.length >= lo && c.scene.length <= hi) ref = c;
      }
      if (!ref) {
        const scene = randomScene(rng, lo + rng.int(hi - lo + 1));
        ref = { img: newImage(split, scene), scene };
        pool.push(ref);
      }
      let r: { target: Scene; text: string } | null = null;
      let op: SynthOp = 'colour';
      while (!r) {
        op = rng.pick(OPS);
        r = applyOp(rng, ref.scene, op, textDom);
      }
      const tgt = newImage(split, r.target);
      pool.push({ img: tgt, scene: r.target });
      queries.push({ source: ref.img.id, text: r.text, target: tgt.id, split, op, dominance: textDom ? 'text' : 'image' });
    }
    opts.onProgress?.('scenes', queries.length, nTrain + nTest + nVal);
  }

  // Label noise: exactly round(noise × nTrain) training queries get a wrong or vague text.
  const nrng = new Rng(seed, 3);
  const nNoisy = Math.round(noise * nTrain);
  const trainIdx = nrng.shuffle(Array.from({ length: nTrain }, (_, i) => i)).slice(0, nNoisy).sort((a, b) => a - b);
  for (const q of trainIdx) {
    const query = queries[q];
    if (nrng.next() < 0.5) query.text = nrng.pick(VAGUE);
    else {
      // A text for a different edit of the same reference: it contradicts the target.
      const scene = sceneOfImage.get(query.source)!;
      let r: { target: Scene; text: string } | null = null;
      for (let k = 0; k < 20 && (!r || r.text === query.text); k++) r = applyOp(nrng, scene, nrng.pick(OPS.filter((o) => o !== query.op)), query.dominance === 'text');
      query.text = r && r.text !== query.text ? r.text : nrng.pick(VAGUE);
    }
    query.noisy = true;
  }
  for (const q of queries) if (q.split === 'train' && !q.noisy) q.noisy = false;

  // Render (concurrently; each image's jitter was fixed above, so order does not matter).
  let done = 0;
  await mapLimit(pending, conc, async (im) => {
    writeFileSync(join(out, 'images', `${im.id}.png`), await renderSvgPng(im.svg));
    done++;
    if (opts.onProgress && (done % 250 === 0 || done === pending.length)) opts.onProgress('render', done, pending.length);
  });

  const gallery = images.filter((im) => im.split === 'test').map((im) => im.id);
  const valGallery = images.filter((im) => im.split === 'val').map((im) => im.id);
  const doc: GenericDatasetJson = {
    format: GENERIC_FORMAT,
    version: GENERIC_VERSION,
    name: 'synthetic-shapes',
    hit: 'scene',
    trainSplit: 'train',
    evalSplit: 'test',
    ...(nVal ? { valSplit: 'val' } : {}),
    ks: [1, 5, 10],
    generator: { tool: 'dwc-native synth', seed, size, train: nTrain, test: nTest, val: nVal, noise, textDominant, grid: GRID, shapes: SHAPES, colours: COLOURS, sizes: SIZES },
    images,
    queries,
    galleries: nVal ? { test: gallery, val: valGallery } : { test: gallery },
  };
  writeFileSync(join(out, 'dataset.json'), stringifyDataset(doc));
  return {
    out,
    images: images.length,
    scenes: sceneIds.size,
    queries: { train: nTrain, test: nTest, val: nVal },
    noisy: nNoisy,
    gallery: gallery.length,
    size,
    seed,
    seconds: (Date.now() - t0) / 1000,
  };
}

// ---------------------------------------------------------------- contact sheet

const xmlEscape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Wraps text to lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let cur = '';
  for (const w of text.split(/\s+/)) {
    if (cur && cur.length + 1 + w.length > width) {
      lines.push(cur);
      cur = w;
    } else cur = cur ? `${cur} ${w}` : w;
  }
  if (cur) lines.push(cur);
  return lines;
}

export interface PreviewOptions {
  /** Rows in the sheet (default 12: test queries first, then training queries, noisy ones marked). */
  rows?: number;
  /** Thumbnail side in pixels (default 128). */
  thumb?: number;
}

/** Writes a PNG contact sheet of some queries of a generated dataset: reference | text | target. */
export async function writePreview(datasetDir: string, file: string, opts: PreviewOptions = {}): Promise<void> {
  const root = resolve(datasetDir);
  const doc = JSON.parse(readFileSync(join(root, 'dataset.json'), 'utf8')) as GenericDatasetJson;
  const rows = opts.rows ?? 12;
  const thumb = opts.thumb ?? 128;
  checkInt(rows, 'rows', 1, 1000);
  checkInt(thumb, 'thumb', 16, 1024);
  const byId = new Map(doc.images.map((im) => [im.id, im]));
  const test = doc.queries.filter((q) => q.split !== 'train');
  const train = doc.queries.filter((q) => q.split === 'train');
  const half = Math.ceil(rows / 2);
  const picks = [...test.slice(0, half), ...train.filter((q) => q.noisy).slice(0, Math.floor(rows / 4)), ...train.filter((q) => !q.noisy)].slice(0, rows);
  const pad = 8;
  const textW = 460;
  const rowH = thumb + pad;
  const W = pad + thumb + pad + textW + pad + thumb + pad;
  const H = 30 + picks.length * rowH + pad;
  const svg: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  svg.push(`<text x="${pad}" y="20" font-family="DejaVu Sans, sans-serif" font-size="14" font-weight="bold">reference</text>`);
  svg.push(`<text x="${2 * pad + thumb}" y="20" font-family="DejaVu Sans, sans-serif" font-size="14" font-weight="bold">modification text</text>`);
  svg.push(`<text x="${W - pad - thumb}" y="20" font-family="DejaVu Sans, sans-serif" font-size="14" font-weight="bold">target</text>`);
  const composites: sharp.OverlayOptions[] = [];
  for (const [i, q] of picks.entries()) {
    const y = 30 + i * rowH;
    const lines = wrap(`“${q.text}”`, 44);
    const tag = `${q.split}${q.op ? ` · ${q.op}` : ''}${q.dominance ? ` · ${q.dominance}-dominant` : ''}${q.noisy ? ' · NOISY' : ''}`;
    lines.forEach((l, k) => svg.push(`<text x="${2 * pad + thumb}" y="${y + 28 + 22 * k}" font-family="DejaVu Sans, sans-serif" font-size="17">${xmlEscape(l)}</text>`));
    svg.push(`<text x="${2 * pad + thumb}" y="${y + thumb - 8}" font-family="DejaVu Sans, sans-serif" font-size="12" fill="${q.noisy ? '#c00' : '#666'}">${xmlEscape(tag)}</text>`);
    for (const [id, x] of [[q.source, pad], [q.target, W - pad - thumb]] as const) {
      const im = byId.get(id);
      if (!im) throw new DataError(`${root}: query refers to unknown image '${id}'`, 'DWC_DATA_MISSING_ID', id);
      const input = await sharp(join(root, im.file)).resize(thumb, thumb, { kernel: 'nearest' }).png().toBuffer();
      composites.push({ input, left: x, top: y });
    }
  }
  svg.push('</svg>');
  await sharp(Buffer.from(svg.join(''))).composite(composites).png({ compressionLevel: 6 }).toFile(file);
}
