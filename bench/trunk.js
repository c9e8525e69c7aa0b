// Trunk benchmarks (issue 5 item 7): ResNet-50 (conv1 … layer4, train-mode BN) forward+backward
// at batch 8, 224×224, and the small trunk at batch 32, 64×64, next to torchvision in the same
// run (bench/trunk_torch.py). Engine time = forward + backward of one slot as measured inside the
// op (the op's `ms`; weight init and output copies excluded), median over repeats after the
// first (warm-up: arena and workspaces grow once). GFLOP/s are analytic: 2·MACs of every conv,
// backward = 2× forward (dW and dx; the stem's dx is skipped by both engines).
// Flags: --rounds N (1: engine and torchvision timed alternately N times, medians reported), --json,
// --precision bf16 (each round: the engine in bf16 and fp32, torchvision in fp32 and under bf16
// autocast; common.js emitBf16).
import { runOp } from '../lib/index.js';
import { header, sgemmPeak, randTensor, emit, saveResults, runTorchAnchor, torchVersion, median, rounds, roundsSummary, wantJson, bf16, gemmPeak, atPrecision, bf16Calls, bf16Summary, emitBf16, AUTOCAST_FLAG } from './common.js';

const suite = 'trunk';
header(bf16 ? 'trunk (bf16 and fp32)' : 'trunk');
const peak = await sgemmPeak();
const peakBf16 = bf16 ? await gemmPeak({ precision: 'bf16' }) : null; // measured next to the fp32 peak

// Conv MACs of the trunks (mirrors native/model/trunk.cpp).
function convMacs(kind, N, H, W) {
  let macs = 0;
  const conv = (ci, co, k, s, p) => {
    H = Math.floor((H + 2 * p - k) / s) + 1;
    W = Math.floor((W + 2 * p - k) / s) + 1;
    macs += N * co * ci * k * k * H * W;
  };
  const size = () => [H, W];
  if (kind === 'resnet50') {
    conv(3, 64, 7, 2, 3);
    H = Math.floor((H + 2 - 3) / 2) + 1;
    W = Math.floor((W + 2 - 3) / 2) + 1;
    let cin = 64;
    [3, 4, 6, 3].forEach((blocks, i) => {
      const planes = 64 << i;
      for (let b = 0; b < blocks; b++) {
        const s = b === 0 && i > 0 ? 2 : 1;
        const [h0, w0] = size();
        conv(cin, planes, 1, 1, 0);
        conv(planes, planes, 3, s, 1);
        conv(planes, planes * 4, 1, 1, 0);
        if (b === 0) macs += N * cin * planes * 4 * Math.floor((h0 - 1) / s + 1) * Math.floor((w0 - 1) / s + 1);
        cin = planes * 4;
      }
    });
  } else {
    conv(3, 32, 3, 2, 1);
    let cin = 32;
    for (const [co, s] of [[64, 2], [128, 2], [256, 1]]) {
      conv(cin, co, 3, s, 1);
      conv(co, co, 3, 1, 1);
      macs += N * cin * co * H * W; // 1×1/s projection, output H×W
      cin = co;
    }
  }
  return macs;
}

const tv = torchVersion();
const anchorName = tv ? `pytorch-${tv}-cpu` : null;

// One engine measurement: median forward+backward seconds (and forward alone) over repeats after the first.
function measure(kind, N, H, W, repeat) {
  const attrs = { kind: kind === 'resnet50' ? 1 : 0, repeat, input_grad: 0 }; // no d(images), as in training
  const x = randTensor([N, 3, H, W], 3);
  const info = runOp('trunk_param_names', {}, attrs);
  const [C] = info.info.toArray();
  for (const t of Object.values(info)) t.release();
  const { y } = runOp('trunk_forward_backward', { x }, { ...attrs, repeat: 1 });
  const dy = randTensor(y.shape, 4);
  const o = runOp('trunk_forward_backward', { x, dy }, attrs);
  const ms = o.ms.toArray();
  const grows = Array.from(o.arena_grows.toArray());
  const fb = [];
  for (let r = 1; r < repeat; r++) fb.push((ms[2 * r] + ms[2 * r + 1]) / 1000);
  const fwd_s = median(Array.from({ length: repeat - 1 }, (_, r) => ms[2 * (r + 1)] / 1000));
  for (const t of [...Object.values(o), x, y, dy]) t.release();
  return { s: median(fb), fwd_s, C, grows };
}

