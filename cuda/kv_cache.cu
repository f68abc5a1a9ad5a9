// kvsift/cuda/kv_cache.cu: the kernels behind KvCache and copy() (semantics: common/kv_cache.h;
// CPU twin: cpp/cpu/kv_cache.cc).
//
// Rows are moved like gather's (cuda/gather.cu): a group of lanes copies one row with the widest
// vector (16/8/4/2/1 bytes) that every base pointer, stride and the row size allow; the grid's x
// walks a (b, h)'s rows, y walks the B * H pairs.
//
// retain is check-then-write: retain_check counts bad entries into a device int, and every
// writing kernel after it (retain_gather into a temporary, row_copy back into the cache) reads
// that int first and writes nothing when it is set. So an invalid selection leaves the cache
// as it was, without the host ever waiting for the check.
#include "common.cuh"

#include <initializer_list>

#include "kv_cache.h"

namespace kvsift::cuda {
namespace {

// Raised by any retain_check that met an invalid selection on this device.
__device__ int g_retain_error = 0;

constexpr int kRowThreads = 256;
constexpr int kFlatThreads = 256;
constexpr int64_t kMaxGridDim = 65535;
constexpr int64_t kMaxFlatBlocks = 1 << 12;

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

// The per-launch shape of the row kernels, with the lane split precomputed on the host.
struct RowGrid {
  int64_t H, T, BH;
  int32_t row_vecs;   // vectors per row
  int32_t lanes_log2; // lanes per row = 1 << lanes_log2
};

template <int V>
__global__ void __launch_bounds__(kRowThreads) row_copy_kernel(RowCopyParams p, RowGrid g) {
  using Vec = typename VecOf<V>::type;
  if (p.skip_if != nullptr && *p.skip_if != 0) return;
  const int lanes = 1 << g.lanes_log2;
  const int lane = threadIdx.x & (lanes - 1);
  const int rows_per_block = kRowThreads >> g.lanes_log2;
  const int64_t i_first = static_cast<int64_t>(blockIdx.x) * rows_per_block + (threadIdx.x >> g.lanes_log2);
  const int64_t i_step = static_cast<int64_t>(gridDim.x) * rows_per_block;
  const char* src = static_cast<const char*>(p.src.data);
  char* dst = static_cast<char*>(p.dst.data);
  for (int64_t bh = blockIdx.y; bh < g.BH; bh += gridDim.y) {
    const int64_t b = bh / g.H;
    const int64_t h = bh % g.H;
    const int64_t count = p.counts != nullptr ? p.counts[b] : g.T;
    const int64_t off = p.offsets != nullptr ? p.offsets[b] : 0;
    for (int64_t i = i_first; i < count; i += i_step) {
      Vec* d = reinterpret_cast<Vec*>(dst + b * p.dst.sB + h * p.dst.sH + (off + i) * p.dst.sS);
      if (src == nullptr) {
        for (int v = lane; v < g.row_vecs; v += lanes) d[v] = Vec{};
      } else {
        const Vec* s = reinterpret_cast<const Vec*>(src + b * p.src.sB + h * p.src.sH + i * p.src.sS);
        for (int v = lane; v < g.row_vecs; v += lanes) d[v] = s[v];
      }
    }
  }
}

template <int V>
__global__ void __launch_bounds__(kRowThreads) retain_gather_kernel(RetainGatherParams p, RowGrid g) {
  using Vec = typename VecOf<V>::type;
  if (p.skip_if != nullptr && *p.skip_if != 0) return;
  const int lanes = 1 << g.lanes_log2;
  const int lane = threadIdx.x & (lanes - 1);
  const int rows_per_block = kRowThreads >> g.lanes_log2;
  const int64_t i_first = static_cast<int64_t>(blockIdx.x) * rows_per_block + (threadIdx.x >> g.lanes_log2);
  const int64_t i_step = static_cast<int64_t>(gridDim.x) * rows_per_block;
  const char* src = static_cast<const char*>(p.src.data);
  char* out = static_cast<char*>(p.out.data);
  for (int64_t bh = blockIdx.y; bh < g.BH; bh += gridDim.y) {
    const int64_t b = bh / g.H;
    const int64_t h = bh % g.H;
    const int32_t* keep = p.keep + b * p.keep_sB + h * p.keep_sH;
    for (int64_t i = i_first; i < p.C; i += i_step) {
      // The check ran first (skip_if), so keep[i] is inside the row.
      const Vec* s = reinterpret_cast<const Vec*>(src + b * p.src.sB + h * p.src.sH + int64_t{keep[i]} * p.src.sS);
      Vec* d = reinterpret_cast<Vec*>(out + b * p.out.sB + h * p.out.sH + i * p.out.sS);
      for (int v = lane; v < g.row_vecs; v += lanes) d[v] = s[v];
    }
  }
}

__global__ void __launch_bounds__(kFlatThreads) append_positions_kernel(AppendPositionsParams p) {
  const int64_t total = p.B * p.H * p.T;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kFlatThreads + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * kFlatThreads) {
    const int64_t i = e % p.T;
    const int64_t bh = e / p.T;
    const int64_t b = bh / p.H;
    if (i < p.counts[b]) p.positions[bh * p.stride + p.offsets[b] + i] = p.starts[b] + static_cast<int32_t>(i);
  }
}

__global__ void __launch_bounds__(kFlatThreads) retain_check_kernel(RetainCheckParams p) {
  const int64_t total = p.B * p.H * p.C;
  int local = 0;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kFlatThreads + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * kFlatThreads) {
    const int64_t i = e % p.C;
    const int64_t bh = e / p.C;
    const int64_t b = bh / p.H;
    const int64_t h = bh % p.H;
    const int32_t* keep = p.keep + b * p.keep_sB + h * p.keep_sH;
    const int32_t k = keep[i];
    const bool in_range = k >= 0 && k < p.lengths[b];
    const bool ascending = i == 0 || keep[i - 1] < k;
    local += (in_range && ascending) ? 0 : 1;
  }
  // Integer atomics: the count is exact whatever the order.
  if (local != 0) {
    atomicAdd(p.bad, local);
    atomicOr(&g_retain_error, 1);
  }
}

