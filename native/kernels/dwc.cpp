// Fused DWC kernels (spec §3–§5). Per-sample products (cross attention) run inside one OpenMP
// loop over samples, each GEMM on its thread; the other softmaxes and elementwise parts run
// OpenMP-parallel over samples/rows.
#include "dwc.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/blas.h"
#include "../core/op.h"

namespace dwc::cpu {

namespace {

inline int n_tokens(const int32_t* lengths, int b, int L) { return lengths ? std::clamp<int>(lengths[b], 0, L) : L; }

// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C with packed leading dimensions.
inline void mm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, const float* Bm, float beta, float* C) {
  sgemm(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, ta ? M : K, Bm,
              tb ? K : N, beta, C, N);
}

// y = log_softmax(x_row) for one row (x may equal y).
inline void log_softmax_row(const float* x, float* y, int n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < n; ++j) m = std::max(m, x[j]);
  double s = 0.0;
  for (int j = 0; j < n; ++j) s += std::exp(static_cast<double>(x[j] - m));
  const float lse = m + static_cast<float>(std::log(s));
  for (int j = 0; j < n; ++j) y[j] = x[j] - lse;
}

}  // namespace

// ---- cross attention, spec §4 steps 2–4 ----
void cross_attention_forward(const float* T, const float* I, const int32_t* lengths, float* S_hat, float* I_hat, float* A_s, float* A_w,
                             int B, int L, int D, int P, float temp_s, float temp_w) {
  const int64_t LP = static_cast<int64_t>(L) * P, LD = static_cast<int64_t>(L) * D, DP = static_cast<int64_t>(D) * P;
  const float is = 1.f / temp_s, iw = 1.f / temp_w;
  // One parallel loop over samples, each sample's three small GEMMs on its thread (sgemm in a
  // parallel region runs on the calling thread): no fork/join per GEMM, and a sample's result
  // does not depend on the thread count or on the other samples of its batch.
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; ++b) {
    const int n = n_tokens(lengths, b, L);
    float* S = A_w + b * LP;  // S_b = T_b · I_b, turned into A_w in place below
    mm(false, false, L, P, D, 1.f, T + b * LD, I + b * DP, 0.f, S);
    float* As = A_s + b * LP;
    std::fill(As, As + LP, 0.f);
    if (n > 0) {
      // A_s: softmax over tokens l < n, per position p, of S/temp_s.
      std::vector<float> mx(P, -std::numeric_limits<float>::infinity()), sum(P, 0.f);
      for (int l = 0; l < n; ++l)
        for (int p = 0; p < P; ++p) mx[p] = std::max(mx[p], S[l * P + p]);
      for (int l = 0; l < n; ++l)
        for (int p = 0; p < P; ++p) {
          const float e = std::exp((S[l * P + p] - mx[p]) * is);
          As[l * P + p] = e;
          sum[p] += e;
        }
      for (int p = 0; p < P; ++p) sum[p] = 1.f / sum[p];
      for (int l = 0; l < n; ++l)
        for (int p = 0; p < P; ++p) As[l * P + p] *= sum[p];
    }
    // A_w: softmax over positions, per token, of S/temp_w; masked token rows are 0.
    for (int l = 0; l < L; ++l) {
      float* row = S + l * P;
      if (l >= n) {
        std::fill(row, row + P, 0.f);
        continue;
      }
      float m = row[0];
      for (int p = 1; p < P; ++p) m = std::max(m, row[p]);
      float s = 0.f;
      for (int p = 0; p < P; ++p) s += (row[p] = std::exp((row[p] - m) * iw));
      s = 1.f / s;
      for (int p = 0; p < P; ++p) row[p] *= s;
    }
    mm(true, false, D, P, L, 1.f, T + b * LD, As, 0.f, S_hat + b * DP);                             // Ŝ = Tᵀ A_s
    mm(false, true, D, L, P, 1.f, I + b * DP, S, 0.f, I_hat + static_cast<int64_t>(b) * D * L);  // Î = I A_wᵀ
  }
}

