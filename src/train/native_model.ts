// The native DWC model (src/model.ts) behind the trainer's RetrievalModel interface: images go
// through the trunks (local.img_model.*) and, without frozen feature files, the trainable pooled
// encoder (global.img_enc/txt_enc, spec §12 `small`); ablations and baselines map onto the
// model's options and streams (see docs/EXPERIMENTS.md).
import { existsSync } from 'node:fs';
import { DwcError } from '../native.js';
import { DwcModel, type Batch, type ModelDims as NativeDims, type ModelOptions } from '../model.js';
import { readSafetensors } from '../safetensors.js';
import { loadTrunkWeights, TRUNK_PREFIX } from '../trunk.js';
import { TrunkCache, trunkHash } from './trunk_cache.js';
import { CLIP_ENCODER_PREFIX, loadClipEncoder } from './clip_encoder.js';
import { scaleGlobalHalf } from '../eval/fusion.js';
import type { TrunkCacheContext } from './types.js';
import type { ImageBatch, ImageEmbeddings, ModelCreateOptions, ModelDims, ModelFactory, QueryBatch, QueryEmbeddings, QueryTargetBatch, RetrievalModel, StepLosses, TrainBatch } from './types.js';

/**
 * Native dims and options of a run. Ablations:
 *  - no-ssg / no-editors / fixed-w / no-mutual: the model's switches (α = 0, gates = 1, w = 0.5, no L_mut);
 *  - global-only: only the global stream is built, trained and used for retrieval;
 *  - local-only: only the local stream (with its trunk);
 *  - image-only: baseline; global stream only, no editors, w fixed to 1 (query = reference-image projection);
 *  - text-only: baseline; global stream only, no editors, w fixed to 0 (query = text projection).
 */
export function nativeConfig(o: ModelCreateOptions): { dims: NativeDims; options: ModelOptions } {
  const a = new Set(o.ablations);
  const baseline = a.has('image-only') || a.has('text-only');
  const globalOnly = a.has('global-only') || baseline;
  const localOnly = a.has('local-only');
  const d = o.dims;
  const dims: NativeDims = { D: d.D };
  if (!localOnly) {
    dims.Dc = d.Dc;
    if (!o.frozenFeatures && o.clipEncoder) {
      // docs/MODEL.md §16: the unfrozen CLIP (its architecture: create() from the CLIP folder, load() from the checkpoint)
      dims.encoder = 'clip';
      dims.vocab = o.vocabSize;
    } else if (!o.frozenFeatures) {
      // with the local stream the encoder pools its trunk's maps (unless asked for its own trunk);
      // alone it needs a trunk of its own
      const own = globalOnly || o.encoderTrunk === 'own';
      dims.encoder = own ? 'small' : 'shared';
      dims.vocab = o.vocabSize;
      if (own) dims.encChannels = o.preset === 'small' ? Math.min(64, d.C) : d.C; // small: a narrow encoder trunk (speed)
      dims.encE = d.E;
      if (o.encoderGrid !== undefined && o.encoderGrid !== 1) dims.encGrid = o.encoderGrid;
    }
  }
  if (!globalOnly) {
    dims.C = d.C;
    dims.E = d.E;
    dims.vocab = o.vocabSize;
    dims.trunk = o.preset === 'paper' ? 'resnet50' : 'small';
  }
  const options: ModelOptions = {
    seed: o.seed,
    lr: o.lr,
    ...(o.lrLocal !== undefined && o.lr > 0 && o.lrLocal !== o.lr ? { localLrFactor: o.lrLocal / o.lr } : {}),
    ...(o.clipEncoder && o.lr > 0 ? { encoderLrFactor: o.clipEncoder.encoderLr / o.lr } : {}),
    weightDecay: o.weightDecay,
    masked: o.maskPadding,
    mutualTargetReference: o.mutualTarget === 'reference',
    detachSoftLabels: o.detachSoftLabels,
    noSsg: a.has('no-ssg'),
    noEditors: a.has('no-editors') || baseline,
    fixedW: a.has('fixed-w') || baseline,
    noMutual: a.has('no-mutual'),
  };
  if (baseline) options.fixedWValue = a.has('image-only') ? 1 : 0;
  // PL4CIR-SPEC.md §3 adaptive weighting on the streams that exist (no-aw: off)
  const aw = o.adaptiveWeighting;
  if (aw && !a.has('no-aw')) {
    if (aw.global && dims.Dc !== undefined) options.awGlobal = true;
    if (aw.local && dims.C !== undefined) options.awLocal = true;
    if (options.awGlobal || options.awLocal) {
      options.awTau = aw.tau;
      options.awLambda = aw.lambda;
    }
  }
  if (o.dropout !== undefined) options.dropout = o.dropout;
  if (o.globalDropout !== undefined && dims.Dc !== undefined) options.globalDropout = o.globalDropout;
  if (o.globalTextRelu !== undefined && dims.Dc !== undefined) options.textRelu = o.globalTextRelu;
  if (o.mutualWeightGlobal !== undefined) options.mutualWeightGlobal = o.mutualWeightGlobal;
  if (o.mutualWeightLocal !== undefined) options.mutualWeightLocal = o.mutualWeightLocal;
  if (o.device && o.device !== 'cpu') options.device = o.device;  // --device (the native default is the CPU)
  if (o.tau !== undefined) options.tau = o.tau;
  return { dims, options };
}

