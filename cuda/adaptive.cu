// kvsift/cuda/adaptive.cu: head-adaptive selection (AdaptiveSelectParams, common/adaptive.h).
//
// Every token gets the 32-bit ranking key of common/adaptive.h (0 invalid, 1 NaN, the float's
// order-preserving key, 0xffffffff safeguarded), so both selections of the rule are "the k
// largest keys of a segment, ties to the lower index", done by one block per segment:
//   1. keys_kernel       one block per head: keys of its region, window tokens lifted;
//   2. select_kernel     one block per head (only with min_per_head > 0): the min_per_head
//                        largest keys of the head's non-window prefix are lifted;
//   3. select_kernel     one block per batch row: the budget largest keys of the row's storage
//                        (head-major, so ties go to the lower head, then the lower position);
//                        the chosen storage rows go to the workspace, ascending;
//   4. finalize_kernel   storage rows to (head, position) and indptr by binary search.
// Inside a block (256 threads per head, 1024 per batch row) the select is an MSB-first radix select over four 8-bit digits (integer
// shared-memory histograms) that finds the k-th largest key T and how many keys equal to T are
// taken, then one ordered scan emits every key > T and the first keys == T: the same rule as the
// CPU's nth_element + scan, so the two backends agree bit for bit. Deterministic, no host sync,
// the same launches whatever the data.
#include "common.cuh"

#include <cstddef>
#include <cstdint>

#include "adaptive.h"

namespace kvsift::cuda {
namespace {

constexpr int kThreads = 256;      // per-head kernels and the finalize
constexpr int kRowThreads = 1024;  // the row-wide select: one block walks a whole batch row
constexpr size_t kAlign = 256;

// Exclusive prefix sum over a block of kT threads in thread order; *total gets the block's sum.
// Every thread must call it (it synchronizes); tmp needs kT / 32 + 1 words.
template <int kT>
__device__ __forceinline__ uint32_t block_exclusive_sum(uint32_t v, uint32_t* tmp, uint32_t* total) {
  constexpr int kWarps = kT / 32;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  uint32_t x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) tmp[warp] = x;
  __syncthreads();
  if (warp == 0) {
    const uint32_t w = lane < kWarps ? tmp[lane] : 0u;
    uint32_t s = w;
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += y;
    }
    if (lane < kWarps) tmp[lane] = s - w;
    if (lane == 31) tmp[kWarps] = s;
  }
  __syncthreads();
  const uint32_t result = tmp[warp] + x - v;
  *total = tmp[kWarps];
  __syncthreads();  // tmp is free for the next call
  return result;
}

template <int kT>
struct SelectState {
  uint32_t hist[256];
  uint32_t tmp[kT / 32 + 1];
  uint32_t prefix, remaining, valid;
};

