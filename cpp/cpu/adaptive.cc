// kvsift/cpp/cpu/adaptive.cc: head-adaptive selection on the CPU backend (twin of
// cuda/adaptive.cu). Semantics and the key encoding: common/adaptive.h.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../../common/adaptive.h"
#include "half.h"
#include "parallel.h"

namespace kvsift::cpu {
namespace {

// The k-th largest of keys[0, n) (1 <= k <= n) by an MSB-first radix select over three digits
// (11 + 11 + 10 bits): a histogram pass per digit over the keys that share the prefix so far.
// *above gets how many keys are larger. Linear in n whatever the distribution.
inline uint32_t kth_largest(const uint32_t* keys, int64_t n, int64_t k, int64_t* above) {
  static constexpr int kShift[3] = {21, 10, 0};
  static constexpr uint32_t kBins[3] = {2048, 2048, 1024};
  uint32_t hist[2048];
  uint32_t prefix = 0, mask = 0;
  int64_t rem = k, larger = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = kShift[pass];
    const uint32_t bins = kBins[pass];
    std::memset(hist, 0, bins * sizeof(uint32_t));
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t key = keys[i];
      if ((key & mask) == prefix) ++hist[(key >> shift) & (bins - 1)];
    }
    uint32_t digit = 0;
    int64_t cum = 0;
    for (uint32_t d = bins; d-- > 0;) {
      if (cum + hist[d] >= rem) {
        digit = d;
        break;
      }
      cum += hist[d];
    }
    rem -= cum;
    larger += cum;
    prefix |= digit << shift;
    mask |= (bins - 1) << shift;
  }
  *above = larger;
  return prefix;
}

// The k largest keys of keys[0, n) with ties to the lower index, in index order: the k-th
// largest key T, then one ordered scan taking every key > T and the first (k - #(key > T)) keys
// equal to T. take(i) is called for each chosen index, ascending.
template <typename Take>
void select_ordered(const uint32_t* keys, int64_t n, int64_t k, Take&& take) {
  if (k <= 0 || n <= 0) return;
  k = std::min(k, n);
  int64_t above;
  const uint32_t T = kth_largest(keys, n, k, &above);
  int64_t need = k - above;
  for (int64_t i = 0; i < n; ++i) {
    if (keys[i] > T) {
      take(i);
    } else if (keys[i] == T && need > 0) {
      --need;
      take(i);
    }
  }
}

}  // namespace

void adaptive_select(const AdaptiveSelectParams& p) {
  const int64_t B = p.heads.B, H = p.heads.H;
  if (B <= 0 || H <= 0) return;
  const int64_t budget = p.budget;
  const bool dense = p.heads.indptr == nullptr;
  const int64_t rows = dense ? B * H * p.N : p.heads.rows;
  std::vector<uint32_t> keys(static_cast<size_t>(std::max<int64_t>(rows, 0)), kAdaptiveInvalid);

  // Keys and the per-head safeguard, one task per head (regions are disjoint).
  parallel_for(B * H, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t bh = h0; bh < h1; ++bh) {
      const HeadRange r = adaptive_head(p, bh);
      uint32_t* k = keys.data() + r.start;
      const int64_t w = std::min<int64_t>(p.window, r.len);
      const int64_t prefix = r.len - w;
      for (int64_t i = 0; i < prefix; ++i) k[i] = adaptive_key_bits(f32_to_bits(p.scores[r.start + i]));
      for (int64_t i = prefix; i < r.len; ++i) k[i] = kAdaptiveLifted;
      select_ordered(k, prefix, std::min<int64_t>(p.min_per_head, prefix), [&](int64_t i) { k[i] = kAdaptiveLifted; });
    }
  });

  // The row's budget over all its heads, in storage (head-major) order.
  parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row0 = adaptive_head(p, b * H).start;
      const HeadRange last = adaptive_head(p, b * H + H - 1);
      const int64_t row1 = std::max(row0, last.start + last.cap);
      const uint32_t* k = keys.data() + row0;
      int64_t valid = 0;
      for (int64_t i = 0; i < row1 - row0; ++i) valid += k[i] != kAdaptiveInvalid;
      int32_t* out = p.positions + b * budget;
      int32_t* indptr = p.indptr + b * H;
      int64_t slot = 0, h = 0;
      HeadRange cur = adaptive_head(p, b * H);
      indptr[0] = static_cast<int32_t>(b * budget);
      select_ordered(k, row1 - row0, std::min(budget, valid), [&](int64_t i) {
        const int64_t row = row0 + i;
        // Heads whose region ends at or before this row are complete: later offsets start here.
        while (h + 1 < H && row >= cur.start + cur.cap) {
          ++h;
          indptr[h] = static_cast<int32_t>(b * budget + slot);
          cur = adaptive_head(p, b * H + h);
        }
        out[slot++] = static_cast<int32_t>(row - cur.start);
      });
      for (++h; h < H; ++h) indptr[h] = static_cast<int32_t>(b * budget + slot);
      for (; slot < budget; ++slot) out[slot] = -1;
    }
  });
  p.indptr[B * H] = static_cast<int32_t>(B * budget);
}

}  // namespace kvsift::cpu
