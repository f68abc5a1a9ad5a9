// kvsift/cuda/quest.cu: Quest's block metadata and block bounds (semantics: common/quest.h; the
// selection itself is the shared topk). Same arithmetic, in the same order, as cpp/cpu/quest.cc,
// so both backends produce the same bits: min/max are exact, and each bound is a sequential f32
// sum over d of products that no FMA can fuse (a max stands between the product and the add).
#include "common.cuh"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../common/quest.h"
#include "convert.cuh"
#include "decode.h"

namespace kvsift::cuda {
namespace {

constexpr int kMetaThreads = 128;
constexpr int kBoundThreads = 256;

// f32 elements load through the read-only cache; f16 and bf16 ones are plain loads, widened.
template <typename T>
__device__ __forceinline__ float load_f32(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return __ldg(p);
  } else {
    return to_f32(*p);
  }
}

// grid (row = b*H + h, block c); threads over d.
template <typename T>
__global__ void quest_meta_kernel(QuestMetaParams p) {
  const int64_t c = blockIdx.x;
  const int64_t row = blockIdx.y;
  const int b = static_cast<int>(row / p.H), h = static_cast<int>(row % p.H);
  const int64_t from = p.from != nullptr ? __ldg(p.from + b) : p.from_all;
  if (c < from / p.block_size) return;  // holds no token >= from
  int64_t L = p.seq_lens != nullptr ? __ldg(p.seq_lens + b) : p.N;
  L = L < 0 ? 0 : (L > p.N ? p.N : L);
  const int64_t j0 = c * p.block_size;
  int64_t j1 = j0 + p.block_size;
  j1 = j1 < L ? j1 : L;
  const T* base = static_cast<const T*>(p.k.data) + b * p.k.sB + h * p.k.sH;
  float* lo = p.min + (row * p.nblocks + c) * p.D;
  float* hi = p.max + (row * p.nblocks + c) * p.D;
  for (int d = threadIdx.x; d < p.D; d += blockDim.x) {
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t j = j0; j < j1; ++j) {
      const float x = load_f32(base + j * p.k.sS + d);
      mn = (x < mn || x != x) ? x : mn;  // NaN propagates, as on the CPU
      mx = (x > mx || x != x) ? x : mx;
    }
    lo[d] = mn;
    hi[d] = mx;
  }
}

// One block per output row; threads over blocks c. G = Hq / Hkv, divided once on the host.
template <typename T>
__global__ void quest_bound_kernel(QuestBoundsParams p, int32_t G) {
  KVSIFT_SHARED(warp_last, int[kBoundThreads / 32]);
  const int64_t r = blockIdx.x;
  const bool per_head = p.reduce == GroupReduce::None;
  const int b = static_cast<int>(per_head ? r / p.Hq : r / p.Hkv);
  const int hkv = static_cast<int>(per_head ? (r % p.Hq) / G : r % p.Hkv);
  const int g0 = per_head ? static_cast<int>((r % p.Hq) % G) : 0;
  const int g1 = per_head ? g0 + 1 : G;
  const float* lo_row = p.min + (static_cast<int64_t>(b) * p.Hkv + hkv) * p.nblocks * p.D;
  const float* hi_row = p.max + (static_cast<int64_t>(b) * p.Hkv + hkv) * p.nblocks * p.D;
  const T* q = static_cast<const T*>(p.q.data);
  int my_last = 0;
  for (int64_t c = threadIdx.x; c < p.nblocks; c += blockDim.x) {
    const float* l = lo_row + c * p.D;
    const float* u = hi_row + c * p.D;
    if (l[0] > u[0]) {  // empty block (+inf, -inf)
      p.out[r * p.nblocks + c] = -INFINITY;
      continue;
    }
    my_last = static_cast<int>(c + 1);
    float v = 0.f;
    for (int g = g0; g < g1; ++g) {
      const T* qh = q + b * p.q.sB + static_cast<int64_t>(hkv * G + g) * p.q.sH;
      float s = 0.f;
      for (int d = 0; d < p.D; ++d) {
        const float qd = load_f32(qh + d);
        const float x = qd * l[d], y = qd * u[d];
        s += (x < y) ? y : x;  // std::max's choice, as the CPU makes it
      }
      if (g == g0) v = s;
      else if (p.reduce == GroupReduce::Max) v = (s > v || s != s) ? s : v;
      else v += s;
    }
    p.out[r * p.nblocks + c] = v;
  }
  // The last non-empty block + 1, by a warp max and then a max over the warps.
  for (int o = 16; o > 0; o /= 2) my_last = max(my_last, __shfl_xor_sync(0xffffffffu, my_last, o));
  if (threadIdx.x % 32 == 0) warp_last[threadIdx.x / 32] = my_last;
  __syncthreads();
  if (threadIdx.x == 0) {
    int last = 0;
    for (int w = 0; w < kBoundThreads / 32; ++w) last = max(last, warp_last[w]);
    p.valid[r] = last;
  }
}

__global__ void quest_pad_kernel(QuestPadParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.R * p.k) return;
  if (p.ids[i] >= p.valid[i / p.k]) p.ids[i] = -1;
}

}  // namespace

cudaError_t quest_metadata(const QuestMetaParams& p, cudaStream_t stream) {
  if (p.B < 0 || p.H < 0 || p.D < 0 || p.nblocks < 0 || p.block_size <= 0) return cudaErrorInvalidValue;
  if (p.B == 0 || p.H == 0 || p.D == 0 || p.nblocks == 0) return cudaSuccess;
  if (static_cast<int64_t>(p.B) * p.H > 65535) return cudaErrorInvalidValue;  // grid.y
  const dim3 grid(static_cast<unsigned>(p.nblocks), static_cast<unsigned>(static_cast<int64_t>(p.B) * p.H));
  return dispatch_float(p.dtype, "quest_metadata", [&](auto t) {
    return launch(quest_meta_kernel<decltype(t)>, grid, dim3(kMetaThreads), 0, stream, p);
  });
}

cudaError_t quest_bounds(const QuestBoundsParams& p, cudaStream_t stream) {
  if (p.B <= 0 || p.Hq <= 0 || p.Hkv <= 0 || p.nblocks <= 0) return cudaSuccess;
  if (p.Hq % p.Hkv != 0) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(static_cast<int64_t>(p.B) * (p.reduce == GroupReduce::None ? p.Hq : p.Hkv)));
  const int32_t G = p.Hq / p.Hkv;
  return dispatch_float(p.dtype, "quest_bounds", [&](auto t) {
    return launch(quest_bound_kernel<decltype(t)>, grid, dim3(kBoundThreads), 0, stream, p, G);
  });
}

cudaError_t quest_pad(const QuestPadParams& p, cudaStream_t stream) {
  const int64_t n = p.R * p.k;
  if (n <= 0) return cudaSuccess;
  return launch(quest_pad_kernel, dim3(static_cast<unsigned>((n + 255) / 256)), dim3(256), 0, stream, p);
}

}  // namespace kvsift::cuda
