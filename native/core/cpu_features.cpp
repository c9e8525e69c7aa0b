#include "cpu_features.h"

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define DWC_X86 1
#endif
#ifdef DWC_WITH_DNNL
#include <oneapi/dnnl/dnnl.h>
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

// DWC_CPU_MASK (cpu_features.h): the names a user may mask, each with the flag it clears.
struct MaskName {
  const char* name;
  const char* shown;  // as cpu_feature_list() prints it
  bool CpuFeatures::*flag;
};
constexpr MaskName kMaskNames[] = {
    {"avx2", "AVX2", &CpuFeatures::avx2},
    {"fma", "FMA", &CpuFeatures::fma},
    {"avx512", "AVX-512", &CpuFeatures::avx512f},
    {"avx512_bf16", "AVX512_BF16", &CpuFeatures::avx512_bf16},
    {"amx_bf16", "AMX-BF16", &CpuFeatures::amx_bf16},
};

struct Masked {
  CpuFeatures f;
  std::string error;
};

Masked apply_mask(CpuFeatures f) {
  Masked m;
  const char* env = std::getenv("DWC_CPU_MASK");
  const std::string spec = env ? env : "";
  bool clear[std::size(kMaskNames)] = {};
  size_t i = 0;
  while (i < spec.size()) {
    const size_t j = spec.find_first_of(", ", i);
    std::string word = spec.substr(i, j == std::string::npos ? std::string::npos : j - i);
    i = j == std::string::npos ? spec.size() : j + 1;
    if (word.empty()) continue;
    for (char& ch : word) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (word == "avx512f") word = "avx512";
    if (word == "amx") word = "amx_bf16";
    size_t k = 0;
    while (k < std::size(kMaskNames) && word != kMaskNames[k].name) ++k;
    if (k == std::size(kMaskNames)) {
      if (m.error.empty())
        m.error = "ignoring '" + word + "' in DWC_CPU_MASK=" + spec + ": not a CPU feature name (known: avx2, fma, avx512, avx512_bf16, amx_bf16)";
      continue;
    }
    clear[k] = true;
    if (kMaskNames[k].flag == &CpuFeatures::avx512f) clear[3] = true;  // kMaskNames[3]: AVX512_BF16 extends AVX-512
  }
  for (size_t k = 0; k < std::size(kMaskNames); ++k) {
    if (!clear[k] || !(f.*kMaskNames[k].flag)) continue;
    f.*kMaskNames[k].flag = false;
    if (!f.masked.empty()) f.masked += ' ';
    f.masked += kMaskNames[k].shown;
  }
  m.f = f;
  return m;
}

const Masked& masked() {
  static const Masked m = apply_mask(detect());
  return m;
}

#ifdef DWC_WITH_DNNL
// oneDNN sees the masked CPU too: its ISA capped below the first masked feature, before any
// primitive exists (at load, below). A user's own ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA wins.
void cap_dnnl_isa(const CpuFeatures& f) {
  if (f.masked.empty() || std::getenv("ONEDNN_MAX_CPU_ISA") || std::getenv("DNNL_MAX_CPU_ISA")) return;
  const CpuFeatures& real = detect();
  dnnl_cpu_isa_t cap = dnnl_cpu_isa_all;
  if (real.amx_bf16 && !f.amx_bf16) cap = dnnl_cpu_isa_avx512_core_bf16;
  if (real.avx512_bf16 && !f.avx512_bf16) cap = dnnl_cpu_isa_avx512_core_vnni;
  if (real.avx512f && !f.avx512f) cap = dnnl_cpu_isa_avx2;
  if ((real.avx2 && !f.avx2) || (real.fma && !f.fma)) cap = dnnl_cpu_isa_avx;
  if (cap != dnnl_cpu_isa_all) dnnl_set_max_cpu_isa(cap);  // kernel_isa() shows what took effect
}
const bool g_isa_capped = (cap_dnnl_isa(masked().f), true);
#endif
}  // namespace

const CpuFeatures& cpu_features() { return masked().f; }

std::string cpu_mask_error() { return masked().error; }

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
  if (s.empty()) s = "none of AVX2/AVX-512/AVX512_BF16/AMX";
  if (!f.masked.empty()) s += " (" + f.masked + " masked by DWC_CPU_MASK)";
  return s;
}

std::string bf16_unsupported_reason() {
  const CpuFeatures& f = cpu_features();
  if (f.avx512_bf16 || f.amx_bf16) return "";
  return "precision 'bf16' needs a CPU with AVX512_BF16 or AMX (bf16 dot products in hardware); this CPU (" +
         (f.brand.empty() ? f.vendor : f.brand) + ") has " + cpu_feature_list() +
         (f.masked.empty() ? " and no bf16 arithmetic in hardware (oneDNN would fall back to slow reference code): use --precision fp32"
                           : ", so the engine runs as on a CPU without them: unset DWC_CPU_MASK, or use --precision fp32");
}

}  // namespace dwc
