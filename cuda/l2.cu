// kvsift/cuda/l2.cu: L2 norms of the keys (ALGORITHMS.md §2), a pure stream over K.
// Vector path: a group of 8 lanes per key row, each lane reading 16-byte chunks of the row
// (lane, lane + 8, ...), the bf16/f16 halves widened to f32 and squared into an f32 sum, then
// a 3-step shuffle reduce inside the group. Every thread keeps several rows' loads in flight
// (8 x 16 bytes) so the SMs cover the memory latency. Rows are visited in memory order (j fastest
// for bhsd, h fastest for bshd) so neighbouring warps read neighbouring bytes.
// Generic path, for rows that are not 16-byte aligned or whose byte size is not a multiple of
// 16: element loads, a power-of-two group of up to 32 lanes per row.
#include "common.cuh"

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "launchers.h"

namespace kvsift::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kGroup = 8;                         // lanes per row, vector path
constexpr int kLoadsInFlight = 8;                 // 16-byte loads per thread per sweep
constexpr int64_t kMaxChunks = 16 * kGroup;       // rows of up to 2 KiB take the vector path
constexpr int64_t kMaxGridX = int64_t{1} << 20;
constexpr int64_t kMaxGridY = 65535;

struct L2Args {
  const unsigned char* k;
  int64_t bsB, bsH, bsS;  // strides in bytes
  int32_t B, H, N, D;
  const int32_t* seq_lens;
  float* out;
  bool h_inner;  // visit rows with h fastest (bshd-like strides)
};

__device__ __forceinline__ int64_t batch_len(const L2Args& a, int64_t b) {
  return a.seq_lens != nullptr ? min(static_cast<int64_t>(a.seq_lens[b]), int64_t{a.N})
                               : int64_t{a.N};
}

// Sum of squares of the 16 bytes in v, read as 4 f32 or 8 f16 / bf16.
template <DType T>
__device__ __forceinline__ float sumsq16(const uint4& v, float acc) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (T == DType::F32) {
      const float x = __uint_as_float(w[i]);
      acc = fmaf(x, x, acc);
    } else if constexpr (T == DType::BF16) {
      // bf16 is the top half of an f32: widening is a shift or a mask
      const float lo = __uint_as_float(w[i] << 16);
      const float hi = __uint_as_float(w[i] & 0xffff0000u);
      acc = fmaf(lo, lo, acc);
      acc = fmaf(hi, hi, acc);
    } else {
      const float lo = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] & 0xffffu)));
      const float hi = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] >> 16)));
      acc = fmaf(lo, lo, acc);
      acc = fmaf(hi, hi, acc);
    }
  }
  return acc;
}

template <DType T>
__device__ __forceinline__ float load_f32(const unsigned char* row, int64_t d) {
  if constexpr (T == DType::F32) {
    return __ldg(reinterpret_cast<const float*>(row) + d);
  } else if constexpr (T == DType::BF16) {
    const unsigned short u = __ldg(reinterpret_cast<const unsigned short*>(row) + d);
    return __uint_as_float(static_cast<uint32_t>(u) << 16);
  } else {
    const unsigned short u = __ldg(reinterpret_cast<const unsigned short*>(row) + d);
    return __half2float(__ushort_as_half(u));
  }
}

// Rows of batch b are numbered i in [0, H*N) in memory order; n = H*N < 2^32 here.
__device__ __forceinline__ void decode_row(const L2Args& a, uint32_t i, uint32_t& h, uint32_t& j) {
  if (a.h_inner) {
    j = i / static_cast<uint32_t>(a.H);
    h = i - j * static_cast<uint32_t>(a.H);
  } else {
    h = i / static_cast<uint32_t>(a.N);
    j = i - h * static_cast<uint32_t>(a.N);
  }
}

