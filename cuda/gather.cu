// kvsift/cuda/gather.cu: the gather of kept cache rows (GatherParams), the window positions of a
// compress output (FillWindowParams), and the out-of-range flag both backends report.
//
// Gather is pure streaming: each row is copied as D * dtype-size bytes by a group of lanes with
// the widest vector (16/8/4/2/1 bytes) that every base pointer, stride and the row size allow.
// A group is the largest power of two of lanes (<= 32) that the row's vector count fills, so a
// 256-byte bf16 row of D = 128 takes 16 lanes and a warp moves two rows per instruction.
#include "common.cuh"

#include <cstddef>
#include <cstdint>

#include "launchers.h"

namespace kvsift::cuda {
namespace {

// Set by any gather that met a position outside [0, N) on this device; read_and_clear_index_error
// reads and clears it.
__device__ int g_index_error = 0;

constexpr int kGatherThreads = 256;
constexpr int64_t kMaxGridDim = 65535;  // grid-stride beyond this (gridDim.y's limit)
constexpr int kFillThreads = 256;
constexpr int64_t kMaxFillBlocks = 1 << 12;

template <int V>
struct VecOf;
template <>
struct VecOf<16> {
  using type = uint4;
};
template <>
struct VecOf<8> {
  using type = uint2;
};
template <>
struct VecOf<4> {
  using type = uint32_t;
};
template <>
struct VecOf<2> {
  using type = uint16_t;
};
template <>
struct VecOf<1> {
  using type = uint8_t;
};

struct GatherArgs {
  const char* cache;
  char* out;
  const int32_t* positions;
  int64_t c_sB, c_sH, c_sS;  // bytes
  int64_t o_sB, o_sH, o_sS;  // bytes
  int64_t pos_sB, pos_sH;    // elements
  int64_t BH;                // B * H
  int32_t H, K, N, group;
  int32_t row_vecs;          // vectors per row
  int32_t lanes_log2;        // lanes per row = 1 << lanes_log2
};

// Grid: x walks the K kept rows of one (b, h) in groups of lanes, y walks the B * H pairs, so
// the index split costs a division per block-row, not per lane.
template <int V>
__global__ void __launch_bounds__(kGatherThreads) gather_kernel(GatherArgs a) {
  using Vec = typename VecOf<V>::type;
  const int lanes = 1 << a.lanes_log2;
  const int lane = threadIdx.x & (lanes - 1);
  const int rows_per_block = kGatherThreads >> a.lanes_log2;
  const int64_t i_first =
      static_cast<int64_t>(blockIdx.x) * rows_per_block + (threadIdx.x >> a.lanes_log2);
  const int64_t i_step = static_cast<int64_t>(gridDim.x) * rows_per_block;
  for (int64_t bh = blockIdx.y; bh < a.BH; bh += gridDim.y) {
    const int64_t b = bh / a.H;
    const int64_t h = bh % a.H;
    const int32_t* pos_row = a.positions + b * a.pos_sB + h * a.pos_sH;
    const char* src_head = a.cache + b * a.c_sB + (h / a.group) * a.c_sH;
    char* dst_head = a.out + b * a.o_sB + h * a.o_sH;
    for (int64_t i = i_first; i < a.K; i += i_step) {
      const int32_t pos = __ldg(pos_row + i);
      Vec* __restrict__ dst = reinterpret_cast<Vec*>(dst_head + i * a.o_sS);
      if (pos >= 0 && pos < a.N) {
        const Vec* __restrict__ src = reinterpret_cast<const Vec*>(src_head + pos * a.c_sS);
#pragma unroll 2
        for (int v = lane; v < a.row_vecs; v += lanes) dst[v] = __ldg(src + v);
      } else {
        for (int v = lane; v < a.row_vecs; v += lanes) dst[v] = Vec{};
        if (lane == 0) atomicOr(&g_index_error, 1);
      }
    }
  }
}

__global__ void __launch_bounds__(kFillThreads) fill_window_kernel(FillWindowParams p) {
  const int64_t total = p.R * p.W;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kFillThreads + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * kFillThreads) {
    const int64_t r = e / p.W;
    const int32_t i = static_cast<int32_t>(e % p.W);
    const int32_t L = p.seq_lens != nullptr ? p.seq_lens[r / p.rows_per_batch] : p.N;
    p.positions[r * p.row_stride + (p.row_stride - p.W) + i] = L - p.W + i;
  }
}

bool aligned(int64_t x, int64_t v) { return x % v == 0; }

template <int V>
cudaError_t launch_gather(GatherArgs a, int64_t row_bytes, cudaStream_t stream) {
  a.row_vecs = static_cast<int32_t>(row_bytes / V);
  int lanes_log2 = 0;
  while (lanes_log2 < 5 && (int64_t{2} << lanes_log2) <= a.row_vecs) ++lanes_log2;
  a.lanes_log2 = lanes_log2;
  const int64_t rows_per_block = kGatherThreads >> lanes_log2;
  int64_t bx = (a.K + rows_per_block - 1) / rows_per_block;
  bx = bx < kMaxGridDim ? bx : kMaxGridDim;
  const int64_t by = a.BH < kMaxGridDim ? a.BH : kMaxGridDim;
  const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  return launch(gather_kernel<V>, grid, dim3(kGatherThreads), 0, stream, a);
}

}  // namespace

