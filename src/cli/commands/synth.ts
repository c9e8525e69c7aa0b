// `dwc-native synth`: writes the synthetic composed-retrieval benchmark (src/data/synth.ts).
import type { Command } from 'commander';
import { generateSynthetic, writePreview } from '../../data/synth.js';

interface SynthFlags {
  out: string;
  train: string;
  test: string;
  val?: string;
  size: string;
  seed: string;
  noise: string;
  textDominant: string;
  preview?: string;
  json?: boolean;
}

const num = (v: string, flag: string): number => {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new Error(`--${flag} must be a number, got '${v}'`);
  return n;
};

export function register(program: Command): void {
  program
    .command('synth')
    .description('generate the synthetic composed-retrieval benchmark (shapes scenes + modification texts) in the generic dataset format')
    .requiredOption('--out <dir>', 'output folder (images/ + dataset.json)')
    .option('--train <n>', 'training queries', '4000')
    .option('--test <n>', 'test queries (the gallery is every test image)', '1000')
    .option('--val <n>', 'validation queries, disjoint from test (default: as many as --test; 0 = none)')
    .option('--size <px>', 'image side in pixels (64, or 224 for the paper preset)', '64')
    .option('--seed <s>', 'seed: the same seed gives byte-identical files', '1')
    .option('--noise <rate>', 'fraction of TRAINING queries with a wrong or vague text (test queries are never noisy)', '0.2')
    .option('--text-dominant <rate>', 'fraction of text-dominant queries (the rest image-dominant)', '0.5')
    .option('--preview <sheet.png>', 'also write a PNG contact sheet of some queries (reference | text | target)')
    .option('--json', 'print the summary as one JSON object')
    .action(async (f: SynthFlags) => {
      const tty = process.stderr.isTTY;
      let last = '';
      const summary = await generateSynthetic({
        out: f.out,
        train: num(f.train, 'train'),
        test: num(f.test, 'test'),
        ...(f.val !== undefined ? { val: num(f.val, 'val') } : {}),
        size: num(f.size, 'size'),
        seed: num(f.seed, 'seed'),
        noise: num(f.noise, 'noise'),
        textDominant: num(f.textDominant, 'text-dominant'),
        onProgress: (phase, done, total) => {
          const pct = Math.floor((100 * done) / total);
          const line = `synth: ${phase} ${done}/${total} (${pct}%)`;
          if (tty) process.stderr.write(`\r${line}   `);
          else if (phase !== last || done === total) process.stderr.write(`${line}\n`);
          last = phase;
        },
      });
      if (tty) process.stderr.write('\n');
      if (f.preview) await writePreview(summary.out, f.preview);
      if (f.json) console.log(JSON.stringify({ ...summary, preview: f.preview ?? null }));
      else {
        console.log(`wrote ${summary.out}: ${summary.images} images (${summary.scenes} scenes, ${summary.size}x${summary.size}), ` +
          `${summary.queries.train} train queries (${summary.noisy} noisy), ${summary.queries.test} test queries, ${summary.queries.val} val queries, gallery ${summary.gallery}, ${summary.seconds.toFixed(1)} s`);
        if (f.preview) console.log(`contact sheet: ${f.preview}`);
      }
    });
}
