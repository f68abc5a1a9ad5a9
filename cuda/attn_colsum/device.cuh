// kvsift/cuda/attn_colsum/device.cuh: device helpers both engines of the fused column-sum
// kernels share: base-2 softmax pieces, the row map, Gumbel noise, global->shared copies and the
// tensor-core primitives (through cuda/ptx/), the shared-memory block and the per-tile fold.
#pragma once
#include <cmath>
#include <cstdint>

#include "../../common/philox.h"
#include "../common.cuh"
#include "../ptx/cp_async.cuh"
#include "../ptx/ldmatrix.cuh"
#include "../ptx/math.cuh"
#include "../ptx/mma.cuh"
#include "plan.h"

namespace kvsift::cuda::colsum {

// ------------------------------------------------------------------------------------------
// Device helpers.

__device__ __forceinline__ float fast_exp2(float x) { return ptx::ex2_approx(x); }

// Merges two base-2 (max, sum) partials; a -inf max (nothing visible yet) merges as nothing.
__device__ __forceinline__ void lse_merge(float& m, float& s, float mo, float so) {
  const float mn = fmaxf(m, mo);
  const float mu = (mn == -INFINITY) ? 0.f : mn;
  s = s * exp2f(m - mu) + so * exp2f(mo - mu);
  m = mn;
}

// The first key row of KV head hkv of batch row b, as the engine reads it (T, or the raw 16-bit
// words the tensor-core engine copies).
template <typename T>
__device__ __forceinline__ const T* k_head(const Args& a, int b, int hkv) {
  return static_cast<const T*>(a.k) + static_cast<int64_t>(b) * a.k_sB + static_cast<int64_t>(hkv) * a.k_sH;
}

// Merges the (max, sum) partials of each group of kSpan consecutive lanes into every lane of the
// group, at xor distances 1, 2, ..., kSpan / 2: both engines' pass 1 end with it (SIMT: a warp per
// row, kSpan = 32; tensor cores: a quad per row, kSpan = 4), in this order, so the bits agree.
template <int kSpan>
__device__ __forceinline__ void lse_merge_lanes(float& m, float& s) {
#pragma unroll
  for (int o = 1; o < kSpan; o <<= 1) {
    const float mo = __shfl_xor_sync(0xffffffffu, m, o);
    const float so = __shfl_xor_sync(0xffffffffu, s, o);
    lse_merge(m, s, mo, so);
  }
}

// Pass 1's result for one row and key split: part[h][row][split].
__device__ __forceinline__ void store_partial(const Args& a, int h, int split, int row, float m, float s) {
  a.part[(static_cast<int64_t>(h) * a.rows_p + row) * a.s1 + split] = make_float2(m, s);
}

// Pass 2 subtracts each row's base-2 lse from its logits: the caller's natural-log lse (SnapKV's
// lse_in, per query head and query rq) or the one pass 1 left in lse2. 0 for padding rows.
__device__ __forceinline__ float row_lse2(const Args& a, int b, int hkv, int h, int row, int rq, bool ok) {
  if (!ok) return 0.f;
  if (a.lse_in != nullptr) {
    const int64_t hq = static_cast<int64_t>(b) * a.Hq + hkv * a.G + row / a.period;
    return __ldg(a.lse_in + hq * a.T + rq) * kLog2e;
  }
  return __ldcg(a.lse2 + static_cast<int64_t>(h) * a.rows_p + row);
}

// Whether pass 2 folds rows per query head (GroupReduce Max/None) rather than summing them all.
template <class Op>
__device__ __forceinline__ bool folds_per_head(const Args& a) {
  return !Op::kAccumulate && a.per_head != 0;
}

// max that lets a NaN through, like the sum it stands beside.
__device__ __forceinline__ float nan_max(float a, float b) { return (b > a || b != b) ? b : a; }

__device__ __forceinline__ int seq_len_of(const Args& a, int b) {
  const int L = a.seq_lens != nullptr ? __ldg(a.seq_lens + b) : a.N;
  return min(max(L, 0), a.N);
}

__device__ __forceinline__ bool row_map(const Args& a, int i, int& g, int& r) {
  g = i / a.period;
  r = i - g * a.period;
  return i < a.rows_p && g < a.G && r < a.T;
}

// The smallest query position among rows [c0, c0 + rc), -1 when the chunk holds a padding row.
// A tile whose last key is <= this needs no causal mask at all.
__device__ __forceinline__ int chunk_min_pos(const Args& a, int c0, int rc, int L) {
  const int end = c0 + rc;
  const bool pad = end > a.rows_p || (a.per_head ? a.period != a.T : end > a.G * a.T);
  if (pad) return -1;
  int minr = 0;
  if (rc < a.period) {
    const int r0 = c0 % a.period;
    if (r0 + rc <= a.period) minr = r0;
  }
  return L - a.T + minr;
}

// Gumbel noise of one logit. Kept out of line: inlined into the unrolled fragment loops, the
// ten Philox rounds and two double logs would multiply the kernel's code size. static: each
// translation unit keeps its own copy, so relocatable device code links too.
static __device__ KVSIFT_NOINLINE float gumbel_at(uint64_t seed, uint64_t step, uint32_t bh, uint32_t t,
                                        uint32_t j) {
  return philox_gumbel(seed, step, bh, t, j);
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return smem_addr(p); }

// cp.async exists from sm_80; below it copy16 stores through registers, and ptx::cp_async_commit
// and ptx::cp_async_wait have nothing to do.
using ptx::cp_async_commit;
using ptx::cp_async_wait;

// 16 bytes (8 halves) from global to shared: cp.async when the source is 16-byte aligned on
// sm_80+, else through registers (element by element when misaligned). !ok stores zeros.
__device__ __forceinline__ void copy16(unsigned char* dst, const uint16_t* src, bool ok, bool vec) {
  if (KVSIFT_ARCH_AT_LEAST(800) && vec) {
    ptx::cp_async_cg_16(smem_addr(dst), src, ok ? 16 : 0);
    return;
  }
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (ok) {
    if (vec) {
      v = __ldg(reinterpret_cast<const uint4*>(src));
    } else {
      uint32_t w[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        w[e] = static_cast<uint32_t>(__ldg(src + 2 * e)) |
               (static_cast<uint32_t>(__ldg(src + 2 * e + 1)) << 16);
      }
      v = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
  *reinterpret_cast<uint4*>(dst) = v;
}

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                        uint32_t& r3) {
  uint32_t r[4];
  ptx::ldmatrix_x4(r, addr);
  r0 = r[0];
  r1 = r[1];
  r2 = r[2];
  r3 = r[3];
}

// c += a * b for one 16x8x16 tile, fp32 accumulate.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
  if (KVSIFT_ARCH_AT_LEAST(800)) {
    const uint32_t b[2] = {b0, b1};
    ptx::mma_m16n8k16_f16(c, a, b);
  } else {
    // Turing has only k8 for f16: the k16 tile is its two halves (a0,a1,b0) and (a2,a3,b1).
    const uint32_t lo[2] = {a[0], a[1]}, hi[2] = {a[2], a[3]};
    ptx::mma_m16n8k8_f16(c, lo, b0);
    ptx::mma_m16n8k8_f16(c, hi, b1);
  }
}

// bf16 tensor cores need sm_80; the launcher sends bf16 on older code to the SIMT engine.
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1) {
  const uint32_t b[2] = {b0, b1};
  ptx::mma_m16n8k16_bf16(c, a, b);
}

