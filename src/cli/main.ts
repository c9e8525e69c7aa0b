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
  .description('print the version, compiled backends, the kernels in use (oneDNN or CBLAS) and the ISA they run next to the CPU features, threads, and CUDA devices')
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
    console.log(`kernels:   ${info.gemm === 'onednn' ? `oneDNN ${info.onednn}` : 'CBLAS'} GEMMs, ${info.conv} convolutions; ISA ${info.isa}`);
    console.log(`CPU:       ${info.cpu.brand || info.cpu.vendor}: ${info.cpu.features}`);
    if (info.precision.bf16) {
      // which kernels --precision bf16 runs here (docs/PERFORMANCE.md "bf16 kernels")
      const gemm = addon().setKernels().bf16Gemm === 'amx' ? "the engine's AMX tile GEMM" : "oneDNN's matmul";
      const bwd = addon().kernelStats().bf16BwdWeights === 'gemm' ? 'as a GEMM' : "oneDNN's primitive";
      console.log(`bf16:      available (--precision bf16: GEMMs on ${gemm}, conv backward-weights ${bwd})`);
    } else console.log(`bf16:      not available: ${info.precision.bf16Reason}`);
    console.log(`BLAS:      ${info.blas}${info.gemm === 'onednn' ? ' (fallback)' : ''}`);
    for (const w of info.blasWarnings) console.log(`warning:   ${w}`);
    const pool = info.gemm === 'onednn' ? 'one pool for oneDNN and our own loops' : `the BLAS itself runs ${info.blasThreads === 1 ? 'single-threaded, GEMMs split over these threads' : `${info.blasThreads} threads`}`;
    console.log(`threads:   ${info.threads} (OpenMP ${info.openmp ? 'on' : 'off'}; ${pool})`);
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
