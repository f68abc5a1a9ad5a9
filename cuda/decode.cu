// kvsift/cuda/decode.cu: decode attention, dense or over a selection, with optional H2O / Keyformer
// accumulation fused in (semantics: DecodeParams in common/decode.h; ALGORITHMS.md "Decode
// attention"). Flash-decoding: the keys of a (batch, KV head) pair are cut into S splits.
//
//  1. split kernel, grid (S, pairs, row chunks): a block stages the chunk's query rows (up to RC of
//     the G*T rows of the KV head, so every key and value row is read once for all of them) and its
//     warps walk the split in tiles of 32 keys: a warp stages a K tile in shared memory, each lane
//     computes the logits of its key for every row, the rows' running max is shared with one warp
//     max per row per tile, and the lanes then sweep the tile's V rows (coalesced) into per-row
//     accumulators (lane owns dims lane, lane + 32, ...). The warps' states merge in warp order
//     into one (max, sum, out) partial per (pair, row, split), base 2. With accumulation the
//     tempered, noisy logits of the masses are written out ([pairs, R, N]), one f32 per row and key
//     next to the 2*D*sizeof(T) bytes of K and V read for it, with their own (max, sum) partials.
//  2. merge kernel, one block per (pair, row): the splits' partials in split order -> out, lse
//     (and the masses' log-sum-exp).
//  3. accumulate kernel (accumulation only), grid (key blocks, pairs): scores[j] += sum over rows,
//     in row order, of exp2(x - lse2). Each score is written by one thread: no float atomics.
// Every sum runs in a fixed order, so results do not depend on scheduling.
#include "common.cuh"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../common/decode.h"
#include "../common/philox.h"
#include "convert.cuh"
#include "decode.h"
#include "dispatch.h"

namespace kvsift::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr unsigned kFull = 0xffffffffu;
// About four blocks per SM of the largest GPUs; splits never shrink below kMinSplitKeys keys.
constexpr int64_t kTargetBlocks = 528;
constexpr int64_t kMinSplitKeys = 256;
constexpr int kMergeThreads = 128;
constexpr int kAccThreads = 256;

struct DecodeArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t q_sB, q_sH, q_sS, k_sB, k_sH, k_sS, v_sB, v_sH, v_sS, o_sB, o_sH, o_sS;
  const int32_t* seq_lens;
  const int32_t* sel;
  const int32_t* indptr;
  int64_t sel_total;
  int32_t sel_k, block_size, selection;
  float* lse;
  float* part_m;  // [pairs, R, S] base-2 max
  float* part_s;  // [pairs, R, S] sum of exp2(x - max)
  float* part_o;  // [pairs, R, S, D]
  float* mass_x;  // [pairs, R, N] base-2 mass logits (accumulation)
  float* mass_m;  // [pairs, R, S]
  float* mass_s;
  float* lse2;    // [pairs, R]
  float* scores;
  uint64_t seed, step;
  float c_plain;  // logit2 = dot * scale * log2(e)
  float c1, c2;   // mass logit2 = dot * c1 + g * c2 = (dot * scale + g) / tau * log2(e)
  int32_t B, Hq, Hkv, G, T, N, D, R;
  int32_t S, split_len;
  int32_t accumulate, noise;
};

struct Plan {
  int nd = 0, rc = 0, nw = 0;
  int64_t S = 1, split_len = 32, pairs = 0, R = 0, row_chunks = 0;
  size_t off_s = 0, off_o = 0, off_x = 0, off_mm = 0, off_ms = 0, off_l2 = 0, bytes = 0;
  size_t smem = 0;
};

