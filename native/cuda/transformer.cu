// CUDA twin of native/kernels/transformer.h (CLIP-SPEC.md "Architecture"): LayerNorm (one block
// per row; γ/β gradients as column sums over row chunks, then the chunks in order: no atomics),
// QuickGELU / GELU (elementwise), multi-head self-attention (the projections and, per (sequence,
// head), q·kᵀ and att·v as cuBLAS strided-batched GEMMs over the head column blocks of qkv; the
// masked softmax and its backward as one block per attention row; memory O(heads·tokens²) as the
// CPU kernel), the single-query attention of mha_forward_query (one block per (sequence, head))
// and the ViT patch embedding (im2col gather + one strided-batched GEMM).
#include <algorithm>
#include <cmath>
#include <vector>

#include "common.cuh"

namespace dwc::cuda {

namespace {

inline int row_threads(int64_t cols) { return cols <= 64 ? 64 : cols <= 128 ? 128 : 256; }

// ---- LayerNorm ----
__global__ void ln_fwd_k(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd, int C, float eps) {
  __shared__ float sh[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * C;
  float* yr = y + r * C;
  float s = 0.f;
  for (int j = threadIdx.x; j < C; j += blockDim.x) s += xr[j];
  const float m = block_sum(s, sh) / C;
  float s2 = 0.f;  // two passes, as the CPU kernel
  for (int j = threadIdx.x; j < C; j += blockDim.x) s2 += (xr[j] - m) * (xr[j] - m);
  const float rs = 1.f / sqrtf(block_sum(s2, sh) / C + eps);
  if (threadIdx.x == 0) {
    if (mean) mean[r] = m;
    if (rstd) rstd[r] = rs;
  }
  for (int j = threadIdx.x; j < C; j += blockDim.x) yr[j] = (xr[j] - m) * rs * (gamma ? gamma[j] : 1.f) + (beta ? beta[j] : 0.f);
}
// dx += rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ.
__global__ void ln_bwd_k(const float* x, const float* gamma, const float* mean, const float* rstd, const float* dy, float* dx, int C) {
  __shared__ float sh[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * C;
  const float* gr = dy + r * C;
  const float m = mean[r], rs = rstd[r];
  float a = 0.f, b = 0.f;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    const float g = gr[j] * (gamma ? gamma[j] : 1.f);
    a += g;
    b += g * (xr[j] - m) * rs;
  }
  a = block_sum(a, sh) / C;
  b = block_sum(b, sh) / C;
  float* dr = dx + r * C;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    const float g = gr[j] * (gamma ? gamma[j] : 1.f);
    dr[j] += rs * (g - a - (xr[j] - m) * rs * b);
  }
}
// Partial column sums over a chunk of rows: part_g[chunk, j] = Σ dy·x̂, part_b[chunk, j] = Σ dy.
__global__ void ln_affine_part_k(const float* x, const float* mean, const float* rstd, const float* dy, int64_t rows, int C, int64_t chunk,
                                 float* part_g, float* part_b) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= C) return;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  float g = 0.f, b = 0.f;
  for (int64_t r = r0; r < r1; ++r) {
    const float v = dy[r * C + j];
    g += v * (x[r * C + j] - mean[r]) * rstd[r];
    b += v;
  }
  part_g[int64_t(blockIdx.y) * C + j] = g;
  part_b[int64_t(blockIdx.y) * C + j] = b;
}
__global__ void ln_affine_sum_k(const float* part_g, const float* part_b, int nchunk, int C, float* dgamma, float* dbeta) {
  DWC_GRID_STRIDE(j, C) {
    float g = 0.f, b = 0.f;
    for (int k = 0; k < nchunk; ++k) {
      g += part_g[int64_t(k) * C + j];
      b += part_b[int64_t(k) * C + j];
    }
    if (dgamma) dgamma[j] += g;
    if (dbeta) dbeta[j] += b;
  }
}

