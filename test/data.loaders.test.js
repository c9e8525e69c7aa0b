// Dataset loaders on fixture folders built here in exactly each published layout (spec §7, §8).
import test from 'ava';
import { mkdirSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { loadFashionIQ, loadShoes, loadFashion200k, loadDataset, detectFormat, Vocabulary, DataError, QueryBatcher } from '../lib/data/index.js';

const tmp = (p) => mkdtempSync(join(tmpdir(), `dwc-loader-${p}-`));
let colour = 0;
async function img(file, fmt = 'jpeg') {
  mkdirSync(dirname(file), { recursive: true });
  colour = (colour + 37) % 256;
  const s = sharp({ create: { width: 24, height: 18, channels: 3, background: { r: colour, g: 255 - colour, b: 90 } } });
  await (fmt === 'png' ? s.png() : s.jpeg()).toFile(file);
}
const json = (file, v) => {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(v));
};

async function fashionIqFixture() {
  const root = tmp('fiq');
  const cats = { dress: ['d1', 'd2', 'd3', 'd4'], shirt: ['s1', 's2', 's3'], toptee: ['t1', 't2', 't3'] };
  for (const [cat, ids] of Object.entries(cats)) {
    json(join(root, 'image_splits', `split.${cat}.train.json`), ids.slice(0, 2));
    json(join(root, 'image_splits', `split.${cat}.val.json`), ids.slice(1));
    json(join(root, 'captions', `cap.${cat}.train.json`), [{ target: ids[1], candidate: ids[0], captions: [`Is ${cat} RED.`, 'has long sleeves'] }]);
    json(join(root, 'captions', `cap.${cat}.val.json`), [
      { target: ids[2], candidate: ids[1], captions: ['is blue', 'shorter'] },
      { target: ids[1], candidate: ids[2], captions: ['is green', 'longer!'] },
    ]);
    json(join(root, 'captions', `cap.${cat}.test.json`), [{ candidate: ids[0], captions: ['x', 'y'] }]);
    for (const id of ids) await img(join(root, 'images', `${id}.${id === 'd4' ? 'png' : 'jpg'}`), id === 'd4' ? 'png' : 'jpeg');
  }
  return root;
}

test('FashionIQ: splits, joined texts (§8), per-category evaluation on val with R@10/R@50 (§7)', async (t) => {
  const root = await fashionIqFixture();
  t.is(detectFormat(root), 'fashioniq');
  const ds = loadDataset(root);
  t.is(ds.format, 'fashioniq');
  t.is(ds.queries('train').length, 3);
  t.is(ds.queries('val').length, 6);
  const q = ds.queries('train')[0];
  t.is(q.text, '<BOS> Is dress RED. <AND> has long sleeves <EOS>');
  t.is(q.category, 'dress');
  const v = Vocabulary.build(ds.trainTexts());
  t.deepEqual(v.encode(q.text).slice(0, 3), [2, 4, 5]);
  t.is(v.encode(q.text).at(-1), 3);
  const evs = ds.evaluations();
  t.deepEqual(evs.map((e) => e.name), ['fashioniq-dress', 'fashioniq-shirt', 'fashioniq-toptee']);
  t.deepEqual(evs[0].gallery, ['d2', 'd3', 'd4']);
  t.deepEqual(evs[0].ks, [10, 50]);
  t.is(evs[0].split, 'val');
  t.true(evs.every((e) => e.queries.length === 2 && e.queries.every((x) => x.category === e.name.slice(10))));
  t.is(ds.image('d4').file, join(root, 'images', 'd4.png'));
  t.deepEqual(ds.missingFiles, []);
  // Images load through the pipeline.
  const b = new QueryBatcher({ dataset: ds, vocab: v, batchSize: 3, imageSize: 16, split: 'val', shuffle: false });
  for await (const batch of b) t.is(batch.reference.length, 3 * 3 * 16 * 16);
  rmSync(root, { recursive: true });
});

test('FashionIQ: missing folder or file names it', async (t) => {
  const root = await fashionIqFixture();
  rmSync(join(root, 'image_splits', 'split.shirt.val.json'));
  let e = t.throws(() => loadFashionIQ(root), { instanceOf: DataError });
  t.is(e.code, 'DWC_DATA_MISSING');
  t.true(e.message.includes('split.shirt.val.json'));
  rmSync(join(root, 'captions'), { recursive: true });
  e = t.throws(() => loadFashionIQ(root), { instanceOf: DataError });
  t.true(e.message.includes(join(root, 'captions')));
  e = t.throws(() => loadFashionIQ(join(root, 'absent')), { instanceOf: DataError });
  t.true(e.message.includes(join(root, 'absent')));
  rmSync(root, { recursive: true });
});

