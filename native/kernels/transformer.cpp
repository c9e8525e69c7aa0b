// Transformer kernels of CLIP (CLIP-SPEC.md "Architecture"). GEMMs go through dwc::sgemm
// (core/blas.h) / gemm.h; per-(sequence, head) attention products are issued from inside an
// OpenMP loop (sgemm then runs on the calling thread).
#include "transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../core/blas.h"
#include "../core/op.h"
#include "gemm.h"
#include "../core/vmath.h"

namespace dwc::cpu {

namespace {
constexpr int64_t kParWork = 32768;
}

// ---- LayerNorm --------------------------------------------------------------------------------
namespace {

// One row: y = (x − μ)·rstd·γ + β.
DWC_AVX2_CLONES void ln_fwd_row(const float* xr, const float* gamma, const float* beta, float* yr, float* mean, float* rstd, int C, float eps) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int j = 0; j < C; ++j) s += xr[j];
  const float m = s / C;
  float s2 = 0.f;  // two passes: no cancellation
#pragma omp simd reduction(+ : s2)
  for (int j = 0; j < C; ++j) s2 += (xr[j] - m) * (xr[j] - m);
  const float rs = 1.f / std::sqrt(s2 / C + eps);
  if (mean) *mean = m;
  if (rstd) *rstd = rs;
  if (gamma && beta) {
#pragma omp simd
    for (int j = 0; j < C; ++j) yr[j] = (xr[j] - m) * rs * gamma[j] + beta[j];
  } else {
#pragma omp simd
    for (int j = 0; j < C; ++j) yr[j] = (xr[j] - m) * rs * (gamma ? gamma[j] : 1.f) + (beta ? beta[j] : 0.f);
  }
}

// One row of dx += rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ.
DWC_AVX2_CLONES void ln_bwd_row(const float* xr, const float* gamma, float m, float rs, const float* gr, float* dr, int C) {
  float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
  for (int j = 0; j < C; ++j) {
    const float g = gr[j] * (gamma ? gamma[j] : 1.f);
    a += g;
    b += g * (xr[j] - m) * rs;
  }
  a /= C;
  b /= C;
#pragma omp simd
  for (int j = 0; j < C; ++j) {
    const float g = gr[j] * (gamma ? gamma[j] : 1.f);
    dr[j] += rs * (g - a - (xr[j] - m) * rs * b);
  }
}

// dg[j − j0] += Σ_r dy·x̂, db[j − j0] += Σ_r dy over columns [j0, j1) of every row.
DWC_AVX2_CLONES void ln_affine_cols(const float* x, const float* mean, const float* rstd, const float* dy, int64_t rows, int C, int j0, int j1,
                                    float* dg, float* db) {
  const int nc = j1 - j0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C + j0;
    const float* gr = dy + r * C + j0;
    const float m = mean[r], rs = rstd[r];
#pragma omp simd
    for (int j = 0; j < nc; ++j) {
      dg[j] += gr[j] * (xr[j] - m) * rs;
      db[j] += gr[j];
    }
  }
}

}  // namespace

void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd, int64_t rows, int C,
                       float eps) {
#pragma omp parallel for schedule(static) if (rows * C > kParWork && rows > 1)
  for (int64_t r = 0; r < rows; ++r) ln_fwd_row(x + r * C, gamma, beta, y + r * C, mean ? mean + r : nullptr, rstd ? rstd + r : nullptr, C, eps);
}

