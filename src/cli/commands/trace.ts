// `dwc-native trace` (spec §13): one training iteration on given weights and inputs, written
// as a safetensors file for comparison with a reference implementation.
import type { Command } from 'commander';
import { runTrace } from '../../trace.js';

interface TraceFlags {
  weights: string;
  inputs: string;
  out: string;
  dropout: boolean;
  masked: boolean;
  mutualTarget: string;
  detachSoftLabels?: boolean;
  seed: string;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('trace')
    .description('run one training iteration (spec §6) on given weights and inputs and write every output, loss, gradient and updated parameter')
    .requiredOption('--weights <file>', 'weights (safetensors, spec §9 names; dims are read from them)')
    .requiredOption('--inputs <file>', 'inputs (safetensors: global.e_img, global.e_txt, global.e_target, local.fmap, local.fmap_target (or local.images, local.images_target [B,3,Hi,Wi] when the weights hold a local.img_model.* trunk), local.tokens, local.lengths, labels)')
    .requiredOption('--out <file>', 'output safetensors file')
    .option('--no-dropout', 'dropout off (for parity)')
    .option('--unmasked', 'run attention, the LSTM and GeM over padded tokens (reference behaviour, spec §10)')
    .option('--mutual-target <which>', "the other stream's L_mut targets from the 'target' or the 'reference' image (spec §10)", 'target')
    .option('--detach-soft-labels', 'detach softmax(t tᵀ/τ) in the soft labels (spec §5)')
    .option('--seed <n>', 'seed of the dropout masks', '0')
    .option('--json', 'print one JSON object')
    .action(async (f: TraceFlags & { unmasked?: boolean }) => {
      if (f.mutualTarget !== 'reference' && f.mutualTarget !== 'target') throw new Error(`--mutual-target must be 'reference' or 'target', got '${f.mutualTarget}'`);
      const seed = Number(f.seed);
      if (!Number.isInteger(seed) || seed < 0) throw new Error(`--seed must be a non-negative integer, got '${f.seed}'`);
      const r = await runTrace(f.weights, f.inputs, f.out, {
        dropout: f.dropout,
        masked: !f.unmasked,
        mutualTarget: f.mutualTarget,
        detachSoftLabels: !!f.detachSoftLabels,
        seed,
      });
      if (f.json) console.log(JSON.stringify({ out: f.out, tensors: r.tensors.size, ignoredWeights: r.ignoredWeights }));
      else {
        console.log(`wrote ${f.out}: ${r.tensors.size} tensors`);
        if (r.ignoredWeights.length) console.log(`ignored weights not used by the engine: ${r.ignoredWeights.join(', ')}`);
      }
    });
}
