// kvsift/cuda/attn_colsum.cuh: the fused "softmax over keys, then column sums over a group of
// query rows" kernel family behind SnapKV scoring (snapkv_scores.cu) and Keyformer/H2O
// accumulation (keyformer.cu). Both ops are the same computation for a KV head (b, hkv): a set
// of query rows (the G heads of the group times R = W window queries or T step queries) each
// takes a causal softmax of its scaled logits, and the probabilities are summed over the rows
// per key. Only what happens to a column sum differs (SnapKV: reduce over heads and store;
// Keyformer: add into the running scores), and Keyformer adds Gumbel noise to the logits.
//
// Layout of the work (ALGORITHMS.md §5 explains why it is memory-bound):
//  - Rows. Row i of a KV head is (g, r) = (i / period, i % period); period = R ("dense" rows,
//    enough when every row's column sums are simply added), or R rounded up to 16 ("per-head"
//    rows, SnapKV max/none) so that a 16-row MMA tile never mixes two heads. rows_p (a multiple
//    of 16) rows exist; the padding rows have no query and never contribute.
//  - Pass 1 (skipped when SnapKV gets the rows' log-sum-exp): item (head, row chunk, key split)
//    streams its split's keys once and writes each row's partial (max, sum of exp) in base 2.
//    The last pass-1 item of a head to finish (an atomic counter) merges the partials into each
//    row's lse and raises the head's ready flag.
//  - Pass 2: item (head, key range of <= 512 keys) waits for its head's flag, recomputes the
//    logits of its keys for every row (looping over row chunks), p = exp2(x - lse), and sums
//    the columns. Each block owns its keys, so every output element is written exactly once by
//    one block in a fixed order: the result is deterministic and needs no float atomics.
//  - Order. Blocks draw tickets from an atomic counter, and a ticket names the item. Tickets run
//    pass 1 of head h+lag, then pass 2 of head h, ...: a head's pass 2 starts shortly after its
//    pass 1 ended, while its keys are still in L2, so K comes from DRAM about once. A pass-2
//    item only waits on pass-1 items with smaller tickets, which belong to blocks that already
//    run and never wait themselves, so the scheme cannot deadlock whatever the residency.
//  - Engines. Tensor cores (mma.sync m16n8k16, fp32 accumulate) for f16/bf16 with D in {64, 128}
//    on sm_80+ (f16 on sm_75 through m16n8k8): K tiles of 64 keys double-buffered with cp.async
//    in swizzled shared memory, Q fragments held in registers. Everything else (f32, bf16 on
//    sm_75, other head dims up to 256) goes through a SIMT engine with the same item structure.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../common/params.h"
#include "../common/philox.h"

