// kvsift/cpp/cpu/parallel.h: a small persistent thread pool for the CPU backend.
// parallel_for(n, fn) calls fn(begin, end) on disjoint chunks covering [0, n) and returns when
// all are done. Ops are called from the JS thread only, so one job runs at a time; the calling
// thread takes chunks too. Exceptions must not escape fn (the backend's kernels do not throw).
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>

namespace kvsift::cpu {

// Number of threads used (the calling thread included). KVSIFT_NUM_THREADS overrides the
// hardware concurrency.
int num_threads();

// grain: the smallest chunk worth handing to another thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Rows worth at least ~16k elements per chunk keep the pool's overhead negligible.
inline int64_t grain_rows(int64_t row_elems) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_elems, 1));
}

// The real length of row r of a row-wise op: lens[r / rows_per_batch] clamped to [0, M], or M
// without lengths.
inline int64_t batch_len(const int32_t* lens, int64_t rows_per_batch, int64_t r, int64_t M) {
  int64_t len = M;
  if (lens != nullptr) len = lens[rows_per_batch > 0 ? r / rows_per_batch : 0];
  return std::min<int64_t>(std::max<int64_t>(len, 0), M);
}

}  // namespace kvsift::cpu
