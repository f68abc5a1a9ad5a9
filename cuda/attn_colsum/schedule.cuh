// kvsift/cuda/attn_colsum/schedule.cuh: the ticket schedule of the fused column-sum kernels
// (cuda/attn_colsum.cuh): which item a block runs, the pass-1 merge and ready flag, the pass-2
// wait, the output write, and the kernel itself.
#pragma once
#include "device.cuh"

namespace kvsift::cuda::colsum {

// ------------------------------------------------------------------------------------------
// Scheduling and the kernel.

// Ticket t -> (pass, head, item within the head's pass). Order: pass 1 of heads [0, lag), then
// for k = lag .. heads-1: pass 1 of head k, pass 2 of head k-lag; then pass 2 of the last lag
// heads. Every pass-2 ticket of head h follows all pass-1 tickets of head h.
__device__ __forceinline__ void decode_ticket(const Args& a, int t, int& pass, int& h, int& sub) {
  const int64_t i1 = a.iph1, i2 = a.iph2, step = i1 + i2;
  const int64_t phase_a = static_cast<int64_t>(a.lag) * i1;
  int64_t u = t;
  if (u < phase_a) {
    pass = 1;
    h = static_cast<int>(u / i1);
    sub = static_cast<int>(u - static_cast<int64_t>(h) * i1);
    return;
  }
  u -= phase_a;
  const int64_t phase_b = static_cast<int64_t>(a.heads - a.lag) * step;
  if (u < phase_b) {
    const int64_t k = u / step, w = u - k * step;
    if (w < i1) {
      pass = 1;
      h = static_cast<int>(a.lag + k);
      sub = static_cast<int>(w);
    } else {
      pass = 2;
      h = static_cast<int>(k);
      sub = static_cast<int>(w - i1);
    }
    return;
  }
  u -= phase_b;
  pass = 2;
  const int64_t k = u / i2;
  h = static_cast<int>(a.heads - a.lag + k);
  sub = static_cast<int>(u - k * i2);
}

// Counts a finished pass-1 item; the head's last one merges the partials into each row's lse
// (a warp per 8 rows, lanes across the splits, all loads of a batch in flight together) and
// raises the head's ready flag.
template <class Sh>
__device__ void finish_pass1(const Args& a, Sh& sh, int h, int L) {
  __threadfence();  // this block's partials are visible device-wide before it is counted
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned old = atomicAdd(a.counters + 1 + h, 1u);
    sh.flag = (old + 1u == static_cast<unsigned>(a.iph1)) ? 1 : 0;
  }
  __syncthreads();
  if (sh.flag == 0) return;
  __threadfence();
  constexpr int kBatch = 8, kUnroll = 4;
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int nw = static_cast<int>(blockDim.x) >> 5;
  const float2* base = a.part + static_cast<int64_t>(h) * a.rows_p * a.s1;
  for (int r0 = warp * kBatch; r0 < a.rows_p; r0 += nw * kBatch) {
    int last[kBatch];
    float m[kBatch], s[kBatch];
    int lmax = -1;
#pragma unroll
    for (int q = 0; q < kBatch; ++q) {
      int g, r;
      const bool ok = row_map(a, r0 + q, g, r);
      const int pos = L - a.T + r;
      last[q] = (ok && pos >= 0) ? min(a.s1 - 1, pos / a.ks1) : -1;
      lmax = max(lmax, last[q]);
      m[q] = -INFINITY;
      s[q] = 0.f;
    }
    for (int sp0 = 0; sp0 <= lmax; sp0 += 32 * kUnroll) {
      float2 v[kUnroll][kBatch];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int sp = sp0 + u * 32 + lane;
#pragma unroll
        for (int q = 0; q < kBatch; ++q)
          v[u][q] = (sp <= last[q]) ? __ldcg(base + static_cast<int64_t>(r0 + q) * a.s1 + sp)
                                    : make_float2(-INFINITY, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int q = 0; q < kBatch; ++q) lse_merge(m[q], s[q], v[u][q].x, v[u][q].y);
    }
#pragma unroll
    for (int q = 0; q < kBatch; ++q) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float mo = __shfl_xor_sync(0xffffffffu, m[q], o);
        const float so = __shfl_xor_sync(0xffffffffu, s[q], o);
        lse_merge(m[q], s[q], mo, so);
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int q = 0; q < kBatch; ++q) {
        if (r0 + q >= a.rows_p) break;
        // No visible key (or all -inf): +inf makes every p of the row 0 instead of 0/0.
        const float l2 = (s[q] == 0.f) ? INFINITY : m[q] + log2f(s[q]);
        a.lse2[static_cast<int64_t>(h) * a.rows_p + r0 + q] = (last[q] >= 0) ? l2 : INFINITY;
      }
    }
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) atomicExch(a.counters + 1 + a.heads + h, 1u);
}

