// kvsift/cuda/quest.cu: Quest's block metadata and block bounds (semantics: common/quest.h; the
// selection itself is the shared topk). Same arithmetic, in the same order, as cpp/cpu/quest.cc,
// so both backends produce the same bits: min/max are exact, and each bound is a sequential f32
// sum over d of products that no FMA can fuse (a max stands between the product and the add).
#include "common.cuh"

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../common/quest.h"
#include "decode.h"

namespace kvsift::cuda {
namespace {

constexpr int kMetaThreads = 128;
constexpr int kBoundThreads = 256;

template <typename T>
__device__ __forceinline__ float load_f32(const T* p);
template <>
__device__ __forceinline__ float load_f32<float>(const float* p) { return __ldg(p); }
template <>
__device__ __forceinline__ float load_f32<__half>(const __half* p) { return __half2float(*p); }
template <>
__device__ __forceinline__ float load_f32<__nv_bfloat16>(const __nv_bfloat16* p) { return __bfloat162float(*p); }

struct MetaArgs {
  const void* k;
  int64_t sB, sH, sS;
  const int32_t* seq_lens;
  const int32_t* from;
  float* min;
  float* max;
  int32_t B, H, N, D, block_size, nblocks, from_all;
};

// grid (row = b*H + h, block c); threads over d.
template <typename T>
__global__ void quest_meta_kernel(MetaArgs a) {
  const int64_t c = blockIdx.x;
  const int64_t row = blockIdx.y;
  const int b = static_cast<int>(row / a.H), h = static_cast<int>(row % a.H);
  const int64_t from = a.from != nullptr ? __ldg(a.from + b) : a.from_all;
  if (c < from / a.block_size) return;  // holds no token >= from
  int64_t L = a.seq_lens != nullptr ? __ldg(a.seq_lens + b) : a.N;
  L = L < 0 ? 0 : (L > a.N ? a.N : L);
  const int64_t j0 = c * a.block_size;
  int64_t j1 = j0 + a.block_size;
  j1 = j1 < L ? j1 : L;
  const T* base = static_cast<const T*>(a.k) + b * a.sB + h * a.sH;
  float* lo = a.min + (row * a.nblocks + c) * a.D;
  float* hi = a.max + (row * a.nblocks + c) * a.D;
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t j = j0; j < j1; ++j) {
      const float x = load_f32(base + j * a.sS + d);
      mn = (x < mn || x != x) ? x : mn;  // NaN propagates, as on the CPU
      mx = (x > mx || x != x) ? x : mx;
    }
    lo[d] = mn;
    hi[d] = mx;
  }
}

struct BoundArgs {
  const void* q;
  int64_t sB, sH;
  const float* min;
  const float* max;
  float* out;
  int32_t* valid;
  int32_t B, Hq, Hkv, G, D, nblocks, reduce;
};

