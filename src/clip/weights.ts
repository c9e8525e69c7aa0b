// CLIP weights on disk (CLIP-SPEC.md "Names on disk"): detects the naming (OpenAI / open_clip or
// Hugging Face CLIPModel) and the tower kind, maps the file's tensors onto the engine's canonical
// (OpenAI) names and back, and infers the architecture from the shapes ("Architecture").
import { DwcError } from '../native.js';
import { toFloat32, type StTensor } from '../safetensors.js';

export type ClipNaming = 'openai' | 'hf';
export type ClipActivation = 'quick_gelu' | 'gelu';

/** The architecture, read from the weights' shapes (never configured by hand). */
export interface ClipArch {
  /** Image tower kind: 'vit' or 'resnet' (ModifiedResNet, OpenAI / open_clip names only). */
  image: 'vit' | 'resnet';
  naming: ClipNaming;
  embedDim: number;
  resolution: number;
  patchSize: number;
  grid: number;
  visionWidth: number;
  visionLayers: number;
  visionHeads: number;
  contextLength: number;
  vocabSize: number;
  textWidth: number;
  textLayers: number;
  textHeads: number;
  activation: ClipActivation;
  /** ModifiedResNet (0 for a ViT): stem width w (visual.layer1.0.conv1 width), blocks per stage, attnpool heads 32·w/64. */
  rnWidth: number;
  rnLayers: number[];
  rnHeads: number;
}

/** How one canonical tensor is made from tensors of the file. */
interface Binding {
  canonical: string;
  files: string[];  // one name, or three (q, k, v) for 'stack3'
  how: 'copy' | 'transpose' | 'stack3';
  /** false: a BatchNorm running statistic (loaded and saved, never trained, no gradient). */
  trainable?: boolean;
}

const fail = (msg: string): never => {
  throw new DwcError(msg, 'DWC_FORMAT');
};

export function detectNaming(names: Iterable<string>): ClipNaming {
  const s = new Set(names);
  if (s.has('vision_model.embeddings.patch_embedding.weight') || s.has('text_model.embeddings.token_embedding.weight')) return 'hf';
  if ([...s].some((n) => n.startsWith('visual.attnpool.'))) return 'openai'; // ModifiedResNet (OpenAI / open_clip names only)
  if ([...s].some((n) => n.startsWith('visual.trunk.'))) fail('CLIP weights: timm image towers (visual.trunk.*) are not supported (OpenAI-style ViT towers only)');
  if (s.has('visual.conv1.weight') || s.has('token_embedding.weight')) return 'openai';
  return fail(
    'CLIP weights: neither OpenAI/open_clip names (visual.conv1.weight, token_embedding.weight, ...) nor Hugging Face CLIPModel names ' +
      '(vision_model.embeddings.patch_embedding.weight, ...) found',
  );
}

/** Tensors of a file that are not parameters (kept and written back unchanged, never trained). */
export function isNonTrainable(name: string): boolean {
  return name.endsWith('.position_ids') || name.endsWith('num_batches_tracked') || name.endsWith('running_mean') || name.endsWith('running_var');
}

