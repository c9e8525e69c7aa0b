#include "tensorops.h"

#include <algorithm>
#include <string>
#include <vector>

#include "../core/op.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace dwc::cpu {

namespace {
constexpr int64_t kParWork = 65536;
}

void concat_forward(int n, const float* const* xs, const int64_t* sizes, int64_t outer, int64_t inner, float* y) {
  int64_t total = 0;
  for (int i = 0; i < n; ++i) total += sizes[i];
#pragma omp parallel for schedule(static) if (outer * total * inner > kParWork && outer > 1)
  for (int64_t o = 0; o < outer; ++o) {
    float* dst = y + o * total * inner;
    for (int i = 0; i < n; ++i) {
      const int64_t len = sizes[i] * inner;
      std::copy(xs[i] + o * len, xs[i] + (o + 1) * len, dst);
      dst += len;
    }
  }
}

void concat_backward(int n, float* const* dxs, const int64_t* sizes, int64_t outer, int64_t inner, const float* dy) {
  int64_t total = 0;
  for (int i = 0; i < n; ++i) total += sizes[i];
#pragma omp parallel for schedule(static) if (outer * total * inner > kParWork && outer > 1)
  for (int64_t o = 0; o < outer; ++o) {
    const float* src = dy + o * total * inner;
    for (int i = 0; i < n; ++i) {
      const int64_t len = sizes[i] * inner;
      if (dxs[i]) {
        float* d = dxs[i] + o * len;
#pragma omp simd
        for (int64_t k = 0; k < len; ++k) d[k] += src[k];
      }
      src += len;
    }
  }
}

void embedding_forward(const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t E) {
  (void)V;
#pragma omp parallel for schedule(static) if (n * E > kParWork)
  for (int64_t i = 0; i < n; ++i) {
    const float* row = table + static_cast<int64_t>(ids[i]) * E;
    std::copy(row, row + E, y + i * E);
  }
}

// Scatter-add. Threads own disjoint ranges of table rows (each scans all ids), so duplicate ids
// need no atomics and the sum order is deterministic.
void embedding_backward(const int32_t* ids, const float* dy, float* dtable, int64_t n, int64_t V, int64_t E) {
#pragma omp parallel if (n * E > kParWork && V > 1)
  {
    int64_t t = 0, nt = 1;
#ifdef _OPENMP
    t = omp_get_thread_num();
    nt = omp_get_num_threads();
#endif
    const int64_t lo = V * t / nt, hi = V * (t + 1) / nt;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = ids[i];
      if (id < lo || id >= hi) continue;
      float* d = dtable + id * E;
      const float* g = dy + i * E;
#pragma omp simd
      for (int64_t k = 0; k < E; ++k) d[k] += g[k];
    }
  }
}

// ---- ops (JS tests / benchmarks) ----
namespace {

// x0, x1, ... up to the first missing name (at least x0).
std::vector<const Tensor*> concat_inputs(const OpCtx& c) {
  std::vector<const Tensor*> xs;
  xs.push_back(&c.in("x0"));
  for (int i = 1;; ++i) {
    const Tensor* t = c.in_opt("x" + std::to_string(i));
    if (!t) break;
    xs.push_back(t);
  }
  return xs;
}

// Validates the inputs against x0 (all dims equal except `axis`) and returns the output shape.
std::vector<int64_t> concat_layout(const OpCtx& c, const std::vector<const Tensor*>& xs, int& axis, std::vector<int64_t>& sizes,
                                   int64_t& outer, int64_t& inner) {
  const Tensor& x0 = *xs[0];
  const int nd = x0.ndim();
  const int64_t a = c.int_attr_or("axis", 0);
  DWC_ARG_CHECK(nd >= 1 && a >= -nd && a < nd,
                c.op_name << ": option 'axis' = " << a << " is out of range for argument 'x0' of shape " << shape_str(x0.shape));
  axis = static_cast<int>(a < 0 ? a + nd : a);
  std::vector<int64_t> ys = x0.shape;
  ys[axis] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const std::string name = "x" + std::to_string(i);
    const Tensor& x = *xs[i];
    DWC_ARG_CHECK(x.ndim() == nd, c.op_name << ": argument '" << name << "' has shape " << shape_str(x.shape) << ", expected " << nd
                                            << " dimensions like 'x0' " << shape_str(x0.shape));
    for (int d = 0; d < nd; ++d)
      if (d != axis) c.expect_dim(x, name, d, x0.dim(d), "must match 'x0' off the concat axis");
    sizes.push_back(x.dim(axis));
    ys[axis] += x.dim(axis);
  }
  outer = 1;
  inner = 1;
  for (int d = 0; d < axis; ++d) outer *= x0.dim(d);
  for (int d = axis + 1; d < nd; ++d) inner *= x0.dim(d);
  return ys;
}