namespace kvsift::cuda::colsum {

constexpr float kLog2e = 1.4426950408889634f;
// Key splits are multiples of 64 keys, so a key tile of either engine (64 or 32 keys) never
// straddles two splits.
constexpr int kKeyQuantum = 64;
// About 8 items per SM of an H100 per pass: fine enough to balance, coarse enough that the
// Q chunk staged per item stays small next to the keys it meets.
constexpr int kTargetItems = 1024;
// Rows per chunk assumed when sizing the pass-1 splits (the tensor-core chunk). The workspace
// must be sized from the params alone, so the splits cannot depend on the engine.
constexpr int kSizingRows = 128;
constexpr int kMinSplitKeys = 128;
// Pass-2 items keep one running column sum per key in shared memory.
constexpr int kMaxItemKeys = 512;
constexpr int kMaxD = 256;
// Tickets between the end of a head's pass 1 and the start of its pass 2, as a multiple of the
// blocks that run at once: pass 1's stragglers and the lse merge must finish in that window.
constexpr int kLagNum = 3, kLagDen = 2;

// Everything a launch needs, by value in the kernel's parameter space.
struct Args {
  const void* q;
  const void* k;
  const int32_t* seq_lens;  // [B] or nullptr
  const float* lse_in;      // SnapKV's [B, Hq, R] natural-log lse, or nullptr (pass 1 runs)
  float* out;               // SnapKV: [B, Hout, n_out]; accumulate: scores [B, Hkv, N]
  unsigned int* counters;   // [1 + 2 * heads]: ticket, pass-1 items done per head, ready flags
  float* lse2;              // [heads, rows_p] base-2 lse of each row
  float2* part;             // [heads, rows_p, s1] (max, sum) per row and split, base 2
  int64_t q_sB, q_sH, q_sS;
  int64_t k_sB, k_sH, k_sS;
  uint64_t seed, step;
  float c1;  // logit = dot * c1 (+ gumbel * c2): scale, 1/tau and log2(e) folded together
  float c2;
  int32_t B, Hq, Hkv, G, N, D, R;
  int32_t n_out;  // keys covered by pass 2: N - W (SnapKV) or N (accumulate)
  int32_t reduce;  // GroupReduce (SnapKV)
  int32_t per_head, period, rows_p;
  int32_t chunks;  // row chunks of the engine
  int32_t ks1, s1, ks2, s2;
  int32_t heads, iph1, iph2, lag;
  int32_t vec_q, vec_k;  // 16-byte loads allowed (tensor-core engine)
};

struct SnapkvOp {
  static constexpr bool kAccumulate = false;
  static constexpr bool kNoise = false;
};
template <bool Noise>
struct AccumulateOp {
  static constexpr bool kAccumulate = true;
  static constexpr bool kNoise = Noise;
};

// ------------------------------------------------------------------------------------------
// Host-side planning: pure functions of the params, so *_workspace_bytes and the launch agree.

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
inline size_t align256(size_t x) { return (x + 255) & ~static_cast<size_t>(255); }

struct Plan {
  int64_t heads = 0, period = 0, rows_p = 0, ks1 = 0, s1 = 0;
  size_t off_lse2 = 0, off_part = 0, bytes = 0;
};

inline Plan make_plan(int64_t B, int64_t Hkv, int64_t G, int64_t R, int64_t N, bool per_head) {
  Plan p;
  if (B <= 0 || Hkv <= 0 || G <= 0 || R <= 0 || N <= 0) return p;
  p.heads = B * Hkv;
  p.period = per_head ? round_up(R, 16) : R;
  p.rows_p = per_head ? G * p.period : round_up(G * R, 16);
  const int64_t chunks = ceil_div(p.rows_p, kSizingRows);
  int64_t s = ceil_div(kTargetItems, p.heads * chunks);
  s = std::min(s, ceil_div(N, kMinSplitKeys));
  s = std::max<int64_t>(s, 1);
  p.ks1 = round_up(ceil_div(N, s), kKeyQuantum);
  p.s1 = ceil_div(N, p.ks1);
  const size_t counters = static_cast<size_t>(1 + 2 * p.heads) * sizeof(unsigned int);
  p.off_lse2 = align256(counters);
  p.off_part = p.off_lse2 + align256(static_cast<size_t>(p.heads * p.rows_p) * sizeof(float));
  p.bytes = p.off_part + align256(static_cast<size_t>(p.heads * p.rows_p * p.s1) * sizeof(float2));
  return p;
}

// Pass-2 items: about kTargetItems of them, each a multiple of 64 keys and at most 512.
inline void plan_pass2(int64_t heads, int64_t n_cover, int32_t* ks2, int32_t* s2) {
  int64_t s = ceil_div(kTargetItems, heads);
  s = std::max(s, ceil_div(n_cover, kMaxItemKeys));
  s = std::min(s, ceil_div(n_cover, kKeyQuantum));
  s = std::max<int64_t>(s, 1);
  const int64_t ks = round_up(ceil_div(n_cover, s), kKeyQuantum);
  *ks2 = static_cast<int32_t>(ks);
  *s2 = static_cast<int32_t>(ceil_div(n_cover, ks));
}

// ------------------------------------------------------------------------------------------
// Device helpers.

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Merges two base-2 (max, sum) partials; a -inf max (nothing visible yet) merges as nothing.
__device__ __forceinline__ void lse_merge(float& m, float& s, float mo, float so) {
  const float mn = fmaxf(m, mo);
  const float mu = (mn == -INFINITY) ? 0.f : mn;
  s = s * exp2f(m - mu) + so * exp2f(mo - mu);
  m = mn;
}

// max that lets a NaN through, like the sum it stands beside.
__device__ __forceinline__ float nan_max(float a, float b) { return (b > a || b != b) ? b : a; }

__device__ __forceinline__ int seq_len_of(const Args& a, int b) {
  const int L = a.seq_lens != nullptr ? __ldg(a.seq_lens + b) : a.N;
  return min(max(L, 0), a.N);
}

__device__ __forceinline__ bool row_map(const Args& a, int i, int& g, int& r) {
  g = i / a.period;
  r = i - g * a.period;
  return i < a.rows_p && g < a.G && r < a.R;
}

// The smallest query position among rows [c0, c0 + rc), -1 when the chunk holds a padding row.
// A tile whose last key is <= this needs no causal mask at all.
__device__ __forceinline__ int chunk_min_pos(const Args& a, int c0, int rc, int L) {
  const int end = c0 + rc;
  const bool pad = end > a.rows_p || (a.per_head ? a.period != a.R : end > a.G * a.R);
  if (pad) return -1;
  int minr = 0;
  if (rc < a.period) {
    const int r0 = c0 % a.period;
    if (r0 + rc <= a.period) minr = r0;
  }
  return L - a.R + minr;
}

// Gumbel noise of one logit. Kept out of line: inlined into the unrolled fragment loops, the
// ten Philox rounds and two double logs would multiply the kernel's code size. static: each
// translation unit keeps its own copy, so relocatable device code links too.
static __device__ __noinline__ float gumbel_at(uint64_t seed, uint64_t step, uint32_t bh, uint32_t t,
                                        uint32_t j) {
  return philox_gumbel(seed, step, bh, t, j);
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// 16 bytes (8 halves) from global to shared: cp.async when the source is 16-byte aligned on
// sm_80+, else through registers (element by element when misaligned). !ok stores zeros.
__device__ __forceinline__ void copy16(unsigned char* dst, const uint16_t* src, bool ok, bool vec) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if (vec) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
    return;
  }
#endif
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (ok) {
    if (vec) {
      v = __ldg(reinterpret_cast<const uint4*>(src));
    } else {
      uint32_t w[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        w[e] = static_cast<uint32_t>(__ldg(src + 2 * e)) |
               (static_cast<uint32_t>(__ldg(src + 2 * e + 1)) << 16);
      }
      v = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
  *reinterpret_cast<uint4*>(dst) = v;
}

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                        uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}

// c += a * b for one 16x8x16 tile, fp32 accumulate.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  // Turing has only k8 for f16: the k16 tile is its two halves (a0,a1,b0) and (a2,a3,b1).
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(b0));
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[2]), "r"(a[3]), "r"(b1));
#else
  __trap();  // the launcher never picks tensor cores below sm_75
#endif
}

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // the launcher sends bf16 below sm_80 to the SIMT engine
#endif
}

// Sums v[i] over the 8 lanes that share lane & 3 and leaves the sum of index lane >> 2 in each
// lane: 7 shuffles instead of 24 for a plain butterfly per value.
__device__ __forceinline__ float reduce_scatter8(const float (&v)[8], int lane) {
  const bool b4 = (lane & 16) != 0, b3 = (lane & 8) != 0, b2 = (lane & 4) != 0;
  float w4[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float send = b4 ? v[i] : v[i + 4];
    const float keep = b4 ? v[i + 4] : v[i];
    w4[i] = keep + __shfl_xor_sync(0xffffffffu, send, 16);
  }
  float w2[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float send = b3 ? w4[i] : w4[i + 2];
    const float keep = b3 ? w4[i + 2] : w4[i];
    w2[i] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
  }
  const float send = b2 ? w2[0] : w2[1];
  const float keep = b2 ? w2[1] : w2[0];
  return keep + __shfl_xor_sync(0xffffffffu, send, 4);
}

template <class E>
struct Shared {
  typename E::Buf buf;
  float red[E::kMaxSlots * E::kTN];  // column sums of one tile per slot (a group of rows)
  float fin[kMaxItemKeys];           // running result per key of a pass-2 item
  float cur[kMaxItemKeys];           // running sum of the current head (per-head rows)
  int ticket;
  int flag;
};