function countLayers(names: string[], prefix: string): number {
  let n = 0;
  const re = new RegExp(`^${prefix.replace(/\./g, '\\.')}(\\d+)\\.`);
  for (const k of names) {
    const m = re.exec(k);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

function blockBindings(naming: ClipNaming, canon: string, file: string, layers: number): Binding[] {
  const out: Binding[] = [];
  for (let i = 0; i < layers; i++) {
    const c = `${canon}${i}.`;
    const f = `${file}${i}.`;
    if (naming === 'openai') {
      for (const s of ['ln_1.weight', 'ln_1.bias', 'attn.in_proj_weight', 'attn.in_proj_bias', 'attn.out_proj.weight', 'attn.out_proj.bias', 'ln_2.weight',
        'ln_2.bias', 'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias'])
        out.push({ canonical: c + s, files: [f + s], how: 'copy' });
    } else {
      const a = `${f}self_attn.`;
      out.push(
        { canonical: c + 'ln_1.weight', files: [f + 'layer_norm1.weight'], how: 'copy' },
        { canonical: c + 'ln_1.bias', files: [f + 'layer_norm1.bias'], how: 'copy' },
        { canonical: c + 'attn.in_proj_weight', files: ['q', 'k', 'v'].map((x) => `${a}${x}_proj.weight`), how: 'stack3' },
        { canonical: c + 'attn.in_proj_bias', files: ['q', 'k', 'v'].map((x) => `${a}${x}_proj.bias`), how: 'stack3' },
        { canonical: c + 'attn.out_proj.weight', files: [a + 'out_proj.weight'], how: 'copy' },
        { canonical: c + 'attn.out_proj.bias', files: [a + 'out_proj.bias'], how: 'copy' },
        { canonical: c + 'ln_2.weight', files: [f + 'layer_norm2.weight'], how: 'copy' },
        { canonical: c + 'ln_2.bias', files: [f + 'layer_norm2.bias'], how: 'copy' },
        { canonical: c + 'mlp.c_fc.weight', files: [f + 'mlp.fc1.weight'], how: 'copy' },
        { canonical: c + 'mlp.c_fc.bias', files: [f + 'mlp.fc1.bias'], how: 'copy' },
        { canonical: c + 'mlp.c_proj.weight', files: [f + 'mlp.fc2.weight'], how: 'copy' },
        { canonical: c + 'mlp.c_proj.bias', files: [f + 'mlp.fc2.bias'], how: 'copy' },
      );
    }
  }
  return out;
}

/** A ModifiedResNet file (spec "Architecture", ModifiedResNet). */
export function isResNetFile(names: Iterable<string>): boolean {
  for (const n of names) if (n.startsWith('visual.attnpool.')) return true;
  return false;
}

/** Blocks per stage of a ModifiedResNet file (count of visual.layerK.N). */
export function resnetLayers(names: string[]): number[] {
  return [1, 2, 3, 4].map((k) => countLayers(names, `visual.layer${k}.`));
}

/** The conv / BN units of a ModifiedResNet, in the native declaration order: [conv name, bn prefix]. */
function resnetUnits(layers: number[]): [string, string][] {
  const u: [string, string][] = [1, 2, 3].map((i) => [`visual.conv${i}.weight`, `visual.bn${i}.`]);
  layers.forEach((L, s) => {
    for (let i = 0; i < L; i++) {
      const p = `visual.layer${s + 1}.${i}.`;
      for (const j of [1, 2, 3]) u.push([`${p}conv${j}.weight`, `${p}bn${j}.`]);
      // downsample when stride > 1 (first block of stages 2–4) or the width changes (first block of stage 1)
      if (i === 0) u.push([`${p}downsample.0.weight`, `${p}downsample.1.`]);
    }
  });
  return u;
}

const ATTNPOOL = ['positional_embedding', 'q_proj.weight', 'q_proj.bias', 'k_proj.weight', 'k_proj.bias', 'v_proj.weight', 'v_proj.bias',
  'c_proj.weight', 'c_proj.bias'].map((n) => `visual.attnpool.${n}`);

/** Every canonical tensor and the file tensors it comes from, for a file with these names. */
export function clipBindings(naming: ClipNaming, names: string[]): Binding[] {
  const b: Binding[] = [];
  const one = (canonical: string, file: string, how: Binding['how'] = 'copy') => b.push({ canonical, files: [file], how });
  if (naming === 'openai' && isResNetFile(names)) {
    if (!names.includes('visual.layer1.0.conv1.weight'))
      fail("CLIP weights: this file holds visual.attnpool.* (a ModifiedResNet image tower) but no 'visual.layer1.0.conv1.weight'");
    const units = resnetUnits(resnetLayers(names));
    for (const [conv, bn] of units) for (const n of [conv, `${bn}weight`, `${bn}bias`]) one(n, n);
    for (const n of ATTNPOOL) one(n, n);
    for (const [, bn] of units)
      for (const n of [`${bn}running_mean`, `${bn}running_var`]) b.push({ canonical: n, files: [n], how: 'copy', trainable: false });
    for (const n of ['token_embedding.weight', 'positional_embedding']) one(n, n);
    b.push(...blockBindings(naming, 'transformer.resblocks.', 'transformer.resblocks.', countLayers(names, 'transformer.resblocks.')));
    for (const n of ['ln_final.weight', 'ln_final.bias', 'text_projection', 'logit_scale']) one(n, n);
  } else if (naming === 'openai') {
    for (const n of ['visual.class_embedding', 'visual.positional_embedding', 'visual.proj', 'visual.conv1.weight', 'visual.ln_pre.weight', 'visual.ln_pre.bias'])
      one(n, n);
    b.push(...blockBindings(naming, 'visual.transformer.resblocks.', 'visual.transformer.resblocks.', countLayers(names, 'visual.transformer.resblocks.')));
    for (const n of ['visual.ln_post.weight', 'visual.ln_post.bias', 'token_embedding.weight', 'positional_embedding']) one(n, n);
    b.push(...blockBindings(naming, 'transformer.resblocks.', 'transformer.resblocks.', countLayers(names, 'transformer.resblocks.')));
    for (const n of ['ln_final.weight', 'ln_final.bias', 'text_projection', 'logit_scale']) one(n, n);
  } else {
    one('visual.class_embedding', 'vision_model.embeddings.class_embedding');
    one('visual.positional_embedding', 'vision_model.embeddings.position_embedding.weight');
    one('visual.proj', 'visual_projection.weight', 'transpose');
    one('visual.conv1.weight', 'vision_model.embeddings.patch_embedding.weight');
    one('visual.ln_pre.weight', 'vision_model.pre_layrnorm.weight');
    one('visual.ln_pre.bias', 'vision_model.pre_layrnorm.bias');
    b.push(...blockBindings(naming, 'visual.transformer.resblocks.', 'vision_model.encoder.layers.', countLayers(names, 'vision_model.encoder.layers.')));
    one('visual.ln_post.weight', 'vision_model.post_layernorm.weight');
    one('visual.ln_post.bias', 'vision_model.post_layernorm.bias');
    one('token_embedding.weight', 'text_model.embeddings.token_embedding.weight');
    one('positional_embedding', 'text_model.embeddings.position_embedding.weight');
    b.push(...blockBindings(naming, 'transformer.resblocks.', 'text_model.encoder.layers.', countLayers(names, 'text_model.encoder.layers.')));
    one('ln_final.weight', 'text_model.final_layer_norm.weight');
    one('ln_final.bias', 'text_model.final_layer_norm.bias');
    one('text_projection', 'text_projection.weight', 'transpose');
    one('logit_scale', 'logit_scale');
  }
  return b;
}

const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);
const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

function asF32(name: string, t: StTensor): Float32Array {
  if (t.dtype === 'F32' || t.dtype === 'F64' || t.dtype === 'F16' || t.dtype === 'BF16') return toFloat32(t);
  return fail(`CLIP weights: tensor '${name}' has dtype ${t.dtype}; expected a float tensor (F32, F16, BF16 or F64)`);
}

function transpose2(a: Float32Array, r: number, c: number): Float32Array {
  const o = new Float32Array(a.length);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) o[j * r + i] = a[i * c + j];
  return o;
}

