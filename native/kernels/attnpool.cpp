// AttentionPool2d (see attnpool.h). The projections are GEMMs (gemm.h linear_forward /
// linear_backward); the single-query scores and the weighted sums are O(N·T·C) loops; the
// softmax is rowops' softmax_rows.
#include "attnpool.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "../core/op.h"
#include "gemm.h"
#include "rowops.h"

namespace dwc::cpu {

int64_t attnpool_saved_floats(int N, int P, int C, int H) {
  const int64_t T = P + 1;
  return int64_t(N) * T * C * 3 + int64_t(N) * C * 2 + int64_t(N) * H * T;
}

AttnPoolSaved attnpool_saved_view(float* b, int N, int P, int C, int H) {
  const int64_t T = P + 1, NTC = int64_t(N) * T * C, NC = int64_t(N) * C;
  AttnPoolSaved s;
  s.t = b;
  s.k = b + NTC;
  s.v = b + 2 * NTC;
  s.q = b + 3 * NTC;
  s.ctx = s.q + NC;
  s.att = s.ctx + NC;
  (void)H;
  return s;
}

void attnpool_forward(const float* x, const float* pos, const float* q_w, const float* q_b, const float* k_w, const float* k_b,
                      const float* v_w, const float* v_b, const float* c_w, const float* c_b, float* y, const AttnPoolSaved& s, int N,
                      int P, int C, int H, int E) {
  const int T = P + 1, d = C / H;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  // t[n,0] = mean_p x[n,p] + pos[0]; t[n,1+p] = x[n,p] + pos[1+p]
#pragma omp parallel for schedule(static) if (int64_t(N) * T * C > 65536)
  for (int n = 0; n < N; ++n) {
    float* tn = s.t + int64_t(n) * T * C;
    const float* xn = x + int64_t(n) * P * C;
    std::vector<double> mean(static_cast<size_t>(C), 0.0);
    for (int p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) mean[c] += xn[int64_t(p) * C + c];
    for (int c = 0; c < C; ++c) tn[c] = static_cast<float>(mean[c] / P) + pos[c];
    for (int p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) tn[int64_t(p + 1) * C + c] = xn[int64_t(p) * C + c] + pos[int64_t(p + 1) * C + c];
  }
  linear_forward(s.t, k_w, k_b, s.k, N * T, C, C);
  linear_forward(s.t, v_w, v_b, s.v, N * T, C, C);
  // the only query: the mean token of each sample (row 0 of t_n)
  std::vector<float> t0(static_cast<size_t>(N) * C);
  for (int n = 0; n < N; ++n) std::memcpy(t0.data() + int64_t(n) * C, s.t + int64_t(n) * T * C, sizeof(float) * C);
  linear_forward(t0.data(), q_w, q_b, s.q, N, C, C);
  std::vector<float> score(static_cast<size_t>(N) * H * T);
#pragma omp parallel for collapse(2) schedule(static) if (int64_t(N) * T * C > 65536)
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const float* qh = s.q + int64_t(n) * C + int64_t(h) * d;
      float* sc = score.data() + (int64_t(n) * H + h) * T;
      for (int j = 0; j < T; ++j) {
        const float* kj = s.k + (int64_t(n) * T + j) * C + int64_t(h) * d;
        float a = 0.f;
        for (int i = 0; i < d; ++i) a += qh[i] * kj[i];
        sc[j] = a;
      }
    }
  softmax_rows_forward(score.data(), s.att, int64_t(N) * H, T, scale);  // softmax(q·kᵀ/√d)
#pragma omp parallel for collapse(2) schedule(static) if (int64_t(N) * T * C > 65536)
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const float* a = s.att + (int64_t(n) * H + h) * T;
      float* cx = s.ctx + int64_t(n) * C + int64_t(h) * d;
      for (int i = 0; i < d; ++i) cx[i] = 0.f;
      for (int j = 0; j < T; ++j) {
        const float* vj = s.v + (int64_t(n) * T + j) * C + int64_t(h) * d;
        for (int i = 0; i < d; ++i) cx[i] += a[j] * vj[i];
      }
    }
  linear_forward(s.ctx, c_w, c_b, y, N, C, E);
}

int64_t attnpool_backward_scratch(int N, int P, int C, int H) {
  const int64_t T = P + 1;
  // dctx, dq [N,C]; datt, dscore [N,H,T]; dk, dv, dt [N,T,C]; t0, dt0 [N,C]
  return int64_t(N) * C * 4 + int64_t(N) * H * T * 2 + int64_t(N) * T * C * 3;
}