// The k largest of keys[0, n) (k clamped to the nonzero keys when count_valid), ties to the
// lower index: take(i, slot) for each chosen i, slot = its rank in index order. Returns k.
template <int kT, typename Take>
__device__ int64_t block_select(const uint32_t* keys, int64_t n, int64_t k, bool count_valid, SelectState<kT>& s, Take&& take) {
  const int tid = threadIdx.x;
  if (tid == 0) {
    s.prefix = 0u;
    s.valid = 0u;
  }
  uint32_t mask = 0u;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int i = tid; i < 256; i += kT) s.hist[i] = 0u;
    __syncthreads();
    const uint32_t prefix = s.prefix;
    uint32_t my_valid = 0u;
    for (int64_t i = tid; i < n; i += kT) {
      const uint32_t key = keys[i];
      if (pass == 0) my_valid += key != 0u ? 1u : 0u;
      if ((key & mask) == prefix) atomicAdd(&s.hist[(key >> shift) & 0xffu], 1u);
    }
    if (pass == 0 && count_valid && my_valid != 0u) atomicAdd(&s.valid, my_valid);
    __syncthreads();
    if (pass == 0) {
      // k is uniform over the block from here on.
      if (count_valid) k = k < static_cast<int64_t>(s.valid) ? k : static_cast<int64_t>(s.valid);
      k = k < n ? k : n;
      if (k <= 0) return 0;
      if (tid == 0) s.remaining = static_cast<uint32_t>(k);
    }
    __syncthreads();
    if (tid == 0) {
      // Walk the bins from the top: the digit whose bin holds the remaining-th largest key.
      uint32_t cum = 0u, rem = s.remaining, digit = 0u;
      for (int d = 255; d >= 0; --d) {
        if (cum + s.hist[d] >= rem) {
          digit = static_cast<uint32_t>(d);
          break;
        }
        cum += s.hist[d];
      }
      s.remaining = rem - cum;
      s.prefix = prefix | (digit << shift);
    }
    mask |= 0xffu << shift;
    __syncthreads();
  }
  const uint32_t T = s.prefix;
  const int64_t need = s.remaining;  // keys equal to T taken, lowest indices first
  __syncthreads();
  int64_t gt_run = 0, eq_run = 0;
  for (int64_t base = 0; base < n; base += kT) {
    if (gt_run + (eq_run < need ? eq_run : need) >= k) break;  // uniform: block totals
    const int64_t i = base + tid;
    const uint32_t key = i < n ? keys[i] : 0u;
    const uint32_t gt = (i < n && key > T) ? 1u : 0u;
    const uint32_t eq = (i < n && key == T) ? 1u : 0u;
    uint32_t total;
    // Two 16-bit counters in one word: a tile holds at most kT of each.
    const uint32_t pre = block_exclusive_sum<kT>((gt << 16) | eq, s.tmp, &total);
    const int64_t gt_at = gt_run + (pre >> 16);
    const int64_t eq_at = eq_run + (pre & 0xffffu);
    if (gt != 0u || (eq != 0u && eq_at < need)) take(i, gt_at + (eq_at < need ? eq_at : need));
    gt_run += total >> 16;
    eq_run += total & 0xffffu;
  }
  return k;
}

struct AdaptiveArgs {
  AdaptiveSelectParams p;
  uint32_t* keys;   // [rows]
  int32_t* chosen;  // [B * budget] storage rows, ascending per batch row
  int32_t* count;   // [B]
};

__global__ void __launch_bounds__(kThreads) keys_kernel(AdaptiveArgs a) {
  const int64_t bh = blockIdx.x;
  const HeadRange r = adaptive_head(a.p, bh);
  const int64_t w = a.p.window < r.len ? a.p.window : r.len;
  const int64_t prefix = r.len - w;
  for (int64_t i = threadIdx.x; i < r.cap; i += kThreads) {
    uint32_t key = kAdaptiveInvalid;
    if (i < prefix) key = adaptive_key_bits(__float_as_uint(a.p.scores[r.start + i]));
    else if (i < r.len) key = kAdaptiveLifted;
    a.keys[r.start + i] = key;
  }
}

__global__ void __launch_bounds__(kThreads) safeguard_kernel(AdaptiveArgs a) {
  KVSIFT_SHARED(s, SelectState<kThreads>);
  const int64_t bh = blockIdx.x;
  const HeadRange r = adaptive_head(a.p, bh);
  const int64_t w = a.p.window < r.len ? a.p.window : r.len;
  const int64_t prefix = r.len - w;
  uint32_t* keys = a.keys + r.start;
  // Each chosen key is read and then lifted by the same thread, once: no other thread reads it.
  block_select(keys, prefix, a.p.min_per_head, false, s, [&](int64_t i, int64_t) { keys[i] = kAdaptiveLifted; });
}

__global__ void __launch_bounds__(kRowThreads) row_select_kernel(AdaptiveArgs a) {
  KVSIFT_SHARED(s, SelectState<kRowThreads>);
  const int64_t b = blockIdx.x;
  const int64_t H = a.p.heads.H;
  const int64_t row0 = adaptive_head(a.p, b * H).start;
  const HeadRange last = adaptive_head(a.p, b * H + H - 1);
  const int64_t row1 = last.start + last.cap > row0 ? last.start + last.cap : row0;
  int32_t* out = a.chosen + b * a.p.budget;
  const int64_t k = block_select(a.keys + row0, row1 - row0, a.p.budget, true, s,
                                 [&](int64_t i, int64_t slot) { out[slot] = static_cast<int32_t>(row0 + i); });
  if (threadIdx.x == 0) a.count[b] = static_cast<int32_t>(k);
}

