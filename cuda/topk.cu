// kvsift/cuda/topk.cu: batched per-row top-k (TopkParams, common/params.h) by radix select.
//
// Every float maps to an order-preserving uint32 key (NaN lowest, -0 == +0). Three radix passes
// over the key digits (11 + 11 + 10 bits, most significant first) find the k-th largest key T
// and how many keys equal to T are taken; a final ordered scan over positions then writes every
// key > T and the lowest-positioned keys == T, which is the tie rule and gives Position order
// without a sort. Score order adds one sort of the k chosen by (key desc, position asc).
//
// Launches: one memset of the per-row state, three pass kernels, the collect kernel, and the
// score sort for TopkOrder::Score. Few long rows would leave most SMs idle with one block per row,
// so a row is split into up to kMaxBlocksPerRow contiguous chunks, one block each: blocks add
// their shared-memory histograms into the row's global histogram and the last block to arrive
// (atomic counter) picks the digit for the whole row. Every count is an integer sum, so the
// result does not depend on block scheduling.
#include "common.cuh"

#include <cstddef>
#include <cstdint>

#include "block_scan.cuh"
#include "launchers.h"

namespace kvsift::cuda {
namespace {

constexpr int kThreads = 512;                 // pass and collect blocks
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 2048;                   // widest digit (11 bits)
constexpr int kLastBins = 1024;               // last digit (10 bits)
constexpr int kTile = kThreads * 4;           // collect: entries per block-wide scan
constexpr int kMaxBlocksPerRow = 32;          // collect sums chunk offsets with one warp
constexpr int64_t kMinChunk = 4096;           // below this a block's fixed cost outweighs the split
constexpr int64_t kTargetBlocks = 264;        // about two blocks per SM on the largest parts
constexpr int kSortThreads = 512;
constexpr int kSmemSortMax = 4096;            // 32 KB of 64-bit sort keys fits every target
constexpr int kChunkStride = kLastBins + 4;   // ge[0..1024], above, padding (uint32 words)
constexpr size_t kAlign = 256;

// Per-row state carried between the pass kernels. The launcher zeroes it, which is exactly the
// state before pass 0 (no bits fixed, nothing taken yet, no block arrived).
struct RowState {
  uint32_t prefix;   // key bits fixed by the passes so far (lower bits zero)
  uint32_t above;    // entries of the row whose key is above every key with this prefix
  uint32_t arrived;  // blocks of the running pass that have flushed their histogram
  uint32_t pad;
};

// The caller's problem (rows_per_batch made >= 1), plus this launch's workspace and derived sizes.
struct TopkArgs : TopkParams {
  RowState* state;              // [R]
  uint32_t* ghist;              // [R][kBins], only when bpr > 1
  uint32_t* chunks;             // [R][bpr][kChunkStride], only when bpr > 1
  unsigned long long* sort_buf; // [R][n2], only for score sorts too large for shared memory
  int32_t bpr;                  // blocks per row
  int32_t n2;                   // k rounded up to a power of two (score sort)
  int32_t vec4;                 // rows are 16-byte aligned: float4 loads
};

// NaN (any payload, either sign) -> 0, below -inf (0x007fffff); -0 is folded into +0 so the two
// tie and the lower position wins; every other float keeps its IEEE order.
__device__ __forceinline__ uint32_t rank_key(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0u;
  if (u == 0x80000000u) u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ int64_t row_len(const TopkArgs& a, int64_t r) {
  int64_t len = a.M;
  if (a.lengths != nullptr) len = a.lengths[r / a.rows_per_batch];
  return len < 0 ? 0 : (len > a.M ? a.M : len);
}

// k <= len is the caller's promise; should it break, the row takes all len entries and the slots
// it cannot fill get -1 (as the CPU backend), which a later gather reports as out of range.
__device__ __forceinline__ int64_t row_k(const TopkArgs& a, int64_t len) {
  return a.k < len ? a.k : len;
}

// Chunk c of a row split into bpr pieces; starts stay multiples of 4 so float4 loads stay aligned.
__device__ __forceinline__ void chunk_range(int64_t len, int bpr, int c, int64_t* lo,
                                            int64_t* hi) {
  int64_t chunk = (len + bpr - 1) / bpr;
  chunk = (chunk + 3) & ~int64_t{3};
  int64_t l = static_cast<int64_t>(c) * chunk;
  l = l < len ? l : len;
  int64_t h = l + chunk;
  *lo = l;
  *hi = h < len ? h : len;
}

// Visits the keys of row[lo, hi) in no particular order (histograms do not care).
template <typename F>
__device__ __forceinline__ void for_each_key(const float* __restrict__ row, int64_t lo,
                                             int64_t hi, bool vec4, F&& f) {
  if (vec4) {
    for (int64_t j = lo + 4 * static_cast<int64_t>(threadIdx.x); j < hi; j += 4 * kThreads) {
      if (j + 4 <= hi) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(row + j));
        f(rank_key(v.x));
        f(rank_key(v.y));
        f(rank_key(v.z));
        f(rank_key(v.w));
      } else {
        for (int64_t t = j; t < hi; ++t) f(rank_key(__ldg(row + t)));
      }
    }
  } else {
    for (int64_t j = lo + threadIdx.x; j < hi; j += kThreads) f(rank_key(__ldg(row + j)));
  }
}

// The bins of a histogram walked from the top, split over the block: thread t holds the kNumBins /
// kThreads consecutive bins bin_from_top<kNumBins>(0..), the highest first.
template <int kNumBins>
__device__ __forceinline__ unsigned bin_from_top(int j) {
  return kNumBins - 1 - (threadIdx.x * (kNumBins / kThreads) + j);
}

// Loads this thread's bins (v[j] = hist[bin_from_top(j)]) and returns how many keys lie in the
// bins above them. Block-wide, synchronizes.
template <int kNumBins>
__device__ __forceinline__ uint32_t load_bins_from_top(const uint32_t* hist, uint32_t* tmp,
                                                       uint32_t (&v)[kNumBins / kThreads]) {
  static_assert(kNumBins % kThreads == 0, "bins must split evenly over the block");
  uint32_t sum = 0;
#pragma unroll
  for (int j = 0; j < kNumBins / kThreads; ++j) {
    v[j] = hist[bin_from_top<kNumBins>(j)];
    sum += v[j];
  }
  uint32_t total;
  return block_exclusive_sum<kThreads>(sum, tmp, &total);
}

// Finds the digit d whose bin holds the k_rem-th largest key among hist's keys (bins walked from
// the top); *d_above gets how many keys sit in the bins above d. Block-wide, synchronizes.
template <int kNumBins>
__device__ __forceinline__ void select_digit(const uint32_t* hist, uint32_t k_rem, uint32_t* tmp,
                                             uint32_t* s_digit, uint32_t* s_digit_above) {
  uint32_t v[kNumBins / kThreads];
  uint32_t before = load_bins_from_top<kNumBins>(hist, tmp, v);
#pragma unroll
  for (int j = 0; j < kNumBins / kThreads; ++j) {
    // The intervals (before, before + v] tile (0, total]: exactly one thread matches.
    if (before < k_rem && k_rem <= before + v[j]) {
      *s_digit = bin_from_top<kNumBins>(j);
      *s_digit_above = before;
    }
    before += v[j];
  }
  __syncthreads();
}

// ge[bin] = number of this block's keys in bins >= bin, so the collect kernel can read the
// block's counts above and equal to any final digit with two loads.
__device__ __forceinline__ void write_suffix_sums(const uint32_t* hist, uint32_t* tmp,
                                                  uint32_t* ge) {
  uint32_t v[kLastBins / kThreads];
  uint32_t run = load_bins_from_top<kLastBins>(hist, tmp, v);
#pragma unroll
  for (int j = 0; j < kLastBins / kThreads; ++j) {
    run += v[j];
    ge[bin_from_top<kLastBins>(j)] = run;
  }
}

template <int kPass>
__global__ void __launch_bounds__(kThreads) radix_pass_kernel(TopkArgs a) {
  constexpr int kShift = kPass == 0 ? 21 : (kPass == 1 ? 10 : 0);
  constexpr int kNumBins = kPass == 2 ? kLastBins : kBins;
  constexpr uint32_t kHiMask = kPass == 0 ? 0u : (kPass == 1 ? 0xffe00000u : 0xfffffc00u);
  KVSIFT_SHARED(hist, uint32_t[kNumBins]);
  KVSIFT_SHARED(tmp, uint32_t[kWarps + 1]);
  KVSIFT_SHARED(s_above, uint32_t);
  KVSIFT_SHARED(s_last, uint32_t);
  KVSIFT_SHARED(s_digit, uint32_t);
  KVSIFT_SHARED(s_digit_above, uint32_t);

  const int64_t r = blockIdx.x / a.bpr;
  const int c = static_cast<int>(blockIdx.x % a.bpr);
  const int tid = threadIdx.x;
  for (int i = tid; i < kNumBins; i += kThreads) hist[i] = 0u;
  if (tid == 0) {
    s_above = 0u;
    s_digit = 0u;  // only kept if k_rem exceeds the row (no bin matches); stays in bounds
    s_digit_above = 0u;
  }
  const uint32_t prefix = a.state[r].prefix;
  const uint32_t above = a.state[r].above;
  __syncthreads();

  const int64_t len = row_len(a, r);
  int64_t lo, hi;
  chunk_range(len, a.bpr, c, &lo, &hi);
  uint32_t my_above = 0;
  for_each_key(a.in + r * a.M, lo, hi, a.vec4 != 0, [&](uint32_t key) {
    const uint32_t top = key & kHiMask;
    if (top == prefix) {
      atomicAdd(&hist[(key >> kShift) & (kNumBins - 1)], 1u);
    } else if (kPass == 2 && top > prefix) {
      ++my_above;
    }
  });
  if (kPass == 2 && my_above != 0u) atomicAdd(&s_above, my_above);
  __syncthreads();

  if (a.bpr > 1) {
    uint32_t* g = a.ghist + r * kBins;
    for (int i = tid; i < kNumBins; i += kThreads) {
      if (hist[i] != 0u) atomicAdd(&g[i], hist[i]);
    }
    if (kPass == 2) {
      uint32_t* cd = a.chunks + (r * a.bpr + c) * kChunkStride;
      write_suffix_sums(hist, tmp, cd);
      if (tid == 0) {
        cd[kLastBins] = 0u;
        cd[kLastBins + 1] = s_above;
      }
    }
    // Release this block's counts before announcing it, so the last block sees every count.
    __threadfence();
    __syncthreads();
    if (tid == 0) s_last = atomicAdd(&a.state[r].arrived, 1u) == static_cast<uint32_t>(a.bpr - 1);
    __syncthreads();
    if (!s_last) return;  // uniform over the block
    __threadfence();
    for (int i = tid; i < kNumBins; i += kThreads) {
      hist[i] = __ldcg(&g[i]);  // L2: other blocks' atomics never went through this L1
      if (kPass < 2) g[i] = 0u;  // ready for the next pass
    }
    if (tid == 0) a.state[r].arrived = 0u;
    __syncthreads();
  }

  const uint32_t k_rem = static_cast<uint32_t>(row_k(a, len)) - above;
  select_digit<kNumBins>(hist, k_rem, tmp, &s_digit, &s_digit_above);
  if (tid == 0) {
    a.state[r].prefix = prefix | (s_digit << kShift);
    a.state[r].above = above + s_digit_above;
  }
}

// Writes the chosen positions of chunk c in ascending order. With T the k-th largest key and
// n_eq = k - #(key > T) the number of keys == T taken, the entry at position j is chosen iff
// key > T, or key == T with fewer than n_eq keys == T before it; its output slot is
// #(key > T before j) + min(#(key == T before j), n_eq). Chunk offsets come from pass 2's
// per-chunk suffix sums; inside the chunk a block-wide scan in position order counts the rest.
__global__ void __launch_bounds__(kThreads) collect_kernel(TopkArgs a) {
  KVSIFT_SHARED(tmp, uint32_t[kWarps + 1]);
  KVSIFT_SHARED(s_gt_before, long long);
  KVSIFT_SHARED(s_eq_before, long long);
  KVSIFT_SHARED(s_target, long long);

  const int64_t r = blockIdx.x / a.bpr;
  const int c = static_cast<int>(blockIdx.x % a.bpr);
  const int tid = threadIdx.x;
  const uint32_t T = a.state[r].prefix;
  const int64_t len = row_len(a, r);
  const int64_t k = row_k(a, len);
  int64_t n_eq = k - static_cast<int64_t>(a.state[r].above);
  n_eq = n_eq < 0 ? 0 : n_eq;

  if (tid < 32) {
    uint32_t gt = 0u, eq = 0u;
    if (a.bpr > 1 && tid < a.bpr) {
      const uint32_t* cd = a.chunks + (r * a.bpr + tid) * kChunkStride;
      const uint32_t d = T & (kLastBins - 1);
      const uint32_t ge_d = cd[d], ge_next = cd[d + 1];
      gt = cd[kLastBins + 1] + ge_next;
      eq = ge_d - ge_next;
    }
    uint32_t gt_b = tid < c ? gt : 0u;
    uint32_t eq_b = tid < c ? eq : 0u;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      gt_b += __shfl_xor_sync(0xffffffffu, gt_b, o);
      eq_b += __shfl_xor_sync(0xffffffffu, eq_b, o);
    }
    const uint32_t gt_c = __shfl_sync(0xffffffffu, gt, c & 31);
    const uint32_t eq_c = __shfl_sync(0xffffffffu, eq, c & 31);
    if (tid == 0) {
      s_gt_before = gt_b;
      s_eq_before = eq_b;
      if (a.bpr > 1) {
        int64_t quota = n_eq - static_cast<int64_t>(eq_b);
        quota = quota < 0 ? 0 : (quota > eq_c ? eq_c : quota);
        s_target = static_cast<int64_t>(gt_c) + quota;
      } else {
        s_target = k;
      }
    }
  }
  __syncthreads();
  const int64_t gt_before = s_gt_before;
  const int64_t eq_before = s_eq_before;
  const int64_t target = s_target;
  int64_t eq_quota = n_eq - eq_before;  // keys == T this chunk may still take
  eq_quota = eq_quota < 0 ? 0 : eq_quota;

