// CUDA twin of native/kernels/clip_loss.h (CLIP-SPEC.md "Output"): row normalisation from
// rowops.cu, the logits as one cuBLAS GEMM, the row / column log-sum-exps as one block per row or
// column (sums in double, as the CPU kernel), the loss and d logit_scale as one-block reductions
// in a fixed order (deterministic, nothing read back to the host).
#include <cmath>

#include "common.cuh"

namespace dwc::cuda {

namespace {

// blockIdx.y = 0: lse_r[i] over logits[i, :]; 1: lse_c[i] over logits[:, i].
__global__ void clip_lse_k(const float* logits, float* lse_r, float* lse_c, int N) {
  __shared__ float shm[32];
  __shared__ double sh[32];
  const int i = blockIdx.x;
  const bool col = blockIdx.y == 1;
  const int64_t base = col ? i : int64_t(i) * N, step = col ? N : 1;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < N; j += blockDim.x) m = fmaxf(m, logits[base + j * step]);
  m = block_max(m, shm);
  double s = 0;
  for (int j = threadIdx.x; j < N; j += blockDim.x) s += exp(double(logits[base + j * step]) - m);
  s = block_sum(s, sh);
  if (threadIdx.x == 0) (col ? lse_c : lse_r)[i] = static_cast<float>(double(m) + log(s));
}
// loss = ½·Σ_i (lse_r[i] + lse_c[i] − 2·logits[i,i]) / N; one block.
__global__ void clip_loss_k(const float* logits, const float* lse_r, const float* lse_c, int N, float* loss) {
  __shared__ double sh[32];
  double s = 0;
  for (int i = threadIdx.x; i < N; i += blockDim.x) s += double(lse_r[i]) + double(lse_c[i]) - 2.0 * logits[int64_t(i) * N + i];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) *loss = static_cast<float>(0.5 * s / N);
}
// dl[i,j] = k·(softmax_row + softmax_col − 2δ_ij)
__global__ void clip_dlogits_k(const float* logits, const float* lse_r, const float* lse_c, float k, int N, float* dl) {
  const int64_t n_all = int64_t(N) * N;
  DWC_GRID_STRIDE(e, n_all) {
    const int64_t i = e / N, j = e % N;
    const float l = logits[e];
    dl[e] = (expf(l - lse_r[i]) + expf(l - lse_c[j]) - (i == j ? 2.f : 0.f)) * k;
  }
}
// *dls += Σ dl ⊙ logits (double, one block)
__global__ void clip_dscale_k(const float* dl, const float* logits, int64_t n, float* dls) {
  __shared__ double sh[32];
  double s = 0;
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) s += double(dl[e]) * logits[e];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) *dls += static_cast<float>(s);
}

}  // namespace

void clip_loss_forward(const Ctx& c, const float* img, const float* txt, float logit_scale, int N, int E, float* img_n, float* txt_n,
                       float* norms_i, float* norms_t, float* logits, float* lse_r, float* lse_c, float* loss) {
  if (N <= 0) {
    fill(c, loss, 0.f, 1);
    return;
  }
  l2norm_rows_forward(c, img, img_n, norms_i, N, E);
  l2norm_rows_forward(c, txt, txt_n, norms_t, N, E);
  gemm(c, false, true, N, N, E, std::exp(logit_scale), img_n, txt_n, 0.f, logits);
  clip_lse_k<<<dim3(N, 2), 128, 0, c.stream>>>(logits, lse_r, lse_c, N);
  DWC_CUDA_LAUNCH_CHECK("clip_lse_k");
  clip_loss_k<<<1, 256, 0, c.stream>>>(logits, lse_r, lse_c, N, loss);
  DWC_CUDA_LAUNCH_CHECK("clip_loss_k");
}

void clip_loss_backward(const Ctx& c, const float* img_n, const float* txt_n, const float* norms_i, const float* norms_t, const float* logits,
                        const float* lse_r, const float* lse_c, float logit_scale, float dloss, int N, int E, float* dimg, float* dtxt,
                        float* dlogit_scale, float* scratch) {
  if (N <= 0) return;
  float* dl = scratch;
  float* dn_i = dl + int64_t(N) * N;
  float* dn_t = dn_i + int64_t(N) * E;
  const int64_t NN = int64_t(N) * N;
  clip_dlogits_k<<<blocks_for(NN), kThreads, 0, c.stream>>>(logits, lse_r, lse_c, dloss * 0.5f / N, N, dl);
  DWC_CUDA_LAUNCH_CHECK("clip_dlogits_k");
  if (dlogit_scale) {
    clip_dscale_k<<<1, 256, 0, c.stream>>>(dl, logits, NN, dlogit_scale);
    DWC_CUDA_LAUNCH_CHECK("clip_dscale_k");
  }
  const float s = std::exp(logit_scale);
  if (dimg) {
    gemm(c, false, false, N, E, N, s, dl, txt_n, 0.f, dn_i);
    l2norm_rows_backward(c, img_n, norms_i, dn_i, dimg, N, E);
  }
  if (dtxt) {
    gemm(c, true, false, N, E, N, s, dl, img_n, 0.f, dn_t);
    l2norm_rows_backward(c, txt_n, norms_t, dn_t, dtxt, N, E);
  }
}

}  // namespace dwc::cuda
