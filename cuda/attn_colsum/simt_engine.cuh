// kvsift/cuda/attn_colsum/simt_engine.cuh: the SIMT engine of the fused column-sum kernels
// (cuda/attn_colsum.cuh): any dtype, any D up to kMaxD, any alignment.
#pragma once
#include "device.cuh"

namespace kvsift::cuda::colsum {

// ------------------------------------------------------------------------------------------
// SIMT engine: 8 warps, each owning 4 rows of a 32-row chunk; lane = key of a 32-key tile.
// Q chunk resident in shared memory as f32; K streamed in 64-wide slabs of D (padded rows:
// conflict-free column reads). Correct for any D in 0..256 and any alignment.
template <typename T>
struct SimtEngine {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMinBlocks = 2;
  static constexpr int kRowsPerWarp = 4;
  static constexpr int kRC = kWarps * kRowsPerWarp;
  static constexpr int kTN = 32;
  static constexpr int kDS = 64;
  static constexpr int kMaxSlots = kWarps;
  struct Buf {
    float q[kRC * kMaxD];
    float k[kTN * (kDS + 1)];
  };
  using Sh = Shared<SimtEngine>;

  static __device__ __forceinline__ float to_f32(const T* p);

  static __device__ void load_q(const Args& a, Buf& buf, int b, int hkv, int c0) {
    const T* q = static_cast<const T*>(a.q) + static_cast<int64_t>(b) * a.q_sB;
    const int D = a.D;
    for (int idx = static_cast<int>(threadIdx.x); idx < kRC * D; idx += kThreads) {
      const int i = idx / D, d = idx - i * D;
      int g, r;
      const bool ok = row_map(a, c0 + i, g, r);
      buf.q[idx] = ok ? to_f32(q + static_cast<int64_t>(hkv * a.G + g) * a.q_sH +
                               static_cast<int64_t>(r) * a.q_sS + d)
                      : 0.f;
    }
  }

