// Every CUDA runtime and cuBLAS call is checked and turned into a dwc::Error (code Cuda) naming
// the call, its file and line (never abort). DWC_CUDA_LAUNCH_CHECK("kernel") after each launch.
#pragma once
#include <cuda_runtime_api.h>

#include "../core/errors.h"
#include "cublas_loader.h"

#define DWC_CUDA_CHECK(call)                                                                                              \
  do {                                                                                                                    \
    cudaError_t dwc_err_ = (call);                                                                                        \
    DWC_CHECK(dwc_err_ == cudaSuccess, Cuda,                                                                              \
              #call << " failed: " << cudaGetErrorName(dwc_err_) << ": " << cudaGetErrorString(dwc_err_) << " (" << __FILE__ \
                    << ":" << __LINE__ << ")");                                                                           \
  } while (0)

// After a kernel launch: the launch error (bad configuration) of the named kernel.
#define DWC_CUDA_LAUNCH_CHECK(kernel_name)                                                                                 \
  do {                                                                                                                    \
    cudaError_t dwc_err_ = cudaGetLastError();                                                                            \
    DWC_CHECK(dwc_err_ == cudaSuccess, Cuda,                                                                              \
              "launch of CUDA kernel " << kernel_name << " failed: " << cudaGetErrorName(dwc_err_) << ": "                 \
                                       << cudaGetErrorString(dwc_err_) << " (" << __FILE__ << ":" << __LINE__ << ")");    \
  } while (0)

#define DWC_CUBLAS_CHECK(call)                                                                                            \
  do {                                                                                                                    \
    ::dwc::cublas::Status dwc_st_ = (call);                                                                               \
    DWC_CHECK(dwc_st_ == ::dwc::cublas::STATUS_SUCCESS, Cuda,                                                              \
              #call << " failed: " << ::dwc::cublas::status_name(dwc_st_) << " (" << __FILE__ << ":" << __LINE__ << ")"); \
  } while (0)
