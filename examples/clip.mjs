// Library example: native CLIP from files to embeddings — images straight from paths (decoded and
// preprocessed as CLIP was trained, batched), texts through CLIP's tokenizer, cosine similarities.
// No weights can be downloaded here, so it writes a small CLIP with random weights and a
// byte-level vocabulary first; with real weights use Clip.load('path/to/ViT-B-32/') instead (a
// folder with model.safetensors or open_clip_model.safetensors and vocab.json + merges.txt or
// bpe_simple_vocab_16e6.txt.gz). Run from the repository:  node examples/clip.mjs
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { Clip, preprocessClipImages, writeRandomClip } from '../lib/index.js';

const dir = mkdtempSync(join(tmpdir(), 'dwc-clip-example-'));
try {
  writeRandomClip(join(dir, 'clip'), undefined, 7); // TINY_CLIP_ARCH: resolution 32, embed dim 32
  const clip = Clip.load(join(dir, 'clip'));
  console.log(`CLIP: resolution ${clip.resolution}, context ${clip.contextLength}, embed dim ${clip.embedDim}`);

  // a few images of different sizes (any format sharp reads)
  const colours = [[200, 30, 30], [30, 160, 40], [40, 60, 220], [230, 200, 40], [120, 40, 160]];
  const paths = [];
  for (const [i, [r, g, b]] of colours.entries()) {
    const p = join(dir, `img${i}.png`);
    await sharp({ create: { width: 40 + 13 * i, height: 48, channels: 3, background: { r, g, b } } }).png().toFile(p);
    paths.push(p);
  }

  const img = await clip.embedImages(paths, { batchSize: 2, onProgress: (done, total) => console.log(`  images ${done}/${total}`) });
  const texts = ['a red square', 'a green square', 'a blue square', 'a yellow square', 'a purple square'];
  const txt = await clip.embedTexts(texts); // tokenizer: the vocabulary in the weights' folder
  const E = clip.embedDim;
  console.log(`image embeddings [${img.length / E}, ${E}], text embeddings [${txt.length / E}, ${E}]`);

  // the same as preprocessing first and embedding the pixel tensor
  const px = await preprocessClipImages(paths, clip.resolution);
  const again = await clip.embedImages(px, { batchSize: 2 });
  let maxDiff = 0;
  for (let i = 0; i < img.length; i++) maxDiff = Math.max(maxDiff, Math.abs(img[i] - again[i]));
  console.log(`paths vs preprocessed pixels: max |difference| ${maxDiff}`);

  // cosine similarities image × text (random weights: the numbers mean nothing, the shapes do)
  const norm = (a, i) => Math.hypot(...a.subarray(i * E, (i + 1) * E));
  const cos = (i, j) => {
    let s = 0;
    for (let k = 0; k < E; k++) s += img[i * E + k] * txt[j * E + k];
    return s / (norm(img, i) * norm(txt, j));
  };
  for (let i = 0; i < paths.length; i++) console.log(`  img${i}: ${texts.map((_, j) => cos(i, j).toFixed(3)).join(' ')}`);
  console.log(JSON.stringify({ images: [img.length / E, E], texts: [txt.length / E, E], maxDiff }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
