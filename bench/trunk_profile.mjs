// Profiling driver (not a suite): node bench/trunk_profile.mjs small|resnet [repeat] — runs the
// trunk's fwd+bwd `repeat` times in one op and prints the per-repeat forward/backward ms.
import { runOp } from '../lib/index.js';
import { randTensor } from './common.js';
const kind = process.argv[2] === 'resnet' ? 1 : 0;
const repeat = +(process.argv[3] || 4);
const [N, H] = kind ? [8, 224] : [32, 64];
const x = randTensor([N, 3, H, H], 3);
const { y } = runOp('trunk_forward_backward', { x }, { kind, repeat: 1, input_grad: 0 });
const dy = randTensor(y.shape, 4);
const o = runOp('trunk_forward_backward', { x, dy }, { kind, repeat, input_grad: 0 });
const ms = Array.from(o.ms.toArray());
const rows = [];
for (let r = 0; r < repeat; r++) rows.push(`${ms[2 * r].toFixed(1)}+${ms[2 * r + 1].toFixed(1)}`);
if (process.env.VERBOSE) console.log(rows.join(" "));
const f = [], b = [];
for (let r = 1; r < repeat; r++) f.push(ms[2 * r]), b.push(ms[2 * r + 1]);
const st = (a) => { const s = [...a].sort((x, y) => x - y); return `min ${s[0].toFixed(1)} med ${s[s.length >> 1].toFixed(1)}`; };
console.log(`forward ${st(f)}, backward ${st(b)}`);