// x̂ = (x − μ)·rstd; g = dy·γ: dx += rstd·(g − mean(g) − x̂·mean(g·x̂)); dγ += Σ dy·x̂; dβ += Σ dy.
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd, const float* dy, float* dx,
                        float* dgamma, float* dbeta, int64_t rows, int C) {
  if (dx) {
#pragma omp parallel for schedule(static) if (rows * C > kParWork && rows > 1)
    for (int64_t r = 0; r < rows; ++r) ln_bwd_row(x + r * C, gamma, mean[r], rstd[r], dy + r * C, dx + r * C, C);
  }
  if (dgamma || dbeta) {
    // Threads own disjoint column blocks and walk every row.
    const int blk = 64;
    const int nblk = (C + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (rows * C > kParWork && nblk > 1)
    for (int bi = 0; bi < nblk; ++bi) {
      const int j0 = bi * blk, j1 = std::min(C, j0 + blk);
      float dg[blk], db[blk];
      std::fill(dg, dg + blk, 0.f);
      std::fill(db, db + blk, 0.f);
      ln_affine_cols(x, mean, rstd, dy, rows, C, j0, j1, dg, db);
      for (int j = j0; j < j1; ++j) {
        if (dgamma) dgamma[j] += dg[j - j0];
        if (dbeta) dbeta[j] += db[j - j0];
      }
    }
  }
}

// ---- activations ------------------------------------------------------------------------------
namespace {

constexpr int64_t kSpan = 8192;  // elements per call of a span kernel inside the parallel loop

DWC_AVX2_CLONES void qgelu_fwd_span(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * vm::sigmoid(1.702f * x[i]);
}

// d/dx x·σ(ax) = σ + a·x·σ·(1 − σ)
DWC_AVX2_CLONES void qgelu_bwd_span(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float s = vm::sigmoid(1.702f * x[i]);
    dx[i] += dy[i] * (s + 1.702f * x[i] * s * (1.f - s));
  }
}

DWC_AVX2_CLONES void gelu_fwd_span(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * vm::normal_cdf(x[i]);
}

// d/dx x·Φ(x) = Φ(x) + x·φ(x)
DWC_AVX2_CLONES void gelu_bwd_span(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float pdf = 0.39894228040143268f * vm::exp(-0.5f * x[i] * x[i]);
    dx[i] += dy[i] * (vm::normal_cdf(x[i]) + x[i] * pdf);
  }
}

}  // namespace

// Runs span(offset, length) over n elements in spans of kSpan, in parallel above kParWork.
template <typename Span>
void over_spans(int64_t n, Span&& span) {
  const int64_t ns = (n + kSpan - 1) / kSpan;
#pragma omp parallel for schedule(static) if (n > kParWork)
  for (int64_t c = 0; c < ns; ++c) span(c * kSpan, std::min(kSpan, n - c * kSpan));
}

void quick_gelu_forward(const float* x, float* y, int64_t n) {
  over_spans(n, [=](int64_t o, int64_t m) { qgelu_fwd_span(x + o, y + o, m); });
}

void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  over_spans(n, [=](int64_t o, int64_t m) { qgelu_bwd_span(x + o, dy + o, dx + o, m); });
}

void gelu_forward(const float* x, float* y, int64_t n) {
  over_spans(n, [=](int64_t o, int64_t m) { gelu_fwd_span(x + o, y + o, m); });
}

void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  over_spans(n, [=](int64_t o, int64_t m) { gelu_bwd_span(x + o, dy + o, dx + o, m); });
}

// ---- multi-head self-attention ----------------------------------------------------------------

namespace {

// Where sequence b's rows and attention blocks sit: uniform [B,T] (lens null) or packed variable
// lengths (rows of sequence b follow those of b − 1; its H blocks are lens[b]² each).
struct SeqLayout {
  std::vector<int64_t> row0, att0;
  std::vector<int> len;
  int64_t rows = 0, att_floats = 0;
  SeqLayout(int B, int T, int H, const int32_t* lens) : row0(B), att0(B), len(B) {
    for (int b = 0; b < B; ++b) {
      len[b] = lens ? lens[b] : T;
      row0[b] = rows;
      att0[b] = att_floats;
      rows += len[b];
      att_floats += int64_t(H) * len[b] * len[b];
    }
  }
};

// In-place softmax of row[0, n) (keys with kp[j] != 0 get weight 0); an all-masked row becomes 0.
// Vectorised: masked scores become −inf, vm::exp(−inf) = 0.
DWC_AVX2_CLONES void softmax_row(float* row, int n, const int32_t* kp) {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  if (kp) {
#pragma omp simd
    for (int j = 0; j < n; ++j) row[j] = kp[j] ? ninf : row[j];
  }
  float m = ninf;
#pragma omp simd reduction(max : m)
  for (int j = 0; j < n; ++j) m = std::max(m, row[j]);
  if (m == ninf) {  // every key masked
    std::fill(row, row + n, 0.f);
    return;
  }
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int j = 0; j < n; ++j) {
    const float e = vm::exp(row[j] - m);
    row[j] = e;
    s += e;
  }
  const float inv = 1.f / s;
#pragma omp simd
  for (int j = 0; j < n; ++j) row[j] *= inv;
}

}  // namespace

int64_t mha_rows(int B, int T, const int32_t* lens) {
  if (!lens) return int64_t(B) * T;
  int64_t r = 0;
  for (int b = 0; b < B; ++b) r += lens[b];
  return r;
}

