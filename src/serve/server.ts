// HTTP search service (issue 16, docs/SERVE.md): fastify over the library (Searcher for the
// query embedding, GalleryIndex for ranking); no model logic here. Routes:
//   POST /search     multipart (image, text, k) or JSON {image: base64 | gallery path, text, k}
//   GET  /images/:id a gallery image (only images in the index)
//   GET  /healthz    liveness and index size
//   POST /index      admin (--admin): add uploaded images to the gallery, or {"rescan": true}
//   GET  /           the web page (static files in src/serve/public/)
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import multipart from '@fastify/multipart';
import { DataError } from '../data/errors.js';
import { IMAGE_EXTENSIONS } from '../search/gallery.js';
import { GalleryIndex, type AnnOptions } from '../search/index_db.js';
import { QueryBatcher, serialized, type DecodedQuery, type QueryBatcherOptions } from '../search/query_batcher.js';
import { checkKnownWords, Searcher } from '../search/searcher.js';
import { DwcError, packageRoot } from '../native.js';

export interface ServerOptions {
  /** Checkpoint of the model (or pass an open `searcher`). */
  checkpoint?: string;
  searcher?: Searcher;
  /** LanceDB folder or URI of the gallery index (or pass an open `index`). */
  db?: string;
  index?: GalleryIndex;
  /** Object-storage settings for a remote `db` URI. */
  storageOptions?: Record<string, string>;
  ann?: AnnOptions;
  /** Enable POST /index (default false). */
  admin?: boolean;
  /** Largest accepted image upload in bytes (default 10 MiB). */
  maxUploadBytes?: number;
  /** Largest k (default 100). */
  maxK?: number;
  /** Micro-batching of query embeddings. */
  batch?: QueryBatcherOptions;
  /** pino level ('info', 'warn', …, 'silent'; default 'info'); or a full fastify `logger` option. */
  logLevel?: string;
  logger?: FastifyServerOptions['logger'];
  /** Folder of the web page (default: the package's src/serve/public). */
  publicDir?: string;
  /** Device of the model when opened from `checkpoint`. */
  device?: string;
  /** CLIP weights for a checkpoint on CLIP features when opened from `checkpoint` (default: the path in its config; Searcher.open's `clip`). */
  clip?: string;
}

/** A 4xx error with a JSON body naming the problem. */
class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly code: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

const MIME: Record<string, string> = {
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.webp': 'image/webp',
  '.gif': 'image/gif',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
  '.avif': 'image/avif',
  '.bmp': 'image/bmp',
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};
const STATIC = ['index.html', 'app.js', 'style.css'];

/** A search request after parsing. */
interface SearchInput {
  image?: Buffer | string; // bytes, or a gallery path
  text?: string;
  k?: string | number;
}

function parseK(v: unknown, maxK: number): number {
  if (v === undefined || v === null || v === '') return 10;
  const n = typeof v === 'number' ? v : Number(String(v).trim());
  if (!Number.isInteger(n) || n < 1 || n > maxK) throw new HttpError(400, `'k' must be an integer in [1, ${maxK}], got ${JSON.stringify(v)}`, 'BAD_K', 'k');
  return n;
}

const BASE64 = /^[A-Za-z0-9+/\s]+={0,2}\s*$/;

/**
 * Creates the search service (not yet listening: call `.listen({ host, port })`). The model and
 * index it opened itself are closed by `.close()`.
 */
