// CUDA twin of native/kernels/dwc.h (spec §3–§5): the per-sample products as strided-batched
// cuBLAS GEMMs, the softmaxes and loss rows as one block per row. Losses are written to a
// one-float device buffer (the row sums are reduced in a fixed order: deterministic).
#include "common.cuh"

namespace dwc::cuda {

namespace {

constexpr int kRow = 128;  // threads per row block

__device__ __forceinline__ int n_tokens(const int32_t* lengths, int b, int L) {
  if (!lengths) return L;
  const int n = lengths[b];
  return n < 0 ? 0 : (n > L ? L : n);
}

// A_s[b, :, p] = softmax over tokens l < n of S[b, l, p]/temp_s (0 for l ≥ n); one thread per (b, p).
__global__ void attn_spatial_k(const float* S, float* As, const int32_t* lengths, int B, int L, int P, float is) {
  const int64_t total = int64_t(B) * P;
  DWC_GRID_STRIDE(i, total) {
    const int b = static_cast<int>(i / P), p = static_cast<int>(i % P);
    const int n = n_tokens(lengths, b, L);
    const float* s = S + int64_t(b) * L * P + p;
    float* a = As + int64_t(b) * L * P + p;
    float mx = -INFINITY;
    for (int l = 0; l < n; ++l) mx = fmaxf(mx, s[int64_t(l) * P]);
    float sum = 0.f;
    for (int l = 0; l < n; ++l) sum += expf((s[int64_t(l) * P] - mx) * is);
    const float inv = 1.f / sum;
    for (int l = 0; l < L; ++l) a[int64_t(l) * P] = l < n ? expf((s[int64_t(l) * P] - mx) * is) * inv : 0.f;
  }
}

// In place: row (b, l) of S -> softmax over positions of S/temp_w; masked tokens -> 0.
__global__ void attn_word_k(float* S, const int32_t* lengths, int L, int P, float iw) {
  __shared__ float sh[32];
  const int b = blockIdx.x / L, l = blockIdx.x % L;
  float* row = S + int64_t(blockIdx.x) * P;
  if (l >= n_tokens(lengths, b, L)) {
    for (int p = threadIdx.x; p < P; p += blockDim.x) row[p] = 0.f;
    return;
  }
  float m = -INFINITY;
  for (int p = threadIdx.x; p < P; p += blockDim.x) m = fmaxf(m, row[p]);
  m = block_max(m, sh);
  float s = 0.f;
  for (int p = threadIdx.x; p < P; p += blockDim.x) s += expf((row[p] - m) * iw);
  s = block_sum(s, sh);
  const float inv = 1.f / s;
  for (int p = threadIdx.x; p < P; p += blockDim.x) row[p] = expf((row[p] - m) * iw) * inv;
}

// coldot[b, p] = Σ_{l<n} A_s·dA_s; rowdot[b, l] = Σ_p A_w·dA_w.
__global__ void attn_coldot_k(const float* As, const float* gs, float* coldot, const int32_t* lengths, int B, int L, int P) {
  const int64_t total = int64_t(B) * P;
  DWC_GRID_STRIDE(i, total) {
    const int b = static_cast<int>(i / P), p = static_cast<int>(i % P);
    const int n = n_tokens(lengths, b, L);
    const int64_t o = int64_t(b) * L * P + p;
    float d = 0.f;
    for (int l = 0; l < n; ++l) d += As[o + int64_t(l) * P] * gs[o + int64_t(l) * P];
    coldot[i] = d;
  }
}
__global__ void attn_rowdot_k(const float* Aw, const float* gw, float* rowdot, int P) {
  __shared__ float sh[32];
  const int64_t o = int64_t(blockIdx.x) * P;
  float d = 0.f;
  for (int p = threadIdx.x; p < P; p += blockDim.x) d += Aw[o + p] * gw[o + p];
  d = block_sum(d, sh);
  if (threadIdx.x == 0) rowdot[blockIdx.x] = d;
}
// gs <- dS = is·A_s·(gs − coldot) + iw·A_w·(gw − rowdot) for l < n, else 0.
__global__ void attn_dS_k(const float* As, const float* Aw, float* gs, const float* gw, const float* coldot, const float* rowdot,
                          const int32_t* lengths, int B, int L, int P, float is, float iw) {
  const int64_t total = int64_t(B) * L * P;
  DWC_GRID_STRIDE(i, total) {
    const int p = static_cast<int>(i % P);
    const int64_t bl = i / P;
    const int b = static_cast<int>(bl / L), l = static_cast<int>(bl % L);
    if (l >= n_tokens(lengths, b, L)) {
      gs[i] = 0.f;
      continue;
    }
    gs[i] = is * As[i] * (gs[i] - coldot[int64_t(b) * P + p]) + iw * Aw[i] * (gw[i] - rowdot[bl]);
  }
}

__global__ void fusion_fwd_k(const float* a, const float* b, const float* w, float* out, int64_t n, int D) {
  DWC_GRID_STRIDE(i, n) {
    const float wi = w[i / D];
    out[i] = wi * a[i] + (1.f - wi) * b[i];
  }
}
__global__ void fusion_bwd_k(const float* a, const float* b, const float* w, const float* dout, float* da, float* db, float* dw, int D) {
  __shared__ double sh[32];
  const int64_t o = int64_t(blockIdx.x) * D;
  const float wi = w[blockIdx.x];
  double s = 0.0;  // dw is a small difference of large terms
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float g = dout[o + d];
    if (da) da[o + d] += wi * g;
    if (db) db[o + d] += (1.f - wi) * g;
    s += double(g) * (a[o + d] - b[o + d]);
  }
  s = block_sum(s, sh);
  if (dw && threadIdx.x == 0) dw[blockIdx.x] += static_cast<float>(s);
}

// Row i of sim (t tᵀ/τ) -> softmax in place; Q = α·softmax + (1−α)·[y_i = y_j]/count.
__global__ void soft_labels_row_k(float* sim, float* Q, const int32_t* labels, int B, float alpha) {
  __shared__ float sh[32];
  const int i = blockIdx.x;
  float* row = sim + int64_t(i) * B;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < B; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_max(m, sh);
  float s = 0.f, cnt = 0.f;
  for (int j = threadIdx.x; j < B; j += blockDim.x) {
    s += expf(row[j] - m);
    cnt += labels[j] == labels[i] ? 1.f : 0.f;
  }
  s = block_sum(s, sh);
  cnt = block_sum(cnt, sh);
  const float inv = 1.f / s, y = (1.f - alpha) / cnt;
  float* q = Q + int64_t(i) * B;
  for (int j = threadIdx.x; j < B; j += blockDim.x) {
    const float sm = expf(row[j] - m) * inv;
    row[j] = sm;
    q[j] = alpha * sm + (labels[j] == labels[i] ? y : 0.f);
  }
}
__global__ void soft_labels_ds_k(const float* sm, const float* dQ, float* ds, int B, float k) {
  __shared__ float sh[32];
  const int64_t o = int64_t(blockIdx.x) * B;
  float r = 0.f;
  for (int j = threadIdx.x; j < B; j += blockDim.x) r += dQ[o + j] * sm[o + j];
  r = block_sum(r, sh);
  for (int j = threadIdx.x; j < B; j += blockDim.x) ds[o + j] = k * sm[o + j] * (dQ[o + j] - r);
}
__global__ void sym_k(const float* ds, float* g, int B) {
  const int64_t n = int64_t(B) * B;
  DWC_GRID_STRIDE(i, n) g[i] = ds[i] + ds[(i % B) * B + i / B];
}

// log_softmax of a row in place as the CPU kernel (max, Σ exp in double, lse = m + log Σ); returns
// nothing, the row is rewritten. Block-wide.
__device__ void log_softmax_row_inplace(float* row, int n, float* shf, double* shd) {
  float m = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_max(m, shf);
  double s = 0.0;
  for (int j = threadIdx.x; j < n; j += blockDim.x) s += exp(double(row[j] - m));
  s = block_sum(s, shd);
  const float lse = m + static_cast<float>(log(s));
  for (int j = threadIdx.x; j < n; j += blockDim.x) row[j] = row[j] - lse;
}

__global__ void contrastive_row_k(float* logp, const float* Q, double* rowsum, int B) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t o = int64_t(blockIdx.x) * B;
  log_softmax_row_inplace(logp + o, B, shf, shd);
  double s = 0.0;
  for (int j = threadIdx.x; j < B; j += blockDim.x) s += double(Q[o + j]) * logp[o + j];
  s = block_sum(s, shd);
  if (threadIdx.x == 0) rowsum[blockIdx.x] = s;
}
// loss = scale · Σ_i rowsum[i], summed in order by one block.
__global__ void finish_loss_k(const double* rowsum, int B, double scale, float* loss) {
  __shared__ double shd[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < B; i += blockDim.x) s += rowsum[i];
  s = block_sum(s, shd);
  if (threadIdx.x == 0) *loss = static_cast<float>(s * scale);
}
__global__ void axpy_k(float* y, float a, const float* x, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] += a * x[i]; }
// dZ[i, j] = k·(exp(lp_ij)·Σ_j r_ij − r_ij) (contrastive: r = Q; mutual: r = p2).
__global__ void dlogits_k(const float* lp, const float* r, float* dZ, int B, float k) {
  __shared__ float sh[32];
  const int64_t o = int64_t(blockIdx.x) * B;
  float rs = 0.f;
  for (int j = threadIdx.x; j < B; j += blockDim.x) rs += r[o + j];
  rs = block_sum(rs, sh);
  for (int j = threadIdx.x; j < B; j += blockDim.x) dZ[o + j] = k * (expf(lp[o + j]) * rs - r[o + j]);
}
// Rows of X1 (-> log_softmax) and X2 (-> softmax) and their KL(p2 ‖ p1) (xlogy: 0·log 0 = 0).
__global__ void mutual_row_k(float* l1, float* r2, double* rowsum, int B) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t o = int64_t(blockIdx.x) * B;
  log_softmax_row_inplace(l1 + o, B, shf, shd);
  log_softmax_row_inplace(r2 + o, B, shf, shd);
  double kl = 0.0;
  for (int j = threadIdx.x; j < B; j += blockDim.x) {
    const float pj = expf(r2[o + j]);
    if (pj > 0.f) kl += double(pj) * (r2[o + j] - l1[o + j]);
    r2[o + j] = pj;
  }
  kl = block_sum(kl, shd);
  if (threadIdx.x == 0) rowsum[blockIdx.x] = kl;
}

}  // namespace