size_t align256(size_t x) { return (x + 255) & ~static_cast<size_t>(255); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Plan make_plan(const DecodeParams& p) {
  Plan pl;
  if (p.B <= 0 || p.Hkv <= 0 || p.Hq <= 0 || p.T <= 0 || p.D <= 0 || p.Hq % p.Hkv != 0) return pl;
  pl.nd = p.D <= 64 ? 2 : (p.D <= 128 ? 4 : 8);
  pl.nw = pl.nd == 2 ? 4 : (pl.nd == 4 ? 2 : 1);
  pl.pairs = static_cast<int64_t>(p.B) * p.Hkv;
  pl.R = static_cast<int64_t>(p.Hq / p.Hkv) * p.T;
  pl.rc = pl.R <= 4 ? 4 : (pl.nd == 8 ? 8 : 16);
  pl.row_chunks = ceil_div(pl.R, pl.rc);
  int64_t bound = 0;  // the most keys any pair selects
  switch (p.selection) {
    case DecodeSelection::Dense: bound = p.N; break;
    case DecodeSelection::Positions: bound = p.sel_k; break;
    case DecodeSelection::Blocks: bound = static_cast<int64_t>(p.sel_k) * p.block_size; break;
    case DecodeSelection::Ragged: bound = p.sel_total; break;
  }
  int64_t S = ceil_div(kTargetBlocks, pl.pairs * pl.row_chunks);
  S = std::min(S, ceil_div(bound, kMinSplitKeys));
  S = std::max<int64_t>(S, 1);
  pl.split_len = std::max<int64_t>(32, ceil_div(ceil_div(bound, S), 32) * 32);
  pl.S = std::max<int64_t>(1, ceil_div(bound, pl.split_len));
  const size_t rs = static_cast<size_t>(pl.pairs * pl.R * pl.S) * sizeof(float);
  pl.off_s = align256(rs);
  pl.off_o = pl.off_s + align256(rs);
  pl.bytes = pl.off_o + align256(rs * static_cast<size_t>(p.D));
  if (p.scores != nullptr && p.selection == DecodeSelection::Dense) {
    pl.off_x = pl.bytes;
    pl.off_mm = pl.off_x + align256(static_cast<size_t>(pl.pairs * pl.R) * static_cast<size_t>(p.N) * sizeof(float));
    pl.off_ms = pl.off_mm + align256(rs);
    pl.off_l2 = pl.off_ms + align256(rs);
    pl.bytes = pl.off_l2 + align256(static_cast<size_t>(pl.pairs * pl.R) * sizeof(float));
  }
  const int dp = pl.nd * 32;
  pl.smem = static_cast<size_t>(pl.rc * dp + pl.nw * 32 * (dp + 1) + pl.nw * pl.rc * 32) * sizeof(float);
  return pl;
}

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(kFull, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(kFull, x, o);
  return x;
}

__device__ __forceinline__ int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

__device__ __forceinline__ int seq_len_of(const DecodeArgs& a, int b) {
  const int L = a.seq_lens != nullptr ? __ldg(a.seq_lens + b) : a.N;
  return min(max(L, 0), a.N);
}

__device__ __forceinline__ int64_t selection_count(const DecodeArgs& a, int64_t pair, int L) {
  switch (a.selection) {
    case 0: return L;
    case 1: return a.sel_k;
    case 3: return static_cast<int64_t>(a.sel_k) * a.block_size;
    default: {
      const int64_t lo = clamp64(__ldg(a.indptr + pair), 0, a.sel_total);
      const int64_t hi = clamp64(__ldg(a.indptr + pair + 1), lo, a.sel_total);
      return hi - lo;
    }
  }
}

// Key of selection entry i of the pair, or -1 when it names no key of the row (as the CPU does).
__device__ __forceinline__ int selected_key(const DecodeArgs& a, int64_t pair, int L, int64_t i) {
  int64_t j = -1;
  switch (a.selection) {
    case 0: j = i; break;
    case 1: j = __ldg(a.sel + pair * a.sel_k + i); break;
    case 3: {
      const int64_t blk = __ldg(a.sel + pair * a.sel_k + i / a.block_size);
      j = blk < 0 ? -1 : blk * a.block_size + i % a.block_size;
      break;
    }
    default: {
      const int64_t lo = clamp64(__ldg(a.indptr + pair), 0, a.sel_total);
      j = __ldg(a.sel + lo + i);
      break;
    }
  }
  return (j >= 0 && j < L) ? static_cast<int>(j) : -1;
}

// Merges base-2 (max, sum) partials; a -inf max (nothing seen) merges as nothing.
__device__ __forceinline__ float rescale(float m, float to) { return m == -INFINITY ? 0.f : exp2f(m - to); }

template <typename T, int ND, int RC, int NW>
__global__ void decode_split_kernel(DecodeArgs a) {
  constexpr int DP = ND * 32;
  constexpr int KP = DP + 1;  // padded K rows: lane-varying rows hit distinct banks
  KVSIFT_DYNAMIC_SHARED(smem, float);
  float* sQ = smem;                 // [RC][DP]
  float* sK = sQ + RC * DP;         // [NW][32][KP]
  float* sP = sK + NW * 32 * KP;    // [NW][RC][32]

  const int64_t pair = blockIdx.x;
  const int split = blockIdx.y;
  const int rc0 = blockIdx.z * RC;
  const int b = static_cast<int>(pair / a.Hkv), h = static_cast<int>(pair % a.Hkv);
  const int L = seq_len_of(a, b);
  const int nr = min(RC, a.R - rc0);
  const int64_t count = selection_count(a, pair, L);
  const int64_t i_begin = static_cast<int64_t>(split) * a.split_len;
  const int64_t i_end = min(count, i_begin + a.split_len);
  const T* q = static_cast<const T*>(a.q);
  const T* kp = static_cast<const T*>(a.k) + b * a.k_sB + h * a.k_sH;
  const T* vp = static_cast<const T*>(a.v) + b * a.v_sB + h * a.v_sH;

  for (int i = threadIdx.x; i < RC * DP; i += blockDim.x) {
    const int r = i / DP, d = i % DP;
    float x = 0.f;
    if (r < nr && d < a.D) {
      const int rg = rc0 + r, hq = h * a.G + rg / a.T, t = rg % a.T;
      x = to_f32(q[b * a.q_sB + hq * a.q_sH + t * a.q_sS + d]);
    }
    sQ[i] = x;
  }
  __syncthreads();

  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* wK = sK + w * 32 * KP;
  float* wP = sP + w * RC * 32;
  float m[RC], l[RC], acc[RC][ND], mm[RC], ml[RC];
  int qpos[RC];
#pragma unroll
  for (int r = 0; r < RC; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
    mm[r] = -INFINITY;
    ml[r] = 0.f;
    qpos[r] = r < nr ? L - a.T + (rc0 + r) % a.T : -1;
#pragma unroll
    for (int e = 0; e < ND; ++e) acc[r][e] = 0.f;
  }

  for (int64_t t0 = i_begin + w * 32; t0 < i_end; t0 += NW * 32) {
    const int64_t i = t0 + lane;
    const int idx = i < i_end ? selected_key(a, pair, L, i) : -1;
    // Stage the tile's keys as f32 (coalesced rows); a missing key's row is never read.
    for (int c = 0; c < 32; ++c) {
      const int kc = __shfl_sync(kFull, idx, c);
      if (kc < 0) continue;
      const T* row = kp + static_cast<int64_t>(kc) * a.k_sS;
#pragma unroll
      for (int e = 0; e < ND; ++e) {
        const int d = e * 32 + lane;
        wK[c * KP + d] = d < a.D ? to_f32(row[d]) : 0.f;
      }
    }
    __syncwarp();
    float s[RC];
#pragma unroll
    for (int r = 0; r < RC; ++r) s[r] = 0.f;
    if (idx >= 0) {  // a missing key's row was never staged
      for (int d = 0; d < a.D; ++d) {
        const float kd = wK[lane * KP + d];
#pragma unroll
        for (int r = 0; r < RC; ++r) s[r] += sQ[r * DP + d] * kd;
      }
    }
    float corr[RC];
#pragma unroll
    for (int r = 0; r < RC; ++r) {
      const bool vis = idx >= 0 && idx <= qpos[r];
      const float x = vis ? s[r] * a.c_plain : -INFINITY;
      const float mn = fmaxf(m[r], warp_max(x));
      corr[r] = rescale(m[r], mn);
      const float pv = vis ? exp2f(x - mn) : 0.f;
      l[r] = l[r] * corr[r] + pv;
      m[r] = mn;
      wP[r * 32 + lane] = pv;
      if (a.accumulate && vis) {
        const int rg = rc0 + r;
        float xm = s[r] * a.c1;
        if (a.noise) {
          const int hq = h * a.G + rg / a.T;
          xm += philox_gumbel(a.seed, a.step, static_cast<uint32_t>(b * a.Hq + hq), static_cast<uint32_t>(rg % a.T),
                              static_cast<uint32_t>(idx)) * a.c2;
        }
        a.mass_x[(pair * a.R + rg) * a.N + idx] = xm;
        // lane-local running (max, sum); merged across lanes at the end
        if (xm > mm[r]) {
          ml[r] = ml[r] * rescale(mm[r], xm) + 1.f;
          mm[r] = xm;
        } else {
          ml[r] += exp2f(xm - mm[r]);
        }
      }
    }
    __syncwarp();
#pragma unroll
    for (int r = 0; r < RC; ++r)
#pragma unroll
      for (int e = 0; e < ND; ++e) acc[r][e] *= corr[r];
    for (int c = 0; c < 32; ++c) {
      const int kc = __shfl_sync(kFull, idx, c);
      if (kc < 0) continue;
      const T* row = vp + static_cast<int64_t>(kc) * a.v_sS;
      float vv[ND];
#pragma unroll
      for (int e = 0; e < ND; ++e) {
        const int d = e * 32 + lane;
        vv[e] = d < a.D ? to_f32(row[d]) : 0.f;
      }
#pragma unroll
      for (int r = 0; r < RC; ++r) {
        const float pv = wP[r * 32 + c];
#pragma unroll
        for (int e = 0; e < ND; ++e) acc[r][e] += pv * vv[e];
      }
    }
    __syncwarp();
  }

  // The warps' states, merged in warp order through shared memory (the K tiles' space).
  __syncthreads();
  float* wm = sK;                    // [NW][RC]: max, sum, mass max, mass sum
  float* ws = wm + NW * RC;
  float* wmm = ws + NW * RC;
  float* wms = wmm + NW * RC;
  float* wo = wms + NW * RC;         // [NW][RC][DP]
#pragma unroll
  for (int r = 0; r < RC; ++r) {
    const float lsum = warp_sum(l[r]);
    const float m2 = warp_max(mm[r]);
    const float s2 = warp_sum(ml[r] * rescale(mm[r], m2));
    if (lane == 0) {
      wm[w * RC + r] = m[r];
      ws[w * RC + r] = lsum;
      wmm[w * RC + r] = m2;
      wms[w * RC + r] = s2;
    }
#pragma unroll
    for (int e = 0; e < ND; ++e) wo[(w * RC + r) * DP + e * 32 + lane] = acc[r][e];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < nr * DP; i += blockDim.x) {
    const int r = i / DP, d = i % DP;
    float M = -INFINITY, M2 = -INFINITY;
    for (int ww = 0; ww < NW; ++ww) {
      M = fmaxf(M, wm[ww * RC + r]);
      M2 = fmaxf(M2, wmm[ww * RC + r]);
    }
    float o = 0.f, S = 0.f, S2 = 0.f;
    for (int ww = 0; ww < NW; ++ww) {
      const float f = rescale(wm[ww * RC + r], M);
      o += wo[(ww * RC + r) * DP + d] * f;
      S += ws[ww * RC + r] * f;
      S2 += wms[ww * RC + r] * rescale(wmm[ww * RC + r], M2);
    }
    const int64_t slot = (pair * a.R + rc0 + r) * a.S + split;
    if (d < a.D) a.part_o[slot * a.D + d] = o;
    if (d == 0) {
      a.part_m[slot] = M;
      a.part_s[slot] = S;
      if (a.accumulate) {
        a.mass_m[slot] = M2;
        a.mass_s[slot] = S2;
      }
    }
  }
}

// A row's per-split base-2 (max, sum) partials, merged in split order: the max over the splits,
// and the sum of the splits' sums rescaled to it.
struct MaxSum {
  float m, s;
};
__device__ __forceinline__ MaxSum merge_splits(const float* pm, const float* ps, int n) {
  MaxSum r{-INFINITY, 0.f};
  for (int s = 0; s < n; ++s) r.m = fmaxf(r.m, pm[s]);
  for (int s = 0; s < n; ++s) r.s += ps[s] * rescale(pm[s], r.m);
  return r;
}

// One block per (pair, row): out and lse from the splits, in split order.
template <typename T>
__global__ void decode_merge_kernel(DecodeArgs a) {
  const int64_t pr = blockIdx.x;  // pair * R + r
  const int64_t pair = pr / a.R;
  const int r = static_cast<int>(pr % a.R);
  const int b = static_cast<int>(pair / a.Hkv), h = static_cast<int>(pair % a.Hkv);
  const int hq = h * a.G + r / a.T, t = r % a.T;
  const float* pm = a.part_m + pr * a.S;
  const MaxSum ms = merge_splits(pm, a.part_s + pr * a.S, a.S);
  const float M = ms.m, S = ms.s;
  T* out = static_cast<T*>(a.out) + b * a.o_sB + hq * a.o_sH + t * a.o_sS;
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    float o = 0.f;
    if (M != -INFINITY) {
      for (int s = 0; s < a.S; ++s) o += a.part_o[(pr * a.S + s) * a.D + d] * rescale(pm[s], M);
      o /= S;
    }
    out[d] = from_f32<T>(o);
  }
  if (threadIdx.x == 0) {
    if (a.lse != nullptr) a.lse[(static_cast<int64_t>(b) * a.Hq + hq) * a.T + t] = M == -INFINITY ? -INFINITY : (M + log2f(S)) * kLn2;
    if (a.accumulate) {
      const MaxSum mass = merge_splits(a.mass_m + pr * a.S, a.mass_s + pr * a.S, a.S);
      a.lse2[pr] = mass.m == -INFINITY ? -INFINITY : mass.m + log2f(mass.s);
    }
  }
}

