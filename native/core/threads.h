// Threading: our own loops use OpenMP, GEMMs use the BLAS's threads. Both get the same count
// (cores by default, DWC_NUM_THREADS overrides) and BLAS is never called from inside an OpenMP
// region, so the two pools never run at once (no oversubscription).
#pragma once
#include <mutex>

namespace dwc {
int num_threads();
void set_num_threads(int n);  // n <= 0: back to the default
void init_threads();          // once, when the addon loads
// One native computation at a time per process: every call already uses all cores, and
// OpenBLAS's pthread server can stall when entered from several threads at once (two models
// stepping concurrently). The addon takes this lock around every op and model call.
std::mutex& compute_mutex();
}  // namespace dwc
