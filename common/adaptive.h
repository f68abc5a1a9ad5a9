// kvsift/common/adaptive.h: head-adaptive selection (AdaKV; docs/ALGORITHMS.md "Adaptive
// budgets"). Backend-neutral: no CUDA or N-API.
//
// For each batch row b, over the heads h of the row (each with L live tokens: lengths[b] for a
// dense input, its live length for a ragged one):
//   1. every head keeps its last min(window, L) tokens and then its min_per_head highest-scoring
//      others (ties to the lower position, NaN last, as topk);
//   2. the rest of the row's budget goes to the highest remaining scores over all heads of the
//      row together, ties to the lower head, then the lower position; NaN ranks below every
//      number. Tokens past L are never kept.
// Output: CSR over the row's heads, positions ascending within each head (indices inside the
// head: original positions for a dense input), indptr[bh] the offset of head bh; row b owns
// positions [b * budget, (b + 1) * budget). If a row has fewer valid tokens than the budget
// (the caller checks that it does not), its missing slots are -1 at the end of its last head.
//
// Implementation (both backends): every token gets a 32-bit key whose unsigned order is the
// ranking: 0 for a token past L, 1 for NaN, the order-preserving float key (topk's rank_key)
// for numbers, and 0xffffffff for a safeguarded token (window or min_per_head). Selecting the
// budget largest keys of the row with ties to the lower storage index is then exactly the rule,
// because storage order is head-major, position-minor.
#pragma once
#include <cstdint>

#include "host_device.h"
#include "ragged.h"

namespace kvsift {

struct AdaptiveSelectParams {
  const float* scores;   // dense [B, H, N] (heads.indptr == nullptr) or ragged [rows]
  RaggedHeads heads;     // for a ragged input; B and H are always set
  int64_t N;             // dense row length
  const int32_t* lengths;  // dense: [B] valid lengths, or nullptr (N)
  int32_t budget, min_per_head, window;
  int32_t* positions;   // [B * budget]
  int32_t* indptr;      // [B * H + 1]
};

constexpr uint32_t kAdaptiveInvalid = 0u;
constexpr uint32_t kAdaptiveNan = 1u;
constexpr uint32_t kAdaptiveLifted = 0xffffffffu;

// The ranking key of a float score: NaN -> 1; -0 and +0 share a key; otherwise the IEEE order
// (flip all bits of negatives, set the sign bit of positives), -inf -> 0x007fffff.
KVSIFT_HD uint32_t adaptive_key_bits(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return kAdaptiveNan;
  if (u == 0x80000000u) u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Region and live length of head bh of either input form.
KVSIFT_HD HeadRange adaptive_head(const AdaptiveSelectParams& p, int64_t bh) {
  if (p.heads.indptr != nullptr) return head_range(p.heads, bh);
  int64_t L = p.N;
  if (p.lengths != nullptr) {
    const int64_t l = p.lengths[bh / p.heads.H];
    L = l < 0 ? 0 : (l > p.N ? p.N : l);
  }
  return {bh * p.N, p.N, L};
}

namespace cpu {
void adaptive_select(const AdaptiveSelectParams& p);
}  // namespace cpu

}  // namespace kvsift
