// kvsift/cpp/cpu/elementwise.cc: protected selection scores, Gumbel noise and the head sum on the
// CPU backend (twin of cuda/elementwise.cu). Semantics: common/params.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../../common/philox.h"
#include "cpu_ops.h"
#include "half.h"
#include "parallel.h"

namespace kvsift::cpu {

void protect_scores(const ProtectParams& p) {
  if (p.R <= 0 || p.M <= 0) return;
  const float inf = std::numeric_limits<float>::infinity();
  parallel_for(p.R, grain_rows(p.M), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t L = batch_len(p.seq_lens, p.rows_per_batch, r, p.M);
      const int64_t sinks = std::min<int64_t>(std::max<int32_t>(p.sinks, 0), L);
      const int64_t recent_from = std::max<int64_t>(L - std::max<int32_t>(p.recent, 0), sinks);
      const float* in = p.in + r * p.M;
      float* out = p.out + r * p.M;
      for (int64_t j = 0; j < sinks; ++j) out[j] = inf;
      for (int64_t j = sinks; j < recent_from; ++j) out[j] = p.sign * in[j];
      for (int64_t j = recent_from; j < L; ++j) out[j] = inf;
      if (out != in)
        for (int64_t j = L; j < p.M; ++j) out[j] = in[j];
    }
  });
}

void gumbel(const GumbelParams& p) {
  if (p.B <= 0 || p.H <= 0 || p.T <= 0 || p.N <= 0) return;
  const int64_t rows = static_cast<int64_t>(p.B) * p.H * p.T;
  const int64_t N = p.N;
  // Two double logs per element: a chunk of ~4k elements already amortises the scheduling.
  parallel_for(rows, std::max<int64_t>(1, 4096 / N), [&](int64_t i0, int64_t i1) {
    for (int64_t row = i0; row < i1; ++row) {
      uint32_t t = static_cast<uint32_t>(row % p.T);
      uint32_t bh = static_cast<uint32_t>(row / p.T);
      float* out = p.out + row * N;
      for (int64_t j = 0; j < N; ++j)
        out[j] = philox_gumbel(p.seed, p.step, bh, t, static_cast<uint32_t>(j));
    }
  });
}

void head_reduce(const HeadReduceParams& p) {
  if (p.B <= 0 || p.N <= 0) return;
  const int64_t N = p.N, H = std::max<int32_t>(p.H, 0);
  // Column blocks keep each block's accumulators in L1 while the heads stream past.
  constexpr int64_t kBlock = 1024;
  const int64_t nblk = (N + kBlock - 1) / kBlock;
  parallel_for(static_cast<int64_t>(p.B) * nblk, std::max<int64_t>(1, 16 / std::max<int64_t>(H, 1)),
               [&](int64_t i0, int64_t i1) {
                 float acc[kBlock];
                 for (int64_t idx = i0; idx < i1; ++idx) {
                   int64_t b = idx / nblk;
                   int64_t j0 = (idx % nblk) * kBlock;
                   int64_t n = std::min(kBlock, N - j0);
                   std::fill(acc, acc + n, 0.0f);
                   // Heads in ascending order, one f32 sum per column: the order is the contract.
                   for (int64_t h = 0; h < H; ++h) {
                     const float* row = p.in + (b * H + h) * N + j0;
                     for (int64_t j = 0; j < n; ++j) acc[j] += row[j];
                   }
                   float* out = p.out + b * N + j0;
                   for (int64_t j = 0; j < n; ++j) out[j] = p.scale * acc[j];
                 }
               });
}

}  // namespace kvsift::cpu
