// kvsift/common/decode.h: decode attention (ALGORITHMS.md "Decode attention"), dense or over a
// selection of keys, optionally fused with H2O / Keyformer score accumulation. Plain C++ shared by
// the CPU backend (cpp/cpu/decode.cc) and the CUDA launcher (cuda/decode.cu).
#pragma once
#include <cstdint>

#include "params.h"

namespace kvsift {

// Largest head dim either backend runs (the CUDA kernels keep a query row in registers).
constexpr int32_t kDecodeMaxD = 256;
// Largest number of query tokens per row (speculative decoding drafts).
constexpr int32_t kDecodeMaxT = 8;

// Which keys a query row may attend to (before the causal mask).
enum class DecodeSelection : int32_t {
  Dense = 0,      // every key j < L
  Positions = 1,  // sel[(b*Hkv + h) * sel_k + i], i < sel_k
  Ragged = 2,     // sel[indptr[b*Hkv + h] .. indptr[b*Hkv + h + 1]) (CSR, FlashInfer's convention)
  Blocks = 3,     // keys blk*block_size .. +block_size-1 for blk = sel[(b*Hkv + h) * sel_k + i]
};

// For batch row b with L = seq_lens ? seq_lens[b] : N, query t (of T) of head hq sits at
// position L - T + t and sees the selected keys j with 0 <= j <= L - T + t (selected keys outside
// that range, including negative ids and ids >= N, are skipped: a selection needs no padding rule).
//   logit_j = q . k_j * scale
//   out     = sum_j softmax(logit)_j v_j   (fp32, stored in the dtype of q, in q's layout)
//   lse     = log(sum_j exp(logit_j))      (f32 [B, Hq, T]); a row that sees no key: out 0, lse -inf
// With accumulate (dense only), in the same pass:
//   scores[b, hq / G, j] += softmax_j((logit_j + g) / tau)   summed over the T queries and G heads,
// g = philox_gumbel(seed, step, b*Hq + hq, t, j) for NoiseKind::Gumbel, else 0 (H2O: tau 1).
struct DecodeParams {
  View4 q;        // [B, Hq, T, D]
  View4 k, v;     // [B, Hkv, N, D]
  MutView4 out;   // [B, Hq, T, D], dtype of q
  DType dtype;    // of q, k, v and out: F32, F16 or BF16
  int32_t B, Hq, Hkv, T, N, D;
  const int32_t* seq_lens;  // [B] or nullptr; T <= seq_lens[b] <= N (checked by the binding)
  float scale;
  float* lse;               // [B, Hq, T] or nullptr

  DecodeSelection selection;
  const int32_t* sel;       // the selection (see DecodeSelection), nullptr for Dense
  const int32_t* indptr;    // Ragged: [B*Hkv + 1]; entries are clamped to [0, sel_total]
  int32_t sel_k;            // Positions: k; Blocks: nb; Ragged: unused
  int64_t sel_total;        // Ragged: length of sel
  int32_t block_size;       // Blocks

  float* scores;            // [B, Hkv, N] accumulated in place, or nullptr (no accumulation)
  float tau;
  NoiseKind noise;
  uint64_t seed, step;
};

}  // namespace kvsift

namespace kvsift::cpu {
void decode_attention(const DecodeParams& p);
}  // namespace kvsift::cpu