// ---- activations ----
__device__ __forceinline__ float sigm(float v) { return 1.f / (1.f + expf(-v)); }
__global__ void qgelu_fwd_k(const float* x, float* y, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] = x[i] * sigm(1.702f * x[i]); }
__global__ void qgelu_bwd_k(const float* x, const float* dy, float* dx, int64_t n) {
  DWC_GRID_STRIDE(i, n) {
    const float s = sigm(1.702f * x[i]);
    dx[i] += dy[i] * (s + 1.702f * x[i] * s * (1.f - s));
  }
}
__device__ __forceinline__ float ncdf(float v) { return 0.5f * erfcf(-v * 0.70710678118654752f); }
__global__ void gelu_fwd_k(const float* x, float* y, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] = x[i] * ncdf(x[i]); }
__global__ void gelu_bwd_k(const float* x, const float* dy, float* dx, int64_t n) {
  DWC_GRID_STRIDE(i, n) {
    const float pdf = 0.39894228040143268f * expf(-0.5f * x[i] * x[i]);
    dx[i] += dy[i] * (ncdf(x[i]) + x[i] * pdf);
  }
}

// ---- attention ----
// In place, one block per attention row of `nseq` consecutive sequences of H blocks of Tb×Tb:
// row r → sequence r / (H·Tb), query i = r % Tb. Keys j > i (causal) and keys with a nonzero
// key_pad entry (key_pad + sequence·kp_stride) get weight 0; an all-masked row becomes 0.
__global__ void attn_softmax_k(float* att, int H, int Tb, bool causal, const int32_t* key_pad, int64_t kp_stride) {
  __shared__ float sh[32];
  const int64_t r = blockIdx.x;
  const int i = static_cast<int>(r % Tb);
  const int64_t seq = r / (int64_t(H) * Tb);
  const int32_t* kp = key_pad ? key_pad + seq * kp_stride : nullptr;
  float* row = att + r * Tb;
  const int jend = causal ? i + 1 : Tb;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < jend; j += blockDim.x)
    if (!kp || !kp[j]) m = fmaxf(m, row[j]);
  m = block_max(m, sh);
  if (m == -INFINITY) {
    for (int j = threadIdx.x; j < Tb; j += blockDim.x) row[j] = 0.f;
    return;
  }
  float s = 0.f;
  for (int j = threadIdx.x; j < jend; j += blockDim.x)
    if (!kp || !kp[j]) s += expf(row[j] - m);
  const float inv = 1.f / block_sum(s, sh);
  for (int j = threadIdx.x; j < Tb; j += blockDim.x) row[j] = (j < jend && (!kp || !kp[j])) ? expf(row[j] - m) * inv : 0.f;
}
// In place: dA ← att ⊙ (dA − Σ_j dA·att) · scale.
__global__ void attn_dsoftmax_k(const float* att, float* dA, int Tb, float scale) {
  __shared__ float sh[32];
  const int64_t o = int64_t(blockIdx.x) * Tb;
  float s = 0.f;
  for (int j = threadIdx.x; j < Tb; j += blockDim.x) s += dA[o + j] * att[o + j];
  s = block_sum(s, sh);
  for (int j = threadIdx.x; j < Tb; j += blockDim.x) dA[o + j] = att[o + j] * (dA[o + j] - s) * scale;
}