// Up to this many ints travel in one launch's parameters (1 KiB of the 4 KiB allowed).
constexpr int kStoreChunk = 256;
struct IntChunk {
  int32_t v[kStoreChunk];
};

__global__ void __launch_bounds__(kStoreChunk) store_ints_kernel(int32_t* dst, IntChunk chunk, int32_t n) {
  const int i = static_cast<int>(threadIdx.x);
  if (i < n) dst[i] = chunk.v[i];
}

int vector_width(std::initializer_list<int64_t> values) {
  int width = 16;
  for (int64_t x : values) {
    while (width > 1 && x % width != 0) width >>= 1;
  }
  return width;
}

int64_t address(const void* p) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(p)); }

RowGrid row_grid(int64_t B, int64_t H, int64_t T, int64_t row_bytes, int width) {
  RowGrid g{};
  g.H = H;
  g.T = T;
  g.BH = B * H;
  g.row_vecs = static_cast<int32_t>(row_bytes / width);
  int lanes_log2 = 0;
  while (lanes_log2 < 5 && (int64_t{2} << lanes_log2) <= g.row_vecs) ++lanes_log2;
  g.lanes_log2 = lanes_log2;
  return g;
}

dim3 row_blocks(const RowGrid& g) {
  const int64_t rows_per_block = kRowThreads >> g.lanes_log2;
  int64_t bx = (g.T + rows_per_block - 1) / rows_per_block;
  bx = bx < kMaxGridDim ? bx : kMaxGridDim;
  const int64_t by = g.BH < kMaxGridDim ? g.BH : kMaxGridDim;
  return dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by));
}

unsigned flat_blocks(int64_t total) {
  int64_t blocks = (total + kFlatThreads - 1) / kFlatThreads;
  return static_cast<unsigned>(blocks < kMaxFlatBlocks ? blocks : kMaxFlatBlocks);
}

template <typename Params>
cudaError_t launch_rows(void (*k16)(Params, RowGrid), void (*k8)(Params, RowGrid), void (*k4)(Params, RowGrid),
                        void (*k2)(Params, RowGrid), void (*k1)(Params, RowGrid), const Params& p, const RowGrid& g,
                        int width, cudaStream_t stream) {
  const dim3 grid = row_blocks(g);
  switch (width) {
    case 16: return launch(k16, grid, dim3(kRowThreads), 0, stream, p, g);
    case 8: return launch(k8, grid, dim3(kRowThreads), 0, stream, p, g);
    case 4: return launch(k4, grid, dim3(kRowThreads), 0, stream, p, g);
    case 2: return launch(k2, grid, dim3(kRowThreads), 0, stream, p, g);
    default: return launch(k1, grid, dim3(kRowThreads), 0, stream, p, g);
  }
}

}  // namespace