/** A canonical tensor (engine layout) made from the file's tensors; missing ones are named. */
export function gatherCanonical(b: Binding, file: Map<string, StTensor>): { shape: number[]; data: Float32Array } {
  const ts = b.files.map((n) => {
    const t = file.get(n);
    if (!t) fail(`CLIP weights: missing tensor '${n}' (needed for ${b.canonical})`);
    return t as StTensor;
  });
  if (b.how === 'copy') return { shape: ts[0].shape, data: asF32(b.files[0], ts[0]) };
  if (b.how === 'transpose') {
    const t = ts[0];
    if (t.shape.length !== 2) fail(`CLIP weights: tensor '${b.files[0]}' has shape [${t.shape}], expected a 2-D matrix`);
    return { shape: [t.shape[1], t.shape[0]], data: transpose2(asF32(b.files[0], t), t.shape[0], t.shape[1]) };
  }
  for (let i = 1; i < 3; i++)
    if (!same(ts[i].shape, ts[0].shape)) fail(`CLIP weights: tensor '${b.files[i]}' has shape [${ts[i].shape}] but '${b.files[0]}' has [${ts[0].shape}]`);
  const parts = ts.map((t, i) => asF32(b.files[i], t));
  const data = new Float32Array(parts[0].length * 3);
  parts.forEach((p, i) => data.set(p, i * p.length));
  return { shape: [ts[0].shape[0] * 3, ...ts[0].shape.slice(1)], data };
}

/** The file's tensors of a canonical tensor (the inverse of gatherCanonical), in their file shapes. */
export function scatterCanonical(b: Binding, data: Float32Array, fileShapes: Map<string, number[]>): [string, StTensor][] {
  if (b.how === 'copy') return [[b.files[0], { dtype: 'F32', shape: fileShapes.get(b.files[0]) ?? [data.length], data }]];
  if (b.how === 'transpose') {
    const s = fileShapes.get(b.files[0]) as number[];
    return [[b.files[0], { dtype: 'F32', shape: s, data: transpose2(data, s[1], s[0]) }]];
  }
  const n = data.length / 3;
  return b.files.map((f, i) => [f, { dtype: 'F32', shape: fileShapes.get(f) ?? [n], data: data.slice(i * n, (i + 1) * n) }] as [string, StTensor]);
}