void attnpool_backward(const float* q_w, const float* k_w, const float* v_w, const float* c_w, const AttnPoolSaved& s, const float* dy,
                       float* dx, float* dpos, float* dq_w, float* dq_b, float* dk_w, float* dk_b, float* dv_w, float* dv_b, float* dc_w,
                       float* dc_b, float* scratch, int N, int P, int C, int H, int E) {
  const int T = P + 1, d = C / H;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  const int64_t NC = int64_t(N) * C, NHT = int64_t(N) * H * T, NTC = int64_t(N) * T * C;
  float* dctx = scratch;
  float* dq = dctx + NC;
  float* t0 = dq + NC;
  float* dt0 = t0 + NC;
  float* datt = dt0 + NC;
  float* dsc = datt + NHT;
  float* dk = dsc + NHT;
  float* dv = dk + NTC;
  float* dt = dv + NTC;
  std::memset(scratch, 0, sizeof(float) * static_cast<size_t>(attnpool_backward_scratch(N, P, C, H)));
  linear_backward(s.ctx, c_w, dy, dctx, dc_w, dc_b, N, C, E);
#pragma omp parallel for collapse(2) schedule(static) if (NTC > 65536)
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const float* a = s.att + (int64_t(n) * H + h) * T;
      const float* dcx = dctx + int64_t(n) * C + int64_t(h) * d;
      float* da = datt + (int64_t(n) * H + h) * T;
      for (int j = 0; j < T; ++j) {
        const float* vj = s.v + (int64_t(n) * T + j) * C + int64_t(h) * d;
        float* dvj = dv + (int64_t(n) * T + j) * C + int64_t(h) * d;
        float acc = 0.f;
        for (int i = 0; i < d; ++i) {
          acc += dcx[i] * vj[i];
          dvj[i] = a[j] * dcx[i];
        }
        da[j] = acc;
      }
    }
  softmax_rows_backward(s.att, datt, dsc, NHT / T, T, scale);  // dsc = d(q·k) (scale folded in)
#pragma omp parallel for collapse(2) schedule(static) if (NTC > 65536)
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const float* ds = dsc + (int64_t(n) * H + h) * T;
      const float* qh = s.q + int64_t(n) * C + int64_t(h) * d;
      float* dqh = dq + int64_t(n) * C + int64_t(h) * d;
      for (int j = 0; j < T; ++j) {
        const float* kj = s.k + (int64_t(n) * T + j) * C + int64_t(h) * d;
        float* dkj = dk + (int64_t(n) * T + j) * C + int64_t(h) * d;
        for (int i = 0; i < d; ++i) {
          dqh[i] += ds[j] * kj[i];
          dkj[i] = ds[j] * qh[i];
        }
      }
    }
  for (int n = 0; n < N; ++n) std::memcpy(t0 + int64_t(n) * C, s.t + int64_t(n) * T * C, sizeof(float) * C);
  linear_backward(t0, q_w, dq, dt0, dq_w, dq_b, N, C, C);
  linear_backward(s.t, k_w, dk, dt, dk_w, dk_b, N * T, C, C);
  linear_backward(s.t, v_w, dv, dt, dv_w, dv_b, N * T, C, C);
  for (int n = 0; n < N; ++n) {
    float* dtn = dt + int64_t(n) * T * C;
    const float* d0 = dt0 + int64_t(n) * C;
    for (int c = 0; c < C; ++c) dtn[c] += d0[c];
  }
  // t[n,0] = mean(x) + pos[0], t[n,1+p] = x[n,p] + pos[1+p]
  if (dpos)
    for (int n = 0; n < N; ++n)
      for (int64_t i = 0; i < int64_t(T) * C; ++i) dpos[i] += dt[int64_t(n) * T * C + i];
  if (dx)
#pragma omp parallel for schedule(static) if (NTC > 65536)
    for (int n = 0; n < N; ++n) {
      const float* dtn = dt + int64_t(n) * T * C;
      float* dxn = dx + int64_t(n) * P * C;
      for (int p = 0; p < P; ++p)
        for (int c = 0; c < C; ++c) dxn[int64_t(p) * C + c] += dtn[int64_t(p + 1) * C + c] + dtn[c] / static_cast<float>(P);
    }
}

