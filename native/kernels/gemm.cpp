#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "../core/blas.h"
#include "../core/errors.h"
#include "../core/op.h"
#include "../core/threads.h"
#include "elementwise.h"
#include "transformer.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef DWC_WITH_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

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

// ---- fused Linear (oneDNN matmul primitives) ----
// docs/PERFORMANCE.md "How kernels are chosen": on the oneDNN backend this runs one matmul
// primitive whose epilogue adds the bias, applies the activation and adds the residual, instead of
// a bias copy, a GEMM with beta = 1, an activation pass and an add pass (each a pass over y).
namespace {

std::atomic<int64_t> g_matmuls{0};
std::atomic<bool> g_fused{true};

#ifdef DWC_WITH_DNNL
using dnnl::memory;

dnnl::engine& mm_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& mm_stream() {
  static dnnl::stream s(mm_engine());
  return s;
}

// One product (N, K, bias, activation, residual, threads) with its post-ops; M, the number of rows,
// is a runtime dimension (DNNL_RUNTIME_DIM_VAL), so the packed text tower (one M per total text
// length) and every batch size reuse the same primitive: nothing is created after warm-up.
struct MatmulEntry {
  dnnl::matmul prim;
  memory wei, bias;  // handle-less; src / dst are made per call with the actual M
  int bias_arg = DNNL_ARG_BIAS;  // or the binary post-op's operand (residual without activation)
};


// Key: N, K, bias, activation, residual, threads, precision (bf16: bf16 src and weights, f32 bias,
// post-ops and dst; docs/PERFORMANCE.md "bf16").
using MatmulKey = std::vector<int64_t>;

// Null when oneDNN cannot build that primitive (the caller then runs the separate sequence; the
// null is cached too).
MatmulEntry* matmul_entry(int N, int K, bool bias, Act act, bool res, bool bf16) {
  static std::mutex mu;
  static std::map<MatmulKey, std::unique_ptr<MatmulEntry>> cache;
  const int nt = in_parallel() ? 1 : num_threads();
  const MatmulKey key{N, K, bias, static_cast<int>(act), res, nt, bf16};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();
  using dt = memory::data_type;
  const memory::dim M = DNNL_RUNTIME_DIM_VAL;
  // src [M, K], weights Wᵀ [K, N] (W is [N, K] row-major: strides {1, K}), dst [M, N]
  const dt in_t = bf16 ? dt::bf16 : dt::f32;
  const memory::desc src_md({M, K}, in_t, memory::dims{K, 1});
  const memory::desc wei_md({K, N}, in_t, memory::dims{1, K});
  const memory::desc dst_md({M, N}, dt::f32, memory::dims{N, 1});
  const memory::desc bias_md({1, N}, dt::f32, memory::dims{N, 1});
  dnnl::post_ops po;
  if (act == Act::QuickGelu) po.append_eltwise(1.f, dnnl::algorithm::eltwise_swish, 1.702f, 0.f);  // x·σ(1.702x)
  if (act == Act::Gelu) po.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
  // The residual: y holds it before the product (or is it) and a sum post-op adds it; oneDNN 2.6
  // takes no binary post-op whose operand has a runtime dimension. A/B at the CLIP shapes
  // (docs/PERFORMANCE.md): the same rate as the fixed-M primitive with a binary add.
  if (res) po.append_sum(1.f);
  // With a residual and no activation the bias is a binary add after the sum, not the matmul's
  // bias: oneDNN 2.6 then runs the GEMM with β = 1 into y. With its bias argument and a sum it
  // accumulates into an M×N buffer malloc'ed on every call (4.9 MB for ViT-B/32's out_proj and
  // c_proj at batch 32, faulted in each time; docs/CLIP.md "Speed").
  const bool bias_post = bias && res && act == Act::None;
  if (bias_post) po.append_binary(dnnl::algorithm::binary_add, bias_md);
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  auto& eng = mm_engine();
  auto e = std::make_unique<MatmulEntry>();
  try {
    const dnnl::matmul::desc d =
        bias && !bias_post ? dnnl::matmul::desc(src_md, wei_md, bias_md, dst_md) : dnnl::matmul::desc(src_md, wei_md, dst_md);
    e->prim = dnnl::matmul(dnnl::matmul::primitive_desc(d, attr, eng));
  } catch (const dnnl::error&) {
    return cache.emplace(key, nullptr).first->second.get();
  }
  e->wei = memory(wei_md, eng, DNNL_MEMORY_NONE);
  if (bias) e->bias = memory(bias_md, eng, DNNL_MEMORY_NONE);
  if (bias_post) e->bias_arg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1;  // post-op 1, after the sum
  ++g_matmuls;
  return cache.emplace(key, std::move(e)).first->second.get();
}

// y[i] = r[i] over n floats, over the engine's threads when large.
void copy_rows(float* y, const float* r, int64_t n) {
  constexpr int64_t kBlk = 16384;
  const int64_t nb = (n + kBlk - 1) / kBlk;
#pragma omp parallel for schedule(static) if (nb > 4)
  for (int64_t i = 0; i < nb; ++i) std::memcpy(y + i * kBlk, r + i * kBlk, sizeof(float) * std::min(kBlk, n - i * kBlk));
}

void run_matmul(MatmulEntry& e, int M, int N, int K, const float* x, const float* W, const float* b, const float* res, float* y, bool bf16) {
  // oneDNN threads over omp_get_max_threads() of the calling thread (as in dwc::sgemm)
#ifdef _OPENMP
  if (!omp_in_parallel() && omp_get_max_threads() != num_threads()) omp_set_num_threads(num_threads());
#endif
  using dt = memory::data_type;
  auto& eng = mm_engine();
  if (res && res != y) copy_rows(y, res, int64_t(M) * N);
  // bf16: x and W rounded into per-thread copies (grown while warming up) that the primitive reads
  thread_local std::vector<uint16_t> xb, wb;
  const void* xs = x;
  const void* ws = W;
  if (bf16) {
    if (xb.size() < size_t(M) * K) xb.resize(size_t(M) * K);
    if (wb.size() < size_t(N) * K) wb.resize(size_t(N) * K);
    f32_to_bf16(x, xb.data(), int64_t(M) * K);
    f32_to_bf16(W, wb.data(), int64_t(N) * K);
    xs = xb.data(), ws = wb.data();
    count_bf16_call();
  }
  memory src(memory::desc({M, K}, bf16 ? dt::bf16 : dt::f32, memory::dims{K, 1}), eng, const_cast<void*>(xs));
  memory dst(memory::desc({M, N}, dt::f32, memory::dims{N, 1}), eng, y);
  e.wei.set_data_handle(const_cast<void*>(ws));
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, e.wei}, {DNNL_ARG_DST, dst}};
  if (b) {
    e.bias.set_data_handle(const_cast<float*>(b));
    args.emplace(e.bias_arg, e.bias);
  }
  e.prim.execute(mm_stream(), args);
  mm_stream().wait();
}
#endif

