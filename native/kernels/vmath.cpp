// Op exposing the shared vectorised exp / log of native/core/vmath.h, for their accuracy test
// (test/vmath.test.js: max ulp error against double-precision exp / log, limits, denormals).
#include "../core/vmath.h"

#include "../core/op.h"

namespace dwc::cpu {

DWC_REGISTER_OP("vmath_eval", "x [n]; fn (0 = exp, 1 = log) -> y [n] = vm::exp(x) | vm::log(x) (native/core/vmath.h)", [](OpCtx& c) {
  const Tensor& x = c.in("x", 1);
  const int64_t fn = c.int_attr_or("fn", 0);
  DWC_ARG_CHECK(fn == 0 || fn == 1, c.op_name << ": option 'fn' must be 0 (exp) or 1 (log), got " << fn);
  const float* xp = x.f32();
  float* y = c.out("y", x.shape).f32();
  const int64_t n = x.numel();
  if (fn == 0) {
    for (int64_t i = 0; i < n; ++i) y[i] = vm::exp(xp[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = vm::log(xp[i]);
  }
});

}  // namespace dwc::cpu
