// Trunk benchmarks (issue 5 item 7): ResNet-50 (conv1 … layer4, train-mode BN) forward+backward
// at batch 8, 224×224, and the small trunk at batch 32, 64×64, next to torchvision in the same
// run (bench/trunk_torch.py). Engine time = forward + backward of one slot as measured inside the
// op (the op's `ms`; weight init and output copies excluded), median over repeats after the
// first (warm-up: arena and workspaces grow once). GFLOP/s are analytic: 2·MACs of every conv,
// backward = 2× forward (dW and dx; the stem's dx is skipped by both engines).
import { runOp, tensor } from '../lib/index.js';
import { header, sgemmPeak, randTensor, emit, saveResults, runTorchAnchor, torchVersion, median } from './common.js';

const suite = 'trunk';
header('trunk');
const peak = await sgemmPeak();

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
const anchor = tv ? runTorchAnchor(new URL('./trunk_torch.py', import.meta.url).pathname) ?? {} : {};

async function bench(name, kind, N, H, W, repeat) {
  const attrs = { kind: kind === 'resnet50' ? 1 : 0, repeat };
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
  const s = median(fb);
  const flops = 3 * 2 * convMacs(kind, N, H, W);
  const key = `${kind === 'resnet50' ? 'resnet50' : 'small'}_fwd_bwd`;
  const row = emit({ suite, name: `${name} N=${N} ${H}x${W} fwd+bwd`, engine_s: s, gflops: flops / s / 1e9, peak_gflops: peak,
    ...(anchor[key] ? { anchor: anchorName, anchor_s: anchor[key] } : {}),
    extra: { fwd_s: median(Array.from({ length: repeat - 1 }, (_, r) => ms[2 * (r + 1)] / 1000)), out_channels: C, arena_grows: grows,
      anchor_gflops: anchor[key] ? flops / anchor[key] / 1e9 : null } });
  for (const t of [...Object.values(o), x, y, dy]) t.release();
  return row;
}

const rows = [await bench('resnet50 trunk', 'resnet50', 8, 224, 224, 4), await bench('small trunk', 'small', 32, 64, 64, 6)];
for (const r of rows)
  console.log(`${r.name}: forward ${(r.fwd_s * 1000).toFixed(0)} ms, arena grows ${r.arena_grows.join(',')} (flat after warm-up)` +
    (r.ratio ? `, torchvision ${(r.anchor_s * 1000).toFixed(0)} ms = ${r.anchor_gflops.toFixed(1)} GFLOP/s, ratio ${r.ratio.toFixed(3)}` : ''));
if (!tv) console.log('PyTorch not found (/usr/bin/python3 -c "import torch"): no anchor ratios');
saveResults(suite);
