// CPU-time driver (not a suite): node bench/trunk_cpu.mjs small|resnet [repeat] [slots] — process
// CPU time per fwd+bwd repeat (difference of a repeat-R and a repeat-1 op, so warm-up cancels),
// robust to a loaded machine where wall times are not (use with DWC_NUM_THREADS=1). slots = 2
// runs the trainer's pattern (reference + target images: forward 0, forward 1, backward 1, backward 0).
import { runOp } from '../lib/index.js';
import { randTensor } from './common.js';
const kind = process.argv[2] === 'resnet' ? 1 : 0;
const repeat = +(process.argv[3] || 6);
const slots = +(process.argv[4] || 1);
const [N, H] = kind ? [8, 224] : [32, 64];
const x = randTensor([N, 3, H, H], 3);
const { y } = runOp('trunk_forward_backward', { x }, { kind, repeat: 1, input_grad: 0 });
const dy = randTensor(y.shape, 4);
const inputs = slots === 2 ? { x, dy, x2: randTensor([N, 3, H, H], 5), dy2: randTensor(y.shape, 6) } : { x, dy };
const cpu = (r) => {
  const t0 = process.cpuUsage();
  const o = runOp('trunk_forward_backward', inputs, { kind, repeat: r, input_grad: 0 });
  const t = process.cpuUsage(t0);
  for (const v of Object.values(o)) v.release();
  return (t.user + t.system) / 1000;
};
cpu(1);
const a = cpu(1), b = cpu(repeat + 1);
console.log(`${kind ? 'resnet' : 'small'} slots ${slots}: ${((b - a) / repeat).toFixed(1)} ms CPU per repeat (fwd+bwd)`);