/** The architecture from canonical shapes (spec "Architecture"); a misshaped tensor is named. */
export function inferArch(shapes: Map<string, number[]>, naming: ClipNaming, activation: ClipActivation): ClipArch {
  const get = (n: string, rank: number): number[] => {
    const s = shapes.get(n);
    if (!s) return fail(`CLIP weights: missing tensor '${n}'`);
    if (s.length !== rank) fail(`CLIP weights: tensor '${n}' has shape [${s}], expected ${rank} dimensions`);
    return s;
  };
  const tok = get('token_embedding.weight', 2);
  const [vocabSize, textWidth] = tok;
  const tpos = get('positional_embedding', 2);
  const contextLength = tpos[0];
  const count = (p: string) => {
    let n = 0;
    while (shapes.has(`${p}${n}.ln_1.weight`)) n++;
    return n;
  };
  const textLayers = count('transformer.resblocks.');
  const textHeads = Math.max(1, Math.floor(textWidth / 64));
  if (textWidth % textHeads) fail(`CLIP weights: text width ${textWidth} is not a multiple of the head dim 64`);
  if (shapes.has('visual.attnpool.positional_embedding')) {
    // ModifiedResNet (spec): w = visual.layer1.0.conv1 width, heads = 32·w/64, resolution = 32·√(rows − 1)
    const c1 = get('visual.layer1.0.conv1.weight', 4);
    const rnWidth = c1[0];
    const rnLayers = [1, 2, 3, 4].map((k) => {
      let n = 0;
      while (shapes.has(`visual.layer${k}.${n}.conv1.weight`)) n++;
      return n;
    });
    rnLayers.forEach((L, k) => {
      if (L < 1) fail(`CLIP weights: missing tensor 'visual.layer${k + 1}.0.conv1.weight' (every ModifiedResNet stage needs a block)`);
    });
    if (rnWidth < 2 || rnWidth % 2) fail(`CLIP weights: tensor 'visual.layer1.0.conv1.weight' has shape [${c1}]; the stem width ${rnWidth} must be even`);
    const ap = get('visual.attnpool.positional_embedding', 2);
    const grid = Math.round(Math.sqrt(ap[0] - 1));
    if (grid < 1 || grid * grid + 1 !== ap[0] || ap[1] !== 32 * rnWidth)
      fail(`CLIP weights: tensor 'visual.attnpool.positional_embedding' has shape [${ap}], expected [grid² + 1, ${32 * rnWidth}]`);
    const cp = get('visual.attnpool.c_proj.weight', 2);
    const rnHeads = Math.max(1, Math.floor((rnWidth * 32) / 64));
    if ((32 * rnWidth) % rnHeads) fail(`CLIP weights: attnpool width ${32 * rnWidth} is not a multiple of its ${rnHeads} heads`);
    return {
      image: 'resnet', naming, embedDim: cp[0], resolution: 32 * grid, patchSize: 0, grid, visionWidth: 32 * rnWidth, visionLayers: 0, visionHeads: rnHeads,
      contextLength, vocabSize, textWidth, textLayers, textHeads, activation, rnWidth, rnLayers, rnHeads,
    };
  }
  const conv = get('visual.conv1.weight', 4);
  const visionWidth = conv[0];
  const patchSize = conv[2];
  if (conv[1] !== 3 || conv[3] !== patchSize) fail(`CLIP weights: visual.conv1.weight has shape [${conv}], expected [width, 3, patch, patch]`);
  const vpos = get('visual.positional_embedding', 2);
  const grid = Math.round(Math.sqrt(vpos[0] - 1));
  if (grid * grid + 1 !== vpos[0] || vpos[1] !== visionWidth)
    fail(`CLIP weights: visual.positional_embedding has shape [${vpos}], expected [grid² + 1, ${visionWidth}]`);
  const proj = get('visual.proj', 2);
  const embedDim = proj[1];
  const arch: ClipArch = {
    image: 'vit',
    naming,
    embedDim,
    resolution: patchSize * grid,
    patchSize,
    grid,
    visionWidth,
    visionLayers: count('visual.transformer.resblocks.'),
    visionHeads: Math.max(1, Math.floor(visionWidth / 64)),
    contextLength,
    vocabSize,
    textWidth,
    textLayers,
    textHeads,
    activation,
    rnWidth: 0,
    rnLayers: [0, 0, 0, 0],
    rnHeads: 0,
  };
  if (arch.visionWidth % arch.visionHeads || arch.textWidth % arch.textHeads)
    fail(`CLIP weights: widths ${visionWidth} / ${textWidth} are not multiples of the head dim 64`);
  return arch;
}

