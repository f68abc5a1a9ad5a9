// kvsift/cpp/cpu/tests/check.h: what the standalone checks of the CPU backend share: a counted
// check that prints the first failures, a seeded generator, random integers, and the summary
// line whose exit code CTest reads.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace kvsift::test {

inline int g_failures = 0;
inline int g_checks = 0;

inline void check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    if (g_failures <= 30) std::printf("FAIL: %s\n", what.c_str());
  }
}

// Seeded by each program's main, so a failure replays.
inline std::mt19937_64 rng;

inline int64_t rand_int(int64_t lo, int64_t hi) {  // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

// Median (and, through `best`, the best) of `reps` timed runs after one warm-up (thread pool,
// scratch buffers); the best is worth printing because a shared machine's median wanders.
template <typename F>
double median_ms(F&& f, int reps, double* best = nullptr) {
  std::vector<double> t;
  f();
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    auto t1 = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(t.begin(), t.end());
  if (best != nullptr) *best = t.front();
  return t[t.size() / 2];
}

// Prints "<checks> checks, <failures> failures"; the exit status is 1 on any failure.
inline int finish() {
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

}  // namespace kvsift::test
