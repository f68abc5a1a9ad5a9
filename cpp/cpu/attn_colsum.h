// kvsift/cpp/cpu/attn_colsum.h: the blocked core shared by snapkv_scores.cc and keyformer.cc.
// Both ops are "softmax of each query row over its causally visible keys, then column sums":
// SnapKV reduces the G*W window rows of a KV head into votes, Keyformer adds the G*T step rows
// into its running scores. Semantics: common/params.h (SnapkvScoresParams, AccumulateParams).
//
// Work unit: one (batch, KV head) "pair" against one tile of Tk keys. A tile of K is widened to
// f32 and transposed once ([D][Tk], so the register kernel broadcasts q and streams keys), then
// every row of the group is run against it. The softmax needs each row's max and sum over all
// tiles before any column sum, hence two passes:
//   pass 1  per (pair, tile): logits, per-row tile max m_t and sum s_t of exp(l - m_t); the
//           exponentials are kept in a scratch store when it fits the budget below;
//   combine per (pair, row): M = max_t m_t, S = sum_t s_t exp(m_t - M) in tile order, and the
//           per-tile factor exp(m_t - M) / S;
//   pass 2  per (pair, tile): p = e * factor (from the store, or the same logits recomputed),
//           column sums over the rows, the group reduce, and the write.
// A caller-supplied log-sum-exp replaces pass 1 and the combine: p = exp(l - lse) in one pass.
// Task boundaries depend on the shapes only and every sum runs in a fixed order, so the result
// is the same for any number of threads.
//
// Everything sits in an unnamed namespace on purpose: each of the two translation units gets a
// private copy, and the target_clones resolvers below stay local to it (GCC's ifunc clones of an
// inline function shared between objects are fragile).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "../../common/params.h"
#include "../../common/philox.h"
#include "half.h"
#include "parallel.h"

// The addon is built for baseline x86-64 (SSE2, no FMA). The hot functions get AVX-512 and
// AVX2+FMA clones picked at load time where the toolchain has ifuncs; elsewhere they compile once
// for whatever the build targets.
// KVSIFT_ATTN_PORTABLE (tests only) compiles the plain C++ path that other compilers get.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(KVSIFT_ATTN_PORTABLE)
#define KVSIFT_ATTN_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define KVSIFT_ATTN_X86_CLONES 1
#else
#define KVSIFT_ATTN_CLONES
#endif
#if defined(__GNUC__)
#define KVSIFT_ATTN_INLINE inline __attribute__((always_inline))
#else
#define KVSIFT_ATTN_INLINE inline
#endif