void cross_attention_forward(const Ctx& c, const float* T, const float* I, const int32_t* lengths, float* S_hat, float* I_hat, float* A_s,
                             float* A_w, int B, int L, int D, int P, float temp_s, float temp_w) {
  if (B <= 0 || L <= 0 || P <= 0) return;
  const int64_t LP = int64_t(L) * P, LD = int64_t(L) * D, DP = int64_t(D) * P;
  gemm_batched(c, B, false, false, L, P, D, 1.f, T, LD, I, DP, 0.f, A_w, LP);  // S_b = T_b I_b into A_w
  attn_spatial_k<<<blocks_for(int64_t(B) * P), kThreads, 0, c.stream>>>(A_w, A_s, lengths, B, L, P, 1.f / temp_s);
  DWC_CUDA_LAUNCH_CHECK("attn_spatial_k");
  attn_word_k<<<B * L, kRow, 0, c.stream>>>(A_w, lengths, L, P, 1.f / temp_w);
  DWC_CUDA_LAUNCH_CHECK("attn_word_k");
  gemm_batched(c, B, true, false, D, P, L, 1.f, T, LD, A_s, LP, 0.f, S_hat, DP);   // Ŝ = Tᵀ A_s
  gemm_batched(c, B, false, true, D, L, P, 1.f, I, DP, A_w, LP, 0.f, I_hat, LD);   // Î = I A_wᵀ
}

