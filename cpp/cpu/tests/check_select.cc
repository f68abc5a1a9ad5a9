// kvsift/cpp/cpu/tests/check_select.cc: standalone check of the CPU selection and elementwise
// ops (cpp/cpu/topk.cc, gather.cc, pool.cc, l2.cc, elementwise.cc) against naive, independently
// written references, plus the Philox known-answer vectors and the Gumbel moments. Not part of
// the addon: built and run by CTest (cpp/cpu/tests/CMakeLists.txt, from .ci/run). `--bench`
// times top-k instead.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../../../common/philox.h"
#include "../cpu_ops.h"
#include "../half.h"
#include "../parallel.h"
#include "check.h"

using namespace kvsift;
using namespace kvsift::test;

namespace {


const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();


// Fills a row in one of several regimes: plain normals, a handful of distinct values (ties),
// a sprinkle of specials, all equal, all NaN.
void fill_scores(float* x, int64_t n, int regime) {
  std::normal_distribution<float> normal(0.f, 1.f);
  const float specials[] = {kNaN, -kNaN, kInf, -kInf, 0.0f, -0.0f, 1.0f, -1.0f, 2.5f};
  for (int64_t i = 0; i < n; ++i) {
    switch (regime) {
      case 0: x[i] = normal(rng); break;
      case 1: x[i] = static_cast<float>(rand_int(-3, 3)) * 0.5f; break;
      case 2: x[i] = specials[rand_int(0, 8)]; break;
      case 3: x[i] = rand_int(0, 9) == 0 ? specials[rand_int(0, 8)] : normal(rng); break;
      case 4: x[i] = 0.75f; break;
      case 5: x[i] = kNaN; break;
      default: x[i] = rand_int(0, 1) ? 0.0f : -0.0f; break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Top-k

// "a ranks before b": larger number first, NaN after every number, equal values (and -0 vs +0,
// and NaN vs NaN) by position.
bool ranks_before(const float* x, int32_t a, int32_t b) {
  float xa = x[a], xb = x[b];
  bool na = std::isnan(xa), nb = std::isnan(xb);
  if (na != nb) return nb;
  if (!na && xa != xb) return xa > xb;
  return a < b;
}

std::vector<int32_t> naive_topk(const float* x, int64_t len, int64_t k, TopkOrder order) {
  std::vector<int32_t> idx(static_cast<size_t>(len));
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [x](int32_t a, int32_t b) { return ranks_before(x, a, b); });
  idx.resize(static_cast<size_t>(k));
  if (order == TopkOrder::Position) std::sort(idx.begin(), idx.end());
  return idx;
}

void test_topk() {
  int cases = 0;
  for (int trial = 0; trial < 300; ++trial) {
    int64_t rows_per_batch = rand_int(1, 3);
    int64_t B = rand_int(1, 3);
    int64_t R = B * rows_per_batch;
    int64_t M = trial < 20 ? rand_int(1, 7) : rand_int(1, trial % 10 == 0 ? 5001 : 301);
    bool use_lens = rand_int(0, 1) == 1;
    std::vector<int32_t> lens(static_cast<size_t>(B));
    for (auto& l : lens) l = static_cast<int32_t>(use_lens ? rand_int(1, M) : M);
    int64_t min_len = *std::min_element(lens.begin(), lens.end());
    int64_t k = rand_int(0, 4) == 0 ? min_len : rand_int(1, min_len);
    int64_t stride = k + rand_int(0, 3);
    int regime = static_cast<int>(rand_int(0, 6));
    std::vector<float> in(static_cast<size_t>(R * M));
    fill_scores(in.data(), R * M, regime);
    // Junk past each row's length must be ignored.
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = lens[r / rows_per_batch]; j < M; ++j) in[r * M + j] = kInf;
    for (TopkOrder order : {TopkOrder::Position, TopkOrder::Score}) {
      std::vector<int32_t> out(static_cast<size_t>(R * stride), -7);
      TopkParams p{in.data(), out.data(), R, M, static_cast<int32_t>(k), stride, order,
                   use_lens ? lens.data() : nullptr, rows_per_batch};
      cpu::topk(p);
      for (int64_t r = 0; r < R; ++r) {
        int64_t len = lens[r / rows_per_batch];
        auto want = naive_topk(in.data() + r * M, len, k, order);
        bool same = std::equal(want.begin(), want.end(), out.begin() + r * stride);
        for (int64_t i = k; i < stride; ++i) same = same && out[r * stride + i] == -7;
        check(same, "topk trial " + std::to_string(trial) + " regime " + std::to_string(regime) +
                        " M " + std::to_string(M) + " len " + std::to_string(len) + " k " +
                        std::to_string(k) + " order " + std::to_string(static_cast<int>(order)));
      }
      ++cases;
    }
  }
  // Large rows: every regime at 128k, k = 2048.
  {
    const int64_t M = 131072 + 17, R = 7, k = 2048;
    std::vector<float> in(static_cast<size_t>(R * M));
    for (int64_t r = 0; r < R; ++r) fill_scores(in.data() + r * M, M, static_cast<int>(r));
    for (TopkOrder order : {TopkOrder::Position, TopkOrder::Score}) {
      std::vector<int32_t> out(static_cast<size_t>(R * k));
      cpu::topk({in.data(), out.data(), R, M, static_cast<int32_t>(k), k, order, nullptr, 1});
      for (int64_t r = 0; r < R; ++r) {
        auto want = naive_topk(in.data() + r * M, M, k, order);
        check(std::equal(want.begin(), want.end(), out.begin() + r * k),
              "topk 128k regime " + std::to_string(r));
      }
      ++cases;
    }
  }
  std::printf("topk: %d cases\n", cases);
}

// ---------------------------------------------------------------------------------------------
// Gather and fill_window

void test_gather() {
  int cases = 0;
  for (int trial = 0; trial < 120; ++trial) {
    int64_t B = rand_int(1, 3), Hc = rand_int(1, 3), group = rand_int(1, 4), N = rand_int(1, 37);
    int64_t D = rand_int(1, 19), K = rand_int(1, 23);
    int64_t Hout = Hc * group;
    DType dt = std::vector<DType>{DType::F32, DType::F16, DType::BF16, DType::U8,
                                  DType::I32}[rand_int(0, 4)];
    int64_t es = dtype_size(dt);
    bool cache_bshd = rand_int(0, 1), out_bshd = rand_int(0, 1);
    // Padded rows (sS > D) check that strides, not D, place the rows.
    int64_t cpad = rand_int(0, 2), opad = rand_int(0, 2);
    int64_t cD = D + cpad, oD = D + opad;
    View4 cv;
    std::vector<uint8_t> cache(static_cast<size_t>(B * Hc * N * cD * es));
    for (auto& c : cache) c = static_cast<uint8_t>(rand_int(0, 255));
    cv.data = cache.data();
    if (cache_bshd) {
      cv.sB = N * Hc * cD; cv.sH = cD; cv.sS = Hc * cD;
    } else {
      cv.sB = Hc * N * cD; cv.sH = N * cD; cv.sS = cD;
    }
    std::vector<uint8_t> out(static_cast<size_t>(B * Hout * K * oD * es), 0xAB);
    MutView4 ov;
    ov.data = out.data();
    if (out_bshd) {
      ov.sB = K * Hout * oD; ov.sH = oD; ov.sS = Hout * oD;
    } else {
      ov.sB = Hout * K * oD; ov.sH = K * oD; ov.sS = oD;
    }
    bool broadcast = rand_int(0, 2) == 0;
    int64_t pos_sH = broadcast ? 0 : K + rand_int(0, 2);
    int64_t pos_sB = broadcast ? K + rand_int(0, 2) : Hout * pos_sH + rand_int(0, 2);
    std::vector<int32_t> pos(static_cast<size_t>(B * pos_sB + 8));
    int64_t want_bad = 0;
    for (auto& v : pos)
      v = static_cast<int32_t>(rand_int(0, 9) == 0 ? (rand_int(0, 1) ? -1 - rand_int(0, 5)
                                                                      : N + rand_int(0, 5))
                                                   : rand_int(0, N - 1));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hout; ++h)
        for (int64_t i = 0; i < K; ++i) {
          int32_t q = pos[b * pos_sB + h * pos_sH + i];
          want_bad += (q < 0 || q >= N);
        }
    GatherParams p{cv, ov, dt, static_cast<int32_t>(B), static_cast<int32_t>(Hc),
                   static_cast<int32_t>(N), static_cast<int32_t>(D), static_cast<int32_t>(K),
                   static_cast<int32_t>(group), pos.data(), pos_sB, pos_sH};
    int64_t bad = cpu::gather(p);
    check(bad == want_bad, "gather bad count trial " + std::to_string(trial));
    // Expected output image, padding bytes untouched.
    std::vector<uint8_t> want(out.size(), 0xAB);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hout; ++h)
        for (int64_t i = 0; i < K; ++i) {
          int32_t q = pos[b * pos_sB + h * pos_sH + i];
          uint8_t* dst = want.data() + (b * ov.sB + h * ov.sH + i * ov.sS) * es;
          for (int64_t d = 0; d < D * es; ++d)
            dst[d] = (q < 0 || q >= N)
                         ? 0
                         : cache[(b * cv.sB + (h / group) * cv.sH + q * cv.sS) * es + d];
        }
    check(want == out, "gather rows trial " + std::to_string(trial));
    ++cases;
  }
  // Big enough to go through the thread pool.
  {
    int64_t B = 2, Hc = 8, group = 4, N = 3001, D = 128, K = 2048;
    std::vector<uint16_t> cache(static_cast<size_t>(B * Hc * N * D));
    for (size_t i = 0; i < cache.size(); ++i) cache[i] = static_cast<uint16_t>(i * 2654435761u >> 7);
    std::vector<int32_t> pos(static_cast<size_t>(B * Hc * group * K));
    for (auto& v : pos) v = static_cast<int32_t>(rand_int(-1, N));
    int64_t want_bad = 0;
    for (auto v : pos) want_bad += (v < 0 || v >= N);
    std::vector<uint16_t> out(static_cast<size_t>(B * Hc * group * K * D));
    View4 cv{cache.data(), Hc * N * D, N * D, D};
    MutView4 ov{out.data(), Hc * group * K * D, K * D, D};
    int64_t bad = cpu::gather({cv, ov, DType::BF16, static_cast<int32_t>(B),
                               static_cast<int32_t>(Hc), static_cast<int32_t>(N),
                               static_cast<int32_t>(D), static_cast<int32_t>(K),
                               static_cast<int32_t>(group), pos.data(), Hc * group * K, K});
    bool ok = bad == want_bad;
    for (int64_t b = 0; b < B && ok; ++b)
      for (int64_t h = 0; h < Hc * group && ok; ++h)
        for (int64_t i = 0; i < K && ok; ++i) {
          int32_t q = pos[(b * Hc * group + h) * K + i];
          for (int64_t d = 0; d < D; ++d) {
            uint16_t w = (q < 0 || q >= N) ? 0 : cache[((b * Hc + h / group) * N + q) * D + d];
            ok = ok && out[((b * Hc * group + h) * K + i) * D + d] == w;
          }
        }
    check(ok, "gather large");
    ++cases;
  }
  // fill_window
  for (int trial = 0; trial < 40; ++trial) {
    int64_t B = rand_int(1, 3), rpb = rand_int(1, 3), R = B * rpb;
    int32_t N = static_cast<int32_t>(rand_int(1, 50));
    int32_t W = static_cast<int32_t>(rand_int(1, N));
    int64_t stride = W + rand_int(0, 9);
    bool use_lens = rand_int(0, 1);
    std::vector<int32_t> lens(static_cast<size_t>(B));
    for (auto& l : lens) l = static_cast<int32_t>(rand_int(W, N));
    std::vector<int32_t> pos(static_cast<size_t>(R * stride), -9);
    cpu::fill_window({pos.data(), R, stride, rpb, W, N, use_lens ? lens.data() : nullptr});
    bool ok = true;
    for (int64_t r = 0; r < R; ++r) {
      int64_t L = use_lens ? lens[r / rpb] : N;
      for (int64_t s = 0; s < stride; ++s) {
        int64_t i = s - (stride - W);
        int32_t want = i >= 0 ? static_cast<int32_t>(L - W + i) : -9;
        ok = ok && pos[r * stride + s] == want;
      }
    }
    check(ok, "fill_window trial " + std::to_string(trial));
    ++cases;
  }
  std::printf("gather + fill_window: %d cases\n", cases);
}