const cases = [
  { name: 'resnet50 trunk', kind: 'resnet50', N: 8, H: 224, W: 224, repeat: 4, key: 'resnet50_fwd_bwd' },
  { name: 'small trunk', kind: 'small', N: 32, H: 64, W: 64, repeat: 6, key: 'small_fwd_bwd' },
];
const anchorScript = new URL('./trunk_torch.py', import.meta.url).pathname;
if (bf16) {
  const bRuns = cases.map(() => []);
  for (let r = 0; r < rounds; r++) {
    const af = tv ? runTorchAnchor(anchorScript) ?? {} : {};
    const ab = tv ? runTorchAnchor(anchorScript, [AUTOCAST_FLAG]) ?? {} : {};
    for (const [i, c] of cases.entries()) {
      const calls0 = bf16Calls();
      const b = await atPrecision('bf16', () => measure(c.kind, c.N, c.H, c.W, c.repeat));
      const calls = bf16Calls() - calls0;
      const f = measure(c.kind, c.N, c.H, c.W, c.repeat);
      bRuns[i].push({ bf16_s: b.s, fp32_s: f.s, anchor_fp32_s: af[c.key] ?? null, anchor_autocast_s: ab[c.key] ?? null, bf16_calls: calls, fwd_bf16_s: b.fwd_s, fwd_fp32_s: f.fwd_s });
      if (rounds > 1 && !wantJson) console.log(`  round ${r + 1}/${rounds} ${c.name}: engine bf16 ${(b.s * 1000).toFixed(1)} ms, fp32 ${(f.s * 1000).toFixed(1)} ms` + (af[c.key] ? `, torchvision fp32 ${(af[c.key] * 1000).toFixed(1)} ms, autocast ${((ab[c.key] ?? NaN) * 1000).toFixed(1)} ms` : ''));
    }
  }
  for (const [i, c] of cases.entries())
    emitBf16({ suite, name: `${c.name} N=${c.N} ${c.H}x${c.W} fwd+bwd`, flops: 3 * 2 * convMacs(c.kind, c.N, c.H, c.W), sum: bf16Summary(bRuns[i]), peakBf16, peakFp32: peak, anchorName: anchorName ?? 'pytorch',
      extra: { fwd_bf16_s: median(bRuns[i].map((x) => x.fwd_bf16_s)), fwd_fp32_s: median(bRuns[i].map((x) => x.fwd_fp32_s)) } });
  if (!tv) console.log('PyTorch not found (/usr/bin/python3 -c "import torch"): no anchor ratios');
  saveResults(suite);
  process.exit(0);
}
const runs = cases.map(() => []);
for (let r = 0; r < rounds; r++) {
  const anchor = tv ? runTorchAnchor(anchorScript) ?? {} : {};
  cases.forEach((c, i) => {
    const m = measure(c.kind, c.N, c.H, c.W, c.repeat);
    runs[i].push({ engine_s: m.s, anchor_s: anchor[c.key] ?? null, m });
    if (rounds > 1 && !wantJson)
      console.log(`  round ${r + 1}/${rounds} ${c.name}: engine ${(m.s * 1000).toFixed(1)} ms` + (anchor[c.key] ? `, torchvision ${(anchor[c.key] * 1000).toFixed(1)} ms, ratio ${(m.s / anchor[c.key]).toFixed(3)}` : ''));
  });
}

const rows = cases.map((c, i) => {
  const sum = roundsSummary(runs[i].map(({ engine_s, anchor_s }) => ({ engine_s, anchor_s })));
  const last = runs[i][runs[i].length - 1].m;
  const flops = 3 * 2 * convMacs(c.kind, c.N, c.H, c.W);
  return emit({ suite, name: `${c.name} N=${c.N} ${c.H}x${c.W} fwd+bwd`, engine_s: sum.engine_s, gflops: flops / sum.engine_s / 1e9, peak_gflops: peak,
    ...(sum.anchor_s ? { anchor: anchorName, anchor_s: sum.anchor_s } : {}),
    extra: { fwd_s: median(runs[i].map((x) => x.m.fwd_s)), out_channels: last.C, arena_grows: last.grows,
      anchor_gflops: sum.anchor_s ? flops / sum.anchor_s / 1e9 : null,
      ...(rounds > 1 ? { rounds: sum.rounds, median_round_ratio: sum.median_round_ratio } : {}) } });
});
for (const r of rows)
  console.log(`${r.name}: forward ${(r.fwd_s * 1000).toFixed(0)} ms, arena grows ${r.arena_grows.join(',')} (flat after warm-up)` +
    (r.ratio ? `, torchvision ${(r.anchor_s * 1000).toFixed(0)} ms = ${r.anchor_gflops.toFixed(1)} GFLOP/s, ratio ${r.ratio.toFixed(3)}` : '') +
    (r.median_round_ratio ? ` (median of the ${rounds} rounds' ratios ${r.median_round_ratio.toFixed(3)})` : ''));
if (!tv) console.log('PyTorch not found (/usr/bin/python3 -c "import torch"): no anchor ratios');
saveResults(suite);
