// kvsift/cuda/attn_colsum/plan.h: the host-side plan of the fused column-sum kernels (see
// cuda/attn_colsum.cuh): tuning constants, the kernel's argument block, the op tags, and the pure
// functions of the params that size the work and the workspace, so *_workspace_bytes and the
// launch always agree. Plain C++: nothing here runs on the device.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../../common/params.h"

namespace kvsift::cuda::colsum {

constexpr float kLog2e = 1.4426950408889634f;
// Key splits are multiples of 64 keys, so a key tile of either engine (64 or 32 keys) never
// straddles two splits.
constexpr int kKeyQuantum = 64;
// About 8 items per SM of an H100 per pass: fine enough to balance, coarse enough that the
// Q chunk staged per item stays small next to the keys it meets.
constexpr int kTargetItems = 1024;
// Rows per chunk assumed when sizing the pass-1 splits (the tensor-core chunk). The workspace
// must be sized from the params alone, so the splits cannot depend on the engine.
constexpr int kSizingRows = 128;
constexpr int kMinSplitKeys = 128;
// Pass-2 items keep one running column sum per key in shared memory.
constexpr int kMaxItemKeys = 512;
constexpr int kMaxD = 256;
// Tickets between the end of a head's pass 1 and the start of its pass 2, as a multiple of the
// blocks that run at once: pass 1's stragglers and the lse merge must finish in that window.
constexpr int kLagNum = 3, kLagDen = 2;

// Everything a launch needs, by value in the kernel's parameter space.
struct Args {
  const void* q;
  const void* k;
  const int32_t* seq_lens;  // [B] or nullptr
  const float* lse_in;      // SnapKV's [B, Hq, T] natural-log lse, or nullptr (pass 1 runs)
  float* out;               // SnapKV: [B, Hout, n_out]; accumulate: scores [B, Hkv, N]
  unsigned int* counters;   // [1 + 2 * heads]: ticket, pass-1 items done per head, ready flags
  float* lse2;              // [heads, rows_p] base-2 lse of each row
  float2* part;             // [heads, rows_p, s1] (max, sum) per row and split, base 2
  int64_t q_sB, q_sH, q_sS;
  int64_t k_sB, k_sH, k_sS;
  uint64_t seed, step;
  float c1;  // logit = dot * c1 (+ gumbel * c2): scale, 1/tau and log2(e) folded together
  float c2;
  int32_t B, Hq, Hkv, G, N, D;
  int32_t T;  // query rows per query head: the window W (SnapKV) or the step's T (accumulate)
  int32_t n_out;  // keys covered by pass 2: N - W (SnapKV) or N (accumulate)
  int32_t reduce;  // GroupReduce (SnapKV)
  int32_t per_head, period, rows_p;
  int32_t chunks;  // row chunks of the engine
  int32_t ks1, s1, ks2, s2;
  int32_t heads, iph1, iph2, lag;
  int32_t vec_q, vec_k;  // 16-byte loads allowed (tensor-core engine)
};

struct SnapkvOp {
  static constexpr bool kAccumulate = false;
  static constexpr bool kNoise = false;
};
template <bool Noise>
struct AccumulateOp {
  static constexpr bool kAccumulate = true;
  static constexpr bool kNoise = Noise;
};

// ------------------------------------------------------------------------------------------
// Host-side planning: pure functions of the params, so *_workspace_bytes and the launch agree.

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
inline size_t align256(size_t x) { return (x + 255) & ~static_cast<size_t>(255); }

struct Plan {
  int64_t heads = 0, period = 0, rows_p = 0, ks1 = 0, s1 = 0;
  size_t off_lse2 = 0, off_part = 0, bytes = 0;
};

inline Plan make_plan(int64_t B, int64_t Hkv, int64_t G, int64_t T, int64_t N, bool per_head) {
  Plan p;
  if (B <= 0 || Hkv <= 0 || G <= 0 || T <= 0 || N <= 0) return p;
  p.heads = B * Hkv;
  p.period = per_head ? round_up(T, 16) : T;
  p.rows_p = per_head ? G * p.period : round_up(G * T, 16);
  const int64_t chunks = ceil_div(p.rows_p, kSizingRows);
  int64_t s = ceil_div(kTargetItems, p.heads * chunks);
  s = std::min(s, ceil_div(N, kMinSplitKeys));
  s = std::max<int64_t>(s, 1);
  p.ks1 = round_up(ceil_div(N, s), kKeyQuantum);
  p.s1 = ceil_div(N, p.ks1);
  const size_t counters = static_cast<size_t>(1 + 2 * p.heads) * sizeof(unsigned int);
  p.off_lse2 = align256(counters);
  p.off_part = p.off_lse2 + align256(static_cast<size_t>(p.heads * p.rows_p) * sizeof(float));
  p.bytes = p.off_part + align256(static_cast<size_t>(p.heads * p.rows_p * p.s1) * sizeof(float2));
  return p;
}

// Pass-2 items: about kTargetItems of them, each a multiple of 64 keys and at most 512.
inline void plan_pass2(int64_t heads, int64_t n_cover, int32_t* ks2, int32_t* s2) {
  int64_t s = ceil_div(kTargetItems, heads);
  s = std::max(s, ceil_div(n_cover, kMaxItemKeys));
  s = std::min(s, ceil_div(n_cover, kKeyQuantum));
  s = std::max<int64_t>(s, 1);
  const int64_t ks = round_up(ceil_div(n_cover, s), kKeyQuantum);
  *ks2 = static_cast<int32_t>(ks);
  *s2 = static_cast<int32_t>(ceil_div(n_cover, ks));
}

// The argument block both ops share: the queries and keys of either layout, the rows of the
// plan, and the pass-2 split. The caller sets the op's own fields (out, lse_in, c1, c2, noise,
// reduce) afterwards.
inline Args make_args(const View4& q, const View4& k, const int32_t* seq_lens, int32_t B, int32_t Hq, int32_t Hkv,
                      int32_t N, int32_t D, int32_t T, int32_t n_out, bool per_head, const Plan& plan) {
  Args a{};
  a.q = q.data;
  a.k = k.data;
  a.q_sB = q.sB;
  a.q_sH = q.sH;
  a.q_sS = q.sS;
  a.k_sB = k.sB;
  a.k_sH = k.sH;
  a.k_sS = k.sS;
  a.seq_lens = seq_lens;
  a.B = B;
  a.Hq = Hq;
  a.Hkv = Hkv;
  a.G = Hq / Hkv;
  a.N = N;
  a.D = D;
  a.T = T;
  a.n_out = n_out;
  a.per_head = per_head ? 1 : 0;
  a.period = static_cast<int32_t>(plan.period);
  a.rows_p = static_cast<int32_t>(plan.rows_p);
  a.ks1 = static_cast<int32_t>(plan.ks1);
  a.s1 = static_cast<int32_t>(plan.s1);
  a.heads = static_cast<int32_t>(plan.heads);
  plan_pass2(plan.heads, n_out, &a.ks2, &a.s2);
  return a;
}

}  // namespace kvsift::cuda::colsum
