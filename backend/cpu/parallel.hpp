// What the CPU kernel files share about threads (backend/cpu/*.cpp only).
#pragma once
#include <algorithm>
#include <cstdint>

#include <omp.h>

namespace fbt::cpu {

constexpr int64_t kParallelMin = 1 << 14;  // below this, threads cost more than they save

// Splits [0, n) into one contiguous part per thread (multiples of `align`), so each thread
// streams its own rows or columns of W.
template <typename F>
void split_threads(int64_t n, int64_t align, bool parallel, F&& body) {
#pragma omp parallel if (parallel)
  {
    const int64_t T = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = ((n + align - 1) / align + T - 1) / T * align;
    const int64_t b = std::min(n, t * per), e = std::min(n, b + per);
    if (b < e) body(b, e);
  }
}

}  // namespace fbt::cpu
