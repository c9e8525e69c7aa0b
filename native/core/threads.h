// Threading: one pool. Our own loops use OpenMP, and so do GEMMs: dwc::sgemm (blas.h) splits a
// product over the OpenMP threads and OpenBLAS runs single-threaded. The count is the number of
// cores by default; DWC_NUM_THREADS or setNumThreads overrides it.
#pragma once
#include <functional>
#include <mutex>

namespace dwc {
int num_threads();
void set_num_threads(int n);  // n <= 0: back to the default
void init_threads();          // once, when the addon loads
// Whether the caller is inside an OpenMP parallel region (false without OpenMP).
bool in_parallel();
// One native computation at a time per process: every call already uses all cores. The addon
// takes this lock around every op and model call.
std::mutex& compute_mutex();
// Runs f on the one compute thread of the process and waits for it (f's exception is rethrown
// here). The addon's async workers hand their work to it, so that every model call and async op
// runs on the same native thread whichever libuv worker picked it up: one OpenMP team and one
// malloc arena instead of one per libuv worker (docs/PERFORMANCE.md, "One compute thread").
void run_on_compute_thread(const std::function<void()>& f);
}  // namespace dwc