void check_ids(const OpCtx& c, const Tensor& ids, int64_t V) {
  const int32_t* p = ids.i32();
  const int64_t n = ids.numel();
  for (int64_t i = 0; i < n; ++i)
    DWC_ARG_CHECK(p[i] >= 0 && p[i] < V, c.op_name << ": argument 'ids' holds " << p[i] << " at flat index " << i
                                                   << ", outside the vocabulary [0, " << V << ")");
}

}  // namespace

DWC_REGISTER_OP("concat_forward", "x0..x{n-1}; axis=0 -> y", [](OpCtx& c) {
  auto xs = concat_inputs(c);
  int axis;
  std::vector<int64_t> sizes;
  int64_t outer, inner;
  auto ys = concat_layout(c, xs, axis, sizes, outer, inner);
  std::vector<const float*> ptrs;
  for (auto* x : xs) ptrs.push_back(x->f32());
  concat_forward(static_cast<int>(xs.size()), ptrs.data(), sizes.data(), outer, inner, c.out("y", ys).f32());
});

DWC_REGISTER_OP("concat_backward", "dy, x0..x{n-1} (sizes only); axis=0 -> dx0..dx{n-1}", [](OpCtx& c) {
  auto xs = concat_inputs(c);
  const Tensor& dy = c.in("dy");
  int axis;
  std::vector<int64_t> sizes;
  int64_t outer, inner;
  auto ys = concat_layout(c, xs, axis, sizes, outer, inner);
  c.expect_shape(dy, "dy", ys);
  std::vector<float*> ptrs;
  for (size_t i = 0; i < xs.size(); ++i) ptrs.push_back(c.out("dx" + std::to_string(i), xs[i]->shape).f32());
  concat_backward(static_cast<int>(xs.size()), ptrs.data(), sizes.data(), outer, inner, dy.f32());
});

DWC_REGISTER_OP("embedding_forward", "ids int32[..], table[V,E] -> y[..,E]", [](OpCtx& c) {
  const Tensor& ids = c.in_i32("ids");
  const Tensor& table = c.in("table", 2);
  const int64_t V = table.dim(0), E = table.dim(1);
  check_ids(c, ids, V);
  std::vector<int64_t> ys = ids.shape;
  ys.push_back(E);
  embedding_forward(ids.i32(), table.f32(), c.out("y", ys).f32(), ids.numel(), V, E);
});

DWC_REGISTER_OP("embedding_backward", "ids int32[..], dy[..,E]; V -> dtable[V,E]", [](OpCtx& c) {
  const Tensor& ids = c.in_i32("ids");
  const Tensor& dy = c.in("dy");
  const int64_t V = c.int_attr("V");
  DWC_ARG_CHECK(V >= 1, c.op_name << ": option 'V' must be >= 1, got " << V);
  DWC_ARG_CHECK(dy.ndim() == ids.ndim() + 1, c.op_name << ": argument 'dy' has shape " << shape_str(dy.shape) << ", expected ids shape "
                                                        << shape_str(ids.shape) << " plus the embedding dim");
  const int64_t E = dy.dim(-1);
  std::vector<int64_t> ds = ids.shape;
  ds.push_back(E);
  c.expect_shape(dy, "dy", ds);
  check_ids(c, ids, V);
  embedding_backward(ids.i32(), dy.f32(), c.out("dtable", {V, E}).f32(), ids.numel(), V, E);
});

}  // namespace dwc::cpu
