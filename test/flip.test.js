// The flip augmentation (--flip, docs/EXPERIMENTS.md "Flips"): a flipped training query is the
// mirrored pair — both images mirrored, left and right swapped in its text, its own label.
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSynthetic, mirrorText, Vocabulary, train as T } from '../lib/index.js';
import { loadGeneric } from '../lib/data/dataset.js';

test('mirrorText swaps left and right as whole words, keeps case and everything else', (t) => {
  t.is(mirrorText('move the red circle to the top left'), 'move the red circle to the top right');
  t.is(mirrorText('put the star at the right'), 'put the star at the left');
  t.is(mirrorText('Left of the cross, Right!'), 'Right of the cross, Left!');
  t.is(mirrorText('the leftover bright square'), 'the leftover bright square');
  t.is(mirrorText('make the circle blue'), 'make the circle blue');
  t.is(mirrorText(mirrorText('the bottom left star and the right one')), 'the bottom left star and the right one');
});

test('a flipped training query: mirrored images, mirrored text, a label of its own', async (t) => {
  const data = (await generateSynthetic({ out: join(mkdtempSync(join(tmpdir(), 'dwc-flip-')), 'synth'), train: 64, test: 8, size: 16, seed: 3, noise: 0 })).out;
  const ds = await loadGeneric(data);
  const vocab = Vocabulary.build(ds.trainTexts());
  const qs = ds.queries(ds.trainSplit).slice(0, 48);
  const opts = { dataset: ds, vocab, store: new T.ImageStore(16), trainQueries: qs, trainLabels: ds.labels(qs), maxLength: 32, seed: 0, trainSplit: ds.trainSplit };
  const idx = Int32Array.from({ length: qs.length }, (_, i) => i);
  const plain = await T.makeBatchMaker({ ...opts, flip: false }).train(idx, 0);
  const flipped = await T.makeBatchMaker({ ...opts, flip: true }).train(idx, 0);
  t.is(plain.flips, undefined);
  const f = flipped.flips;
  t.true(f.some(Boolean) && !f.every(Boolean), 'some queries flipped, some not');
  t.true(qs.some((q, i) => f[i] && /\b(left|right)\b/.test(q.text)), 'a flipped query names a side (the test can fail)');
  const S = 16, per = 3 * S * S;
  for (let i = 0; i < qs.length; i++) {
    const want = vocab.encode(f[i] ? mirrorText(qs[i].text) : qs[i].text);
    t.deepEqual(Array.from(flipped.tokens.subarray(i * flipped.L, i * flipped.L + flipped.lengths[i])), want, `tokens of query ${i}`);
    t.is(flipped.labels[i] !== plain.labels[i], f[i], `label of query ${i}`);
    for (const k of ['images', 'targets']) {
      const a = plain[k].subarray(i * per, (i + 1) * per), b = flipped[k].subarray(i * per, (i + 1) * per);
      let same = true;
      for (let c = 0; c < 3 && same; c++)
        for (let y = 0; y < S && same; y++)
          for (let x = 0; x < S && same; x++) same = b[(c * S + y) * S + x] === a[(c * S + y) * S + (f[i] ? S - 1 - x : x)];
      t.true(same, `${k} of query ${i} ${f[i] ? 'mirrored' : 'as is'}`);
    }
  }
  // flipped labels never collide with the dataset's own ids
  const own = new Set(plain.labels);
  for (let i = 0; i < qs.length; i++) if (f[i]) t.false(own.has(flipped.labels[i]));
});

test('the shift augmentation: reference and target of a query move by one offset within ±shift, edges repeated', async (t) => {
  const data = (await generateSynthetic({ out: join(mkdtempSync(join(tmpdir(), 'dwc-shift-')), 'synth'), train: 48, test: 8, size: 16, seed: 4, noise: 0 })).out;
  const ds = await loadGeneric(data);
  const vocab = Vocabulary.build(ds.trainTexts());
  const qs = ds.queries(ds.trainSplit).slice(0, 32);
  const opts = { dataset: ds, vocab, store: new T.ImageStore(16), trainQueries: qs, trainLabels: ds.labels(qs), maxLength: 32, seed: 0, flip: false, trainSplit: ds.trainSplit };
  const idx = Int32Array.from({ length: qs.length }, (_, i) => i);
  const plain = await T.makeBatchMaker(opts).train(idx, 0);
  const zero = await T.makeBatchMaker({ ...opts, shift: 0 }).train(idx, 0);
  t.deepEqual(zero.images, plain.images, 'shift 0: the images as they are');
  const shifted = await T.makeBatchMaker({ ...opts, shift: 2 }).train(idx, 0);
  t.deepEqual(shifted.tokens, plain.tokens);
  t.deepEqual(shifted.labels, plain.labels, 'a shifted query keeps its label');
  const S = 16, per = 3 * S * S;
  const cl = (v) => Math.min(S - 1, Math.max(0, v));
  const matches = (a, b, dx, dy) => {
    for (let c = 0; c < 3; c++) for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) if (b[(c * S + y) * S + x] !== a[(c * S + cl(y - dy)) * S + cl(x - dx)]) return false;
    return true;
  };
  let moved = 0;
  for (let i = 0; i < qs.length; i++) {
    const offs = (k) => {
      const a = plain[k].subarray(i * per, (i + 1) * per), b = shifted[k].subarray(i * per, (i + 1) * per);
      const out = [];
      for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) if (matches(a, b, dx, dy)) out.push(`${dx},${dy}`);
      return out;
    };
    const oi = offs('images'), ot = offs('targets');
    t.true(oi.length > 0, `reference of query ${i} is a shift within ±2`);
    t.true(oi.some((o) => ot.includes(o)), `reference and target of query ${i} share the offset`);
    if (!oi.includes('0,0')) moved++;
  }
  t.true(moved > qs.length / 2, `most queries moved (${moved} of ${qs.length})`);
});

test('--shift: too large for the image size, or with a frozen trunk, is a clear error', (t) => {
  t.throws(() => T.resolveConfig(undefined, { shift: 32 }), { message: /'shift' 32 is too large for 64-pixel images/ });
  t.throws(() => T.resolveConfig(undefined, { shift: -1 }), { message: /'shift' must be an integer/ });
  t.throws(() => T.resolveConfig(undefined, { shift: 2, trunk: 'frozen' }), { message: /frozen trunk/ });
  t.is(T.resolveConfig(undefined, { shift: 4 }).shift, 4);
});
