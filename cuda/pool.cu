// kvsift/cuda/pool.cu: 1-D pooling of vote rows (ALGORITHMS.md §1.5), odd kernel K, stride 1,
// padding K/2: out[j] = op over in[j - K/2 .. j - K/2 + K - 1], positions outside [0, len)
// being padding (0 for avg, which divides by K always as count_include_pad; never the winner
// for max). Outputs at j >= len are 0.
//
// Tile path (K <= kTileMaxK): a block owns kTile consecutive outputs of one row and stages the
// inputs its windows cover (kTile + K - 1, halo included, padding already replaced by the
// identity) in shared memory, so each input comes from device memory once per tile. A thread
// computes kV consecutive outputs:
//   K <= 16: directly, each window summed left to right (the CPU backend's exact order);
//   K >  16: the kV windows share a core [o + kV - 1, o + K - 1]; window v is
//            suffix(A, v) + core + prefix(B, v) over the kV - 1 inputs A left of the core and
//            the kV - 1 inputs B right of it, about K/kV + 3 operations per output.
// Wide path (K > kTileMaxK): the same decomposition one level up, kWide outputs per block, the
// suffixes and prefixes as block scans and the core as a block reduction.
// No path subtracts, so an inf or a NaN stays inside the windows that contain it.
//
// Sums are taken in double (as the CPU backend's), max in float with torch's NaN rule: a NaN
// in the window wins. Ties keep the left operand, so max returns the leftmost of equal values
// (this only shows for -0 vs +0).
#include "common.cuh"

#include <algorithm>
#include <cstdint>

#include "launchers.h"

namespace kvsift::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kV = 8;                               // consecutive outputs per thread
constexpr int kTile = kThreads * kV;                // outputs per block, tile path
constexpr int kDirectMaxK = 16;                     // the CPU backend sums up to 16 directly
constexpr int kTileMaxK = kTile + 1;                // halo <= one tile
constexpr int kSpare = kDirectMaxK;                 // slack past the halo for register windows
constexpr int kWide = 1024;                         // threads = outputs per block, wide path
constexpr int64_t kMaxGrid = int64_t{1} << 30;

struct SumOp {
  using T = double;
  __device__ static T identity() { return 0.0; }
  __device__ static float pad() { return 0.f; }
  __device__ static T load(float x) { return static_cast<T>(x); }
  __device__ static T op(T a, T b) { return a + b; }
  __device__ static float finish(T acc, int64_t K) {
    return static_cast<float>(acc / static_cast<double>(K));
  }
};

struct MaxOp {
  using T = float;
  __device__ static T identity() { return __int_as_float(static_cast<int>(0xff800000u)); }
  __device__ static float pad() { return identity(); }
  __device__ static T load(float x) { return x; }
  // torch's max_pool1d: a NaN candidate wins and a NaN maximum stays; ties keep a (the left).
  __device__ static T op(T a, T b) { return (b > a || b != b) ? b : a; }
  __device__ static float finish(T acc, int64_t) { return acc; }
};

struct PoolArgs {
  const float* in;
  float* out;
  int64_t R, M, K;
  const int32_t* lengths;
  int64_t rows_per_batch;
  int64_t tiles_per_row, tiles;
};

__device__ __forceinline__ int64_t row_len(const PoolArgs& a, int64_t r) {
  if (a.lengths == nullptr) return a.M;
  const int64_t b = a.rows_per_batch > 0 ? r / a.rows_per_batch : 0;
  return min(max(static_cast<int64_t>(a.lengths[b]), int64_t{0}), a.M);
}

// One pad word per 32: thread t reads word t*kV + m, and the skew spreads a warp over all banks.
__device__ __forceinline__ int skew(int x) { return x + (x >> 5); }

__host__ __device__ constexpr int skewed_words(int n) { return n + (n >> 5) + 1; }

