// Counter-based RNG: every number is a pure function of (seed, stream, index), so the same
// seed gives the same initialisation and dropout masks whatever the threading.
#pragma once
#include <cstdint>

namespace dwc {

struct Rng {
  uint64_t seed = 0;
  uint64_t stream = 0;  // e.g. a parameter id or (step, layer) for dropout

  static uint64_t mix(uint64_t x);                 // splitmix64 finaliser
  uint64_t bits(uint64_t index) const;             // 64 random bits for counter `index`
  float uniform(uint64_t index) const;             // [0, 1), 24-bit resolution
  float normal(uint64_t index) const;              // N(0, 1) by Box-Muller on two counters
  Rng derive(uint64_t sub) const { return Rng{seed, mix(stream * 0x9E3779B97F4A7C15ull + sub + 1)}; }
};

void fill_uniform(float* x, int64_t n, float lo, float hi, const Rng& rng);
void fill_normal(float* x, int64_t n, float mean, float std, const Rng& rng);

}  // namespace dwc