// scores[pair, j] += sum over rows (in order) of the row's mass at key j.
__global__ void decode_accumulate_kernel(DecodeArgs a) {
  const int64_t pair = blockIdx.x;
  const int b = static_cast<int>(pair / a.Hkv);
  const int L = seq_len_of(a, b);
  for (int64_t j = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; j < L;
       j += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    float mass = 0.f;
    for (int r = 0; r < a.R; ++r) {
      if (j > L - a.T + r % a.T) continue;  // not visible to this row
      const float l2 = a.lse2[pair * a.R + r];
      mass += exp2f(a.mass_x[(pair * a.R + r) * a.N + j] - l2);
    }
    a.scores[pair * a.N + j] += mass;
  }
}

template <typename T, int ND, int RC, int NW>
cudaError_t launch_all(const DecodeArgs& a, const Plan& pl, cudaStream_t stream) {
  dim3 grid(static_cast<unsigned>(pl.pairs), static_cast<unsigned>(pl.S), static_cast<unsigned>(pl.row_chunks));
  cudaError_t err = launch(decode_split_kernel<T, ND, RC, NW>, grid, dim3(NW * 32), pl.smem, stream, a);
  if (err != cudaSuccess) return err;
  err = launch(decode_merge_kernel<T>, dim3(static_cast<unsigned>(pl.pairs * pl.R)), dim3(kMergeThreads), 0, stream, a);
  if (err != cudaSuccess || !a.accumulate) return err;
  dim3 g3(static_cast<unsigned>(pl.pairs), static_cast<unsigned>(std::min<int64_t>(ceil_div(a.N, kAccThreads), 65535)));
  return launch(decode_accumulate_kernel, g3, dim3(kAccThreads), 0, stream, a);
}