void cross_attention_backward(const float* T, const float* I, const int32_t* lengths, const float* A_s, const float* A_w,
                              const float* dS_hat, const float* dI_hat, float* dT, float* dI, int B, int L, int D, int P, float temp_s,
                              float temp_w) {
  if (!dT && !dI) return;
  const int64_t LP = static_cast<int64_t>(L) * P, LD = static_cast<int64_t>(L) * D, DP = static_cast<int64_t>(D) * P;
  const int64_t DL = LD;
  const float is = 1.f / temp_s, iw = 1.f / temp_w;
  // One parallel loop over samples, as the forward (same order of products per sample).
#pragma omp parallel
  {
    std::vector<float> gsv(static_cast<size_t>(LP)), gwv(static_cast<size_t>(LP)), dot(static_cast<size_t>(P));
    float* gs = gsv.data();  // dA_s, then dS (the softmax backward of both attentions)
    float* gw = gwv.data();  // dA_w
#pragma omp for schedule(static)
    for (int b = 0; b < B; ++b) {
      const float* As = A_s + b * LP;
      const float* Aw = A_w + b * LP;
      mm(false, false, L, P, D, 1.f, T + b * LD, dS_hat + b * DP, 0.f, gs);  // dA_s = T dŜ
      mm(true, false, L, P, D, 1.f, dI_hat + b * DL, I + b * DP, 0.f, gw);   // dA_w = dÎᵀ I
      if (dT) mm(false, true, L, D, P, 1.f, As, dS_hat + b * DP, 1.f, dT + b * LD);  // dT += A_s dŜᵀ
      if (dI) mm(false, false, D, P, L, 1.f, dI_hat + b * DL, Aw, 1.f, dI + b * DP);  // dI += dÎ A_w
      const int n = n_tokens(lengths, b, L);
      std::fill(dot.begin(), dot.end(), 0.f);
      for (int l = 0; l < n; ++l)
        for (int p = 0; p < P; ++p) dot[p] += As[l * P + p] * gs[l * P + p];
      for (int l = 0; l < L; ++l) {
        float* ds = gs + l * P;
        if (l >= n) {
          std::fill(ds, ds + P, 0.f);
          continue;
        }
        const float* aw = Aw + l * P;
        const float* dw = gw + l * P;
        float rw = 0.f;
        for (int p = 0; p < P; ++p) rw += aw[p] * dw[p];
        for (int p = 0; p < P; ++p) ds[p] = is * As[l * P + p] * (ds[p] - dot[p]) + iw * aw[p] * (dw[p] - rw);
      }
      if (dT) mm(false, true, L, D, P, 1.f, gs, I + b * DP, 1.f, dT + b * LD);  // dT += dS Iᵀ
      if (dI) mm(true, false, D, P, L, 1.f, T + b * LD, gs, 1.f, dI + b * DP);  // dI += Tᵀ dS
    }
  }
}

// ---- weighted fusion, spec §3.3 / §4.7 ----
void weighted_fusion_forward(const float* a, const float* b, const float* w, float* out, int B, int D) {
#pragma omp parallel for if (static_cast<int64_t>(B) * D > 65536)
  for (int i = 0; i < B; ++i) {
    const float wi = w[i];
    const int64_t o = static_cast<int64_t>(i) * D;
#pragma omp simd
    for (int d = 0; d < D; ++d) out[o + d] = wi * a[o + d] + (1.f - wi) * b[o + d];
  }
}

void weighted_fusion_backward(const float* a, const float* b, const float* w, const float* dout, float* da, float* db, float* dw, int B,
                              int D) {
#pragma omp parallel for if (static_cast<int64_t>(B) * D > 65536)
  for (int i = 0; i < B; ++i) {
    const float wi = w[i];
    const int64_t o = static_cast<int64_t>(i) * D;
    double s = 0.0;  // double: dw is a small difference of large terms
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < D; ++d) {
      const float g = dout[o + d];
      if (da) da[o + d] += wi * g;
      if (db) db[o + d] += (1.f - wi) * g;
      s += static_cast<double>(g) * (a[o + d] - b[o + d]);
    }
    if (dw) dw[i] += static_cast<float>(s);
  }
}

