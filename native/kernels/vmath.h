// Vectorisable float math shared by the kernels (no libm calls, no float compares, so that GCC
// vectorises the loops that use them under -ftrapping-math).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace dwc::cpu {

// exp(x) for x <= 0 (inputs are already max-subtracted), vectorisable (no libm call, no float
// compares, which GCC will not if-convert under -ftrapping-math): Cephes expf polynomial,
// relative error ~2 ulp. exp(-inf) and anything at or below -87.3 give exactly 0.
inline float exp_neg(float x) {
  uint32_t ub;
  std::memcpy(&ub, &x, 4);
  const uint32_t lim = 0xC2AE999Au;                // bits of -87.3f; larger bits = more negative
  const uint32_t keep = ub < lim ? ~0u : 0u;       // x > -87.3 (or +NaN)
  const uint32_t cb = (ub & keep) | (lim & ~keep);  // clamp to -87.3
  float xc;
  std::memcpy(&xc, &cb, 4);
  const float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  float r = xc - n * 0.693359375f;
  r -= n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const uint32_t sb = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &sb, 4);
  const float v = p * scale;
  uint32_t vb;
  std::memcpy(&vb, &v, 4);
  vb &= keep;
  float out;
  std::memcpy(&out, &vb, 4);
  return out;
}

// σ(z) = 1/(1 + e^−z) for any z, from e = exp(−|z|): σ = 1/(1+e) for z ≥ 0, e/(1+e) below (the
// sign bit picks; no overflow for large |z|).
inline float sigmoid_v(float z) {
  uint32_t zb;
  std::memcpy(&zb, &z, 4);
  const uint32_t neg = 0u - (zb >> 31);  // all ones when z < 0
  const float az = std::fabs(z);
  const float e = exp_neg(-az);
  const float r = 1.f / (1.f + e);
  const float er = e * r;
  uint32_t rb, eb;
  std::memcpy(&rb, &r, 4);
  std::memcpy(&eb, &er, 4);
  const uint32_t ob = (rb & ~neg) | (eb & neg);
  float out;
  std::memcpy(&out, &ob, 4);
  return out;
}

// Φ(x) = ½(1 + erf(x/√2)), the standard normal CDF, with erfc from Abramowitz & Stegun 7.1.26
// (absolute error of erf below 1.5e-7): Φ = 1 − ½·erfc(|x|/√2) for x ≥ 0, ½·erfc(|x|/√2) below.
inline float normal_cdf_v(float x) {
  uint32_t xb;
  std::memcpy(&xb, &x, 4);
  const uint32_t neg = 0u - (xb >> 31);
  const float a = std::fabs(x) * 0.70710678118654752f;
  const float t = 1.f / (1.f + 0.3275911f * a);
  const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float half_erfc = 0.5f * poly * exp_neg(-a * a);
  const float pos = 1.f - half_erfc;
  uint32_t pb, nb;
  std::memcpy(&pb, &pos, 4);
  std::memcpy(&nb, &half_erfc, 4);
  const uint32_t ob = (pb & ~neg) | (nb & neg);
  float out;
  std::memcpy(&out, &ob, 4);
  return out;
}

}  // namespace dwc::cpu
