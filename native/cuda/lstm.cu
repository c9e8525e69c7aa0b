// CUDA twin of native/kernels/lstm.h (torch.nn.LSTM, gates i, f, g, o; packed-sequence masking).
// Forward: one GEMM for the input projection of all B·L steps, then per step one cuBLAS GEMM
// (h_{t−1} · w_hhᵀ into that step's gates, strided rows) and one cell kernel. The CPU kernel stops
// at the longest length; here all L steps run (the lengths live on the device): steps past every
// length are masked and give the same zeros.
#include "common.cuh"

namespace dwc::cuda {

namespace {

__device__ __forceinline__ float sigm(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ bool active(const int32_t* lengths, int b, int t) { return !lengths || t < lengths[b]; }

__global__ void add_biases_k(float* gates, const float* b_ih, const float* b_hh, int64_t rows, int G) {
  const int64_t n = rows * G;
  DWC_GRID_STRIDE(i, n) gates[i] += b_ih[i % G] + b_hh[i % G];
}

// Step t for every (b, d): gates in (pre-activations) -> activations, c, h; masked steps -> 0.
__global__ void cell_fwd_k(float* gates, float* cst, float* h, const int32_t* lengths, int B, int L, int D, int t) {
  const int64_t n = int64_t(B) * D;
  DWC_GRID_STRIDE(i, n) {
    const int b = static_cast<int>(i / D), d = static_cast<int>(i % D);
    const int64_t r = int64_t(b) * L + t;
    float* g = gates + r * 4 * D;
    if (!active(lengths, b, t)) {
      g[d] = g[D + d] = g[2 * D + d] = g[3 * D + d] = 0.f;
      cst[r * D + d] = 0.f;
      h[r * D + d] = 0.f;
      continue;
    }
    const float ig = sigm(g[d]), fg = sigm(g[D + d]), gg = tanhf(g[2 * D + d]), og = sigm(g[3 * D + d]);
    const float cp = t > 0 ? cst[(r - 1) * D + d] : 0.f;
    const float cn = fg * cp + ig * gg;
    g[d] = ig;
    g[D + d] = fg;
    g[2 * D + d] = gg;
    g[3 * D + d] = og;
    cst[r * D + d] = cn;
    h[r * D + d] = og * tanhf(cn);
  }
}

// Step t backward for every (b, d); dc holds dL/dc_t from step t+1 and is overwritten with dL/dc_{t−1}.
__global__ void cell_bwd_k(const float* gates, const float* cst, const float* dh, const float* dh_rec, float* dc, float* dG,
                           const int32_t* lengths, int B, int L, int D, int t) {
  const int64_t n = int64_t(B) * D;
  DWC_GRID_STRIDE(i, n) {
    const int b = static_cast<int>(i / D), d = static_cast<int>(i % D);
    const int64_t r = int64_t(b) * L + t;
    float& dcb = dc[int64_t(b) * D + d];
    if (!active(lengths, b, t + 1) || t == L - 1) dcb = 0.f;
    if (!active(lengths, b, t)) continue;  // dG row stays 0
    const bool has_next = t < L - 1 && active(lengths, b, t + 1);
    const float* g = gates + r * 4 * D;
    const float ig = g[d], fg = g[D + d], gg = g[2 * D + d], og = g[3 * D + d];
    const float c = cst[r * D + d], cp = t > 0 ? cst[(r - 1) * D + d] : 0.f;
    const float tc = tanhf(c);
    const float dht = dh[r * D + d] + (has_next ? dh_rec[int64_t(b) * D + d] : 0.f);
    const float dct = dcb + dht * og * (1.f - tc * tc);
    float* dg = dG + r * 4 * D;
    dg[d] = dct * gg * ig * (1.f - ig);
    dg[D + d] = dct * cp * fg * (1.f - fg);
    dg[2 * D + d] = dct * ig * (1.f - gg * gg);
    dg[3 * D + d] = dht * tc * og * (1.f - og);
    dcb = dct * fg;
  }
}

// hprev[b, t] = h[b, t−1] (0 at t = 0).
__global__ void shift_h_k(const float* h, float* hprev, int B, int L, int D) {
  const int64_t n = int64_t(B) * L * D;
  DWC_GRID_STRIDE(i, n) {
    const int64_t t = (i / D) % L;
    hprev[i] = t == 0 ? 0.f : h[i - D];
  }
}

}  // namespace

void lstm_forward(const Ctx& c, const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* b_ih,
                  const float* b_hh, float* h, float* cache, int B, int L, int E, int D) {
  const int G = 4 * D;
  const int64_t BL = int64_t(B) * L;
  if (BL <= 0 || D <= 0) return;
  float* gates = cache;
  float* cst = cache + BL * G;
  gemm_ld(c, false, true, static_cast<int>(BL), G, E, 1.f, x, E, w_ih, E, 0.f, gates, G);
  add_biases_k<<<blocks_for(BL * G), kThreads, 0, c.stream>>>(gates, b_ih, b_hh, BL, G);
  DWC_CUDA_LAUNCH_CHECK("add_biases_k");
  const int ldg = L * G, ldh = L * D;
  for (int t = 0; t < L; ++t) {
    if (t > 0) gemm_ld(c, false, true, B, G, D, 1.f, h + int64_t(t - 1) * D, ldh, w_hh, D, 1.f, gates + int64_t(t) * G, ldg);
    cell_fwd_k<<<blocks_for(int64_t(B) * D), kThreads, 0, c.stream>>>(gates, cst, h, lengths, B, L, D, t);
    DWC_CUDA_LAUNCH_CHECK("cell_fwd_k");
  }
}

void lstm_backward(const Ctx& c, const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* h,
                   const float* cache, const float* dh, float* dx, float* dw_ih, float* dw_hh, float* db_ih, float* db_hh, int B, int L,
                   int E, int D) {
  const int G = 4 * D;
  const int64_t BL = int64_t(B) * L;
  if (BL <= 0 || D <= 0) return;
  const float* gates = cache;
  const float* cst = cache + BL * G;
  float* dG = c.scratch->f(kScratchA, BL * G);
  float* dh_rec = c.scratch->f(kScratchB, int64_t(B) * D);
  float* dc = c.scratch->f(kScratchC, int64_t(B) * D);
  DWC_CUDA_CHECK(cudaMemsetAsync(dG, 0, sizeof(float) * BL * G, c.stream));
  DWC_CUDA_CHECK(cudaMemsetAsync(dc, 0, sizeof(float) * B * D, c.stream));
  const int ldg = L * G;
  for (int t = L - 1; t >= 0; --t) {
    if (t < L - 1) gemm_ld(c, false, false, B, D, G, 1.f, dG + int64_t(t + 1) * G, ldg, w_hh, D, 0.f, dh_rec, D);  // dh_rec = dG[:,t+1]·w_hh
    cell_bwd_k<<<blocks_for(int64_t(B) * D), kThreads, 0, c.stream>>>(gates, cst, dh, dh_rec, dc, dG, lengths, B, L, D, t);
    DWC_CUDA_LAUNCH_CHECK("cell_bwd_k");
  }
  const int rows = static_cast<int>(BL);
  if (dx) gemm_ld(c, false, false, rows, E, G, 1.f, dG, G, w_ih, E, 1.f, dx, E);
  if (dw_ih) gemm_ld(c, true, false, G, E, rows, 1.f, dG, G, x, E, 1.f, dw_ih, E);
  if (dw_hh) {
    float* hprev = c.scratch->f(kScratchD, BL * D);
    shift_h_k<<<blocks_for(BL * D), kThreads, 0, c.stream>>>(h, hprev, B, L, D);
    DWC_CUDA_LAUNCH_CHECK("shift_h_k");
    gemm_ld(c, true, false, G, D, rows, 1.f, dG, G, hprev, D, 1.f, dw_hh, D);
  }
  if (db_ih || db_hh) colsum_add(c, dG, db_ih, db_hh, BL, G);
}

}  // namespace dwc::cuda