// ---------------------------------------------------------------------------------------------
// Pooling

bool same_float(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b;
}
bool close_float(float a, float b, float rtol, float atol) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= atol + rtol * std::fabs(b);
}

void test_pool() {
  int cases = 0;
  for (int trial = 0; trial < 400; ++trial) {
    int64_t B = rand_int(1, 3), rpb = rand_int(1, 2), R = B * rpb;
    int64_t M = rand_int(1, trial % 7 == 0 ? 700 : 90);
    int32_t K = static_cast<int32_t>(2 * rand_int(0, trial % 3 == 0 ? 40 : 5) + 1);
    PoolKind kind = rand_int(0, 1) ? PoolKind::Avg : PoolKind::Max;
    bool use_lens = rand_int(0, 1);
    std::vector<int32_t> lens(static_cast<size_t>(B));
    for (auto& l : lens) l = static_cast<int32_t>(use_lens ? rand_int(0, M) : M);
    int regime = static_cast<int>(rand_int(0, 3));
    std::vector<float> in(static_cast<size_t>(R * M)), out(in.size(), 123.f);
    fill_scores(in.data(), R * M, regime);
    cpu::pool1d({in.data(), out.data(), R, M, K, kind, use_lens ? lens.data() : nullptr, rpb});
    bool ok = true;
    for (int64_t r = 0; r < R && ok; ++r) {
      int64_t len = lens[r / rpb];
      const float* x = in.data() + r * M;
      for (int64_t j = 0; j < M; ++j) {
        float want;
        if (j >= len) {
          want = 0.f;
        } else if (kind == PoolKind::Avg) {
          double s = 0;
          for (int64_t t = j - K / 2; t <= j + K / 2; ++t) s += (t >= 0 && t < len) ? x[t] : 0.0;
          want = static_cast<float>(s / K);
        } else {
          bool any_nan = false;
          float m = -kInf;
          for (int64_t t = std::max<int64_t>(0, j - K / 2); t <= std::min<int64_t>(len - 1, j + K / 2); ++t) {
            any_nan = any_nan || std::isnan(x[t]);
            m = std::max(m, x[t]);
          }
          want = any_nan ? kNaN : m;
        }
        float got = out[r * M + j];
        bool good = (kind == PoolKind::Avg && K > 16) ? close_float(got, want, 1e-6f, 1e-6f)
                                                      : same_float(got, want);
        if (!good) {
          ok = false;
          std::printf("  pool mismatch r %lld j %lld: got %g want %g\n", static_cast<long long>(r),
                      static_cast<long long>(j), got, want);
          break;
        }
      }
    }
    check(ok, "pool1d trial " + std::to_string(trial) + " kind " +
                  std::to_string(static_cast<int>(kind)) + " K " + std::to_string(K) + " M " +
                  std::to_string(M) + " regime " + std::to_string(regime));
    ++cases;
  }
  std::printf("pool1d: %d cases\n", cases);
}

