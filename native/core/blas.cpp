#include "blas.h"

#ifdef DWC_BLAS_OPENBLAS
extern "C" {
char* openblas_get_config(void);
char* openblas_get_corename(void);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
}
#endif

namespace dwc {

std::string blas_name() {
#ifdef DWC_BLAS_OPENBLAS
  std::string s = openblas_get_config();
  s += " (core ";
  s += openblas_get_corename();
  s += ")";
  return s;
#elif defined(DWC_BLAS_NAME)
  return DWC_BLAS_NAME;
#else
  return "CBLAS";
#endif
}

int blas_num_threads() {
#ifdef DWC_BLAS_OPENBLAS
  return openblas_get_num_threads();
#else
  return 1;
#endif
}

void blas_set_num_threads(int n) {
#ifdef DWC_BLAS_OPENBLAS
  openblas_set_num_threads(n);
#else
  (void)n;
#endif
}

}  // namespace dwc
