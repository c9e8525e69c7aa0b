// The README's library example runs as documented.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

test('examples/library.mjs trains, evaluates and searches through the public API', (t) => {
  const cache = mkdtempSync(join(tmpdir(), 'dwc-example-cache-'));
  const r = spawnSync(process.execPath, [new URL('../examples/library.mjs', import.meta.url).pathname], {
    encoding: 'utf8',
    env: { ...process.env, DWC_NATIVE_CACHE: cache },
    timeout: 240_000,
  });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /epoch 1: R@1 \d+(\.\d)?%/);
  t.regex(r.stdout, /checkpoint: .*best\.safetensors/);
  t.regex(r.stdout, /w \(image weight\): \{"global":0\.\d+,"local":0\.\d+\}/);
  const ranked = r.stdout.split('\n').filter((l) => /^\d\. .*\.png {2}-?\d+\.\d{3}$/.test(l));
  t.is(ranked.length, 5, r.stdout);
});
