// kvsift/cpp/cpu/gather.cc: the gather of kept cache rows and the window positions of a compress
// output on the CPU backend (twin of cuda/gather.cu). Semantics: common/params.h.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_ops.h"
#include "half.h"
#include "parallel.h"

namespace kvsift::cpu {

int64_t gather(const GatherParams& p) {
  if (p.B <= 0 || p.Hc <= 0 || p.group <= 0 || p.K <= 0 || p.D <= 0) return 0;
  const int64_t esize = dtype_size(p.dtype);
  const int64_t row_bytes = static_cast<int64_t>(p.D) * esize;
  const int64_t Hout = static_cast<int64_t>(p.Hc) * p.group;
  const int64_t rows = static_cast<int64_t>(p.B) * Hout * p.K;
  const char* cache = static_cast<const char*>(p.cache.data);
  char* out = static_cast<char*>(p.out.data);
  std::atomic<int64_t> bad{0};
  // A row is a few hundred bytes: hand out a few thousand per chunk so scheduling stays cheap.
  parallel_for(rows, 2048, [&](int64_t i0, int64_t i1) {
    int64_t local_bad = 0;
    for (int64_t idx = i0; idx < i1; ++idx) {
      int64_t i = idx % p.K;
      int64_t bh = idx / p.K;
      int64_t h = bh % Hout;
      int64_t b = bh / Hout;
      int64_t hc = h / p.group;
      int32_t pos = p.positions[b * p.pos_sB + h * p.pos_sH + i];
      char* dst = out + (b * p.out.sB + h * p.out.sH + i * p.out.sS) * esize;
      if (pos < 0 || pos >= p.N) {
        std::memset(dst, 0, static_cast<size_t>(row_bytes));
        ++local_bad;
        continue;
      }
      const char* src = cache + (b * p.cache.sB + hc * p.cache.sH + pos * p.cache.sS) * esize;
      std::memcpy(dst, src, static_cast<size_t>(row_bytes));
    }
    if (local_bad != 0) bad.fetch_add(local_bad, std::memory_order_relaxed);
  });
  return bad.load();
}

void fill_window(const FillWindowParams& p) {
  if (p.R <= 0 || p.W <= 0) return;
  for (int64_t r = 0; r < p.R; ++r) {
    int64_t L = p.N;
    if (p.seq_lens != nullptr) L = p.seq_lens[p.rows_per_batch > 0 ? r / p.rows_per_batch : 0];
    int32_t* dst = p.positions + r * p.row_stride + (p.row_stride - p.W);
    for (int32_t i = 0; i < p.W; ++i) dst[i] = static_cast<int32_t>(L - p.W + i);
  }
}

}  // namespace kvsift::cpu
