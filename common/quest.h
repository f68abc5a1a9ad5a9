// kvsift/common/quest.h: Quest's query-aware block selection (Tang et al., arXiv 2406.10774;
// ALGORITHMS.md "Quest"). Plain C++ shared by cpp/cpu/quest.cc and cuda/quest.cu.
#pragma once
#include <cstdint>

#include "params.h"

namespace kvsift {

// Per-block elementwise key bounds: for block c of row (b, h), tokens j in
// [c*block_size, min((c+1)*block_size, L)), L = seq_lens ? seq_lens[b] : N,
//   min[b, h, c, d] = min_j k[b, h, j, d],  max[b, h, c, d] = max_j k[b, h, j, d]   (f32)
// A block with no valid token gets min = +inf, max = -inf (select never picks it).
// Only blocks c >= from_b / block_size are written (from_b = from ? from[b] : from_all), so a
// decode loop refreshes the tail it appended to; metadata is the update from 0.
struct QuestMetaParams {
  View4 k;         // [B, H, N, D]
  DType dtype;
  int32_t B, H, N, D, block_size, nblocks;
  const int32_t* seq_lens;  // [B] or nullptr
  const int32_t* from;      // [B] or nullptr
  int32_t from_all;
  float* min;      // [B, H, nblocks, D]
  float* max;
};

// bound[b, hq, c] = sum_d max(q_d * min_d, q_d * max_d) (d ascending, f32), against the metadata of
// KV head hq / G; -inf for an empty block. Rows are reduced over the G heads of a group (Sum: in
// head order; Max) into out [B, Hkv, nblocks], or copied per query head (None: [B, Hq, nblocks]).
// valid[r] = the number of non-empty blocks of output row r (they form a prefix of the row).
struct QuestBoundsParams {
  View4 q;         // [B, Hq, 1, D]
  DType dtype;
  const float* min;
  const float* max;
  int32_t B, Hq, Hkv, D, nblocks;
  GroupReduce reduce;  // Sum, Max or None
  float* out;
  int32_t* valid;
};

// After topk over the bounds (order Position; empty blocks bound at -inf, so they are taken only
// when a row has fewer than k valid blocks): ids >= valid[r] become -1. Since empty blocks are a
// suffix and ids are ascending, the -1s end each row.
struct QuestPadParams {
  int32_t* ids;    // [R, k]
  const int32_t* valid;
  int64_t R;
  int32_t k;
};

}  // namespace kvsift

namespace kvsift::cpu {
void quest_metadata(const QuestMetaParams& p);
void quest_bounds(const QuestBoundsParams& p);
void quest_pad(const QuestPadParams& p);
}  // namespace kvsift::cpu