// Folds one tile's slot sums into the item's running results, slots in row order. Per-head
// rows: a head's sum completes at its last slot, then max-reduces into fin (GroupReduce::Max)
// or is stored as that query head's output (GroupReduce::None). Dense rows: everything adds.
__device__ __forceinline__ void fold_tile(const Args& a, const float* red, int tn, int nslots,
                                          int rps, bool per_head, int c0, bool first, int off,
                                          int key_lo, int b, int hkv, int limit, float* fin,
                                          float* cur) {
  const int tid = static_cast<int>(threadIdx.x);
  if (tid >= tn) return;
  const int j = off + tid;
  const int col = key_lo + j;
  float f = first ? 0.f : fin[j];
  float cu = first ? 0.f : cur[j];
  for (int sl = 0; sl < nslots; ++sl) {
    const int row0 = c0 + sl * rps;
    if (row0 >= a.rows_p) break;
    const float v = red[sl * tn + tid];
    if (!per_head) {
      f += v;
      continue;
    }
    const int g = row0 / a.period;
    const int rin = row0 - g * a.period;
    cu = (rin == 0) ? v : cu + v;
    if (rin + rps == a.period) {
      if (a.reduce == static_cast<int>(GroupReduce::Max)) {
        f = (g == 0) ? cu : nan_max(f, cu);
      } else if (col < a.n_out) {
        const int64_t ho = static_cast<int64_t>(b) * a.Hq + static_cast<int64_t>(hkv) * a.G + g;
        a.out[ho * a.n_out + col] = (col < limit) ? cu : 0.f;
      }
    }
  }
  fin[j] = f;
  cur[j] = cu;
}

// ------------------------------------------------------------------------------------------
// Tensor-core engine: 4 warps, each owning 32 rows (two 16-row MMA tiles) of a 128-row chunk
// against 64-key tiles. Q fragments stay in registers for the whole item; K tiles are
// double-buffered in shared memory, rows XOR-swizzled in 16-byte units so ldmatrix is
// conflict-free. The Q chunk is staged through the same buffer before the K stream starts.
template <typename T, int D>
struct TcEngine {
  static_assert(D == 64 || D == 128, "tensor-core engine: D must be 64 or 128");
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  // D=128 needs ~225 registers without spills (Q fragments alone hold 64), so two blocks per
  // SM; D=64 fits three.
  static constexpr int kMinBlocks = D == 64 ? 3 : 2;
  static constexpr int kMT = 2;
  static constexpr int kRC = kWarps * kMT * 16;
  static constexpr int kTN = 64;
  static constexpr int kKS = D / 16;
  static constexpr int kRowBytes = D * 2;
  static constexpr int kVecPerRow = D / 8;
  static constexpr int kStageBytes = kTN * kRowBytes;
  static constexpr int kBufBytes = 2 * kStageBytes;
  static_assert(kRC * kRowBytes == kBufBytes, "the Q chunk must fit the two K stages exactly");
  static constexpr int kMaxSlots = kWarps * kMT;
  struct Buf {
    alignas(128) unsigned char bytes[kBufBytes];
  };
  using Sh = Shared<TcEngine>;

  struct Rows {
    int pos[kMT][2];  // query position of the lane's rows; -1 for padding rows
    int bhq[kMT][2];  // b * Hq + hq, the noise's head index
    int rq[kMT][2];   // query index within the window / step
    bool ok[kMT][2];
  };

  static __device__ __forceinline__ uint32_t swz(int row, int vec) {
    return static_cast<uint32_t>(row * kRowBytes + ((vec ^ (row & 7)) << 4));
  }

  static __device__ void load_q(const Args& a, unsigned char* buf, int b, int hkv, int c0) {
    const uint16_t* q = static_cast<const uint16_t*>(a.q) + static_cast<int64_t>(b) * a.q_sB;
    const bool vec = a.vec_q != 0;
    for (int idx = static_cast<int>(threadIdx.x); idx < kRC * kVecPerRow; idx += kThreads) {
      const int i = idx / kVecPerRow, c = idx - i * kVecPerRow;
      int g, r;
      const bool ok = row_map(a, c0 + i, g, r);
      const uint16_t* src =
          ok ? q + static_cast<int64_t>(hkv * a.G + g) * a.q_sH + static_cast<int64_t>(r) * a.q_sS +
                   c * 8
             : q;
      copy16(buf + swz(i, c), src, ok, vec);
    }
  }

  static __device__ __forceinline__ void load_k(const Args& a, unsigned char* stage,
                                                const uint16_t* kb, int key0, int load_hi) {
    const bool vec = a.vec_k != 0;
#pragma unroll
    for (int it = 0; it < kTN * kVecPerRow / kThreads; ++it) {
      const int idx = static_cast<int>(threadIdx.x) + it * kThreads;
      const int n = idx / kVecPerRow, c = idx - n * kVecPerRow;
      const int key = key0 + n;
      const bool ok = key < load_hi;
      const uint16_t* src = ok ? kb + static_cast<int64_t>(key) * a.k_sS + c * 8 : kb;
      copy16(stage + swz(n, c), src, ok, vec);
    }
  }

