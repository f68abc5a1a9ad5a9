// kvsift/cuda/ragged.cu: the ragged per-head cache (common/ragged.h) on CUDA: gather into
// ragged storage, append, Keyformer/H2O accumulation over each head's live keys, TOVA's layer
// score by original position, gap zeroing. Twin of cpp/cpu/ragged.cc.
//
// The accumulation is two launches: row_stats_kernel gives every query row (b, hq, t) its
// softmax max and sum over its head's visible keys (block-wide fixed-order reductions), then
// colsum_kernel gives every storage row (one thread each) the sum over the group's rows, in
// (g, t) order, of exp(l - m) / s, added once into the scores. The logits are recomputed in the
// second launch instead of stored; both launches compute them the same way, and the noise is
// philox_gumbel of the token's original position, so it is the dense op's noise bit for bit.
#include "common.cuh"

#include <cstddef>
#include <cstdint>

#include "../common/philox.h"
#include "ragged.h"

namespace kvsift::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kStatThreads = 128;

__device__ __forceinline__ float load_f32(const void* data, int64_t i, DType t) {
  if (t == DType::F32) return static_cast<const float*>(data)[i];
  const unsigned short u = static_cast<const unsigned short*>(data)[i];
  if (t == DType::BF16) return __uint_as_float(static_cast<uint32_t>(u) << 16);
  return __half2float(__ushort_as_half(u));
}

// Copies `bytes` bytes (a row) with 4-byte words when both ends allow it.
__device__ __forceinline__ void copy_row(unsigned char* dst, const unsigned char* src, int64_t bytes, int lane, int lanes) {
  if ((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | static_cast<uintptr_t>(bytes)) % 4 == 0) {
    for (int64_t w = lane; w < bytes / 4; w += lanes) reinterpret_cast<uint32_t*>(dst)[w] = reinterpret_cast<const uint32_t*>(src)[w];
  } else {
    for (int64_t c = lane; c < bytes; c += lanes) dst[c] = src[c];
  }
}

__device__ __forceinline__ void zero_row(unsigned char* dst, int64_t bytes, int lane, int lanes) {
  for (int64_t c = lane; c < bytes; c += lanes) dst[c] = 0;
}

__device__ __forceinline__ void sel_range(const RaggedGatherParams& p, int64_t bh, int64_t* e0, int64_t* e1) {
  int64_t s = p.sel_indptr[bh], e = p.sel_indptr[bh + 1];
  s = s < 0 ? 0 : (s > p.sel_total ? p.sel_total : s);
  e = e < s ? s : (e > p.sel_total ? p.sel_total : e);
  *e0 = s;
  *e1 = e;
}

// One block per head: a warp per kept row.
__global__ void __launch_bounds__(kThreads) gather_kernel(RaggedGatherParams p, int64_t es) {
  const int64_t bh = blockIdx.x;
  const int64_t H = p.H, b = bh / H, h = bh % H;
  const int64_t row_bytes = static_cast<int64_t>(p.D) * es;
  const bool dense = p.src_heads.indptr == nullptr;
  int64_t e0, e1;
  sel_range(p, bh, &e0, &e1);
  const int64_t out0 = e0 + bh * p.reserve;
  HeadRange sr{0, 0, 0};
  if (!dense) sr = head_range(p.src_heads, bh);
  const int64_t limit = dense ? p.N : sr.len;
  const unsigned char* src = static_cast<const unsigned char*>(p.src.data);
  unsigned char* out = static_cast<unsigned char*>(p.out);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = kThreads / 32;
  for (int64_t e = e0 + warp; e < e1 + p.reserve; e += warps) {
    unsigned char* dst = out + (out0 + (e - e0)) * row_bytes;
    if (e >= e1) {  // the head's room
      zero_row(dst, row_bytes, lane, 32);
      continue;
    }
    const int64_t pos = p.sel_positions != nullptr ? p.sel_positions[e] : e - e0;
    if (pos < 0 || pos >= limit) {  // never read out of bounds: a zero row
      zero_row(dst, row_bytes, lane, 32);
      continue;
    }
    const unsigned char* s = dense ? src + (b * p.src.sB + h * p.src.sH + pos * p.src.sS) * es : src + (sr.start + pos) * row_bytes;
    copy_row(dst, s, row_bytes, lane, 32);
  }
}

__global__ void gather_layout_kernel(RaggedGatherParams p) {
  const int64_t bh = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t BH = static_cast<int64_t>(p.B) * p.H;
  if (bh > BH) return;
  int64_t e0, e1;
  sel_range(p, bh < BH ? bh : BH - 1, &e0, &e1);
  if (bh == BH) e0 = e1;
  if (p.out_indptr != nullptr) p.out_indptr[bh] = static_cast<int32_t>(e0 + bh * p.reserve);
  if (p.out_lens != nullptr && bh < BH) p.out_lens[bh] = static_cast<int32_t>(e1 - e0);
}