// The query rows: xq[b, :] = x[qrow[b], :] (qrow in the int table at tab[2B + b]).
__global__ void gather_rows_k(const float* x, float* xq, const int32_t* tab, int B, int w) {
  const int64_t n = int64_t(B) * w;
  DWC_GRID_STRIDE(i, n) {
    const int b = static_cast<int>(i / w);
    xq[i] = x[int64_t(tab[2 * B + b]) * w + i % w];
  }
}
// One block per (sequence b, head h): scores of the one query over keys j < jend (tab[B + b]) of
// rows tab[b] + j, softmax, then ctx. kv [rows, 2w] (k | v), q / cx [B, w]. Dynamic shared: T floats.
__global__ void attn_query_k(const float* kv, const float* q, float* cx, const int32_t* tab, int B, int H, int w, float scale) {
  extern __shared__ float sc[];
  __shared__ float sh[32];
  const int b = blockIdx.x / H, h = blockIdx.x % H, d = w / H, w2 = 2 * w;
  const int64_t row0 = tab[b];
  const int jend = tab[B + b];
  const float* qh = q + int64_t(b) * w + int64_t(h) * d;
  const float* k = kv + row0 * w2 + int64_t(h) * d;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < jend; j += blockDim.x) {
    const float* kj = k + int64_t(j) * w2;
    float a = 0.f;
    for (int c = 0; c < d; ++c) a += qh[c] * kj[c];
    sc[j] = a * scale;
    m = fmaxf(m, sc[j]);
  }
  m = block_max(m, sh);
  float s = 0.f;
  for (int j = threadIdx.x; j < jend; j += blockDim.x) {
    sc[j] = expf(sc[j] - m);
    s += sc[j];
  }
  s = block_sum(s, sh);  // (its barriers also publish sc)
  const float inv = jend > 0 ? 1.f / s : 0.f;
  float* ch = cx + int64_t(b) * w + int64_t(h) * d;
  const float* v = k + w;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float a = 0.f;
    for (int j = 0; j < jend; ++j) a += sc[j] * inv * v[int64_t(j) * w2 + c];
    ch[c] = a;
  }
}

// ---- patch embedding ----
// patches[n, gy·g+gx, (c·p+ky)·p+kx] = x[n, c, gy·p+ky, gx·p+kx]
__global__ void patchify_k(const float* x, float* patches, int N, int C, int R, int p) {
  const int g = R / p, G = g * g, K = C * p * p;
  const int64_t n_all = int64_t(N) * G * K;
  DWC_GRID_STRIDE(i, n_all) {
    const int k = static_cast<int>(i % K);
    const int64_t ng = i / K;
    const int gi = static_cast<int>(ng % G), n = static_cast<int>(ng / G);
    const int c = k / (p * p), ky = (k / p) % p, kx = k % p, gy = gi / g, gx = gi % g;
    patches[i] = x[((int64_t(n) * C + c) * R + int64_t(gy) * p + ky) * R + int64_t(gx) * p + kx];
  }
}
// The inverse, accumulating: dx[n, c, yy, xx] += dp[n, patch, k].
__global__ void unpatchify_add_k(const float* dp, float* dx, int N, int C, int R, int p) {
  const int g = R / p, G = g * g, K = C * p * p;
  const int64_t n_all = int64_t(N) * C * R * R;
  DWC_GRID_STRIDE(i, n_all) {
    const int xx = static_cast<int>(i % R), yy = static_cast<int>((i / R) % R);
    const int c = static_cast<int>((i / (int64_t(R) * R)) % C), n = static_cast<int>(i / (int64_t(C) * R * R));
    const int gy = yy / p, gx = xx / p;
    if (gy >= g || gx >= g) continue;
    dx[i] += dp[(int64_t(n) * G + gy * g + gx) * K + (c * p + yy % p) * p + xx % p];
  }
}
// y[n, t] = pos[t] (+ cls for t = 0)
__global__ void patch_init_k(const float* cls, const float* pos, float* y, int N, int T, int w) {
  const int64_t n_all = int64_t(N) * T * w;
  DWC_GRID_STRIDE(i, n_all) {
    const int64_t tj = i % (int64_t(T) * w);
    y[i] = tj < w ? pos[tj] + cls[tj] : pos[tj];
  }
}
// dcls[j] += Σ_n dy[n, 0, j]; dpos[t, j] += Σ_n dy[n, t, j] (n in order).
__global__ void patch_bias_bwd_k(const float* dy, float* dcls, float* dpos, int N, int T, int w) {
  const int64_t Tw = int64_t(T) * w;
  DWC_GRID_STRIDE(tj, Tw) {
    float s = 0.f;
    for (int n = 0; n < N; ++n) s += dy[n * Tw + tj];
    if (dpos) dpos[tj] += s;
    if (dcls && tj < w) dcls[tj] += s;
  }
}
// dyP[n·G + i, :] = dy[n, 1 + i, :]
__global__ void patch_rows_k(const float* dy, float* dyP, int N, int G, int w) {
  const int64_t n_all = int64_t(N) * G * w;
  DWC_GRID_STRIDE(i, n_all) {
    const int64_t row = i / w, n = row / G, gi = row % G;
    dyP[i] = dy[(n * (G + 1) + 1 + gi) * w + i % w];
  }
}