test('Shoes: images found under womens_* folders, splits by name lists, eval gallery, R@1/10/50', async (t) => {
  const root = tmp('shoes');
  const train = ['img_womens_clogs_1.jpg', 'img_womens_clogs_2.jpg', 'img_womens_pumps_3.jpg'];
  const evalN = ['img_womens_pumps_4.jpg', 'img_womens_boots_5.jpg', 'img_womens_boots_6.jpg'];
  for (const n of [...train, ...evalN]) {
    const cat = n.split('_').slice(1, 3).join('_');
    await img(join(root, 'attributedata', cat, '0', n));
  }
  writeFileSync(join(root, 'train_im_names.txt'), train.join('\n') + '\n');
  writeFileSync(join(root, 'eval_im_names.txt'), evalN.join('\n') + '\n');
  json(join(root, 'relative_captions_shoes.json'), [
    { ImageName: train[1], ReferenceImageName: train[0], RelativeCaption: 'is darker' },
    { ImageName: train[2], ReferenceImageName: train[1], RelativeCaption: 'has a higher heel' },
    { ImageName: evalN[1], ReferenceImageName: evalN[0], RelativeCaption: 'is a boot' },
    { ImageName: evalN[2], ReferenceImageName: evalN[1], RelativeCaption: 'is taller' },
    { ImageName: 'img_womens_gone_9.jpg', ReferenceImageName: evalN[1], RelativeCaption: 'unknown' },
  ]);
  const ds = loadDataset(root);
  t.is(ds.format, 'shoes');
  t.is(ds.queries('train').length, 2);
  t.is(ds.queries('test').length, 2);
  t.is(ds.skippedCaptions, 1);
  t.deepEqual(ds.gallery('test'), evalN);
  t.is(ds.image(evalN[1]).file, join(root, 'attributedata', 'womens_boots', '0', evalN[1]));
  const [ev] = ds.evaluations();
  t.deepEqual(ev.ks, [1, 10, 50]);
  t.is(ev.queries[0].text, 'is a boot');
  t.deepEqual(ds.missingFiles, []);
  const v = Vocabulary.build(ds.trainTexts());
  t.deepEqual(v.words.slice(4), ['is', 'darker', 'has', 'a', 'higher', 'heel']);
  rmSync(join(root, 'eval_im_names.txt'));
  const e = t.throws(() => loadShoes(root), { instanceOf: DataError });
  t.true(e.message.includes('eval_im_names.txt'));
  rmSync(root, { recursive: true });
});