void cross_attention_backward(const Ctx& c, const float* T, const float* I, const int32_t* lengths, const float* A_s, const float* A_w,
                              const float* dS_hat, const float* dI_hat, float* dT, float* dI, int B, int L, int D, int P, float temp_s,
                              float temp_w) {
  if ((!dT && !dI) || B <= 0 || L <= 0 || P <= 0) return;
  const int64_t LP = int64_t(L) * P, LD = int64_t(L) * D, DP = int64_t(D) * P;
  float* dAs = c.scratch->f(kScratchA, B * LP);
  float* dAw = c.scratch->f(kScratchB, B * LP);
  float* dots = c.scratch->f(kScratchC, int64_t(B) * P + int64_t(B) * L);
  gemm_batched(c, B, false, false, L, P, D, 1.f, T, LD, dS_hat, DP, 0.f, dAs, LP);  // dA_s = T dŜ
  gemm_batched(c, B, true, false, L, P, D, 1.f, dI_hat, LD, I, DP, 0.f, dAw, LP);   // dA_w = dÎᵀ I
  if (dT) gemm_batched(c, B, false, true, L, D, P, 1.f, A_s, LP, dS_hat, DP, 1.f, dT, LD);  // dT += A_s dŜᵀ
  if (dI) gemm_batched(c, B, false, false, D, P, L, 1.f, dI_hat, LD, A_w, LP, 1.f, dI, DP);  // dI += dÎ A_w
  attn_coldot_k<<<blocks_for(int64_t(B) * P), kThreads, 0, c.stream>>>(A_s, dAs, dots, lengths, B, L, P);
  DWC_CUDA_LAUNCH_CHECK("attn_coldot_k");
  attn_rowdot_k<<<B * L, kRow, 0, c.stream>>>(A_w, dAw, dots + int64_t(B) * P, P);
  DWC_CUDA_LAUNCH_CHECK("attn_rowdot_k");
  attn_dS_k<<<blocks_for(B * LP), kThreads, 0, c.stream>>>(A_s, A_w, dAs, dAw, dots, dots + int64_t(B) * P, lengths, B, L, P, 1.f / temp_s,
                                                           1.f / temp_w);
  DWC_CUDA_LAUNCH_CHECK("attn_dS_k");
  if (dT) gemm_batched(c, B, false, true, L, D, P, 1.f, dAs, LP, I, DP, 1.f, dT, LD);   // dT += dS Iᵀ
  if (dI) gemm_batched(c, B, true, false, D, P, L, 1.f, T, LD, dAs, LP, 1.f, dI, DP);   // dI += Tᵀ dS
}