// Where each sequence's rows and attention blocks sit (as the CPU kernel's SeqLayout).
struct Layout {
  std::vector<int64_t> row0, att0;
  std::vector<int> len;
  int64_t rows = 0, att = 0;
  Layout(int B, int T, int H, const int32_t* lens) : row0(B), att0(B), len(B) {
    for (int b = 0; b < B; ++b) {
      len[b] = lens ? lens[b] : T;
      row0[b] = rows;
      att0[b] = att;
      rows += len[b];
      att += int64_t(H) * len[b] * len[b];
    }
  }
};

void softmax_launch(const Ctx& c, float* att, int64_t nrows, int H, int Tb, bool causal, const int32_t* key_pad, int64_t kp_stride) {
  if (nrows <= 0) return;
  attn_softmax_k<<<static_cast<unsigned>(nrows), row_threads(Tb), 0, c.stream>>>(att, H, Tb, causal, key_pad, kp_stride);
  DWC_CUDA_LAUNCH_CHECK("attn_softmax_k");
}
void dsoftmax_launch(const Ctx& c, const float* att, float* dA, int64_t nrows, int Tb, float scale) {
  if (nrows <= 0) return;
  attn_dsoftmax_k<<<static_cast<unsigned>(nrows), row_threads(Tb), 0, c.stream>>>(att, dA, Tb, scale);
  DWC_CUDA_LAUNCH_CHECK("attn_dsoftmax_k");
}

}  // namespace

void layernorm_forward(const Ctx& c, const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd, int64_t rows,
                       int C, float eps) {
  if (rows <= 0 || C <= 0) return;
  ln_fwd_k<<<static_cast<unsigned>(rows), row_threads(C), 0, c.stream>>>(x, gamma, beta, y, mean, rstd, C, eps);
  DWC_CUDA_LAUNCH_CHECK("ln_fwd_k");
}

void layernorm_backward(const Ctx& c, const float* x, const float* gamma, const float* mean, const float* rstd, const float* dy, float* dx,
                        float* dgamma, float* dbeta, int64_t rows, int C) {
  if (rows <= 0 || C <= 0) return;
  if (dx) {
    ln_bwd_k<<<static_cast<unsigned>(rows), row_threads(C), 0, c.stream>>>(x, gamma, mean, rstd, dy, dx, C);
    DWC_CUDA_LAUNCH_CHECK("ln_bwd_k");
  }
  if (dgamma || dbeta) {
    const int64_t chunk = 64;
    const int nchunk = static_cast<int>(std::min<int64_t>((rows + chunk - 1) / chunk, 65535));
    const int64_t per = (rows + nchunk - 1) / nchunk;
    float* part = c.scratch->f(kScratchA, size_t(2) * nchunk * C);
    dim3 grid((C + 127) / 128, nchunk);
    ln_affine_part_k<<<grid, 128, 0, c.stream>>>(x, mean, rstd, dy, rows, C, per, part, part + int64_t(nchunk) * C);
    DWC_CUDA_LAUNCH_CHECK("ln_affine_part_k");
    ln_affine_sum_k<<<blocks_for(C), kThreads, 0, c.stream>>>(part, part + int64_t(nchunk) * C, nchunk, C, dgamma, dbeta);
    DWC_CUDA_LAUNCH_CHECK("ln_affine_sum_k");
  }
}

