#include "cpu_features.h"

#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define DWC_X86 1
#endif

namespace dwc {

namespace {
#ifdef DWC_X86
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#ifdef DWC_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned max_leaf = a;
  char v[13] = {0};
  std::memcpy(v, &b, 4), std::memcpy(v + 4, &d, 4), std::memcpy(v + 8, &c, 4);
  f.vendor = v;
  unsigned ext = 0;
  if (__get_cpuid(0x80000000u, &ext, &b, &c, &d) && ext >= 0x80000004u) {
    char brand[49] = {0};
    for (unsigned i = 0; i < 3; ++i) {
      unsigned r[4];
      __get_cpuid(0x80000002u + i, &r[0], &r[1], &r[2], &r[3]);
      std::memcpy(brand + 16 * i, r, 16);
    }
    std::string s = brand;
    const size_t p0 = s.find_first_not_of(' '), p1 = s.find_last_not_of(' ');
    f.brand = p0 == std::string::npos ? "" : s.substr(p0, p1 - p0 + 1);
  }
  __get_cpuid(1, &a, &b, &c, &d);
  const bool osxsave = (c >> 27) & 1;
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM + YMM state
  const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;        // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;     // XTILECFG + XTILEDATA
  f.fma = os_avx && ((c >> 12) & 1);
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_sub = a;
    f.avx2 = os_avx && ((b >> 5) & 1);
    f.avx512f = os_avx512 && ((b >> 16) & 1);
    f.amx_bf16 = os_amx && ((d >> 22) & 1) && ((d >> 24) & 1);
    if (max_sub >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      f.avx512_bf16 = f.avx512f && ((a >> 5) & 1);
    }
  }
#endif
  return f;
}
}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::string cpu_feature_list() {
  const CpuFeatures& f = cpu_features();
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "AVX2");
  add(f.fma, "FMA");
  add(f.avx512f, "AVX-512");
  add(f.avx512_bf16, "AVX512_BF16");
  add(f.amx_bf16, "AMX-BF16");
  return s.empty() ? "none of AVX2/AVX-512/AVX512_BF16/AMX" : s;
}

std::string bf16_unsupported_reason() {
  const CpuFeatures& f = cpu_features();
  if (f.avx512_bf16 || f.amx_bf16) return "";
  return "precision 'bf16' needs a CPU with AVX512_BF16 or AMX (bf16 dot products in hardware); this CPU (" +
         (f.brand.empty() ? f.vendor : f.brand) + ") has " + cpu_feature_list() +
         " and no bf16 arithmetic in hardware (oneDNN would fall back to slow reference code): use --precision fp32";
}

}  // namespace dwc