int64_t mha_att_floats(int B, int T, int H, const int32_t* lens) { return SeqLayout(B, T, H, lens).att_floats; }

void mha_forward(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y, float* qkv,
                 float* att, float* ctx, int B, int T, int w, int H, bool causal, const int32_t* key_pad, const int32_t* lens,
                 const float* residual) {
  if (B <= 0) return;
  const SeqLayout L(B, T, H, lens);
  if (L.rows <= 0) return;
  const int d = w / H, w3 = 3 * w;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  linear_forward_fused(x, in_w, in_b, nullptr, qkv, static_cast<int>(L.rows), w, w3, Act::None);  // q | k | v of every row in one GEMM
#pragma omp parallel for schedule(dynamic) if (int64_t(B) * H > 1 && L.rows * w > 4096)
  for (int64_t bh = 0; bh < int64_t(B) * H; ++bh) {
    const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
    const int Tb = L.len[b];
    if (Tb <= 0) continue;
    const float* q = qkv + L.row0[b] * w3 + h * d;
    const float* k = q + w;
    const float* v = q + 2 * w;
    float* A = att + L.att0[b] + int64_t(h) * Tb * Tb;
    // S = q kᵀ / √d  [Tb,Tb]
    sgemm(CblasNoTrans, CblasTrans, Tb, Tb, d, scale, q, w3, k, w3, 0.f, A, Tb);
    const int32_t* kp = key_pad ? key_pad + L.row0[b] : nullptr;
    for (int i = 0; i < Tb; ++i) {
      float* row = A + int64_t(i) * Tb;
      const int jend = causal ? i + 1 : Tb;  // keys j > i masked: exactly 0
      softmax_row(row, jend, kp);
      std::fill(row + jend, row + Tb, 0.f);
    }
    // ctx_h = att · v  [Tb,d] into columns h·d of ctx
    sgemm(CblasNoTrans, CblasNoTrans, Tb, d, Tb, 1.f, A, Tb, v, w3, 0.f, ctx + L.row0[b] * w + h * d, w);
  }
  linear_forward_fused(ctx, out_w, out_b, residual, y, static_cast<int>(L.rows), w, w, Act::None);
}

int64_t mha_query_scratch(int B, int T, int w, const int32_t* lens) { return mha_rows(B, T, lens) * 2 * w + int64_t(B) * (3 * w + T); }

void mha_forward_query(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y, float* scratch,
                       int B, int T, int w, int H, bool causal, const int32_t* lens, const int32_t* q_pos) {
  if (B <= 0) return;
  const SeqLayout L(B, T, H, lens);
  const int d = w / H, w2 = 2 * w;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  float* kv = scratch;              // [rows, 2w]: k | v of every row
  float* xq = kv + L.rows * w2;     // [B, w]: the query rows of x
  float* q = xq + int64_t(B) * w;   // [B, w]
  float* cx = q + int64_t(B) * w;   // [B, w]
  float* sc = cx + int64_t(B) * w;  // [B, T] scores of one head at a time per sequence
  linear_forward(x, in_w + int64_t(w) * w, in_b + w, kv, static_cast<int>(L.rows), w, w2);
  for (int b = 0; b < B; ++b) std::memcpy(xq + int64_t(b) * w, x + (L.row0[b] + q_pos[b]) * w, sizeof(float) * w);
  linear_forward(xq, in_w, in_b, q, B, w, w);
#pragma omp parallel for schedule(static) if (B > 1 && L.rows * w > 4096)
  for (int b = 0; b < B; ++b) {
    const int jend = causal ? q_pos[b] + 1 : L.len[b];
    float* s = sc + int64_t(b) * T;
    for (int h = 0; h < H; ++h) {
      const float* qh = q + int64_t(b) * w + h * d;
      const float* k = kv + L.row0[b] * w2 + h * d;
      const float* v = k + w;
      for (int j = 0; j < jend; ++j) {
        const float* kj = k + int64_t(j) * w2;
        float a = 0.f;
#pragma omp simd reduction(+ : a)
        for (int c = 0; c < d; ++c) a += qh[c] * kj[c];
        s[j] = a * scale;
      }
      softmax_row(s, jend, nullptr);
      float* ch = cx + int64_t(b) * w + h * d;
      std::fill(ch, ch + d, 0.f);
      for (int j = 0; j < jend; ++j) {
        const float p = s[j];
        const float* vj = v + int64_t(j) * w2;
#pragma omp simd
        for (int c = 0; c < d; ++c) ch[c] += p * vj[c];
      }
    }
  }
  linear_forward(cx, out_w, out_b, y, B, w, w);
}