void weighted_fusion_forward(const Ctx& c, const float* a, const float* b, const float* w, float* out, int B, int D) {
  const int64_t n = int64_t(B) * D;
  if (n <= 0) return;
  fusion_fwd_k<<<blocks_for(n), kThreads, 0, c.stream>>>(a, b, w, out, n, D);
  DWC_CUDA_LAUNCH_CHECK("fusion_fwd_k");
}
void weighted_fusion_backward(const Ctx& c, const float* a, const float* b, const float* w, const float* dout, float* da, float* db,
                              float* dw, int B, int D) {
  if (B <= 0 || D <= 0) return;
  fusion_bwd_k<<<B, kRow, 0, c.stream>>>(a, b, w, dout, da, db, dw, D);
  DWC_CUDA_LAUNCH_CHECK("fusion_bwd_k");
}

void soft_labels_forward(const Ctx& c, const float* t, const int32_t* labels, float* Q, float* sm, int B, int D, float alpha, float tau) {
  if (B <= 0) return;
  gemm(c, false, true, B, B, D, 1.f / tau, t, t, 0.f, sm);  // t tᵀ/τ
  soft_labels_row_k<<<B, kRow, 0, c.stream>>>(sm, Q, labels, B, alpha);
  DWC_CUDA_LAUNCH_CHECK("soft_labels_row_k");
}
void soft_labels_backward(const Ctx& c, const float* t, const float* sm, const float* dQ, float* dt, int B, int D, float alpha, float tau) {
  if (!dt || B <= 0) return;
  const int64_t BB = int64_t(B) * B;
  float* ds = c.scratch->f(kScratchA, BB);
  float* g = c.scratch->f(kScratchB, BB);
  soft_labels_ds_k<<<B, kRow, 0, c.stream>>>(sm, dQ, ds, B, alpha / tau);
  DWC_CUDA_LAUNCH_CHECK("soft_labels_ds_k");
  sym_k<<<blocks_for(BB), kThreads, 0, c.stream>>>(ds, g, B);
  DWC_CUDA_LAUNCH_CHECK("sym_k");
  gemm(c, false, false, B, D, B, 1.f, g, t, 1.f, dt);  // dt += (ds + dsᵀ) t
}

