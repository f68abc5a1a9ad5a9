// kvsift/common/ragged.h: the ragged per-head cache layout (backend-neutral; no CUDA or N-API).
//
// A ragged cache holds B x H heads of different lengths in one [rows, D] storage. Head
// bh = b * H + h owns the storage rows [indptr[bh], indptr[bh + 1]) (its "region"); its live
// tokens are the first lens[bh] rows of the region, in ascending original position, and the
// rest of the region is room for appends. Without lens every region is full, which is
// FlashInfer's CSR convention (keys [total, D] + indptr [B*H + 1]). Regions follow each other
// in bh order, so the rows of batch row b are [indptr[b*H], indptr[(b+1)*H]).
//
// indptr and lens live on the op's device. The host cannot read them without a synchronization,
// so every backend clamps what it reads (regions to [0, rows], lens to the region): a broken
// indptr gives wrong results, never an out-of-bounds access.
#pragma once
#include <cmath>
#include <cstdint>

#include "host_device.h"
#include "params.h"

namespace kvsift {

struct RaggedHeads {
  const int32_t* indptr;  // [B*H + 1] region starts
  const int32_t* lens;    // [B*H] live rows per region, or nullptr (regions are full)
  int32_t B, H;
  int64_t rows;           // storage rows
};

// Region and live length of head bh, clamped as above.
struct HeadRange {
  int64_t start, cap, len;
};

KVSIFT_HD HeadRange head_range(const RaggedHeads& r, int64_t bh) {
  int64_t s = r.indptr[bh], e = r.indptr[bh + 1];
  s = s < 0 ? 0 : (s > r.rows ? r.rows : s);
  e = e < s ? s : (e > r.rows ? r.rows : e);
  int64_t len = e - s;
  if (r.lens != nullptr) {
    const int64_t l = r.lens[bh];
    len = l < 0 ? 0 : (l > len ? len : l);
  }
  return {s, e - s, len};
}

// Rows gathered into a ragged storage (compactRagged, RaggedKvCache.retain):
// for the kept entry e of head bh (sel_indptr[bh] <= e < sel_indptr[bh + 1]) with source
// position p = sel_positions[e]:
//   out row  = sel_indptr[bh] + bh * reserve + (e - sel_indptr[bh])
//   source   = dense src (b, h, p) when src_heads.indptr == nullptr, else row
//              src_heads' region start + p (p must be < that head's live length)
// The reserve rows after each head's kept rows are zeroed. A position out of range writes a
// zero row and counts in the backend's out-of-range flag (as gather). When out_indptr/out_lens
// are set they receive the new regions: out_indptr[bh] = sel_indptr[bh] + bh * reserve,
// out_lens[bh] = sel_indptr[bh + 1] - sel_indptr[bh].
struct RaggedGatherParams {
  View4 src;                // dense [B, H, N, D] (src_heads.indptr == nullptr) ...
  RaggedHeads src_heads;    // ... or ragged rows: src.data is [src rows, D]
  DType dtype;              // any: rows are copied as bytes
  int32_t B, H, N, D;       // N: dense source length (unused for a ragged source)
  const int32_t* sel_positions;  // or nullptr: p = e - sel_indptr[bh] (every row, in order)
  const int32_t* sel_indptr;  // [B*H + 1], CSR over sel_positions
  int64_t sel_total;          // entries of sel_positions (sel_indptr[B*H])
  int32_t reserve;
  void* out;                  // [sel_total + B*H*reserve, D]
  int32_t* out_indptr;        // [B*H + 1] or nullptr
  int32_t* out_lens;          // [B*H] or nullptr
};

// Appends T tokens to every head of a ragged cache: row t of head bh goes to storage row
// start + lens[bh] + t, its original position is pos_base[b] + t, and lens[bh] grows by T.
// The caller guarantees the room (T <= region size - lens for every head).
struct RaggedAppendParams {
  View4 src;         // [B, H, T, D] in either layout
  DType dtype;
  int32_t B, H, T, D;
  RaggedHeads heads; // lens must be set (it is updated)
  int32_t* lens;     // the same array as heads.lens, writable; nullptr: lens stay (values first, then keys)
  void* dst;         // [rows, D]
  int32_t* positions;       // [rows] original positions, or nullptr
  const int32_t* pos_base;  // [B] (device), or nullptr
};

// Keyformer / H2O accumulation over a ragged cache, in place (the ragged twin of
// AccumulateParams): for head (b, hkv) with live length L, query t of the step sees the keys
// i <= L - T + t of its head (the step's own tokens are the head's last T). For each (b, hq, t):
//   f[i] = softmax_i((q . k_i * scale + g) / tau) over the visible keys
//   scores[start + i] += f[i]   (summed over the G query heads of the group and the T queries)
// g = philox_gumbel(seed, step, b * Hq + hq, t, j) with j = positions[start + i] (the original
// position) or, without positions, j = i: bit for bit the dense op's noise on the same token.
struct RaggedAccumulateParams {
  View4 q;            // [B, Hq, T, D]
  const void* k;      // [rows, D], q's dtype
  DType dtype;
  int32_t B, Hq, Hkv, T, D;
  RaggedHeads heads;  // H = Hkv
  const int32_t* positions;
  float scale, tau;
  NoiseKind noise;
  uint64_t seed, step;
  float* scores;      // [rows]
};

// TOVA's layer score over a ragged cache, by original position: for p < n,
//   out[b, p] = scale * sum over h (ascending) of per_head[row of p in head (b, h)]
// over the heads whose live tokens hold position p (found by binary search: positions ascend
// within a head; without positions a head holds 0 .. len-1), and -inf when no head holds p.
struct RaggedLayerScoresParams {
  const float* per_head;  // [rows]
  RaggedHeads heads;
  const int32_t* positions;  // [rows] or nullptr
  int32_t n;
  float scale;
  float* out;  // [B, n]
};

// The live row of head range r that holds original position pos, or -1: a head's live rows
// hold ascending positions (binary search for the first one >= pos); without positions, row i
// holds position i.
KVSIFT_HD int64_t row_of_position(const int32_t* positions, const HeadRange& r, int64_t pos) {
  if (positions == nullptr) return pos < r.len ? pos : -1;
  int64_t lo = 0, hi = r.len;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (positions[r.start + mid] < pos) lo = mid + 1;
    else hi = mid;
  }
  return lo < r.len && positions[r.start + lo] == pos ? lo : -1;
}