// CPL: 16-byte chunks per lane per row (C = D*size/16 <= CPL*8 chunks); RPT: rows per thread per
// sweep. Grid: x sweeps the rows of a batch, y the batches.
template <DType T, int CPL, int RPT>
__global__ void __launch_bounds__(kThreads) l2_vec_kernel(L2Args a, uint32_t chunks) {
  constexpr uint32_t kGroupsPerBlock = kThreads / kGroup;
  constexpr uint32_t kRowsPerBlock = kGroupsPerBlock * RPT;
  const uint32_t lane = threadIdx.x % kGroup;
  const uint32_t group = threadIdx.x / kGroup;
  const uint64_t n = static_cast<uint64_t>(a.H) * static_cast<uint64_t>(a.N);
  for (int64_t b = blockIdx.y; b < a.B; b += gridDim.y) {
    const int64_t L = batch_len(a, b);
    const unsigned char* kb = a.k + b * a.bsB;
    float* ob = a.out + b * static_cast<int64_t>(n);
    // base is block-uniform, so every lane of a warp runs the same shuffles below
    for (uint64_t base = static_cast<uint64_t>(blockIdx.x) * kRowsPerBlock; base < n;
         base += static_cast<uint64_t>(gridDim.x) * kRowsPerBlock) {
      uint4 v[RPT][CPL];
      int64_t oidx[RPT];
      bool inside[RPT];
#pragma unroll
      for (int r = 0; r < RPT; ++r) {
        const uint64_t i = base + static_cast<uint64_t>(r) * kGroupsPerBlock + group;
        inside[r] = i < n;
        uint32_t h = 0, j = 0;
        if (inside[r]) decode_row(a, static_cast<uint32_t>(i), h, j);
        oidx[r] = static_cast<int64_t>(h) * a.N + j;
        const bool live = inside[r] && static_cast<int64_t>(j) < L;
        const uint4* row = reinterpret_cast<const uint4*>(kb + h * a.bsH + j * a.bsS);
#pragma unroll
        for (int c = 0; c < CPL; ++c) {
          const uint32_t chunk = lane + static_cast<uint32_t>(c) * kGroup;
          v[r][c] = (live && chunk < chunks) ? __ldg(row + chunk) : make_uint4(0u, 0u, 0u, 0u);
        }
      }
#pragma unroll
      for (int r = 0; r < RPT; ++r) {
        float acc = 0.f;
#pragma unroll
        for (int c = 0; c < CPL; ++c) acc = sumsq16<T>(v[r][c], acc);
#pragma unroll
        for (int off = kGroup / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        // rows past L load nothing, so acc is 0 there: the contract's 0
        if (lane == 0 && inside[r]) ob[oidx[r]] = sqrtf(acc);
      }
    }
  }
}

// Any alignment and any D: `lanes` (a power of two <= 32) lanes per row, element loads.
template <DType T>
__global__ void __launch_bounds__(kThreads) l2_generic_kernel(L2Args a, int lanes) {
  const int lane = threadIdx.x & (lanes - 1);
  const int groups_per_block = kThreads / lanes;
  const int group = threadIdx.x / lanes;
  const int64_t rows = static_cast<int64_t>(a.B) * a.H * a.N;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * groups_per_block; base < rows;
       base += static_cast<int64_t>(gridDim.x) * groups_per_block) {
    const int64_t i = base + group;  // output index (b*H + h)*N + j
    float acc = 0.f;
    if (i < rows) {
      const int64_t j = i % a.N;
      const int64_t bh = i / a.N;
      const int64_t h = bh % a.H;
      const int64_t b = bh / a.H;
      if (j < batch_len(a, b)) {
        const unsigned char* row = a.k + b * a.bsB + h * a.bsH + j * a.bsS;
#pragma unroll 4
        for (int64_t d = lane; d < a.D; d += lanes) {
          const float x = load_f32<T>(row, d);
          acc = fmaf(x, x, acc);
        }
      }
    }
    for (int off = lanes / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0 && i < rows) a.out[i] = sqrtf(acc);
  }
}

