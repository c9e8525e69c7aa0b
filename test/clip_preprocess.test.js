// CLIP preprocessing (CLIP-SPEC.md "Preprocessing", src/clip/preprocess.ts): geometry, channels,
// normalisation, errors, and the comparison with CLIP's own torchvision/PIL pipeline
// (scripts/reference/clip_preprocess_ref.py, run now with /usr/bin/python3).
// Stated tolerance: resample 'pil' (default) equals PIL to the pixel (max |Δ| = 0 levels on the
// 8-bit crops, float32 within 1e-6) on every image here, PNG and JPEG; resample 'sharp' is within
// 3 levels when shrinking, and is only measured (logged) when enlarging, where libvips differs.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import sharp from 'sharp';
import { clipImageRgb, clipResizedSize, clipCropOffsets, preprocessClipImage, preprocessClipImages, CLIP_MEAN, CLIP_STD } from '../lib/clip/preprocess.js';
import { makeRng } from './helpers/index.js';

const dir = mkdtempSync(join(tmpdir(), 'clip-pre-test-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

// name, width, height, channels, format, shrinks (for R = 224)
const SPECS = [
  ['land', 300, 200, 3, 'png', false], ['port', 180, 260, 3, 'png', false], ['same', 224, 224, 3, 'png', true],
  ['odd', 225, 400, 3, 'png', true], ['big', 1000, 700, 3, 'png', true], ['grey', 256, 310, 1, 'png', true],
  ['greyalpha', 300, 260, 2, 'png', true], ['rgba', 320, 240, 4, 'png', true], ['jpeg', 400, 300, 3, 'jpg', true],
  ['tiny', 40, 30, 3, 'png', false], ['wide', 900, 230, 3, 'png', true],
  // Palette images: Pillow opens them as "P" and resizes with NEAREST.
  ['palette', 350, 260, 3, 'pal.png', true], ['palup', 150, 120, 4, 'pal.png', false], ['anim', 260, 330, 3, 'gif', true],
];

async function makeImage({ name, w, h, c, fmt }, rng) {
  const px = Buffer.alloc(w * h * c);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let ch = 0; ch < c; ch++) {
    const alpha = (c === 2 && ch === 1) || ch === 3;
    // Alpha ramps through 0 and 255; colour: waves, noise and sharp lines (hard for resamplers).
    const v = alpha ? (x * 7 + y * 3) % 256 : 128 + 90 * Math.sin((x * (ch + 1)) / 9 + y / 13) + 30 * (rng.uniform() - 0.5) + ((x + y) % 17 === 0 ? 60 : 0);
    px[(y * w + x) * c + ch] = Math.max(0, Math.min(255, Math.round(v)));
  }
  const path = join(dir, `${name}.${fmt}`);
  const img = sharp(px, { raw: { width: w, height: h, channels: c } });
  const enc = { png: () => img.png(), 'pal.png': () => img.png({ palette: true, colours: 64 }), gif: () => img.gif(), jpg: () => img.jpeg({ quality: 90 }) };
  await enc[fmt]().toFile(path);
  return path;
}

const images = (async () => {
  const rng = makeRng(7);
  const out = [];
  for (const [name, w, h, c, fmt, shrinks] of SPECS) out.push({ name, w, h, c, fmt, shrinks, path: await makeImage({ name, w, h, c, fmt }, rng) });
  return out;
})();

const torchMissing = (() => {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import torch, torchvision, PIL'], { encoding: 'utf8' });
  return r.status === 0 ? '' : r.error ? `/usr/bin/python3 not runnable (${r.error.message})` : `/usr/bin/python3 lacks torch/torchvision/PIL: ${r.stderr.trim().split('\n').pop()}`;
})();

function reference(paths, R) {
  const prefix = join(dir, `ref${R}`);
  const r = spawnSync('/usr/bin/python3', ['scripts/reference/clip_preprocess_ref.py', String(R), prefix, ...paths], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`reference failed: ${r.stderr}`);
  const f32 = readFileSync(prefix + '.f32');
  return { info: JSON.parse(r.stdout), u8: new Uint8Array(readFileSync(prefix + '.u8')), f32: new Float32Array(f32.buffer, f32.byteOffset, f32.length / 4) };
}

for (const R of [224, 64]) {
  test(`matches torchvision/PIL's CLIP pipeline at R = ${R}`, async (t) => {
    if (torchMissing) {
      t.log(`PIL COMPARISON NOT RUN: ${torchMissing}`);
      t.pass();
      return;
    }
    const imgs = await images;
    const ref = reference(imgs.map((i) => i.path), R);
    t.log(`reference: PIL ${ref.info.pil}, torchvision ${ref.info.torchvision}`);
    const per = 3 * R * R;
    for (const resample of ['pil', 'sharp']) {
      const batch = await preprocessClipImages(imgs.map((i) => i.path), R, { resample, concurrency: 3 });
      t.is(batch.length, imgs.length * per);
      for (let n = 0; n < imgs.length; n++) {
        const rgb = await clipImageRgb(imgs[n].path, R, { resample });
        let maxPx = 0;
        let sum = 0;
        for (let k = 0; k < per; k++) {
          const d = Math.abs(rgb[k] - ref.u8[n * per + k]);
          maxPx = Math.max(maxPx, d);
          sum += d;
        }
        let maxF = 0;
        for (let k = 0; k < per; k++) maxF = Math.max(maxF, Math.abs(batch[n * per + k] - ref.f32[n * per + k]));
        t.log(`${resample} ${imgs[n].name} (${imgs[n].w}x${imgs[n].h}, ${imgs[n].c} ch, ${imgs[n].fmt}): max |Δ| ${maxPx} levels, mean ${(sum / per).toFixed(3)}, float max ${maxF.toExponential(2)}`);
        if (resample === 'pil') {
          t.is(maxPx, 0, `pil ${imgs[n].name}: pixels differ from PIL`);
          t.true(maxF < 1e-6, `pil ${imgs[n].name}: float max ${maxF}`);
        } else if (imgs[n].shrinks && imgs[n].c === 3 && /^(png|jpg)$/.test(imgs[n].fmt) && R === 224) {
          t.true(maxPx <= 3, `sharp ${imgs[n].name}: max |Δ| ${maxPx} > 3 levels`);
        }
      }
    }
  });
}

test('torchvision geometry: shorter side R, longer int(R·long/short), crop offsets rounded half to even', (t) => {
  t.deepEqual(clipResizedSize(300, 200, 224), [336, 224]);
  t.deepEqual(clipResizedSize(180, 260, 224), [224, 323]); // 323.55… truncated
  t.deepEqual(clipResizedSize(500, 500, 224), [224, 224]);
  t.deepEqual(clipCropOffsets(225, 224, 224), [0, 0]); // round(0.5) = 0
  t.deepEqual(clipCropOffsets(224, 227, 224), [0, 2]); // round(1.5) = 2
  t.deepEqual(clipCropOffsets(229, 224, 224), [2, 0]); // round(2.5) = 2
  t.deepEqual(clipCropOffsets(336, 224, 224), [56, 0]);
});

test('output layout, normalisation, grey and alpha inputs', async (t) => {
  const imgs = await images;
  const R = 32;
  const one = await preprocessClipImage(imgs[0].path, R);
  t.true(one instanceof Float32Array);
  t.is(one.length, 3 * R * R);
  const rgb = await clipImageRgb(imgs[0].path, R);
  for (const k of [0, 17, R * R - 1]) for (let c = 0; c < 3; c++) t.true(Math.abs(one[c * R * R + k] - (rgb[3 * k + c] / 255 - CLIP_MEAN[c]) / CLIP_STD[c]) < 1e-6);
  // A batch is the single images one after another, whatever the concurrency.
  const paths = imgs.map((i) => i.path);
  const a = await preprocessClipImages(paths, R, { concurrency: 1 });
  const b = await preprocessClipImages(paths, R, { concurrency: 4 });
  t.deepEqual(a, b);
  t.deepEqual(a.subarray(0, 3 * R * R), one);
  // Grey (1 and 2 channels): three equal channels. RGBA: alpha dropped, 3 channels.
  for (const name of ['grey', 'greyalpha']) {
    const g = await clipImageRgb(imgs.find((i) => i.name === name).path, R);
    t.is(g.length, 3 * R * R);
    let same = true;
    for (let k = 0; k < R * R; k++) same &&= g[3 * k] === g[3 * k + 1] && g[3 * k] === g[3 * k + 2];
    t.true(same, name);
  }
  t.is((await clipImageRgb(imgs.find((i) => i.name === 'rgba').path, R)).length, 3 * R * R);
  // A buffer works like a file.
  t.deepEqual(await preprocessClipImage(readFileSync(imgs[0].path), R), one);
});

test('missing and corrupt images are errors naming the file; bad options are named', async (t) => {
  const imgs = await images;
  const missing = join(dir, 'nope.png');
  await t.throwsAsync(preprocessClipImages([imgs[0].path, missing], 32), { message: /image file .*nope\.png does not exist/ });
  const junk = join(dir, 'junk.jpg');
  writeFileSync(junk, 'this is not an image');
  await t.throwsAsync(preprocessClipImage(junk, 32), { message: /cannot decode image .*junk\.jpg/ });
  const cut = join(dir, 'cut.png');
  const full = readFileSync(imgs[0].path);
  writeFileSync(cut, full.subarray(0, Math.floor(full.length / 2)));
  for (const resample of ['pil', 'sharp']) await t.throwsAsync(preprocessClipImage(cut, 32, { resample }), { message: /cannot decode image .*cut\.png/ });
  await t.throwsAsync(preprocessClipImage(imgs[0].path, 0), { message: /'resolution'/ });
  await t.throwsAsync(preprocessClipImage(imgs[0].path, 32, { resample: 'lanczos' }), { message: /'resample' must be 'pil' or 'sharp'/ });
  await t.throwsAsync(preprocessClipImages([imgs[0].path], 32, { concurrency: 0 }), { message: /'concurrency'/ });
});
