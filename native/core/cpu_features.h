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
  std::string masked;        // present but masked by DWC_CPU_MASK: "AVX512_BF16 AMX-BF16" (else empty)
};
// The CPU's features less those named in DWC_CPU_MASK (read once, at load). DWC_CPU_MASK is a
// testing / diagnostic knob (README "Building"): a comma- or space-separated list of
// avx2, fma, avx512, avx512_bf16, amx_bf16 (avx512 also masks avx512_bf16). The engine then decides
// as on a CPU without them (bf16 refused, no AVX-512 conversions), and oneDNN's ISA is capped to match
// (dnnl_set_max_cpu_isa, unless ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA is set).
const CpuFeatures& cpu_features();
// Empty, or the notice for an unknown name in DWC_CPU_MASK (the addon prints it once at load, as for
// its other environment knobs, and masks the names it knows).
std::string cpu_mask_error();
// "AVX2 FMA", "AVX2 FMA AVX-512 AVX512_BF16 AMX-BF16": the features above that are present;
// masked ones follow as "(AVX512_BF16 AMX-BF16 masked by DWC_CPU_MASK)".
std::string cpu_feature_list();
// bf16 compute needs AVX512_BF16 or AMX (issue 12 item 3). Empty when allowed, else why not.
std::string bf16_unsupported_reason();
}  // namespace dwc