// ---------------------------------------------------------------------------------------------
// L2 norms

void test_l2() {
  int cases = 0;
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int trial = 0; trial < 150; ++trial) {
    int64_t B = rand_int(1, 3), H = rand_int(1, 4), N = rand_int(1, 41);
    int64_t D = trial % 5 == 0 ? 128 : rand_int(1, 70);
    DType dt = std::vector<DType>{DType::F32, DType::F16, DType::BF16}[rand_int(0, 2)];
    bool bshd = rand_int(0, 1);
    int64_t Dp = D + rand_int(0, 3);
    View4 v;
    if (bshd) {
      v.sB = N * H * Dp; v.sH = Dp; v.sS = H * Dp;
    } else {
      v.sB = H * N * Dp; v.sH = N * Dp; v.sS = Dp;
    }
    int64_t total = B * H * N * Dp;
    std::vector<float> f(static_cast<size_t>(total));
    std::vector<uint16_t> hbuf(static_cast<size_t>(total));
    float scale = std::pow(10.f, static_cast<float>(rand_int(-2, 2)));
    for (int64_t i = 0; i < total; ++i) {
      float x = normal(rng) * scale;
      if (dt == DType::F16) {
        hbuf[i] = cpu::f32_to_f16(x);
        f[i] = cpu::f16_to_f32(hbuf[i]);
      } else if (dt == DType::BF16) {
        hbuf[i] = cpu::f32_to_bf16(x);
        f[i] = cpu::bf16_to_f32(hbuf[i]);
      } else {
        f[i] = x;
      }
    }
    v.data = dt == DType::F32 ? static_cast<const void*>(f.data()) : hbuf.data();
    bool use_lens = rand_int(0, 1);
    std::vector<int32_t> lens(static_cast<size_t>(B));
    for (auto& l : lens) l = static_cast<int32_t>(rand_int(0, N));
    std::vector<float> out(static_cast<size_t>(B * H * N), 77.f);
    cpu::l2_norms({v, dt, static_cast<int32_t>(B), static_cast<int32_t>(H),
                   static_cast<int32_t>(N), static_cast<int32_t>(D),
                   use_lens ? lens.data() : nullptr, out.data()});
    bool ok = true;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = 0; j < N; ++j) {
          int64_t L = use_lens ? lens[b] : N;
          double s = 0;
          for (int64_t d = 0; d < D; ++d) {
            double x = f[b * v.sB + h * v.sH + j * v.sS + d];
            s += x * x;
          }
          float want = j < L ? static_cast<float>(std::sqrt(s)) : 0.f;
          ok = ok && close_float(out[(b * H + h) * N + j], want, 2e-6f, 0.f);
        }
    check(ok, "l2_norms trial " + std::to_string(trial));
    ++cases;
  }
  // Non-finite keys: inf gives inf, NaN gives NaN.
  {
    std::vector<float> k = {1, 2, 2, 0, kInf, 0, 0, 1, 0, kNaN, 1, 0, 3, 4, 0, 0};
    std::vector<float> out(4);
    cpu::l2_norms({{k.data(), 16, 16, 4}, DType::F32, 1, 1, 4, 4, nullptr, out.data()});
    check(out[0] == 3.f, "l2 1-2-2");
    check(std::isinf(out[1]) && out[1] > 0, "l2 inf");
    check(std::isnan(out[2]), "l2 nan");
    check(out[3] == 5.f, "l2 3-4-5");
  }
  std::printf("l2_norms: %d cases\n", cases);
}