void quick_gelu_forward(const Ctx& c, const float* x, float* y, int64_t n) { DWC_LAUNCH_1D(qgelu_fwd_k, n, x, y, n); }
void quick_gelu_backward(const Ctx& c, const float* x, const float* dy, float* dx, int64_t n) { DWC_LAUNCH_1D(qgelu_bwd_k, n, x, dy, dx, n); }
void gelu_forward(const Ctx& c, const float* x, float* y, int64_t n) { DWC_LAUNCH_1D(gelu_fwd_k, n, x, y, n); }
void gelu_backward(const Ctx& c, const float* x, const float* dy, float* dx, int64_t n) { DWC_LAUNCH_1D(gelu_bwd_k, n, x, dy, dx, n); }

void mha_forward(const Ctx& c, const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y,
                 float* qkv, float* att, float* ctx, int B, int T, int w, int H, bool causal, const int32_t* key_pad, const int32_t* lens) {
  if (B <= 0) return;
  const Layout L(B, T, H, lens);
  if (L.rows <= 0) return;
  const int d = w / H, w3 = 3 * w;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  linear_forward(c, x, in_w, in_b, qkv, static_cast<int>(L.rows), w, w3);
  if (!lens) {  // [B, T]: per head, one batched GEMM over the B sequences
    const int64_t sq = int64_t(T) * w3, sa = int64_t(H) * T * T, tt = int64_t(T) * T;
    for (int h = 0; h < H; ++h)
      gemm_strided_ld(c, B, false, true, T, T, d, scale, qkv + h * d, w3, sq, qkv + w + h * d, w3, sq, 0.f, att + h * tt, T, sa);
    softmax_launch(c, att, int64_t(B) * H * T, H, T, causal, key_pad, T);
    for (int h = 0; h < H; ++h)
      gemm_strided_ld(c, B, false, false, T, d, T, 1.f, att + h * tt, T, sa, qkv + 2 * w + h * d, w3, sq, 0.f, ctx + h * d, w,
                      int64_t(T) * w);
  } else {  // packed: per sequence, one batched GEMM over its H heads
    for (int b = 0; b < B; ++b) {
      const int Tb = L.len[b];
      if (Tb <= 0) continue;
      const float* q0 = qkv + L.row0[b] * w3;
      float* A0 = att + L.att0[b];
      const int64_t tt = int64_t(Tb) * Tb;
      gemm_strided_ld(c, H, false, true, Tb, Tb, d, scale, q0, w3, d, q0 + w, w3, d, 0.f, A0, Tb, tt);
      softmax_launch(c, A0, int64_t(H) * Tb, H, Tb, causal, key_pad ? key_pad + L.row0[b] : nullptr, 0);
      gemm_strided_ld(c, H, false, false, Tb, d, Tb, 1.f, A0, Tb, tt, q0 + 2 * w, w3, d, 0.f, ctx + L.row0[b] * w, w, d);
    }
  }
  linear_forward(c, ctx, out_w, out_b, y, static_cast<int>(L.rows), w, w);
}