// out[b * n + pos] of ragged_layer_scores: scale times the sum, over the heads of batch row b in
// head order, of per_head at the row holding pos; -inf when no head holds it. Both backends
// compute each output with this one function, so their sums agree bit for bit.
KVSIFT_HD float ragged_layer_score(const RaggedLayerScoresParams& p, int64_t b, int64_t pos) {
  float acc = 0.0f;
  bool held = false;
  for (int64_t h = 0; h < p.heads.H; ++h) {
    const HeadRange r = head_range(p.heads, b * p.heads.H + h);
    const int64_t at = row_of_position(p.positions, r, pos);
    if (at >= 0) {
      acc += p.per_head[r.start + at];
      held = true;
    }
  }
  return held ? p.scale * acc : -INFINITY;
}

// Zeroes the entries of x [rows] outside every head's live rows (the append room).
struct RaggedZeroGapsParams {
  float* x;
  RaggedHeads heads;
};

namespace cpu {
// Returns how many positions fell out of range (their rows are written as zeros).
int64_t ragged_gather(const RaggedGatherParams& p);
void ragged_append(const RaggedAppendParams& p);
void ragged_accumulate(const RaggedAccumulateParams& p);
void ragged_layer_scores(const RaggedLayerScoresParams& p);
void ragged_zero_gaps(const RaggedZeroGapsParams& p);
}  // namespace cpu

}  // namespace kvsift
