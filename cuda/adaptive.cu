// kvsift/cuda/adaptive.cu: head-adaptive selection (AdaptiveSelectParams, common/adaptive.h).
//
// Every token gets the 32-bit ranking key of common/adaptive.h (0 invalid, 1 NaN, the float's
// order-preserving key, 0xffffffff safeguarded), so both selections of the rule are "the k
// largest keys of a segment, ties to the lower index":
//   1. keys_kernel          one block per head: keys of its region, window tokens lifted;
//   2. safeguard_kernel     one block per head (only with min_per_head > 0): the min_per_head
//                           largest keys of the head's non-window prefix are lifted;
//   3. row_pass_kernel x4   the budget largest keys of each batch row's storage (head-major, so
//      row_collect_kernel   ties go to the lower head, then the lower position), P blocks per
//                           row; the chosen storage rows go to the workspace, ascending;
//   4. finalize_kernel      storage rows to (head, position), and indptr by binary search.
// Both selects are MSB-first radix selects over four 8-bit digits (integer histograms) that find
// the k-th largest key T and how many keys equal to T are taken, then one scan in index order
// emits every key > T and the first keys == T: the CPU's rule, so the backends agree bit for
// bit. The per-head one runs in one block; the row-wide one splits a row into up to 32 chunks
// (one block each, as topk does) whose histograms meet in a global one, the last block of a pass
// picking the digit. Deterministic, no host synchronization, the same launches for any data.
#include "common.cuh"

#include <cstddef>
#include <cstdint>

#include "adaptive.h"
#include "block_scan.cuh"

