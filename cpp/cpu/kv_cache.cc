// kvsift/cpp/cpu/kv_cache.cc: the row copy, appended positions and retain compaction on the CPU
// backend (twin of cuda/kv_cache.cu). Semantics: common/kv_cache.h.
#include "../../common/kv_cache.h"

#include <atomic>
#include <cstdint>
#include <cstring>

#include "parallel.h"

namespace kvsift::cpu {
namespace {

// Rows per chunk handed to a thread: enough bytes that scheduling stays cheap.
int64_t grain_for(int64_t row_bytes) {
  const int64_t g = (int64_t{1} << 18) / (row_bytes > 0 ? row_bytes : 1);
  return g < 1 ? 1 : g;
}

}  // namespace

void row_copy(const RowCopyParams& p) {
  if (p.B <= 0 || p.H <= 0 || p.T <= 0 || p.row_bytes <= 0) return;
  if (p.skip_if != nullptr && *p.skip_if != 0) return;
  const int64_t rows = p.B * p.H * p.T;
  const char* src = static_cast<const char*>(p.src.data);
  char* dst = static_cast<char*>(p.dst.data);
  parallel_for(rows, grain_for(p.row_bytes), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r % p.T;
      const int64_t bh = r / p.T;
      const int64_t h = bh % p.H;
      const int64_t b = bh / p.H;
      const int64_t count = p.counts != nullptr ? p.counts[b] : p.T;
      if (i >= count) continue;
      const int64_t off = p.offsets != nullptr ? p.offsets[b] : 0;
      char* d = dst + b * p.dst.sB + h * p.dst.sH + (off + i) * p.dst.sS;
      if (src == nullptr) {
        std::memset(d, 0, static_cast<size_t>(p.row_bytes));
      } else {
        std::memcpy(d, src + b * p.src.sB + h * p.src.sH + i * p.src.sS, static_cast<size_t>(p.row_bytes));
      }
    }
  });
}

void append_positions(const AppendPositionsParams& p) {
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t h = 0; h < p.H; ++h) {
      int32_t* row = p.positions + (b * p.H + h) * p.stride + p.offsets[b];
      for (int32_t i = 0; i < p.counts[b]; ++i) row[i] = p.starts[b] + i;
    }
  }
}

int64_t retain_check(const RetainCheckParams& p) {
  if (p.B <= 0 || p.H <= 0 || p.C <= 0) return 0;
  std::atomic<int64_t> bad{0};
  parallel_for(p.B * p.H, 16, [&](int64_t r0, int64_t r1) {
    int64_t local = 0;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / p.H;
      const int64_t h = r % p.H;
      const int32_t* keep = p.keep + b * p.keep_sB + h * p.keep_sH;
      const int64_t len = p.lengths[b];
      for (int64_t i = 0; i < p.C; ++i) {
        const bool in_range = keep[i] >= 0 && keep[i] < len;
        const bool ascending = i == 0 || keep[i - 1] < keep[i];
        local += (in_range && ascending) ? 0 : 1;
      }
    }
    if (local != 0) bad.fetch_add(local, std::memory_order_relaxed);
  });
  return bad.load();
}

void retain_in_place(const RetainGatherParams& p) {
  if (p.B <= 0 || p.H <= 0 || p.C <= 0 || p.row_bytes <= 0) return;
  if (p.skip_if != nullptr && *p.skip_if != 0) return;
  const char* src = static_cast<const char*>(p.src.data);
  char* out = static_cast<char*>(p.out.data);
  // One (b, h) row at a time per thread, in ascending i: the order is what makes it in place.
  parallel_for(p.B * p.H, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / p.H;
      const int64_t h = r % p.H;
      const int32_t* keep = p.keep + b * p.keep_sB + h * p.keep_sH;
      for (int64_t i = 0; i < p.C; ++i) {
        if (keep[i] == i && src == out && p.src.sS == p.out.sS) continue;  // already in place
        std::memmove(out + b * p.out.sB + h * p.out.sH + i * p.out.sS,
                     src + b * p.src.sB + h * p.src.sH + keep[i] * p.src.sS, static_cast<size_t>(p.row_bytes));
      }
    }
  });
}

}  // namespace kvsift::cpu