// One block per output row; threads over blocks c.
template <typename T>
__global__ void quest_bound_kernel(BoundArgs a) {
  KVSIFT_SHARED(warp_last, int[kBoundThreads / 32]);
  const int64_t r = blockIdx.x;
  const bool per_head = a.reduce == static_cast<int>(GroupReduce::None);
  const int b = static_cast<int>(per_head ? r / a.Hq : r / a.Hkv);
  const int hkv = static_cast<int>(per_head ? (r % a.Hq) / a.G : r % a.Hkv);
  const int g0 = per_head ? static_cast<int>((r % a.Hq) % a.G) : 0;
  const int g1 = per_head ? g0 + 1 : a.G;
  const float* lo_row = a.min + (static_cast<int64_t>(b) * a.Hkv + hkv) * a.nblocks * a.D;
  const float* hi_row = a.max + (static_cast<int64_t>(b) * a.Hkv + hkv) * a.nblocks * a.D;
  const T* q = static_cast<const T*>(a.q);
  int my_last = 0;
  for (int64_t c = threadIdx.x; c < a.nblocks; c += blockDim.x) {
    const float* l = lo_row + c * a.D;
    const float* u = hi_row + c * a.D;
    if (l[0] > u[0]) {  // empty block (+inf, -inf)
      a.out[r * a.nblocks + c] = -INFINITY;
      continue;
    }
    my_last = static_cast<int>(c + 1);
    float v = 0.f;
    for (int g = g0; g < g1; ++g) {
      const T* qh = q + b * a.sB + static_cast<int64_t>(hkv * a.G + g) * a.sH;
      float s = 0.f;
      for (int d = 0; d < a.D; ++d) {
        const float qd = load_f32(qh + d);
        const float x = qd * l[d], y = qd * u[d];
        s += (x < y) ? y : x;  // std::max's choice, as the CPU makes it
      }
      if (g == g0) v = s;
      else if (a.reduce == static_cast<int>(GroupReduce::Max)) v = (s > v || s != s) ? s : v;
      else v += s;
    }
    a.out[r * a.nblocks + c] = v;
  }
  // The last non-empty block + 1, by a warp max and then a max over the warps.
  for (int o = 16; o > 0; o /= 2) my_last = max(my_last, __shfl_xor_sync(0xffffffffu, my_last, o));
  if (threadIdx.x % 32 == 0) warp_last[threadIdx.x / 32] = my_last;
  __syncthreads();
  if (threadIdx.x == 0) {
    int last = 0;
    for (int w = 0; w < kBoundThreads / 32; ++w) last = max(last, warp_last[w]);
    a.valid[r] = last;
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
  MetaArgs a{p.k.data, p.k.sB, p.k.sH, p.k.sS, p.seq_lens, p.from, p.min, p.max, p.B, p.H, p.N, p.D, p.block_size, p.nblocks, p.from_all};
  dim3 grid(static_cast<unsigned>(p.nblocks), static_cast<unsigned>(static_cast<int64_t>(p.B) * p.H));
  switch (p.dtype) {
    case DType::F32: return launch(quest_meta_kernel<float>, grid, dim3(kMetaThreads), 0, stream, a);
    case DType::F16: return launch(quest_meta_kernel<__half>, grid, dim3(kMetaThreads), 0, stream, a);
    case DType::BF16: return launch(quest_meta_kernel<__nv_bfloat16>, grid, dim3(kMetaThreads), 0, stream, a);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t quest_bounds(const QuestBoundsParams& p, cudaStream_t stream) {
  if (p.B <= 0 || p.Hq <= 0 || p.Hkv <= 0 || p.nblocks <= 0) return cudaSuccess;
  if (p.Hq % p.Hkv != 0) return cudaErrorInvalidValue;
  BoundArgs a{p.q.data, p.q.sB, p.q.sH, p.min, p.max, p.out, p.valid, p.B, p.Hq, p.Hkv, p.Hq / p.Hkv, p.D, p.nblocks,
              static_cast<int32_t>(p.reduce)};
  const int64_t rows = static_cast<int64_t>(p.B) * (p.reduce == GroupReduce::None ? p.Hq : p.Hkv);
  dim3 grid(static_cast<unsigned>(rows));
  switch (p.dtype) {
    case DType::F32: return launch(quest_bound_kernel<float>, grid, dim3(kBoundThreads), 0, stream, a);
    case DType::F16: return launch(quest_bound_kernel<__half>, grid, dim3(kBoundThreads), 0, stream, a);
    case DType::BF16: return launch(quest_bound_kernel<__nv_bfloat16>, grid, dim3(kBoundThreads), 0, stream, a);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t quest_pad(const QuestPadParams& p, cudaStream_t stream) {
  const int64_t n = p.R * p.k;
  if (n <= 0) return cudaSuccess;
  return launch(quest_pad_kernel, dim3(static_cast<unsigned>((n + 255) / 256)), dim3(256), 0, stream, p);
}

}  // namespace kvsift::cuda