  // dot[i]: row warp*4 + i of the chunk with key tile0 + lane. Starts with a barrier, so the
  // previous tile's readers of buf.k and of red are done before anything is overwritten.
  static __device__ void tile_dots(const Args& a, Buf& buf, const T* kb, int tile0, int load_hi,
                                   float (&dot)[kRowsPerWarp]) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) dot[i] = 0.f;
    __syncthreads();
    for (int d0 = 0; d0 < a.D; d0 += kDS) {
      if (d0 > 0) __syncthreads();
      for (int idx = static_cast<int>(threadIdx.x); idx < kTN * kDS; idx += kThreads) {
        const int n = idx / kDS, d = idx - n * kDS;
        const int key = tile0 + n, dd = d0 + d;
        buf.k[n * (kDS + 1) + d] =
            (key < load_hi && dd < a.D) ? to_f32(kb + static_cast<int64_t>(key) * a.k_sS + dd) : 0.f;
      }
      __syncthreads();
      const int dn = min(kDS, a.D - d0);
      const float* kr = buf.k + lane * (kDS + 1);
      const float* qr = buf.q + warp * kRowsPerWarp * a.D + d0;
      for (int d = 0; d < dn; ++d) {
        const float kv = kr[d];
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) dot[i] = fmaf(qr[i * a.D + d], kv, dot[i]);
      }
    }
  }

  struct Rows {
    int pos[kRowsPerWarp];
    int bhq[kRowsPerWarp];
    int rq[kRowsPerWarp];
    bool ok[kRowsPerWarp];
  };

  static __device__ __forceinline__ void row_setup(const Args& a, int b, int hkv, int L, int c0,
                                                   Rows& rw) {
    const int warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      int g, r;
      const bool ok = row_map(a, c0 + warp * kRowsPerWarp + i, g, r);
      rw.ok[i] = ok;
      rw.pos[i] = ok ? L - a.T + r : -1;
      rw.bhq[i] = b * a.Hq + hkv * a.G + g;
      rw.rq[i] = r;
    }
  }

  template <class Op>
  static __device__ __forceinline__ float logit(const Args& a, float dot, float off, const Rows& rw,
                                                int i, int key) {
    float v = fmaf(dot, a.c1, off);
    if (key > rw.pos[i]) return -INFINITY;
    if constexpr (Op::kNoise) {
      v = fmaf(gumbel_at(a.seed, a.step, static_cast<uint32_t>(rw.bhq[i]),
                         static_cast<uint32_t>(rw.rq[i]), static_cast<uint32_t>(key)),
               a.c2, v);
    }
    return v;
  }

  template <class Op>
  static __device__ void pass1(const Args& a, Sh& sh, int b, int hkv, int h, int L, int c0,
                               int key_lo, int key_hi, int split) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    load_q(a, sh.buf, b, hkv, c0);  // read only after tile_dots' barriers
    Rows rw;
    row_setup(a, b, hkv, L, c0, rw);
    float m[kRowsPerWarp], s[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      m[i] = -INFINITY;
      s[i] = 0.f;
    }
    const T* kb = k_head<T>(a, b, hkv);
    for (int tile0 = key_lo; tile0 < key_hi; tile0 += kTN) {
      float dot[kRowsPerWarp];
      tile_dots(a, sh.buf, kb, tile0, L, dot);
      const int key = tile0 + lane;
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float x = logit<Op>(a, dot[i], 0.f, rw, i, key);
        const float mn = fmaxf(m[i], x);
        const float mu = (mn == -INFINITY) ? 0.f : mn;
        s[i] = s[i] * fast_exp2(m[i] - mu) + fast_exp2(x - mu);
        m[i] = mn;
      }
    }
    // A row's keys are spread over the warp's lanes: merge them all, lane 0 stores.
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      lse_merge_lanes<32>(m[i], s[i]);
      if (lane == 0 && rw.ok[i]) store_partial(a, h, split, c0 + warp * kRowsPerWarp + i, m[i], s[i]);
    }
  }

  template <class Op>
  static __device__ void pass2(const Args& a, Sh& sh, int b, int hkv, int h, int L, int key_lo,
                               int ntiles, int limit) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    const bool per_head = folds_per_head<Op>(a);
    const T* kb = k_head<T>(a, b, hkv);
    for (int c = 0; c < a.chunks; ++c) {
      const int c0 = c * kRC;
      // Safe without a barrier: every reader of the previous chunk's Q passed the barrier that
      // precedes the last fold, and tile_dots' barriers come before any read of this one.
      load_q(a, sh.buf, b, hkv, c0);
      Rows rw;
      row_setup(a, b, hkv, L, c0, rw);
      float off[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        off[i] = -row_lse2(a, b, hkv, h, c0 + warp * kRowsPerWarp + i, rw.rq[i], rw.ok[i]);
      }
      for (int t = 0; t < ntiles; ++t) {
        const int tile0 = key_lo + t * kTN;
        float dot[kRowsPerWarp];
        tile_dots(a, sh.buf, kb, tile0, L, dot);
        const int key = tile0 + lane;
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) acc += fast_exp2(logit<Op>(a, dot[i], off[i], rw, i, key));
        sh.red[warp * kTN + lane] = acc;
        __syncthreads();
        fold_tile(a, sh.red, kTN, kWarps, kRowsPerWarp, per_head, c0, c == 0, t * kTN, key_lo, b,
                  hkv, limit, sh.fin, sh.cur);
      }
    }
  }
};

template <>
__device__ __forceinline__ float SimtEngine<float>::to_f32(const float* p) {
  return __ldg(p);
}
template <>
__device__ __forceinline__ float SimtEngine<__half>::to_f32(const __half* p) {
  return __half2float(__ldg(p));
}
template <>
__device__ __forceinline__ float SimtEngine<__nv_bfloat16>::to_f32(const __nv_bfloat16* p) {
  // Through the raw bits: exact, and free of any arch requirement of the bf16 intrinsics.
  const unsigned short bits = __ldg(reinterpret_cast<const unsigned short*>(p));
  return __uint_as_float(static_cast<unsigned int>(bits) << 16);
}

}  // namespace kvsift::cuda::colsum
