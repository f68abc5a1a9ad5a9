// kvsift/cpp/cpu/streaming.cc: the streaming ops of the CPU backend: pooling of vote rows, key
// norms, protected selection scores, Gumbel noise and the head sum. Semantics: cuda/params.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../../cuda/philox.h"
#include "cpu_ops.h"
#include "half.h"
#include "parallel.h"

namespace kvsift::cpu {
namespace {

inline int64_t batch_len(const int32_t* lens, int64_t rows_per_batch, int64_t r, int64_t M) {
  int64_t len = M;
  if (lens != nullptr) len = lens[rows_per_batch > 0 ? r / rows_per_batch : 0];
  return std::min<int64_t>(std::max<int64_t>(len, 0), M);
}

// Rows worth at least ~16k elements per chunk keep the pool's overhead negligible.
inline int64_t grain_rows(int64_t row_elems) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_elems, 1));
}

// torch's max_pool1d rule: a NaN candidate always wins and a NaN maximum is never displaced,
// so NaN propagates; otherwise the first of equal values stays.
inline float max_nan(float m, float v) { return (v > m || v != v) ? v : m; }

struct SumOp {
  using T = double;
  static T identity() { return 0.0; }
  static T op(T a, T b) { return a + b; }
};
struct MaxOp {
  using T = float;
  static T identity() { return -std::numeric_limits<float>::infinity(); }
  static T op(T a, T b) { return max_nan(a, b); }
};

// Van Herk / Gil-Werman sliding window for wide kernels: over the padded row
// y = [identity x h | in[0..len) | identity x (K-1-h)], cut into blocks of K, every window of
// K is a suffix of one block joined with a prefix of the next, so each output costs one op
// whatever K is. For sums each piece accumulates at most K terms in double, which keeps the
// error of a direct sum (a global prefix sum would not: its cancellation grows with the row,
// and an inf in it would poison every later window).
template <typename Op>
void sliding_vhgw(const float* in, int64_t len, int64_t K, int64_t h, typename Op::T* g,
                  typename Op::T* s, typename Op::T* win) {
  using T = typename Op::T;
  const int64_t P = len + K - 1;
  auto y = [&](int64_t i) -> T {
    int64_t x = i - h;
    return (x >= 0 && x < len) ? static_cast<T>(in[x]) : Op::identity();
  };
  for (int64_t b0 = 0; b0 < P; b0 += K) {
    int64_t b1 = std::min(b0 + K, P);
    T acc = y(b0);
    g[b0] = acc;
    for (int64_t i = b0 + 1; i < b1; ++i) {
      acc = Op::op(acc, y(i));
      g[i] = acc;
    }
    acc = y(b1 - 1);
    s[b1 - 1] = acc;
    for (int64_t i = b1 - 2; i >= b0; --i) {
      acc = Op::op(y(i), acc);
      s[i] = acc;
    }
  }
  for (int64_t j = 0; j < len; ++j) {
    int64_t e = j + K - 1;
    win[j] = (j % K == 0) ? g[e] : Op::op(s[j], g[e]);
  }
}

// Kernels up to this width are summed directly; wider ones go through sliding_vhgw.
constexpr int64_t kDirectPoolMax = 16;

struct PoolScratch {
  std::vector<double> gd, sd, wd;
  std::vector<float> gf, sf, wf;
};

void pool_row(const float* in, float* out, int64_t len, int64_t M, int64_t K, PoolKind kind,
              PoolScratch& sc) {
  // Window of output j: [j - h, j - h + K - 1], torch's placement for padding K/2.
  const int64_t h = K / 2;
  if (len == 0) {
    std::fill(out, out + M, 0.0f);
    return;
  }
  if (K <= kDirectPoolMax) {
    for (int64_t j = 0; j < len; ++j) {
      int64_t lo = std::max<int64_t>(j - h, 0);
      int64_t hi = std::min<int64_t>(j - h + K, len);  // exclusive
      if (kind == PoolKind::Avg) {
        double sum = 0.0;  // entries outside [0, len) add 0 but still count in K
        for (int64_t t = lo; t < hi; ++t) sum += in[t];
        out[j] = static_cast<float>(sum / static_cast<double>(K));
      } else {
        float m = in[lo];
        for (int64_t t = lo + 1; t < hi; ++t) m = max_nan(m, in[t]);
        out[j] = m;
      }
    }
  } else {
    const size_t P = static_cast<size_t>(len + K - 1);
    if (kind == PoolKind::Avg) {
      sc.gd.resize(P);
      sc.sd.resize(P);
      sc.wd.resize(static_cast<size_t>(len));
      sliding_vhgw<SumOp>(in, len, K, h, sc.gd.data(), sc.sd.data(), sc.wd.data());
      for (int64_t j = 0; j < len; ++j)
        out[j] = static_cast<float>(sc.wd[j] / static_cast<double>(K));
    } else {
      sc.gf.resize(P);
      sc.sf.resize(P);
      sc.wf.resize(static_cast<size_t>(len));
      sliding_vhgw<MaxOp>(in, len, K, h, sc.gf.data(), sc.sf.data(), sc.wf.data());
      std::memcpy(out, sc.wf.data(), static_cast<size_t>(len) * sizeof(float));
    }
  }
  for (int64_t j = len; j < M; ++j) out[j] = 0.0f;
}

template <typename Load>
inline float sumsq(Load load, int64_t D) {
  // Eight independent partial sums let the compiler vectorise without reassociating one chain.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= D; d += 8)
    for (int l = 0; l < 8; ++l) {
      float x = load(d + l);
      acc[l] += x * x;
    }
  for (; d < D; ++d) {
    float x = load(d);
    acc[d & 7] += x * x;
  }
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

}  // namespace

