// Layering (issue 14 item 7): src/report/ and src/train/ do not import each other; the records
// and the report-writer type both need live below both (src/eval/records.ts).
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const src = new URL('../src/', import.meta.url).pathname;
const importsOf = (dir) =>
  readdirSync(join(src, dir))
    .filter((f) => f.endsWith('.ts'))
    .flatMap((f) => [...readFileSync(join(src, dir, f), 'utf8').matchAll(/(?:import|export)[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => ({ file: `${dir}/${f}`, spec: m[1] ?? m[2] })));

test('src/report imports nothing from src/train, and src/train nothing from src/report', (t) => {
  const report = importsOf('report');
  const train = importsOf('train');
  t.true(report.length > 0 && train.length > 0, 'the scan finds imports');
  t.deepEqual(report.filter((i) => /(^|\/)train\//.test(i.spec)), []);
  t.deepEqual(train.filter((i) => /(^|\/)report\//.test(i.spec)), []);
  // the shared records live in src/eval/records.ts, which imports nothing from train or report
  t.deepEqual(importsOf('eval').filter((i) => i.file === 'eval/records.ts' && /(train|report)\//.test(i.spec)), []);
});
