// What the CPU itself can do, read with cpuid/xgetbv (issue 12 item 2: print it next to the ISA the
// kernels actually run, so that a slow fallback is never silent).
#pragma once
#include <string>

namespace dwc {
struct CpuFeatures {
  std::string vendor;  // "AuthenticAMD", "GenuineIntel", ...
  std::string brand;   // "AMD EPYC 7B13 64-Core Processor"
  bool avx2 = false, fma = false;
  bool avx512f = false;      // AVX-512 foundation (OS state enabled)
  bool avx512_bf16 = false;  // AVX512_BF16 (vdpbf16ps)
  bool amx_bf16 = false;     // AMX tiles with bf16
};
const CpuFeatures& cpu_features();
// "AVX2 FMA", "AVX2 FMA AVX-512 AVX512_BF16 AMX-BF16": the features above that are present.
std::string cpu_feature_list();
// bf16 compute needs AVX512_BF16 or AMX (issue 12 item 3). Empty when allowed, else why not.
std::string bf16_unsupported_reason();
}  // namespace dwc