void contrastive_forward(const Ctx& c, const float* q, const float* t, const float* Q, float* logp, float* loss, int B, int D, float tau) {
  if (B <= 0) return;
  double* rows = static_cast<double*>(c.scratch->get(kScratchA, sizeof(double) * B));
  gemm(c, false, true, B, B, D, 1.f / tau, q, t, 0.f, logp);  // Z = q tᵀ/τ
  contrastive_row_k<<<B, kRow, 0, c.stream>>>(logp, Q, rows, B);
  DWC_CUDA_LAUNCH_CHECK("contrastive_row_k");
  finish_loss_k<<<1, 256, 0, c.stream>>>(rows, B, -1.0 / B, loss);
  DWC_CUDA_LAUNCH_CHECK("finish_loss_k");
}
void contrastive_backward(const Ctx& c, const float* q, const float* t, const float* Q, const float* logp, float dL, float* dq, float* dt,
                          float* dQ, int B, int D, float tau) {
  if (B <= 0) return;
  const float k = dL / static_cast<float>(B);
  const int64_t BB = int64_t(B) * B;
  if (dQ) {
    axpy_k<<<blocks_for(BB), kThreads, 0, c.stream>>>(dQ, -k, logp, BB);
    DWC_CUDA_LAUNCH_CHECK("axpy_k");
  }
  if (!dq && !dt) return;
  float* dZ = c.scratch->f(kScratchA, BB);
  dlogits_k<<<B, kRow, 0, c.stream>>>(logp, Q, dZ, B, k);
  DWC_CUDA_LAUNCH_CHECK("dlogits_k");
  if (dq) gemm(c, false, false, B, D, B, 1.f / tau, dZ, t, 1.f, dq);  // dq += dZ t / τ
  if (dt) gemm(c, true, false, B, D, B, 1.f / tau, dZ, q, 1.f, dt);   // dt += dZᵀ q / τ
}

void mutual_forward(const Ctx& c, const float* q, const float* t, const float* q2, const float* t2, float* logp1, float* p2, float* loss,
                    int B, int D, float s) {
  if (B <= 0) return;
  double* rows = static_cast<double*>(c.scratch->get(kScratchA, sizeof(double) * B));
  gemm(c, false, true, B, B, D, s, q, t, 0.f, logp1);
  gemm(c, false, true, B, B, D, s, q2, t2, 0.f, p2);
  mutual_row_k<<<B, kRow, 0, c.stream>>>(logp1, p2, rows, B);
  DWC_CUDA_LAUNCH_CHECK("mutual_row_k");
  finish_loss_k<<<1, 256, 0, c.stream>>>(rows, B, 1.0 / B, loss);
  DWC_CUDA_LAUNCH_CHECK("finish_loss_k");
}
void mutual_backward(const Ctx& c, const float* q, const float* t, const float* logp1, const float* p2, float dL, float* dq, float* dt,
                     int B, int D, float s) {
  if ((!dq && !dt) || B <= 0) return;
  float* dX = c.scratch->f(kScratchA, int64_t(B) * B);
  dlogits_k<<<B, kRow, 0, c.stream>>>(logp1, p2, dX, B, dL / static_cast<float>(B));
  DWC_CUDA_LAUNCH_CHECK("dlogits_k");
  if (dq) gemm(c, false, false, B, D, B, s, dX, t, 1.f, dq);  // dq += s dX t
  if (dt) gemm(c, true, false, B, D, B, s, dX, q, 1.f, dt);   // dt += s dXᵀ q
}