// One block per head. lens[bh] is read by every thread before thread 0 updates it.
__global__ void __launch_bounds__(kThreads) append_kernel(RaggedAppendParams p, int64_t es) {
  const int64_t bh = blockIdx.x;
  const int64_t H = p.H, b = bh / H, h = bh % H;
  const HeadRange r = head_range(p.heads, bh);
  const int64_t room = r.cap - r.len;
  const int64_t n = p.T < room ? p.T : room;
  const int64_t row_bytes = static_cast<int64_t>(p.D) * es;
  const unsigned char* src = static_cast<const unsigned char*>(p.src.data);
  unsigned char* dst = static_cast<unsigned char*>(p.dst);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = kThreads / 32;
  for (int64_t t = warp; t < n; t += warps) {
    const int64_t row = r.start + r.len + t;
    copy_row(dst + row * row_bytes, src + (b * p.src.sB + h * p.src.sH + t * p.src.sS) * es, row_bytes, lane, 32);
    if (lane == 0 && p.positions != nullptr) p.positions[row] = (p.pos_base != nullptr ? p.pos_base[b] : 0) + static_cast<int32_t>(t);
  }
  __syncthreads();
  if (threadIdx.x == 0 && p.lens != nullptr) p.lens[bh] = static_cast<int32_t>(r.len + n);
}

// The logit of query row (b, hq, t) against live key i of its head.
__device__ __forceinline__ float logit(const RaggedAccumulateParams& p, int64_t b, int64_t hq, int64_t t, const HeadRange& r,
                                       int64_t i) {
  const int64_t qoff = b * p.q.sB + hq * p.q.sH + t * p.q.sS;
  const int64_t koff = (r.start + i) * p.D;
  float dot = 0.0f;
  for (int64_t d = 0; d < p.D; ++d) dot += load_f32(p.q.data, qoff + d, p.dtype) * load_f32(p.k, koff + d, p.dtype);
  float g = 0.0f;
  if (p.noise == NoiseKind::Gumbel) {
    const int64_t j = p.positions != nullptr ? p.positions[r.start + i] : i;
    g = philox_gumbel(p.seed, p.step, static_cast<uint32_t>(b * p.Hq + hq), static_cast<uint32_t>(t), static_cast<uint32_t>(j));
  }
  return (dot * p.scale + g) / p.tau;
}

__device__ __forceinline__ int64_t visible(const HeadRange& r, int64_t T, int64_t t) {
  const int64_t nv = r.len - T + t + 1;
  return nv < 0 ? 0 : (nv > r.len ? r.len : nv);
}

// Fixed-shape tree reduction over the block (max or sum), the same order every run.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* buf) {
  const int tid = static_cast<int>(threadIdx.x);
  buf[tid] = v;
  __syncthreads();
  for (int w = kStatThreads / 2; w > 0; w >>= 1) {
    if (tid < w) {
      const float a = buf[tid], c = buf[tid + w];
      buf[tid] = kMax ? (c > a ? c : a) : a + c;
    }
    __syncthreads();
  }
  const float out = buf[0];
  __syncthreads();
  return out;
}

// One block per query row (b, hq, t): stats[2 * row] = max, stats[2 * row + 1] = sum.
__global__ void __launch_bounds__(kStatThreads) row_stats_kernel(RaggedAccumulateParams p, float* stats) {
  KVSIFT_SHARED(buf, float[kStatThreads]);
  const int64_t row = blockIdx.x;
  const int64_t t = row % p.T, hq = (row / p.T) % p.Hq, b = row / (static_cast<int64_t>(p.T) * p.Hq);
  const int64_t G = p.Hq / p.Hkv;
  const HeadRange r = head_range(p.heads, b * p.Hkv + hq / G);
  const int64_t nv = visible(r, p.T, t);
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < nv; i += kStatThreads) {
    const float l = logit(p, b, hq, t, r, i);
    m = l > m ? l : m;
  }
  m = block_reduce<true>(m, buf);
  float s = 0.0f;
  if (nv > 0) {
    for (int64_t i = threadIdx.x; i < nv; i += kStatThreads) s += expf(logit(p, b, hq, t, r, i) - m);
  }
  s = block_reduce<false>(s, buf);
  if (threadIdx.x == 0) {
    stats[2 * row] = m;
    stats[2 * row + 1] = s;
  }
}

