// Minimal SVG chart primitives for the training report: line charts with axes, ticks and a
// legend, and histograms. Output is plain SVG text that sharp (librsvg) rasterises.

export const FONT = 'DejaVu Sans, Arial, Helvetica, sans-serif';

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function text(x: number, y: number, s: string, o: { size?: number; anchor?: 'start' | 'middle' | 'end'; weight?: string; fill?: string; rotate?: number } = {}): string {
  const rot = o.rotate ? ` transform="rotate(${o.rotate} ${x} ${y})"` : '';
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" font-family="${FONT}" font-size="${o.size ?? 12}" text-anchor="${o.anchor ?? 'start'}" font-weight="${o.weight ?? 'normal'}" fill="${o.fill ?? '#222'}"${rot}>${esc(s)}</text>`;
}

/** "Nice" tick values covering [lo, hi]. */
export function ticks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1).replace(/\.0$/, '');
  if (a >= 1) return v.toFixed(2).replace(/0+$/, '').replace(/\.$/, '');
  return v.toPrecision(2);
}

export interface Series {
  name: string;
  color: string;
  points: [number, number][];
  dash?: boolean;
}

export interface Panel {
  x: number;
  y: number;
  w: number;
  h: number;
  title: string;
  xLabel: string;
  yLabel: string;
}

function frame(p: Panel, xt: number[], yt: number[], sx: (v: number) => number, sy: (v: number) => number, xLabels?: (v: number) => string): string {
  const out: string[] = [];
  const { x, y, w, h } = p;
  out.push(`<rect x="${x}" y="${y}" width="${w}" height="${h}" fill="#fff" stroke="#ccc"/>`);
  for (const v of yt) {
    const yy = sy(v);
    out.push(`<line x1="${x}" y1="${yy.toFixed(1)}" x2="${x + w}" y2="${yy.toFixed(1)}" stroke="#eee"/>`);
    out.push(text(x - 6, yy + 4, fmt(v), { size: 11, anchor: 'end', fill: '#555' }));
  }
  for (const v of xt) {
    const xx = sx(v);
    out.push(`<line x1="${xx.toFixed(1)}" y1="${y + h}" x2="${xx.toFixed(1)}" y2="${y + h + 4}" stroke="#999"/>`);
    out.push(text(xx, y + h + 17, xLabels ? xLabels(v) : fmt(v), { size: 11, anchor: 'middle', fill: '#555' }));
  }
  out.push(text(x + w / 2, y - 10, p.title, { size: 15, anchor: 'middle', weight: 'bold' }));
  out.push(text(x + w / 2, y + h + 34, p.xLabel, { size: 12, anchor: 'middle', fill: '#444' }));
  out.push(text(x - 42, y + h / 2, p.yLabel, { size: 12, anchor: 'middle', fill: '#444', rotate: -90 }));
  return out.join('\n');
}

export function lineChart(p: Panel, series: Series[], o: { yMin?: number; yMax?: number } = {}): string {
  const pts = series.flatMap((s) => s.points).filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
  const xs = pts.map((q) => q[0]);
  const ys = pts.map((q) => q[1]);
  let x0 = xs.length ? Math.min(...xs) : 0;
  let x1 = xs.length ? Math.max(...xs) : 1;
  if (x1 === x0) x1 = x0 + 1;
  let y0 = o.yMin ?? (ys.length ? Math.min(...ys) : 0);
  let y1 = o.yMax ?? (ys.length ? Math.max(...ys) : 1);
  if (y1 === y0) [y0, y1] = [y0 - 1, y1 + 1];
  const pad = o.yMax === undefined ? (y1 - y0) * 0.08 : 0;
  y1 += pad;
  if (o.yMin === undefined) y0 -= pad;
  const sx = (v: number) => p.x + ((v - x0) / (x1 - x0)) * p.w;
  const sy = (v: number) => p.y + p.h - ((v - y0) / (y1 - y0)) * p.h;
  const xt = ticks(x0, x1, Math.min(8, Math.max(1, Math.round(x1 - x0)))).filter((v) => Number.isInteger(v));
  const out = [frame(p, xt, ticks(y0, y1, 5), sx, sy)];
  const legend: (() => void)[] = [];
  series.forEach((s, i) => {
    const good = s.points.filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
    if (good.length) {
      const d = good.map(([a, b], j) => `${j ? 'L' : 'M'}${sx(a).toFixed(1)},${sy(b).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2.5"${s.dash ? ' stroke-dasharray="6 4"' : ''}/>`);
      if (good.length <= 40) for (const [a, b] of good) out.push(`<circle cx="${sx(a).toFixed(1)}" cy="${sy(b).toFixed(1)}" r="3" fill="${s.color}"/>`);
    }
    legend.push(() => {
    const ly = p.y + 16 + i * 17;
    const lx = p.x + p.w - 150;
    out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 18}" y2="${ly - 4}" stroke="${s.color}" stroke-width="3"${s.dash ? ' stroke-dasharray="6 4"' : ''}/>`);
    const last = good.length ? good[good.length - 1][1] : NaN;
    out.push(text(lx + 24, ly, `${s.name}${Number.isFinite(last) ? ` (${fmt(last)})` : ''}`, { size: 11 }));
    });
  });
  if (series.length) out.push(`<rect x="${p.x + p.w - 156}" y="${p.y + 4}" width="152" height="${series.length * 17 + 6}" fill="#fff" fill-opacity="0.88" stroke="#ddd"/>`);
  for (const f of legend) f();
  return out.join('\n');
}