  // A fragments of the warp's two row tiles, all of D.
  static __device__ __forceinline__ void load_q_frags(uint32_t sbuf, uint32_t (&qa)[kMT][kKS][4]) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    const int mi = lane >> 3, rr = lane & 7;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const int row = warp * 32 + mt * 16 + (mi & 1) * 8 + rr;
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks) {
        const int ch = ks * 2 + (mi >> 1);
        ldsm_x4(sbuf + static_cast<uint32_t>(row * kRowBytes + ((ch ^ rr) << 4)), qa[mt][ks][0],
                qa[mt][ks][1], qa[mt][ks][2], qa[mt][ks][3]);
      }
    }
  }

  // Raw dot products of the warp's 32 rows with keys [ng*32, ng*32 + 32) of the stage.
  // x[mt][nt][e]: row warp*32 + mt*16 + (e>>1)*8 + lane/4, key ng*32 + nt*8 + (lane%4)*2 + (e&1).
  static __device__ __forceinline__ void qk_group(float (&x)[kMT][4][4],
                                                  const uint32_t (&qa)[kMT][kKS][4],
                                                  uint32_t sstage, int ng) {
    const int lane = static_cast<int>(threadIdx.x) & 31;
    const int mi = lane >> 3, rr = lane & 7;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) x[mt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        const int n = ng * 32 + np * 16 + (mi >> 1) * 8 + rr;
        const int ch = ks * 2 + (mi & 1);
        uint32_t b0, b1, b2, b3;
        ldsm_x4(sstage + static_cast<uint32_t>(n * kRowBytes + ((ch ^ rr) << 4)), b0, b1, b2, b3);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<T>(x[mt][np * 2], qa[mt][ks], b0, b1);
          mma_16816<T>(x[mt][np * 2 + 1], qa[mt][ks], b2, b3);
        }
      }
    }
  }

  // Dot products to base-2 logits: dot * c1 + off (+ noise), masked to -inf past each row's
  // position when the tile reaches past the chunk's smallest position.
  template <class Op>
  static __device__ __forceinline__ void logits(const Args& a, float (&x)[kMT][4][4], int key0,
                                                const float (&off)[kMT][2], const Rows& rw,
                                                bool mask) {
    const int lane = static_cast<int>(threadIdx.x) & 31;
    const int kc = key0 + ((lane & 3) << 1);
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int hh = e >> 1;
          const int key = kc + nt * 8 + (e & 1);
          float v = fmaf(x[mt][nt][e], a.c1, off[mt][hh]);
          if constexpr (Op::kNoise) {
            if (key <= rw.pos[mt][hh]) {
              v = fmaf(gumbel_at(a.seed, a.step, static_cast<uint32_t>(rw.bhq[mt][hh]),
                                 static_cast<uint32_t>(rw.rq[mt][hh]), static_cast<uint32_t>(key)),
                       a.c2, v);
            }
          }
          if (mask && key > rw.pos[mt][hh]) v = -INFINITY;
          x[mt][nt][e] = v;
        }
  }

  static __device__ __forceinline__ void row_setup(const Args& a, int b, int hkv, int L, int c0,
                                                   Rows& rw) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int i = c0 + warp * 32 + mt * 16 + hh * 8 + (lane >> 2);
        int g, r;
        const bool ok = row_map(a, i, g, r);
        rw.ok[mt][hh] = ok;
        rw.pos[mt][hh] = ok ? L - a.R + r : -1;
        rw.bhq[mt][hh] = b * a.Hq + hkv * a.G + g;
        rw.rq[mt][hh] = r;
      }
  }

  // Stages the Q chunk and leaves its fragments in registers; the buffer is free afterwards.
  static __device__ __forceinline__ void stage_q(const Args& a, unsigned char* buf, int b, int hkv,
                                                 int c0, uint32_t (&qa)[kMT][kKS][4]) {
    __syncthreads();  // the buffer's previous readers are done
    load_q(a, buf, b, hkv, c0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    load_q_frags(smem_u32(buf), qa);
    __syncthreads();  // the K stream overwrites the staged Q next
  }

  // Streams ntiles key tiles through the two stages; compute(t, stage) runs between barriers
  // with the tile resident, after(t) once every warp has finished computing on it.
  template <class Compute, class After>
  static __device__ __forceinline__ void stream_tiles(const Args& a, unsigned char* buf,
                                                      const uint16_t* kb, int key_lo, int ntiles,
                                                      int load_hi, Compute&& compute,
                                                      After&& after) {
    const uint32_t sbuf = smem_u32(buf);
    if (ntiles > 0) load_k(a, buf, kb, key_lo, load_hi);
    cp_async_commit();
    for (int t = 0; t < ntiles; ++t) {
      if (t + 1 < ntiles) load_k(a, buf + ((t + 1) & 1) * kStageBytes, kb, key_lo + (t + 1) * kTN, load_hi);
      cp_async_commit();  // possibly empty, so wait_group<1> always means "tile t landed"
      cp_async_wait<1>();
      __syncthreads();
      compute(t, sbuf + static_cast<uint32_t>((t & 1) * kStageBytes));
      __syncthreads();  // stage t&1 is refilled by the next iteration's load
      after(t);
    }
  }

  static __device__ __forceinline__ const uint16_t* k_head(const Args& a, int b, int hkv) {
    return static_cast<const uint16_t*>(a.k) + static_cast<int64_t>(b) * a.k_sB +
           static_cast<int64_t>(hkv) * a.k_sH;
  }

  template <class Op>
  static __device__ void pass1(const Args& a, Sh& sh, int b, int hkv, int h, int L, int c0,
                               int key_lo, int key_hi, int split) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    uint32_t qa[kMT][kKS][4];
    stage_q(a, sh.buf.bytes, b, hkv, c0, qa);
    Rows rw;
    row_setup(a, b, hkv, L, c0, rw);
    const float zero[kMT][2] = {};
    float m[kMT][2], s[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        m[mt][hh] = -INFINITY;
        s[mt][hh] = 0.f;
      }
    const bool active = c0 + warp * 32 < a.rows_p;
    const int min_pos = chunk_min_pos(a, c0, kRC, L);
    const int ntiles = (key_hi - key_lo + kTN - 1) / kTN;
    stream_tiles(
        a, sh.buf.bytes, k_head(a, b, hkv), key_lo, ntiles, L,
        [&](int t, uint32_t st) {
          const int tile0 = key_lo + t * kTN;
          const bool mask = tile0 + kTN - 1 > min_pos;
          if (!active) return;
#pragma unroll 1  // unrolled, the two groups' fragments would be live at once
          for (int ng = 0; ng < kTN / 32; ++ng) {
            float x[kMT][4][4];
            qk_group(x, qa, st, ng);
            logits<Op>(a, x, tile0 + ng * 32, zero, rw, mask);
            // Online (max, sum) per lane and row; the quad's lanes merge once at the end.
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
              for (int hh = 0; hh < 2; ++hh) {
                float mx = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
                  mx = fmaxf(mx, fmaxf(x[mt][nt][hh * 2], x[mt][nt][hh * 2 + 1]));
                const float mn = fmaxf(m[mt][hh], mx);
                const float mu = (mn == -INFINITY) ? 0.f : mn;
                float sum = 0.f;
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
                  sum += fast_exp2(x[mt][nt][hh * 2] - mu) + fast_exp2(x[mt][nt][hh * 2 + 1] - mu);
                s[mt][hh] = s[mt][hh] * fast_exp2(m[mt][hh] - mu) + sum;
                m[mt][hh] = mn;
              }
          }
        },
        [](int) {});
    float2* pw = a.part + static_cast<int64_t>(h) * a.rows_p * a.s1 + split;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float mm = m[mt][hh], ss = s[mt][hh];
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
          const float mo = __shfl_xor_sync(0xffffffffu, mm, o);
          const float so = __shfl_xor_sync(0xffffffffu, ss, o);
          lse_merge(mm, ss, mo, so);
        }
        if ((lane & 3) == 0 && rw.ok[mt][hh]) {
          const int row = c0 + warp * 32 + mt * 16 + hh * 8 + (lane >> 2);
          pw[static_cast<int64_t>(row) * a.s1] = make_float2(mm, ss);
        }
      }
  }

  template <class Op>
  static __device__ void pass2(const Args& a, Sh& sh, int b, int hkv, int h, int L, int key_lo,
                               int ntiles, int limit) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    const bool per_head = !Op::kAccumulate && a.per_head != 0;
    const int nslots = per_head ? kWarps * kMT : kWarps;
    const int rps = per_head ? 16 : kMT * 16;
    // Column of the tile this lane's reduce_scatter8 result belongs to (see qk_group).
    const int col = ((lane >> 3) << 3) + ((lane & 3) << 1) + ((lane >> 2) & 1);
    const uint16_t* kb = k_head(a, b, hkv);
    for (int c = 0; c < a.chunks; ++c) {
      const int c0 = c * kRC;
      uint32_t qa[kMT][kKS][4];
      stage_q(a, sh.buf.bytes, b, hkv, c0, qa);
      Rows rw;
      row_setup(a, b, hkv, L, c0, rw);
      float off[kMT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float l2 = 0.f;
          if (rw.ok[mt][hh]) {
            const int i = c0 + warp * 32 + mt * 16 + hh * 8 + (lane >> 2);
            if (a.lse_in != nullptr) {
              const int64_t hq = static_cast<int64_t>(b) * a.Hq + hkv * a.G + i / a.period;
              l2 = __ldg(a.lse_in + hq * a.R + rw.rq[mt][hh]) * kLog2e;
            } else {
              l2 = __ldcg(a.lse2 + static_cast<int64_t>(h) * a.rows_p + i);
            }
          }
          off[mt][hh] = -l2;
        }
      const bool active = c0 + warp * 32 < a.rows_p;
      const int min_pos = chunk_min_pos(a, c0, kRC, L);
      stream_tiles(
          a, sh.buf.bytes, kb, key_lo, ntiles, L,
          [&](int t, uint32_t st) {
            const int tile0 = key_lo + t * kTN;
            const bool mask = tile0 + kTN - 1 > min_pos;
            if (!active) return;
#pragma unroll 1
            for (int ng = 0; ng < kTN / 32; ++ng) {
              float x[kMT][4][4];
              qk_group(x, qa, st, ng);
              logits<Op>(a, x, tile0 + ng * 32, off, rw, mask);
#pragma unroll
              for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                  for (int e = 0; e < 4; ++e) x[mt][nt][e] = fast_exp2(x[mt][nt][e]);
              if (per_head) {
#pragma unroll
                for (int mt = 0; mt < kMT; ++mt) {
                  float v[8];
#pragma unroll
                  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                    for (int j = 0; j < 2; ++j) v[nt * 2 + j] = x[mt][nt][j] + x[mt][nt][j + 2];
                  sh.red[(warp * kMT + mt) * kTN + ng * 32 + col] = reduce_scatter8(v, lane);
                }
              } else {
                float v[8];
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                  for (int j = 0; j < 2; ++j) {
                    float acc = 0.f;
#pragma unroll
                    for (int mt = 0; mt < kMT; ++mt) acc += x[mt][nt][j] + x[mt][nt][j + 2];
                    v[nt * 2 + j] = acc;
                  }
                sh.red[warp * kTN + ng * 32 + col] = reduce_scatter8(v, lane);
              }
            }
          },
          [&](int t) {
            fold_tile(a, sh.red, kTN, nslots, rps, per_head, c0, c == 0, t * kTN, key_lo, b, hkv,
                      limit, sh.fin, sh.cur);
          });
    }
  }
};