__device__ __forceinline__ void wait_ready(const Args& a, int h) {
  if (threadIdx.x == 0) {
    const volatile unsigned int* flag = a.counters + 1 + a.heads + h;
    while (*flag == 0u) __nanosleep(200);
    __threadfence();
  }
  __syncthreads();
}

template <class Op>
__device__ void write_outputs(const Args& a, const float* fin, int b, int hkv, int h, int key_lo,
                              int key_hi, int comp_end, int limit) {
  __syncthreads();  // the last fold's results are visible to every thread
  for (int col = key_lo + static_cast<int>(threadIdx.x); col < key_hi;
       col += static_cast<int>(blockDim.x)) {
    const bool computed = col < comp_end && col < limit;
    const float v = computed ? fin[col - key_lo] : 0.f;
    if constexpr (Op::kAccumulate) {
      if (computed) a.out[static_cast<int64_t>(h) * a.N + col] += v;
    } else if (a.reduce == static_cast<int>(GroupReduce::None)) {
      // Computed tiles were stored head by head in fold_tile.
      if (col >= comp_end) {
        const int64_t ho = static_cast<int64_t>(b) * a.Hq + static_cast<int64_t>(hkv) * a.G;
        for (int g = 0; g < a.G; ++g) a.out[(ho + g) * a.n_out + col] = 0.f;
      }
    } else {
      const float w = (a.reduce == static_cast<int>(GroupReduce::Mean)) ? v / static_cast<float>(a.G) : v;
      a.out[static_cast<int64_t>(h) * a.n_out + col] = w;
    }
  }
}

template <class E, class Op>
__global__ void __launch_bounds__(E::kThreads, E::kMinBlocks) colsum_kernel(const Args a) {
  KVSIFT_SHARED(sh, Shared<E>);
  const bool two_pass = a.lse_in == nullptr;
  int pass = 2, h, sub;
  if (two_pass) {
    if (threadIdx.x == 0) sh.ticket = static_cast<int>(atomicAdd(a.counters, 1u));
    __syncthreads();
    decode_ticket(a, sh.ticket, pass, h, sub);
  } else {
    h = static_cast<int>(blockIdx.x) / a.s2;
    sub = static_cast<int>(blockIdx.x) - h * a.s2;
  }
  const int b = h / a.Hkv, hkv = h - b * a.Hkv;
  const int L = seq_len_of(a, b);
  if (pass == 1) {
    const int split = sub / a.chunks, chunk = sub - split * a.chunks;
    const int key_lo = split * a.ks1;
    const int key_hi = min(key_lo + a.ks1, L);  // no row sees a key >= L
    if (key_lo < key_hi)
      E::template pass1<Op>(a, sh, b, hkv, h, L, chunk * E::kRC, key_lo, key_hi, split);
    finish_pass1(a, sh, h, L);
    return;
  }
  const int key_lo = sub * a.ks2;
  const int key_hi = min(key_lo + a.ks2, a.n_out);
  // Keys that get a value: SnapKV votes for the prefix j < L - W only; Keyformer updates j < L.
  const int limit = Op::kAccumulate ? L : L - a.T;
  const int comp_hi = min(key_hi, limit);
  const int ntiles = comp_hi > key_lo ? (comp_hi - key_lo + E::kTN - 1) / E::kTN : 0;
  if (ntiles > 0) {
    if (two_pass) wait_ready(a, h);
    E::template pass2<Op>(a, sh, b, hkv, h, L, key_lo, ntiles, limit);
  }
  write_outputs<Op>(a, sh.fin, b, hkv, h, key_lo, key_hi, key_lo + ntiles * E::kTN, limit);
}

}  // namespace kvsift::cuda::colsum