// One thread per output slot (b, s) and per indptr entry.
__global__ void finalize_kernel(AdaptiveArgs a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t B = a.p.heads.B, H = a.p.heads.H, budget = a.p.budget;
  if (idx < B * budget) {
    const int64_t b = idx / budget, s = idx % budget;
    int32_t pos = -1;
    if (s < a.count[b]) {
      const int64_t row = a.chosen[idx];
      // The last head of the row whose region starts at or before the row.
      int64_t lo = 0, hi = H - 1;
      while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (adaptive_head(a.p, b * H + mid).start <= row) lo = mid;
        else hi = mid - 1;
      }
      pos = static_cast<int32_t>(row - adaptive_head(a.p, b * H + lo).start);
    }
    a.p.positions[idx] = pos;
  } else if (idx < B * budget + B * H) {
    const int64_t bh = idx - B * budget, b = bh / H;
    const int64_t start = adaptive_head(a.p, bh).start;
    const int32_t* rows = a.chosen + b * budget;
    int64_t lo = 0, hi = a.count[b];  // first chosen row >= start
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (rows[mid] < start) lo = mid + 1;
      else hi = mid;
    }
    a.p.indptr[bh] = static_cast<int32_t>(b * budget + lo);
  } else if (idx == B * budget + B * H) {
    a.p.indptr[B * H] = static_cast<int32_t>(B * budget);
  }
}

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

int64_t storage_rows(const AdaptiveSelectParams& p) {
  return p.heads.indptr != nullptr ? p.heads.rows : int64_t{p.heads.B} * p.heads.H * p.N;
}

}  // namespace

size_t adaptive_select_workspace_bytes(const AdaptiveSelectParams& p) {
  if (p.heads.B <= 0 || p.heads.H <= 0) return 0;
  return align_up(static_cast<size_t>(storage_rows(p)) * 4) + align_up(static_cast<size_t>(p.heads.B) * p.budget * 4) +
         align_up(static_cast<size_t>(p.heads.B) * 4);
}

cudaError_t adaptive_select(const AdaptiveSelectParams& p, void* workspace, cudaStream_t stream) {
  const int64_t B = p.heads.B, H = p.heads.H;
  if (B <= 0 || H <= 0) return cudaSuccess;
  if (p.budget <= 0 || p.min_per_head < 0 || p.window < 0 || p.scores == nullptr || p.positions == nullptr ||
      p.indptr == nullptr || workspace == nullptr) {
    return cudaErrorInvalidValue;
  }
  const int64_t rows = storage_rows(p);
  if (rows >= (int64_t{1} << 31) || B * p.budget >= (int64_t{1} << 31) || B * H >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  char* ws = static_cast<char*>(workspace);
  AdaptiveArgs a{};
  a.p = p;
  a.keys = reinterpret_cast<uint32_t*>(ws);
  ws += align_up(static_cast<size_t>(rows) * 4);
  a.chosen = reinterpret_cast<int32_t*>(ws);
  ws += align_up(static_cast<size_t>(B) * p.budget * 4);
  a.count = reinterpret_cast<int32_t*>(ws);
  const dim3 heads(static_cast<unsigned>(B * H));
  cudaError_t err = launch(keys_kernel, heads, dim3(kThreads), 0, stream, a);
  if (err != cudaSuccess) return err;
  if (p.min_per_head > 0) {
    err = launch(safeguard_kernel, heads, dim3(kThreads), 0, stream, a);
    if (err != cudaSuccess) return err;
  }
  err = launch(row_select_kernel, dim3(static_cast<unsigned>(B)), dim3(kRowThreads), 0, stream, a);
  if (err != cudaSuccess) return err;
  const int64_t items = B * p.budget + B * H + 1;
  return launch(finalize_kernel, dim3(static_cast<unsigned>((items + kThreads - 1) / kThreads)), dim3(kThreads), 0, stream, a);
}

}  // namespace kvsift::cuda