  int64_t lo, hi;
  chunk_range(len, a.bpr, c, &lo, &hi);
  const float* __restrict__ row = a.in + r * a.M;
  int32_t* __restrict__ out_row = a.out + r * a.out_row_stride;
  if (c == 0) {
    for (int64_t i = k + tid; i < a.k; i += kThreads) out_row[i] = -1;
  }
  int64_t run_gt = 0, run_eq = 0;
  for (int64_t base = lo; base < hi; base += kTile) {
    // Uniform over the block: run_* come from block-wide totals.
    if (run_gt + (run_eq < eq_quota ? run_eq : eq_quota) >= target) break;
    const int64_t j0 = base + 4 * static_cast<int64_t>(tid);
    uint32_t key[4] = {0u, 0u, 0u, 0u};
    bool valid[4] = {false, false, false, false};
    if (a.vec4 != 0 && j0 + 4 <= hi) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(row + j0));
      key[0] = rank_key(v.x);
      key[1] = rank_key(v.y);
      key[2] = rank_key(v.z);
      key[3] = rank_key(v.w);
      valid[0] = valid[1] = valid[2] = valid[3] = true;
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (j0 + q < hi) {
          key[q] = rank_key(__ldg(row + j0 + q));
          valid[q] = true;
        }
      }
    }
    // Two 16-bit counters in one word: a tile holds at most kTile (< 65536) of each.
    uint32_t packed[4];
    uint32_t sum = 0u;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const uint32_t g = valid[q] && key[q] > T ? 1u : 0u;
      const uint32_t e = valid[q] && key[q] == T ? 1u : 0u;
      packed[q] = (g << 16) | e;
      sum += packed[q];
    }
    uint32_t total;
    uint32_t pre = block_exclusive_sum<kThreads>(sum, tmp, &total);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t gt_at = gt_before + run_gt + (pre >> 16);
      const int64_t eq_at = eq_before + run_eq + (pre & 0xffffu);
      const bool chosen = (packed[q] >> 16) != 0u || ((packed[q] & 0xffffu) != 0u && eq_at < n_eq);
      const int64_t slot = gt_at + (eq_at < n_eq ? eq_at : n_eq);
      if (chosen && slot < k) out_row[slot] = static_cast<int32_t>(j0 + q);
      pre += packed[q];
    }
    run_gt += total >> 16;
    run_eq += total & 0xffffu;
  }
}

