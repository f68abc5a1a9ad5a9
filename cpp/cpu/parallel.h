// kvsift/cpp/cpu/parallel.h: a small persistent thread pool for the CPU backend.
// parallel_for(n, fn) calls fn(begin, end) on disjoint chunks covering [0, n) and returns when
// all are done. Ops are called from the JS thread only, so one job runs at a time; the calling
// thread takes chunks too. Exceptions must not escape fn (the backend's kernels do not throw).
#pragma once
#include <cstdint>
#include <functional>

namespace kvsift::cpu {

// Number of threads used (the calling thread included). KVSIFT_NUM_THREADS overrides the
// hardware concurrency.
int num_threads();

// grain: the smallest chunk worth handing to another thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace kvsift::cpu