int64_t mha_backward_scratch(int B, int T, int w, int H, const int32_t* lens) {
  const SeqLayout L(B, T, H, lens);
  return L.rows * 3 * w + L.rows * w + L.att_floats;
}

void mha_backward(const float* x, const float* in_w, const float* out_w, const float* qkv, const float* att, const float* ctx,
                  const float* dy, float* dx, float* d_in_w, float* d_in_b, float* d_out_w, float* d_out_b, float* scratch, int B, int T,
                  int w, int H, const int32_t* lens) {
  if (B <= 0) return;
  const SeqLayout L(B, T, H, lens);
  if (L.rows <= 0) return;
  const int d = w / H, w3 = 3 * w;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  float* dqkv = scratch;
  float* dctx = dqkv + L.rows * w3;
  float* dA_all = dctx + L.rows * w;
  std::memset(dctx, 0, sizeof(float) * L.rows * w);
  linear_backward(ctx, out_w, dy, dctx, d_out_w, d_out_b, static_cast<int>(L.rows), w, w);
#pragma omp parallel for schedule(dynamic) if (int64_t(B) * H > 1 && L.rows * w > 4096)
  for (int64_t bh = 0; bh < int64_t(B) * H; ++bh) {
    const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
    const int Tb = L.len[b];
    if (Tb <= 0) continue;
    const int64_t base = L.row0[b] * w3 + h * d;
    const float* q = qkv + base;
    const float* k = q + w;
    const float* v = q + 2 * w;
    float* dq = dqkv + base;
    float* dk = dq + w;
    float* dv = dq + 2 * w;
    const int64_t ao = L.att0[b] + int64_t(h) * Tb * Tb;
    const float* A = att + ao;
    float* dA = dA_all + ao;
    const float* dc = dctx + L.row0[b] * w + h * d;
    // dv = attᵀ · dctx_h ; dA = dctx_h · vᵀ
    sgemm(CblasTrans, CblasNoTrans, Tb, d, Tb, 1.f, A, Tb, dc, w, 0.f, dv, w3);
    sgemm(CblasNoTrans, CblasTrans, Tb, Tb, d, 1.f, dc, w, v, w3, 0.f, dA, Tb);
    // dS = att ⊙ (dA − Σ_j dA·att) · scale (the 1/√d of S folded in)
    for (int i = 0; i < Tb; ++i) {
      const float* ar = A + int64_t(i) * Tb;
      float* gr = dA + int64_t(i) * Tb;
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int j = 0; j < Tb; ++j) s += gr[j] * ar[j];
#pragma omp simd
      for (int j = 0; j < Tb; ++j) gr[j] = ar[j] * (gr[j] - s) * scale;
    }
    // dq = dS · k ; dk = dSᵀ · q
    sgemm(CblasNoTrans, CblasNoTrans, Tb, d, Tb, 1.f, dA, Tb, k, w3, 0.f, dq, w3);
    sgemm(CblasTrans, CblasNoTrans, Tb, d, Tb, 1.f, dA, Tb, q, w3, 0.f, dk, w3);
  }
  linear_backward(x, in_w, dqkv, dx, d_in_w, d_in_b, static_cast<int>(L.rows), w, w3);
}

// ---- ViT patch embedding ----------------------------------------------------------------------

void patchify(const float* x, float* patches, int N, int C, int R, int p) {
  const int g = R / p, K = C * p * p;
#pragma omp parallel for schedule(static) if (int64_t(N) * C * R * R > kParWork)
  for (int64_t ng = 0; ng < int64_t(N) * g; ++ng) {
    const int n = static_cast<int>(ng / g), gy = static_cast<int>(ng % g);
    for (int gx = 0; gx < g; ++gx) {
      float* pr = patches + (int64_t(n) * g * g + int64_t(gy) * g + gx) * K;
      for (int c = 0; c < C; ++c)
        for (int ky = 0; ky < p; ++ky) {
          const float* src = x + ((int64_t(n) * C + c) * R + int64_t(gy) * p + ky) * R + int64_t(gx) * p;
          std::memcpy(pr + (c * p + ky) * p, src, sizeof(float) * p);
        }
    }
  }
}