/** Frozen/CLIP features [B, d] of reference, text and target as the source of w* (docs/MODEL.md §15). */
function awSource(b: Batch, ref: Float32Array, txt: Float32Array, tgt: Float32Array): void {
  Object.assign(b, { awDim: ref.length / b.B, awRef: ref, awTxt: txt, awTgt: tgt });
}

export class NativeRetrievalModel implements RetrievalModel {
  readonly preset: string;
  readonly dims: ModelDims;
  private training = true;
  private readonly frozen: boolean;
  private cache?: TrunkCache;
  /** The halves' weight β (docs/MODEL.md §7), applied by embedQueries when both streams exist. */
  fusionBeta: number;

  constructor(
    readonly model: DwcModel,
    private readonly opts: ModelCreateOptions,
  ) {
    this.preset = opts.preset;
    this.dims = { ...opts.dims };
    this.frozen = opts.frozenFeatures;
    this.fusionBeta = opts.fusionBeta ?? 1;
  }

  get stepCount(): number {
    return this.model.stats().iteration;
  }

  setLearningRate(lr: number): void {
    this.model.setLearningRate(lr);
  }

  setTraining(on: boolean): void {
    this.training = on; // the native calls choose train/eval mode themselves (step vs embed)
  }

  private features(b: Batch, f: { img?: Float32Array; txt?: Float32Array; target?: Float32Array } | undefined, needed: boolean): void {
    if (!this.frozen) return;
    if (!f && needed) throw new DwcError('the model trains from frozen feature files but the batch carries no features', 'DWC_BAD_ARGUMENT');
    if (!f) return;
    if (!this.hasGlobal) {
      // local-only: no global stream to feed; the features are only w*'s source (docs/MODEL.md §15)
      if (f.img && f.txt && f.target) awSource(b, f.img, f.txt, f.target);
      return;
    }
    b.eImg = f.img;
    b.eTxt = f.txt;
    b.eTarget = f.target;
  }

  /** Whether the model has a global stream (not the local-only ablation). */
  private get hasGlobal(): boolean {
    return this.model.dims.Dc !== undefined;
  }

  async step(batch: TrainBatch): Promise<StepLosses> {
    const S = batch.imageSize;
    const b: Batch = { B: batch.B, images: batch.images, imagesTarget: batch.targets, Hi: S, Wi: S, tokens: batch.tokens, lengths: batch.lengths, L: batch.L, labels: batch.labels };
    this.features(b, batch.features, this.model.dims.Dc !== undefined);
    // the unfrozen CLIP encoder: frozen CLIP features, when the batch carries them, are w*'s source (docs/MODEL.md §16)
    if (this.opts.clipEncoder && batch.features?.target) awSource(b, batch.features.img, batch.features.txt, batch.features.target);
    if (batch.aw) Object.assign(b, { awDim: batch.aw.dim, awRef: batch.aw.ref, awTxt: batch.aw.txt, awTgt: batch.aw.tgt });
    if (this.cache && this.model.dims.trunk && batch.sourceIds && batch.targetIds) {
      // frozen trunk: maps from the cache (ids missing from it: the trunk in eval mode)
      const c = this.cache;
      const all = [...batch.sourceIds, ...batch.targetIds].every((id) => c.has(id));
      if (all) {
        b.fmap = c.gather(batch.sourceIds, batch.flips);
        b.fmapTarget = c.gather(batch.targetIds, batch.flips);
        b.H = c.H;
        b.W = c.W;
      } else {
        const q = await this.model.trunkFeatures(batch.images, batch.B, S, S);
        const t = await this.model.trunkFeatures(batch.targets, batch.B, S, S);
        Object.assign(b, { fmap: q.fmap, fmapTarget: t.fmap, H: q.H, W: q.W });
      }
    }
    const r = await this.model.trainStep(b);
    const out: StepLosses = {};
    for (const s of ['global', 'local'] as const) {
      const x = r[s];
      if (!x) continue;
      out[s] = { contrastive: x.contrastive, mutual: x.mutual, ...(x.aw !== undefined ? { aw: x.aw, awGap: x.awGap } : {}) };
    }
    return out;
  }