template <DType T, int CPL>
cudaError_t launch_vec(const L2Args& a, uint32_t chunks, cudaStream_t stream) {
  constexpr int RPT = CPL >= kLoadsInFlight ? 1 : kLoadsInFlight / CPL;
  constexpr int64_t kRowsPerBlock = (kThreads / kGroup) * RPT;
  const int64_t n = static_cast<int64_t>(a.H) * a.N;
  const int64_t gx = std::min<int64_t>((n + kRowsPerBlock - 1) / kRowsPerBlock, kMaxGridX);
  const int64_t gy = std::min<int64_t>(a.B, kMaxGridY);
  return launch(l2_vec_kernel<T, CPL, RPT>, dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
                dim3(kThreads), 0, stream, a, chunks);
}

template <DType T>
cudaError_t launch_dtype(const L2Args& a, int64_t esize, bool vec_ok, cudaStream_t stream) {
  const int64_t chunks = static_cast<int64_t>(a.D) * esize / 16;
  if (vec_ok) {
    const int64_t cpl = (chunks + kGroup - 1) / kGroup;
    const uint32_t c = static_cast<uint32_t>(chunks);
    if (cpl <= 1) return launch_vec<T, 1>(a, c, stream);
    if (cpl <= 2) return launch_vec<T, 2>(a, c, stream);
    if (cpl <= 4) return launch_vec<T, 4>(a, c, stream);
    if (cpl <= 8) return launch_vec<T, 8>(a, c, stream);
    return launch_vec<T, 16>(a, c, stream);
  }
  int lanes = 1;
  while (lanes < 32 && lanes < a.D) lanes *= 2;
  const int64_t rows = static_cast<int64_t>(a.B) * a.H * a.N;
  const int64_t per_block = kThreads / lanes;
  const int64_t gx = std::min<int64_t>((rows + per_block - 1) / per_block, kMaxGridX);
  return launch(l2_generic_kernel<T>, dim3(static_cast<unsigned>(gx)), dim3(kThreads), 0, stream, a, lanes);
}

// A stride matters for alignment only where its axis has more than one index.
bool stride_aligned(int64_t stride_bytes, int32_t extent) {
  return extent <= 1 || stride_bytes % 16 == 0;
}

}  // namespace

cudaError_t l2_norms(const L2NormsParams& p, cudaStream_t stream) {
  if (p.B <= 0 || p.H <= 0 || p.N <= 0) return cudaSuccess;
  if (p.out == nullptr || (p.D > 0 && p.k.data == nullptr) || p.D < 0)
    return cudaErrorInvalidValue;
  if (p.dtype != DType::F32 && p.dtype != DType::F16 && p.dtype != DType::BF16)
    return cudaErrorInvalidValue;
  const int64_t esize = dtype_size(p.dtype);
  L2Args a;
  a.k = static_cast<const unsigned char*>(p.k.data);
  a.bsB = p.k.sB * esize;
  a.bsH = p.k.sH * esize;
  a.bsS = p.k.sS * esize;
  a.B = p.B;
  a.H = p.H;
  a.N = p.N;
  a.D = p.D;
  a.seq_lens = p.seq_lens;
  a.out = p.out;
  // Walk the rows in memory order: h fastest when the head stride is the smaller one (bshd).
  a.h_inner = p.H > 1 && p.N > 1 && std::llabs(p.k.sH) < std::llabs(p.k.sS);
  const int64_t row_bytes = static_cast<int64_t>(p.D) * esize;
  const bool vec_ok = p.D > 0 && row_bytes % 16 == 0 && row_bytes / 16 <= kMaxChunks &&
                      (reinterpret_cast<uintptr_t>(p.k.data) & 15u) == 0 &&
                      stride_aligned(a.bsB, p.B) && stride_aligned(a.bsH, p.H) &&
                      stride_aligned(a.bsS, p.N) &&
                      static_cast<uint64_t>(p.H) * static_cast<uint64_t>(p.N) <= 0xffffffffull;
  switch (p.dtype) {
    case DType::F32: return launch_dtype<DType::F32>(a, esize, vec_ok, stream);
    case DType::F16: return launch_dtype<DType::F16>(a, esize, vec_ok, stream);
    case DType::BF16: return launch_dtype<DType::BF16>(a, esize, vec_ok, stream);
    default: return unsupported(std::string("l2.norms does not support dtype ") + dtype_name(p.dtype) + " on CUDA");
  }
}

}  // namespace kvsift::cuda