void patch_embed_forward(const float* x, const float* W, const float* cls, const float* pos, float* y, float* patches, int N, int C, int R,
                         int p, int w) {
  const int g = R / p, G = g * g, K = C * p * p, T = G + 1;
  std::vector<float> own;
  if (!patches) {
    own.resize(size_t(N) * G * K);
    patches = own.data();
  }
  patchify(x, patches, N, C, R, p);
  // One GEMM over all N·G patch rows (W read once; per-image products of G rows ran at ~70% of
  // its rate, docs/CLIP.md "Speed"), written to the last N·G rows of y; then row (n, g) moves to
  // y[n, 1 + g] with the positional embedding added. Its destination row n·T + 1 + g is never
  // after its source row N + n·G + g, so moving in increasing order reads every row before it is
  // overwritten (sequential: a later image's move may land on an earlier image's source).
  float* rows = y + int64_t(N) * w;
  gemm(false, true, N * G, w, K, 1.f, patches, W, 0.f, rows);
  for (int n = 0; n < N; ++n)
    for (int t = 1; t < T; ++t) {
      float* dst = y + (int64_t(n) * T + t) * w;
      const float* src = rows + (int64_t(n) * G + t - 1) * w;
      const float* pt = pos + int64_t(t) * w;
      for (int j = 0; j < w; ++j) dst[j] = src[j] + pt[j];
    }
  for (int n = 0; n < N; ++n) {
    float* yn = y + int64_t(n) * T * w;
    for (int j = 0; j < w; ++j) yn[j] = pos[j] + cls[j];
  }
}

void patch_embed_backward(const float* patches, const float* W, const float* dy, float* dx, float* dW, float* dcls, float* dpos, int N,
                          int C, int R, int p, int w) {
  const int g = R / p, G = g * g, K = C * p * p, T = G + 1;
  if (dcls)
    for (int n = 0; n < N; ++n)
      for (int j = 0; j < w; ++j) dcls[j] += dy[int64_t(n) * T * w + j];
  if (dpos) {
#pragma omp parallel for schedule(static) if (int64_t(N) * T * w > kParWork)
    for (int t = 0; t < T; ++t)
      for (int n = 0; n < N; ++n) {
        const float* src = dy + (int64_t(n) * T + t) * w;
        for (int j = 0; j < w; ++j) dpos[int64_t(t) * w + j] += src[j];
      }
  }
  // dW += Σ_n dy[n,1:]ᵀ · patches[n]
  if (dW)
    for (int n = 0; n < N; ++n)
      sgemm(CblasTrans, CblasNoTrans, w, K, G, 1.f, dy + int64_t(n) * T * w + w, w, patches + int64_t(n) * G * K, K, 1.f, dW, K);
  if (dx) {
    // dpatches = dy[n,1:] · W, then the inverse of patchify (patches do not overlap)
    std::vector<float> dp(size_t(G) * K);
    for (int n = 0; n < N; ++n) {
      sgemm(CblasNoTrans, CblasNoTrans, G, K, w, 1.f, dy + int64_t(n) * T * w + w, w, W, K, 0.f, dp.data(), K);
      for (int gy = 0; gy < g; ++gy)
        for (int gx = 0; gx < g; ++gx) {
          const float* pr = dp.data() + (int64_t(gy) * g + gx) * K;
          for (int c = 0; c < C; ++c)
            for (int ky = 0; ky < p; ++ky) {
              float* dst = dx + ((int64_t(n) * C + c) * R + int64_t(gy) * p + ky) * R + int64_t(gx) * p;
              const float* s = pr + (c * p + ky) * p;
              for (int kx = 0; kx < p; ++kx) dst[kx] += s[kx];
            }
        }
    }
  }
}

