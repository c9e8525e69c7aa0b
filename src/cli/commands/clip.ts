// `dwc-native clip …`: the CLIP command group (CLIP-SPEC.md). `clip tokenize` prints CLIP's
// input_ids for texts (src/clip/tokenizer.ts). Other CLIP subcommands attach to the Command that
// registerClip returns (e.g. `clip trace`).
import type { Command } from 'commander';
import { ClipTokenizer } from '../../clip/tokenizer.js';
import { addClipTrace } from './clip_trace.js';
import { int } from '../options.js';

interface TokenizeFlags {
  vocab: string;
  context: number;
  truncate?: boolean;
  json?: boolean;
}

/** Adds the `clip` group with `clip tokenize` to the program and returns the group. */
export function registerClip(program: Command): Command {
  const clip = program
    .command('clip')
    .description('CLIP tools: tokenize texts as CLIP does; trace one CLIP loss and its gradients (the parity tool)');
  clip
    .command('tokenize')
    .description(
      "CLIP's byte-level BPE: each TEXT becomes [<|startoftext|>] + ids + [<|endoftext|>], zero-padded to the context length " +
        '(html-unescaped twice, whitespace collapsed, lower-cased; without ftfy, see docs/CLIP-TOKENIZER.md)',
    )
    .argument('<text...>', 'one or more texts (quote each)')
    .requiredOption('--vocab <path>', "OpenAI's bpe_simple_vocab_16e6.txt.gz, a Hugging Face vocab.json (merges.txt beside it), or a folder with either")
    .option('--context <n>', 'row length', int, 77)
    .option('--truncate', 'cut over-long texts (the last kept id becomes <|endoftext|>) instead of failing')
    .option('--json', 'print one JSON object {"input_ids": [[...], ...]}')
    .addHelpText('after', '\nExample:\n  dwc-native clip tokenize --vocab bpe_simple_vocab_16e6.txt.gz --json "a photo of a cat" "a red dress"\n')
    .action((texts: string[], f: TokenizeFlags) => {
      const tok = ClipTokenizer.load(f.vocab);
      const flat = tok.tokenize(texts, { context: f.context, truncate: f.truncate });
      const rows: number[][] = [];
      for (let i = 0; i < texts.length; i++) rows.push(Array.from(flat.subarray(i * f.context, (i + 1) * f.context)));
      if (f.json) {
        console.log(JSON.stringify({ input_ids: rows }));
        return;
      }
      console.log(`vocabulary ${f.vocab}: ${tok.vocabSize} tokens, <|startoftext|> = ${tok.sotId}, <|endoftext|> = ${tok.eotId}, context ${f.context}`);
      rows.forEach((row, i) => {
        const used = row.slice(0, Math.min(tok.encode(texts[i]).length + 2, f.context));
        const pieces = used.map((id) => `${id}:${JSON.stringify(tok.idToToken(id) ?? '?')}`);
        console.log(`[${i}] ${JSON.stringify(texts[i])} → ${used.length} tokens (+${f.context - used.length} padding)`);
        console.log(`    ${used.join(' ')}`);
        console.log(`    ${pieces.join(' ')}`);
      });
    });
  return clip;
}

export function register(program: Command): void {
  addClipTrace(registerClip(program));
}