// KD > 0: direct windows, K <= KD. KD == 0: shared-core decomposition, kV <= K.
template <typename Op, int KD>
__global__ void __launch_bounds__(kThreads) pool_tile_kernel(PoolArgs a) {
  using T = typename Op::T;
  KVSIFT_DYNAMIC_SHARED(tile, float);
  const int K = static_cast<int>(a.K);
  const int h = K / 2;
  const int span = kTile + K - 1;  // inputs the tile's windows cover
  const int tid = threadIdx.x;
  const int o = tid * kV;  // this thread's first output, and its first window's start in tile
  for (int64_t t = blockIdx.x; t < a.tiles; t += gridDim.x) {
    const int64_t r = t / a.tiles_per_row;
    const int64_t t0 = (t - r * a.tiles_per_row) * kTile;
    const int64_t len = row_len(a, r);
    float* out = a.out + r * a.M;
    if (t0 >= len) {  // block-uniform: all of this tile is past the row's end
      for (int x = tid; x < kTile && t0 + x < a.M; x += kThreads) out[t0 + x] = 0.f;
      continue;
    }
    const float* in = a.in + r * a.M;
    const int64_t g0 = t0 - h;
#pragma unroll 4
    for (int x = tid; x < span + kSpare; x += kThreads) {
      const int64_t g = g0 + x;
      tile[skew(x)] = (x < span && g >= 0 && g < len) ? __ldg(in + g) : Op::pad();
    }
    __syncthreads();

    T res[kV];
#pragma unroll
    for (int v = 0; v < kV; ++v) res[v] = Op::identity();
    if (t0 + o < len) {
      if constexpr (KD > 0) {
        float w[kV + KD - 1];
#pragma unroll
        for (int m = 0; m < kV + KD - 1; ++m) w[m] = tile[skew(o + m)];
#pragma unroll
        for (int v = 0; v < kV; ++v) {
          T acc = Op::identity();
#pragma unroll
          for (int k = 0; k < KD; ++k)
            if (k < K) acc = Op::op(acc, Op::load(w[v + k]));
          res[v] = acc;
        }
      } else {
        T suf[kV];
        suf[kV - 1] = Op::identity();
#pragma unroll
        for (int i = kV - 2; i >= 0; --i) suf[i] = Op::op(Op::load(tile[skew(o + i)]), suf[i + 1]);
        T core = Op::identity();
        for (int x = o + kV - 1; x < o + K; ++x) core = Op::op(core, Op::load(tile[skew(x)]));
        T pre = Op::identity();
#pragma unroll
        for (int v = 0; v < kV; ++v) {
          res[v] = Op::op(Op::op(suf[v], core), pre);
          if (v + 1 < kV) pre = Op::op(pre, Op::load(tile[skew(o + K + v)]));
        }
      }
    }
    __syncthreads();  // every window is read before the tile is reused for the results
#pragma unroll
    for (int v = 0; v < kV; ++v) tile[skew(o + v)] = Op::finish(res[v], K);
    __syncthreads();
    for (int x = tid; x < kTile; x += kThreads) {
      const int64_t j = t0 + x;
      if (j < a.M) out[j] = j < len ? tile[skew(x)] : 0.f;
    }
    __syncthreads();  // the stores have read the tile before the next one overwrites it
  }
}

// The wide kernel's scan step, run on the lanes' parts and then on the warps' totals: over the
// warp's 32 lanes, an inclusive suffix scan of s, an inclusive prefix scan of p and an all-reduce
// of c, all with Op.
template <typename Op>
__device__ __forceinline__ void warp_scan_parts(typename Op::T& s, typename Op::T& p, typename Op::T& c, int lane) {
  using T = typename Op::T;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const T sd = __shfl_down_sync(0xffffffffu, s, off);
    const T pu = __shfl_up_sync(0xffffffffu, p, off);
    const T cx = __shfl_xor_sync(0xffffffffu, c, off);
    if (lane + off < 32) s = Op::op(s, sd);
    if (lane >= off) p = Op::op(pu, p);
    c = Op::op(c, cx);
  }
}