void apply_act(float* y, int64_t n, Act act) {
  if (act == Act::QuickGelu) quick_gelu_forward(y, y, n);
  else if (act == Act::Gelu) gelu_forward(y, y, n);
}

}  // namespace

int64_t matmul_primitives_created() { return g_matmuls.load(); }
void set_fused_epilogues(bool on) { g_fused = on; }
bool fused_epilogues() { return g_fused.load(); }

void linear_forward_fused(const float* x, const float* W, const float* b, const float* res, float* y, int N, int in, int out, Act act) {
  if (N <= 0 || out <= 0) return;
#ifdef DWC_WITH_DNNL
  if (gemm_impl() == GemmImpl::Dnnl && fused_epilogues() && in > 0) {
    const bool bf16 = precision() == Precision::Bf16;
    if (MatmulEntry* e = matmul_entry(out, in, b != nullptr, act, res != nullptr, bf16)) {
      run_matmul(*e, N, out, in, x, W, b, res, y, bf16);
      return;
    }
  }
#endif
  const int64_t n = int64_t(N) * out;
  if (res == y) {  // in place: y holds the residual
    if (act == Act::None) {  // y += b, then y += x·Wᵀ (β = 1)
      if (b) {
#pragma omp parallel for if (n > 65536)
        for (int i = 0; i < N; ++i) {
          float* yr = y + static_cast<size_t>(i) * out;
#pragma omp simd
          for (int j = 0; j < out; ++j) yr[j] += b[j];
        }
      }
      gemm(false, true, N, out, in, 1.f, x, W, 1.f, y);
      return;
    }
    std::vector<float> t(static_cast<size_t>(n));
    linear_forward(x, W, b, t.data(), N, in, out);
    apply_act(t.data(), n, act);
    add_inplace(y, t.data(), n);
    return;
  }
  linear_forward(x, W, b, y, N, in, out);
  apply_act(y, n, act);
  if (res) add_inplace(y, res, n);
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

DWC_REGISTER_OP("linear_forward_fused",
                "x[..,in], W[out,in], b?[out], residual?[..,out]; activation=0 none|1 quick_gelu|2 gelu -> y = act(x*W^T + b) + residual",
                [](OpCtx& c) {
                  const Tensor& x = c.in("x");
                  const Tensor& W = c.in("W", 2);
                  const Tensor* b = c.in_opt("b", 1);
                  const Tensor* r = c.in_opt("residual");
                  DWC_ARG_CHECK(x.ndim() >= 1, c.op_name << ": argument 'x' must have at least 1 dimension");
                  const int64_t in = W.dim(1), out = W.dim(0);
                  c.expect_dim(x, "x", x.ndim() - 1, in, "in features, W dim 1");
                  if (b) c.expect_shape(*b, "b", {out});
                  std::vector<int64_t> ys = x.shape;
                  ys.back() = out;
                  if (r) c.expect_shape(*r, "residual", ys);
                  const int64_t a = c.int_attr_or("activation", 0);
                  DWC_ARG_CHECK(a >= 0 && a <= 2, c.op_name << ": option 'activation' must be 0 (none), 1 (quick_gelu) or 2 (gelu), got " << a);
                  const Act act = a == 1 ? Act::QuickGelu : a == 2 ? Act::Gelu : Act::None;
                  linear_forward_fused(x.f32(), W.f32(), b ? b->f32() : nullptr, r ? r->f32() : nullptr, c.out("y", ys).f32(),
                                       to_int(c, lead_rows(x), "x"), to_int(c, in, "W"), to_int(c, out, "W"), act);
                });

}  // namespace dwc::cpu