// ------------------------------------------------------------------------------------------
// SIMT engine: 8 warps, each owning 4 rows of a 32-row chunk; lane = key of a 32-key tile.
// Q chunk resident in shared memory as f32; K streamed in 64-wide slabs of D (padded rows:
// conflict-free column reads). Correct for any D in 0..256 and any alignment.
template <typename T>
struct SimtEngine {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMinBlocks = 2;
  static constexpr int kRowsPerWarp = 4;
  static constexpr int kRC = kWarps * kRowsPerWarp;
  static constexpr int kTN = 32;
  static constexpr int kDS = 64;
  static constexpr int kMaxSlots = kWarps;
  struct Buf {
    float q[kRC * kMaxD];
    float k[kTN * (kDS + 1)];
  };
  using Sh = Shared<SimtEngine>;

  static __device__ __forceinline__ float to_f32(const T* p);

  static __device__ void load_q(const Args& a, Buf& buf, int b, int hkv, int c0) {
    const T* q = static_cast<const T*>(a.q) + static_cast<int64_t>(b) * a.q_sB;
    const int D = a.D;
    for (int idx = static_cast<int>(threadIdx.x); idx < kRC * D; idx += kThreads) {
      const int i = idx / D, d = idx - i * D;
      int g, r;
      const bool ok = row_map(a, c0 + i, g, r);
      buf.q[idx] = ok ? to_f32(q + static_cast<int64_t>(hkv * a.G + g) * a.q_sH +
                               static_cast<int64_t>(r) * a.q_sS + d)
                      : 0.f;
    }
  }

