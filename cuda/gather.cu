// kvsift/cuda/gather.cu: the gather of kept cache rows (GatherParams), the window positions of a
// compress output (FillWindowParams), and the out-of-range flag both backends report.
//
// Gather is pure streaming: each row is copied as D * dtype-size bytes by a group of lanes with
// the widest vector that every base pointer, stride and the row size allow (cuda/vector_io.cuh).
#include "common.cuh"

#include <cstddef>
#include <cstdint>

#include "launchers.h"
#include "device_flag.cuh"
#include "vector_io.cuh"

namespace kvsift::cuda {
namespace {

// Set by any gather that met a position outside [0, N) on this device; read_and_clear_index_error
// reads and clears it.
__device__ int g_index_error = 0;

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
__global__ void __launch_bounds__(kRowThreads) gather_kernel(GatherArgs a) {
  using Vec = typename VecOf<V>::type;
  const RowLane rl = row_lane(a.lanes_log2);
  for (int64_t bh = blockIdx.y; bh < a.BH; bh += gridDim.y) {
    const int64_t b = bh / a.H;
    const int64_t h = bh % a.H;
    const int32_t* pos_row = a.positions + b * a.pos_sB + h * a.pos_sH;
    const char* src_head = a.cache + b * a.c_sB + (h / a.group) * a.c_sH;
    char* dst_head = a.out + b * a.o_sB + h * a.o_sH;
    for (int64_t i = rl.first; i < a.K; i += rl.step) {
      const int32_t pos = __ldg(pos_row + i);
      Vec* __restrict__ dst = reinterpret_cast<Vec*>(dst_head + i * a.o_sS);
      if (pos >= 0 && pos < a.N) {
        const Vec* __restrict__ src = reinterpret_cast<const Vec*>(src_head + pos * a.c_sS);
#pragma unroll 2
        for (int v = rl.lane; v < a.row_vecs; v += rl.lanes) dst[v] = __ldg(src + v);
      } else {
        for (int v = rl.lane; v < a.row_vecs; v += rl.lanes) dst[v] = Vec{};
        if (rl.lane == 0) atomicOr(&g_index_error, 1);
      }
    }
  }
}

__global__ void __launch_bounds__(kFlatThreads) fill_window_kernel(FillWindowParams p) {
  const int64_t total = p.R * p.W;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kFlatThreads + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * kFlatThreads) {
    const int64_t r = e / p.W;
    const int32_t i = static_cast<int32_t>(e % p.W);
    const int32_t L = p.seq_lens != nullptr ? p.seq_lens[r / p.rows_per_batch] : p.N;
    p.positions[r * p.row_stride + (p.row_stride - p.W) + i] = L - p.W + i;
  }
}

template <int V>
cudaError_t launch_gather(GatherArgs a, int64_t row_bytes, cudaStream_t stream) {
  a.row_vecs = static_cast<int32_t>(row_bytes / V);
  a.lanes_log2 = row_lanes_log2(a.row_vecs);
  const dim3 grid = row_kernel_grid(a.K, a.BH, a.lanes_log2);
  return launch(gather_kernel<V>, grid, dim3(kRowThreads), 0, stream, a);
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
  const int width = vector_width({address_of(a.cache), address_of(a.out), a.c_sB, a.c_sH, a.c_sS, a.o_sB, a.o_sH,
                                  a.o_sS, row_bytes});
  if (row_bytes / width > INT32_MAX) return cudaErrorInvalidValue;
  return with_vector_width(width, [&](auto v) { return launch_gather<decltype(v)::value>(a, row_bytes, stream); });
}

cudaError_t fill_window(const FillWindowParams& p, cudaStream_t stream) {
  if (p.R < 0 || p.W < 0 || p.row_stride < 0) return cudaErrorInvalidValue;
  if (p.R == 0 || p.W == 0) return cudaSuccess;
  if (p.positions == nullptr || p.W > p.row_stride) return cudaErrorInvalidValue;
  if (p.seq_lens != nullptr && p.rows_per_batch <= 0) return cudaErrorInvalidValue;
  return launch(fill_window_kernel, dim3(flat_blocks(p.R * p.W)), dim3(kFlatThreads), 0, stream, p);
}

cudaError_t read_and_clear_index_error(int* had_error, cudaStream_t stream) {
  return read_and_clear_flag(g_index_error, had_error, stream);
}

}  // namespace kvsift::cuda