namespace kvsift::cuda {
namespace {

constexpr int kThreads = 256;      // per-head kernels and the finalize
constexpr int kRowThreads = 1024;  // the row-wide select: one block walks a whole batch row
constexpr size_t kAlign = 256;

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

// Per batch row, carried between the row-wide pass kernels. Zeroed by the launcher, which is
// exactly the state before pass 0.
struct RowState {
  uint32_t prefix;     // key bits fixed by the passes so far
  uint32_t remaining;  // rank of the k-th largest among the keys that share the prefix
  uint32_t valid;      // nonzero keys of the row (pass 0)
  uint32_t arrived;    // blocks of the running pass that have flushed their histogram
  uint32_t k;          // keys the row takes: min(budget, valid)
  uint32_t pad[3];
};

constexpr int kChunkWords = 258;  // per chunk: ge[0..256] of the last digit, then its count above

struct AdaptiveArgs {
  AdaptiveSelectParams p;
  uint32_t* keys;     // [rows]
  int32_t* chosen;    // [B * budget] storage rows, ascending per batch row
  int32_t* count;     // [B]
  RowState* state;    // [B]
  uint32_t* ghist;    // [B][256]
  uint32_t* chunks;   // [B][P][kChunkWords]
  int32_t P;          // blocks per batch row in the row-wide select
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

// Storage rows [row0, row0 + n) of batch row b (head-major), and chunk c of P of them.
__device__ __forceinline__ void row_chunk(const AdaptiveArgs& a, int64_t b, int c, int64_t* row0, int64_t* lo, int64_t* hi) {
  const int64_t H = a.p.heads.H;
  const int64_t r0 = adaptive_head(a.p, b * H).start;
  const HeadRange last = adaptive_head(a.p, b * H + H - 1);
  const int64_t n = last.start + last.cap > r0 ? last.start + last.cap - r0 : 0;
  const int64_t chunk = (n + a.P - 1) / a.P;
  const int64_t l = static_cast<int64_t>(c) * chunk < n ? static_cast<int64_t>(c) * chunk : n;
  *row0 = r0;
  *lo = l;
  *hi = l + chunk < n ? l + chunk : n;
}

// One pass of the row-wide radix select (digit kPass of four 8-bit digits, most significant
// first), P blocks per batch row, each over one contiguous chunk: the block's histogram of the
// keys that share the row's prefix goes into the row's global histogram (integer atomics: the
// counts do not depend on the order), and the last block to arrive picks the digit for the row.
// The last pass also leaves each chunk's counts, which the collect kernel turns into offsets.
template <int kPass>
__global__ void __launch_bounds__(kRowThreads) row_pass_kernel(AdaptiveArgs a) {
  constexpr int kShift = 24 - 8 * kPass;
  constexpr uint32_t kMask = kPass == 0 ? 0u : (0xffffffffu << (32 - 8 * kPass));  // bits fixed so far
  KVSIFT_SHARED(hist, uint32_t[256]);
  KVSIFT_SHARED(misc, uint32_t[4]);  // valid, above, last block
  const int64_t b = blockIdx.x / a.P;
  const int c = static_cast<int>(blockIdx.x % a.P);
  const int tid = threadIdx.x;
  for (int i = tid; i < 256; i += kRowThreads) hist[i] = 0u;
  if (tid < 4) misc[tid] = 0u;
  const uint32_t prefix = a.state[b].prefix;
  __syncthreads();
  int64_t row0, lo, hi;
  row_chunk(a, b, c, &row0, &lo, &hi);
  uint32_t my_valid = 0u, my_above = 0u;
  for (int64_t i = lo + tid; i < hi; i += kRowThreads) {
    const uint32_t key = a.keys[row0 + i];
    if (kPass == 0) my_valid += key != 0u ? 1u : 0u;
    const uint32_t top = key & kMask;
    if (top == prefix) atomicAdd(&hist[(key >> kShift) & 0xffu], 1u);
    else if (kPass == 3 && top > prefix) ++my_above;
  }
  if (kPass == 0 && my_valid != 0u) atomicAdd(&misc[0], my_valid);
  if (kPass == 3 && my_above != 0u) atomicAdd(&misc[1], my_above);
  __syncthreads();
  uint32_t* g = a.ghist + b * 256;
  for (int i = tid; i < 256; i += kRowThreads) {
    if (hist[i] != 0u) atomicAdd(&g[i], hist[i]);
  }
  if (tid == 0) {
    if (kPass == 0 && misc[0] != 0u) atomicAdd(&a.state[b].valid, misc[0]);
    if (kPass == 3) {
      // ge[d] = keys of the chunk with the row's 24-bit prefix and a last digit >= d
      uint32_t* cd = a.chunks + (b * a.P + c) * kChunkWords;
      uint32_t run = 0u;
      cd[256] = 0u;
      for (int d = 255; d >= 0; --d) {
        run += hist[d];
        cd[d] = run;
      }
      cd[257] = misc[1];
    }
  }
  // Release this block's counts before announcing it, so the last block sees every count.
  __threadfence();
  __syncthreads();
  if (tid == 0) misc[2] = atomicAdd(&a.state[b].arrived, 1u) == static_cast<uint32_t>(a.P - 1) ? 1u : 0u;
  __syncthreads();
  if (misc[2] == 0u) return;  // uniform over the block
  __threadfence();
  for (int i = tid; i < 256; i += kRowThreads) {
    hist[i] = __ldcg(&g[i]);  // from L2: other blocks' atomics never went through this L1
    g[i] = 0u;                // ready for the next pass
  }
  uint32_t rem = 0u;
  if (tid == 0) {
    if (kPass == 0) {
      int64_t first_row, last_lo, row_len;
      row_chunk(a, b, a.P - 1, &first_row, &last_lo, &row_len);  // the last chunk ends at the row's end
      const int64_t valid = __ldcg(&a.state[b].valid);
      int64_t k = a.p.budget < valid ? a.p.budget : valid;
      k = k < row_len ? k : row_len;
      a.state[b].k = static_cast<uint32_t>(k);
      rem = static_cast<uint32_t>(k);
    } else {
      rem = a.state[b].remaining;
    }
  }
  __syncthreads();
  if (tid == 0) {
    // Walk the bins from the top: the digit whose bin holds the rem-th largest key.
    uint32_t cum = 0u, digit = 0u;
    for (int d = 255; d >= 0; --d) {
      if (cum + hist[d] >= rem) {
        digit = static_cast<uint32_t>(d);
        break;
      }
      cum += hist[d];
    }
    a.state[b].remaining = rem - cum;
    a.state[b].prefix = prefix | (digit << kShift);
    a.state[b].arrived = 0u;
  }
}

// Writes the chosen storage rows of chunk c, ascending. With T the k-th largest key and need the
// keys == T taken, the entry at i is chosen iff key > T, or key == T with fewer than need keys
// == T before it (in the whole row); its slot is #(key > T before i) + min(#(key == T before i),
// need). The counts of the chunks before come from the last pass; inside the chunk a block-wide
// scan in index order counts the rest.
__global__ void __launch_bounds__(kRowThreads) row_collect_kernel(AdaptiveArgs a) {
  KVSIFT_SHARED(tmp, uint32_t[kRowThreads / 32 + 1]);
  KVSIFT_SHARED(offs, long long[3]);  // keys > T before the chunk, keys == T before it, its quota
  const int64_t b = blockIdx.x / a.P;
  const int c = static_cast<int>(blockIdx.x % a.P);
  const int tid = threadIdx.x;
  const uint32_t T = a.state[b].prefix;
  const int64_t need = a.state[b].remaining;
  const int64_t k = a.state[b].k;
  if (tid == 0) {
    const uint32_t d = T & 0xffu;
    int64_t gt_before = 0, eq_before = 0, gt_c = 0, eq_c = 0;
    for (int cc = 0; cc <= c; ++cc) {
      const uint32_t* cd = a.chunks + (b * a.P + cc) * kChunkWords;
      const int64_t gt = static_cast<int64_t>(cd[257]) + cd[d + 1];
      const int64_t eq = static_cast<int64_t>(cd[d]) - cd[d + 1];
      if (cc < c) {
        gt_before += gt;
        eq_before += eq;
      } else {
        gt_c = gt;
        eq_c = eq;
      }
    }
    int64_t quota = need - eq_before;
    quota = quota < 0 ? 0 : (quota > eq_c ? eq_c : quota);
    offs[0] = gt_before;
    offs[1] = eq_before;
    offs[2] = gt_c + quota;  // entries this chunk writes
    if (c == 0) a.count[b] = static_cast<int32_t>(k);
  }
  __syncthreads();
  const int64_t gt_before = offs[0], eq_before = offs[1], target = offs[2];
  if (k == 0) return;
  int64_t row0, lo, hi;
  row_chunk(a, b, c, &row0, &lo, &hi);
  int32_t* out = a.chosen + b * a.p.budget;
  const int64_t quota = need - eq_before > 0 ? need - eq_before : 0;
  int64_t gt_run = 0, eq_run = 0;
  for (int64_t base = lo; base < hi; base += kRowThreads) {
    if (gt_run + (eq_run < quota ? eq_run : quota) >= target) break;  // uniform: block totals
    const int64_t i = base + tid;
    const uint32_t key = i < hi ? a.keys[row0 + i] : 0u;
    const uint32_t gt = (i < hi && key > T) ? 1u : 0u;
    const uint32_t eq = (i < hi && key == T) ? 1u : 0u;
    uint32_t total;
    // Two 16-bit counters in one word: a tile holds at most kRowThreads of each.
    const uint32_t pre = block_exclusive_sum<kRowThreads>((gt << 16) | eq, tmp, &total);
    const int64_t gt_at = gt_before + gt_run + (pre >> 16);
    const int64_t eq_at = eq_before + eq_run + (pre & 0xffffu);
    const int64_t slot = gt_at + (eq_at < need ? eq_at : need);
    if ((gt != 0u || (eq != 0u && eq_at < need)) && slot < k) out[slot] = static_cast<int32_t>(row0 + i);
    gt_run += total >> 16;
    eq_run += total & 0xffffu;
  }
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

// Blocks per batch row of the row-wide select: a chunk of at least kMinChunkKeys keys each (a
// block's fixed cost), at most kMaxChunks (the collect kernel walks the chunks before its own).
// Ragged rows differ in length: the average sets it, and each block splits its actual row.
constexpr int64_t kMinChunkKeys = 4096;
constexpr int64_t kMaxChunks = 32;
int32_t chunks_per_row(const AdaptiveSelectParams& p) {
  const int64_t per_row = storage_rows(p) / (p.heads.B > 0 ? p.heads.B : 1);
  int64_t P = (per_row + kMinChunkKeys - 1) / kMinChunkKeys;
  P = P < 1 ? 1 : (P > kMaxChunks ? kMaxChunks : P);
  return static_cast<int32_t>(P);
}

struct WorkspaceLayout {
  size_t keys, chosen, count, state, ghist, chunks, total, zero_from, zero_bytes;
};

WorkspaceLayout layout_of(const AdaptiveSelectParams& p) {
  WorkspaceLayout l{};
  const size_t B = static_cast<size_t>(p.heads.B);
  size_t off = 0;
  l.keys = off;
  off += align_up(static_cast<size_t>(storage_rows(p)) * 4);
  l.chosen = off;
  off += align_up(B * static_cast<size_t>(p.budget) * 4);
  l.count = off;
  off += align_up(B * 4);
  l.state = off;
  off += align_up(B * sizeof(RowState));
  l.ghist = off;
  off += align_up(B * 256 * 4);
  l.zero_from = l.state;
  l.zero_bytes = off - l.state;
  l.chunks = off;
  off += align_up(B * static_cast<size_t>(chunks_per_row(p)) * kChunkWords * 4);
  l.total = off;
  return l;
}

}  // namespace

size_t adaptive_select_workspace_bytes(const AdaptiveSelectParams& p) {
  if (p.heads.B <= 0 || p.heads.H <= 0) return 0;
  return layout_of(p).total;
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
  const WorkspaceLayout l = layout_of(p);
  AdaptiveArgs a{};
  a.p = p;
  a.keys = reinterpret_cast<uint32_t*>(ws + l.keys);
  a.chosen = reinterpret_cast<int32_t*>(ws + l.chosen);
  a.count = reinterpret_cast<int32_t*>(ws + l.count);
  a.state = reinterpret_cast<RowState*>(ws + l.state);
  a.ghist = reinterpret_cast<uint32_t*>(ws + l.ghist);
  a.chunks = reinterpret_cast<uint32_t*>(ws + l.chunks);
  a.P = chunks_per_row(p);
  if (B * a.P >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  cudaError_t err = cudaMemsetAsync(ws + l.zero_from, 0, l.zero_bytes, stream);
  if (err != cudaSuccess) return err;
  const dim3 heads(static_cast<unsigned>(B * H));
  err = launch(keys_kernel, heads, dim3(kThreads), 0, stream, a);
  if (err != cudaSuccess) return err;
  if (p.min_per_head > 0) {
    err = launch(safeguard_kernel, heads, dim3(kThreads), 0, stream, a);
    if (err != cudaSuccess) return err;
  }
  const dim3 row_blocks(static_cast<unsigned>(B * a.P));
  if ((err = launch(row_pass_kernel<0>, row_blocks, dim3(kRowThreads), 0, stream, a)) != cudaSuccess) return err;
  if ((err = launch(row_pass_kernel<1>, row_blocks, dim3(kRowThreads), 0, stream, a)) != cudaSuccess) return err;
  if ((err = launch(row_pass_kernel<2>, row_blocks, dim3(kRowThreads), 0, stream, a)) != cudaSuccess) return err;
  if ((err = launch(row_pass_kernel<3>, row_blocks, dim3(kRowThreads), 0, stream, a)) != cudaSuccess) return err;
  if ((err = launch(row_collect_kernel, row_blocks, dim3(kRowThreads), 0, stream, a)) != cudaSuccess) return err;
  const int64_t items = B * p.budget + B * H + 1;
  return launch(finalize_kernel, dim3(static_cast<unsigned>((items + kThreads - 1) / kThreads)), dim3(kThreads), 0, stream, a);
}

}  // namespace kvsift::cuda
