// Single-layer LSTM, spec §4 text encoder (torch.nn.LSTM, batch_first, gates i,f,g,o).
// Forward: one GEMM for the input projection of all B·L steps, one [B,D]x[D,4D] GEMM per step.
// Backward: one [B,4D]x[4D,D] GEMM per step; dx, dw_ih, dw_hh each one GEMM over all steps.
#include "lstm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/blas.h"
#include "../core/op.h"
#include "../core/vmath.h"

namespace dwc::cpu {

namespace {

// The shared vectorised exp (native/core/vmath.h): branch-free, so the gate loops below
// vectorise with it inlined (no optimize attribute here: a function compiled under other
// optimisation options than vm::exp's cannot inline it, and each gate was an out-of-line call).
// exp(±large) saturates to inf / 0, so sigm and ftanh reach 0/1 and ±1; NaN propagates.
inline float fexp(float x) { return vm::exp(x); }
inline float sigm(float x) { return 1.f / (1.f + fexp(-x)); }
inline float ftanh(float x) { return 2.f / (1.f + fexp(-2.f * x)) - 1.f; }

// One forward step for one sample: gates g[4D] (pre-activation in, activations out), c, h.
// Elementwise (no reduction), so the AVX2 clone rounds every element as the baseline does.
DWC_AVX2_CLONES void cell_forward(float* __restrict g, const float* __restrict cp, float* __restrict c, float* __restrict h, int D) {
  for (int d = 0; d < D; ++d) {
    const float i = sigm(g[d]), f = sigm(g[D + d]), gg = ftanh(g[2 * D + d]), o = sigm(g[3 * D + d]);
    const float cn = f * cp[d] + i * gg;
    g[d] = i;
    g[D + d] = f;
    g[2 * D + d] = gg;
    g[3 * D + d] = o;
    c[d] = cn;
    h[d] = o * ftanh(cn);
  }
}

// One backward step for one sample. dhr/dc: gradients from step t+1 (zeros if none); dc is
// overwritten with dL/dc_{t-1}.
DWC_AVX2_CLONES void cell_backward(const float* __restrict g, const float* __restrict c, const float* __restrict cp, const float* __restrict dh,
                   const float* __restrict dhr, float* __restrict dc, float* __restrict dg, int D) {
  for (int d = 0; d < D; ++d) {
    const float i = g[d], f = g[D + d], gg = g[2 * D + d], o = g[3 * D + d];
    const float tc = ftanh(c[d]);
    const float dht = dh[d] + dhr[d];
    const float dct = dc[d] + dht * o * (1.f - tc * tc);
    dg[d] = dct * gg * i * (1.f - i);
    dg[D + d] = dct * cp[d] * f * (1.f - f);
    dg[2 * D + d] = dct * i * (1.f - gg * gg);
    dg[3 * D + d] = dht * tc * o * (1.f - o);
    dc[d] = dct * f;
  }
}

// Per-thread scratch that grows once and is reused (no page faults after warm-up).
float* scratch(int slot, size_t n, bool zero) {
  thread_local std::vector<float> bufs[4];
  std::vector<float>& v = bufs[slot];
  if (v.size() < n) v.resize(n);
  if (zero) std::fill(v.begin(), v.begin() + static_cast<int64_t>(n), 0.f);
  return v.data();
}

// Number of steps any sample runs (max length), lengths clamped to [0, L].
int max_steps(const int32_t* lengths, int B, int L) {
  if (!lengths) return L;
  int m = 0;
  for (int b = 0; b < B; ++b) m = std::max(m, std::min<int>(lengths[b], L));
  return m;
}

inline bool active(const int32_t* lengths, int b, int t) { return !lengths || t < lengths[b]; }

}  // namespace

// cache = [gates B,L,4D (after nonlinearity) | c B,L,D]
size_t lstm_cache_floats(int B, int L, int D) { return static_cast<size_t>(B) * L * 5 * D; }

void lstm_forward(const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* b_ih, const float* b_hh,
                  float* h, float* cache, int B, int L, int E, int D) {
  const int G = 4 * D;
  const int64_t BL = static_cast<int64_t>(B) * L;
  float* gates = cache;
  float* cst = cache + BL * G;
  // Input projection for every step at once: gates[B·L,4D] = x · w_ihᵀ (+ both biases).
  sgemm(CblasNoTrans, CblasTrans, static_cast<int>(BL), G, E, 1.f, x, E, w_ih, E, 0.f, gates, G);
#pragma omp parallel for if (BL * G > 65536)
  for (int64_t r = 0; r < BL; ++r) {
    float* g = gates + r * G;
#pragma omp simd
    for (int j = 0; j < G; ++j) g[j] += b_ih[j] + b_hh[j];
  }
  const int steps = max_steps(lengths, B, L);
  // w_hhᵀ [D,4D]: the per-step GEMM runs ~25% faster without a transposed operand.
  float* whhT = steps > 1 ? scratch(0, static_cast<size_t>(G) * D, false) : nullptr;
  if (whhT) {
#pragma omp parallel for
    for (int d0 = 0; d0 < D; d0 += 32)
      for (int j = 0; j < G; ++j)
        for (int d = d0; d < std::min(D, d0 + 32); ++d) whhT[static_cast<int64_t>(d) * G + j] = w_hh[static_cast<int64_t>(j) * D + d];
  }
  float* zeros = scratch(1, static_cast<size_t>(D), true);  // c_{-1}
  const int64_t ldg = static_cast<int64_t>(L) * G, ldh = static_cast<int64_t>(L) * D;
  for (int t = 0; t < steps; ++t) {
    // Recurrent term for step t, all samples: gates[:,t] += h[:,t-1] · w_hhᵀ (h_{-1} = 0).
    if (t > 0)
      sgemm(CblasNoTrans, CblasNoTrans, B, G, D, 1.f, h + static_cast<int64_t>(t - 1) * D, static_cast<int>(ldh),
                  whhT, G, 1.f, gates + static_cast<int64_t>(t) * G, static_cast<int>(ldg));
#pragma omp parallel for if (static_cast<int64_t>(B) * D > 4096)
    for (int b = 0; b < B; ++b) {
      const int64_t r = static_cast<int64_t>(b) * L + t;
      if (!active(lengths, b, t)) {  // packed semantics: output 0, state untouched
        std::fill(gates + r * G, gates + (r + 1) * G, 0.f);
        std::fill(cst + r * D, cst + (r + 1) * D, 0.f);
        std::fill(h + r * D, h + (r + 1) * D, 0.f);
        continue;
      }
      cell_forward(gates + r * G, t > 0 ? cst + (r - 1) * D : zeros, cst + r * D, h + r * D, D);
    }
  }
  // No sample reaches steps >= `steps`: zero their outputs (and cache).
  if (steps < L) {
#pragma omp parallel for
    for (int b = 0; b < B; ++b)
      for (int t = steps; t < L; ++t) {
        const int64_t r = static_cast<int64_t>(b) * L + t;
        std::fill(gates + r * G, gates + (r + 1) * G, 0.f);
        std::fill(cst + r * D, cst + (r + 1) * D, 0.f);
        std::fill(h + r * D, h + (r + 1) * D, 0.f);
      }
  }
}

void lstm_backward(const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* h, const float* cache,
                   const float* dh, float* dx, float* dw_ih, float* dw_hh, float* db_ih, float* db_hh, int B, int L, int E, int D) {
  const int G = 4 * D;
  const int64_t BL = static_cast<int64_t>(B) * L;
  const float* gates = cache;
  const float* cst = cache + BL * G;
  float* dG = scratch(0, static_cast<size_t>(BL) * G, true);      // pre-activation gate gradients [B,L,4D]
  float* dh_rec = scratch(1, static_cast<size_t>(B) * D, true);  // dL/dh_t through step t+1
  float* dc = scratch(2, static_cast<size_t>(B) * D + D, true);  // dL/dc_t through step t+1, then D zeros
  const float* zeros = dc + static_cast<int64_t>(B) * D;
  const int steps = max_steps(lengths, B, L);
  const int64_t ldg = static_cast<int64_t>(L) * G;
  for (int t = steps - 1; t >= 0; --t) {
    if (t < steps - 1)  // dh_rec = dG[:,t+1] · w_hh
      sgemm(CblasNoTrans, CblasNoTrans, B, D, G, 1.f, dG + static_cast<int64_t>(t + 1) * G, static_cast<int>(ldg), w_hh,
                  D, 0.f, dh_rec, D);
#pragma omp parallel for if (static_cast<int64_t>(B) * D > 4096)
    for (int b = 0; b < B; ++b) {
      const int64_t r = static_cast<int64_t>(b) * L + t;
      float* dcb = dc + static_cast<int64_t>(b) * D;
      // No step here, or the last step of b (nothing flows back from t+1): dc starts at 0.
      if (!active(lengths, b, t + 1) || t == steps - 1) std::fill(dcb, dcb + D, 0.f);
      if (!active(lengths, b, t)) continue;  // dG row stays 0
      const bool has_next = t < steps - 1 && active(lengths, b, t + 1);
      cell_backward(gates + r * G, cst + r * D, t > 0 ? cst + (r - 1) * D : zeros, dh + r * D,
                    has_next ? dh_rec + static_cast<int64_t>(b) * D : zeros, dcb, dG + r * G, D);
    }
  }
  const int nrows = static_cast<int>(BL);
  if (dx) sgemm(CblasNoTrans, CblasNoTrans, nrows, E, G, 1.f, dG, G, w_ih, E, 1.f, dx, E);
  if (dw_ih) sgemm(CblasTrans, CblasNoTrans, G, E, nrows, 1.f, dG, G, x, E, 1.f, dw_ih, E);
  if (dw_hh) {
    // dw_hh = Σ_t dG_tᵀ h_{t-1}: one GEMM against h shifted by one step (h_{-1} = 0).
    float* hprev = scratch(3, static_cast<size_t>(BL) * D, false);
#pragma omp parallel for
    for (int b = 0; b < B; ++b) {
      float* dst = hprev + static_cast<int64_t>(b) * L * D;
      std::fill(dst, dst + D, 0.f);
      std::copy(h + static_cast<int64_t>(b) * L * D, h + (static_cast<int64_t>(b) * L + L - 1) * D, dst + D);
    }
    sgemm(CblasTrans, CblasNoTrans, G, D, nrows, 1.f, dG, G, hprev, D, 1.f, dw_hh, D);
  }
  if (db_ih || db_hh) {
#pragma omp parallel for
    for (int j0 = 0; j0 < G; j0 += 64) {
      const int j1 = std::min(G, j0 + 64);
      float s[64] = {0.f};
      for (int64_t r = 0; r < BL; ++r)
        for (int j = j0; j < j1; ++j) s[j - j0] += dG[r * G + j];
      for (int j = j0; j < j1; ++j) {
        if (db_ih) db_ih[j] += s[j - j0];
        if (db_hh) db_hh[j] += s[j - j0];
      }
    }
  }
}

// ---- ops (JS tests / benchmarks) ----
namespace {

struct LstmDims {
  int B, L, E, D;
  const int32_t* lengths;
};

LstmDims lstm_check(OpCtx& c) {
  const Tensor& x = c.in("x", 3);
  const Tensor& w_ih = c.in("w_ih", 2);
  LstmDims d{static_cast<int>(x.dim(0)), static_cast<int>(x.dim(1)), static_cast<int>(x.dim(2)), 0, nullptr};
  DWC_ARG_CHECK(w_ih.dim(0) % 4 == 0 && w_ih.dim(0) > 0,
                c.op_name << ": argument 'w_ih' has shape " << shape_str(w_ih.shape) << ", expected dim 0 = 4·D");
  d.D = static_cast<int>(w_ih.dim(0) / 4);
  c.expect_shape(w_ih, "w_ih", {4LL * d.D, d.E});
  c.expect_shape(c.in("w_hh", 2), "w_hh", {4LL * d.D, d.D});
  if (const Tensor* len = c.in_i32_opt("lengths", 1)) {
    c.expect_shape(*len, "lengths", {d.B});
    for (int b = 0; b < d.B; ++b)
      DWC_ARG_CHECK(len->i32()[b] >= 0 && len->i32()[b] <= d.L,
                    c.op_name << ": argument 'lengths': lengths[" << b << "] = " << len->i32()[b] << " is outside [0, " << d.L << "]");
    d.lengths = len->i32();
  }
  return d;
}

}  // namespace

DWC_REGISTER_OP("lstm_forward", "x [B,L,E], w_ih [4D,E], w_hh [4D,D], b_ih [4D], b_hh [4D], lengths? int32 [B] -> h [B,L,D], cache",
                [](OpCtx& c) {
                  LstmDims d = lstm_check(c);
                  const Tensor& b_ih = c.in("b_ih", 1);
                  const Tensor& b_hh = c.in("b_hh", 1);
                  c.expect_shape(b_ih, "b_ih", {4LL * d.D});
                  c.expect_shape(b_hh, "b_hh", {4LL * d.D});
                  float* h = c.out("h", {d.B, d.L, d.D}).f32();
                  float* cache = c.out("cache", {static_cast<int64_t>(lstm_cache_floats(d.B, d.L, d.D))}).f32();
                  lstm_forward(c.in("x").f32(), d.lengths, c.in("w_ih").f32(), c.in("w_hh").f32(), b_ih.f32(), b_hh.f32(), h, cache, d.B,
                               d.L, d.E, d.D);
                });

DWC_REGISTER_OP("lstm_backward",
                "x, w_ih, w_hh, h, cache, dh, lengths? -> dx, dw_ih, dw_hh, db_ih, db_hh (dw_hh/db from the same gate gradients)",
                [](OpCtx& c) {
                  LstmDims d = lstm_check(c);
                  const Tensor& h = c.in("h", 3);
                  const Tensor& cache = c.in("cache", 1);
                  const Tensor& dh = c.in("dh", 3);
                  c.expect_shape(h, "h", {d.B, d.L, d.D});
                  c.expect_shape(cache, "cache", {static_cast<int64_t>(lstm_cache_floats(d.B, d.L, d.D))});
                  c.expect_shape(dh, "dh", {d.B, d.L, d.D});
                  float* dx = c.out("dx", {d.B, d.L, d.E}).f32();
                  float* dw_ih = c.out("dw_ih", {4LL * d.D, d.E}).f32();
                  float* dw_hh = c.out("dw_hh", {4LL * d.D, d.D}).f32();
                  float* db_ih = c.out("db_ih", {4LL * d.D}).f32();
                  float* db_hh = c.out("db_hh", {4LL * d.D}).f32();
                  lstm_backward(c.in("x").f32(), d.lengths, c.in("w_ih").f32(), c.in("w_hh").f32(), h.f32(), cache.f32(), dh.f32(), dx,
                                dw_ih, dw_hh, db_ih, db_hh, d.B, d.L, d.E, d.D);
                });

}  // namespace dwc::cpu
