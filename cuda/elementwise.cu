// kvsift/cuda/elementwise.cu: the small streaming ops around selection: protected scores
// (L2 / Keyformer / H2O), the Gumbel noise grid (Keyformer) and the head sum (TOVA).
// Semantics: common/params.h; each mirrors cpp/cpu/streaming.cc so both backends agree bit for bit
// where the CPU reference is exact (protect, head_reduce, gumbel).
#include "common.cuh"

#include <algorithm>
#include <cstdint>

#include "launchers.h"
#include "../common/philox.h"

namespace kvsift::cuda {
namespace {

constexpr int kThreads = 256;
// Row loops run on grid.y; larger grids only add scheduling, the kernels loop.
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxGridX = int64_t{1} << 20;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

dim3 grid_2d(int64_t cols, int64_t rows) {
  int64_t gx = std::min<int64_t>((cols + kThreads - 1) / kThreads, kMaxGridX);
  int64_t gy = std::min<int64_t>(rows, kMaxGridY);
  return dim3(static_cast<unsigned>(std::max<int64_t>(gx, 1)),
              static_cast<unsigned>(std::max<int64_t>(gy, 1)));
}

// ---------------------------------------------------------------- protect_scores

struct ProtectRow {
  int64_t L, sinks, recent_from;
};

// The same clamps as the CPU backend: L in [0, M], sinks in [0, L], the recent run never
// reaching back into the sinks.
__device__ __forceinline__ ProtectRow protect_row(const ProtectParams& p, int64_t r) {
  int64_t L = p.M;
  if (p.seq_lens != nullptr) {
    int64_t b = p.rows_per_batch > 0 ? r / p.rows_per_batch : 0;
    L = min(max(static_cast<int64_t>(p.seq_lens[b]), int64_t{0}), p.M);
  }
  ProtectRow row;
  row.L = L;
  row.sinks = min(static_cast<int64_t>(max(p.sinks, 0)), L);
  row.recent_from = max(L - static_cast<int64_t>(max(p.recent, 0)), row.sinks);
  return row;
}

__device__ __forceinline__ float protect_one(float x, int64_t j, const ProtectRow& row,
                                             float sign) {
  if (j >= row.L) return x;
  if (j < row.sinks || j >= row.recent_from) return __int_as_float(0x7f800000);
  return sign * x;
}

// One float4 per thread. Plain (coherent) loads: out may alias in.
__global__ void __launch_bounds__(kThreads) protect_vec_kernel(ProtectParams p) {
  const int64_t cols = p.M / 4;
  for (int64_t r = blockIdx.y; r < p.R; r += gridDim.y) {
    const ProtectRow row = protect_row(p, r);
    const float4* in = reinterpret_cast<const float4*>(p.in + r * p.M);
    float4* out = reinterpret_cast<float4*>(p.out + r * p.M);
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; c < cols;
         c += static_cast<int64_t>(gridDim.x) * kThreads) {
      const int64_t j = 4 * c;
      // In place, the tail past L is already what it must be: skip the write.
      if (j >= row.L && p.out == p.in) continue;
      float4 v = in[c];
      v.x = protect_one(v.x, j, row, p.sign);
      v.y = protect_one(v.y, j + 1, row, p.sign);
      v.z = protect_one(v.z, j + 2, row, p.sign);
      v.w = protect_one(v.w, j + 3, row, p.sign);
      out[c] = v;
    }
  }
}

__global__ void __launch_bounds__(kThreads) protect_scalar_kernel(ProtectParams p) {
  for (int64_t r = blockIdx.y; r < p.R; r += gridDim.y) {
    const ProtectRow row = protect_row(p, r);
    const float* in = p.in + r * p.M;
    float* out = p.out + r * p.M;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < p.M;
         j += static_cast<int64_t>(gridDim.x) * kThreads) {
      if (j >= row.L && p.out == p.in) continue;
      out[j] = protect_one(in[j], j, row, p.sign);
    }
  }
}

// ---------------------------------------------------------------- gumbel

