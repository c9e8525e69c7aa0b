#include "gemm.h"

#include <algorithm>

#include "../core/blas.h"
#include "../core/op.h"

namespace dwc::cpu {

namespace {

// C = beta * C for the degenerate K == 0 product (BLAS rejects lda = 0).
void scale_c(float* C, int64_t n, float beta) {
  if (beta == 0.f) {
    std::fill(C, C + n, 0.f);
  } else if (beta != 1.f) {
    for (int64_t i = 0; i < n; ++i) C[i] *= beta;
  }
}

}  // namespace

void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_c(C, static_cast<int64_t>(M) * N, beta);
    return;
  }
  sgemm(transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, transA ? M : K, B,
              transB ? K : N, beta, C, N);
}

void gemm_batched(int batch, bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int64_t strideA, const float* B,
                  int64_t strideB, float beta, float* C, int64_t strideC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  // One BLAS call per product, outside any OpenMP region. Measured: even at 16x16x16 a
  // single-threaded OpenBLAS call beats a hand-vectorised loop by 2.5x, so there is no small path.
  for (int p = 0; p < batch; ++p) gemm(transA, transB, M, N, K, alpha, A + p * strideA, B + p * strideB, beta, C + p * strideC);
}

void linear_forward(const float* x, const float* W, const float* b, float* y, int N, int in, int out) {
  if (N <= 0 || out <= 0) return;
  if (b) {
#pragma omp parallel for if (static_cast<int64_t>(N) * out > 65536)
    for (int i = 0; i < N; ++i) std::copy(b, b + out, y + static_cast<size_t>(i) * out);
  }
  gemm(false, true, N, out, in, 1.f, x, W, b ? 1.f : 0.f, y);
}

void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int N, int in, int out) {
  if (dx) gemm(false, false, N, in, out, 1.f, dy, W, 1.f, dx);  // dx += dy · W
  if (dW) gemm(true, false, out, in, N, 1.f, dy, x, 1.f, dW);   // dW += dyᵀ · x
  if (db && out > 0) {
    // Column sums of dy; threads own disjoint column blocks.
    const int blk = 256;
    const int nblk = (out + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * out > 65536 && nblk > 1)
    for (int bi = 0; bi < nblk; ++bi) {
      const int j0 = bi * blk, j1 = std::min(out, j0 + blk);
      for (int i = 0; i < N; ++i) {
        const float* r = dy + static_cast<size_t>(i) * out;
#pragma omp simd
        for (int j = j0; j < j1; ++j) db[j] += r[j];
      }
    }
  }
}

// ---- ops (JS tests / benchmarks) ----
namespace {

int to_int(const OpCtx& c, int64_t v, const char* name) {
  DWC_ARG_CHECK(v <= 0x7fffffff, c.op_name << ": argument '" << name << "': dimension " << v << " exceeds the BLAS int range");
  return static_cast<int>(v);
}

// Flattened [rows, last] view of a tensor of rank >= 1.
int64_t lead_rows(const Tensor& t) { return t.ndim() <= 1 ? 1 : t.numel() / t.dim(-1); }

}  // namespace

DWC_REGISTER_OP("gemm", "A, B, C?; transA, transB, alpha=1, beta=0 -> C = alpha*op(A)*op(B) + beta*C", [](OpCtx& c) {
  const Tensor& A = c.in("A", 2);
  const Tensor& B = c.in("B", 2);
  const Tensor* Cin = c.in_opt("C", 2);
  const bool tA = c.flag("transA"), tB = c.flag("transB");
  const float alpha = static_cast<float>(c.attr_or("alpha", 1.0));
  const float beta = static_cast<float>(c.attr_or("beta", 0.0));
  const int64_t M = tA ? A.dim(1) : A.dim(0), K = tA ? A.dim(0) : A.dim(1);
  c.expect_dim(B, "B", tB ? 1 : 0, K, "K, the inner dimension of op(A)");
  const int64_t N = tB ? B.dim(0) : B.dim(1);
  if (Cin) c.expect_shape(*Cin, "C", {M, N});
  Tensor& C = Cin ? c.out_copy("C", *Cin) : c.out("C", {M, N});
  gemm(tA, tB, to_int(c, M, "A"), to_int(c, N, "B"), to_int(c, K, "A"), alpha, A.f32(), B.f32(), Cin ? beta : 0.f, C.f32());
});

DWC_REGISTER_OP("gemm_batched", "A[b,..], B[b,..]; transA, transB, alpha=1 -> C[b,M,N]", [](OpCtx& c) {
  const Tensor& A = c.in("A", 3);
  const Tensor& B = c.in("B", 3);
  const bool tA = c.flag("transA"), tB = c.flag("transB");
  const float alpha = static_cast<float>(c.attr_or("alpha", 1.0));
  const int64_t b = A.dim(0);
  c.expect_dim(B, "B", 0, b, "batch of A");
  const int64_t M = tA ? A.dim(2) : A.dim(1), K = tA ? A.dim(1) : A.dim(2);
  c.expect_dim(B, "B", tB ? 2 : 1, K, "K, the inner dimension of op(A)");
  const int64_t N = tB ? B.dim(1) : B.dim(2);
  Tensor& C = c.out("C", {b, M, N});
  gemm_batched(to_int(c, b, "A"), tA, tB, to_int(c, M, "A"), to_int(c, N, "B"), to_int(c, K, "A"), alpha, A.f32(), M * K, B.f32(), K * N,
               0.f, C.f32(), M * N);
});

DWC_REGISTER_OP("linear_forward", "x[..,in], W[out,in], b?[out] -> y[..,out]", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  const Tensor& W = c.in("W", 2);
  const Tensor* b = c.in_opt("b", 1);
  DWC_ARG_CHECK(x.ndim() >= 1, c.op_name << ": argument 'x' must have at least 1 dimension");
  const int64_t in = W.dim(1), out = W.dim(0);
  c.expect_dim(x, "x", x.ndim() - 1, in, "in features, W dim 1");
  if (b) c.expect_shape(*b, "b", {out});
  std::vector<int64_t> ys = x.shape;
  ys.back() = out;
  linear_forward(x.f32(), W.f32(), b ? b->f32() : nullptr, c.out("y", ys).f32(), to_int(c, lead_rows(x), "x"), to_int(c, in, "W"),
                 to_int(c, out, "W"));
});

DWC_REGISTER_OP("linear_backward", "x[..,in], W[out,in], dy[..,out] -> dx, dW, db", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  const Tensor& W = c.in("W", 2);
  const Tensor& dy = c.in("dy");
  DWC_ARG_CHECK(x.ndim() >= 1, c.op_name << ": argument 'x' must have at least 1 dimension");
  const int64_t in = W.dim(1), out = W.dim(0);
  c.expect_dim(x, "x", x.ndim() - 1, in, "in features, W dim 1");
  std::vector<int64_t> ys = x.shape;
  ys.back() = out;
  c.expect_shape(dy, "dy", ys);
  linear_backward(x.f32(), W.f32(), dy.f32(), c.out("dx", x.shape).f32(), c.out("dW", W.shape).f32(), c.out("db", {out}).f32(),
                  to_int(c, lead_rows(x), "x"), to_int(c, in, "W"), to_int(c, out, "W"));
});

}  // namespace dwc::cpu
