// Data pipeline throughput: images/s decoded + resized (shorter side, centre crop) + normalised
// to planar float32 at 224×224 with both cores, on ~500×375 JPEG and PNG inputs; compared with
// what one training step of the `paper` preset consumes (2 images per query × batch 32).
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { header, timeIt, emit, saveResults, wantJson } from './common.js';
import { loadImagesInto } from '../lib/data/index.js';

header('data: sharp image pipeline (decode + resize/crop + normalise, 224x224)');
const dir = mkdtempSync(join(tmpdir(), 'dwc-bench-data-'));
const N = 240;
const files = [];
try {
  for (let i = 0; i < N; i++) {
    const png = i % 4 === 3;
    const f = join(dir, `img${i}.${png ? 'png' : 'jpg'}`);
        // Blurred noise: photo-like file sizes (~40 KB JPEG at q90), not a flat image that decodes trivially.
    const noise = await sharp({ create: { width: 500, height: 375, channels: 3, noise: { type: 'gaussian', mean: 110 + (i % 40), sigma: 40 } } }).png().toBuffer();
    const base = sharp(noise).blur(1.5);
    await (png ? base.png({ compressionLevel: 6 }) : base.jpeg({ quality: 90 })).toFile(f);
    files.push(f);
  }
  const S = 224;
  const out = new Float32Array(N * 3 * S * S);
  const cores = availableParallelism();
  const results = {};
  for (const [label, subset] of [['jpeg', files.filter((f) => f.endsWith('.jpg'))], ['png', files.filter((f) => f.endsWith('.png'))], ['mixed', files]]) {
    for (const conc of [cores, 2 * cores]) {
      const s = await timeIt(() => loadImagesInto(subset, out, 0, { size: S, concurrency: conc }), { warmup: 1, reps: 3 });
      const ips = subset.length / s;
      results[`${label}/${conc}`] = ips;
      emit({ suite: 'data', name: `decode ${label} 500x375 -> 224 (${conc} in flight)`, engine_s: s / subset.length, extra: { images_per_s: ips, images: subset.length, concurrency: conc } });
      if (!wantJson) console.log(`  ${ips.toFixed(1)} images/s (${(1000 / ips).toFixed(2)} ms per image)`);
    }
  }
  const best = Math.max(results[`mixed/${cores}`], results[`mixed/${2 * cores}`]);
  // What the paper preset's training step consumes.
  const stepFile = new URL('./results/step.json', import.meta.url).pathname;
  let stepS = null;
  let stepName = null;
  if (existsSync(stepFile)) {
    const rows = JSON.parse(readFileSync(stepFile, 'utf8')).results ?? [];
    const paper = rows.filter((r) => /paper/i.test(r.name) && typeof r.engine_s === 'number');
    const row = paper.find((r) => /iteration|step/i.test(r.name)) ?? paper[0];
    if (row) {
      stepS = row.engine_s;
      stepName = row.name;
    }
  }
  const B = 32;
  if (stepS) {
    const needed = (2 * B) / stepS;
    emit({ suite: 'data', name: 'paper step demand (2 x 32 images per step)', engine_s: stepS, extra: { needed_images_per_s: needed, pipeline_images_per_s: best, headroom: best / needed, step_source: stepName } });
    if (!wantJson)
      console.log(`  paper step "${stepName}" takes ${(stepS * 1000).toFixed(1)} ms -> needs ${needed.toFixed(1)} images/s; pipeline gives ${best.toFixed(1)} images/s ` +
        `(${best >= needed ? `keeps it fed, ${(best / needed).toFixed(1)}x headroom` : `too slow by ${(needed / best).toFixed(1)}x`})`);
  } else {
    emit({ suite: 'data', name: 'paper step demand (2 x 32 images per step)', engine_s: null, extra: { needed_images_per_s: null, pipeline_images_per_s: best, step_source: null } });
    if (!wantJson) console.log(`  paper step time unknown (run 'npm run bench -- step' first to write bench/results/step.json); pipeline gives ${best.toFixed(1)} images/s = ${(best / (2 * B)).toFixed(2)} steps/s of batch ${B}`);
  }
  saveResults('data');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
