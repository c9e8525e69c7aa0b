#include "threads.h"

#include <cstdlib>
#include <thread>

#include "blas.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace dwc {

static int g_threads = 1;

static int default_threads() {
  if (const char* e = std::getenv("DWC_NUM_THREADS")) {
    int n = std::atoi(e);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

int num_threads() { return g_threads; }

std::mutex& compute_mutex() {
  static std::mutex m;
  return m;
}

void set_num_threads(int n) {
  g_threads = n > 0 ? n : default_threads();
#ifdef _OPENMP
  omp_set_num_threads(g_threads);
#endif
  blas_set_num_threads(g_threads);
}

void init_threads() { set_num_threads(0); }

}  // namespace dwc