// Reorders each row's k chosen positions (ascending) by (key desc, position asc): a bitonic sort
// of key << 32 | ~position, descending. Padding is 0, below every real entry (NaN keys are 0 but
// ~position is not). Shared memory up to kSmemSortMax entries, else the row's workspace slice.
__global__ void __launch_bounds__(kSortThreads) score_sort_kernel(TopkArgs a) {
  KVSIFT_SHARED(smem, unsigned long long[kSmemSortMax]);
  const int64_t r = blockIdx.x;
  const int tid = threadIdx.x;
  const int n2 = a.n2;
  unsigned long long* buf = n2 <= kSmemSortMax ? smem : a.sort_buf + r * n2;
  const float* row = a.in + r * a.M;
  int32_t* out_row = a.out + r * a.out_row_stride;
  const int64_t k = row_k(a, row_len(a, r));  // the -1 slots past k stay where they are
  for (int i = tid; i < n2; i += kSortThreads) {
    unsigned long long v = 0ull;
    if (i < k) {
      const int32_t pos = out_row[i];
      // Defensive: collect only writes positions inside the row.
      const uint32_t key = (pos >= 0 && pos < a.M) ? rank_key(row[pos]) : 0u;
      v = (static_cast<unsigned long long>(key) << 32) |
          static_cast<unsigned long long>(~static_cast<uint32_t>(pos));
    }
    buf[i] = v;
  }
  __syncthreads();
  for (uint32_t size = 2; size <= static_cast<uint32_t>(n2); size <<= 1) {
    for (uint32_t stride = size >> 1; stride > 0; stride >>= 1) {
      for (uint32_t i = tid; i < static_cast<uint32_t>(n2 >> 1); i += kSortThreads) {
        const uint32_t lo = 2 * i - (i & (stride - 1));
        const uint32_t hi = lo + stride;
        const bool desc = (lo & size) == 0u;
        const unsigned long long x = buf[lo], y = buf[hi];
        if ((x < y) == desc && x != y) {
          buf[lo] = y;
          buf[hi] = x;
        }
      }
      __syncthreads();
    }
  }
  for (int i = tid; i < k; i += kSortThreads) {
    out_row[i] = static_cast<int32_t>(~static_cast<uint32_t>(buf[i] & 0xffffffffull));
  }
}