// One halving step of reduce_scatter8: lanes whose `kLaneBit` is set keep the upper half of v,
// the others the lower half, and each adds its partner's copy of the half it keeps.
template <int kN, int kLaneBit>
__device__ __forceinline__ void exchange_halves(const float (&v)[2 * kN], float (&kept)[kN], int lane) {
  const bool upper = (lane & kLaneBit) != 0;
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    const float send = upper ? v[i] : v[i + kN];
    const float keep = upper ? v[i + kN] : v[i];
    kept[i] = keep + __shfl_xor_sync(0xffffffffu, send, kLaneBit);
  }
}

// Sums v[i] over the 8 lanes that share lane & 3 and leaves the sum of index lane >> 2 in each
// lane: 7 shuffles instead of 24 for a plain butterfly per value. Lane bits 16, 8, 4 halve the
// values in turn (8 -> 4 -> 2 -> 1).
__device__ __forceinline__ float reduce_scatter8(const float (&v)[8], int lane) {
  float w4[4], w2[2], w1[1];
  exchange_halves<4, 16>(v, w4, lane);
  exchange_halves<2, 8>(w4, w2, lane);
  exchange_halves<1, 4>(w2, w1, lane);
  return w1[0];
}

template <class E>
struct Shared {
  typename E::Buf buf;
  float red[E::kMaxSlots * E::kTN];  // column sums of one tile per slot (a group of rows)
  float fin[kMaxItemKeys];           // running result per key of a pass-2 item
  float cur[kMaxItemKeys];           // running sum of the current head (per-head rows)
  int ticket;
  int flag;
};

// Folds one tile's slot sums into the item's running results, slots in row order. Per-head
// rows: a head's sum completes at its last slot, then max-reduces into fin (GroupReduce::Max)
// or is stored as that query head's output (GroupReduce::None). Dense rows: everything adds.
__device__ __forceinline__ void fold_tile(const Args& a, const float* red, int tn, int nslots,
                                          int rps, bool per_head, int c0, bool first, int off,
                                          int key_lo, int b, int hkv, int limit, float* fin,
                                          float* cur) {
  const int tid = static_cast<int>(threadIdx.x);
  if (tid >= tn) return;
  const int j = off + tid;
  const int col = key_lo + j;
  float f = first ? 0.f : fin[j];
  float cu = first ? 0.f : cur[j];
  for (int sl = 0; sl < nslots; ++sl) {
    const int row0 = c0 + sl * rps;
    if (row0 >= a.rows_p) break;
    const float v = red[sl * tn + tid];
    if (!per_head) {
      f += v;
      continue;
    }
    const int g = row0 / a.period;
    const int rin = row0 - g * a.period;
    cu = (rin == 0) ? v : cu + v;
    if (rin + rps == a.period) {
      if (a.reduce == static_cast<int>(GroupReduce::Max)) {
        f = (g == 0) ? cu : nan_max(f, cu);
      } else if (col < a.n_out) {
        const int64_t ho = static_cast<int64_t>(b) * a.Hq + static_cast<int64_t>(hkv) * a.G + g;
        a.out[ho * a.n_out + col] = (col < limit) ? cu : 0.f;
      }
    }
  }
  fin[j] = f;
  cur[j] = cu;
}

}  // namespace kvsift::cuda::colsum