  // dot[i]: row warp*4 + i of the chunk with key tile0 + lane. Starts with a barrier, so the
  // previous tile's readers of buf.k and of red are done before anything is overwritten.
  static __device__ void tile_dots(const Args& a, Buf& buf, const T* kb, int tile0, int load_hi,
                                   float (&dot)[kRowsPerWarp]) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) dot[i] = 0.f;
    __syncthreads();
    for (int d0 = 0; d0 < a.D; d0 += kDS) {
      if (d0 > 0) __syncthreads();
      for (int idx = static_cast<int>(threadIdx.x); idx < kTN * kDS; idx += kThreads) {
        const int n = idx / kDS, d = idx - n * kDS;
        const int key = tile0 + n, dd = d0 + d;
        buf.k[n * (kDS + 1) + d] =
            (key < load_hi && dd < a.D) ? to_f32(kb + static_cast<int64_t>(key) * a.k_sS + dd) : 0.f;
      }
      __syncthreads();
      const int dn = min(kDS, a.D - d0);
      const float* kr = buf.k + lane * (kDS + 1);
      const float* qr = buf.q + warp * kRowsPerWarp * a.D + d0;
      for (int d = 0; d < dn; ++d) {
        const float kv = kr[d];
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) dot[i] = fmaf(qr[i * a.D + d], kv, dot[i]);
      }
    }
  }

  struct Rows {
    int pos[kRowsPerWarp];
    int bhq[kRowsPerWarp];
    int rq[kRowsPerWarp];
    bool ok[kRowsPerWarp];
  };

  static __device__ __forceinline__ void row_setup(const Args& a, int b, int hkv, int L, int c0,
                                                   Rows& rw) {
    const int warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      int g, r;
      const bool ok = row_map(a, c0 + warp * kRowsPerWarp + i, g, r);
      rw.ok[i] = ok;
      rw.pos[i] = ok ? L - a.R + r : -1;
      rw.bhq[i] = b * a.Hq + hkv * a.G + g;
      rw.rq[i] = r;
    }
  }

  template <class Op>
  static __device__ __forceinline__ float logit(const Args& a, float dot, float off, const Rows& rw,
                                                int i, int key) {
    float v = fmaf(dot, a.c1, off);
    if (key > rw.pos[i]) return -INFINITY;
    if constexpr (Op::kNoise) {
      v = fmaf(gumbel_at(a.seed, a.step, static_cast<uint32_t>(rw.bhq[i]),
                         static_cast<uint32_t>(rw.rq[i]), static_cast<uint32_t>(key)),
               a.c2, v);
    }
    return v;
  }

  static __device__ __forceinline__ const T* k_head(const Args& a, int b, int hkv) {
    return static_cast<const T*>(a.k) + static_cast<int64_t>(b) * a.k_sB +
           static_cast<int64_t>(hkv) * a.k_sH;
  }

  template <class Op>
  static __device__ void pass1(const Args& a, Sh& sh, int b, int hkv, int h, int L, int c0,
                               int key_lo, int key_hi, int split) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    load_q(a, sh.buf, b, hkv, c0);  // read only after tile_dots' barriers
    Rows rw;
    row_setup(a, b, hkv, L, c0, rw);
    float m[kRowsPerWarp], s[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      m[i] = -INFINITY;
      s[i] = 0.f;
    }
    const T* kb = k_head(a, b, hkv);
    for (int tile0 = key_lo; tile0 < key_hi; tile0 += kTN) {
      float dot[kRowsPerWarp];
      tile_dots(a, sh.buf, kb, tile0, L, dot);
      const int key = tile0 + lane;
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float x = logit<Op>(a, dot[i], 0.f, rw, i, key);
        const float mn = fmaxf(m[i], x);
        const float mu = (mn == -INFINITY) ? 0.f : mn;
        s[i] = s[i] * fast_exp2(m[i] - mu) + fast_exp2(x - mu);
        m[i] = mn;
      }
    }
    float2* pw = a.part + static_cast<int64_t>(h) * a.rows_p * a.s1 + split;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      float mm = m[i], ss = s[i];
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float mo = __shfl_xor_sync(0xffffffffu, mm, o);
        const float so = __shfl_xor_sync(0xffffffffu, ss, o);
        lse_merge(mm, ss, mo, so);
      }
      if (lane == 0 && rw.ok[i]) {
        const int row = c0 + warp * kRowsPerWarp + i;
        pw[static_cast<int64_t>(row) * a.s1] = make_float2(mm, ss);
      }
    }
  }

  template <class Op>
  static __device__ void pass2(const Args& a, Sh& sh, int b, int hkv, int h, int L, int key_lo,
                               int ntiles, int limit) {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    const bool per_head = !Op::kAccumulate && a.per_head != 0;
    const T* kb = k_head(a, b, hkv);
    for (int c = 0; c < a.chunks; ++c) {
      const int c0 = c * kRC;
      // Safe without a barrier: every reader of the previous chunk's Q passed the barrier that
      // precedes the last fold, and tile_dots' barriers come before any read of this one.
      load_q(a, sh.buf, b, hkv, c0);
      Rows rw;
      row_setup(a, b, hkv, L, c0, rw);
      float off[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        float l2 = 0.f;
        if (rw.ok[i]) {
          const int row = c0 + warp * kRowsPerWarp + i;
          if (a.lse_in != nullptr) {
            const int64_t hq = static_cast<int64_t>(b) * a.Hq + hkv * a.G + row / a.period;
            l2 = __ldg(a.lse_in + hq * a.R + rw.rq[i]) * kLog2e;
          } else {
            l2 = __ldcg(a.lse2 + static_cast<int64_t>(h) * a.rows_p + row);
          }
        }
        off[i] = -l2;
      }
      for (int t = 0; t < ntiles; ++t) {
        const int tile0 = key_lo + t * kTN;
        float dot[kRowsPerWarp];
        tile_dots(a, sh.buf, kb, tile0, L, dot);
        const int key = tile0 + lane;
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) acc += fast_exp2(logit<Op>(a, dot[i], off[i], rw, i, key));
        sh.red[warp * kTN + lane] = acc;
        __syncthreads();
        fold_tile(a, sh.red, kTN, kWarps, kRowsPerWarp, per_head, c0, c == 0, t * kTN, key_lo, b,
                  hkv, limit, sh.fin, sh.cur);
      }
    }
  }
};

