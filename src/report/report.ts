// report.svg + report.png of a training run: loss and recall curves, the histogram of the
// combiner weight w on the test queries, with adaptive weighting (PL4CIR-SPEC.md §3) w against
// its target w* per stream, and example queries with their top-5 (hit framed).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import type { Dataset } from '../data/dataset.js';
import type { EvalResult } from '../eval/evaluate.js';
import type { EpochRecord, EvalRecord, WriteReportOptions } from '../eval/records.js';
import type { BreakdownGroup } from '../eval/breakdown.js';
import { esc, histogram, lineChart, scatter, text, FONT, type Series } from './svg.js';

export interface ReportExample {
  refFile: string;
  text: string;
  targetFile: string;
  w?: number;
  results: { file: string; hit: boolean; score: number }[];
}

export interface ReportData {
  title: string;
  subtitle?: string;
  metrics: (EpochRecord | EvalRecord)[];
  /** Combiner weights on the test queries. */
  w?: { global?: ArrayLike<number>; local?: ArrayLike<number> };
  /** Adaptive weighting on: the target w* of the same queries (one for both streams). */
  wStar?: ArrayLike<number>;
  /** Split of the per-epoch recall curves (default test). */
  curveSplit?: string;
  examples: ReportExample[];
  /** Final recall to print in the header. */
  recall?: Record<string, number>;
  /** Queries with op / dominance (synthetic benchmark): recall per kind of query (src/eval/breakdown.ts). */
  breakdown?: BreakdownGroup[];
}

const BD_ROW = 18;

