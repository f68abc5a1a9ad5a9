// kvsift/cpp/cpu/quest.cc: Quest's block metadata and block bounds on the CPU (twin of
// cuda/quest.cu; semantics in common/quest.h). The selection itself is the shared topk.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../../common/quest.h"
#include "half.h"
#include "parallel.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define KVSIFT_QUEST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KVSIFT_QUEST_CLONES
#endif

namespace kvsift::cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// min/max over tokens [j0, j1) of row (b, h) into lo/hi (D floats each); +inf/-inf when empty.
// NaN keys propagate (a comparison-based min would drop them silently).
KVSIFT_QUEST_CLONES
void block_bounds(const QuestMetaParams& p, int64_t b, int64_t h, int64_t j0, int64_t j1, float* lo, float* hi,
                  float* row) {
  const int64_t D = p.D;
  for (int64_t d = 0; d < D; ++d) {
    lo[d] = kInf;
    hi[d] = -kInf;
  }
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t off = b * p.k.sB + h * p.k.sH + j * p.k.sS;
    for (int64_t d = 0; d < D; ++d) row[d] = load_as_f32(p.k.data, off + d, p.dtype);
    for (int64_t d = 0; d < D; ++d) {
      const float x = row[d];
      lo[d] = (x < lo[d] || x != x) ? x : lo[d];
      hi[d] = (x > hi[d] || x != x) ? x : hi[d];
    }
  }
}

}  // namespace

void quest_metadata(const QuestMetaParams& p) {
  if (p.B <= 0 || p.H <= 0 || p.nblocks <= 0 || p.D <= 0) return;
  const int64_t rows = static_cast<int64_t>(p.B) * p.H;
  const int64_t tasks = rows * p.nblocks;
  parallel_for(tasks, 16, [&](int64_t t0, int64_t t1) {
    std::vector<float> row(static_cast<size_t>(p.D));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r = t / p.nblocks, c = t % p.nblocks;
      const int64_t b = r / p.H, h = r % p.H;
      const int64_t from = p.from != nullptr ? p.from[b] : p.from_all;
      if (c < from / p.block_size) continue;  // untouched: the block holds no token >= from
      const int64_t L = std::min<int64_t>(std::max<int64_t>(p.seq_lens ? p.seq_lens[b] : p.N, 0), p.N);
      const int64_t j0 = c * p.block_size;
      const int64_t j1 = std::min<int64_t>(j0 + p.block_size, L);
      block_bounds(p, b, h, j0, std::max(j0, j1), p.min + t * p.D, p.max + t * p.D, row.data());
    }
  });
}

void quest_bounds(const QuestBoundsParams& p) {
  if (p.B <= 0 || p.Hq <= 0 || p.Hkv <= 0 || p.nblocks <= 0) return;
  const int64_t G = p.Hq / p.Hkv, nb = p.nblocks, D = p.D;
  const int64_t out_rows = static_cast<int64_t>(p.B) * (p.reduce == GroupReduce::None ? p.Hq : p.Hkv);
  std::vector<float> qf(static_cast<size_t>(p.B) * p.Hq * D);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h)
      for (int64_t d = 0; d < D; ++d)
        qf[(b * p.Hq + h) * D + d] = load_as_f32(p.q.data, b * p.q.sB + h * p.q.sH + d, p.dtype);
  parallel_for(out_rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = p.reduce == GroupReduce::None ? r / p.Hq : r / p.Hkv;
      const int64_t hkv = p.reduce == GroupReduce::None ? (r % p.Hq) / G : r % p.Hkv;
      const int64_t g0 = p.reduce == GroupReduce::None ? (r % p.Hq) % G : 0;
      const int64_t g1 = p.reduce == GroupReduce::None ? g0 + 1 : G;
      const float* lo = p.min + (b * p.Hkv + hkv) * nb * D;
      const float* hi = p.max + (b * p.Hkv + hkv) * nb * D;
      float* out = p.out + r * nb;
      int32_t valid = 0;
      for (int64_t c = 0; c < nb; ++c) {
        const float* l = lo + c * D;
        const float* u = hi + c * D;
        if (l[0] > u[0]) {  // empty block (+inf, -inf)
          out[c] = -kInf;
          continue;
        }
        valid = static_cast<int32_t>(c + 1);
        float v = 0.0f;
        for (int64_t g = g0; g < g1; ++g) {
          const float* q = qf.data() + (b * p.Hq + hkv * G + g) * D;
          float s = 0.0f;
          for (int64_t d = 0; d < D; ++d) s += std::max(q[d] * l[d], q[d] * u[d]);
          if (g == g0) v = s;
          else if (p.reduce == GroupReduce::Max) v = (s > v || s != s) ? s : v;
          else v += s;
        }
        out[c] = v;
      }
      p.valid[r] = valid;
    }
  });
}

void quest_pad(const QuestPadParams& p) {
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t i = 0; i < p.k; ++i)
      if (p.ids[r * p.k + i] >= p.valid[r]) p.ids[r * p.k + i] = -1;
}

}  // namespace kvsift::cpu
