// kvsift/cpp/cpu/pool.cc: 1-D pooling of vote rows on the CPU backend (twin of cuda/pool.cu).
// Semantics: common/params.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_ops.h"
#include "half.h"
#include "parallel.h"

namespace kvsift::cpu {
namespace {

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

}  // namespace kvsift::cpu
