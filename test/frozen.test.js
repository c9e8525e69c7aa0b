// Frozen-trunk mode (issue 5 item 4): the local trunk's maps are computed once and cached next to
// the run; the heads train from the cache and the trunk does not move; the cache is reused by a
// second run and rebuilt when the trunk weights change.
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSynthetic, train as T, DwcModel } from '../lib/index.js';
import { readSafetensors, writeSafetensors } from '../lib/safetensors.js';

const root = mkdtempSync(join(tmpdir(), 'dwc-frozen-'));
test.after.always(() => rmSync(root, { recursive: true, force: true }));
const dims = { D: 32, C: 32, H: 4, W: 4, E: 16, Dc: 32, imageSize: 32 };
const PFX = 'local.img_model.';

// torchvision-named trunk weights (a "pretrained" trunk: a randomly initialised one of seed 7)
function trunkFile(path, scale = 1) {
  const m = new DwcModel({ D: 32, C: 32, E: 16, vocab: 8, trunk: 'small' }, { seed: 7 });
  const out = new Map();
  for (const p of m.params()) {
    if (!p.name.startsWith(PFX)) continue;
    const a = m.getParam(p.name);
    if (p.counter) out.set(p.name.slice(PFX.length), { dtype: 'I64', shape: p.shape, data: BigInt64Array.from(a, (x) => BigInt(x)) });
    else out.set(p.name.slice(PFX.length), { dtype: 'F32', shape: p.shape, data: p.name.endsWith('conv1.weight') ? a.map((x) => x * scale) : a });
  }
  writeSafetensors(path, out);
  return out;
}

async function run(data, out, trunkWeights, epochs = 2) {
  const info = [];
  const cfg = T.resolveConfig(undefined, { dataset: 'generic', data, out, dims, epochs, batchSize: 16, lr: 1e-3, evalBatchSize: 64, report: false, trunk: 'frozen', trunkWeights, flip: true });
  const losses = [];
  const r = await T.train({ config: cfg, callbacks: { onTrunkCache: (i) => info.push(i), onEpoch: (e) => losses.push(e.loss.total) } });
  return { r, cache: info[0], losses };
}

test.serial('frozen trunk: heads train from the cache, trunk weights do not move, cache reused and invalidated', async (t) => {
  const syn = await generateSynthetic({ out: join(root, 'synth'), train: 64, test: 16, size: 32, seed: 3, noise: 0 });
  const wfile = join(root, 'trunk.safetensors');
  const w0 = trunkFile(wfile);
  const out = join(root, 'run');

  const a = await run(syn.out, out, wfile);
  t.false(a.r.interrupted);
  t.false(a.cache.reused);
  t.true(a.cache.entries > 0);
  t.true(existsSync(join(out, 'trunk_cache.f32')) && existsSync(join(out, 'trunk_cache.json')));
  t.true(a.losses.every(Number.isFinite));
  const ck = readSafetensors(a.r.lastCheckpoint).tensors;
  // every trunk tensor (weights and BN running statistics) is exactly the loaded one
  for (const [name, v] of w0) {
    const got = ck.get(PFX + name);
    t.truthy(got, name);
    t.deepEqual(Array.from(got.data, Number), Array.from(v.data, Number), `${name} moved`);
  }
  // ...while the heads moved (Adam steps were taken)
  t.true(Number(ck.get('optim.local.step').data[0]) > 0);

  // a second run with the same trunk reuses the cache
  const hash0 = JSON.parse(readFileSync(join(out, 'trunk_cache.json'), 'utf8')).hash;
  const b = await run(syn.out, out, wfile, 1);
  t.true(b.cache.reused);

  // other trunk weights: the cache is rebuilt under a new hash
  trunkFile(wfile, 1.5);
  const c = await run(syn.out, out, wfile, 1);
  t.false(c.cache.reused);
  t.not(JSON.parse(readFileSync(join(out, 'trunk_cache.json'), 'utf8')).hash, hash0);
});

test('frozen trunk: a misshaped trunk weights file is an error naming the tensor', async (t) => {
  const syn = await generateSynthetic({ out: join(root, 'synth2'), train: 16, test: 8, size: 32, seed: 4, noise: 0 });
  const w = new Map([['conv1.weight', { dtype: 'F32', shape: [2, 3, 3, 3], data: new Float32Array(54) }]]);
  const f = join(root, 'bad.safetensors');
  writeSafetensors(f, w);
  const err = await t.throwsAsync(run(syn.out, join(root, 'bad'), f, 1));
  t.regex(err.message, /conv1\.weight/);
});