/** Histogram of values in [lo, hi] with `bins` bars; several overlaid series allowed. */
export function histogram(p: Panel, data: { name: string; color: string; values: ArrayLike<number> }[], lo = 0, hi = 1, bins = 20): string {
  const counts = data.map((d) => {
    const c = new Array<number>(bins).fill(0);
    for (let i = 0; i < d.values.length; i++) {
      const v = d.values[i];
      if (!Number.isFinite(v)) continue;
      c[Math.min(bins - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * bins)))]++;
    }
    return c;
  });
  const cmax = Math.max(1, ...counts.flat());
  const sx = (v: number) => p.x + ((v - lo) / (hi - lo)) * p.w;
  const sy = (v: number) => p.y + p.h - (v / cmax) * p.h * 0.92;
  const out = [frame(p, ticks(lo, hi, 5), ticks(0, cmax / 0.92, 4).filter((v) => Number.isInteger(v)), sx, sy)];
  const bw = p.w / bins;
  data.forEach((d, s) => {
    counts[s].forEach((c, i) => {
      if (!c) return;
      const y = sy(c);
      out.push(`<rect x="${(p.x + i * bw + 1).toFixed(1)}" y="${y.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(p.y + p.h - y).toFixed(1)}" fill="${d.color}" fill-opacity="${data.length > 1 ? 0.55 : 0.85}"/>`);
    });
    const vals = Array.from(d.values).filter(Number.isFinite);
    const mean = vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : NaN;
    const ly = p.y + 16 + s * 17;
    out.push(`<rect x="${p.x + 10}" y="${ly - 10}" width="12" height="12" fill="${d.color}"/>`);
    out.push(text(p.x + 28, ly, `${d.name} (mean ${Number.isFinite(mean) ? mean.toFixed(2) : '–'}, n=${vals.length})`, { size: 11 }));
  });
  return out.join('\n');
}

/** Scatter of (x, y) pairs in [lo, hi]² with the diagonal y = x (e.g. the combiner w against its target w*). */
export function scatter(p: Panel, data: { name: string; color: string; xs: ArrayLike<number>; ys: ArrayLike<number> }[], lo = 0, hi = 1): string {
  const sx = (v: number) => p.x + ((v - lo) / (hi - lo)) * p.w;
  const sy = (v: number) => p.y + p.h - ((v - lo) / (hi - lo)) * p.h;
  const out = [frame(p, ticks(lo, hi, 5), ticks(lo, hi, 5), sx, sy)];
  out.push(`<line x1="${sx(lo).toFixed(1)}" y1="${sy(lo).toFixed(1)}" x2="${sx(hi).toFixed(1)}" y2="${sy(hi).toFixed(1)}" stroke="#999" stroke-dasharray="4 4"/>`);
  data.forEach((d, s) => {
    const n = Math.min(d.xs.length, d.ys.length);
    let gap = 0;
    let m = 0;
    for (let i = 0; i < n; i++) {
      const a = d.xs[i], b = d.ys[i];
      if (!Number.isFinite(a) || !Number.isFinite(b)) continue;
      const ca = Math.min(hi, Math.max(lo, a)), cb = Math.min(hi, Math.max(lo, b));
      out.push(`<circle cx="${sx(ca).toFixed(1)}" cy="${sy(cb).toFixed(1)}" r="1.8" fill="${d.color}" fill-opacity="0.45"/>`);
      gap += Math.abs(a - b);
      m++;
    }
    const ly = p.y + 16 + s * 17;
    out.push(`<rect x="${p.x + 10}" y="${ly - 10}" width="12" height="12" fill="${d.color}"/>`);
    out.push(text(p.x + 28, ly, `${d.name} (mean |Δ| ${m ? (gap / m).toFixed(3) : '–'}, n=${m})`, { size: 11 }));
  });
  return out.join('\n');
}