// ---- self-supervised adaptive weighting, PL4CIR-SPEC.md §3 ----
void adaptive_weight_target(const float* e_ref, const float* e_txt, const float* e_tgt, float* w_star, float* s_img, float* s_txt, int B,
                            int Dc, float tau_w) {
  for (int i = 0; i < B; ++i) {
    const int64_t o = static_cast<int64_t>(i) * Dc;
    double rr = 0, tt = 0, gg = 0, rg = 0, tg = 0;  // double: cosines of long rows
    for (int d = 0; d < Dc; ++d) {
      const double r = e_ref[o + d], t = e_txt[o + d], g = e_tgt[o + d];
      rr += r * r;
      tt += t * t;
      gg += g * g;
      rg += r * g;
      tg += t * g;
    }
    const double ng = std::max(std::sqrt(gg), 1e-12);
    const double si = rg / (std::max(std::sqrt(rr), 1e-12) * ng), st = tg / (std::max(std::sqrt(tt), 1e-12) * ng);
    if (s_img) s_img[i] = static_cast<float>(si);
    if (s_txt) s_txt[i] = static_cast<float>(st);
    w_star[i] = static_cast<float>(1.0 / (1.0 + std::exp(-(si - st) / tau_w)));
  }
}

float adaptive_weight_loss_forward(const float* w, const float* w_star, int B, float lambda) {
  double s = 0;
  for (int i = 0; i < B; ++i) {
    const double lw = std::max(std::log(static_cast<double>(w[i])), -100.0), l1w = std::max(std::log1p(-static_cast<double>(w[i])), -100.0);
    s -= w_star[i] * lw + (1.0 - w_star[i]) * l1w;
  }
  return static_cast<float>(lambda * s / B);
}

void adaptive_weight_loss_backward(const float* w, const float* w_star, float dL, float* dw, int B, float lambda) {
  const double k = static_cast<double>(dL) * lambda / B;
  for (int i = 0; i < B; ++i) {
    const double wi = w[i];
    dw[i] += static_cast<float>(k * (wi - w_star[i]) / std::max(wi * (1.0 - wi), 1e-12));
  }
}

// ---- soft-similarity labels, spec §5 ----
void soft_labels_forward(const float* t, const int32_t* labels, float* Q, float* sim_softmax, int B, int D, float alpha, float tau) {
  mm(false, true, B, B, D, 1.f / tau, t, t, 0.f, sim_softmax);  // t tᵀ/τ
#pragma omp parallel for if (B >= 64)
  for (int i = 0; i < B; ++i) {
    float* row = sim_softmax + static_cast<int64_t>(i) * B;
    float m = row[0];
    for (int j = 1; j < B; ++j) m = std::max(m, row[j]);
    float s = 0.f;
    for (int j = 0; j < B; ++j) s += (row[j] = std::exp(row[j] - m));
    s = 1.f / s;
    int cnt = 0;
    for (int j = 0; j < B; ++j) cnt += labels[j] == labels[i];
    const float y = (1.f - alpha) / static_cast<float>(cnt);
    float* q = Q + static_cast<int64_t>(i) * B;
    for (int j = 0; j < B; ++j) {
      row[j] *= s;
      q[j] = alpha * row[j] + (labels[j] == labels[i] ? y : 0.f);
    }
  }
}

void soft_labels_backward(const float* t, const float* sim_softmax, const float* dQ, float* dt, int B, int D, float alpha, float tau) {
  if (!dt) return;
  const int64_t BB = static_cast<int64_t>(B) * B;
  std::vector<float> ds(BB), g(BB);
#pragma omp parallel for if (B >= 64)
  for (int i = 0; i < B; ++i) {
    const float* sm = sim_softmax + static_cast<int64_t>(i) * B;
    const float* dq = dQ + static_cast<int64_t>(i) * B;
    float r = 0.f;
    for (int j = 0; j < B; ++j) r += dq[j] * sm[j];
    for (int j = 0; j < B; ++j) ds[i * B + j] = alpha / tau * sm[j] * (dq[j] - r);
  }
#pragma omp parallel for if (B >= 64)
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j) g[i * B + j] = ds[i * B + j] + ds[static_cast<int64_t>(j) * B + i];
  mm(false, false, B, D, B, 1.f, g.data(), t, 1.f, dt);  // dt += (ds + dsᵀ) t
}