// Wide kernels: block outputs [t0, t0 + kWide), thread v owns output t0 + v, window
// [t0 + v - h, t0 + v - h + K - 1]. With K >= kWide all windows share the core
// [t0 - h + kWide - 1, t0 - h + K - 1]; A_i = x(t0 - h + i) and B_i = x(t0 - h + K + i),
// i < kWide - 1, are the parts left and right of it: window v = suffix_v(A) + core + prefix_v(B).
template <typename Op>
__global__ void __launch_bounds__(kWide) pool_wide_kernel(PoolArgs a) {
  using T = typename Op::T;
  constexpr int kWarps = kWide / 32;
  KVSIFT_SHARED(suf_warp, T[kWarps]);
  KVSIFT_SHARED(pre_warp, T[kWarps]);
  KVSIFT_SHARED(core_warp, T[kWarps]);
  KVSIFT_SHARED(suf_after, T[kWarps]);
  KVSIFT_SHARED(pre_before, T[kWarps]);
  KVSIFT_SHARED(core_all, T);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t K = a.K, h = K / 2;
  for (int64_t t = blockIdx.x; t < a.tiles; t += gridDim.x) {
    const int64_t r = t / a.tiles_per_row;
    const int64_t t0 = (t - r * a.tiles_per_row) * kWide;
    const int64_t len = row_len(a, r);
    float* out = a.out + r * a.M;
    if (t0 >= len) {  // block-uniform
      if (t0 + tid < a.M) out[t0 + tid] = 0.f;
      continue;
    }
    const float* in = a.in + r * a.M;
    auto x = [&](int64_t g) { return (g >= 0 && g < len) ? Op::load(__ldg(in + g)) : Op::identity(); };
    T s = tid < kWide - 1 ? x(t0 - h + tid) : Op::identity();
    T p = tid < kWide - 1 ? x(t0 - h + K + tid) : Op::identity();
    // The core, clipped to the real entries (padding is the identity).
    T c = Op::identity();
    {
      const int64_t lo = max(t0 - h + kWide - 1, int64_t{0});
      const int64_t hi = min(t0 - h + K, len);
      for (int64_t g = lo + tid; g < hi; g += kWide) c = Op::op(c, Op::load(__ldg(in + g)));
    }
    // Warp level: the lanes' parts.
    warp_scan_parts<Op>(s, p, c, lane);
    if (lane == 0) suf_warp[warp] = s;
    if (lane == 31) pre_warp[warp] = p;
    if (lane == 0) core_warp[warp] = c;
    // p becomes exclusive: the prefix before this lane within its warp.
    {
      const T pu = __shfl_up_sync(0xffffffffu, p, 1);
      p = lane == 0 ? Op::identity() : pu;
    }
    __syncthreads();
    if (warp == 0) {
      T ws = lane < kWarps ? suf_warp[lane] : Op::identity();
      T wp = lane < kWarps ? pre_warp[lane] : Op::identity();
      T wc = lane < kWarps ? core_warp[lane] : Op::identity();
      // Block level: the warps' totals, scanned by warp 0.
      warp_scan_parts<Op>(ws, wp, wc, lane);
      // Exclusive across warps: what lies after warp `lane`, and before it.
      const T after = __shfl_down_sync(0xffffffffu, ws, 1);
      const T before = __shfl_up_sync(0xffffffffu, wp, 1);
      if (lane < kWarps) {
        suf_after[lane] = lane + 1 < kWarps ? after : Op::identity();
        pre_before[lane] = lane == 0 ? Op::identity() : before;
      }
      if (lane == 0) core_all = wc;
    }
    __syncthreads();
    s = Op::op(s, suf_after[warp]);
    p = Op::op(pre_before[warp], p);
    const T res = Op::op(Op::op(s, core_all), p);
    const int64_t j = t0 + tid;
    if (j < a.M) out[j] = j < len ? Op::finish(res, K) : 0.f;
    __syncthreads();  // the shared partials are read before the next tile rewrites them
  }
}

template <typename Op>
cudaError_t launch_pool(PoolArgs a, cudaStream_t stream) {
  if (a.K <= kTileMaxK) {
    const int K = static_cast<int>(a.K);
    a.tiles_per_row = (a.M + kTile - 1) / kTile;
    a.tiles = a.tiles_per_row * a.R;
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>(a.tiles, kMaxGrid));
    const size_t smem = sizeof(float) * skewed_words(kTile + K - 1 + kSpare);
    if (K <= kV) return launch(pool_tile_kernel<Op, kV>, dim3(grid), dim3(kThreads), smem, stream, a);
    if (K <= kDirectMaxK) return launch(pool_tile_kernel<Op, kDirectMaxK>, dim3(grid), dim3(kThreads), smem, stream, a);
    return launch(pool_tile_kernel<Op, 0>, dim3(grid), dim3(kThreads), smem, stream, a);
  } else {
    a.tiles_per_row = (a.M + kWide - 1) / kWide;
    a.tiles = a.tiles_per_row * a.R;
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>(a.tiles, kMaxGrid));
    return launch(pool_wide_kernel<Op>, dim3(grid), dim3(kWide), 0, stream, a);
  }
}

}  // namespace

cudaError_t pool1d(const PoolParams& p, cudaStream_t stream) {
  if (p.R <= 0 || p.M <= 0) return cudaSuccess;
  if (p.in == nullptr || p.out == nullptr) return cudaErrorInvalidValue;
  PoolArgs a;
  a.in = p.in;
  a.out = p.out;
  a.R = p.R;
  a.M = p.M;
  a.K = std::max<int32_t>(p.kernel, 1);  // as the CPU backend: a kernel below 1 pools nothing
  a.lengths = p.lengths;
  a.rows_per_batch = p.rows_per_batch;
  a.tiles_per_row = a.tiles = 0;
  switch (p.kind) {
    case PoolKind::Avg: return launch_pool<SumOp>(a, stream);
    case PoolKind::Max: return launch_pool<MaxOp>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace kvsift::cuda