namespace kvsift::cpu {
namespace {

enum class ColsumKind { Snapkv, Accumulate };

// Exponentials of a pair chunk are stored (no second matmul) while they fit this many bytes (a
// few MB: pass 2 reads them back from L2/L3, not DRAM); a pair larger than kStoreMaxPairBytes
// recomputes its logits in pass 2 instead.
constexpr int64_t kStoreChunkBytes = int64_t{4} << 20;
constexpr int64_t kStoreMaxPairBytes = int64_t{256} << 20;
// Per-tile row partials and the f32 copy of Q of one chunk.
constexpr int64_t kChunkBytes = int64_t{64} << 20;

// One problem for the core. T is the number of query rows per query head: SnapKV's window W or
// the step's T of Keyformer/H2O/TOVA. Rows of a pair (b, hkv) are r = g * T + t for the group's
// query heads hq = hkv * G + g and the T queries t; query t sits at absolute position L - T + t.
struct ColsumProblem {
  ColsumKind kind;
  View4 q, k;
  DType dtype;
  int32_t B, Hq, Hkv, T, N, D;
  const int32_t* seq_lens;
  const float* lse;  // [B, Hq, T] or nullptr (SnapKV only)
  float scale, tau;  // logit = (q.k * scale + g) / tau
  bool noise;        // g = philox_gumbel(seed, step, b * Hq + hq, t, j), else 0
  uint64_t seed, step;
  GroupReduce group_reduce;  // SnapKV
  float* out;                // SnapKV: [B, Hout, N - T]; Accumulate: scores [B, Hkv, N]
  // Scratch budgets (the defaults below); tests shrink them to reach the other paths.
  int64_t store_chunk_bytes = kStoreChunkBytes;
  int64_t store_max_pair_bytes = kStoreMaxPairBytes;
  int64_t chunk_bytes = kChunkBytes;
};

// The core's problem of each op, filled from the op's parameters (common/params.h) in one place:
// the fields both ops' params share, then each op's own.
template <typename Params>
ColsumProblem colsum_problem(ColsumKind kind, const Params& p, int32_t T, float tau, float* out) {
  // in ColsumProblem's field order: kind, q, k, dtype, B, Hq, Hkv, T, N, D, seq_lens, lse, scale,
  // tau, noise, seed, step, group_reduce, out
  return ColsumProblem{kind, p.q, p.k, p.dtype, p.B, p.Hq, p.Hkv, T, p.N, p.D, p.seq_lens, nullptr,
                       p.scale, tau, false, 0, 0, GroupReduce::Sum, out};
}

inline ColsumProblem snapkv_problem(const SnapkvScoresParams& p) {
  // tau 1: (x * scale + 0) / 1 is exactly x * scale
  ColsumProblem P = colsum_problem(ColsumKind::Snapkv, p, p.W, 1.0f, p.out);
  P.lse = p.lse;
  P.group_reduce = p.group_reduce;
  return P;
}

inline ColsumProblem accumulate_problem(const AccumulateParams& p) {
  ColsumProblem P = colsum_problem(ColsumKind::Accumulate, p, p.T, p.tau, p.scores);
  P.noise = p.noise == NoiseKind::Gumbel;
  P.seed = p.seed;
  P.step = p.step;
  return P;
}

// Rows per block when logits are recomputed into a small buffer: a multiple of every register
// block's row count (8, 6, 3, 4), so rows group into register blocks as in the stored path.
constexpr int64_t kRowBlock = 48;

// exp(x) in f32 to about 2 ulp (Cephes' expf polynomial), written so loops over arrays
// auto-vectorize: no libm call, the power of two built from the bits of the rounding constant.
// x < -87 gives exactly 0 (masked keys, underflow), NaN stays NaN, x > 88 gives +inf.
KVSIFT_ATTN_INLINE float exp_f32(float x) {
  const float lo = -87.0f, hi = 88.0f;
  float xc = x < lo ? lo : x;  // comparisons, not std::max: NaN must survive
  xc = xc > hi ? hi : xc;
  // 1.5 * 2^23: the sum's low mantissa bits hold round(x * log2(e)) as a two's-complement integer.
  const float magic = 12582912.0f;
  const float jf = xc * 1.44269504088896341f + magic;
  const float n = jf - magic;
  float r = xc - n * 0.693359375f;  // ln 2 split in two so n * hi-part is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  uint32_t jb;
  std::memcpy(&jb, &jf, 4);
  const uint32_t sb = (jb << 23) + 0x3f800000u;  // 2^n: n into the exponent field
  float s;
  std::memcpy(&s, &sb, 4);
  const float e = y * s;
  return x < lo ? 0.0f : (x > hi ? std::numeric_limits<float>::infinity() : e);
}

// A register block of RB rows x KB keys: acc[r][c] = sum_d q[r][d] * kt[d][c], d ascending.
// Every (r, c) accumulates on its own in the same order, whatever block it falls in. With GCC /
// Clang vector types the accumulators are NV explicit vectors per row: the auto-vectorizer
// handles a plain [RB][KB] array well for some shapes and spills it for others.
#if defined(__GNUC__) && !defined(KVSIFT_ATTN_PORTABLE)
#define KVSIFT_ATTN_VECTOR_TYPES 1
typedef float AttnVec4 __attribute__((vector_size(16)));
typedef float AttnVec8 __attribute__((vector_size(32)));
typedef float AttnVec16 __attribute__((vector_size(64)));

template <int RB, int KB, typename V>
KVSIFT_ATTN_INLINE void micro_logits(const float* q, int64_t D, const float* kt, int64_t ldk,
                                     int64_t ncols, float* dst, int64_t ldd) {
  constexpr int VL = static_cast<int>(sizeof(V) / sizeof(float));
  constexpr int NV = KB / VL;
  static_assert(NV * VL == KB, "KB must be a multiple of the vector length");
  for (int64_t c0 = 0; c0 < ncols; c0 += KB) {
    V acc[RB][NV];
    for (int r = 0; r < RB; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = V{};
    const float* kp = kt + c0;
    for (int64_t d = 0; d < D; ++d, kp += ldk) {
      V k[NV];
      for (int v = 0; v < NV; ++v) std::memcpy(&k[v], kp + v * VL, sizeof(V));
      for (int r = 0; r < RB; ++r) {
        const float qv = q[r * D + d];
        for (int v = 0; v < NV; ++v) acc[r][v] += qv * k[v];
      }
    }
    for (int r = 0; r < RB; ++r)
      for (int v = 0; v < NV; ++v) std::memcpy(dst + r * ldd + c0 + v * VL, &acc[r][v], sizeof(V));
  }
}
#else
template <int RB, int KB, typename V>
KVSIFT_ATTN_INLINE void micro_logits(const float* q, int64_t D, const float* kt, int64_t ldk,
                                     int64_t ncols, float* dst, int64_t ldd) {
  for (int64_t c0 = 0; c0 < ncols; c0 += KB) {
    float acc[RB][KB];
    for (int r = 0; r < RB; ++r)
      for (int c = 0; c < KB; ++c) acc[r][c] = 0.0f;
    const float* kp = kt + c0;
    for (int64_t d = 0; d < D; ++d, kp += ldk) {
      for (int r = 0; r < RB; ++r) {
        const float qv = q[r * D + d];
        for (int c = 0; c < KB; ++c) acc[r][c] += qv * kp[c];
      }
    }
    for (int r = 0; r < RB; ++r)
      for (int c = 0; c < KB; ++c) dst[r * ldd + c0 + c] = acc[r][c];
  }
}
#endif

// Maximum of x[0, n), NaN ignored (a NaN logit still poisons the row through its sum).
KVSIFT_ATTN_INLINE float row_max(const float* x, int64_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  float m = ninf;
  int64_t c = 0;
#if defined(KVSIFT_ATTN_VECTOR_TYPES) && !defined(__clang__)
  // GCC leaves the scalar form of this loop scalar; its vector ?: becomes maxps.
  AttnVec8 m0 = AttnVec8{} + ninf, m1 = m0;
  for (; c + 16 <= n; c += 16) {
    AttnVec8 u, v;
    std::memcpy(&u, x + c, sizeof u);
    std::memcpy(&v, x + c + 8, sizeof v);
    m0 = u > m0 ? u : m0;
    m1 = v > m1 ? v : m1;
  }
  for (int l = 0; l < 8; ++l) {
    m = m0[l] > m ? m0[l] : m;
    m = m1[l] > m ? m1[l] : m;
  }
#endif
  for (; c < n; ++c) m = x[c] > m ? x[c] : m;
  return m;
}

// x[c] = exp(x[c] - m) for c < n; returns their sum (16 lanes, then a fixed tree).
KVSIFT_ATTN_INLINE float exp_shift_sum(float* x, int64_t n, float m) {
  constexpr int kL = 16;
  float acc[kL];
  for (int l = 0; l < kL; ++l) acc[l] = 0.0f;
  int64_t c = 0;
  for (; c + kL <= n; c += kL)
    for (int l = 0; l < kL; ++l) {
      const float e = exp_f32(x[c + l] - m);
      x[c + l] = e;
      acc[l] += e;
    }
  for (; c < n; ++c) {
    const float e = exp_f32(x[c] - m);
    x[c] = e;
    acc[0] += e;
  }
  for (int w = kL / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// The instruction set the running clone was built for, and so the register block that fits its
// registers: AVX-512 8 rows x 2 zmm, AVX2+FMA 6 x 2 ymm, SSE2 3 x 4 xmm.
enum class AttnIsa { Base, Avx2, Avx512 };

inline AttnIsa detect_isa() {
#if defined(KVSIFT_ATTN_X86_CLONES)
  // The same tests the target_clones resolver makes, so the shape matches the clone that runs.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return AttnIsa::Avx512;
  if (__builtin_cpu_supports("x86-64-v3")) return AttnIsa::Avx2;
  return AttnIsa::Base;
#elif defined(__AVX512F__)
  return AttnIsa::Avx512;
#elif defined(__AVX2__) && defined(__FMA__)
  return AttnIsa::Avx2;
#else
  return AttnIsa::Base;
#endif
}

// Everything a task needs, fixed for one chunk of pairs.
struct ColsumCtx {
  const ColsumProblem* P;
  int64_t G, R, T, D, N, Tk, ntiles;
  int64_t pair0;    // first pair of the chunk (pair = b * Hkv + hkv)
  const float* qf;  // [chunk pairs, R, D] f32
  float* part_m;    // [chunk pairs, ntiles, R]: tile max, or nullptr with lse
  float* part_s;    // same: tile sum, then (after the combine) the tile's factor
  float* store;     // [chunk pairs, ntiles, R, Tk] exponentials, or nullptr (recompute)
  AttnIsa isa;      // picks the register block shape
};

struct PairInfo {
  int64_t b, hkv, L, local;
};

inline PairInfo pair_info(const ColsumCtx& X, int64_t local) {
  const ColsumProblem& P = *X.P;
  PairInfo pi;
  pi.local = local;
  const int64_t pair = X.pair0 + local;
  pi.b = pair / P.Hkv;
  pi.hkv = pair % P.Hkv;
  int64_t L = P.seq_lens != nullptr ? P.seq_lens[pi.b] : P.N;
  pi.L = std::min<int64_t>(std::max<int64_t>(L, 0), P.N);
  return pi;
}

// Keys of tile [j0, j0 + n) row r can see: it sits at L - T + t and sees j <= that.
inline int64_t visible(const ColsumCtx& X, const PairInfo& pi, int64_t r, int64_t j0, int64_t n) {
  const int64_t pos = pi.L - X.T + (r % X.T);
  return std::min<int64_t>(std::max<int64_t>(pos - j0 + 1, 0), n);
}

#if defined(KVSIFT_ATTN_VECTOR_TYPES)
typedef int32_t AttnIdx8 __attribute__((vector_size(32)));

// out = the lanes of (a, b) picked by I (0-7 from a, 8-15 from b). References, not values:
// 32-byte vector arguments would change the ABI of the SSE2 build (and GCC says so).
template <int I0, int I1, int I2, int I3, int I4, int I5, int I6, int I7>
KVSIFT_ATTN_INLINE void shuffle8(const AttnVec8& a, const AttnVec8& b, AttnVec8& out) {
#if defined(__clang__)
  out = __builtin_shufflevector(a, b, I0, I1, I2, I3, I4, I5, I6, I7);
#else
  out = __builtin_shuffle(a, b, AttnIdx8{I0, I1, I2, I3, I4, I5, I6, I7});
#endif
}

// The 8 x 8 block at rows[i] + d0 (i = key) written to dst[d * ld + i] (d = d0 .. d0 + 7):
// unpack pairs, then pairs of pairs, then the two 128-bit halves.
KVSIFT_ATTN_INLINE void transpose8x8(const float* const* rows, int64_t d0, float* dst, int64_t ld) {
  AttnVec8 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) std::memcpy(&r[i], rows[i] + d0, sizeof(AttnVec8));
  for (int i = 0; i < 8; i += 2) {
    shuffle8<0, 8, 1, 9, 4, 12, 5, 13>(r[i], r[i + 1], t[i]);
    shuffle8<2, 10, 3, 11, 6, 14, 7, 15>(r[i], r[i + 1], t[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    shuffle8<0, 1, 8, 9, 4, 5, 12, 13>(t[i], t[i + 2], u[i]);
    shuffle8<2, 3, 10, 11, 6, 7, 14, 15>(t[i], t[i + 2], u[i + 1]);
    shuffle8<0, 1, 8, 9, 4, 5, 12, 13>(t[i + 1], t[i + 3], u[i + 2]);
    shuffle8<2, 3, 10, 11, 6, 7, 14, 15>(t[i + 1], t[i + 3], u[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    AttnVec8 lo, hi;
    shuffle8<0, 1, 2, 3, 8, 9, 10, 11>(u[i], u[i + 4], lo);
    shuffle8<4, 5, 6, 7, 12, 13, 14, 15>(u[i], u[i + 4], hi);
    std::memcpy(dst + i * ld, &lo, sizeof(AttnVec8));
    std::memcpy(dst + (i + 4) * ld, &hi, sizeof(AttnVec8));
  }
}
#endif

// dst[0, D) = the D elements of a K or V row at src, widened to f32 (F16 with the hardware
// conversion where the CPU has one: exact, like f16_to_f32).
KVSIFT_ATTN_INLINE void widen_row(const char* src, DType dtype, int64_t D, float* dst) {
  switch (dtype) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(D) * 4); break;
    case DType::BF16: {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(src);
      for (int64_t d = 0; d < D; ++d) dst[d] = bf16_to_f32(h[d]);
      break;
    }
    default: f16_to_f32_row(reinterpret_cast<const uint16_t*>(src), dst, D); break;
  }
}

// kt[d * Tk + c] = k[b, hkv, j0 + c, d] as f32 for c < n, zero up to the next multiple of 32.
// Eight keys at a time: their rows are widened to f32 first (into tmp, [8][D]; f32 rows are read
// in place), then transposed in 8 x 8 blocks.
KVSIFT_ATTN_CLONES
void pack_keys(const ColsumCtx& X, const PairInfo& pi, int64_t j0, int64_t n, float* kt,
               float* tmp) {
  const ColsumProblem& P = *X.P;
  const int64_t es = dtype_size(P.dtype);
  const char* base = static_cast<const char*>(P.k.data) + (pi.b * P.k.sB + pi.hkv * P.k.sH) * es;
  const int64_t D = X.D, Tk = X.Tk;
  auto key = [&](int64_t j) { return base + j * P.k.sS * es; };
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const float* rows[8];
    for (int i = 0; i < 8; ++i) {
      const char* src = key(j0 + c + i);
      if (P.dtype == DType::F32) {
        rows[i] = reinterpret_cast<const float*>(src);  // read in place
        continue;
      }
      widen_row(src, P.dtype, D, tmp + i * D);
      rows[i] = tmp + i * D;
    }
    int64_t d = 0;
#if defined(KVSIFT_ATTN_VECTOR_TYPES)
    for (; d + 8 <= D; d += 8) transpose8x8(rows, d, kt + d * Tk + c, Tk);
#endif
    for (; d < D; ++d)
      for (int i = 0; i < 8; ++i) kt[d * Tk + c + i] = rows[i][d];
  }
  for (; c < n; ++c) {
    const char* src = key(j0 + c);
    for (int64_t d = 0; d < D; ++d) kt[d * Tk + c] = load_as_f32(src, d, P.dtype);
  }
  const int64_t padded = std::min<int64_t>((n + 31) / 32 * 32, Tk);
  for (int64_t d = 0; d < D; ++d)
    for (int64_t cc = n; cc < padded; ++cc) kt[d * Tk + cc] = 0.0f;
}

// A block of `rows` <= RB rows: the row count becomes a template argument so the accumulators
// of the short tail block (R not a multiple of RB) stay in registers too.
template <int RB, int KB, typename V>
KVSIFT_ATTN_INLINE void micro_logits_rows(int64_t rows, const float* q, int64_t D, const float* kt,
                                          int64_t ldk, int64_t ncols, float* dst, int64_t ldd) {
  if (rows == RB) {
    micro_logits<RB, KB, V>(q, D, kt, ldk, ncols, dst, ldd);
  } else if constexpr (RB > 1) {
    micro_logits_rows<RB - 1, KB, V>(rows, q, D, kt, ldk, ncols, dst, ldd);
  }
}

template <int RB, int KB, typename V>
KVSIFT_ATTN_INLINE void rows_logits_rb(const ColsumCtx& X, const PairInfo& pi, int64_t j0,
                                       int64_t n, const float* kt, int64_t r0, int64_t r1,
                                       float* dst) {
  const float* q = X.qf + pi.local * X.R * X.D;
  for (int64_t rb = r0; rb < r1; rb += RB) {
    const int64_t rows = std::min<int64_t>(RB, r1 - rb);
    int64_t nv = 0;
    for (int64_t r = rb; r < rb + rows; ++r) nv = std::max(nv, visible(X, pi, r, j0, n));
    if (nv == 0) continue;  // the whole block is causally masked in this tile
    const int64_t ncols = (nv + KB - 1) / KB * KB;
    micro_logits_rows<RB, KB, V>(rows, q + rb * X.D, X.D, kt, X.Tk, ncols, dst + (rb - r0) * X.Tk,
                                 X.Tk);
  }
}

// Raw dot products q_r . k_j of rows [r0, r1) against the packed tile [j0, j0 + n) into dst
// (row r at dst + (r - r0) * Tk), for each row's visible keys at least.
KVSIFT_ATTN_CLONES
void tile_logits(const ColsumCtx& X, const PairInfo& pi, int64_t j0, int64_t n, const float* kt,
                 int64_t r0, int64_t r1, float* dst) {
#if defined(KVSIFT_ATTN_VECTOR_TYPES)
  switch (X.isa) {
    case AttnIsa::Avx512: rows_logits_rb<8, 32, AttnVec16>(X, pi, j0, n, kt, r0, r1, dst); break;
    case AttnIsa::Avx2: rows_logits_rb<6, 16, AttnVec8>(X, pi, j0, n, kt, r0, r1, dst); break;
    default: rows_logits_rb<3, 16, AttnVec4>(X, pi, j0, n, kt, r0, r1, dst); break;
  }
#else
  rows_logits_rb<4, 8, float>(X, pi, j0, n, kt, r0, r1, dst);
#endif
}

// Logits to exponentials, rows [r0, r1) of dst as tile_logits left them: for each visible key c,
// l = (dot * scale + g) / tau and e = exp(l - m_r). With mref == nullptr m_r is the row's max
// over the tile and (m_r, sum of e) go to m_out / s_out (-inf, 0 for a row that sees none of the
// tile); otherwise m_r = mref[r]. Entries past a row's visible keys are left as they are.
KVSIFT_ATTN_CLONES
void tile_exp(const ColsumCtx& X, const PairInfo& pi, int64_t j0, int64_t n, int64_t r0,
              int64_t r1, float* dst, const float* mref, float* m_out, float* s_out) {
  const ColsumProblem& P = *X.P;
  const float scale = P.scale, tau = P.tau;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t nv = visible(X, pi, r, j0, n);
    float* x = dst + (r - r0) * X.Tk;
    if (nv == 0) {
      if (mref == nullptr) {
        m_out[r] = -std::numeric_limits<float>::infinity();
        s_out[r] = 0.0f;
      }
      continue;
    }
    if (P.noise) {
      const int64_t g = r / X.T, t = r % X.T;
      const uint32_t bh = static_cast<uint32_t>(pi.b * P.Hq + pi.hkv * X.G + g);
      // The Philox bits of a run of keys first (that loop vectorizes), then the two double logs
      // per key exactly as philox_gumbel takes them, so g is bit for bit the gumbel op's.
      constexpr int64_t kRun = 64;
      uint32_t bits[kRun];
      for (int64_t c0 = 0; c0 < nv; c0 += kRun) {
        const int64_t m = std::min(kRun, nv - c0);
        for (int64_t i = 0; i < m; ++i)
          bits[i] = philox_bits(P.seed, P.step, bh, static_cast<uint32_t>(t),
                                static_cast<uint32_t>(j0 + c0 + i));
        for (int64_t i = 0; i < m; ++i)
          x[c0 + i] = (x[c0 + i] * scale + gumbel_from_bits(bits[i])) / tau;
      }
    } else {
      for (int64_t c = 0; c < nv; ++c) x[c] = x[c] * scale / tau;
    }
    if (mref == nullptr) {
      const float m = row_max(x, nv);
      m_out[r] = m;
      s_out[r] = exp_shift_sum(x, nv, m);
    } else {
      exp_shift_sum(x, nv, mref[r]);
    }
  }
}

// acc_h[c] += factor_r * e_r[c] for rows [r0, r1) (rows of dst as tile_exp left them), each into
// its head's accumulator (SnapKV: heads = G) or all into one (heads = 1), rows in order.
KVSIFT_ATTN_CLONES
void tile_colsum(const ColsumCtx& X, const PairInfo& pi, int64_t j0, int64_t nvote, int64_t r0,
                 int64_t r1, const float* e, const float* factor, int64_t heads, float* acc) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t nsum = visible(X, pi, r, j0, nvote);
    const float f = factor != nullptr ? factor[r] : 1.0f;
    if (nsum == 0 || f == 0.0f) continue;  // f == 0: the row's tile underflowed or saw nothing
    const float* er = e + (r - r0) * X.Tk;
    float* a = acc + (heads == 1 ? 0 : r / X.T) * X.Tk;
    for (int64_t c = 0; c < nsum; ++c) a[c] += f * er[c];
  }
}

// Scratch of one parallel_for chunk, reused across its tasks.
struct ColsumScratch {
  std::vector<float> kt, tmp, rows, acc, mref;
  ColsumScratch(const ColsumCtx& X, bool need_rows, bool need_acc) {
    kt.resize(static_cast<size_t>(X.D * X.Tk));
    tmp.resize(static_cast<size_t>(8 * X.D));
    if (need_rows) rows.resize(static_cast<size_t>(kRowBlock * X.Tk));
    if (need_acc) acc.resize(static_cast<size_t>(X.G * X.Tk));
    if (need_rows && need_acc) mref.resize(static_cast<size_t>(X.R));
  }
};

inline void colsum_pass1(const ColsumCtx& X, int64_t task0, int64_t task1) {
  ColsumScratch S(X, X.store == nullptr, false);
  for (int64_t task = task0; task < task1; ++task) {
    const PairInfo pi = pair_info(X, task / X.ntiles);
    const int64_t tile = task % X.ntiles;
    const int64_t j0 = tile * X.Tk;
    const int64_t slot = pi.local * X.ntiles + tile;
    float* m_out = X.part_m + slot * X.R;
    float* s_out = X.part_s + slot * X.R;
    const int64_t n = std::min<int64_t>(X.Tk, pi.L - j0);
    if (n <= 0) {  // past the row's real tokens: nobody sees this tile
      std::fill(m_out, m_out + X.R, -std::numeric_limits<float>::infinity());
      std::fill(s_out, s_out + X.R, 0.0f);
      continue;
    }
    pack_keys(X, pi, j0, n, S.kt.data(), S.tmp.data());
    // Stored: all rows straight into the store. Otherwise blocks of rows through a small buffer.
    const int64_t block = X.store != nullptr ? X.R : kRowBlock;
    for (int64_t r0 = 0; r0 < X.R; r0 += block) {
      const int64_t r1 = std::min(X.R, r0 + block);
      float* dst = X.store != nullptr ? X.store + slot * X.R * X.Tk : S.rows.data();
      tile_logits(X, pi, j0, n, S.kt.data(), r0, r1, dst);
      tile_exp(X, pi, j0, n, r0, r1, dst, nullptr, m_out, s_out);
    }
  }
}

// One row's tile partials (max m[t * stride], sum s[t * stride] for t < ntiles) become the
// factors exp(m_t - M) / S in s, in tile order: the row's softmax is then e * factor of its tile.
inline void softmax_factors(const float* m, float* s, int64_t ntiles, int64_t stride) {
  const float ninf = -std::numeric_limits<float>::infinity();
  float M = ninf;
  for (int64_t t = 0; t < ntiles; ++t) M = m[t * stride] > M ? m[t * stride] : M;
  if (M == ninf) {  // the row sees no key at all (a query before the sequence start)
    for (int64_t t = 0; t < ntiles; ++t) s[t * stride] = 0.0f;
    return;
  }
  float sum = 0.0f;
  for (int64_t t = 0; t < ntiles; ++t)
    if (m[t * stride] != ninf) sum += s[t * stride] * std::exp(m[t * stride] - M);
  for (int64_t t = 0; t < ntiles; ++t)
    s[t * stride] = m[t * stride] == ninf ? 0.0f : std::exp(m[t * stride] - M) / sum;
}

// Per (pair, row): the tile partials become the factors.
inline void colsum_combine(const ColsumCtx& X, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t local = i / X.R, r = i % X.R;
    const int64_t at = local * X.ntiles * X.R + r;
    softmax_factors(X.part_m + at, X.part_s + at, X.ntiles, X.R);
  }
}

inline void colsum_pass2(const ColsumCtx& X, int64_t task0, int64_t task1) {
  const ColsumProblem& P = *X.P;
  const bool snap = P.kind == ColsumKind::Snapkv;
  const bool recompute = X.store == nullptr;
  ColsumScratch S(X, recompute, true);
  // SnapKV sums each head's rows first and reduces the heads after; Keyformer sums every row.
  const int64_t heads = snap ? X.G : 1;
  for (int64_t task = task0; task < task1; ++task) {
    const PairInfo pi = pair_info(X, task / X.ntiles);
    const int64_t tile = task % X.ntiles;
    const int64_t j0 = tile * X.Tk;
    const int64_t slot = pi.local * X.ntiles + tile;
    // Columns this task owns in the output, and how many of them get votes / scores.
    const int64_t out_len = snap ? P.N - X.T : P.N;
    const int64_t own = std::min<int64_t>(X.Tk, out_len - j0);
    if (own <= 0) continue;
    const int64_t vote_end = snap ? pi.L - X.T : pi.L;
    const int64_t nvote = std::min<int64_t>(std::max<int64_t>(vote_end - j0, 0), own);
    float* acc = S.acc.data();
    std::fill(acc, acc + heads * X.Tk, 0.0f);
    if (nvote > 0) {
      const float* factor = P.lse != nullptr ? nullptr : X.part_s + slot * X.R;
      if (!recompute) {
        tile_colsum(X, pi, j0, nvote, 0, X.R, X.store + slot * X.R * X.Tk, factor, heads, acc);
      } else {
        // The same logits and exponentials as pass 1 (same kernel, same m), so the result does
        // not depend on whether the store fitted.
        float* mref = S.mref.data();
        for (int64_t r = 0; r < X.R; ++r) {
          if (P.lse != nullptr) {
            const int64_t hq = pi.hkv * X.G + r / X.T;
            mref[r] = P.lse[(pi.b * P.Hq + hq) * X.T + r % X.T];
          } else {
            mref[r] = X.part_m[slot * X.R + r];
          }
        }
        pack_keys(X, pi, j0, nvote, S.kt.data(), S.tmp.data());
        for (int64_t r0 = 0; r0 < X.R; r0 += kRowBlock) {
          const int64_t r1 = std::min(X.R, r0 + kRowBlock);
          tile_logits(X, pi, j0, nvote, S.kt.data(), r0, r1, S.rows.data());
          tile_exp(X, pi, j0, nvote, r0, r1, S.rows.data(), mref, nullptr, nullptr);
          tile_colsum(X, pi, j0, nvote, r0, r1, S.rows.data(), factor, heads, acc);
        }
      }
    }
    if (snap) {
      const int64_t Nout = P.N - X.T;
      if (P.group_reduce == GroupReduce::None) {
        for (int64_t g = 0; g < X.G; ++g) {
          float* o = P.out + (pi.b * P.Hq + pi.hkv * X.G + g) * Nout + j0;
          std::copy(acc + g * X.Tk, acc + g * X.Tk + nvote, o);
          std::fill(o + nvote, o + own, 0.0f);
        }
      } else {
        float* o = P.out + (pi.b * P.Hkv + pi.hkv) * Nout + j0;
        if (P.group_reduce == GroupReduce::Max) {
          // NaN wins, as torch's max does
          for (int64_t c = 0; c < nvote; ++c) {
            float v = acc[c];
            for (int64_t g = 1; g < X.G; ++g) {
              const float w = acc[g * X.Tk + c];
              v = (w > v || w != w) ? w : v;
            }
            o[c] = v;
          }
        } else {
          const float div = P.group_reduce == GroupReduce::Mean ? static_cast<float>(X.G) : 1.0f;
          for (int64_t c = 0; c < nvote; ++c) {
            float v = acc[c];
            for (int64_t g = 1; g < X.G; ++g) v += acc[g * X.Tk + c];
            o[c] = v / div;
          }
        }
        std::fill(o + nvote, o + own, 0.0f);
      }
    } else {
      float* o = P.out + (pi.b * P.Hkv + pi.hkv) * P.N + j0;
      for (int64_t c = 0; c < nvote; ++c) o[c] += acc[c];
    }
  }
}

// Keys per tile: the packed [D][Tk] f32 tile stays around 64 KB (L2-resident, one register
// block's column strip of it in L1), a multiple of 32 (the widest register block).
inline int64_t tile_keys(int64_t D) {
  const int64_t t = (16384 / std::max<int64_t>(D, 1)) / 32 * 32;
  return std::min<int64_t>(256, std::max<int64_t>(64, t));
}

// The context of P's tile passes: the shapes, Q's f32 copy qf and the register block of this CPU;
// the partials and the store (part_m, part_s, store) are the caller's to set.
inline ColsumCtx colsum_ctx(const ColsumProblem& P, int64_t Tk, int64_t ntiles, const float* qf) {
  const int64_t G = P.Hq / P.Hkv;
  // in ColsumCtx's field order: P, G, R, T, D, N, Tk, ntiles, pair0, qf, part_m, part_s, store, isa
  return ColsumCtx{&P, G, G * P.T, P.T, P.D, P.N, Tk, ntiles, 0, qf, nullptr, nullptr, nullptr, detect_isa()};
}

// Q of the np pairs from X.pair0 as contiguous f32 rows into qf (what X.qf reads), r = g * T + t.
inline void pack_queries(const ColsumCtx& X, int64_t np, float* qf) {
  const ColsumProblem& P = *X.P;
  const int64_t R = X.R, D = X.D;
  parallel_for(np * R, std::max<int64_t>(1, 4096 / D), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t pair = X.pair0 + i / R, r = i % R;
      const int64_t b = pair / P.Hkv, hq = (pair % P.Hkv) * X.G + r / P.T, t = r % P.T;
      const int64_t off = b * P.q.sB + hq * P.q.sH + t * P.q.sS;
      for (int64_t d = 0; d < D; ++d) qf[i * D + d] = load_as_f32(P.q.data, off + d, P.dtype);
    }
  });
}

