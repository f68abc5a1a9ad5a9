// kvsift/cuda/kv_cache.cu: the kernels behind KvCache and copy() (semantics: common/kv_cache.h;
// CPU twin: cpp/cpu/kv_cache.cc).
//
// Rows are moved like gather's, by cuda/vector_io.cuh: a group of lanes copies one row with the
// widest vector that every base pointer, stride and the row size allow; the grid's x walks a
// (b, h)'s rows, y walks the B * H pairs.
//
// retain is check-then-write: retain_check counts bad entries into a device int, and every
// writing kernel after it (retain_gather into a temporary, row_copy back into the cache) reads
// that int first and writes nothing when it is set. So an invalid selection leaves the cache
// as it was, without the host ever waiting for the check.
#include "common.cuh"

#include <type_traits>

#include "device_flag.cuh"
#include "kv_cache.h"
#include "vector_io.cuh"

namespace kvsift::cuda {
namespace {

// Raised by any retain_check that met an invalid selection on this device.
__device__ int g_retain_error = 0;

// The per-launch shape of the row kernels, with the lane split precomputed on the host.
struct RowGrid {
  int64_t H, T, BH;
  int32_t row_vecs;   // vectors per row
  int32_t lanes_log2; // lanes per row = 1 << lanes_log2
};

// One (b, h)'s share of a row kernel: `count` rows; row i is written at dst + i * dst_sS and read
// from src + (keep ? keep[i] : i) * src_sS.
struct HeadRows {
  const char* src;
  char* dst;
  const int32_t* keep;
  int64_t src_sS, dst_sS, count;
};

// row_copy: src rows [0, count(b)) to dst rows [off(b), off(b) + count(b)); no src zero-fills.
__device__ __forceinline__ HeadRows head_rows(const RowCopyParams& p, const RowGrid& g, int64_t b, int64_t h) {
  const int64_t off = p.offsets != nullptr ? p.offsets[b] : 0;
  const char* src = static_cast<const char*>(p.src.data);
  return {src == nullptr ? nullptr : src + b * p.src.sB + h * p.src.sH,
          static_cast<char*>(p.dst.data) + b * p.dst.sB + h * p.dst.sH + off * p.dst.sS,
          nullptr,
          p.src.sS,
          p.dst.sS,
          p.counts != nullptr ? p.counts[b] : g.T};
}

// retain_gather: out row i is src row keep[i]; the check ran first (skip_if), so keep[i] is inside
// the row.
__device__ __forceinline__ HeadRows head_rows(const RetainGatherParams& p, const RowGrid&, int64_t b, int64_t h) {
  return {static_cast<const char*>(p.src.data) + b * p.src.sB + h * p.src.sH,
          static_cast<char*>(p.out.data) + b * p.out.sB + h * p.out.sH,
          p.keep + b * p.keep_sB + h * p.keep_sH,
          p.src.sS,
          p.out.sS,
          p.C};
}

// The one row kernel, for row_copy and retain_gather (Params). Which of keep and zero-fill a
// launch can meet is known from Params at compile time, so neither pays for the other's branch.
template <int V, class Params>
__global__ void __launch_bounds__(kRowThreads) row_kernel(Params p, RowGrid g) {
  using Vec = typename VecOf<V>::type;
  constexpr bool kKept = std::is_same_v<Params, RetainGatherParams>;
  if (p.skip_if != nullptr && *p.skip_if != 0) return;
  const RowLane rl = row_lane(g.lanes_log2);
  for (int64_t bh = blockIdx.y; bh < g.BH; bh += gridDim.y) {
    const HeadRows r = head_rows(p, g, bh / g.H, bh % g.H);
    for (int64_t i = rl.first; i < r.count; i += rl.step) {
      Vec* d = reinterpret_cast<Vec*>(r.dst + i * r.dst_sS);
      if (!kKept && r.src == nullptr) {
        for (int v = rl.lane; v < g.row_vecs; v += rl.lanes) d[v] = Vec{};
      } else {
        const int64_t from = kKept ? int64_t{r.keep[i]} : i;
        const Vec* s = reinterpret_cast<const Vec*>(r.src + from * r.src_sS);
        for (int v = rl.lane; v < g.row_vecs; v += rl.lanes) d[v] = s[v];
      }
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

RowGrid row_grid(int64_t B, int64_t H, int64_t T, int64_t row_bytes, int width) {
  RowGrid g{};
  g.H = H;
  g.T = T;
  g.BH = B * H;
  g.row_vecs = static_cast<int32_t>(row_bytes / width);
  g.lanes_log2 = row_lanes_log2(g.row_vecs);
  return g;
}

// The launch both row launchers share: B x H heads of up to `rows` rows of p.row_bytes, moved at
// `width` (the widest vector every row start allows). Negative sizes are invalid, an empty copy
// launches nothing, and only then is a missing pointer (pointers_ok false) an error.
template <class Params>
cudaError_t launch_rows(const Params& p, int64_t rows, bool pointers_ok, int width, cudaStream_t stream) {
  if (p.B < 0 || p.H < 0 || rows < 0 || p.row_bytes < 0) return cudaErrorInvalidValue;
  if (p.B == 0 || p.H == 0 || rows == 0 || p.row_bytes == 0) return cudaSuccess;
  if (!pointers_ok || p.row_bytes / width > INT32_MAX) return cudaErrorInvalidValue;
  const RowGrid g = row_grid(p.B, p.H, rows, p.row_bytes, width);
  const dim3 grid = row_kernel_grid(g.T, g.BH, g.lanes_log2);
  return with_vector_width(width, [&](auto v) {
    return launch(row_kernel<decltype(v)::value, Params>, grid, dim3(kRowThreads), 0, stream, p, g);
  });
}

}  // namespace

cudaError_t row_copy(const RowCopyParams& p, cudaStream_t stream) {
  // Without a source the rows are zeroed, and only the destination's alignment counts.
  const int width = p.src.data == nullptr
                        ? vector_width({address_of(p.dst.data), p.dst.sB, p.dst.sH, p.dst.sS, p.row_bytes})
                        : vector_width({address_of(p.src.data), p.src.sB, p.src.sH, p.src.sS, address_of(p.dst.data),
                                        p.dst.sB, p.dst.sH, p.dst.sS, p.row_bytes});
  return launch_rows(p, p.T, p.dst.data != nullptr, width, stream);
}

cudaError_t retain_gather(const RetainGatherParams& p, cudaStream_t stream) {
  const int width = vector_width({address_of(p.src.data), p.src.sB, p.src.sH, p.src.sS, address_of(p.out.data),
                                  p.out.sB, p.out.sH, p.out.sS, p.row_bytes});
  const bool pointers_ok = p.src.data != nullptr && p.out.data != nullptr && p.keep != nullptr;
  return launch_rows(p, p.C, pointers_ok, width, stream);
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
  return read_and_clear_flag(g_retain_error, had_error, stream);
}

}  // namespace kvsift::cuda