// ---- ops (JS tests / benchmarks) --------------------------------------------------------------
namespace {

int64_t rows_of(const OpCtx& c, const Tensor& t, const char* name) {
  DWC_ARG_CHECK(t.ndim() >= 1 && t.dim(-1) > 0, c.op_name << ": argument '" << name << "' must have at least 1 dimension and a non-empty last axis");
  return t.numel() / t.dim(-1);
}

std::vector<int64_t> lead_shape(const Tensor& x) {
  if (x.ndim() <= 1) return {1};
  return std::vector<int64_t>(x.shape.begin(), x.shape.end() - 1);
}

// Width and heads of an attention call; the checks name the argument.
void mha_dims(const OpCtx& c, const Tensor& x, int& B, int& T, int& w, int& H) {
  B = static_cast<int>(x.dim(0));
  T = static_cast<int>(x.dim(1));
  w = static_cast<int>(x.dim(2));
  const int64_t h = c.int_attr("heads");
  DWC_ARG_CHECK(h >= 1 && w % h == 0, c.op_name << ": option 'heads' = " << h << " must be a positive divisor of the width " << w);
  H = static_cast<int>(h);
}

template <void (*FWD)(const float*, float*, int64_t)>
void act_fwd_op(OpCtx& c) {
  const Tensor& x = c.in("x");
  FWD(x.f32(), c.out("y", x.shape).f32(), x.numel());
}

template <void (*BWD)(const float*, const float*, float*, int64_t)>
void act_bwd_op(OpCtx& c) {
  const Tensor& x = c.in("x");
  const Tensor& dy = c.in("dy");
  c.expect_shape(dy, "dy", x.shape);
  BWD(x.f32(), dy.f32(), c.out("dx", x.shape).f32(), x.numel());
}

struct PatchDims {
  int N, C, R, p, w, g;
};
PatchDims patch_dims(const OpCtx& c, const Tensor& x, const Tensor& W) {
  PatchDims d{};
  d.N = static_cast<int>(x.dim(0));
  d.C = static_cast<int>(x.dim(1));
  d.R = static_cast<int>(x.dim(2));
  DWC_ARG_CHECK(x.dim(3) == d.R, c.op_name << ": argument 'x' has shape " << shape_str(x.shape) << ", expected square images [N,C,R,R]");
  c.expect_dim(W, "W", 1, d.C, "channels of x");
  d.w = static_cast<int>(W.dim(0));
  d.p = static_cast<int>(W.dim(2));
  DWC_ARG_CHECK(W.dim(3) == d.p && d.p > 0, c.op_name << ": argument 'W' has shape " << shape_str(W.shape) << ", expected a square kernel [w,C,p,p]");
  DWC_ARG_CHECK(d.R % d.p == 0, c.op_name << ": argument 'x': resolution " << d.R << " is not a multiple of the patch size " << d.p << " of 'W'");
  d.g = d.R / d.p;
  return d;
}

}  // namespace

DWC_REGISTER_OP("layernorm_forward", "x[..,C], gamma[C], beta[C]; eps=1e-5 -> y, mean[..], rstd[..]", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  const Tensor& g = c.in("gamma", 1);
  const Tensor& b = c.in("beta", 1);
  const int64_t rows = rows_of(c, x, "x");
  const int C = static_cast<int>(x.dim(-1));
  c.expect_shape(g, "gamma", {C});
  c.expect_shape(b, "beta", {C});
  const float eps = static_cast<float>(c.attr_or("eps", 1e-5));
  DWC_ARG_CHECK(eps > 0, c.op_name << ": option 'eps' must be positive");
  layernorm_forward(x.f32(), g.f32(), b.f32(), c.out("y", x.shape).f32(), c.out("mean", lead_shape(x)).f32(), c.out("rstd", lead_shape(x)).f32(),
                    rows, C, eps);
});

DWC_REGISTER_OP("layernorm_backward", "x, gamma, mean, rstd, dy -> dx, dgamma, dbeta", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  const Tensor& g = c.in("gamma", 1);
  const Tensor& m = c.in("mean");
  const Tensor& r = c.in("rstd");
  const Tensor& dy = c.in("dy");
  const int64_t rows = rows_of(c, x, "x");
  const int C = static_cast<int>(x.dim(-1));
  c.expect_shape(g, "gamma", {C});
  c.expect_shape(m, "mean", lead_shape(x));
  c.expect_shape(r, "rstd", lead_shape(x));
  c.expect_shape(dy, "dy", x.shape);
  layernorm_backward(x.f32(), g.f32(), m.f32(), r.f32(), dy.f32(), c.out("dx", x.shape).f32(), c.out("dgamma", {C}).f32(),
                     c.out("dbeta", {C}).f32(), rows, C);
});

