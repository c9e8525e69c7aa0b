#include "threads.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <thread>
#ifdef __GLIBC__
#include <malloc.h>
#endif

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
bool in_parallel() {
#ifdef _OPENMP
  return omp_in_parallel();
#else
  return false;
#endif
}

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

// glibc raises its mmap threshold to the size of every large block freed (up to 32 MiB), so after
// a few steps the step's temporary buffers of 1-32 MiB come from malloc's heaps, which keep them:
// +0.5 GB of RSS at the paper step after one large GEMM on another thread (bench step's ceiling
// measurement). A fixed threshold (4 MiB) disables that: larger blocks are mapped and returned on
// free. It is 4 MiB, not less, for dnnl_sgemm's packing buffers (oneDNN takes no caller buffer):
// mapped, they were faulted in (zeroed) on every call — 1.2 and 1.5 MB at the CLIP shapes on 2
// AVX2 threads (docs/CLIP.md "Speed"), 2.3 and 3.0 MB (10 calls per step) at the paper step's
// Inception shapes on 2 AVX-512 threads (docs/PERFORMANCE.md "AVX-512 machine"). The trim threshold
// follows at 2× (glibc's own rule when its threshold adapts; a fixed mmap threshold leaves it at
// 128 KiB, and a block freed at the heap's top would go back to the kernel at once).
// DWC_MMAP_THRESHOLD=<bytes> sets another, 0 keeps glibc's dynamic one; glibc's own
// MALLOC_MMAP_THRESHOLD_ / GLIBC_TUNABLES win.
static void malloc_setup() {
#ifdef __GLIBC__
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("GLIBC_TUNABLES")) return;
  long bytes = 4L << 20;
  if (const char* e = std::getenv("DWC_MMAP_THRESHOLD")) bytes = std::atol(e);
  if (bytes > 0) {
    bytes = std::min(bytes, 1L << 30);
    mallopt(M_MMAP_THRESHOLD, static_cast<int>(bytes));
    mallopt(M_TRIM_THRESHOLD, static_cast<int>(std::min(2 * bytes, 1L << 30)));
  }
#endif
}

void init_threads() {
  malloc_setup();
  set_num_threads(0);
}

namespace {
class ComputeThread {
 public:
  ComputeThread() : thread_([this] { loop(); }) {
    id_ = thread_.get_id();
    thread_.detach();  // never joined: lives until the process exits
  }
  void run(const std::function<void()>& f) {
    if (std::this_thread::get_id() == id_) return f();
    Job job{&f, nullptr, false};
    {
      std::lock_guard<std::mutex> l(m_);
      queue_.push_back(&job);
    }
    work_cv_.notify_one();
    std::unique_lock<std::mutex> l(m_);
    done_cv_.wait(l, [&] { return job.done; });
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  struct Job {
    const std::function<void()>* f;
    std::exception_ptr error;
    bool done = false;
  };
  void loop() {
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> l(m_);
        work_cv_.wait(l, [&] { return !queue_.empty(); });
        job = queue_.front();
        queue_.pop_front();
      }
#ifdef _OPENMP
      // this thread's own OpenMP setting follows the engine's count (setNumThreads)
      if (omp_get_max_threads() != g_threads) omp_set_num_threads(g_threads);
#endif
      try {
        (*job->f)();
      } catch (...) {
        job->error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> l(m_);
        job->done = true;
      }
      done_cv_.notify_all();
    }
  }
  std::mutex m_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Job*> queue_;
  std::thread::id id_;
  std::thread thread_;
};
}  // namespace

void run_on_compute_thread(const std::function<void()>& f) {
  // DWC_COMPUTE_THREAD=0: run on the calling (libuv) thread, as before (A/B measurements)
  static const bool on = [] {
    const char* e = std::getenv("DWC_COMPUTE_THREAD");
    return !(e && e[0] == '0');
  }();
  if (!on) return f();
  static ComputeThread* t = new ComputeThread();  // not destroyed at exit (a job may still run)
  t->run(f);
}

}  // namespace dwc