// ---- contrastive loss, spec §5 ----
float contrastive_forward(const float* q, const float* t, const float* Q, float* logp, int B, int D, float tau) {
  mm(false, true, B, B, D, 1.f / tau, q, t, 0.f, logp);  // Z = q tᵀ/τ
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) if (B >= 64)
  for (int i = 0; i < B; ++i) {
    float* row = logp + static_cast<int64_t>(i) * B;
    log_softmax_row(row, row, B);
    double s = 0.0;
    for (int j = 0; j < B; ++j) s += static_cast<double>(Q[static_cast<int64_t>(i) * B + j]) * row[j];
    total += s;
  }
  return static_cast<float>(-total / B);
}

void contrastive_backward(const float* q, const float* t, const float* Q, const float* logp, float dL, float* dq, float* dt, float* dQ,
                          int B, int D, float tau) {
  const float k = dL / static_cast<float>(B);
  const int64_t BB = static_cast<int64_t>(B) * B;
  if (dQ) {
#pragma omp parallel for simd if (BB > 65536)
    for (int64_t i = 0; i < BB; ++i) dQ[i] += -k * logp[i];
  }
  if (!dq && !dt) return;
  std::vector<float> dZ(BB);
#pragma omp parallel for if (B >= 64)
  for (int i = 0; i < B; ++i) {
    const float* lp = logp + static_cast<int64_t>(i) * B;
    const float* qi = Q + static_cast<int64_t>(i) * B;
    float rs = 0.f;
    for (int j = 0; j < B; ++j) rs += qi[j];
    for (int j = 0; j < B; ++j) dZ[i * B + j] = k * (std::exp(lp[j]) * rs - qi[j]);
  }
  if (dq) mm(false, false, B, D, B, 1.f / tau, dZ.data(), t, 1.f, dq);  // dq += dZ t / τ
  if (dt) mm(true, false, B, D, B, 1.f / tau, dZ.data(), q, 1.f, dt);   // dt += dZᵀ q / τ
}

// ---- mutual learning, spec §5 ----
float mutual_forward(const float* q, const float* t, const float* q2, const float* t2, float* logp1, float* p2, int B, int D, float s) {
  mm(false, true, B, B, D, s, q, t, 0.f, logp1);
  mm(false, true, B, B, D, s, q2, t2, 0.f, p2);
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) if (B >= 64)
  for (int i = 0; i < B; ++i) {
    float* l1 = logp1 + static_cast<int64_t>(i) * B;
    float* r2 = p2 + static_cast<int64_t>(i) * B;
    log_softmax_row(l1, l1, B);
    log_softmax_row(r2, r2, B);
    double kl = 0.0;
    for (int j = 0; j < B; ++j) {
      const float pj = std::exp(r2[j]);
      if (pj > 0.f) kl += static_cast<double>(pj) * (r2[j] - l1[j]);  // xlogy: 0·log 0 = 0
      r2[j] = pj;
    }
    total += kl;
  }
  return static_cast<float>(total / B);
}

void mutual_backward(const float* q, const float* t, const float* logp1, const float* p2, float dL, float* dq, float* dt, int B, int D,
                     float s) {
  if (!dq && !dt) return;
  const float k = dL / static_cast<float>(B);
  std::vector<float> dX(static_cast<size_t>(B) * B);
#pragma omp parallel for if (B >= 64)
  for (int i = 0; i < B; ++i) {
    const float* l1 = logp1 + static_cast<int64_t>(i) * B;
    const float* r2 = p2 + static_cast<int64_t>(i) * B;
    float rs = 0.f;
    for (int j = 0; j < B; ++j) rs += r2[j];
    for (int j = 0; j < B; ++j) dX[i * B + j] = k * (std::exp(l1[j]) * rs - r2[j]);
  }
  if (dq) mm(false, false, B, D, B, s, dX.data(), t, 1.f, dq);  // dq += s dX t
  if (dt) mm(true, false, B, D, B, s, dX.data(), q, 1.f, dt);   // dt += s dXᵀ q
}