int blocks_per_row(const TopkParams& p) {
  if (p.R >= kTargetBlocks) return 1;
  int64_t want = (kTargetBlocks + p.R - 1) / p.R;
  const int64_t by_len = (p.M + kMinChunk - 1) / kMinChunk;
  want = want < by_len ? want : by_len;
  want = want > kMaxBlocksPerRow ? kMaxBlocksPerRow : want;
  return static_cast<int>(want < 1 ? 1 : want);
}

int64_t pow2_at_least(int64_t k) {
  int64_t n = 1;
  while (n < k) n <<= 1;
  return n;
}

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct Layout {
  int bpr;
  int64_t n2;
  size_t state_off, hist_off, chunk_off, sort_off, zero_bytes, total;
};

Layout layout_of(const TopkParams& p) {
  Layout l{};
  l.bpr = blocks_per_row(p);
  l.n2 = pow2_at_least(p.k);
  const size_t R = static_cast<size_t>(p.R);
  size_t off = 0;
  l.state_off = off;
  off = align_up(off + R * sizeof(RowState));
  l.hist_off = off;
  if (l.bpr > 1) off = align_up(off + R * kBins * sizeof(uint32_t));
  l.zero_bytes = off;
  l.chunk_off = off;
  if (l.bpr > 1) {
    off = align_up(off + R * static_cast<size_t>(l.bpr) * kChunkStride * sizeof(uint32_t));
  }
  l.sort_off = off;
  if (p.order == TopkOrder::Score && l.n2 > kSmemSortMax) {
    off = align_up(off + R * static_cast<size_t>(l.n2) * sizeof(unsigned long long));
  }
  l.total = off;
  return l;
}

