#include "rng.h"

#include <cmath>

namespace dwc {

uint64_t Rng::mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t Rng::bits(uint64_t index) const { return mix(mix(seed ^ mix(stream)) + index); }

float Rng::uniform(uint64_t index) const { return static_cast<float>(bits(index) >> 40) * (1.0f / 16777216.0f); }

float Rng::normal(uint64_t index) const {
  uint64_t b = bits(index);
  double u1 = (static_cast<double>(b >> 40) + 1.0) / 16777217.0;  // (0, 1]
  double u2 = static_cast<double>(b & 0xFFFFFF) / 16777216.0;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

void fill_uniform(float* x, int64_t n, float lo, float hi, const Rng& rng) {
  for (int64_t i = 0; i < n; ++i) x[i] = lo + (hi - lo) * rng.uniform(static_cast<uint64_t>(i));
}

void fill_normal(float* x, int64_t n, float mean, float std, const Rng& rng) {
  for (int64_t i = 0; i < n; ++i) x[i] = mean + std * rng.normal(static_cast<uint64_t>(i));
}

}  // namespace dwc