void pool1d(const PoolParams& p) {
  if (p.R <= 0 || p.M <= 0) return;
  const int64_t K = std::max<int64_t>(p.kernel, 1);
  parallel_for(p.R, grain_rows(p.M * std::min<int64_t>(K, kDirectPoolMax)),
               [&](int64_t r0, int64_t r1) {
                 thread_local PoolScratch scratch;
                 for (int64_t r = r0; r < r1; ++r) {
                   int64_t len = batch_len(p.lengths, p.rows_per_batch, r, p.M);
                   pool_row(p.in + r * p.M, p.out + r * p.M, len, p.M, K, p.kind, scratch);
                 }
               });
}

void l2_norms(const L2NormsParams& p) {
  if (p.B <= 0 || p.H <= 0 || p.N <= 0) return;
  const int64_t rows = static_cast<int64_t>(p.B) * p.H * p.N;
  const int64_t D = p.D;
  parallel_for(rows, grain_rows(D), [&](int64_t i0, int64_t i1) {
    for (int64_t idx = i0; idx < i1; ++idx) {
      int64_t j = idx % p.N;
      int64_t bh = idx / p.N;
      int64_t h = bh % p.H;
      int64_t b = bh / p.H;
      int64_t L = p.N;
      if (p.seq_lens != nullptr) L = std::min<int64_t>(p.seq_lens[b], p.N);
      if (j >= L) {
        p.out[idx] = 0.0f;
        continue;
      }
      int64_t off = b * p.k.sB + h * p.k.sH + j * p.k.sS;
      float ss = 0.0f;
      switch (p.dtype) {
        case DType::F32: {
          const float* x = static_cast<const float*>(p.k.data) + off;
          ss = sumsq([x](int64_t d) { return x[d]; }, D);
          break;
        }
        case DType::F16: {
          const uint16_t* x = static_cast<const uint16_t*>(p.k.data) + off;
          ss = sumsq([x](int64_t d) { return f16_to_f32(x[d]); }, D);
          break;
        }
        case DType::BF16: {
          const uint16_t* x = static_cast<const uint16_t*>(p.k.data) + off;
          ss = sumsq([x](int64_t d) { return bf16_to_f32(x[d]); }, D);
          break;
        }
        default: break;  // the binding admits float dtypes only
      }
      p.out[idx] = std::sqrt(ss);
    }
  });
}

void protect_scores(const ProtectParams& p) {
  if (p.R <= 0 || p.M <= 0) return;
  const float inf = std::numeric_limits<float>::infinity();
  parallel_for(p.R, grain_rows(p.M), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t L = batch_len(p.seq_lens, p.rows_per_batch, r, p.M);
      const int64_t sinks = std::min<int64_t>(std::max<int32_t>(p.sinks, 0), L);
      const int64_t recent_from = std::max<int64_t>(L - std::max<int32_t>(p.recent, 0), sinks);
      const float* in = p.in + r * p.M;
      float* out = p.out + r * p.M;
      for (int64_t j = 0; j < sinks; ++j) out[j] = inf;
      for (int64_t j = sinks; j < recent_from; ++j) out[j] = p.sign * in[j];
      for (int64_t j = recent_from; j < L; ++j) out[j] = inf;
      if (out != in)
        for (int64_t j = L; j < p.M; ++j) out[j] = in[j];
    }
  });
}

void gumbel(const GumbelParams& p) {
  if (p.B <= 0 || p.H <= 0 || p.T <= 0 || p.N <= 0) return;
  const int64_t rows = static_cast<int64_t>(p.B) * p.H * p.T;
  const int64_t N = p.N;
  // Two double logs per element: a chunk of ~4k elements already amortises the scheduling.
  parallel_for(rows, std::max<int64_t>(1, 4096 / N), [&](int64_t i0, int64_t i1) {
    for (int64_t row = i0; row < i1; ++row) {
      uint32_t t = static_cast<uint32_t>(row % p.T);
      uint32_t bh = static_cast<uint32_t>(row / p.T);
      float* out = p.out + row * N;
      for (int64_t j = 0; j < N; ++j)
        out[j] = philox_gumbel(p.seed, p.step, bh, t, static_cast<uint32_t>(j));
    }
  });
}

void head_reduce(const HeadReduceParams& p) {
  if (p.B <= 0 || p.N <= 0) return;
  const int64_t N = p.N, H = std::max<int32_t>(p.H, 0);
  // Column blocks keep each block's accumulators in L1 while the heads stream past.
  constexpr int64_t kBlock = 1024;
  const int64_t nblk = (N + kBlock - 1) / kBlock;
  parallel_for(static_cast<int64_t>(p.B) * nblk, std::max<int64_t>(1, 16 / std::max<int64_t>(H, 1)),
               [&](int64_t i0, int64_t i1) {
                 float acc[kBlock];
                 for (int64_t idx = i0; idx < i1; ++idx) {
                   int64_t b = idx / nblk;
                   int64_t j0 = (idx % nblk) * kBlock;
                   int64_t n = std::min(kBlock, N - j0);
                   std::fill(acc, acc + n, 0.0f);
                   // Heads in ascending order, one f32 sum per column: the order is the contract.
                   for (int64_t h = 0; h < H; ++h) {
                     const float* row = p.in + (b * H + h) * N + j0;
                     for (int64_t j = 0; j < n; ++j) acc[j] += row[j];
                   }
                   float* out = p.out + b * N + j0;
                   for (int64_t j = 0; j < n; ++j) out[j] = p.scale * acc[j];
                 }
               });
}

}  // namespace kvsift::cpu