/** The breakdown as an SVG table: one row per kind of query, R@K of the ranking and of each half alone. */
function breakdownTable(x: number, y: number, groups: readonly BreakdownGroup[]): string {
  const K = Object.keys(groups[0].recall)[0];
  const halves = groups.some((g) => g.global || g.local);
  const cols = ['queries', 'n', `R@${K}`, ...(halves ? [`global half R@${K}`, `local half R@${K}`] : [])];
  const xs = [0, 190, 260, 400, 540];
  const f = (r?: Record<string, number>) => (r && r[K] !== undefined ? r[K].toFixed(1) : '–');
  const out = [text(x, y, `Recall@${K} per kind of test query`, { size: 16, weight: 'bold' })];
  cols.forEach((c, i) => out.push(text(x + xs[i] + (i ? 100 : 0), y + 24, c, { size: 12, weight: 'bold', anchor: i ? 'end' : 'start' })));
  groups.forEach((g, r) => {
    const cells = [`${g.by} ${g.value}`, String(g.queries), f(g.recall), ...(halves ? [f(g.global), f(g.local)] : [])];
    cells.forEach((c, i) => out.push(text(x + xs[i] + (i ? 100 : 0), y + 24 + (r + 1) * BD_ROW, c, { size: 12, anchor: i ? 'end' : 'start', fill: '#333' })));
  });
  return out.join('');
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
const THUMB = 84;

async function thumb(file: string): Promise<string | undefined> {
  try {
    const buf = await sharp(file).resize(THUMB, THUMB, { fit: 'cover' }).png().toBuffer();
    return `data:image/png;base64,${buf.toString('base64')}`;
  } catch {
    return undefined;
  }
}

function wrap(s: string, width: number): string[] {
  const words = s.split(/\s+/);
  const lines: string[] = [];
  let cur = '';
  for (const w of words) {
    if (cur && (cur + ' ' + w).length > width) {
      lines.push(cur);
      cur = w;
    } else cur = cur ? `${cur} ${w}` : w;
  }
  if (cur) lines.push(cur);
  return lines.slice(0, 4);
}

/** Builds the report SVG (images embedded as PNG data URIs). */
export async function renderReportSvg(d: ReportData): Promise<string> {
  const W = 1260;
  const chartTop = 96;
  const chartH = 250;
  const awRow = !!d.wStar && !!(d.w?.global || d.w?.local);
  const awTop = chartTop + chartH + 90;
  const bdTop = awTop + (awRow ? chartH + 90 : 0);
  const bd = d.breakdown?.length ? d.breakdown : undefined;
  const exTop = bdTop + (bd ? 24 + (bd.length + 1) * BD_ROW + 40 : 0);
  const rowH = THUMB + 26;
  const H = exTop + 40 + Math.max(1, d.examples.length) * rowH + 20;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fafafa"/>`);
  out.push(text(30, 36, d.title, { size: 22, weight: 'bold' }));
  const rec = d.recall ? Object.entries(d.recall).map(([k, v]) => `R@${k} ${v.toFixed(1)}%`).join('   ') : '';
  out.push(text(30, 62, [d.subtitle, rec].filter(Boolean).join('   ·   '), { size: 14, fill: '#444' }));

  const epochs = d.metrics.filter((m): m is EpochRecord => m.event === 'epoch');
  const evals = d.metrics.filter((m): m is EvalRecord => m.event === 'eval');
  const curveSplit = d.curveSplit ?? evals.find((e) => e.split)?.split ?? 'test';
  const pw = 330;
  // Loss curves
  const lossKeys = [...new Set(epochs.flatMap((e) => Object.keys(e.loss)))].filter((k) => !k.endsWith('.awGap')) // |w − w*| is no loss.sort((a, b) => (a === 'total' ? -1 : b === 'total' ? 1 : a.localeCompare(b)));
  const lossSeries: Series[] = lossKeys.map((k, i) => ({ name: k, color: COLORS[i % COLORS.length], dash: k !== 'total', points: epochs.map((e) => [e.epoch, e.loss[k]] as [number, number]) }));
  out.push(lineChart({ x: 80, y: chartTop, w: pw, h: chartH, title: 'Training loss', xLabel: 'epoch', yLabel: 'loss' }, lossSeries));
  // Recall curves
  const ks = [...new Set(evals.flatMap((e) => Object.keys(e.recall)))].sort((a, b) => Number(a) - Number(b));
  const recSeries: Series[] = ks.map((k, i) => ({ name: `R@${k}`, color: COLORS[i % COLORS.length], points: evals.map((e) => [e.epoch, e.recall[k]] as [number, number]) }));
  out.push(lineChart({ x: 80 + pw + 90, y: chartTop, w: pw, h: chartH, title: `${curveSplit === 'val' ? 'Validation' : curveSplit === 'test' ? 'Test' : curveSplit} recall`, xLabel: 'epoch', yLabel: 'recall (%)' }, recSeries, { yMin: 0, yMax: 100 }));
  // Histogram of w
  const hs: { name: string; color: string; values: ArrayLike<number> }[] = [];
  if (d.w?.global) hs.push({ name: 'global w', color: COLORS[0], values: d.w.global });
  if (d.w?.local) hs.push({ name: 'local w', color: COLORS[3], values: d.w.local });
  const hx = 80 + 2 * (pw + 90);
  if (hs.length) out.push(histogram({ x: hx, y: chartTop, w: pw, h: chartH, title: 'Combiner weight w (test queries)', xLabel: 'w  (1 = image, 0 = text)', yLabel: 'queries' }, hs));
  else out.push(text(hx + pw / 2, chartTop + chartH / 2, 'no combiner weights', { anchor: 'middle', fill: '#888' }));
  // w against its self-supervised target w* (adaptive weighting), one panel per stream
  if (awRow) {
    const panels: ['global' | 'local', string][] = [['global', COLORS[0]], ['local', COLORS[3]]];
    let k = 0;
    for (const [s, color] of panels) {
      const w = d.w?.[s];
      if (!w) continue;
      out.push(scatter({ x: 80 + k * (pw + 90), y: awTop, w: pw, h: chartH, title: `${s} w against its target w*`, xLabel: 'w*  = σ((s_I − s_T)/τ_w)', yLabel: 'w (combiner)' }, [{ name: `${s} stream`, color, xs: d.wStar!, ys: w }]));
      k++;
    }
  }

  if (bd) out.push(breakdownTable(30, bdTop - 20, bd));
  // Example grid
  out.push(text(30, exTop, 'Example test queries: reference + text → top-5 results (green frame = hit)', { size: 16, weight: 'bold' }));
  const thumbs = await Promise.all(d.examples.map(async (e) => ({ ref: await thumb(e.refFile), tgt: await thumb(e.targetFile), res: await Promise.all(e.results.map((r) => thumb(r.file))) })));
  const img = (x: number, y: number, href: string | undefined, stroke?: string) => {
    const parts = [`<rect x="${x - 3}" y="${y - 3}" width="${THUMB + 6}" height="${THUMB + 6}" fill="${stroke ?? '#fff'}" stroke="${stroke ? stroke : '#ccc'}" stroke-width="1"/>`];
    parts.push(href ? `<image x="${x}" y="${y}" width="${THUMB}" height="${THUMB}" xlink:href="${href}" href="${href}"/>` : `<rect x="${x}" y="${y}" width="${THUMB}" height="${THUMB}" fill="#ddd"/>`);
    return parts.join('');
  };
  d.examples.forEach((e, i) => {
    const y = exTop + 24 + i * rowH;
    out.push(img(30, y, thumbs[i].ref));
    const lines = wrap(`“${e.text}”`, 26);
    lines.forEach((l, j) => out.push(text(30 + THUMB + 16, y + 18 + j * 16, l, { size: 13 })));
    if (e.w !== undefined) out.push(text(30 + THUMB + 16, y + THUMB - 2, `w = ${e.w.toFixed(2)}`, { size: 12, fill: '#666' }));
    out.push(text(330, y + THUMB / 2 + 6, '→', { size: 22, anchor: 'middle', fill: '#888' }));
    e.results.forEach((r, j) => {
      const x = 360 + j * (THUMB + 22);
      out.push(img(x, y, thumbs[i].res[j], r.hit ? '#2ca02c' : undefined));
      out.push(text(x + THUMB / 2, y + THUMB + 16, `${j + 1}. ${r.score.toFixed(2)}`, { size: 11, anchor: 'middle', fill: r.hit ? '#2ca02c' : '#666', weight: r.hit ? 'bold' : 'normal' }));
    });
    const tx = 360 + 5 * (THUMB + 22) + 30;
    out.push(text(tx - 12, y + THUMB / 2 + 6, '|', { size: 22, fill: '#bbb' }));
    out.push(img(tx, y, thumbs[i].tgt, '#1f77b4'));
    out.push(text(tx + THUMB / 2, y + THUMB + 16, e.results.some((r) => r.hit) ? 'target (found)' : 'target (missed)', { size: 11, anchor: 'middle', fill: '#1f77b4' }));
  });
  if (!d.examples.length) out.push(text(30, exTop + 40, 'no examples', { fill: '#888' }));
  out.push(`<text x="${W - 20}" y="${H - 8}" font-family="${FONT}" font-size="10" text-anchor="end" fill="#aaa">${esc('dwc-native')}</text>`);
  out.push('</svg>');
  return out.join('\n');
}

/** Picks up to n test queries spread over the set, about two thirds hits when available. */
export function pickExamples(ev: EvalResult, ds: Dataset, n = 6): ReportExample[] {
  const s = ev.sets[0];
  if (!s || !s.queries) return [];
  const Q = s.queries;
  const hits: number[] = [];
  const misses: number[] = [];
  const stride = Math.max(1, Math.floor(Q / (4 * n)));
  for (let q = 0; q < Q; q += stride) (s.firstHit[q] >= 0 && s.firstHit[q] < 5 ? hits : misses).push(q);
  const nh = Math.min(hits.length, Math.max(n - misses.length, Math.ceil((2 * n) / 3)));
  const chosen = [...hits.slice(0, nh), ...misses.slice(0, n - nh)].slice(0, n);
  const k = s.top.k;
  return chosen.map((q) => {
    const query = s.set.queries[q];
    const targetKey = ds.hitKey(query.target);
    const results: ReportExample['results'] = [];
    for (let t = 0; t < Math.min(5, k); t++) {
      const j = s.top.indices[q * k + t];
      if (j < 0) break;
      const id = s.galleryIds[j];
      results.push({ file: ds.image(id).file, hit: ds.hitKey(id) === targetKey, score: s.top.scores[q * k + t] });
    }
    return { refFile: ds.image(query.source).file, text: query.text, targetFile: ds.image(query.target).file, w: (s.w ?? s.wLocal)?.[q], results };
  });
}

/** Renders the SVG to PNG with sharp. */
export async function svgToPng(svg: string, path: string): Promise<void> {
  await sharp(Buffer.from(svg), { density: 96 }).png().toFile(path);
}

export type { WriteReportOptions } from '../eval/records.js';

/** Writes report.svg and report.png into the run folder; returns their paths. */
export async function writeReport(o: WriteReportOptions): Promise<string[]> {
  const s = o.evalResult.sets[0];
  const data: ReportData = {
    title: o.title,
    subtitle: s ? `${s.queries} test queries, gallery of ${s.gallery}` : undefined,
    metrics: o.metrics,
    w: { global: s?.w, local: s?.wLocal },
    ...(s?.wStar ? { wStar: s.wStar } : {}),
    examples: pickExamples(o.evalResult, o.dataset),
    recall: o.evalResult.recall,
    ...(s?.breakdown ? { breakdown: s.breakdown } : {}),
  };
  const svg = await renderReportSvg(data);
  const svgPath = join(o.runDir, 'report.svg');
  const pngPath = join(o.runDir, 'report.png');
  writeFileSync(svgPath, svg);
  await svgToPng(svg, pngPath);
  return [svgPath, pngPath];
}
