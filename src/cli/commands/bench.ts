// `dwc-native bench <suite>`: runs a microbenchmark of bench/ (same as `npm run bench -- <suite>`).
import type { Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../native.js';
import { checkPrecision } from '../../precision.js';
import { PRECISION_HELP } from '../options.js';

export function register(program: Command): void {
  const dir = join(packageRoot, 'bench');
  const suites = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.js') && !['run.js', 'common.js'].includes(f)).map((f) => f.slice(0, -3)) : [];
  program
    .command('bench')
    .description(`time the engine next to PyTorch (when installed) and the SGEMM peak; suites: ${suites.join(', ')}`)
    .argument('<suite>', 'which benchmark')
    .option('--json', 'one JSON object per line and benchmark')
    .option('--precision <p>', PRECISION_HELP)
    .allowUnknownOption(true)
    .action((suite: string, _opts: unknown, cmd: Command) => {
      checkPrecision(cmd.opts().precision);
      if (!suites.includes(suite)) throw new Error(`unknown bench suite '${suite}' (suites: ${suites.join(', ')})`);
      const r = spawnSync(process.execPath, [join(dir, 'run.js'), suite, ...cmd.args.slice(1), ...(cmd.opts().json ? ['--json'] : []), ...(cmd.opts().precision ? ['--precision', String(cmd.opts().precision)] : [])], { stdio: 'inherit' });
      if (r.status !== 0) throw new Error(`bench ${suite} failed (exit ${r.status})`);
    });
}
