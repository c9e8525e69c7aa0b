// Vectorisable float exp / log for the kernels' inner loops (GeM, softmax rows, LSTM gates), the
// one place for them (docs/ACCURACY.md). Both are accurate to ≤ 2 ulp against double-precision
// std::exp / std::log over the whole float range, denormal inputs and results included (checked
// by test/vmath.test.js through the op "vmath_eval"), and give IEEE results at the limits:
//   exp: NaN → NaN, +inf and x > ln(FLT_MAX) → +inf, −inf and x < ln(2⁻¹⁵⁰) → 0;
//   log: NaN → NaN, x < 0 → NaN, ±0 → −inf, +inf → +inf.
// Branch-free: every select is done on integer bit patterns (GCC does not if-convert float
// compares under -ftrapping-math, which would stop the loops from vectorising), no libm call.
// Polynomials: Cephes expf / logf (range reduction by ln 2 in two parts, degree-6 / degree-9
// minimax); 2ⁿ is applied as two factors so that denormal results and results near FLT_MAX get
// one rounding each.
#pragma once

#include <cstdint>

// DWC_AVX2_CLONES before a function that runs a vectorisable loop: GCC compiles it twice, for
// AVX2 and for the build's baseline (x86-64-v2, SSE4.2), and picks at load time by the CPU (an
// ifunc). No FMA in the AVX2 clone, so each element rounds as in the baseline (only the order of
// simd reductions differs). Put it on a function without OpenMP regions of its own (GCC outlines
// a parallel region before cloning, and the outlined body stays baseline): call it per span or row
// from the parallel loop instead.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(__AVX2__)
#define DWC_AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DWC_AVX2_CLONES
#endif

namespace dwc::vm {

inline float as_float(int32_t i) { return __builtin_bit_cast(float, i); }
inline int32_t as_int(float f) { return __builtin_bit_cast(int32_t, f); }
// m ? a : b on bit patterns (m all ones or zero).
inline int32_t sel(int32_t m, int32_t a, int32_t b) { return (a & m) | (b & ~m); }
inline int32_t mask(bool c) { return -static_cast<int32_t>(c); }

// e^x.
inline float exp(float x) {
  const int32_t ix = as_int(x), ax = ix & 0x7fffffff;
  const int32_t nan = mask(ax > 0x7f800000);
  // |x| > 104 (and ±inf): 104 already gives 0 / +inf after scaling
  const float xc = as_float(sel(mask(ax > 0x42d00000), 0x42d00000, ax) | (ix & int32_t(0x80000000)));
  // n = round(x / ln 2) by the 1.5·2²³ trick (|n| ≤ 151)
  const float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;
  // r = x − n ln 2, ln 2 = 0.693359375 − 2.12194440e-4 (the first part has 9 bits: n·it is exact)
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = (p * r * r + r) + 1.f;
  const int32_t ni = static_cast<int32_t>(n), h = ni >> 1;  // 2ⁿ = 2ʰ · 2ⁿ⁻ʰ, both normal
  const float v = y * as_float((h + 127) << 23) * as_float((ni - h + 127) << 23);
  return as_float(sel(nan, ix, as_int(v)));
}

// ln x.
inline float log(float x) {
  const int32_t ix = as_int(x);
  // denormal x: scale by 2²³ first
  const int32_t den = mask(ix < 0x00800000);
  const int32_t jx = sel(den, as_int(x * 8388608.f), ix);
  int32_t e = ((jx >> 23) & 0xff) - 127 - (den & 23);
  int32_t mb = (jx & 0x007fffff) | 0x3f800000;  // mantissa in [1, 2)
  const int32_t big = mask(mb > 0x3fb504f3);     // > √2: use m/2, e + 1
  mb -= big & 0x00800000;
  e -= big;
  const float f = as_float(mb) - 1.f;  // exact: m ∈ (√½, √2]
  const float fe = static_cast<float>(e);
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  const float v = (f + y) + 0.693359375f * fe;
  // limits: x ≥ +inf or NaN with sign 0 → x; ±0 → −inf; x < 0 (sign set, not −0) → NaN
  int32_t out = sel(mask(ix >= 0x7f800000), ix, as_int(v));
  out = sel(mask(ix < 0), int32_t(0x7fc00000), out);
  out = sel(mask((ix & 0x7fffffff) == 0), int32_t(0xff800000), out);
  return as_float(out);
}

// σ(z) = 1/(1 + e^−z) for any z, from e = exp(−|z|): σ = 1/(1+e) for z ≥ 0, e/(1+e) below (the
// sign bit picks; no overflow for large |z|). QuickGELU (CLIP-SPEC.md).
inline float sigmoid(float z) {
  const int32_t neg = as_int(z) >> 31;  // all ones when z < 0
  const float e = exp(-__builtin_fabsf(z));
  const float r = 1.f / (1.f + e);
  return as_float(sel(neg, as_int(e * r), as_int(r)));
}

// Φ(x) = ½(1 + erf(x/√2)), the standard normal CDF (exact GELU), with erfc from Abramowitz &
// Stegun 7.1.26 (absolute error of erf below 1.5e-7): Φ = 1 − ½·erfc(|x|/√2) for x ≥ 0,
// ½·erfc(|x|/√2) below.
inline float normal_cdf(float x) {
  const int32_t neg = as_int(x) >> 31;
  const float a = __builtin_fabsf(x) * 0.70710678118654752f;
  const float t = 1.f / (1.f + 0.3275911f * a);
  const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float half_erfc = 0.5f * poly * exp(-a * a);
  return as_float(sel(neg, as_int(half_erfc), as_int(1.f - half_erfc)));
}

}  // namespace dwc::vm
