// Every CUDA runtime call is checked and turned into a dwc::Error naming the call (never abort).
#pragma once
#include <cuda_runtime.h>

#include "../core/errors.h"

#define DWC_CUDA_CHECK(call)                                                                                  \
  do {                                                                                                        \
    cudaError_t dwc_err_ = (call);                                                                            \
    DWC_CHECK(dwc_err_ == cudaSuccess, Cuda, #call << " failed: " << cudaGetErrorString(dwc_err_) << " (" << __FILE__ << ":" \
                                                   << __LINE__ << ")");                                       \
  } while (0)