// ---------------------------------------------------------------------------------------------
// protect_scores, head_reduce

void test_protect_and_reduce() {
  int cases = 0;
  for (int trial = 0; trial < 200; ++trial) {
    int64_t B = rand_int(1, 3), rpb = rand_int(1, 3), R = B * rpb, M = rand_int(1, 60);
    int32_t sinks = static_cast<int32_t>(rand_int(0, 8)), recent = static_cast<int32_t>(rand_int(0, 12));
    float sign = rand_int(0, 1) ? 1.f : -1.f;
    bool use_lens = rand_int(0, 1), in_place = rand_int(0, 1);
    std::vector<int32_t> lens(static_cast<size_t>(B));
    for (auto& l : lens) l = static_cast<int32_t>(rand_int(0, M));
    std::vector<float> in(static_cast<size_t>(R * M));
    fill_scores(in.data(), R * M, static_cast<int>(rand_int(0, 3)));
    std::vector<float> orig = in;
    std::vector<float> out(in.size(), 5.f);
    float* dst = in_place ? in.data() : out.data();
    cpu::protect_scores({in.data(), dst, R, M, rpb, sinks, recent, sign,
                         use_lens ? lens.data() : nullptr});
    bool ok = true;
    for (int64_t r = 0; r < R; ++r) {
      int64_t L = use_lens ? lens[r / rpb] : M;
      for (int64_t j = 0; j < M; ++j) {
        float x = orig[r * M + j];
        float want = j >= L ? x : (j < sinks || j >= L - recent) ? kInf : sign * x;
        float got = dst[r * M + j];
        ok = ok && (same_float(got, want) && std::signbit(got) == std::signbit(want));
      }
    }
    check(ok, "protect trial " + std::to_string(trial));
    ++cases;
  }
  for (int trial = 0; trial < 60; ++trial) {
    int32_t B = static_cast<int32_t>(rand_int(1, 3)), H = static_cast<int32_t>(rand_int(1, 33));
    int32_t N = static_cast<int32_t>(rand_int(1, trial % 6 == 0 ? 5000 : 70));
    float scale = 1.f / static_cast<float>(H);
    std::vector<float> in(static_cast<size_t>(B) * H * N), out(static_cast<size_t>(B) * N);
    fill_scores(in.data(), static_cast<int64_t>(in.size()), static_cast<int>(rand_int(0, 3)));
    cpu::head_reduce({in.data(), out.data(), B, H, N, scale});
    bool ok = true;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < N; ++j) {
        float s = 0.f;
        for (int64_t h = 0; h < H; ++h) s += in[(b * H + h) * N + j];
        ok = ok && same_float(out[b * N + j], scale * s);
      }
    check(ok, "head_reduce trial " + std::to_string(trial));
    ++cases;
  }
  std::printf("protect_scores + head_reduce: %d cases\n", cases);
}