// ---- ops (JS tests / benchmarks) ----
namespace {

float pos_attr(OpCtx& c, const char* name, double def) {
  const double v = c.attr_or(name, def);
  DWC_ARG_CHECK(v > 0, c.op_name << ": option '" << name << "' must be > 0, got " << v);
  return static_cast<float>(v);
}

struct XaDims {
  int B, L, D, P;
  const int32_t* lengths;
};

XaDims xa_check(OpCtx& c) {
  const Tensor& T = c.in("T", 3);
  const Tensor& I = c.in("I", 3);
  XaDims d{static_cast<int>(T.dim(0)), static_cast<int>(T.dim(1)), static_cast<int>(T.dim(2)), static_cast<int>(I.dim(2)), nullptr};
  c.expect_dim(I, "I", 0, d.B, "B (batch of T)");
  c.expect_dim(I, "I", 1, d.D, "D (embedding dim of T)");
  if (const Tensor* len = c.in_i32_opt("lengths", 1)) {
    c.expect_shape(*len, "lengths", {d.B});
    for (int b = 0; b < d.B; ++b)
      DWC_ARG_CHECK(len->i32()[b] >= 0 && len->i32()[b] <= d.L,
                    c.op_name << ": argument 'lengths': lengths[" << b << "] = " << len->i32()[b] << " is outside [0, " << d.L << "]");
    d.lengths = len->i32();
  }
  return d;
}

// Loss gradient scale: input tensor 'dL' [1] if given, else option 'dL' (default 1).
float loss_grad(OpCtx& c) {
  if (const Tensor* t = c.in_opt("dL")) {
    c.expect_shape(*t, "dL", {1});
    return t->f32()[0];
  }
  return static_cast<float>(c.attr_or("dL", 1.0));
}

// q [B,D] and every other name given as [B,D].
std::pair<int, int> bd_check(OpCtx& c, std::initializer_list<const char*> others) {
  const Tensor& q = c.in("q", 2);
  for (const char* n : others) c.expect_shape(c.in(n, 2), n, q.shape);
  return {static_cast<int>(q.dim(0)), static_cast<int>(q.dim(1))};
}

void bb_check(OpCtx& c, const char* name, int B) { c.expect_shape(c.in(name, 2), name, {B, B}); }

}  // namespace

DWC_REGISTER_OP("cross_attention_forward", "T [B,L,D], I [B,D,P], lengths? int32 [B]; temp_s=7, temp_w=4 -> S_hat [B,D,P], I_hat [B,D,L], A_s, A_w [B,L,P]",
                [](OpCtx& c) {
                  XaDims d = xa_check(c);
                  const float ts = pos_attr(c, "temp_s", 7.0), tw = pos_attr(c, "temp_w", 4.0);
                  float* S_hat = c.out("S_hat", {d.B, d.D, d.P}).f32();
                  float* I_hat = c.out("I_hat", {d.B, d.D, d.L}).f32();
                  float* A_s = c.out("A_s", {d.B, d.L, d.P}).f32();
                  float* A_w = c.out("A_w", {d.B, d.L, d.P}).f32();
                  cross_attention_forward(c.in("T").f32(), c.in("I").f32(), d.lengths, S_hat, I_hat, A_s, A_w, d.B, d.L, d.D, d.P, ts, tw);
                });

DWC_REGISTER_OP("cross_attention_backward", "T, I, A_s, A_w, dS_hat, dI_hat, lengths?; temp_s=7, temp_w=4 -> dT, dI", [](OpCtx& c) {
  XaDims d = xa_check(c);
  const float ts = pos_attr(c, "temp_s", 7.0), tw = pos_attr(c, "temp_w", 4.0);
  c.expect_shape(c.in("A_s", 3), "A_s", {d.B, d.L, d.P});
  c.expect_shape(c.in("A_w", 3), "A_w", {d.B, d.L, d.P});
  c.expect_shape(c.in("dS_hat", 3), "dS_hat", {d.B, d.D, d.P});
  c.expect_shape(c.in("dI_hat", 3), "dI_hat", {d.B, d.D, d.L});
  float* dT = c.out("dT", {d.B, d.L, d.D}).f32();
  float* dI = c.out("dI", {d.B, d.D, d.P}).f32();
  cross_attention_backward(c.in("T").f32(), c.in("I").f32(), d.lengths, c.in("A_s").f32(), c.in("A_w").f32(), c.in("dS_hat").f32(),
                           c.in("dI_hat").f32(), dT, dI, d.B, d.L, d.D, d.P, ts, tw);
});