bool empty_problem(const TopkParams& p) { return p.R <= 0 || p.M <= 0 || p.k <= 0; }

}  // namespace

size_t topk_workspace_bytes(const TopkParams& p) {
  if (empty_problem(p)) return 0;
  return layout_of(p).total;
}

cudaError_t topk(const TopkParams& p, void* workspace, cudaStream_t stream) {
  if (p.k < 0 || p.R < 0 || p.M < 0) return cudaErrorInvalidValue;
  if (empty_problem(p)) return cudaSuccess;
  if (p.in == nullptr || p.out == nullptr) return cudaErrorInvalidValue;
  // Positions are int32; k <= M and room for k per output row are the caller's contract.
  if (p.M > INT32_MAX || p.k > p.M || p.out_row_stride < p.k) return cudaErrorInvalidValue;
  if (p.order != TopkOrder::Position && p.order != TopkOrder::Score) return cudaErrorInvalidValue;
  // The bitonic sort indexes its buffer with int.
  if (p.order == TopkOrder::Score && p.k > (1 << 30)) return cudaErrorInvalidValue;
  if (p.lengths != nullptr && p.rows_per_batch <= 0) return cudaErrorInvalidValue;
  const Layout l = layout_of(p);
  const int64_t blocks = p.R * l.bpr;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  if (workspace == nullptr || reinterpret_cast<uintptr_t>(workspace) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  char* ws = static_cast<char*>(workspace);

  TopkArgs a{};
  static_cast<TopkParams&>(a) = p;
  if (a.rows_per_batch <= 0) a.rows_per_batch = 1;
  a.state = reinterpret_cast<RowState*>(ws + l.state_off);
  a.ghist = l.bpr > 1 ? reinterpret_cast<uint32_t*>(ws + l.hist_off) : nullptr;
  a.chunks = l.bpr > 1 ? reinterpret_cast<uint32_t*>(ws + l.chunk_off) : nullptr;
  a.sort_buf = (p.order == TopkOrder::Score && l.n2 > kSmemSortMax)
                   ? reinterpret_cast<unsigned long long*>(ws + l.sort_off)
                   : nullptr;
  a.bpr = l.bpr;
  a.n2 = static_cast<int32_t>(l.n2 < INT32_MAX ? l.n2 : INT32_MAX);
  a.vec4 = (reinterpret_cast<uintptr_t>(p.in) % 16 == 0 && p.M % 4 == 0) ? 1 : 0;

  cudaError_t err = cudaMemsetAsync(ws, 0, l.zero_bytes, stream);
  if (err != cudaSuccess) return err;
  const unsigned grid = static_cast<unsigned>(blocks);
  if ((err = launch(radix_pass_kernel<0>, dim3(grid), dim3(kThreads), 0, stream, a))) return err;
  if ((err = launch(radix_pass_kernel<1>, dim3(grid), dim3(kThreads), 0, stream, a))) return err;
  if ((err = launch(radix_pass_kernel<2>, dim3(grid), dim3(kThreads), 0, stream, a))) return err;
  if ((err = launch(collect_kernel, dim3(grid), dim3(kThreads), 0, stream, a))) return err;
  if (p.order == TopkOrder::Score && p.k > 1) {
    return launch(score_sort_kernel, dim3(static_cast<unsigned>(p.R)), dim3(kSortThreads), 0, stream, a);
  }
  return cudaSuccess;
}

}  // namespace kvsift::cuda
