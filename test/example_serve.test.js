// examples/serve.mjs runs as documented: index, serve, one query over HTTP, stop.
import test from 'ava';
import { spawnSync } from 'node:child_process';

test('examples/serve.mjs indexes, serves and answers a query through the public API', (t) => {
  const r = spawnSync(process.execPath, [new URL('../examples/serve.mjs', import.meta.url).pathname], { encoding: 'utf8', timeout: 180_000 });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /index: \d+ rows, exact search/);
  t.regex(r.stdout, /serving on http:\/\/127\.0\.0\.1:\d+/);
  t.regex(r.stdout, /w \(image share\): \{"global":0\.\d+,"local":0\.\d+\}/);
  const ranked = r.stdout.split('\n').filter((l) => /^\d\. \S+\.png {2}-?\d\.\d{3} {2}http:\/\/127\.0\.0\.1:\d+\/images\/[0-9a-f]{16}$/.test(l));
  t.is(ranked.length, 5, r.stdout);
});