  /** w* of the adaptive weighting for a query batch with its targets (eval mode); undefined when it is off. */
  async adaptiveTargets(batch: QueryTargetBatch): Promise<Float32Array | undefined> {
    const o = this.opts.adaptiveWeighting;
    if (!o || this.opts.ablations.includes('no-aw') || !(o.global || o.local)) return undefined;
    const S = batch.imageSize;
    const b: Batch = { B: batch.B, images: batch.images, imagesTarget: batch.targets, Hi: S, Wi: S, tokens: batch.tokens, lengths: batch.lengths, L: batch.L };
    if (this.frozen && batch.features && this.hasGlobal) Object.assign(b, { eImg: batch.features.img, eTxt: batch.features.txt, eTarget: batch.targetFeatures });
    else if ((this.opts.clipEncoder || this.frozen) && batch.features && batch.targetFeatures) awSource(b, batch.features.img, batch.features.txt, batch.targetFeatures);
    if (batch.aw) Object.assign(b, { awDim: batch.aw.dim, awRef: batch.aw.ref, awTxt: batch.aw.txt, awTgt: batch.aw.tgt });
    return this.model.awTargets(b);
  }

  async embedQueries(batch: QueryBatch, o?: { fusionBeta?: number }): Promise<QueryEmbeddings> {
    const S = batch.imageSize;
    const b: Batch = { B: batch.B, images: batch.images, Hi: S, Wi: S, tokens: batch.tokens, lengths: batch.lengths, L: batch.L };
    const kept = this.keptMaps(batch.sourceIds);
    if (kept) Object.assign(b, { images: undefined, fmap: kept.fmap, H: kept.H, W: kept.W });
    if (this.frozen && batch.features && this.hasGlobal) {
      b.eImg = batch.features.img;
      b.eTxt = batch.features.txt;
    }
    const e = await this.model.embedQueries(b);
    // both streams: s = β·s_G + s_L (src/eval/fusion.ts)
    const beta = o?.fusionBeta ?? this.fusionBeta;
    const two = this.model.dims.Dc !== undefined && this.model.dims.C !== undefined && e.globalWeight && e.localWeight;
    const embeddings = two ? scaleGlobalHalf(e.embedding, e.dim, beta) : e.embedding;
    return { embeddings, dim: e.dim, wGlobal: e.globalWeight, wLocal: e.localWeight };
  }

  async embedImages(batch: ImageBatch): Promise<ImageEmbeddings> {
    const S = batch.imageSize;
    const b: Batch = { B: batch.B, images: batch.images, Hi: S, Wi: S };
    if (this.frozen && batch.features && this.hasGlobal) b.eTarget = batch.features;
    const mk = this.maps;
    if (mk && batch.ids && batch.ids.length === batch.B && batch.ids.some((id) => mk.want.has(id) && !mk.maps.has(id))) {
      // the trunk once, its maps kept for the queries' reference images, the embeddings from the
      // maps (the same trunk forward embedTargets would run)
      const t = await this.model.trunkFeatures(batch.images, batch.B, S, S);
      const per = t.fmap.length / batch.B;
      batch.ids.forEach((id, i) => {
        if (!mk.want.has(id) || mk.maps.has(id) || mk.bytes + 4 * per > NativeRetrievalModel.keptMapsBudget) return;
        mk.maps.set(id, t.fmap.slice(i * per, (i + 1) * per));
        mk.bytes += 4 * per;
      });
      mk.H = t.H;
      mk.W = t.W;
      Object.assign(b, { images: undefined, fmapTarget: t.fmap, H: t.H, W: t.W });
    }
    const e = await this.model.embedTargets(b);
    return { embeddings: e.embedding, dim: e.dim };
  }

  /** Bytes of trunk maps keepTrunkMaps may hold (beyond it, queries run the trunk themselves). */
  static keptMapsBudget = 512 * 2 ** 20;
  private maps?: { want: ReadonlySet<string>; maps: Map<string, Float32Array>; bytes: number; H: number; W: number };

  keepTrunkMaps(ids: ReadonlySet<string> | null): void {
    // only where the images feed nothing but the local trunk (a global encoder with a trunk of its
    // own, or an unfrozen CLIP, reads the images too)
    const enc = this.model.dims.encoder;
    this.maps = ids && this.model.dims.trunk && enc !== 'small' && enc !== 'clip' ? { want: ids, maps: new Map(), bytes: 0, H: 0, W: 0 } : undefined;
  }

  /** The kept maps [B, C, H, W] of these reference images, when every one is kept. */
  private keptMaps(ids: readonly string[] | undefined): { fmap: Float32Array; H: number; W: number } | undefined {
    const mk = this.maps;
    if (!mk || !ids?.length || !ids.every((id) => mk.maps.has(id))) return undefined;
    const per = mk.maps.get(ids[0])!.length;
    const fmap = new Float32Array(ids.length * per);
    ids.forEach((id, i) => fmap.set(mk.maps.get(id)!, i * per));
    return { fmap, H: mk.H, W: mk.W };
  }