DWC_REGISTER_OP("quick_gelu_forward", "x -> y = x*sigmoid(1.702x)", act_fwd_op<quick_gelu_forward>);
DWC_REGISTER_OP("quick_gelu_backward", "x, dy -> dx", act_bwd_op<quick_gelu_backward>);
DWC_REGISTER_OP("gelu_forward", "x -> y = x/2*(1+erf(x/sqrt2))", act_fwd_op<gelu_forward>);
DWC_REGISTER_OP("gelu_backward", "x, dy -> dx", act_bwd_op<gelu_backward>);

namespace {

// Optional packed layout of the attention ops: seq_lens int32 [S] (each ≥ 1) with x [1, Σ lens, w].
// Returns the lens pointer (null without seq_lens) and sets B (sequences) and T (longest).
const int32_t* seq_lens_of(const OpCtx& c, const Tensor& x, int& B, int& T) {
  const Tensor* sl = c.in_i32_opt("seq_lens", 1);
  if (!sl) return nullptr;
  DWC_ARG_CHECK(x.dim(0) == 1, c.op_name << ": with 'seq_lens', argument 'x' must be [1, sum of seq_lens, w], got " << shape_str(x.shape));
  DWC_ARG_CHECK(sl->numel() >= 1, c.op_name << ": argument 'seq_lens' is empty");
  int64_t sum = 0;
  int mx = 0;
  for (int64_t i = 0; i < sl->numel(); ++i) {
    const int32_t l = sl->i32()[i];
    DWC_ARG_CHECK(l >= 1, c.op_name << ": argument 'seq_lens' holds length " << l << " at " << i << " (each must be >= 1)");
    sum += l;
    mx = std::max(mx, static_cast<int>(l));
  }
  DWC_ARG_CHECK(sum == x.dim(1), c.op_name << ": argument 'seq_lens' sums to " << sum << " but 'x' has " << x.dim(1) << " rows");
  B = static_cast<int>(sl->numel());
  T = mx;
  return sl->i32();
}

void check_mha_weights(const OpCtx& c, int w, bool biases) {
  c.expect_shape(c.in("in_w", 2), "in_w", {3 * w, w});
  c.expect_shape(c.in("out_w", 2), "out_w", {w, w});
  if (biases) {
    c.expect_shape(c.in("in_b", 1), "in_b", {3 * w});
    c.expect_shape(c.in("out_b", 1), "out_b", {w});
  }
}

}  // namespace

DWC_REGISTER_OP("mha_forward",
                "x[B,T,w], in_w[3w,w], in_b[3w], out_w[w,w], out_b[w], key_padding_mask?[B,T] int32, seq_lens?[S] int32 (x [1,sum,w]); heads, "
                "causal -> y, qkv, att[B,H,T,T] (packed: [H*sum len^2]), ctx",
                [](OpCtx& c) {
                  const Tensor& x = c.in("x", 3);
                  int B, T, w, H;
                  mha_dims(c, x, B, T, w, H);
                  const int32_t* lens = seq_lens_of(c, x, B, T);
                  check_mha_weights(c, w, true);
                  const Tensor* kp = c.in_i32_opt("key_padding_mask", 2);
                  if (kp) c.expect_shape(*kp, "key_padding_mask", {x.dim(0), x.dim(1)});
                  const std::vector<int64_t> att_shape = lens ? std::vector<int64_t>{mha_att_floats(B, T, H, lens)} : std::vector<int64_t>{B, H, T, T};
                  mha_forward(x.f32(), c.in("in_w").f32(), c.in("in_b").f32(), c.in("out_w").f32(), c.in("out_b").f32(), c.out("y", x.shape).f32(),
                              c.out("qkv", {x.dim(0), x.dim(1), 3 * w}).f32(), c.out("att", att_shape).f32(), c.out("ctx", x.shape).f32(), B, T, w, H,
                              c.flag("causal"), kp ? kp->i32() : nullptr, lens);
                });

DWC_REGISTER_OP("mha_forward_query",
                "x[B,T,w] (or [1,sum,w] with seq_lens), in_w, in_b, out_w, out_b, query_pos[B] int32, seq_lens?[B] int32; heads, causal -> y[B,w]",
                [](OpCtx& c) {
                  const Tensor& x = c.in("x", 3);
                  int B, T, w, H;
                  mha_dims(c, x, B, T, w, H);
                  const int32_t* lens = seq_lens_of(c, x, B, T);
                  check_mha_weights(c, w, true);
                  const Tensor& qp = c.in_i32("query_pos", 1);
                  c.expect_shape(qp, "query_pos", {B});
                  for (int b = 0; b < B; ++b) {
                    const int len = lens ? lens[b] : T;
                    DWC_ARG_CHECK(qp.i32()[b] >= 0 && qp.i32()[b] < len,
                                  c.op_name << ": argument 'query_pos' holds " << qp.i32()[b] << " for sequence " << b << " of length " << len);
                  }
                  std::vector<float> scratch(static_cast<size_t>(mha_query_scratch(B, T, w, lens)));
                  mha_forward_query(x.f32(), c.in("in_w").f32(), c.in("in_b").f32(), c.in("out_w").f32(), c.in("out_b").f32(), c.out("y", {B, w}).f32(),
                                    scratch.data(), B, T, w, H, c.flag("causal"), lens, qp.i32());
                });