void mha_forward_query(const Ctx& c, const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y,
                       float* scratch, int B, int T, int w, int H, bool causal, const int32_t* lens, const int32_t* q_pos) {
  if (B <= 0) return;
  const Layout L(B, T, H, lens);
  const int w2 = 2 * w;
  const float scale = 1.f / std::sqrt(static_cast<float>(w / H));
  float* kv = scratch;              // [rows, 2w]
  float* xq = kv + L.rows * w2;     // [B, w]
  float* q = xq + int64_t(B) * w;   // [B, w]
  float* cx = q + int64_t(B) * w;   // [B, w]
  DWC_CHECK(size_t(T) * sizeof(float) <= 48 * 1024, Cuda, "mha_forward_query: T = " << T << " tokens exceeds the one-block score buffer (12288)");
  // int table: row0[B] | jend[B] | query row[B]; uploaded, then the stream synchronised so that the
  // host vector may go (one host wait per call: this is the inference path of a tower's last block)
  std::vector<int32_t> tab(size_t(3) * B);
  int maxlen = 0;
  for (int b = 0; b < B; ++b) {
    tab[b] = static_cast<int32_t>(L.row0[b]);
    tab[B + b] = causal ? q_pos[b] + 1 : L.len[b];
    tab[2 * B + b] = static_cast<int32_t>(L.row0[b] + q_pos[b]);
    maxlen = std::max(maxlen, L.len[b]);
  }
  DWC_CHECK(maxlen <= T, Cuda, "mha_forward_query: a sequence of " << maxlen << " tokens is longer than T = " << T);
  int32_t* dtab = static_cast<int32_t*>(c.scratch->get(kScratchD, tab.size() * sizeof(int32_t)));
  DWC_CUDA_CHECK(cudaMemcpyAsync(dtab, tab.data(), tab.size() * sizeof(int32_t), cudaMemcpyHostToDevice, c.stream));
  DWC_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  if (L.rows > 0) linear_forward(c, x, in_w + int64_t(w) * w, in_b + w, kv, static_cast<int>(L.rows), w, w2);
  gather_rows_k<<<blocks_for(int64_t(B) * w), kThreads, 0, c.stream>>>(x, xq, dtab, B, w);
  DWC_CUDA_LAUNCH_CHECK("gather_rows_k");
  linear_forward(c, xq, in_w, in_b, q, B, w, w);
  attn_query_k<<<static_cast<unsigned>(int64_t(B) * H), 128, size_t(std::max(T, 1)) * sizeof(float), c.stream>>>(kv, q, cx, dtab, B, H, w,
                                                                                                                  scale);
  DWC_CUDA_LAUNCH_CHECK("attn_query_k");
  linear_forward(c, cx, out_w, out_b, y, B, w, w);
}

void mha_backward(const Ctx& c, const float* x, const float* in_w, const float* out_w, const float* qkv, const float* att, const float* ctx,
                  const float* dy, float* dx, float* d_in_w, float* d_in_b, float* d_out_w, float* d_out_b, float* scratch, int B, int T,
                  int w, int H, const int32_t* lens) {
  if (B <= 0) return;
  const Layout L(B, T, H, lens);
  if (L.rows <= 0) return;
  const int d = w / H, w3 = 3 * w;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  float* dqkv = scratch;
  float* dctx = dqkv + L.rows * w3;
  float* dA = dctx + L.rows * w;
  fill(c, dctx, 0.f, L.rows * w);
  linear_backward(c, ctx, out_w, dy, dctx, d_out_w, d_out_b, static_cast<int>(L.rows), w, w);
  if (!lens) {
    const int64_t sq = int64_t(T) * w3, sa = int64_t(H) * T * T, tt = int64_t(T) * T, sc = int64_t(T) * w;
    for (int h = 0; h < H; ++h) {
      // dv = attᵀ·dctx_h ; dA = dctx_h·vᵀ
      gemm_strided_ld(c, B, true, false, T, d, T, 1.f, att + h * tt, T, sa, dctx + h * d, w, sc, 0.f, dqkv + 2 * w + h * d, w3, sq);
      gemm_strided_ld(c, B, false, true, T, T, d, 1.f, dctx + h * d, w, sc, qkv + 2 * w + h * d, w3, sq, 0.f, dA + h * tt, T, sa);
    }
    dsoftmax_launch(c, att, dA, int64_t(B) * H * T, T, scale);
    for (int h = 0; h < H; ++h) {
      // dq = dS·k ; dk = dSᵀ·q
      gemm_strided_ld(c, B, false, false, T, d, T, 1.f, dA + h * tt, T, sa, qkv + w + h * d, w3, sq, 0.f, dqkv + h * d, w3, sq);
      gemm_strided_ld(c, B, true, false, T, d, T, 1.f, dA + h * tt, T, sa, qkv + h * d, w3, sq, 0.f, dqkv + w + h * d, w3, sq);
    }
  } else {
    for (int b = 0; b < B; ++b) {
      const int Tb = L.len[b];
      if (Tb <= 0) continue;
      const int64_t tt = int64_t(Tb) * Tb;
      const float* q0 = qkv + L.row0[b] * w3;
      float* dq0 = dqkv + L.row0[b] * w3;
      const float* A0 = att + L.att0[b];
      float* dA0 = dA + L.att0[b];
      const float* dc0 = dctx + L.row0[b] * w;
      gemm_strided_ld(c, H, true, false, Tb, d, Tb, 1.f, A0, Tb, tt, dc0, w, d, 0.f, dq0 + 2 * w, w3, d);
      gemm_strided_ld(c, H, false, true, Tb, Tb, d, 1.f, dc0, w, d, q0 + 2 * w, w3, d, 0.f, dA0, Tb, tt);
      dsoftmax_launch(c, A0, dA0, int64_t(H) * Tb, Tb, scale);
      gemm_strided_ld(c, H, false, false, Tb, d, Tb, 1.f, dA0, Tb, tt, q0 + w, w3, d, 0.f, dq0, w3, d);
      gemm_strided_ld(c, H, true, false, Tb, d, Tb, 1.f, dA0, Tb, tt, q0, w3, d, 0.f, dq0 + w, w3, d);
    }
  }
  linear_backward(c, x, in_w, dqkv, dx, d_in_w, d_in_b, static_cast<int>(L.rows), w, w3);
}