// ---- self-supervised adaptive weighting (PL4CIR-SPEC.md §3): cosines in double, one block per row ----
namespace {

__global__ void aw_target_k(const float* e_ref, const float* e_txt, const float* e_tgt, float* w_star, float* s_img, float* s_txt, int Dc,
                            float tau_w) {
  __shared__ double sh[32];
  const int64_t o = int64_t(blockIdx.x) * Dc;
  double rr = 0, tt = 0, gg = 0, rg = 0, tg = 0;
  for (int d = threadIdx.x; d < Dc; d += blockDim.x) {
    const double r = e_ref[o + d], t = e_txt[o + d], g = e_tgt[o + d];
    rr += r * r;
    tt += t * t;
    gg += g * g;
    rg += r * g;
    tg += t * g;
  }
  rr = block_sum(rr, sh);
  tt = block_sum(tt, sh);
  gg = block_sum(gg, sh);
  rg = block_sum(rg, sh);
  tg = block_sum(tg, sh);
  if (threadIdx.x == 0) {
    const double ng = fmax(sqrt(gg), 1e-12);
    const double si = rg / (fmax(sqrt(rr), 1e-12) * ng), st = tg / (fmax(sqrt(tt), 1e-12) * ng);
    if (s_img) s_img[blockIdx.x] = static_cast<float>(si);
    if (s_txt) s_txt[blockIdx.x] = static_cast<float>(st);
    w_star[blockIdx.x] = static_cast<float>(1.0 / (1.0 + exp(-(si - st) / tau_w)));
  }
}
// L_w = λ/B · Σ BCE(w, w*), logs clamped at −100 (torch BCELoss); one block.
__global__ void aw_loss_k(const float* w, const float* w_star, float* loss, int B, float lambda) {
  __shared__ double sh[32];
  double s = 0;
  for (int i = threadIdx.x; i < B; i += blockDim.x) {
    const double wi = w[i], lw = fmax(log(wi), -100.0), l1w = fmax(log1p(-wi), -100.0);
    s -= w_star[i] * lw + (1.0 - w_star[i]) * l1w;
  }
  s = block_sum(s, sh);
  if (threadIdx.x == 0) *loss = static_cast<float>(lambda * s / B);
}
__global__ void aw_loss_bwd_k(const float* w, const float* w_star, double k, float* dw, int B) {
  DWC_GRID_STRIDE(i, B) {
    const double wi = w[i];
    dw[i] += static_cast<float>(k * (wi - w_star[i]) / fmax(wi * (1.0 - wi), 1e-12));
  }
}

}  // namespace

void adaptive_weight_target(const Ctx& c, const float* e_ref, const float* e_txt, const float* e_tgt, float* w_star, float* s_img,
                            float* s_txt, int B, int Dc, float tau_w) {
  if (B <= 0) return;
  aw_target_k<<<B, kRow, 0, c.stream>>>(e_ref, e_txt, e_tgt, w_star, s_img, s_txt, Dc, tau_w);
  DWC_CUDA_LAUNCH_CHECK("aw_target_k");
}
void adaptive_weight_loss_forward(const Ctx& c, const float* w, const float* w_star, float* loss, int B, float lambda) {
  if (B <= 0) return;
  aw_loss_k<<<1, 256, 0, c.stream>>>(w, w_star, loss, B, lambda);
  DWC_CUDA_LAUNCH_CHECK("aw_loss_k");
}
void adaptive_weight_loss_backward(const Ctx& c, const float* w, const float* w_star, float dL, float* dw, int B, float lambda) {
  if (B <= 0) return;
  aw_loss_bwd_k<<<blocks_for(B), kThreads, 0, c.stream>>>(w, w_star, static_cast<double>(dL) * lambda / B, dw, B);
  DWC_CUDA_LAUNCH_CHECK("aw_loss_bwd_k");
}

}  // namespace dwc::cuda
