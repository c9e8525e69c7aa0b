// Threading: our own loops use OpenMP, GEMMs use the BLAS's threads. Both get the same count
// (cores by default, DWC_NUM_THREADS overrides) and BLAS is never called from inside an OpenMP
// region, so the two pools never run at once (no oversubscription).
#pragma once

namespace dwc {
int num_threads();
void set_num_threads(int n);  // n <= 0: back to the default
void init_threads();          // once, when the addon loads
}  // namespace dwc