/** The shape every canonical tensor must have for `a` (as the native model declares them). */
export function expectedShapes(a: ClipArch): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const w = a.visionWidth, tw = a.textWidth;
  const blocks = (p: string, w: number, L: number) => {
    for (let i = 0; i < L; i++) {
      const q = `${p}${i}.`;
      for (const [n, s] of [['ln_1.weight', [w]], ['ln_1.bias', [w]], ['attn.in_proj_weight', [3 * w, w]], ['attn.in_proj_bias', [3 * w]],
        ['attn.out_proj.weight', [w, w]], ['attn.out_proj.bias', [w]], ['ln_2.weight', [w]], ['ln_2.bias', [w]], ['mlp.c_fc.weight', [4 * w, w]],
        ['mlp.c_fc.bias', [4 * w]], ['mlp.c_proj.weight', [w, 4 * w]], ['mlp.c_proj.bias', [w]]] as [string, number[]][])
        m.set(q + n, s);
    }
  };
  if (a.image === 'resnet') {
    // spec ModifiedResNet: [conv name, bn prefix, in, out, kernel]
    const rw = a.rnWidth;
    const units: [string, string, number, number, number][] = [
      ['visual.conv1.weight', 'visual.bn1.', 3, rw / 2, 3],
      ['visual.conv2.weight', 'visual.bn2.', rw / 2, rw / 2, 3],
      ['visual.conv3.weight', 'visual.bn3.', rw / 2, rw, 3],
    ];
    let cin = rw;
    a.rnLayers.forEach((L, s) => {
      const planes = rw << s;
      for (let i = 0; i < L; i++) {
        const p = `visual.layer${s + 1}.${i}.`;
        units.push([`${p}conv1.weight`, `${p}bn1.`, cin, planes, 1], [`${p}conv2.weight`, `${p}bn2.`, planes, planes, 3],
          [`${p}conv3.weight`, `${p}bn3.`, planes, 4 * planes, 1]);
        if (i === 0) units.push([`${p}downsample.0.weight`, `${p}downsample.1.`, cin, 4 * planes, 1]);
        cin = 4 * planes;
      }
    });
    for (const [conv, bn, ci, co, k] of units) {
      m.set(conv, [co, ci, k, k]);
      for (const n of ['weight', 'bias', 'running_mean', 'running_var']) m.set(bn + n, [co]);
    }
    const C = 32 * rw;
    m.set('visual.attnpool.positional_embedding', [a.grid * a.grid + 1, C]);
    for (const x of ['q', 'k', 'v']) {
      m.set(`visual.attnpool.${x}_proj.weight`, [C, C]);
      m.set(`visual.attnpool.${x}_proj.bias`, [C]);
    }
    m.set('visual.attnpool.c_proj.weight', [a.embedDim, C]);
    m.set('visual.attnpool.c_proj.bias', [a.embedDim]);
  } else {
    m.set('visual.class_embedding', [w]);
    m.set('visual.positional_embedding', [a.grid * a.grid + 1, w]);
    m.set('visual.proj', [w, a.embedDim]);
    m.set('visual.conv1.weight', [w, 3, a.patchSize, a.patchSize]);
    m.set('visual.ln_pre.weight', [w]);
    m.set('visual.ln_pre.bias', [w]);
    blocks('visual.transformer.resblocks.', w, a.visionLayers);
    m.set('visual.ln_post.weight', [w]);
    m.set('visual.ln_post.bias', [w]);
  }
  m.set('token_embedding.weight', [a.vocabSize, tw]);
  m.set('positional_embedding', [a.contextLength, tw]);
  blocks('transformer.resblocks.', tw, a.textLayers);
  m.set('ln_final.weight', [tw]);
  m.set('ln_final.bias', [tw]);
  m.set('text_projection', [tw, a.embedDim]);
  m.set('logit_scale', []);
  return m;
}

/** Checks a canonical tensor's shape (logit_scale: any shape holding one value). */
export function checkShape(canonical: string, fileNames: string[], got: number[], want: number[]): void {
  const ok = canonical === 'logit_scale' ? numel(got) === 1 : same(got, want);
  if (!ok) fail(`CLIP weights: tensor '${fileNames.join("', '")}' has shape [${got}] but the architecture needs [${want}] (for ${canonical})`);
}