// One thread per storage row: the sum of its probabilities over the group's rows, added once.
__global__ void __launch_bounds__(kThreads) colsum_kernel(RaggedAccumulateParams p, const float* stats) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (row >= p.heads.rows) return;
  const int64_t BH = static_cast<int64_t>(p.B) * p.Hkv;
  // The last head whose region starts at or before the row, then whether the row is live.
  int64_t lo = 0, hi = BH - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (head_range(p.heads, mid).start <= row) lo = mid;
    else hi = mid - 1;
  }
  const HeadRange r = head_range(p.heads, lo);
  const int64_t i = row - r.start;
  if (i < 0 || i >= r.len) return;
  const int64_t b = lo / p.Hkv, hkv = lo % p.Hkv, G = p.Hq / p.Hkv;
  float acc = 0.0f;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t hq = hkv * G + g;
    for (int64_t t = 0; t < p.T; ++t) {
      if (i >= visible(r, p.T, t)) continue;
      const int64_t q = (b * p.Hq + hq) * p.T + t;
      acc += expf(logit(p, b, hq, t, r, i) - stats[2 * q]) * (1.0f / stats[2 * q + 1]);
    }
  }
  p.scores[row] += acc;
}

__global__ void __launch_bounds__(kThreads) layer_scores_kernel(RaggedLayerScoresParams p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= p.heads.B * static_cast<int64_t>(p.n)) return;
  p.out[idx] = ragged_layer_score(p, idx / p.n, idx % p.n);
}

__global__ void __launch_bounds__(kThreads) zero_gaps_kernel(RaggedZeroGapsParams p) {
  const HeadRange r = head_range(p.heads, blockIdx.x);
  for (int64_t i = r.len + threadIdx.x; i < r.cap; i += kThreads) p.x[r.start + i] = 0.0f;
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

cudaError_t ragged_gather(const RaggedGatherParams& p, cudaStream_t stream) {
  const int64_t BH = static_cast<int64_t>(p.B) * p.H;
  if (BH <= 0) return cudaSuccess;
  if (p.out == nullptr || p.sel_indptr == nullptr || p.D < 0 || p.reserve < 0 || BH >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  cudaError_t err = launch(gather_kernel, dim3(static_cast<unsigned>(BH)), dim3(kThreads), 0, stream, p, dtype_size(p.dtype));
  if (err != cudaSuccess || (p.out_indptr == nullptr && p.out_lens == nullptr)) return err;
  return launch(gather_layout_kernel, dim3(blocks_for(BH + 1, kThreads)), dim3(kThreads), 0, stream, p);
}

cudaError_t ragged_append(const RaggedAppendParams& p, cudaStream_t stream) {
  const int64_t BH = static_cast<int64_t>(p.B) * p.H;
  if (BH <= 0 || p.T <= 0) return cudaSuccess;
  if (p.dst == nullptr || BH >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  return launch(append_kernel, dim3(static_cast<unsigned>(BH)), dim3(kThreads), 0, stream, p, dtype_size(p.dtype));
}

size_t ragged_accumulate_workspace_bytes(const RaggedAccumulateParams& p) {
  if (p.B <= 0 || p.Hq <= 0 || p.T <= 0) return 0;
  return static_cast<size_t>(p.B) * p.Hq * p.T * 2 * sizeof(float);
}

cudaError_t ragged_accumulate(const RaggedAccumulateParams& p, void* workspace, cudaStream_t stream) {
  if (p.B <= 0 || p.Hq <= 0 || p.Hkv <= 0 || p.T <= 0 || p.D <= 0 || p.heads.rows <= 0) return cudaSuccess;
  if (p.Hq % p.Hkv != 0 || workspace == nullptr || p.scores == nullptr) return cudaErrorInvalidValue;
  const int64_t rows = static_cast<int64_t>(p.B) * p.Hq * p.T;
  if (rows >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  float* stats = static_cast<float*>(workspace);
  cudaError_t err = launch(row_stats_kernel, dim3(static_cast<unsigned>(rows)), dim3(kStatThreads), 0, stream, p, stats);
  if (err != cudaSuccess) return err;
  return launch(colsum_kernel, dim3(blocks_for(p.heads.rows, kThreads)), dim3(kThreads), 0, stream, p,
                static_cast<const float*>(stats));
}

cudaError_t ragged_layer_scores(const RaggedLayerScoresParams& p, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(p.heads.B) * p.n;
  if (total <= 0) return cudaSuccess;
  if (p.out == nullptr || p.per_head == nullptr) return cudaErrorInvalidValue;
  return launch(layer_scores_kernel, dim3(blocks_for(total, kThreads)), dim3(kThreads), 0, stream, p);
}

cudaError_t ragged_zero_gaps(const RaggedZeroGapsParams& p, cudaStream_t stream) {
  const int64_t BH = static_cast<int64_t>(p.heads.B) * p.heads.H;
  if (BH <= 0) return cudaSuccess;
  if (p.x == nullptr) return cudaErrorInvalidValue;
  return launch(zero_gaps_kernel, dim3(static_cast<unsigned>(BH)), dim3(kThreads), 0, stream, p);
}

}  // namespace kvsift::cuda
