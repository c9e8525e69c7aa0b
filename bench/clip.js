// npm run bench -- clip [--preset b32|small]. Native CLIP benchmarks (issue #13): a ViT-B/32-shaped CLIP (random weights, no download) —
// image embedding, text embedding, and one fine-tuning step (forward + backward through both
// towers + Adam) — next to our PyTorch reference (scripts/reference/clip_ref.py, plain ops) in
// the same run (bench/clip_torch.py). Median after warm-up. Batches of 32 (b32). GFLOP/s are
// analytic: 2·MACs of the patch conv, every block's projections and MLP (12·w² per token) and
// attention (2·T·w per token); backward = 2× forward. Texts count the tokens up to each text's
// EOT (what the causal text tower has to compute; the engine runs no more, PyTorch runs all 77):
// the bench texts have 2..77 tokens, and "full texts" are all 77 tokens long (nothing to skip).
// peak_rss_mib: the process's peak resident set after the case (monotone over the cases).
// Flags: --preset b32|small, --rounds N, --json, --precision bf16 (each round: the engine in bf16
// and fp32, the reference in fp32 and under bf16 autocast; common.js emitBf16; no feature extraction).
// Feature extraction (issue #13 item 7): --feature-images N (default 10,000; 0 skips) distinct
// synthetic JPEGs of 320×256 decoded, preprocessed (PIL-exact bicubic, or --resample sharp) and
// embedded (Clip.embedImages, batches of 32, the next batch decoded while one embeds): images/s,
// printed next to the embedding-only rate of the same batch size (pixels already in memory).
// --only features skips the other cases.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { Clip } from '../lib/index.js';
import { mapLimit, defaultConcurrency } from '../lib/data/index.js';
import { expectedShapes } from '../lib/clip/weights.js';
import { args, emit, flag, header, rounds, roundsSummary, runTorchAnchor, saveResults, sgemmPeak, timeIt, torchVersion, wantJson, bf16, gemmPeak, atPrecision, bf16Calls, bf16Summary, emitBf16, AUTOCAST_FLAG } from './common.js';

const suite = 'clip';
const PRESETS = {
  b32: { embedDim: 512, resolution: 224, patchSize: 32, grid: 7, visionWidth: 768, visionLayers: 12, visionHeads: 12, contextLength: 77, vocabSize: 49408,
    textWidth: 512, textLayers: 12, textHeads: 8, nImg: 32, nTxt: 32, nTrain: 32 },
  small: { embedDim: 128, resolution: 64, patchSize: 16, grid: 4, visionWidth: 256, visionLayers: 3, visionHeads: 4, contextLength: 24, vocabSize: 500,
    textWidth: 192, textLayers: 3, textHeads: 3, nImg: 16, nTxt: 16, nTrain: 8 },
};
const pi = args.indexOf('--preset');
const preset = pi >= 0 ? args[pi + 1] : 'b32';
const P = PRESETS[preset];
if (!P) throw new Error(`--preset must be one of ${Object.keys(PRESETS).join(', ')}`);
header(`clip (${preset}${bf16 ? ', bf16 and fp32' : ''})`);
const peak = await sgemmPeak();
const peakBf16 = bf16 ? await gemmPeak({ precision: 'bf16' }) : null; // measured next to the fp32 peak

let seed = 12345;
const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296) * 2 - 1;
const arch = { image: 'vit', naming: 'openai', activation: 'quick_gelu', ...P };
const tensors = new Map();
for (const [name, shape] of expectedShapes(arch)) {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  const isLnW = /ln_\w+\.weight$|ln_final\.weight$/.test(name);
  const a = shape.length === 2 ? Math.sqrt(3 / shape[shape.length - 1]) : 0.02;
  for (let i = 0; i < n; i++) d[i] = name === 'logit_scale' ? Math.log(1 / 0.07) : isLnW ? 1 + 0.1 * rnd() : a * rnd();
  tensors.set(name, { dtype: 'F32', shape, data: d });
}
const clip = Clip.fromTensors(tensors);
tensors.clear();
const R = P.resolution, L = P.contextLength;
const pixels = (n) => Float32Array.from({ length: n * 3 * R * R }, rnd);
const textLen = (i, full) => (full ? L : 2 + ((i * 7 + 3) % (L - 1)));
const ids = (n, full = false) => {
  const a = new Int32Array(n * L);
  for (let i = 0; i < n; i++) {
    const len = textLen(i, full);
    a[i * L] = P.vocabSize - 2;
    for (let t = 1; t < len - 1; t++) a[i * L + t] = 1 + Math.floor(((rnd() + 1) / 2) * (P.vocabSize - 4));
    a[i * L + len - 1] = P.vocabSize - 1;
  }
  return a;
};