template <>
__device__ __forceinline__ float SimtEngine<float>::to_f32(const float* p) {
  return __ldg(p);
}
template <>
__device__ __forceinline__ float SimtEngine<__half>::to_f32(const __half* p) {
  return __half2float(__ldg(p));
}
template <>
__device__ __forceinline__ float SimtEngine<__nv_bfloat16>::to_f32(const __nv_bfloat16* p) {
  // Through the raw bits: exact, and free of any arch requirement of the bf16 intrinsics.
  const unsigned short bits = __ldg(reinterpret_cast<const unsigned short*>(p));
  return __uint_as_float(static_cast<unsigned int>(bits) << 16);
}

// ------------------------------------------------------------------------------------------
// Scheduling and the kernel.

// Ticket t -> (pass, head, item within the head's pass). Order: pass 1 of heads [0, lag), then
// for k = lag .. heads-1: pass 1 of head k, pass 2 of head k-lag; then pass 2 of the last lag
// heads. Every pass-2 ticket of head h follows all pass-1 tickets of head h.
__device__ __forceinline__ void decode_ticket(const Args& a, int t, int& pass, int& h, int& sub) {
  const int64_t i1 = a.iph1, i2 = a.iph2, step = i1 + i2;
  const int64_t phase_a = static_cast<int64_t>(a.lag) * i1;
  int64_t u = t;
  if (u < phase_a) {
    pass = 1;
    h = static_cast<int>(u / i1);
    sub = static_cast<int>(u - static_cast<int64_t>(h) * i1);
    return;
  }
  u -= phase_a;
  const int64_t phase_b = static_cast<int64_t>(a.heads - a.lag) * step;
  if (u < phase_b) {
    const int64_t k = u / step, w = u - k * step;
    if (w < i1) {
      pass = 1;
      h = static_cast<int>(a.lag + k);
      sub = static_cast<int>(w);
    } else {
      pass = 2;
      h = static_cast<int>(k);
      sub = static_cast<int>(w - i1);
    }
    return;
  }
  u -= phase_b;
  pass = 2;
  const int64_t k = u / i2;
  h = static_cast<int>(a.heads - a.lag + k);
  sub = static_cast<int>(u - k * i2);
}

// Counts a finished pass-1 item; the head's last one merges the partials into each row's lse
// (a warp per 8 rows, lanes across the splits, all loads of a batch in flight together) and
// raises the head's ready flag.
template <class Sh>
__device__ void finish_pass1(const Args& a, Sh& sh, int h, int L) {
  __threadfence();  // this block's partials are visible device-wide before it is counted
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned old = atomicAdd(a.counters + 1 + h, 1u);
    sh.flag = (old + 1u == static_cast<unsigned>(a.iph1)) ? 1 : 0;
  }
  __syncthreads();
  if (sh.flag == 0) return;
  __threadfence();
  constexpr int kBatch = 8, kUnroll = 4;
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int nw = static_cast<int>(blockDim.x) >> 5;
  const float2* base = a.part + static_cast<int64_t>(h) * a.rows_p * a.s1;
  for (int r0 = warp * kBatch; r0 < a.rows_p; r0 += nw * kBatch) {
    int last[kBatch];
    float m[kBatch], s[kBatch];
    int lmax = -1;
#pragma unroll
    for (int q = 0; q < kBatch; ++q) {
      int g, r;
      const bool ok = row_map(a, r0 + q, g, r);
      const int pos = L - a.R + r;
      last[q] = (ok && pos >= 0) ? min(a.s1 - 1, pos / a.ks1) : -1;
      lmax = max(lmax, last[q]);
      m[q] = -INFINITY;
      s[q] = 0.f;
    }
    for (int sp0 = 0; sp0 <= lmax; sp0 += 32 * kUnroll) {
      float2 v[kUnroll][kBatch];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int sp = sp0 + u * 32 + lane;
#pragma unroll
        for (int q = 0; q < kBatch; ++q)
          v[u][q] = (sp <= last[q]) ? __ldcg(base + static_cast<int64_t>(r0 + q) * a.s1 + sp)
                                    : make_float2(-INFINITY, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int q = 0; q < kBatch; ++q) lse_merge(m[q], s[q], v[u][q].x, v[u][q].y);
    }
#pragma unroll
    for (int q = 0; q < kBatch; ++q) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float mo = __shfl_xor_sync(0xffffffffu, m[q], o);
        const float so = __shfl_xor_sync(0xffffffffu, s[q], o);
        lse_merge(m[q], s[q], mo, so);
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int q = 0; q < kBatch; ++q) {
        if (r0 + q >= a.rows_p) break;
        // No visible key (or all -inf): +inf makes every p of the row 0 instead of 0/0.
        const float l2 = (s[q] == 0.f) ? INFINITY : m[q] + log2f(s[q]);
        a.lse2[static_cast<int64_t>(h) * a.rows_p + r0 + q] = (last[q] >= 0) ? l2 : INFINITY;
      }
    }
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) atomicExch(a.counters + 1 + a.heads + h, 1u);
}

__device__ __forceinline__ void wait_ready(const Args& a, int h) {
  if (threadIdx.x == 0) {
    const volatile unsigned int* flag = a.counters + 1 + a.heads + h;
    while (*flag == 0u) __nanosleep(200);
    __threadfence();
  }
  __syncthreads();
}

template <class Op>
__device__ void write_outputs(const Args& a, const float* fin, int b, int hkv, int h, int key_lo,
                              int key_hi, int comp_end, int limit) {
  __syncthreads();  // the last fold's results are visible to every thread
  for (int col = key_lo + static_cast<int>(threadIdx.x); col < key_hi;
       col += static_cast<int>(blockDim.x)) {
    const bool computed = col < comp_end && col < limit;
    const float v = computed ? fin[col - key_lo] : 0.f;
    if constexpr (Op::kAccumulate) {
      if (computed) a.out[static_cast<int64_t>(h) * a.N + col] += v;
    } else if (a.reduce == static_cast<int>(GroupReduce::None)) {
      // Computed tiles were stored head by head in fold_tile.
      if (col >= comp_end) {
        const int64_t ho = static_cast<int64_t>(b) * a.Hq + static_cast<int64_t>(hkv) * a.G;
        for (int g = 0; g < a.G; ++g) a.out[(ho + g) * a.n_out + col] = 0.f;
      }
    } else {
      const float w = (a.reduce == static_cast<int>(GroupReduce::Mean)) ? v / static_cast<float>(a.G) : v;
      a.out[static_cast<int64_t>(h) * a.n_out + col] = w;
    }
  }
}

