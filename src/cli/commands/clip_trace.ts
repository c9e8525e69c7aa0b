// `dwc-native clip trace` (issue #13): the native CLIP's embeddings, logits, loss and gradients
// on given weights and inputs, for parity with PyTorch. Added to the `clip` command group.
import type { Command } from 'commander';
import { runClipTrace } from '../../clip/trace.js';

interface ClipTraceFlags {
  weights: string;
  inputs: string;
  out: string;
  activation?: string;
  json?: boolean;
}

export function addClipTrace(clip: Command): void {
  clip
    .command('trace')
    .description(
      'run the CLIP forward and backward (eval mode) on given weights and inputs and write image_embeds, text_embeds, ' +
        'logits_per_image, loss and grad.<name> of the loss for every trainable weight (in the file\'s own naming)',
    )
    .requiredOption('--weights <file>', 'CLIP weights: safetensors with OpenAI / open_clip or Hugging Face CLIPModel names (or a folder holding one)')
    .requiredOption('--inputs <file>', 'inputs: safetensors with pixel_values float32 [N,3,R,R] (already normalised) and input_ids int32 [N,ctx]')
    .requiredOption('--out <file>', 'output safetensors file (written atomically)')
    .option('--activation <name>', "MLP activation, 'quick_gelu' or 'gelu' (default: from the file's metadata or config, else quick_gelu)")
    .option('--json', 'print one JSON object')
    .action(async (f: ClipTraceFlags) => {
      if (f.activation !== undefined && f.activation !== 'quick_gelu' && f.activation !== 'gelu')
        throw new Error(`--activation must be 'quick_gelu' or 'gelu', got '${f.activation}'`);
      const r = await runClipTrace(f.weights, f.inputs, f.out, f.activation ? { activation: f.activation as 'quick_gelu' | 'gelu' } : {});
      if (f.json) console.log(JSON.stringify(r));
      else {
        console.log(`wrote ${f.out}: ${r.tensors} tensors (N = ${r.n}, loss ${r.loss.toFixed(6)}, ${r.naming} names)`);
        if (r.ignoredWeights.length) console.log(`ignored weights not used by the engine: ${r.ignoredWeights.join(', ')}`);
      }
    });
}
