// CUDA twin of native/kernels/attnpool.h (AttentionPool2d of CLIP's ModifiedResNet): the
// projections through the cuBLAS linear kernels (gemm.cu), the single-query scores, weighted sums
// and their gradients as gathers (one thread per output element, sums in a fixed order, no
// atomics), the softmax and its backward from rowops.cu.
#include <cmath>

#include "common.cuh"

namespace dwc::cuda {

namespace {

// t[n,0,c] = mean_p x[n,p,c] + pos[0,c] (double sum, as the CPU kernel); t[n,1+p,c] = x[n,p,c] + pos[1+p,c].
__global__ void ap_tokens_k(const float* x, const float* pos, float* t, int N, int P, int C) {
  const int64_t n_all = int64_t(N) * C;
  DWC_GRID_STRIDE(i, n_all) {
    const int64_t n = i / C, c = i % C, T = P + 1;
    const float* xn = x + n * P * C;
    float* tn = t + n * T * C;
    double s = 0.0;
    for (int p = 0; p < P; ++p) {
      const float v = xn[int64_t(p) * C + c];
      s += v;
      tn[int64_t(p + 1) * C + c] = v + pos[int64_t(p + 1) * C + c];
    }
    tn[c] = static_cast<float>(s / P) + pos[c];
  }
}
// rows t[n, 0, :] → t0[n, :]
__global__ void ap_row0_k(const float* t, float* t0, int N, int T, int C) {
  const int64_t n_all = int64_t(N) * C;
  DWC_GRID_STRIDE(i, n_all) t0[i] = t[(i / C) * T * C + i % C];
}
// score[n,h,j] = q[n,h·d:] · k[n,j,h·d:]
__global__ void ap_score_k(const float* q, const float* k, float* score, int N, int T, int C, int H) {
  const int d = C / H;
  const int64_t n_all = int64_t(N) * H * T;
  DWC_GRID_STRIDE(i, n_all) {
    const int64_t j = i % T, nh = i / T, n = nh / H, h = nh % H;
    const float* qh = q + n * C + h * d;
    const float* kj = k + (n * T + j) * C + h * d;
    float a = 0.f;
    for (int e = 0; e < d; ++e) a += qh[e] * kj[e];
    score[i] = a;
  }
}
// ctx[n,c] = Σ_j att[n,h,j]·v[n,j,c], h = c / d
__global__ void ap_ctx_k(const float* att, const float* v, float* ctx, int N, int T, int C, int H) {
  const int d = C / H;
  const int64_t n_all = int64_t(N) * C;
  DWC_GRID_STRIDE(i, n_all) {
    const int64_t n = i / C, c = i % C;
    const float* a = att + (n * H + c / d) * T;
    float s = 0.f;
    for (int j = 0; j < T; ++j) s += a[j] * v[(n * T + j) * C + c];
    ctx[i] = s;
  }
}
// datt[n,h,j] = dctx[n,h·d:] · v[n,j,h·d:]  (the same form as the scores)
// dv[n,j,c] = att[n,h,j]·dctx[n,c]; dk[n,j,c] = dsc[n,h,j]·q[n,c] (overwrite)
__global__ void ap_outer_k(const float* w_nhT, const float* u, float* out, int N, int T, int C, int H) {
  const int d = C / H;
  const int64_t n_all = int64_t(N) * T * C;
  DWC_GRID_STRIDE(i, n_all) {
    const int64_t c = i % C, nj = i / C, n = nj / T, j = nj % T;
    out[i] = w_nhT[(n * H + c / d) * T + j] * u[n * C + c];
  }
}
// dpos[i] += Σ_n dt[n, i] over i < T·C; dx[n,p,c] += dt[n,p+1,c] + dt[n,0,c]/P
__global__ void ap_dpos_k(const float* dt, float* dpos, int N, int64_t TC) {
  DWC_GRID_STRIDE(i, TC) {
    float s = 0.f;
    for (int n = 0; n < N; ++n) s += dt[n * TC + i];
    dpos[i] += s;
  }
}
__global__ void ap_dx_k(const float* dt, float* dx, int N, int P, int C) {
  const int64_t n_all = int64_t(N) * P * C, T = P + 1;
  DWC_GRID_STRIDE(i, n_all) {
    const int64_t c = i % C, np = i / C, n = np / P, p = np % P;
    const float* dtn = dt + n * T * C;
    dx[i] += dtn[(p + 1) * C + c] + dtn[c] / static_cast<float>(P);
  }
}

}  // namespace

void attnpool_forward(const Ctx& c, const float* x, const float* pos, const float* q_w, const float* q_b, const float* k_w, const float* k_b,
                      const float* v_w, const float* v_b, const float* c_w, const float* c_b, float* y, const cpu::AttnPoolSaved& s, int N,
                      int P, int C, int H, int E) {
  if (N <= 0 || P <= 0) return;
  const int T = P + 1, d = C / H;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  ap_tokens_k<<<blocks_for(int64_t(N) * C), kThreads, 0, c.stream>>>(x, pos, s.t, N, P, C);
  DWC_CUDA_LAUNCH_CHECK("ap_tokens_k");
  linear_forward(c, s.t, k_w, k_b, s.k, N * T, C, C);
  linear_forward(c, s.t, v_w, v_b, s.v, N * T, C, C);
  float* t0 = c.scratch->f(kScratchA, size_t(N) * C);
  float* score = c.scratch->f(kScratchB, size_t(N) * H * T);
  ap_row0_k<<<blocks_for(int64_t(N) * C), kThreads, 0, c.stream>>>(s.t, t0, N, T, C);
  DWC_CUDA_LAUNCH_CHECK("ap_row0_k");
  linear_forward(c, t0, q_w, q_b, s.q, N, C, C);
  ap_score_k<<<blocks_for(int64_t(N) * H * T), kThreads, 0, c.stream>>>(s.q, s.k, score, N, T, C, H);
  DWC_CUDA_LAUNCH_CHECK("ap_score_k");
  softmax_rows_forward(c, score, s.att, int64_t(N) * H, T, scale);
  ap_ctx_k<<<blocks_for(int64_t(N) * C), kThreads, 0, c.stream>>>(s.att, s.v, s.ctx, N, T, C, H);
  DWC_CUDA_LAUNCH_CHECK("ap_ctx_k");
  linear_forward(c, s.ctx, c_w, c_b, y, N, C, E);
}

void attnpool_backward(const Ctx& c, const float* q_w, const float* k_w, const float* v_w, const float* c_w, const cpu::AttnPoolSaved& s,
                       const float* dy, float* dx, float* dpos, float* dq_w, float* dq_b, float* dk_w, float* dk_b, float* dv_w,
                       float* dv_b, float* dc_w, float* dc_b, float* scratch, int N, int P, int C, int H, int E) {
  if (N <= 0 || P <= 0) return;
  const int T = P + 1, d = C / H;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  const int64_t NC = int64_t(N) * C, NHT = int64_t(N) * H * T, NTC = int64_t(N) * T * C;
  // within attnpool_backward_scratch floats: dctx, dq, t0 [N,C]; datt, dsc [N,H,T]; dk, dv, dt [N,T,C]
  float* dctx = scratch;
  float* dq = dctx + NC;
  float* t0 = dq + NC;
  float* datt = t0 + NC;
  float* dsc = datt + NHT;
  float* dk = dsc + NHT;
  float* dv = dk + NTC;
  float* dt = dv + NTC;
  fill(c, dctx, 0.f, NC);
  linear_backward(c, s.ctx, c_w, dy, dctx, dc_w, dc_b, N, C, E);
  ap_score_k<<<blocks_for(NHT), kThreads, 0, c.stream>>>(dctx, s.v, datt, N, T, C, H);  // datt = dctx_h · v_h
  DWC_CUDA_LAUNCH_CHECK("ap_score_k (datt)");
  ap_outer_k<<<blocks_for(NTC), kThreads, 0, c.stream>>>(s.att, dctx, dv, N, T, C, H);
  DWC_CUDA_LAUNCH_CHECK("ap_outer_k (dv)");
  fill(c, dsc, 0.f, NHT);
  softmax_rows_backward(c, s.att, datt, dsc, NHT / T, T, scale);  // dsc = d(q·k), the scale folded in
  ap_ctx_k<<<blocks_for(NC), kThreads, 0, c.stream>>>(dsc, s.k, dq, N, T, C, H);  // dq = Σ_j dsc·k
  DWC_CUDA_LAUNCH_CHECK("ap_ctx_k (dq)");
  ap_outer_k<<<blocks_for(NTC), kThreads, 0, c.stream>>>(dsc, s.q, dk, N, T, C, H);
  DWC_CUDA_LAUNCH_CHECK("ap_outer_k (dk)");
  ap_row0_k<<<blocks_for(NC), kThreads, 0, c.stream>>>(s.t, t0, N, T, C);
  DWC_CUDA_LAUNCH_CHECK("ap_row0_k");
  fill(c, dt, 0.f, NTC);
  linear_backward(c, t0, q_w, dq, nullptr, dq_w, dq_b, N, C, C);
  gemm_ld(c, false, false, N, C, C, 1.f, dq, C, q_w, C, 1.f, dt, T * C);  // dt[n,0] += dq·q_w
  linear_backward(c, s.t, k_w, dk, dt, dk_w, dk_b, N * T, C, C);
  linear_backward(c, s.t, v_w, dv, dt, dv_w, dv_b, N * T, C, C);
  if (dpos) {
    ap_dpos_k<<<blocks_for(int64_t(T) * C), kThreads, 0, c.stream>>>(dt, dpos, N, int64_t(T) * C);
    DWC_CUDA_LAUNCH_CHECK("ap_dpos_k");
  }
  if (dx) {
    ap_dx_k<<<blocks_for(int64_t(N) * P * C), kThreads, 0, c.stream>>>(dt, dx, N, P, C);
    DWC_CUDA_LAUNCH_CHECK("ap_dx_k");
  }
}

}  // namespace dwc::cuda
