// The ReLU of the global stream's text projection (`--global-text-relu on|off`, textRelu; docs/MODEL.md
// §3): on (the spec), f_T = norm(Dropout(ReLU(W_txt e_T + b))); off, f_T = norm(Dropout(W_txt e_T + b)),
// so negative entries of the text side survive. The image projection keeps its ReLU either way.
// Gradients with it off: test/model.test.js (finite differences).
import test from 'ava';
import { DwcModel } from '../lib/model.js';
import { train as T } from '../lib/index.js';
import { nativeConfig } from '../lib/train/native_model.js';
import { flagsToConfig } from '../lib/cli/commands/train.js';
import { onOff } from '../lib/cli/options.js';
import { freshSeed, makeRng, randArray, throwsNaming } from './helpers/index.js';

const rng = makeRng(freshSeed());
const G = { Dc: 5, D: 7 };

function norm(v) {
  const n = Math.hypot(...v);
  return v.map((x) => x / Math.max(n, 1e-12));
}
function close(t, got, want, msg) {
  t.is(got.length, want.length);
  const err = want.reduce((a, w, i) => Math.max(a, Math.abs(w - got[i])), 0);
  t.true(err < 1e-5, `${msg}: max error ${err}`);
}

// text-only baseline (w = 0, no editors), eval mode (no dropout): q_G = norm(f_T), i.e. the text
// projection alone, computed here from its weights.
test('textRelu off: q_G of the text-only baseline is norm(W_txt e_T + b), negative entries included; on: norm(ReLU(…))', async (t) => {
  const B = 3;
  const batch = { B, eImg: randArray([B, G.Dc], rng), eTxt: randArray([B, G.Dc], rng), eTarget: randArray([B, G.Dc], rng) };
  const make = (textRelu) => new DwcModel(G, { seed: 5, fixedW: true, fixedWValue: 0, noEditors: true, ...(textRelu === undefined ? {} : { textRelu }) });
  const on = make(true);
  const off = make(false);
  const unset = make(undefined);
  const W = on.getParam('global.txt_fc.0.weight');
  const b = on.getParam('global.txt_fc.0.bias');
  t.deepEqual(off.getParam('global.txt_fc.0.weight'), W, 'same initial weights');
  const pre = [];
  for (let i = 0; i < B; i++)
    pre.push(Array.from({ length: G.D }, (_, o) => b[o] + Array.from({ length: G.Dc }, (_, k) => W[o * G.Dc + k] * batch.eTxt[i * G.Dc + k]).reduce((x, y) => x + y, 0)));
  t.true(pre.flat().some((x) => x < -1e-3) && pre.flat().some((x) => x > 1e-3), 'the projection has entries of both signs (the test can tell)');
  const qOn = (await on.embedQueries(batch)).global;
  const qOff = (await off.embedQueries(batch)).global;
  const qUnset = (await unset.embedQueries(batch)).global;
  for (let i = 0; i < B; i++) {
    const row = (q) => Array.from(q.subarray(i * G.D, (i + 1) * G.D));
    close(t, row(qOff), norm(pre[i]), `off, query ${i}`);
    close(t, row(qOn), norm(pre[i].map((x) => Math.max(x, 0))), `on, query ${i}`);
  }
  t.true(Array.from(qOff).some((x) => x < -1e-3), 'off: negative entries survive');
  t.false(Array.from(qOn).some((x) => x < 0), 'on: none');
  t.deepEqual(qUnset, qOn, 'unset: on (the spec)');
  // the image projection (the target) keeps its ReLU
  t.deepEqual((await off.embedTargets(batch)).global, (await on.embedTargets(batch)).global);
});

test('config and flag: --global-text-relu on|off reaches the native textRelu; unset keeps the spec; bad values name the setting', (t) => {
  t.is(onOff('on'), true);
  t.is(onOff('off'), false);
  t.throws(() => onOff('maybe'), { message: /neither on nor off/ });
  t.deepEqual(flagsToConfig({ globalTextRelu: false }).globalTextRelu, false);
  const mo = (over) => T.modelOptions(T.resolveConfig(undefined, over), 10);
  t.is(T.resolveConfig(undefined, {}).globalTextRelu, false, 'the small preset (docs/EXPERIMENTS.md "The global half: options")');
  t.is(T.resolveConfig(undefined, { preset: 'paper' }).globalTextRelu, undefined);
  t.false('textRelu' in nativeConfig(mo({ preset: 'paper' })).options, 'paper: the spec');
  t.is(nativeConfig(mo({ globalTextRelu: false })).options.textRelu, false);
  t.is(nativeConfig(mo({ globalTextRelu: true })).options.textRelu, true);
  t.false('textRelu' in nativeConfig(mo({ globalTextRelu: false, ablations: ['local-only'] })).options, 'no global stream: no option');
  for (const bad of ['off', 0, null]) throwsNaming(t, () => T.resolveConfig(undefined, { globalTextRelu: bad }), 'globalTextRelu', 'DWC_BAD_ARGUMENT');
  t.throws(() => new DwcModel(G, { textRelu: 1 }), { message: /'textRelu'/ });
});
