// One full training iteration (spec §6) at the paper preset (spec §12: B = 32, Dc = D = 1024,
// C = 2048 on 7×7, L = 16, E = 512, vocab 5000; features given, trunk bypassed), dropout on,
// default options. Median after warm-up, next to the PyTorch reference (bench/step_torch.py).
// FLOPs are analytic (2mnk per GEMM, convs as GEMMs, backward = 2× forward).
// Flags: --reps N (default 5), --warmup N (2), --B N, --rounds N (1: engine and PyTorch timed
// alternately N times, medians reported), --json, --precision bf16 (each round: the engine in bf16
// and fp32, PyTorch in fp32 and under bf16 autocast; common.js emitBf16).
import { DwcModel } from '../lib/model.js';
import { paperBatch, args, flag, header, rounds, roundsSummary, sgemmPeak, timeIt, emit, saveResults, runTorchAnchor, torchVersion, wantJson, bf16, gemmPeak, atPrecision, bf16Calls, bf16Summary, emitBf16, AUTOCAST_FLAG } from './common.js';

const suite = 'step';
const reps = flag('reps', 5);
const warmup = flag('warmup', 2);
const P = { B: flag('B', 32), Dc: 1024, D: 1024, C: 2048, H: 7, W: 7, L: 16, E: 512, vocab: 5000 };
header(`step (paper preset, B=${P.B}${bf16 ? ', bf16 and fp32' : ''})`);

// ---- analytic FLOPs of one iteration ----
function inceptionFlops(cin, cout, K, positions) {
  // 1×1 convs: in→(3/8 + 1/2 + 1/4 + 1/8)·out; k-convs: out/2→out/4, out/4→out/8, out/8→out/4
  return 2 * positions * (1.25 * cin * cout + K * (3 / 16) * cout * cout);
}
function iterationFlops({ B, Dc, D, C, H, W, L, E }) {
  const Pn = H * W;
  const lin = (n, i, o) => 2 * n * i * o;
  // global forward (query + target)
  const fG = 3 * lin(B, Dc, D) + 2 * (lin(B, 2 * D, D) + lin(B, D, D)) + lin(B, 2 * D, D) + lin(B, D, 1);
  // local forward (query + target)
  const fL =
    inceptionFlops(C, D, 9, B * Pn) + // imgconv
    inceptionFlops(2 * D, C, 9, B * Pn) + // imgatt
    inceptionFlops(D, C, 9, B * Pn) + // txt2img
    inceptionFlops(2 * D, D, 3, B * L) + // txtatt
    inceptionFlops(D, D, 3, B * L) + // img2txt
    L * lin(B, E + D, 4 * D) + // LSTM
    3 * 2 * B * L * D * Pn + // S, Ŝ, Î
    2 * lin(B, C, D) + lin(B, D, D) + lin(B, 2 * D, D) + lin(B, D, 1);
  // steps: 1 local fwd, 2 global fwd+bwd, 3 global fwd, 4 local fwd+bwd. The reference does
  // 4 local forward-equivalents; the engine reuses step 1's local forward in step 4 (the work
  // before the combiner, ~all of fL), so it does 3: GFLOP/s below counts the work done.
  return { total: 4 * fG + 3 * fL, reference: 4 * fG + 4 * fL, global: 4 * fG, local: 3 * fL };
}


const peak = await sgemmPeak();
const peakBf16 = bf16 ? await gemmPeak({ precision: 'bf16' }) : null; // measured next to the fp32 peak
const model = new DwcModel({ Dc: P.Dc, D: P.D, C: P.C, E: P.E, vocab: P.vocab }, { seed: 0 });
const batch = paperBatch(P);
let grows0 = 0;
let n = 0;
const step = async () => {
  await model.trainStep(batch);
  if (++n === warmup) grows0 = model.stats().arenaGrows;
};
const flops = iterationFlops(P);
const tv = torchVersion();
const anchorScript = new URL('./step_torch.py', import.meta.url).pathname;
const anchorArgs = ['--B', String(P.B), '--reps', String(reps), '--warmup', String(warmup)];
const pairs = [];
const bf16Rounds = [];
for (let r = 0; r < rounds && bf16; r++) {
  const calls0 = bf16Calls();
  const b = await atPrecision('bf16', () => timeIt(step, { warmup: r === 0 ? warmup : 1, reps }));
  const calls = bf16Calls() - calls0;
  const f = await timeIt(step, { warmup: 1, reps });
  const af = tv ? runTorchAnchor(anchorScript, anchorArgs)?.iteration_s ?? null : null;
  const ab = tv ? runTorchAnchor(anchorScript, [...anchorArgs, AUTOCAST_FLAG])?.iteration_s ?? null : null;
  bf16Rounds.push({ bf16_s: b, fp32_s: f, anchor_fp32_s: af, anchor_autocast_s: ab, bf16_calls: calls });
  if (rounds > 1 && !wantJson) console.log(`  round ${r + 1}/${rounds}: engine bf16 ${b.toFixed(3)} s, fp32 ${f.toFixed(3)} s` + (af ? `, PyTorch fp32 ${af.toFixed(3)} s, autocast ${ab?.toFixed(3)} s` : ''));
}
for (let r = 0; r < rounds && !bf16; r++) {
  const e = await timeIt(step, { warmup: r === 0 ? warmup : 1, reps });
  let a = null;
  if (tv) a = runTorchAnchor(anchorScript, anchorArgs)?.iteration_s ?? null;
  pairs.push({ engine_s: e, anchor_s: a });
  if (rounds > 1 && !wantJson) console.log(`  round ${r + 1}/${rounds}: engine ${e.toFixed(3)} s` + (a ? `, PyTorch ${a.toFixed(3)} s, ratio ${(e / a).toFixed(3)}` : ''));
}
const st = model.stats();
const rssMiB = process.resourceUsage().maxRSS / 1024;
const stepExtra = {
  gflop: flops.total / 1e9,
  gflop_reference: flops.reference / 1e9,
  gflop_global: flops.global / 1e9,
  gflop_local: flops.local / 1e9,
  peak_rss_mib: rssMiB,
  arena_mib: st.arenaBytes / 2 ** 20,
  arena_grew_after_warmup: st.arenaGrows !== grows0,
  preset: P,
};
if (bf16) emitBf16({ suite, name: `iteration paper B=${P.B}`, flops: flops.total, sum: bf16Summary(bf16Rounds), peakBf16, peakFp32: peak, anchorName: `pytorch-${tv}-cpu`, extra: stepExtra });
const summary = bf16 ? null : roundsSummary(pairs);
const engine_s = summary?.engine_s;
const anchor = summary?.anchor_s ? { anchor: `pytorch-${tv}-cpu`, anchor_s: summary.anchor_s } : null;
if (!bf16) emit({
  suite,
  name: `iteration paper B=${P.B}`,
  engine_s,
  gflops: flops.total / engine_s / 1e9,
  peak_gflops: peak,
  ...(anchor ?? {}),
  extra: {
    ...stepExtra,
    ...(rounds > 1 ? { rounds: summary.rounds, median_round_ratio: summary.median_round_ratio } : {}),
  },
});
if (!args.includes('--json'))
  console.log(`  ${(flops.total / 1e9).toFixed(1)} GFLOP per iteration (the reference model does ${(flops.reference / 1e9).toFixed(1)}); peak RSS ${rssMiB.toFixed(0)} MiB; arena ${(st.arenaBytes / 2 ** 20).toFixed(0)} MiB` +
    `${st.arenaGrows !== grows0 ? ' (GREW after warm-up!)' : ', no growth after warm-up'}`);
saveResults(suite);