test('Fashion200k: labels, test queries with §8 texts, hits by caption, on-the-fly one-word training pairs', async (t) => {
  const root = tmp('f200k');
  const train = [
    ['women/dresses/casual/100/100_0.jpeg', 'blue floral dress'],
    ['women/dresses/casual/101/101_0.jpeg', 'red floral dress'],
    ['women/dresses/casual/102/102_0.jpeg', 'red floral dress'],
    ['women/dresses/casual/103/103_0.jpeg', 'black lace dress'],
    ['women/jackets/a/104/104_0.jpeg', 'green leather jacket'],
  ];
  const testI = [
    ['women/dresses/casual/200/200_0.jpeg', 'white cotton dress'],
    ['women/dresses/casual/201/201_0.jpeg', 'black cotton dress'],
    ['women/dresses/casual/202/202_0.jpeg', 'black cotton dress'],
  ];
  const label = (rows) => rows.map(([p, c], i) => `${p}\t${(0.5 + i / 100).toFixed(3)}\t${c}`).join('\n') + '\n';
  mkdirSync(join(root, 'labels'), { recursive: true });
  writeFileSync(join(root, 'labels', 'dress_train_detect_all.txt'), label(train.slice(0, 4)));
  writeFileSync(join(root, 'labels', 'jacket_train_detect_all.txt'), label(train.slice(4)));
  writeFileSync(join(root, 'labels', 'dress_test_detect_all.txt'), label(testI));
  writeFileSync(join(root, 'test_queries.txt'), `${testI[0][0]} ${testI[1][0]}\n`);
  for (const [p] of [...train, ...testI]) await img(join(root, p));
  t.is(detectFormat(root), 'fashion200k');
  const ds = loadFashion200k(root);
  const [tq] = ds.queries('test');
  t.is(tq.text, 'replace white with black and get black cotton dress');
  t.is(ds.hit, 'caption');
  t.is(ds.hitKey(testI[1][0]), ds.hitKey(testI[2][0]));
  t.not(ds.hitKey(testI[0][0]), ds.hitKey(testI[1][0]));
  const [ev] = ds.evaluations();
  t.deepEqual(ev.gallery, testI.map(([p]) => p));
  t.deepEqual(ev.ks, [1, 10, 50]);
  t.is(ds.image(train[0][0]).file, join(root, train[0][0]));
  // Training pairs: one per training image, captions differ in exactly one word, deterministic per (seed, epoch).
  const qs = ds.queries('train', { seed: 3, epoch: 0 });
  t.is(qs.length, 5);
  for (const q of qs) {
    const sc = ds.image(q.source).caption.split(' ');
    const tc = ds.image(q.target).caption.split(' ');
    t.is(sc.length, tc.length);
    t.is(sc.filter((w, i) => w !== tc[i]).length, 1);
    const [w1] = sc.filter((w) => !tc.includes(w));
    const [w2] = tc.filter((w) => !sc.includes(w));
    t.is(q.text, `replace ${w1} with ${w2} and get ${ds.image(q.target).caption}`);
    t.true(['blue floral dress', 'red floral dress'].includes(ds.image(q.source).caption));
  }
  t.deepEqual(ds.queries('train', { seed: 3, epoch: 0 }).map((q) => q.target), qs.map((q) => q.target));
  const labels = ds.labels(qs);
  qs.forEach((a, i) => qs.forEach((b, j) => t.is(labels[i] === labels[j], ds.image(a.target).caption === ds.image(b.target).caption)));
  const v = Vocabulary.build(ds.trainTexts());
  t.deepEqual(v.words.slice(4, 10), ['replace', 'with', 'and', 'get', 'blue', 'floral']);
  // Captions (PL4CIR stage 2): the product descriptions, per split and over all splits
  t.deepEqual(ds.captions('test'), testI.map(([id, caption]) => ({ id, caption })));
  t.deepEqual(ds.captions().map((c) => c.caption), [...train, ...testI].map(([, c]) => c));
  writeFileSync(join(root, 'test_queries.txt'), `${testI[0][0]} women/none.jpeg\n`);
  let e = t.throws(() => loadFashion200k(root), { instanceOf: DataError });
  t.true(e.message.includes("'women/none.jpeg'"));
  rmSync(join(root, 'labels'), { recursive: true });
  e = t.throws(() => loadFashion200k(root), { instanceOf: DataError });
  t.true(e.message.includes(join(root, 'labels')));
  rmSync(root, { recursive: true });
});

test('FashionIQ: captions from tags/asin2attr.<cat>.<split>(.new).json where present; bad files name themselves', async (t) => {
  const root = await fashionIqFixture();
  t.deepEqual(loadFashionIQ(root).captions(), [], 'no attribute files: no captions');
  json(join(root, 'tags', 'asin2attr.dress.train.json'), { d1: [['red'], ['floral', 'print']], d2: 'long sleeve', zz: ['unknown image'] });
  json(join(root, 'tags', 'asin2attr.shirt.val.new.json'), { s3: [[], ['cotton']] });
  const ds = loadFashionIQ(root);
  t.deepEqual(ds.captions('train'), [{ id: 'd1', caption: 'red floral print' }, { id: 'd2', caption: 'long sleeve' }]);
  t.deepEqual(ds.captions('val'), [{ id: 's3', caption: 'cotton' }]);
  t.is(ds.image('d3').caption, undefined);
  t.is(ds.hit, 'id', 'captions do not change the hit rule');
  json(join(root, 'tags', 'asin2attr.toptee.val.json'), { t2: [3] });
  const e = t.throws(() => loadFashionIQ(root), { instanceOf: DataError });
  t.true(e.message.includes('asin2attr.toptee.val.json') && e.message.includes("'t2'"));
  rmSync(root, { recursive: true });
});
