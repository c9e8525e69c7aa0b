#!/usr/bin/env node
// The `dwc-native` command line. Parses flags and prints; the work lives in the library.
import { Command, CommanderError } from 'commander';
import { addon } from '../native.js';
import { Clip, describeClip, resolveClipWeights } from '../clip/model.js';
import { version } from '../version.js';
import { commands } from './commands/index.js';

const program = new Command();
program
  .name('dwc-native')
  .description('Train and run the Dynamic Weighted Combiner (DWC) for composed image retrieval, natively.')
  .version(version)
  .option('--verbose', 'print stack traces on errors')
  .showHelpAfterError('(run with --help for usage)');

program
  .command('info')
  .description('print the version, compiled backends, the BLAS in use and its threads, and CUDA devices')
  .option('--json', 'print one JSON object')
  .option('--clip <dir>', "also print the architecture of CLIP weights (a file or folder), read from the tensors' shapes")
  .action((opts: { json?: boolean; clip?: string }) => {
    const info = addon().info();
    if (opts.json) {
      if (opts.clip) {
        const m = Clip.load(opts.clip);
        console.log(JSON.stringify({ ...info, clip: { file: resolveClipWeights(opts.clip), ...m.arch, params: m.stats().paramFloats, ignored: m.ignored } }));
      } else console.log(JSON.stringify(info));
      return;
    }
    console.log(`dwc-native ${version} (addon ${info.version})`);
    console.log(`backends:  ${info.backends.join(', ')}`);
    console.log(`BLAS:      ${info.blas}`);
    console.log(`threads:   ${info.threads} (OpenMP ${info.openmp ? "on" : "off"}; the BLAS itself runs ${info.blasThreads === 1 ? "single-threaded, GEMMs split over these threads" : `${info.blasThreads} threads`})`);
    if (info.backends.includes('cuda')) {
      const devs = info.cudaDevices ?? [];
      console.log(`CUDA:      ${devs.length ? devs.map((d) => `cuda:${d.index} ${d.name}`).join('; ') : (info.cudaStatus ?? 'CUDA compiled, no device')}`);
    } else {
      console.log('CUDA:      not compiled in');
    }
    if (opts.clip) console.log(describeClip(opts.clip));
  });

for (const register of commands) register(program);

export async function main(argv: string[]): Promise<number> {
  program.exitOverride();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    const e = err as Error & { code?: string };
    console.error(`dwc-native: ${e.message}`);
    if (program.opts().verbose && e.stack) console.error(e.stack);
    return 1;
  }
}

main(process.argv).then((code) => {
  process.exitCode = code;
});
