// kvsift/cuda/vector_io.cuh: copying rows of bytes with the widest vector the addresses allow, the
// one scheme behind gather (cuda/gather.cu) and the KV-cache row kernels (cuda/kv_cache.cu).
//
// A row of row_bytes moves as row_vecs vectors of V = 16, 8, 4, 2 or 1 bytes: the largest V that
// divides every base address, every byte stride and the row size, so each access is naturally
// aligned. A group of lanes copies one row, the largest power of two of lanes (<= 32) that the
// row's vectors fill: a 256-byte bf16 row of D = 128 takes 16 lanes, and a warp moves two rows
// per instruction. In a row kernel's grid, x walks the rows of one (b, h) in such groups and y
// walks the B * H pairs, so the index split costs a division per block-row, not per lane.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <tuple>
#include <type_traits>

#include "common.cuh"

namespace kvsift::cuda {

// The unsigned type of V bytes. The table is indexed by log2(V), so it cannot drift from the
// widths vector_width() picks.
template <int V>
struct VecOf {
  static_assert(V == 1 || V == 2 || V == 4 || V == 8 || V == 16, "a vector is 1 to 16 bytes, a power of two");
  using type = std::tuple_element_t<(V >= 2) + (V >= 4) + (V >= 8) + (V >= 16),
                                    std::tuple<uint8_t, uint16_t, uint32_t, uint2, uint4>>;
};

// Threads per block of every row kernel: 8 (32-lane rows) to 256 (1-lane rows) rows a block.
constexpr int kRowThreads = 256;

// grid.y's limit; grid.x is capped there too, and the row kernels grid-stride beyond it.
constexpr int64_t kMaxRowGridDim = 65535;

inline int64_t address_of(const void* p) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(p)); }

// The widest vector (16, 8, 4, 2 or 1 bytes) that divides every value given: the base addresses
// (address_of), the byte strides and the row size.
inline int vector_width(std::initializer_list<int64_t> values) {
  int width = 16;
  for (int64_t x : values) {
    while (width > 1 && x % width != 0) width >>= 1;
  }
  return width;
}

// log2 of the lanes that copy one row of row_vecs vectors: the largest power of two <= 32 that
// the row fills, so no lane of a group is idle on a full row.
inline int32_t row_lanes_log2(int64_t row_vecs) {
  int32_t lanes_log2 = 0;
  while (lanes_log2 < 5 && (int64_t{2} << lanes_log2) <= row_vecs) ++lanes_log2;
  return lanes_log2;
}

// The grid of a row kernel: x covers `rows` rows of a (b, h) in groups of 1 << lanes_log2 lanes,
// y the BH pairs; both capped at kMaxRowGridDim.
inline dim3 row_kernel_grid(int64_t rows, int64_t BH, int32_t lanes_log2) {
  const int64_t rows_per_block = kRowThreads >> lanes_log2;
  int64_t bx = (rows + rows_per_block - 1) / rows_per_block;
  bx = bx < kMaxRowGridDim ? bx : kMaxRowGridDim;
  const int64_t by = BH < kMaxRowGridDim ? BH : kMaxRowGridDim;
  return dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by));
}

// A row kernel thread's share: its lane within its row's group of `lanes`, the first row of each
// (b, h) that its group copies, and the step to the group's next row.
struct RowLane {
  int lane, lanes;
  int64_t first, step;
};

__device__ __forceinline__ RowLane row_lane(int lanes_log2) {
  RowLane r;
  r.lanes = 1 << lanes_log2;
  r.lane = threadIdx.x & (r.lanes - 1);
  const int rows_per_block = kRowThreads >> lanes_log2;
  r.first = static_cast<int64_t>(blockIdx.x) * rows_per_block + (threadIdx.x >> lanes_log2);
  r.step = static_cast<int64_t>(gridDim.x) * rows_per_block;
  return r;
}

// Returns f(std::integral_constant<int, V>{}) for the width V that vector_width() picked: the one
// switch from a runtime width to the kernel instantiated for it.
template <typename F>
cudaError_t with_vector_width(int width, F&& f) {
  switch (width) {
    case 16: return f(std::integral_constant<int, 16>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 2: return f(std::integral_constant<int, 2>{});
    default: return f(std::integral_constant<int, 1>{});
  }
}

}  // namespace kvsift::cuda