template <class E, class Op>
__global__ void __launch_bounds__(E::kThreads, E::kMinBlocks) colsum_kernel(const Args a) {
  __shared__ Shared<E> sh;
  const bool two_pass = a.lse_in == nullptr;
  int pass = 2, h, sub;
  if (two_pass) {
    if (threadIdx.x == 0) sh.ticket = static_cast<int>(atomicAdd(a.counters, 1u));
    __syncthreads();
    decode_ticket(a, sh.ticket, pass, h, sub);
  } else {
    h = static_cast<int>(blockIdx.x) / a.s2;
    sub = static_cast<int>(blockIdx.x) - h * a.s2;
  }
  const int b = h / a.Hkv, hkv = h - b * a.Hkv;
  const int L = seq_len_of(a, b);
  if (pass == 1) {
    const int split = sub / a.chunks, chunk = sub - split * a.chunks;
    const int key_lo = split * a.ks1;
    const int key_hi = min(key_lo + a.ks1, L);  // no row sees a key >= L
    if (key_lo < key_hi)
      E::template pass1<Op>(a, sh, b, hkv, h, L, chunk * E::kRC, key_lo, key_hi, split);
    finish_pass1(a, sh, h, L);
    return;
  }
  const int key_lo = sub * a.ks2;
  const int key_hi = min(key_lo + a.ks2, a.n_out);
  // Keys that get a value: SnapKV votes for the prefix j < L - W only; Keyformer updates j < L.
  const int limit = Op::kAccumulate ? L : L - a.R;
  const int comp_hi = min(key_hi, limit);
  const int ntiles = comp_hi > key_lo ? (comp_hi - key_lo + E::kTN - 1) / E::kTN : 0;
  if (ntiles > 0) {
    if (two_pass) wait_ready(a, h);
    E::template pass2<Op>(a, sh, b, hkv, h, L, key_lo, ntiles, limit);
  }
  write_outputs<Op>(a, sh.fin, b, hkv, h, key_lo, key_hi, key_lo + ntiles * E::kTN, limit);
}

// ------------------------------------------------------------------------------------------
// Host launch.

inline bool aligned16(const void* p, int64_t sB, int64_t sH, int64_t sS) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0 && sB % 8 == 0 && sH % 8 == 0 && sS % 8 == 0;
}

template <class E, class Op>
cudaError_t launch_engine(Args a, void* workspace, const Plan& plan, cudaStream_t stream) {
  const bool two_pass = a.lse_in == nullptr;
  const int64_t chunks = ceil_div(a.rows_p, E::kRC);
  const int64_t iph1 = two_pass ? chunks * a.s1 : 0;
  const int64_t per_head = iph1 + a.s2;
  const int64_t total = static_cast<int64_t>(a.heads) * per_head;
  if (total <= 0) return cudaSuccess;
  if (total > INT_MAX) return cudaErrorInvalidValue;
  a.chunks = static_cast<int32_t>(chunks);
  a.iph1 = static_cast<int32_t>(iph1);
  a.iph2 = a.s2;
  a.lag = 1;
  if (two_pass) {
    if (workspace == nullptr) return cudaErrorInvalidValue;
    char* ws = static_cast<char*>(workspace);
    a.counters = reinterpret_cast<unsigned int*>(ws);
    a.lse2 = reinterpret_cast<float*>(ws + plan.off_lse2);
    a.part = reinterpret_cast<float2*>(ws + plan.off_part);
    cudaError_t err = cudaMemsetAsync(
        ws, 0, static_cast<size_t>(1 + 2 * static_cast<int64_t>(a.heads)) * sizeof(unsigned int), stream);
    if (err != cudaSuccess) return err;
    int dev = 0, sms = 0, per_sm = 0;
    err = cudaGetDevice(&dev);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (err == cudaSuccess)
      err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, colsum_kernel<E, Op>, E::kThreads, 0);
    if (err != cudaSuccess) return err;
    const int64_t resident = static_cast<int64_t>(std::max(per_sm, 1)) * std::max(sms, 1);
    const int64_t lag = ceil_div(resident * kLagNum, static_cast<int64_t>(kLagDen) * per_head);
    a.lag = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(lag, 1), a.heads));
  }
  colsum_kernel<E, Op><<<static_cast<unsigned int>(total), E::kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

// Picks the engine: tensor cores where the dtype, head dim and device allow, SIMT otherwise.
template <class Op>
cudaError_t launch(Args a, DType dtype, void* workspace, const Plan& plan, cudaStream_t stream) {
  int dev = 0, major = 0, minor = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (err != cudaSuccess) return err;
  const int cc = major * 10 + minor;
  const bool tc_dim = a.D == 64 || a.D == 128;
  if (tc_dim && (dtype == DType::F16 || dtype == DType::BF16)) {
    a.vec_q = aligned16(a.q, a.q_sB, a.q_sH, a.q_sS) ? 1 : 0;
    a.vec_k = aligned16(a.k, a.k_sB, a.k_sH, a.k_sS) ? 1 : 0;
  }
  if (tc_dim && dtype == DType::F16 && cc >= 75) {
    return a.D == 64 ? launch_engine<TcEngine<__half, 64>, Op>(a, workspace, plan, stream)
                     : launch_engine<TcEngine<__half, 128>, Op>(a, workspace, plan, stream);
  }
  if (tc_dim && dtype == DType::BF16 && cc >= 80) {
    return a.D == 64 ? launch_engine<TcEngine<__nv_bfloat16, 64>, Op>(a, workspace, plan, stream)
                     : launch_engine<TcEngine<__nv_bfloat16, 128>, Op>(a, workspace, plan, stream);
  }
  switch (dtype) {
    case DType::F32: return launch_engine<SimtEngine<float>, Op>(a, workspace, plan, stream);
    case DType::F16: return launch_engine<SimtEngine<__half>, Op>(a, workspace, plan, stream);
    case DType::BF16: return launch_engine<SimtEngine<__nv_bfloat16>, Op>(a, workspace, plan, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace kvsift::cuda::colsum