DWC_REGISTER_OP("weighted_fusion_forward", "a [B,D], b [B,D], w [B] -> out = w·a + (1−w)·b", [](OpCtx& c) {
  const Tensor& a = c.in("a", 2);
  c.expect_shape(c.in("b", 2), "b", a.shape);
  c.expect_shape(c.in("w", 1), "w", {a.dim(0)});
  weighted_fusion_forward(a.f32(), c.in("b").f32(), c.in("w").f32(), c.out("out", a.shape).f32(), static_cast<int>(a.dim(0)),
                          static_cast<int>(a.dim(1)));
});

DWC_REGISTER_OP("weighted_fusion_backward", "a, b, w, dout -> da, db, dw", [](OpCtx& c) {
  const Tensor& a = c.in("a", 2);
  c.expect_shape(c.in("b", 2), "b", a.shape);
  c.expect_shape(c.in("w", 1), "w", {a.dim(0)});
  c.expect_shape(c.in("dout", 2), "dout", a.shape);
  weighted_fusion_backward(a.f32(), c.in("b").f32(), c.in("w").f32(), c.in("dout").f32(), c.out("da", a.shape).f32(),
                           c.out("db", a.shape).f32(), c.out("dw", {a.dim(0)}).f32(), static_cast<int>(a.dim(0)), static_cast<int>(a.dim(1)));
});

DWC_REGISTER_OP("adaptive_weight_target", "e_ref, e_txt, e_tgt [B,Dc]; tau_w=0.1 -> w_star, s_img, s_txt [B] (PL4CIR §3)", [](OpCtx& c) {
  const Tensor& r = c.in("e_ref", 2);
  c.expect_shape(c.in("e_txt", 2), "e_txt", r.shape);
  c.expect_shape(c.in("e_tgt", 2), "e_tgt", r.shape);
  const int B = static_cast<int>(r.dim(0));
  const float tau_w = pos_attr(c, "tau_w", 0.1);
  adaptive_weight_target(r.f32(), c.in("e_txt").f32(), c.in("e_tgt").f32(), c.out("w_star", {B}).f32(), c.out("s_img", {B}).f32(),
                         c.out("s_txt", {B}).f32(), B, static_cast<int>(r.dim(1)), tau_w);
});

namespace {
// w [B] and w_star [B], both in [0,1], checked
int aw_check(OpCtx& c) {
  const Tensor& w = c.in("w", 1);
  const int B = static_cast<int>(w.dim(0));
  c.expect_shape(c.in("w_star", 1), "w_star", {B});
  for (int i = 0; i < B; ++i) {
    DWC_ARG_CHECK(w.f32()[i] >= 0.f && w.f32()[i] <= 1.f, c.op_name << ": argument 'w': w[" << i << "] = " << w.f32()[i] << " is outside [0, 1]");
    const float y = c.in("w_star").f32()[i];
    DWC_ARG_CHECK(y >= 0.f && y <= 1.f, c.op_name << ": argument 'w_star': w_star[" << i << "] = " << y << " is outside [0, 1]");
  }
  return B;
}
}  // namespace

DWC_REGISTER_OP("adaptive_weight_loss_forward", "w [B], w_star [B]; lambda=0.1 -> loss [1] = λ·mean BCE(w, w*) (PL4CIR §3)", [](OpCtx& c) {
  const int B = aw_check(c);
  const float lambda = static_cast<float>(c.attr_or("lambda", 0.1));
  DWC_ARG_CHECK(std::isfinite(lambda) && lambda >= 0, c.op_name << ": option 'lambda' must be >= 0, got " << lambda);
  c.out("loss", {1}).f32()[0] = adaptive_weight_loss_forward(c.in("w").f32(), c.in("w_star").f32(), B, lambda);
});

DWC_REGISTER_OP("adaptive_weight_loss_backward", "w, w_star [B], dL? [1]; lambda=0.1, dL=1 -> dw [B] (no gradient to w_star)", [](OpCtx& c) {
  const int B = aw_check(c);
  const float lambda = static_cast<float>(c.attr_or("lambda", 0.1));
  DWC_ARG_CHECK(std::isfinite(lambda) && lambda >= 0, c.op_name << ": option 'lambda' must be >= 0, got " << lambda);
  adaptive_weight_loss_backward(c.in("w").f32(), c.in("w_star").f32(), loss_grad(c), c.out("dw", {B}).f32(), B, lambda);
});