void patch_embed_forward(const Ctx& c, const float* x, const float* W, const float* cls, const float* pos, float* y, float* patches, int N,
                         int C, int R, int p, int w) {
  if (N <= 0 || w <= 0) return;
  const int g = R / p, G = g * g, K = C * p * p, T = G + 1;
  if (!patches) patches = c.scratch->f(kScratchB, size_t(N) * G * K);
  const int64_t np = int64_t(N) * G * K, ny = int64_t(N) * T * w;
  if (np > 0) {
    patchify_k<<<blocks_for(np), kThreads, 0, c.stream>>>(x, patches, N, C, R, p);
    DWC_CUDA_LAUNCH_CHECK("patchify_k");
  }
  patch_init_k<<<blocks_for(ny), kThreads, 0, c.stream>>>(cls, pos, y, N, T, w);
  DWC_CUDA_LAUNCH_CHECK("patch_init_k");
  // y[n, 1:] += patches[n]·Wᵀ for every image n (one strided-batched GEMM, W shared: stride 0)
  if (G > 0) gemm_strided_ld(c, N, false, true, G, w, K, 1.f, patches, K, int64_t(G) * K, W, K, 0, 1.f, y + w, w, int64_t(T) * w);
}

void patch_embed_backward(const Ctx& c, const float* patches, const float* W, const float* dy, float* dx, float* dW, float* dcls,
                          float* dpos, int N, int C, int R, int p, int w) {
  if (N <= 0 || w <= 0) return;
  const int g = R / p, G = g * g, K = C * p * p, T = G + 1;
  if (dcls || dpos) {
    patch_bias_bwd_k<<<blocks_for(int64_t(T) * w), kThreads, 0, c.stream>>>(dy, dcls, dpos, N, T, w);
    DWC_CUDA_LAUNCH_CHECK("patch_bias_bwd_k");
  }
  if ((!dW && !dx) || G == 0) return;
  const int64_t rowsP = int64_t(N) * G;
  float* dyP = c.scratch->f(kScratchA, size_t(rowsP) * w);  // the patch rows of dy, contiguous
  patch_rows_k<<<blocks_for(rowsP * w), kThreads, 0, c.stream>>>(dy, dyP, N, G, w);
  DWC_CUDA_LAUNCH_CHECK("patch_rows_k");
  if (dW) gemm(c, true, false, w, K, static_cast<int>(rowsP), 1.f, dyP, patches, 1.f, dW);  // dW += dyPᵀ·patches
  if (dx) {
    float* dp = c.scratch->f(kScratchB, size_t(rowsP) * K);
    gemm(c, false, false, static_cast<int>(rowsP), K, w, 1.f, dyP, W, 0.f, dp);  // dpatches = dyP·W
    const int64_t nx = int64_t(N) * C * R * R;
    unpatchify_add_k<<<blocks_for(nx), kThreads, 0, c.stream>>>(dp, dx, N, C, R, p);
    DWC_CUDA_LAUNCH_CHECK("unpatchify_add_k");
  }
}

}  // namespace dwc::cuda
