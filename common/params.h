// kvsift/common/params.h: the plain-C++ parameter structs shared by the CUDA launchers (cuda/*.cu)
// and the CPU reference backend (cpp/cpu/*.cc). No CUDA or N-API header is included here, so the
// C++-only build compiles it too. Every pointer in a struct lives on the op's device (host memory
// for the CPU backend, device memory for CUDA).
#pragma once
#include <cstdint>

namespace kvsift {

enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, U8 = 4 };

inline int64_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
  }
  return "?";
}

// A read-only [B, H, S, D] view over either layout: element (b, h, s, d) sits at
// data[b*sB + h*sH + s*sS + d] (strides in elements; d is always contiguous).
//   bhsd [B, H, S, D]: sB = H*S*D, sH = S*D, sS = D
//   bshd [B, S, H, D]: sB = S*H*D, sH = D,   sS = H*D
struct View4 {
  const void* data;
  int64_t sB, sH, sS;
};
// The writable twin, for outputs in either layout.
struct MutView4 {
  void* data;
  int64_t sB, sH, sS;
};

// How the G query heads of a GQA group combine their votes.
enum class GroupReduce : int32_t { Mean = 0, Sum = 1, Max = 2, None = 3 };

// SnapKV observation-window scoring (docs/ALGORITHMS.md, "SnapKV", steps 1-4).
// For batch row b with L = seq_lens ? seq_lens[b] : N real tokens, the W window queries sit at
// absolute positions L-W .. L-1; query r sees keys j <= L-W+r (causal inside the window).
// p[r, j] = softmax_j(q_r . k_j * scale) in fp32; vote[j] = sum_r p[r, j] for j < L-W.
// out: f32 [B, Hout, N-W] contiguous, Hout = Hkv (or Hq for GroupReduce::None).
// Entries j >= L-W of a short row are written as 0.
struct SnapkvScoresParams {
  View4 q;          // [B, Hq, W, D]
  View4 k;          // [B, Hkv, N, D]
  DType dtype;      // of q and k: F32, F16 or BF16
  int32_t B, Hq, Hkv, N, W, D;
  const int32_t* seq_lens;  // [B] or nullptr (every row is N long); W <= seq_lens[b] <= N
  const float* lse;         // [B, Hq, W] natural-log log-sum-exp of each window row's scaled
                            // logits over its causal keys, or nullptr (computed here)
  GroupReduce group_reduce;
  float scale;              // 1/sqrt(D)
  float* out;
};

enum class PoolKind : int32_t { Avg = 0, Max = 1 };

// 1-D pooling along the last axis, odd kernel, stride 1, padding kernel/2 (docs/ALGORITHMS.md, "SnapKV", step 5).
// Row r of R belongs to batch b = r / rows_per_batch; only its first
// len = lengths ? lengths[b] : M entries are real, the rest are padding (0 for avg, which still
// divides by kernel, as count_include_pad; never the winner for max). Outputs past len are 0.
struct PoolParams {
  const float* in;  // [R, M]
  float* out;       // [R, M]; may not alias in
  int64_t R, M;
  int32_t kernel;
  PoolKind kind;
  const int32_t* lengths;  // [B] or nullptr
  int64_t rows_per_batch;
};

enum class TopkOrder : int32_t { Position = 0, Score = 1 };

// Top-k per row: the k largest scores among the row's first len entries (len as PoolParams).
// Ties go to the lower position; NaN ranks below every number (-inf included); +inf above all.
// Order::Position writes the chosen positions ascending, Order::Score by descending score (ties:
// lower position first). Requires k <= len for every row (the caller checks).
// out: i32, row r starts at out + r * out_row_stride (>= k; lets compress leave room for the window).
struct TopkParams {
  const float* in;  // [R, M]
  int32_t* out;
  int64_t R, M;
  int32_t k;
  int64_t out_row_stride;
  TopkOrder order;
  const int32_t* lengths;  // [B] or nullptr
  int64_t rows_per_batch;
};

// Rows of a cache gathered at positions: out[b, h, i, :] = cache[b, h / group, pos[b, h, i], :].
// pos element (b, h, i) sits at positions[b*pos_sB + h*pos_sH + i] (pos_sH = 0 broadcasts one
// selection to every head, as TOVA's). A position outside [0, N) writes a zero row and raises the
// backend's out-of-range flag instead of reading out of bounds.
struct GatherParams {
  View4 cache;      // [B, Hc, N, D]
  MutView4 out;     // [B, Hc*group, K, D]
  DType dtype;      // any: rows are copied as bytes
  int32_t B, Hc, N, D, K, group;
  const int32_t* positions;
  int64_t pos_sB, pos_sH;
};

// Fills the last W slots of every compress output row with the window positions L-W .. L-1
// (L = seq_lens ? seq_lens[b] : N): positions[r * row_stride + (row_stride - W) + i].
struct FillWindowParams {
  int32_t* positions;
  int64_t R, row_stride, rows_per_batch;
  int32_t W, N;
  const int32_t* seq_lens;
};

// L2 norms of the keys, f32 accumulation: out[b, h, j] = ||k[b, h, j, :]||_2, f32 [B, H, N]
// contiguous. Entries j >= L (seq_lens) are written as 0.
struct L2NormsParams {
  View4 k;
  DType dtype;
  int32_t B, H, N, D;
  const int32_t* seq_lens;
  float* out;
};

// Selection scores with protected tokens (L2 and Keyformer/H2O selection):
// out[r, j] = +inf for j < sinks or L-recent <= j < L, else sign * in[r, j];
// entries j >= L are copied as they are (topk ignores them through lengths).
struct ProtectParams {
  const float* in;  // [R, M]
  float* out;       // [R, M], may alias in
  int64_t R, M, rows_per_batch;
  int32_t sinks, recent;
  float sign;       // -1 turns norms into "low norm ranks high"
  const int32_t* seq_lens;
};

enum class NoiseKind : int32_t { None = 0, Gumbel = 1 };

// Keyformer / H2O / TOVA accumulation (docs/ALGORITHMS.md, "Keyformer" and "Baselines"), in place:
// for the T queries of this step, query t of row b sits at absolute position L-T+t and sees keys
// j <= L-T+t (L = seq_lens ? seq_lens[b] : N). For every (b, hq, t):
//   f[j] = softmax_j((q . k_j * scale + g[b, hq, t, j]) / tau)   over its visible keys
//   scores[b, hq / G, j] += f[j]
// g is philox_gumbel(seed, step, b, hq, t, j) from common/philox.h, or 0 for NoiseKind::None.
struct AccumulateParams {
  View4 q;          // [B, Hq, T, D]
  View4 k;          // [B, Hkv, N, D]
  DType dtype;
  int32_t B, Hq, Hkv, T, N, D;
  const int32_t* seq_lens;
  float scale, tau;
  NoiseKind noise;
  uint64_t seed, step;
  float* scores;    // [B, Hkv, N] contiguous, accumulated in place
};

// The Gumbel noise exactly as AccumulateParams draws it: out[b, h, t, j] for a [B, H, T, N] grid.
struct GumbelParams {
  int32_t B, H, T, N;
  uint64_t seed, step;
  float* out;
};

// Sum over the H heads of [B, H, N] into [B, N], times `scale` (TOVA averages the last query's
// attention over every head of the layer: scale = 1/Hq).
struct HeadReduceParams {
  const float* in;
  float* out;
  int32_t B, H, N;
  float scale;
};

}  // namespace kvsift