// ---------------------------------------------------------------------------------------------
// Philox and Gumbel

void test_philox_gumbel() {
  struct Kat {
    uint32_t c[4], k[2], want[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& t : kats) {
    Philox4 c{{t.c[0], t.c[1], t.c[2], t.c[3]}};
    Philox4 got = philox4x32_10(c, t.k[0], t.k[1]);
    bool ok = true;
    for (int i = 0; i < 4; ++i) ok = ok && got.v[i] == t.want[i];
    char buf[160];
    std::snprintf(buf, sizeof buf, "philox KAT %08x: got %08x %08x %08x %08x", t.c[0], got.v[0],
                  got.v[1], got.v[2], got.v[3]);
    check(ok, buf);
  }
  // philox_bits packs (seed, step, bh, t, j) as its comment says.
  {
    uint64_t seed = 0x0123456789abcdefull, step = 0x0000000500000007ull;
    Philox4 c{{11u, 3u, 9u, 7u}};
    uint32_t want = philox4x32_10(c, 0x89abcdefu, 0x01234567u ^ 5u).v[0];
    check(philox_bits(seed, step, 9, 3, 11) == want, "philox_bits packing");
  }
  // gumbel(): layout and values, through the pool.
  {
    GumbelParams p{3, 5, 2, 1001, 42ull, 17ull, nullptr};
    std::vector<float> out(static_cast<size_t>(p.B) * p.H * p.T * p.N);
    p.out = out.data();
    cpu::gumbel(p);
    bool ok = true;
    for (int b = 0; b < p.B; ++b)
      for (int h = 0; h < p.H; ++h)
        for (int t = 0; t < p.T; ++t)
          for (int j = 0; j < p.N; ++j) {
            uint32_t bits = philox4x32_10(Philox4{{static_cast<uint32_t>(j), static_cast<uint32_t>(t),
                                                   static_cast<uint32_t>(b * p.H + h), 17u}},
                                          42u, 0u)
                                .v[0];
            double u = ((bits >> 9) + 0.5) / 8388608.0;
            float want = static_cast<float>(-std::log(-std::log(u)));
            ok = ok && out[((static_cast<size_t>(b) * p.H + h) * p.T + t) * p.N + j] == want;
          }
    check(ok, "gumbel layout and values");
  }
  // Moments over 10^6 draws: mean = Euler-Mascheroni, variance = pi^2/6. Standard errors are
  // about 0.0013 and 0.0035, so the tolerances below are ~5 sigma.
  {
    GumbelParams p{2, 4, 5, 25000, 0xfeedbeefcafef00dull, 123456789012ull, nullptr};
    std::vector<float> out(static_cast<size_t>(p.B) * p.H * p.T * p.N);
    p.out = out.data();
    cpu::gumbel(p);
    double s = 0, s2 = 0;
    bool finite = true;
    for (float x : out) {
      finite = finite && std::isfinite(x);
      s += x;
    }
    double mean = s / out.size();
    for (float x : out) s2 += (x - mean) * (x - mean);
    double var = s2 / (out.size() - 1);
    const double euler = 0.57721566490153286, pi2_6 = 1.6449340668482264;
    std::printf("gumbel: %zu draws, mean %.5f (want %.5f), variance %.5f (want %.5f)\n",
                out.size(), mean, euler, var, pi2_6);
    check(finite, "gumbel finite");
    check(std::fabs(mean - euler) < 0.0065, "gumbel mean");
    check(std::fabs(var - pi2_6) < 0.02, "gumbel variance");
  }
}

// ---------------------------------------------------------------------------------------------
// Timing

void bench_topk(int64_t R, int64_t M, int64_t k) {
  std::vector<float> in(static_cast<size_t>(R * M));
  fill_scores(in.data(), R * M, 0);
  std::vector<int32_t> out(static_cast<size_t>(R * k));
  for (TopkOrder order : {TopkOrder::Position, TopkOrder::Score}) {
    double best = 0;
    double ms = median_ms(
        [&] { cpu::topk({in.data(), out.data(), R, M, static_cast<int32_t>(k), k, order, nullptr, 1}); },
        21, &best);
    std::printf("topk [%lld x %lld] k=%lld %-8s: %.3f ms median, %.3f ms best (%d threads)\n",
                static_cast<long long>(R), static_cast<long long>(M), static_cast<long long>(k),
                order == TopkOrder::Position ? "position" : "score", ms, best, cpu::num_threads());
  }
  // For scale: std::nth_element + sort of the chosen, one thread, same rows.
  std::vector<uint64_t> buf(static_cast<size_t>(M));
  double ms = median_ms(
      [&] {
        for (int64_t r = 0; r < R; ++r) {
          const float* x = in.data() + r * M;
          for (int64_t j = 0; j < M; ++j) {
            uint32_t u;
            std::memcpy(&u, &x[j], 4);
            u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
            buf[j] = (static_cast<uint64_t>(u) << 32) | (0xffffffffu - static_cast<uint32_t>(j));
          }
          std::nth_element(buf.begin(), buf.begin() + k, buf.end(), std::greater<uint64_t>());
          std::sort(buf.begin(), buf.begin() + k, std::greater<uint64_t>());
        }
      },
      5);
  std::printf("  (baseline nth_element+sort, 1 thread: %.3f ms)\n", ms);
}

}  // namespace

int main(int argc, char** argv) {
  rng.seed(20240611);
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) {
    bench_topk(32, 32768, 2016);
    bench_topk(32, 131072, 2048);
    return 0;
  }
  test_topk();
  test_gather();
  test_pool();
  test_l2();
  test_protect_and_reduce();
  test_philox_gumbel();
  return finish();
}