export async function createServer(o: ServerOptions): Promise<FastifyInstance> {
  const maxUpload = o.maxUploadBytes ?? 10 << 20;
  const maxK = o.maxK ?? 100;
  const publicDir = o.publicDir ?? join(packageRoot, 'src', 'serve', 'public');
  if (!o.searcher && !o.checkpoint) throw new DwcError("createServer: give 'checkpoint' or 'searcher'", 'DWC_BAD_ARGUMENT');
  if (!o.index && !o.db) throw new DwcError("createServer: give 'db' or 'index'", 'DWC_BAD_ARGUMENT');
  const ownSearcher = !o.searcher;
  const searcher = o.searcher ?? (await Searcher.open(o.checkpoint!, { device: o.device, ...(o.clip ? { clip: o.clip } : {}) }));
  const ownIndex = !o.index;
  let index: GalleryIndex;
  try {
    const id = await searcher.identity(); // the checkpoint's sha256 (+ its CLIP's identity on CLIP features)
    index = o.index ?? (await GalleryIndex.open(o.db!, { checkpointId: id, storageOptions: o.storageOptions, ann: o.ann }));
    if (index.meta.checkpointId !== id)
      throw new DataError(`the gallery index at ${index.uri} was built by another checkpoint (${index.meta.checkpoint}), not ${searcher.checkpoint}; rebuild it with \`dwc-native index --rebuild\``, 'DWC_BAD_ARGUMENT', index.uri);
  } catch (e) {
    if (ownSearcher) searcher.dispose();
    throw e;
  }
  // one native call at a time on the model: query batches and admin embeds take turns
  const model = serialized();
  // texts of any lengths share a call (padding masked); an unmasked model's batches keep one length
  const groupKey = searcher.batchIndependent ? undefined : (q: DecodedQuery) => searcher.textLength(q.text);
  const batcher = new QueryBatcher((b) => model(() => searcher.embedDecodedQueries(b)), { groupKey, ...o.batch });
  const embedImages = (files: string[]) => model(() => searcher.embedImages(files));

  const app = Fastify({
    logger: o.logger ?? { level: o.logLevel ?? 'info' },
    bodyLimit: Math.ceil((maxUpload * 4) / 3) + (64 << 10), // base64 JSON uploads
  });
  await app.register(multipart, { limits: { fileSize: maxUpload, files: 64, fields: 16, fieldSize: 64 << 10 } });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    let status = 500;
    let code = err.code ?? 'INTERNAL';
    let message = err.message;
    let field: string | undefined;
    if (err instanceof HttpError) {
      status = err.statusCode;
      field = err.field;
    } else if (err instanceof DataError || (err instanceof DwcError && err.code === 'DWC_BAD_ARGUMENT')) {
      status = 400;
      field = (err as DataError).subject;
      if (field && field.length > 200) field = undefined;
    } else if (code === 'FST_REQ_FILE_TOO_LARGE' || code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      status = 413;
      message = `upload too large: the limit is ${maxUpload} bytes (--max-upload)`;
      code = 'TOO_LARGE';
    } else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) status = err.statusCode;
    if (status >= 500) req.log.error({ err }, 'request failed');
    else req.log.info({ code, message }, 'bad request');
    void reply.status(status).send({ error: { code, message, ...(field ? { field } : {}) } });
  });

  // ---- the web page
  const page = async (name: string, reply: FastifyReply) => {
    const p = join(publicDir, name);
    if (!existsSync(p)) throw new HttpError(404, `the web page is not installed (${p} is missing)`, 'NOT_FOUND');
    return reply.type(MIME[extname(name)]).header('cache-control', 'no-cache').send(readFileSync(p));
  };
  app.get('/', (_req, reply) => page('index.html', reply));
  for (const f of STATIC) app.get(`/${f}`, (_req, reply) => page(f, reply));

  app.get('/healthz', async () => ({
    status: 'ok',
    images: await index.count(),
    dim: index.dim,
    ann: await index.usesAnn(),
    checkpoint: searcher.checkpoint,
    // the CLIP computing the global stream's features (checkpoints trained on CLIP features), else null
    clip: searcher.clip?.plan.dir ?? null,
    batches: batcher.stats,
  }));

  app.get('/images/:id', async (req: FastifyRequest<{ Params: { id: string } }>, reply) => {
    const rel = /^[0-9a-f]{16}$/.test(req.params.id) ? await index.pathOf(req.params.id) : undefined;
    if (!rel) throw new HttpError(404, `no gallery image with id '${req.params.id}'`, 'NOT_FOUND', 'id');
    const file = join(index.galleryRoot, rel);
    if (!existsSync(file)) throw new HttpError(404, `gallery image ${rel} is in the index but no longer on disk (run \`dwc-native index\` again)`, 'NOT_FOUND', 'id');
    return reply.type(MIME[extname(file).toLowerCase()] ?? 'application/octet-stream').header('cache-control', 'max-age=300').send(createReadStream(file));
  });

  // ---- search
  async function readSearchInput(req: FastifyRequest): Promise<SearchInput> {
    if (req.isMultipart()) {
      const out: SearchInput = {};
      for await (const part of req.parts()) {
        if (part.type === 'file') {
          const buf = await part.toBuffer();
          if (part.fieldname === 'image' && out.image === undefined) out.image = buf;
        } else if (part.fieldname === 'text') out.text = String(part.value);
        else if (part.fieldname === 'k') out.k = String(part.value);
        else if (part.fieldname === 'image' && out.image === undefined) out.image = String(part.value); // a gallery path
      }
      return out;
    }
    const b = req.body as Record<string, unknown> | undefined;
    if (!b || typeof b !== 'object' || Array.isArray(b)) throw new HttpError(400, 'send multipart/form-data (image, text, k) or a JSON object {"image", "text", "k"}', 'BAD_BODY');
    if (b.image !== undefined && typeof b.image !== 'string') throw new HttpError(400, "'image' must be a string: base64 of the file, or a gallery path", 'BAD_IMAGE', 'image');
    if (b.text !== undefined && typeof b.text !== 'string') throw new HttpError(400, "'text' must be a string", 'BAD_TEXT', 'text');
    return { image: b.image as string | undefined, text: b.text as string | undefined, k: b.k as number | undefined };
  }

  /** The query image: uploaded bytes, a gallery path of the index, or base64 bytes. */
  async function resolveImage(img: Buffer | string | undefined): Promise<{ image: Buffer | string; galleryPath?: string }> {
    if (img === undefined || img.length === 0) throw new HttpError(400, "no query image: send 'image' (a file, its base64, or a gallery path)", 'NO_IMAGE', 'image');
    if (Buffer.isBuffer(img)) return { image: img };
    if (img.length < 1024) {
      const row = await index.lookup(img.replace(/^\/+/, ''));
      if (row) return { image: join(index.galleryRoot, row.path), galleryPath: row.path };
    }
    const m = /^data:[\w/+.-]+;base64,/.exec(img);
    const b64 = m ? img.slice(m[0].length) : img;
    if (!BASE64.test(b64)) throw new HttpError(400, `'image' is neither a gallery path of the index nor base64 image bytes`, 'BAD_IMAGE', 'image');
    const buf = Buffer.from(b64, 'base64');
    if (buf.length > maxUpload) throw new HttpError(413, `upload too large: ${buf.length} bytes, the limit is ${maxUpload} (--max-upload)`, 'TOO_LARGE', 'image');
    return { image: buf };
  }

  app.post('/search', async (req) => {
    const t0 = performance.now();
    const input = await readSearchInput(req);
    const k = parseK(input.k, maxK);
    const text = (input.text ?? '').trim();
    if (!text) throw new HttpError(400, "'text' is empty: say how the reference image should change", 'EMPTY_TEXT', 'text');
    checkKnownWords(searcher.vocab, text);
    const { image, galleryPath } = await resolveImage(input.image);
    let decoded: DecodedQuery;
    try {
      decoded = await searcher.prepareQuery(image, text); // the model's RGB (+ CLIP's pixels on CLIP features)
    } catch (e) {
      throw new HttpError(400, `the query image is unreadable: ${(e as Error).message.replace(/^cannot decode (the uploaded image: )?/, '')}`, 'BAD_IMAGE', 'image');
    }
    const q = await batcher.submit(decoded);
    const [hits] = await index.search(q.embedding, { k, exclude: [galleryPath] });
    return {
      results: hits.map((h) => ({ rank: h.rank, path: h.path, score: h.score, id: h.id, url: `/images/${h.id}` })),
      w: q.w,
      took_ms: Math.round((performance.now() - t0) * 100) / 100,
      query: { text, image: galleryPath ?? null },
    };
  });

  // ---- admin: add images
  app.post('/index', async (req) => {
    if (!o.admin) throw new HttpError(403, 'POST /index is off: start the server with --admin to add images', 'ADMIN_OFF');
    if (req.isMultipart()) {
      const dir = join(index.galleryRoot, 'uploads');
      mkdirSync(dir, { recursive: true });
      const files: string[] = [];
      for await (const part of req.parts()) {
        if (part.type !== 'file') continue;
        const buf = await part.toBuffer();
        const ext = extname(part.filename ?? '').toLowerCase();
        if (!IMAGE_EXTENSIONS.includes(ext)) throw new HttpError(400, `'${part.filename}': not an image file name (${IMAGE_EXTENSIONS.join(' ')})`, 'BAD_IMAGE', 'image');
        try {
          await searcher.decodeImage(buf);
        } catch (e) {
          throw new HttpError(400, `'${part.filename}': ${(e as Error).message}`, 'BAD_IMAGE', 'image');
        }
        const file = join(dir, createHash('sha256').update(buf).digest('hex').slice(0, 16) + ext);
        writeFileSync(file + '.tmp', buf);
        renameSync(file + '.tmp', file); // never a half-written image in the gallery
        files.push(file);
      }
      if (!files.length) throw new HttpError(400, 'no image files in the upload', 'NO_IMAGE', 'image');
      const r = await index.add(files, { embed: embedImages });
      return { added: r.added, images: await index.count() };
    }
    const b = req.body as { rescan?: boolean } | undefined;
    if (!b?.rescan) throw new HttpError(400, 'send image files (multipart) or {"rescan": true}', 'BAD_BODY');
    return index.update({ embed: embedImages });
  });

  app.addHook('onClose', async () => {
    await batcher.close();
    if (ownIndex) index.close();
    if (ownSearcher) searcher.dispose();
  });
  return app;
}
