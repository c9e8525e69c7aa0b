// The CBLAS in use (OpenBLAS by default; any CBLAS found by CMake's FindBLAS works).
#pragma once
#include <string>

extern "C" {
#include <cblas.h>
}

namespace dwc {
std::string blas_name();      // e.g. "OpenBLAS 0.3.21 (pthread, Haswell)"
int blas_num_threads();       // threads the BLAS will use (1 if it cannot say)
void blas_set_num_threads(int n);
}  // namespace dwc