DWC_REGISTER_OP("mha_backward", "x, in_w, out_w, qkv, att, ctx, dy, seq_lens?; heads -> dx, d_in_w, d_in_b, d_out_w, d_out_b", [](OpCtx& c) {
  const Tensor& x = c.in("x", 3);
  int B, T, w, H;
  mha_dims(c, x, B, T, w, H);
  const int32_t* lens = seq_lens_of(c, x, B, T);
  check_mha_weights(c, w, false);
  const Tensor& qkv = c.in("qkv", 3);
  const Tensor& att = c.in("att");
  const Tensor& ctx = c.in("ctx", 3);
  const Tensor& dy = c.in("dy", 3);
  c.expect_shape(qkv, "qkv", {x.dim(0), x.dim(1), 3 * w});
  if (lens) c.expect_shape(att, "att", {mha_att_floats(B, T, H, lens)});
  else c.expect_shape(att, "att", {B, H, T, T});
  c.expect_shape(ctx, "ctx", x.shape);
  c.expect_shape(dy, "dy", x.shape);
  std::vector<float> scratch(static_cast<size_t>(mha_backward_scratch(B, T, w, H, lens)));
  mha_backward(x.f32(), c.in("in_w").f32(), c.in("out_w").f32(), qkv.f32(), att.f32(), ctx.f32(), dy.f32(), c.out("dx", x.shape).f32(),
               c.out("d_in_w", {3 * w, w}).f32(), c.out("d_in_b", {3 * w}).f32(), c.out("d_out_w", {w, w}).f32(), c.out("d_out_b", {w}).f32(),
               scratch.data(), B, T, w, H, lens);
});

DWC_REGISTER_OP("patch_embed_forward", "x[N,C,R,R], W[w,C,p,p], class_embedding[w], positional_embedding[g*g+1,w] -> y[N,g*g+1,w]",
                [](OpCtx& c) {
                  const Tensor& x = c.in("x", 4);
                  const Tensor& W = c.in("W", 4);
                  const PatchDims d = patch_dims(c, x, W);
                  const Tensor& cls = c.in("class_embedding", 1);
                  const Tensor& pos = c.in("positional_embedding", 2);
                  const int64_t T = int64_t(d.g) * d.g + 1;
                  c.expect_shape(cls, "class_embedding", {d.w});
                  c.expect_shape(pos, "positional_embedding", {T, d.w});
                  patch_embed_forward(x.f32(), W.f32(), cls.f32(), pos.f32(), c.out("y", {d.N, T, d.w}).f32(), nullptr, d.N, d.C, d.R, d.p, d.w);
                });

DWC_REGISTER_OP("patch_embed_backward", "x, W, dy[N,g*g+1,w] -> dx, dW, dclass_embedding, dpositional_embedding", [](OpCtx& c) {
  const Tensor& x = c.in("x", 4);
  const Tensor& W = c.in("W", 4);
  const PatchDims d = patch_dims(c, x, W);
  const Tensor& dy = c.in("dy", 3);
  const int64_t T = int64_t(d.g) * d.g + 1;
  c.expect_shape(dy, "dy", {d.N, T, d.w});
  std::vector<float> patches(size_t(d.N) * (T - 1) * d.C * d.p * d.p);
  patchify(x.f32(), patches.data(), d.N, d.C, d.R, d.p);
  patch_embed_backward(patches.data(), W.f32(), dy.f32(), c.out("dx", x.shape).f32(), c.out("dW", W.shape).f32(),
                       c.out("dclass_embedding", {d.w}).f32(), c.out("dpositional_embedding", {T, d.w}).f32(), d.N, d.C, d.R, d.p, d.w);
});

}  // namespace dwc::cpu