cudaError_t gather(const GatherParams& p, cudaStream_t stream) {
  if (p.B < 0 || p.Hc < 0 || p.N < 0 || p.D < 0 || p.K < 0 || p.group < 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t H = static_cast<int64_t>(p.Hc) * p.group;
  const int64_t rows = static_cast<int64_t>(p.B) * H * p.K;
  if (rows == 0 || p.D == 0) return cudaSuccess;
  const int64_t es = dtype_size(p.dtype);
  if (es == 0 || H > INT32_MAX) return cudaErrorInvalidValue;
  if (p.cache.data == nullptr || p.out.data == nullptr || p.positions == nullptr) {
    return cudaErrorInvalidValue;
  }
  const int64_t row_bytes = static_cast<int64_t>(p.D) * es;

  GatherArgs a{};
  a.cache = static_cast<const char*>(p.cache.data);
  a.out = static_cast<char*>(p.out.data);
  a.positions = p.positions;
  a.c_sB = p.cache.sB * es;
  a.c_sH = p.cache.sH * es;
  a.c_sS = p.cache.sS * es;
  a.o_sB = p.out.sB * es;
  a.o_sH = p.out.sH * es;
  a.o_sS = p.out.sS * es;
  a.pos_sB = p.pos_sB;
  a.pos_sH = p.pos_sH;
  a.BH = static_cast<int64_t>(p.B) * H;
  a.H = static_cast<int32_t>(H);
  a.K = p.K;
  a.N = p.N;
  a.group = p.group;

  // The widest access every row start allows: both bases, all six byte strides and the row size.
  const int64_t bases[] = {static_cast<int64_t>(reinterpret_cast<uintptr_t>(a.cache)),
                           static_cast<int64_t>(reinterpret_cast<uintptr_t>(a.out)),
                           a.c_sB, a.c_sH, a.c_sS, a.o_sB, a.o_sH, a.o_sS, row_bytes};
  int width = 16;
  for (int64_t x : bases) {
    while (width > 1 && !aligned(x, width)) width >>= 1;
  }
  if (row_bytes / width > INT32_MAX) return cudaErrorInvalidValue;
  switch (width) {
    case 16: return launch_gather<16>(a, row_bytes, stream);
    case 8: return launch_gather<8>(a, row_bytes, stream);
    case 4: return launch_gather<4>(a, row_bytes, stream);
    case 2: return launch_gather<2>(a, row_bytes, stream);
    default: return launch_gather<1>(a, row_bytes, stream);
  }
}

cudaError_t fill_window(const FillWindowParams& p, cudaStream_t stream) {
  if (p.R < 0 || p.W < 0 || p.row_stride < 0) return cudaErrorInvalidValue;
  if (p.R == 0 || p.W == 0) return cudaSuccess;
  if (p.positions == nullptr || p.W > p.row_stride) return cudaErrorInvalidValue;
  if (p.seq_lens != nullptr && p.rows_per_batch <= 0) return cudaErrorInvalidValue;
  const int64_t total = p.R * p.W;
  int64_t blocks = (total + kFillThreads - 1) / kFillThreads;
  blocks = blocks < kMaxFillBlocks ? blocks : kMaxFillBlocks;
  return launch(fill_window_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kFillThreads), 0, stream, p);
}

cudaError_t read_and_clear_index_error(int* had_error, cudaStream_t stream) {
  if (had_error == nullptr) return cudaErrorInvalidValue;
  int flag = 0;
  cudaError_t err = cudaMemcpyFromSymbolAsync(&flag, g_index_error, sizeof(int), 0,
                                              cudaMemcpyDeviceToHost, stream);
  if (err != cudaSuccess) return err;
  err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return err;
  *had_error = flag != 0 ? 1 : 0;
  // Cleared only when set: the common, clean case costs one small copy. The clear is waited for,
  // so no later gather on another stream can have its report wiped by a copy still in flight.
  if (flag != 0) {
    static const int zero = 0;
    err = cudaMemcpyToSymbolAsync(g_index_error, &zero, sizeof(int), 0, cudaMemcpyHostToDevice,
                                  stream);
    if (err != cudaSuccess) return err;
    err = cudaStreamSynchronize(stream);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace kvsift::cuda
