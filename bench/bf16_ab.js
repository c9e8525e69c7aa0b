// bf16 against fp32 in one process (docs/PERFORMANCE.md "bf16 kernels"): the paper-preset training
// step (DwcModel.trainStep, features given) and the trunks' forward + backward
// (trunk_forward_backward), setKernels({precision}) alternating fp32 / bf16 every round, so both
// see the same machine state. fp32 is the anchor. Prints medians with [min–max] and the speedup.
// Flags: --rounds N (default 5), --only step|small|resnet50 (comma list; default all).
// The bench suites' own --precision and the PyTorch autocast anchor: bench/run.js.
import { DwcModel } from '../lib/model.js';
import { addon, runOp, tensor } from '../lib/index.js';

const argv = process.argv.slice(2);
const opt = (name, dflt) => (argv.includes(`--${name}`) ? argv[argv.indexOf(`--${name}`) + 1] : dflt);
const rounds = Number(opt('rounds', 5));
const only = opt('only', 'step,small,resnet50').split(',');
const a = addon();
const why = a.precisionCheck('bf16');
if (why !== null) {
  console.error(`bf16_ab: bf16 cannot run here: ${why}`);
  process.exit(2);
}
console.log(`bf16_ab: ${a.info().isa}, ${a.info().threads} threads, ${rounds} rounds`);

let seed = 12345;
const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
const rand = (n, pos = false) => Float32Array.from({ length: n }, () => (pos ? rnd() : 2 * rnd() - 1));

// Times f() alternately in both precisions; f returns seconds (or null to time it here).
async function ab(name, f) {
  const t = { fp32: [], bf16: [] };
  for (const p of ['fp32', 'bf16']) a.setKernels({ precision: p }), await f(); // warm-up: primitives, arenas
  for (let r = 0; r < rounds; r++)
    for (const p of ['fp32', 'bf16']) {
      a.setKernels({ precision: p });
      const t0 = process.hrtime.bigint();
      const s = await f();
      t[p].push(s ?? Number(process.hrtime.bigint() - t0) / 1e9);
    }
  a.setKernels({ precision: 'fp32' });
  const q = (v) => {
    const s = [...v].sort((x, y) => x - y);
    return { med: s[s.length >> 1], lo: s[0], hi: s[s.length - 1] };
  };
  const f32 = q(t.fp32), b16 = q(t.bf16);
  const fmt = (x) => `${x.med.toFixed(3)} s [${x.lo.toFixed(3)}–${x.hi.toFixed(3)}]`;
  console.log(`${name.padEnd(34)} fp32 ${fmt(f32)}   bf16 ${fmt(b16)}   speedup ${(f32.med / b16.med).toFixed(2)}x`);
}

if (only.includes('step')) {
  const B = 32, L = 16, C = 2048, H = 7, W = 7, vocab = 5000;
  const lengths = Int32Array.from({ length: B }, (_, i) => (i === 0 ? L : 4 + Math.floor(rnd() * (L - 3))));
  const tokens = Int32Array.from({ length: B * L }, (_, k) => (k % L < lengths[Math.floor(k / L)] ? 4 + Math.floor(rnd() * (vocab - 4)) : 0));
  const batch = {
    B, eImg: rand(B * 1024), eTxt: rand(B * 1024), eTarget: rand(B * 1024), fmap: rand(B * C * H * W, true), fmapTarget: rand(B * C * H * W, true),
    H, W, tokens, L, lengths, labels: Int32Array.from({ length: B }, (_, i) => i),
  };
  const model = new DwcModel({ Dc: 1024, D: 1024, C, E: 512, vocab }, { seed: 0 });
  await ab('step (paper preset, B=32)', async () => {
    await model.trainStep(batch);
    return null;
  });
}
for (const [name, kind, N, S, repeat] of [
  ['small', 0, 32, 64, 3],
  ['resnet50', 1, 8, 224, 2],
]) {
  if (!only.includes(name)) continue;
  const attrs = { kind, repeat, input_grad: 0 };
  const x = tensor(rand(N * 3 * S * S), [N, 3, S, S]);
  const { y } = runOp('trunk_forward_backward', { x }, { ...attrs, repeat: 1 });
  const dy = tensor(rand(y.shape.reduce((p, d) => p * d, 1)), y.shape);
  await ab(`${name} trunk fwd+bwd (N=${N}, ${S}²)`, () => {
    const ms = runOp('trunk_forward_backward', { x, dy }, attrs).ms.toArray();
    let s = 0;
    for (let r = 1; r < repeat; r++) s += ms[2 * r] + ms[2 * r + 1]; // after the in-call warm-up
    return s / (repeat - 1) / 1000;
  });
}