// ---- ops (JS tests) ----
namespace {

struct ApDims {
  int N, P, C, H, E;
};

struct ApIn {
  const Tensor *x, *pos, *qw, *qb, *kw, *kb, *vw, *vb, *cw, *cb;
};

ApDims ap_dims(OpCtx& c, ApIn& in) {
  in.x = &c.in("x", 3);
  ApDims d;
  d.N = static_cast<int>(in.x->dim(0));
  d.P = static_cast<int>(in.x->dim(1));
  d.C = static_cast<int>(in.x->dim(2));
  const int64_t H = c.int_attr_or("heads", 1);
  DWC_ARG_CHECK(H >= 1 && d.C % H == 0, c.op_name << ": option 'heads' (" << H << ") must be positive and divide the width " << d.C);
  d.H = static_cast<int>(H);
  DWC_ARG_CHECK(d.N >= 1 && d.P >= 1, c.op_name << ": argument 'x' must be [N,P,C] with N, P >= 1");
  in.pos = &c.in("positional_embedding", 2);
  c.expect_shape(*in.pos, "positional_embedding", {d.P + 1, d.C});
  const char* nm[6] = {"q_w", "q_b", "k_w", "k_b", "v_w", "v_b"};
  const Tensor** slot[6] = {&in.qw, &in.qb, &in.kw, &in.kb, &in.vw, &in.vb};
  for (int i = 0; i < 6; ++i) {
    *slot[i] = &c.in(nm[i], i % 2 ? 1 : 2);
    if (i % 2) c.expect_shape(**slot[i], nm[i], {d.C});
    else c.expect_shape(**slot[i], nm[i], {d.C, d.C});
  }
  in.cw = &c.in("c_w", 2);
  d.E = static_cast<int>(in.cw->dim(0));
  c.expect_shape(*in.cw, "c_w", {d.E, d.C});
  in.cb = &c.in("c_b", 1);
  c.expect_shape(*in.cb, "c_b", {d.E});
  return d;
}

void ap_run_forward(const ApIn& in, const ApDims& d, float* y, const AttnPoolSaved& s) {
  attnpool_forward(in.x->f32(), in.pos->f32(), in.qw->f32(), in.qb->f32(), in.kw->f32(), in.kb->f32(), in.vw->f32(), in.vb->f32(), in.cw->f32(),
                   in.cb->f32(), y, s, d.N, d.P, d.C, d.H, d.E);
}

}  // namespace

DWC_REGISTER_OP("attnpool_forward",
                "x[N,P,C], positional_embedding[P+1,C], q_w[C,C], q_b[C], k_w, k_b, v_w, v_b, c_w[E,C], c_b[E]; heads -> y[N,E], att[N,H,P+1]",
                [](OpCtx& c) {
                  ApIn in;
                  const ApDims d = ap_dims(c, in);
                  std::vector<float> saved(static_cast<size_t>(attnpool_saved_floats(d.N, d.P, d.C, d.H)));
                  const AttnPoolSaved s = attnpool_saved_view(saved.data(), d.N, d.P, d.C, d.H);
                  ap_run_forward(in, d, c.out("y", {d.N, d.E}).f32(), s);
                  std::memcpy(c.out("att", {d.N, d.H, d.P + 1}).f32(), s.att, sizeof(float) * size_t(d.N) * d.H * (d.P + 1));
                });

DWC_REGISTER_OP("attnpool_backward",
                "x, positional_embedding, q_w, q_b, k_w, k_b, v_w, v_b, c_w, c_b, dy[N,E]; heads -> dx, dpositional_embedding, dq_w, dq_b, "
                "dk_w, dk_b, dv_w, dv_b, dc_w, dc_b",
                [](OpCtx& c) {
                  ApIn in;
                  const ApDims d = ap_dims(c, in);
                  const Tensor& dy = c.in("dy", 2);
                  c.expect_shape(dy, "dy", {d.N, d.E});
                  std::vector<float> saved(static_cast<size_t>(attnpool_saved_floats(d.N, d.P, d.C, d.H)));
                  const AttnPoolSaved s = attnpool_saved_view(saved.data(), d.N, d.P, d.C, d.H);
                  std::vector<float> y(size_t(d.N) * d.E), scratch(static_cast<size_t>(attnpool_backward_scratch(d.N, d.P, d.C, d.H)));
                  ap_run_forward(in, d, y.data(), s);
                  const int64_t C = d.C;
                  attnpool_backward(in.qw->f32(), in.kw->f32(), in.vw->f32(), in.cw->f32(), s, dy.f32(), c.out("dx", in.x->shape).f32(),
                                    c.out("dpositional_embedding", {d.P + 1, C}).f32(), c.out("dq_w", {C, C}).f32(), c.out("dq_b", {C}).f32(),
                                    c.out("dk_w", {C, C}).f32(), c.out("dk_b", {C}).f32(), c.out("dv_w", {C, C}).f32(), c.out("dv_b", {C}).f32(),
                                    c.out("dc_w", {int64_t(d.E), C}).f32(), c.out("dc_b", {int64_t(d.E)}).f32(), scratch.data(), d.N, d.P, d.C, d.H,
                                    d.E);
                });

}  // namespace dwc::cpu