template <typename T>
cudaError_t dispatch_shape(const DecodeArgs& a, const Plan& pl, cudaStream_t stream) {
  if (pl.nd == 2) return pl.rc == 4 ? launch_all<T, 2, 4, 4>(a, pl, stream) : launch_all<T, 2, 16, 4>(a, pl, stream);
  if (pl.nd == 4) return pl.rc == 4 ? launch_all<T, 4, 4, 2>(a, pl, stream) : launch_all<T, 4, 16, 2>(a, pl, stream);
  return pl.rc == 4 ? launch_all<T, 8, 4, 1>(a, pl, stream) : launch_all<T, 8, 8, 1>(a, pl, stream);
}

}  // namespace

size_t decode_workspace_bytes(const DecodeParams& p) { return make_plan(p).bytes; }

cudaError_t decode_attention(const DecodeParams& p, void* workspace, cudaStream_t stream) {
  if (p.B < 0 || p.Hq < 0 || p.Hkv < 0 || p.T < 0 || p.N < 0 || p.D < 0) return cudaErrorInvalidValue;
  if (p.B == 0 || p.Hq == 0 || p.Hkv == 0 || p.T == 0 || p.D == 0) return cudaSuccess;
  if (cudaError_t e = check_head_dim("decode attention", p.D, kDecodeMaxD); e != cudaSuccess) return e;
  if (p.Hq % p.Hkv != 0 || p.T > kDecodeMaxT) return cudaErrorInvalidValue;
  if (p.dtype != DType::F32 && p.dtype != DType::F16 && p.dtype != DType::BF16) return cudaErrorInvalidValue;
  if (p.selection == DecodeSelection::Blocks && p.block_size <= 0) return cudaErrorInvalidValue;
  const Plan pl = make_plan(p);
  if (pl.pairs * pl.R > INT32_MAX || pl.S > 65535 || pl.row_chunks > 65535 || pl.split_len > INT32_MAX) return cudaErrorInvalidValue;
  char* ws = static_cast<char*>(workspace);
  DecodeArgs a{};
  a.q = p.q.data;
  a.k = p.k.data;
  a.v = p.v.data;
  a.out = p.out.data;
  a.q_sB = p.q.sB;
  a.q_sH = p.q.sH;
  a.q_sS = p.q.sS;
  a.k_sB = p.k.sB;
  a.k_sH = p.k.sH;
  a.k_sS = p.k.sS;
  a.v_sB = p.v.sB;
  a.v_sH = p.v.sH;
  a.v_sS = p.v.sS;
  a.o_sB = p.out.sB;
  a.o_sH = p.out.sH;
  a.o_sS = p.out.sS;
  a.seq_lens = p.seq_lens;
  a.sel = p.sel;
  a.indptr = p.indptr;
  a.sel_total = p.sel_total;
  a.sel_k = p.sel_k;
  a.block_size = p.block_size;
  a.selection = static_cast<int32_t>(p.selection);
  a.lse = p.lse;
  a.part_m = reinterpret_cast<float*>(ws);
  a.part_s = reinterpret_cast<float*>(ws + pl.off_s);
  a.part_o = reinterpret_cast<float*>(ws + pl.off_o);
  a.accumulate = p.scores != nullptr && p.selection == DecodeSelection::Dense && p.N > 0 ? 1 : 0;
  if (a.accumulate) {
    a.mass_x = reinterpret_cast<float*>(ws + pl.off_x);
    a.mass_m = reinterpret_cast<float*>(ws + pl.off_mm);
    a.mass_s = reinterpret_cast<float*>(ws + pl.off_ms);
    a.lse2 = reinterpret_cast<float*>(ws + pl.off_l2);
    a.scores = p.scores;
    a.noise = p.noise == NoiseKind::Gumbel ? 1 : 0;
    a.c1 = p.scale * kLog2e / p.tau;
    a.c2 = kLog2e / p.tau;
  }
  a.seed = p.seed;
  a.step = p.step;
  a.c_plain = p.scale * kLog2e;
  a.B = p.B;
  a.Hq = p.Hq;
  a.Hkv = p.Hkv;
  a.G = p.Hq / p.Hkv;
  a.T = p.T;
  a.N = p.N;
  a.D = p.D;
  a.R = static_cast<int32_t>(pl.R);
  a.S = static_cast<int32_t>(pl.S);
  a.split_len = static_cast<int32_t>(pl.split_len);
  switch (p.dtype) {
    case DType::F32: return dispatch_shape<float>(a, pl, stream);
    case DType::F16: return dispatch_shape<__half>(a, pl, stream);
    default: return dispatch_shape<__nv_bfloat16>(a, pl, stream);
  }
}

}  // namespace kvsift::cuda