cudaError_t row_copy(const RowCopyParams& p, cudaStream_t stream) {
  if (p.B < 0 || p.H < 0 || p.T < 0 || p.row_bytes < 0) return cudaErrorInvalidValue;
  if (p.B == 0 || p.H == 0 || p.T == 0 || p.row_bytes == 0) return cudaSuccess;
  if (p.dst.data == nullptr) return cudaErrorInvalidValue;
  const int width = p.src.data == nullptr
                        ? vector_width({address(p.dst.data), p.dst.sB, p.dst.sH, p.dst.sS, p.row_bytes})
                        : vector_width({address(p.src.data), p.src.sB, p.src.sH, p.src.sS, address(p.dst.data),
                                        p.dst.sB, p.dst.sH, p.dst.sS, p.row_bytes});
  if (p.row_bytes / width > INT32_MAX) return cudaErrorInvalidValue;
  const RowGrid g = row_grid(p.B, p.H, p.T, p.row_bytes, width);
  return launch_rows<RowCopyParams>(row_copy_kernel<16>, row_copy_kernel<8>, row_copy_kernel<4>, row_copy_kernel<2>,
                                    row_copy_kernel<1>, p, g, width, stream);
}

cudaError_t retain_gather(const RetainGatherParams& p, cudaStream_t stream) {
  if (p.B < 0 || p.H < 0 || p.C < 0 || p.row_bytes < 0) return cudaErrorInvalidValue;
  if (p.B == 0 || p.H == 0 || p.C == 0 || p.row_bytes == 0) return cudaSuccess;
  if (p.src.data == nullptr || p.out.data == nullptr || p.keep == nullptr) return cudaErrorInvalidValue;
  const int width = vector_width({address(p.src.data), p.src.sB, p.src.sH, p.src.sS, address(p.out.data), p.out.sB,
                                  p.out.sH, p.out.sS, p.row_bytes});
  if (p.row_bytes / width > INT32_MAX) return cudaErrorInvalidValue;
  const RowGrid g = row_grid(p.B, p.H, p.C, p.row_bytes, width);
  return launch_rows<RetainGatherParams>(retain_gather_kernel<16>, retain_gather_kernel<8>, retain_gather_kernel<4>,
                                         retain_gather_kernel<2>, retain_gather_kernel<1>, p, g, width, stream);
}

cudaError_t append_positions(const AppendPositionsParams& p, cudaStream_t stream) {
  if (p.B < 0 || p.H < 0 || p.T < 0 || p.stride < 0) return cudaErrorInvalidValue;
  const int64_t total = p.B * p.H * p.T;
  if (total == 0) return cudaSuccess;
  if (p.positions == nullptr || p.offsets == nullptr || p.counts == nullptr || p.starts == nullptr) {
    return cudaErrorInvalidValue;
  }
  return launch(append_positions_kernel, dim3(flat_blocks(total)), dim3(kFlatThreads), 0, stream, p);
}

cudaError_t retain_check(const RetainCheckParams& p, cudaStream_t stream) {
  if (p.B < 0 || p.H < 0 || p.C < 0) return cudaErrorInvalidValue;
  const int64_t total = p.B * p.H * p.C;
  if (total == 0) return cudaSuccess;
  if (p.keep == nullptr || p.lengths == nullptr || p.bad == nullptr) return cudaErrorInvalidValue;
  return launch(retain_check_kernel, dim3(flat_blocks(total)), dim3(kFlatThreads), 0, stream, p);
}

cudaError_t store_ints(int32_t* dst, const int32_t* host, int64_t n, cudaStream_t stream) {
  if (n < 0 || (n > 0 && (dst == nullptr || host == nullptr))) return cudaErrorInvalidValue;
  for (int64_t off = 0; off < n; off += kStoreChunk) {
    IntChunk chunk{};
    const int32_t m = static_cast<int32_t>(n - off < kStoreChunk ? n - off : kStoreChunk);
    for (int32_t i = 0; i < m; ++i) chunk.v[i] = host[off + i];
    const cudaError_t err = launch(store_ints_kernel, dim3(1), dim3(kStoreChunk), 0, stream, dst + off, chunk, m);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t read_and_clear_retain_error(int* had_error, cudaStream_t stream) {
  if (had_error == nullptr) return cudaErrorInvalidValue;
  int flag = 0;
  cudaError_t err = cudaMemcpyFromSymbolAsync(&flag, g_retain_error, sizeof(int), 0, cudaMemcpyDeviceToHost, stream);
  if (err != cudaSuccess) return err;
  err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return err;
  *had_error = flag != 0 ? 1 : 0;
  if (flag != 0) {
    static const int zero = 0;
    err = cudaMemcpyToSymbolAsync(g_retain_error, &zero, sizeof(int), 0, cudaMemcpyHostToDevice, stream);
    if (err != cudaSuccess) return err;
    err = cudaStreamSynchronize(stream);
  }
  return err;
}

}  // namespace kvsift::cuda