// Compute-bound (ten Philox rounds and two double logs per element): one element per thread,
// consecutive j per warp so the stores coalesce.
__global__ void __launch_bounds__(kThreads) gumbel_kernel(GumbelParams p) {
  const int64_t rows = static_cast<int64_t>(p.B) * p.H * p.T;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const uint32_t t = static_cast<uint32_t>(row % p.T);
    const uint32_t bh = static_cast<uint32_t>(row / p.T);  // b * H + h, as the CPU backend
    float* out = p.out + row * p.N;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < p.N;
         j += static_cast<int64_t>(gridDim.x) * kThreads)
      out[j] = philox_gumbel(p.seed, p.step, bh, t, static_cast<uint32_t>(j));
  }
}

// ---------------------------------------------------------------- head_reduce

// One column (or float4 of columns) per thread, heads summed in ascending order into an f32
// accumulator that starts at +0: exactly the CPU backend's order, so the sums match bit for bit.
__global__ void __launch_bounds__(kThreads) head_reduce_vec_kernel(HeadReduceParams p) {
  const int64_t N = p.N, cols = N / 4;
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    const float* in = p.in + b * p.H * N;
    float4* out = reinterpret_cast<float4*>(p.out + b * N);
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; c < cols;
         c += static_cast<int64_t>(gridDim.x) * kThreads) {
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
      const float4* col = reinterpret_cast<const float4*>(in) + c;
#pragma unroll 4
      for (int32_t h = 0; h < p.H; ++h) {
        const float4 v = col[h * cols];
        acc.x += v.x;
        acc.y += v.y;
        acc.z += v.z;
        acc.w += v.w;
      }
      out[c] = make_float4(p.scale * acc.x, p.scale * acc.y, p.scale * acc.z, p.scale * acc.w);
    }
  }
}

__global__ void __launch_bounds__(kThreads) head_reduce_scalar_kernel(HeadReduceParams p) {
  const int64_t N = p.N;
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    const float* in = p.in + b * p.H * N;
    float* out = p.out + b * N;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < N;
         j += static_cast<int64_t>(gridDim.x) * kThreads) {
      float acc = 0.f;
#pragma unroll 8
      for (int32_t h = 0; h < p.H; ++h) acc += in[h * N + j];
      out[j] = p.scale * acc;
    }
  }
}

}  // namespace

cudaError_t protect_scores(const ProtectParams& p, cudaStream_t stream) {
  if (p.R <= 0 || p.M <= 0) return cudaSuccess;
  if (p.in == nullptr || p.out == nullptr) return cudaErrorInvalidValue;
  if (p.M % 4 == 0 && aligned16(p.in) && aligned16(p.out)) {
    return launch(protect_vec_kernel, grid_2d(p.M / 4, p.R), dim3(kThreads), 0, stream, p);
  }
  return launch(protect_scalar_kernel, grid_2d(p.M, p.R), dim3(kThreads), 0, stream, p);
}

cudaError_t gumbel(const GumbelParams& p, cudaStream_t stream) {
  if (p.B <= 0 || p.H <= 0 || p.T <= 0 || p.N <= 0) return cudaSuccess;
  if (p.out == nullptr) return cudaErrorInvalidValue;
  const int64_t rows = static_cast<int64_t>(p.B) * p.H * p.T;
  return launch(gumbel_kernel, grid_2d(p.N, rows), dim3(kThreads), 0, stream, p);
}

cudaError_t head_reduce(const HeadReduceParams& p, cudaStream_t stream) {
  if (p.B <= 0 || p.N <= 0) return cudaSuccess;
  if (p.out == nullptr || (p.H > 0 && p.in == nullptr)) return cudaErrorInvalidValue;
  HeadReduceParams q = p;
  q.H = std::max<int32_t>(p.H, 0);  // no heads: the CPU backend writes scale * 0
  if (q.N % 4 == 0 && aligned16(q.out) && (q.H == 0 || aligned16(q.in))) {
    return launch(head_reduce_vec_kernel, grid_2d(q.N / 4, q.B), dim3(kThreads), 0, stream, q);
  }
  return launch(head_reduce_scalar_kernel, grid_2d(q.N, q.B), dim3(kThreads), 0, stream, q);
}

}  // namespace kvsift::cuda
