// kvsift/cuda/block_scan.cuh: the block-wide exclusive sum behind the radix selects (topk.cu and
// adaptive.cu): it turns per-thread digit counts into each thread's starting offset.
#pragma once
#include "common.cuh"

namespace kvsift::cuda {

// Exclusive prefix sum over a block of kT threads in thread order; *total gets the block's sum.
// Every thread of the block must call it (it synchronizes); tmp needs kT / 32 + 1 words. Two
// levels of warp scans (lanes, then the warps' totals), so the cost is two shuffle ladders and two
// barriers whatever kT is.
template <int kT>
__device__ __forceinline__ uint32_t block_exclusive_sum(uint32_t v, uint32_t* tmp, uint32_t* total) {
  static_assert(kT % 32 == 0 && kT <= 1024, "whole warps, at most 32 of them");
  constexpr int kWarps = kT / 32;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  uint32_t x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) tmp[warp] = x;
  __syncthreads();
  if (warp == 0) {
    const uint32_t w = lane < kWarps ? tmp[lane] : 0u;
    uint32_t s = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += y;
    }
    if (lane < kWarps) tmp[lane] = s - w;
    if (lane == 31) tmp[kWarps] = s;
  }
  __syncthreads();
  const uint32_t result = tmp[warp] + x - v;
  *total = tmp[kWarps];
  __syncthreads();  // tmp is free for the next call
  return result;
}

}  // namespace kvsift::cuda
