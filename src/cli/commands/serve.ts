// `dwc-native serve --checkpoint C --db DIR [--host 127.0.0.1] [--port 8080] [--admin]`
// HTTP search API and web page (docs/SERVE.md); stops cleanly on SIGINT/SIGTERM.
import type { Command } from 'commander';
import { createServer } from '../../serve/server.js';
import { int } from '../options.js';
import { CLIP_OPTION_HELP } from '../../search/clip_inputs.js';

export function register(program: Command): void {
  program
    .command('serve')
    .description('serve a gallery index over HTTP: POST /search, GET /images/:id, GET /healthz, a web page at /')
    .requiredOption('--checkpoint <file>', 'checkpoint that built the index (`dwc-native index`)')
    .requiredOption('--db <dir|uri>', 'LanceDB folder or URI of the gallery index')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port (0: any free port)', int, 8080)
    .option('--admin', 'enable POST /index (add images to the gallery)')
    .option('--max-upload <bytes>', 'largest image upload', int, 10 << 20)
    .option('--max-k <n>', 'largest k', int, 100)
    .option('--max-batch <n>', 'most queries per native embed call', int, 32)
    .option('--batch-window <ms>', 'longest wait for more queries to batch', int, 3)
    .option('--log-level <level>', 'fatal | error | warn | info | debug | trace | silent', 'info')
    .option('--device <dev>', 'cpu | cuda | cuda:N')
    .option('--clip <dir>', CLIP_OPTION_HELP)
    .action(async (o: { checkpoint: string; db: string; host: string; port: number; admin?: boolean; maxUpload: number; maxK: number; maxBatch: number; batchWindow: number; logLevel: string; device?: string; clip?: string }) => {
      const app = await createServer({
        checkpoint: o.checkpoint,
        db: o.db,
        admin: !!o.admin,
        maxUploadBytes: o.maxUpload,
        maxK: o.maxK,
        batch: { maxBatch: o.maxBatch, windowMs: o.batchWindow },
        logLevel: o.logLevel,
        device: o.device,
        ...(o.clip ? { clip: o.clip } : {}),
      });
      let closing = false;
      const stop = (sig: string) => {
        if (closing) return;
        closing = true;
        app.log.info({ signal: sig }, 'shutting down');
        app.close().then(
          () => process.exit(0),
          (e) => {
            app.log.error({ err: e }, 'shutdown failed');
            process.exit(1);
          },
        );
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
      await app.listen({ host: o.host, port: o.port });
      await new Promise(() => {}); // serve until a signal
    });
}