  save(path: string, metadata: Record<string, string>): void {
    this.model.save(path, metadata);
  }

  async prepareTrunkCache(ctx: TrunkCacheContext): Promise<{ reused: boolean; entries: number }> {
    if (!this.model.dims.trunk) return { reused: false, entries: 0 }; // no local trunk (global-only)
    this.cache?.close();
    const hash = trunkHash(this.model);
    const hit = TrunkCache.open(ctx.dir, hash, ctx.imageSize, ctx.ids);
    if (hit) {
      ctx.onLog?.(`frozen trunk: reusing ${hit.index.ids.length} cached maps [${hit.C}, ${hit.H}, ${hit.W}] in ${ctx.dir}`);
      this.cache = hit;
      return { reused: true, entries: hit.index.ids.length };
    }
    ctx.onLog?.(`frozen trunk: computing the maps of ${ctx.ids.length} images`);
    this.cache = await TrunkCache.build(this.model, hash, ctx);
    return { reused: false, entries: ctx.ids.length };
  }

  dispose(): void {
    this.cache?.close();
    this.cache = undefined;
  }

  get isTraining(): boolean {
    return this.training;
  }
}

export const nativeModelFactory: ModelFactory = {
  create(opts: ModelCreateOptions): RetrievalModel {
    const { dims, options } = nativeConfig(opts);
    let clip: ReturnType<typeof loadClipEncoder> | undefined;
    if (dims.encoder === 'clip') {
      if (!opts.vocabWords) throw new DwcError('the CLIP encoder needs the training vocabulary (vocabWords) to build its token table', 'DWC_BAD_ARGUMENT');
      if (opts.vocabWords.length !== opts.vocabSize) throw new DwcError(`vocabWords holds ${opts.vocabWords.length} words but vocabSize is ${opts.vocabSize}`, 'DWC_BAD_ARGUMENT');
      clip = loadClipEncoder(opts.clipEncoder!.clip, opts.vocabWords);
      dims.clip = { ...clip.arch };
      dims.clipPieces = clip.pieces;
      dims.Dc = clip.arch.embedDim;
    }
    const m = new DwcModel(dims, options);
    if (clip) {
      for (const [name, data] of clip.tensors) m.setParam(name, data);
      m.setParam(`${CLIP_ENCODER_PREFIX}token_map`, clip.tokenMap);
    }
    if (opts.trunkWeights) {
      if (!dims.trunk) throw new DwcError('--trunk-weights needs the local stream (its trunk local.img_model.*)', 'DWC_BAD_ARGUMENT');
      const spec = dims.trunk === 'resnet50' ? { kind: 'resnet50' as const } : { kind: 'small' as const, outChannels: dims.C };
      for (const [name, data] of loadTrunkWeights(opts.trunkWeights, spec)) m.setParam(TRUNK_PREFIX + name, data);
    }
    return new NativeRetrievalModel(m, clip ? { ...opts, dims: { ...opts.dims, Dc: clip.arch.embedDim } } : opts);
  },
  load(path: string, opts: ModelCreateOptions): RetrievalModel {
    if (!existsSync(path)) throw new DwcError(`checkpoint ${path} does not exist`, 'DWC_IO');
    const { dims, options } = nativeConfig(opts);
    const f = readSafetensors(path);
    if (f.metadata.dims) {
      const saved = JSON.parse(f.metadata.dims) as NativeDims;
      // checkpoints of earlier versions: the global encoder with a trunk of its own
      if (saved.encoder === 'small' && dims.encoder === 'shared') {
        dims.encoder = 'small';
        dims.encChannels = saved.encChannels;
      }
      // the unfrozen CLIP's architecture is the checkpoint's (no CLIP folder needed)
      if (saved.encoder === 'clip' && dims.encoder === 'clip') {
        dims.clip = saved.clip;
        if (saved.clipPieces !== undefined) dims.clipPieces = saved.clipPieces;
      }
      // the pooling grid is the checkpoint's (eval/search configs carry the default; files without encGrid: g = 1)
      if (dims.encoder && (saved.encGrid ?? 1) !== (dims.encGrid ?? 1)) {
        if (saved.encGrid === undefined) delete dims.encGrid;
        else dims.encGrid = saved.encGrid;
      }
      for (const k of ['D', 'Dc', 'C', 'E', 'vocab', 'trunk', 'encoder'] as const)
        if (saved[k] !== dims[k]) throw new DwcError(`checkpoint ${path} has ${k} = ${JSON.stringify(saved[k])} but the configuration gives ${JSON.stringify(dims[k])}`, 'DWC_FORMAT');
    }
    const m = new DwcModel(dims, options);
    m.load(path);
    return new NativeRetrievalModel(m, opts);
  },
};
