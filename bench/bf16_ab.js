// bf16 against fp32 in one process (docs/PERFORMANCE.md "bf16 kernels"): the paper-preset training
// step (DwcModel.trainStep, features given) and the trunks' forward + backward
// (trunk_forward_backward), setKernels({precision}) alternating fp32 / bf16 every round, so both
// see the same machine state. fp32 is the anchor. Prints medians with [min–max] and the speedup,
// of wall time and of the process's CPU time (user + system; on a shared machine the steadier one).
// Flags: --rounds N (default 5), --only step|small|resnet50 (comma list; default all),
// --bf16-gemm amx|onednn|both (the bf16 GEMM kernel, setKernels bf16Gemm; both: each bf16 round runs
// with both, alternating; default the engine's own).
// The bench suites' own --precision and the PyTorch autocast anchor: bench/run.js.
import { DwcModel } from '../lib/model.js';
import { addon, runOp, tensor } from '../lib/index.js';

const argv = process.argv.slice(2);
const opt = (name, dflt) => (argv.includes(`--${name}`) ? argv[argv.indexOf(`--${name}`) + 1] : dflt);
const rounds = Number(opt('rounds', 5));
const only = opt('only', 'step,small,resnet50').split(',');
const bf16Gemm = opt('bf16-gemm', null);
const a = addon();
const why = a.precisionCheck('bf16');
if (why !== null) {
  console.error(`bf16_ab: bf16 cannot run here: ${why}`);
  process.exit(2);
}

let seed = 12345;
const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
const rand = (n, pos = false) => Float32Array.from({ length: n }, () => (pos ? rnd() : 2 * rnd() - 1));

// The configurations timed in every round: fp32 first (the anchor), then bf16 with each kernel asked for.
const configs = [{ name: 'fp32', k: { precision: 'fp32' } }];
for (const g of bf16Gemm === 'both' ? ['amx', 'onednn'] : [bf16Gemm])
  configs.push({ name: g ? `bf16/${g}` : 'bf16', k: { precision: 'bf16', ...(g ? { bf16Gemm: g } : {}) } });
const defaults = a.setKernels();
console.log(`bf16_ab: ${a.info().isa}, ${a.info().threads} threads, ${rounds} rounds, bf16 GEMM kernel ${bf16Gemm ?? defaults.bf16Gemm}, bf16 backward-weights ${a.kernelStats().bf16BwdWeights}`);

// Times f() alternately in every configuration; f returns seconds (or null to time it here).
async function ab(name, f) {
  const t = Object.fromEntries(configs.map((c) => [c.name, { wall: [], cpu: [] }]));
  for (const c of configs) a.setKernels(c.k), await f(); // warm-up: primitives, arenas
  for (let r = 0; r < rounds; r++)
    for (const c of configs) {
      a.setKernels(c.k);
      const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
      const s = await f();
      const cu = process.cpuUsage(c0);
      const w = Number(process.hrtime.bigint() - t0) / 1e9;
      t[c.name].wall.push(s ?? w);
      // f's own figure covers part of the call: scale the CPU time by the same share
      t[c.name].cpu.push(((cu.user + cu.system) / 1e6) * ((s ?? w) / w));
    }
  a.setKernels({ precision: 'fp32', bf16Gemm: defaults.bf16Gemm });
  const q = (v) => {
    const s = [...v].sort((x, y) => x - y);
    return { med: s[s.length >> 1], lo: s[0], hi: s[s.length - 1] };
  };
  const fmt = (x) => `${x.med.toFixed(3)} s [${x.lo.toFixed(3)}–${x.hi.toFixed(3)}]`;
  const f32 = { wall: q(t.fp32.wall), cpu: q(t.fp32.cpu) };
  for (const c of configs.slice(1)) {
    const w = q(t[c.name].wall), cp = q(t[c.name].cpu);
    console.log(
      `${name.padEnd(34)} fp32 ${fmt(f32.wall)}   ${c.name} ${fmt(w)}   speedup ${(f32.wall.med / w.med).toFixed(2)}x` +
        `   | CPU time fp32 ${fmt(f32.cpu)}   ${c.name} ${fmt(cp)}   speedup ${(f32.cpu.med / cp.med).toFixed(2)}x`,
    );
  }
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
