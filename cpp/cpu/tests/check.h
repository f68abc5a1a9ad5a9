// kvsift/cpp/cpu/tests/check.h: what the standalone checks of the CPU backend share: a counted
// check that prints the first failures, a seeded generator, random integers, and the summary
// line whose exit code CTest reads.
#pragma once
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>

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

// Prints "<checks> checks, <failures> failures"; the exit status is 1 on any failure.
inline int finish() {
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

}  // namespace kvsift::test
