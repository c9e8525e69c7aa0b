// CPU-time driver (not a suite): node bench/step_cpu.mjs [steps] [warmup] — the paper step of
// bench/step.js (B = 32, features given) repeated; prints wall and process CPU ms per step after
// warm-up and the minor page faults of the timed steps. For A/B runs of two builds
// (DWC_NATIVE_ADDON=…/dwc_native.node) on a loaded machine, where one-thread CPU time
// (DWC_NUM_THREADS=1 OMP_NUM_THREADS=1) holds and wall times do not; DWC_PROFILE=1 adds the local
// stream's phases (native/model/inception.h).
import { DwcModel } from '../lib/model.js';
import { paperBatch } from './common.js';

const steps = +(process.argv[2] || 4);
const warmup = +(process.argv[3] || 2);
const P = { B: 32, Dc: 1024, D: 1024, C: 2048, H: 7, W: 7, L: 16, E: 512, vocab: 5000 };
const model = new DwcModel({ Dc: P.Dc, D: P.D, C: P.C, E: P.E, vocab: P.vocab }, { seed: 0 });
const batch = paperBatch(P);
for (let i = 0; i < warmup; i++) await model.trainStep(batch);
const f0 = process.resourceUsage().minorPageFault;
const c0 = process.cpuUsage();
const w0 = performance.now();
for (let i = 0; i < steps; i++) await model.trainStep(batch);
const c = process.cpuUsage(c0);
const wall = (performance.now() - w0) / steps;
console.log(`paper step x${steps}: wall ${wall.toFixed(1)} ms/step, CPU ${((c.user + c.system) / 1e3 / steps).toFixed(1)} ms/step, minor faults ${process.resourceUsage().minorPageFault - f0}`);