DWC_REGISTER_OP("soft_labels_forward", "t [B,D], labels int32 [B]; alpha=0.2, tau=0.07 -> Q [B,B], sim_softmax [B,B]", [](OpCtx& c) {
  const Tensor& t = c.in("t", 2);
  const int B = static_cast<int>(t.dim(0));
  const Tensor& labels = c.in_i32("labels", 1);
  c.expect_shape(labels, "labels", {B});
  const float alpha = static_cast<float>(c.attr_or("alpha", 0.2));
  DWC_ARG_CHECK(alpha >= 0 && alpha <= 1, c.op_name << ": option 'alpha' must be in [0, 1], got " << alpha);
  const float tau = pos_attr(c, "tau", 0.07);
  soft_labels_forward(t.f32(), labels.i32(), c.out("Q", {B, B}).f32(), c.out("sim_softmax", {B, B}).f32(), B, static_cast<int>(t.dim(1)),
                      alpha, tau);
});

DWC_REGISTER_OP("soft_labels_backward", "t, sim_softmax, dQ; alpha=0.2, tau=0.07 -> dt", [](OpCtx& c) {
  const Tensor& t = c.in("t", 2);
  const int B = static_cast<int>(t.dim(0));
  bb_check(c, "sim_softmax", B);
  bb_check(c, "dQ", B);
  const float alpha = static_cast<float>(c.attr_or("alpha", 0.2));
  const float tau = pos_attr(c, "tau", 0.07);
  soft_labels_backward(t.f32(), c.in("sim_softmax").f32(), c.in("dQ").f32(), c.out("dt", t.shape).f32(), B, static_cast<int>(t.dim(1)),
                       alpha, tau);
});

DWC_REGISTER_OP("contrastive_forward", "q [B,D], t [B,D], Q [B,B]; tau=0.07 -> loss [1], logp [B,B]", [](OpCtx& c) {
  auto [B, D] = bd_check(c, {"t"});
  bb_check(c, "Q", B);
  const float tau = pos_attr(c, "tau", 0.07);
  float* logp = c.out("logp", {B, B}).f32();
  c.out("loss", {1}).f32()[0] = contrastive_forward(c.in("q").f32(), c.in("t").f32(), c.in("Q").f32(), logp, B, D, tau);
});

DWC_REGISTER_OP("contrastive_backward", "q, t, Q, logp, dL? [1]; tau=0.07, dL=1 -> dq, dt, dQ", [](OpCtx& c) {
  auto [B, D] = bd_check(c, {"t"});
  bb_check(c, "Q", B);
  bb_check(c, "logp", B);
  const float tau = pos_attr(c, "tau", 0.07);
  const float dL = loss_grad(c);
  contrastive_backward(c.in("q").f32(), c.in("t").f32(), c.in("Q").f32(), c.in("logp").f32(), dL, c.out("dq", {B, D}).f32(),
                       c.out("dt", {B, D}).f32(), c.out("dQ", {B, B}).f32(), B, D, tau);
});

DWC_REGISTER_OP("mutual_forward", "q, t, q2, t2 [B,D]; s=10 -> loss [1], logp1 [B,B], p2 [B,B]", [](OpCtx& c) {
  auto [B, D] = bd_check(c, {"t", "q2", "t2"});
  const float s = static_cast<float>(c.attr_or("s", 10.0));
  float* logp1 = c.out("logp1", {B, B}).f32();
  float* p2 = c.out("p2", {B, B}).f32();
  c.out("loss", {1}).f32()[0] =
      mutual_forward(c.in("q").f32(), c.in("t").f32(), c.in("q2").f32(), c.in("t2").f32(), logp1, p2, B, D, s);
});

DWC_REGISTER_OP("mutual_backward", "q, t, logp1, p2, dL? [1]; s=10, dL=1 -> dq, dt", [](OpCtx& c) {
  auto [B, D] = bd_check(c, {"t"});
  bb_check(c, "logp1", B);
  bb_check(c, "p2", B);
  const float s = static_cast<float>(c.attr_or("s", 10.0));
  const float dL = loss_grad(c);
  mutual_backward(c.in("q").f32(), c.in("t").f32(), c.in("logp1").f32(), c.in("p2").f32(), dL, c.out("dq", {B, D}).f32(),
                  c.out("dt", {B, D}).f32(), B, D, s);
});

}  // namespace dwc::cpu