// Analytic forward MACs of a tower over n items.
const towerMacs = (n, T, w, layers) => n * T * layers * (12 * w * w + 2 * T * w);
const imgMacs = (n) => n * P.grid * P.grid * 3 * P.patchSize ** 2 * P.visionWidth + towerMacs(n, P.grid * P.grid + 1, P.visionWidth, P.visionLayers);
// texts: each text's tokens up to its EOT (causal: nothing after it reaches the pooled state)
const txtMacs = (n, full = false) => Array.from({ length: n }, (_, i) => towerMacs(1, textLen(i, full), P.textWidth, P.textLayers)).reduce((a, b) => a + b, 0);

const px = pixels(Math.max(P.nImg, P.nTrain));
const tk = ids(Math.max(P.nTxt, P.nTrain));
const tkFull = ids(P.nTxt, true);
const pxTrain = px.subarray(0, P.nTrain * 3 * R * R);
const tkTrain = tk.subarray(0, P.nTrain * L);
const cases = [
  { name: `clip ${preset} embed images N=${P.nImg}`, key: 'embed_images', flops: 2 * imgMacs(P.nImg), run: () => clip.embedImagesTensor(px.subarray(0, P.nImg * 3 * R * R), { batchSize: P.nImg }) },
  { name: `clip ${preset} embed texts N=${P.nTxt}`, key: 'embed_texts', flops: 2 * txtMacs(P.nTxt), run: () => clip.embedTokenIds(tk.subarray(0, P.nTxt * L), { batchSize: P.nTxt }) },
  { name: `clip ${preset} embed full texts N=${P.nTxt}`, key: 'embed_texts_full', flops: 2 * txtMacs(P.nTxt, true), run: () => clip.embedTokenIds(tkFull, { batchSize: P.nTxt }) },
  { name: `clip ${preset} train step N=${P.nTrain}`, key: 'train_step', flops: 3 * 2 * (imgMacs(P.nTrain) + txtMacs(P.nTrain)), run: () => clip.trainStep(pxTrain, tkTrain, 1e-6) },
];
// --only features: just the feature-extraction figure (the embedding-only rate is still measured beside it)
const oi = args.indexOf('--only');
const onlyFeatures = oi >= 0 && args[oi + 1] === 'features';
if (oi >= 0 && !onlyFeatures) throw new Error('--only takes: features');
const tv = onlyFeatures ? null : torchVersion();
const anchorScript = new URL('./clip_torch.py', import.meta.url).pathname;
const anchorArgs = [preset, String(P.nImg), String(P.nTxt), String(P.nTrain)];
if (bf16) {
  if (onlyFeatures) throw new Error('--precision bf16 times the embedding and training cases; --only features is fp32 only');
  const bRuns = cases.map(() => []);
  for (let r = 0; r < rounds; r++) {
    const af = tv ? runTorchAnchor(anchorScript, anchorArgs) ?? {} : {};
    const ab = tv ? runTorchAnchor(anchorScript, [...anchorArgs, AUTOCAST_FLAG]) ?? {} : {};
    for (const [i, c] of cases.entries()) {
      const calls0 = bf16Calls();
      const b = await atPrecision('bf16', () => timeIt(c.run, { warmup: 1, reps: 3 }));
      const calls = bf16Calls() - calls0;
      const f = await timeIt(c.run, { warmup: 1, reps: 3 });
      bRuns[i].push({ bf16_s: b, fp32_s: f, anchor_fp32_s: af[c.key] ?? null, anchor_autocast_s: ab[c.key] ?? null, bf16_calls: calls });
    }
  }
  for (const [i, c] of cases.entries())
    emitBf16({ suite, name: c.name, flops: c.flops, sum: bf16Summary(bRuns[i]), peakBf16, peakFp32: peak, anchorName: `pytorch-${tv}-cpu (clip_ref.py)`,
      extra: { arena_bytes: clip.stats().arenaBytes, arena_grows: clip.stats().arenaGrows } });
  if (!tv) console.log('PyTorch not found (/usr/bin/python3 -c "import torch"): no anchor ratios');
  saveResults(suite);
  process.exit(0);
}
const runs = cases.map(() => []);
for (let r = 0; r < (onlyFeatures ? 0 : rounds); r++) {
  const anchor = tv ? runTorchAnchor(anchorScript, anchorArgs) ?? {} : {};
  for (const [i, c] of cases.entries()) {
    const s = await timeIt(c.run, { warmup: 1, reps: 3 });
    runs[i].push({ engine_s: s, anchor_s: anchor[c.key] ?? null });
    c.rss = Math.max(c.rss ?? 0, process.resourceUsage().maxRSS / 1024);
  }
}
for (const [i, c] of (onlyFeatures ? [] : cases).entries()) {
  const sum = roundsSummary(runs[i]);
  emit({ suite, name: c.name, engine_s: sum.engine_s, gflops: c.flops / sum.engine_s / 1e9, peak_gflops: peak,
    ...(sum.anchor_s ? { anchor: `pytorch-${tv}-cpu (clip_ref.py)`, anchor_s: sum.anchor_s } : {}),
    extra: { arena_bytes: clip.stats().arenaBytes, arena_grows: clip.stats().arenaGrows, peak_rss_mib: Math.round(c.rss),
      ...(rounds > 1 ? { median_round_ratio: sum.median_round_ratio } : {}) } });
  if (!wantJson) console.log(`${''.padEnd(44)} peak RSS ${Math.round(c.rss)} MiB`);
}
const nFeat = Math.floor(flag('feature-images', 10000));
if (nFeat > 0) {
  const ri = args.indexOf('--resample');
  const resample = ri >= 0 ? args[ri + 1] : 'pil';
  const dir = mkdtempSync(join(tmpdir(), 'dwc-bench-clip-features-'));
  try {
    const W = 320, H = 256;
    const paths = Array.from({ length: nFeat }, (_, i) => join(dir, `${i}.jpg`));
    if (!wantJson) console.log(`writing ${nFeat} synthetic ${W}x${H} JPEGs to ${dir} …`);
    await mapLimit(paths, defaultConcurrency(), async (p, i) => {
      // a colour gradient with a block whose place and colour depend on i: every file differs
      const raw = Buffer.alloc(W * H * 3);
      const c = [(i * 37) % 256, (i * 91) % 256, (i * 53) % 256];
      const bx = (i * 13) % (W - 64), by = (i * 29) % (H - 64);
      for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
        const o = 3 * (y * W + x);
        const inBlock = x >= bx && x < bx + 64 && y >= by && y < by + 64;
        raw[o] = inBlock ? c[0] : (x * 255) / W;
        raw[o + 1] = inBlock ? c[1] : (y * 255) / H;
        raw[o + 2] = inBlock ? c[2] : ((x + y) * 127) / (W + H);
      }
      await sharp(raw, { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality: 90 }).toFile(p);
    });
    const bs = 32;
    await clip.embedImages(paths.slice(0, Math.min(nFeat, bs)), { batchSize: bs, resample }); // warm-up
    const t0 = process.hrtime.bigint();
    let last = 0;
    await clip.embedImages(paths, { batchSize: bs, resample, onProgress: (d, n) => {
      if (!wantJson && process.stderr.isTTY && d - last >= 256) { last = d; process.stderr.write(`\r  features ${d}/${n}`); }
    } });
    const featS = Number(process.hrtime.bigint() - t0) / 1e9;
    if (!wantJson && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    const embS = await timeIt(() => clip.embedImagesTensor(px.subarray(0, Math.min(P.nImg, bs) * 3 * R * R), { batchSize: bs }), { warmup: 1, reps: 3 });
    const embRate = Math.min(P.nImg, bs) / embS;
    const rate = nFeat / featS;
    emit({ suite, name: `clip ${preset} features N=${nFeat} (${resample})`, engine_s: featS, gflops: (2 * imgMacs(nFeat)) / featS / 1e9, peak_gflops: peak,
      extra: { images_per_s: rate, embed_only_images_per_s: embRate, decode_share: Math.max(0, 1 - rate / embRate), resample, source: `${W}x${H} jpeg` } });
    if (!wantJson) console.log(`  feature extraction: ${rate.toFixed(1)} images/s (decode + preprocess + embed)   embedding only: ${embRate.toFixed(1)} images/s`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
if (!tv && !onlyFeatures) console.log('PyTorch not found (/usr/bin/python3 -c "import torch"): no anchor ratios');
if (!wantJson) console.log(`arena ${(clip.stats().arenaBytes / 2 ** 20).toFixed(0)} MiB, grown ${clip.stats().arenaGrows}x (warm-up only)`);
saveResults(suite);