// Scratch of n floats, not value-initialized: every entry is written before it is read, and
// zeroing megabytes of scratch on every call would cost about as much as a tile pass.
inline std::unique_ptr<float[]> scratch_floats(int64_t n) {
  return std::unique_ptr<float[]>(new float[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

inline void attn_colsum(const ColsumProblem& P) {
  if (P.B <= 0 || P.Hkv <= 0 || P.Hq <= 0 || P.T <= 0 || P.N <= 0 || P.D <= 0) return;
  if (P.kind == ColsumKind::Snapkv && P.N - P.T <= 0) return;
  const int64_t G = P.Hq / P.Hkv;
  const int64_t R = G * P.T, D = P.D, N = P.N;
  const int64_t Tk = tile_keys(D);
  const int64_t ntiles = (N + Tk - 1) / Tk;
  const int64_t pairs = static_cast<int64_t>(P.B) * P.Hkv;
  const bool use_lse = P.kind == ColsumKind::Snapkv && P.lse != nullptr;

  const int64_t store_pair = R * ntiles * Tk * 4;
  const bool stored = !use_lse && store_pair <= P.store_max_pair_bytes;
  const int64_t side_pair = R * D * 4 + (use_lse ? 0 : R * ntiles * 8);
  int64_t chunk = std::max<int64_t>(1, P.chunk_bytes / std::max<int64_t>(side_pair, 1));
  if (stored) {
    chunk = std::min(chunk, std::max<int64_t>(1, P.store_chunk_bytes / store_pair));
    // ...but enough tiles to keep every thread busy, within the side budget (chunking never
    // changes the result).
    const int64_t busy = (4 * static_cast<int64_t>(num_threads()) + ntiles - 1) / ntiles;
    chunk = std::max(chunk, std::min(busy, P.chunk_bytes / (store_pair + side_pair)));
  }
  chunk = std::min(chunk, pairs);

  std::unique_ptr<float[]> qf = scratch_floats(chunk * R * D), part_m, part_s, store;
  if (!use_lse) {
    part_m = scratch_floats(chunk * ntiles * R);
    part_s = scratch_floats(chunk * ntiles * R);
  }
  if (stored) store = scratch_floats(chunk * ntiles * R * Tk);

  ColsumCtx X = colsum_ctx(P, Tk, ntiles, qf.get());
  X.part_m = part_m.get();
  X.part_s = part_s.get();
  X.store = store.get();

  for (int64_t p0 = 0; p0 < pairs; p0 += chunk) {
    const int64_t np = std::min(chunk, pairs - p0);
    X.pair0 = p0;
    pack_queries(X, np, qf.get());
    const int64_t tasks = np * ntiles;
    if (!use_lse) {
      parallel_for(tasks, 1, [&](int64_t a, int64_t b) { colsum_pass1(X, a, b); });
      parallel_for(np * R, 64, [&](int64_t a, int64_t b) { colsum_combine(X, a, b); });
    }
    parallel_for(tasks, 1, [&](int64_t a, int64_t b) { colsum_pass2(X, a, b); });
  }
}

}  // namespace
}  // namespace kvsift::cpu
