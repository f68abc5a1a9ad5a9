// kvsift/cpp/cpu/tests/check_attn.cc: standalone check of the CPU attention-column-sum ops,
// snapkv_scores (cpp/cpu/snapkv_scores.cc) and accumulate (cpp/cpu/keyformer.cc), against a
// naive double-precision reference written here from common/params.h alone; plus the other paths
// of the shared core (recomputed logits, one pair per chunk) compared bit for bit, and the same
// bits for any thread count. Not part of the addon: built and run by CTest
// (cpp/cpu/tests/CMakeLists.txt, from .ci/run). `-v` lists every case, `--cases N` runs N random
// cases per op (default 160), `--bench` times the Llama-3-8B-like shapes instead.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../../../common/philox.h"
#include "../attn_colsum.h"  // the core itself, to run it with tiny scratch budgets
#include "../cpu_ops.h"
#include "../half.h"
#include "../parallel.h"
#include "check.h"

using namespace kvsift;
using namespace kvsift::test;

namespace {


template <typename T>
T pick(const std::vector<T>& v) {
  return v[static_cast<size_t>(rand_int(0, static_cast<int64_t>(v.size()) - 1))];
}

const char* reduce_name(GroupReduce g) {
  switch (g) {
    case GroupReduce::Mean: return "mean";
    case GroupReduce::Sum: return "sum";
    case GroupReduce::Max: return "max";
    case GroupReduce::None: return "none";
  }
  return "?";
}

// A [B, H, S, D] tensor: the logical values (already rounded to the dtype) for the reference,
// and the bytes in one of three layouts for the op.
enum class Layout { Bhsd, Bshd, BhsdPadded };
const char* layout_name(Layout l) {
  return l == Layout::Bhsd ? "bhsd" : l == Layout::Bshd ? "bshd" : "bhsd+pad";
}

struct Tensor {
  int64_t B, H, S, D;
  std::vector<double> val;  // logical [B][H][S][D]
  std::vector<uint8_t> bytes;
  View4 view;
  double at(int64_t b, int64_t h, int64_t s, int64_t d) const {
    return val[static_cast<size_t>(((b * H + h) * S + s) * D + d)];
  }
};

uint16_t to_half_bits(float f, DType t) { return t == DType::F16 ? cpu::f32_to_f16(f) : cpu::f32_to_bf16(f); }
float from_half_bits(uint16_t h, DType t) { return t == DType::F16 ? cpu::f16_to_f32(h) : cpu::bf16_to_f32(h); }

// Element (b, h, s, d) of x: f rounded to the dtype, in the bytes and as the logical value.
void set_value(Tensor& x, DType t, int64_t b, int64_t h, int64_t s, int64_t d, float f) {
  const int64_t off = b * x.view.sB + h * x.view.sH + s * x.view.sS + d;
  if (t == DType::F32) {
    std::memcpy(x.bytes.data() + off * 4, &f, 4);
  } else {
    uint16_t hb = to_half_bits(f, t);
    std::memcpy(x.bytes.data() + off * 2, &hb, 2);
    f = from_half_bits(hb, t);
  }
  x.val[static_cast<size_t>(((b * x.H + h) * x.S + s) * x.D + d)] = f;
}

Tensor make_tensor(int64_t B, int64_t H, int64_t S, int64_t D, DType t, Layout lay, float sigma) {
  Tensor x;
  x.B = B;
  x.H = H;
  x.S = S;
  x.D = D;
  x.val.resize(static_cast<size_t>(B * H * S * D));
  // Padded: a cache with room for more tokens and a wider row than it holds (odd extras, so rows
  // are not 16-byte aligned either).
  const int64_t Scap = lay == Layout::BhsdPadded ? S + 5 : S;
  const int64_t Dcap = lay == Layout::BhsdPadded ? D + 3 : D;
  int64_t sB, sH, sS;
  if (lay == Layout::Bshd) {
    sS = H * D;
    sH = D;
    sB = S * H * D;
  } else {
    sS = Dcap;
    sH = Scap * Dcap;
    sB = H * Scap * Dcap;
  }
  const int64_t total = B * sB + 1;
  const int64_t es = t == DType::F32 ? 4 : 2;
  x.bytes.assign(static_cast<size_t>(total * es), 0xff);  // padding reads as NaN if touched
  x.view = View4{x.bytes.data(), sB, sH, sS};
  std::normal_distribution<float> normal(0.f, sigma);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t d = 0; d < D; ++d) set_value(x, t, b, h, s, d, normal(rng));
  return x;
}

double dot_ref(const Tensor& q, int64_t b, int64_t hq, int64_t t, const Tensor& k, int64_t hk,
               int64_t j) {
  double s = 0;
  for (int64_t d = 0; d < q.D; ++d) s += q.at(b, hq, t, d) * k.at(b, hk, j, d);
  return s;
}

// Reference SnapKV: one full softmax per (b, hq, window row), in double.
std::vector<double> ref_snapkv(const Tensor& q, const Tensor& k, int64_t B, int64_t Hq,
                               int64_t Hkv, int64_t N, int64_t W, const std::vector<int32_t>* lens,
                               const std::vector<float>* lse, GroupReduce red, double scale) {
  const int64_t G = Hq / Hkv, M = N - W;
  std::vector<double> per_head(static_cast<size_t>(B * Hq * M), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = lens ? (*lens)[b] : N;
    for (int64_t hq = 0; hq < Hq; ++hq) {
      const int64_t hk = hq / G;
      for (int64_t w = 0; w < W; ++w) {
        const int64_t pos = L - W + w;
        std::vector<double> l(static_cast<size_t>(pos + 1));
        for (int64_t j = 0; j <= pos; ++j) l[j] = dot_ref(q, b, hq, w, k, hk, j) * scale;
        double norm;
        if (lse) {
          norm = (*lse)[static_cast<size_t>((b * Hq + hq) * W + w)];
        } else {
          double mx = -INFINITY;
          for (double v : l) mx = std::max(mx, v);
          double s = 0;
          for (double v : l) s += std::exp(v - mx);
          norm = mx + std::log(s);
        }
        for (int64_t j = 0; j < L - W; ++j)
          per_head[static_cast<size_t>((b * Hq + hq) * M + j)] += std::exp(l[j] - norm);
      }
    }
  }
  if (red == GroupReduce::None) return per_head;
  std::vector<double> out(static_cast<size_t>(B * Hkv * M), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t j = 0; j < M; ++j) {
        double acc = red == GroupReduce::Max ? -INFINITY : 0.0;
        bool nan = false;
        for (int64_t g = 0; g < G; ++g) {
          const double v = per_head[static_cast<size_t>((b * Hq + hk * G + g) * M + j)];
          if (std::isnan(v)) nan = true;
          acc = red == GroupReduce::Max ? std::max(acc, v) : acc + v;
        }
        if (red == GroupReduce::Mean) acc /= static_cast<double>(G);
        out[static_cast<size_t>((b * Hkv + hk) * M + j)] = nan ? NAN : acc;
      }
  return out;
}

// Reference accumulation: the added amount per (b, hkv, j); rows before the sequence start see
// nothing and add nothing.
std::vector<double> ref_accumulate(const Tensor& q, const Tensor& k, int64_t B, int64_t Hq,
                                   int64_t Hkv, int64_t N, int64_t T,
                                   const std::vector<int32_t>* lens, double scale, double tau,
                                   bool noise, uint64_t seed, uint64_t step) {
  const int64_t G = Hq / Hkv;
  std::vector<double> add(static_cast<size_t>(B * Hkv * N), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = lens ? (*lens)[b] : N;
    for (int64_t hq = 0; hq < Hq; ++hq)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t pos = L - T + t;
        if (pos < 0) continue;
        std::vector<double> l(static_cast<size_t>(pos + 1));
        for (int64_t j = 0; j <= pos; ++j) {
          double g = noise ? static_cast<double>(philox_gumbel(
                                 seed, step, static_cast<uint32_t>(b * Hq + hq),
                                 static_cast<uint32_t>(t), static_cast<uint32_t>(j)))
                           : 0.0;
          l[j] = (dot_ref(q, b, hq, t, k, hq / G, j) * scale + g) / tau;
        }
        double mx = -INFINITY;
        for (double v : l) mx = std::max(mx, v);
        double s = 0;
        for (double v : l) s += std::exp(v - mx);
        for (int64_t j = 0; j <= pos; ++j)
          add[static_cast<size_t>((b * Hkv + hq / G) * N + j)] += std::exp(l[j] - mx) / s;
      }
  }
  return add;
}

// |got - want| <= tol * magnitude, with the magnitude of an entry at least 1e-3 of its row's
// largest (tiny probabilities carry the absolute error of their row, not a relative one).
// NaN must match NaN. Returns the worst error in units of the magnitude.
double compare(const float* got, const std::vector<double>& want, int64_t rows, int64_t cols,
               const std::string& what, double tol = 1e-5) {
  double worst = 0;
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double rowmax = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double w = want[static_cast<size_t>(r * cols + c)];
      if (std::isfinite(w)) rowmax = std::max(rowmax, std::fabs(w));
    }
    for (int64_t c = 0; c < cols; ++c) {
      const double w = want[static_cast<size_t>(r * cols + c)];
      const double g = got[r * cols + c];
      if (std::isnan(w) || std::isnan(g)) {
        if (std::isnan(w) != std::isnan(g) && bad++ < 3)
          std::printf("  %s: row %" PRId64 " col %" PRId64 " got %g want %g\n", what.c_str(), r, c,
                      g, w);
        continue;
      }
      const double mag = std::max({std::fabs(w), 1e-3 * rowmax, 1e-30});
      const double e = std::fabs(g - w) / mag;
      if (!(e <= tol) && bad++ < 3)
        std::printf("  %s: row %" PRId64 " col %" PRId64 " got %.9g want %.9g (err %.3g)\n",
                    what.c_str(), r, c, g, w, e);
      worst = std::max(worst, e);
    }
  }
  check(bad == 0, what);
  return worst;
}

uint64_t hash_floats(const float* x, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &x[i], 4);
    h = (h ^ u) * 1099511628211ull;
  }
  return h;
}

// The fields SnapkvScoresParams and AccumulateParams share.
template <typename Params>
void set_problem(Params& p, const Tensor& q, const Tensor& k, DType dt, int64_t B, int64_t Hq,
                 int64_t Hkv, int64_t N, int64_t D, const int32_t* lens, double scale) {
  p.q = q.view;
  p.k = k.view;
  p.dtype = dt;
  p.B = static_cast<int32_t>(B);
  p.Hq = static_cast<int32_t>(Hq);
  p.Hkv = static_cast<int32_t>(Hkv);
  p.N = static_cast<int32_t>(N);
  p.D = static_cast<int32_t>(D);
  p.seq_lens = lens;
  p.scale = static_cast<float>(scale);
}

// Runs the core with shrunken budgets: stored exponentials with one pair per chunk, or logits
// recomputed in pass 2 with one pair per chunk. Both must give the default path's bits.
enum class CorePath { StoredSmallChunks, Recompute };
void run_core(cpu::ColsumProblem P, CorePath path);

// Runs P on each of the core's other paths from a copy of `start` (what the output held before
// the default run) and checks the bits against `want` (what the default path wrote).
void check_other_paths(cpu::ColsumProblem P, const std::vector<float>& start,
                       const std::vector<float>& want, const std::string& name) {
  for (CorePath path : {CorePath::StoredSmallChunks, CorePath::Recompute}) {
    std::vector<float> out = start;
    P.out = out.data();
    run_core(P, path);
    check(std::memcmp(want.data(), out.data(), want.size() * 4) == 0,
          name + (path == CorePath::Recompute ? ": recompute path" : ": small chunks") +
              " differs from the default path");
  }
}

void run_core(cpu::ColsumProblem P, CorePath path) {
  P.store_chunk_bytes = 1;
  P.chunk_bytes = 1;
  if (path == CorePath::Recompute) P.store_max_pair_bytes = 0;
  cpu::attn_colsum(P);
}

struct Stats {
  double worst = 0;
  int cases = 0;
};

uint64_t g_hash = 1469598103934665603ull;

// The heads and sizes every random case draws first, in this order: G query heads per KV head,
// Hkv, B, D (Hq = G * Hkv).
struct Heads {
  int64_t G, Hkv, Hq, B, D;
};
Heads random_heads() {
  Heads h;
  h.G = pick<int64_t>({1, 4, 8});
  h.Hkv = rand_int(1, 3);
  h.Hq = h.G * h.Hkv;
  h.B = rand_int(1, 3);
  h.D = pick<int64_t>({64, 128, 40});
  return h;
}

// printf into a std::string.
template <typename... Args>
std::string fmt(const char* format, Args... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, args...);
  return buf;
}

// The start of a case's name: "<op> B.. Hq.. Hkv.. <lengths> D.. <dtype> <layout>".
std::string case_name(const char* op, const Heads& h, const std::string& lengths, DType dt, Layout lay) {
  return fmt("%s B%" PRId64 " Hq%" PRId64 " Hkv%" PRId64 " %s D%" PRId64 " %s %s", op, h.B, h.Hq, h.Hkv,
             lengths.c_str(), h.D, dtype_name(dt), layout_name(lay));
}

void snapkv_case(Stats& st, bool verbose) {
  const Heads h = random_heads();
  const int64_t G = h.G, Hkv = h.Hkv, Hq = h.Hq, B = h.B, D = h.D;
  const int64_t W = pick<int64_t>({1, 7, 16, 32, 33});
  const int64_t N = W + pick<int64_t>({0, 1, 100, 300, 513, 777});
  const DType dt = pick<DType>({DType::F32, DType::F16, DType::BF16});
  const Layout lay = pick<Layout>({Layout::Bhsd, Layout::Bshd, Layout::BhsdPadded});
  const GroupReduce red =
      pick<GroupReduce>({GroupReduce::Mean, GroupReduce::Sum, GroupReduce::Max, GroupReduce::None});
  const bool use_lens = rand_int(0, 1) == 1;
  const bool use_lse = rand_int(0, 2) == 0;
  const bool with_nan = rand_int(0, 15) == 0 && N > W;
  const float sigma = pick<float>({1.0f, 1.0f, 1.7f});
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));

  Tensor q = make_tensor(B, Hq, W, D, dt, lay, sigma);
  Tensor k = make_tensor(B, Hkv, N, D, dt, lay, sigma);
  std::vector<int32_t> lens(static_cast<size_t>(B), static_cast<int32_t>(N));
  if (use_lens)
    for (auto& l : lens) l = static_cast<int32_t>(rand_int(W, N));
  if (with_nan)  // a NaN key: every window row that sees it turns NaN, votes included
    set_value(k, dt, B - 1, Hkv - 1, rand_int(0, lens[B - 1] - 1), rand_int(0, D - 1), NAN);
  std::vector<float> lse;
  if (use_lse) {
    // The true log-sum-exp plus a per-row offset: the op must use what it is given.
    lse.resize(static_cast<size_t>(B * Hq * W));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t hq = 0; hq < Hq; ++hq)
        for (int64_t w = 0; w < W; ++w) {
          const int64_t pos = lens[b] - W + w;
          double mx = -INFINITY;
          std::vector<double> l(static_cast<size_t>(pos + 1));
          for (int64_t j = 0; j <= pos; ++j) {
            l[j] = dot_ref(q, b, hq, w, k, hq / G, j) * scale;
            mx = std::max(mx, l[j]);
          }
          double s = 0;
          for (double v : l) s += std::exp(v - mx);
          const double off = rand_int(0, 1) ? 0.0 : std::uniform_real_distribution<double>(-0.5, 0.5)(rng);
          lse[static_cast<size_t>((b * Hq + hq) * W + w)] = static_cast<float>(mx + std::log(s) + off);
        }
  }
  const int64_t Hout = red == GroupReduce::None ? Hq : Hkv;
  const int64_t M = N - W;
  std::vector<float> out(static_cast<size_t>(B * Hout * M + 1), 12345.0f);  // +1: overrun guard

  SnapkvScoresParams p{};
  set_problem(p, q, k, dt, B, Hq, Hkv, N, D, use_lens ? lens.data() : nullptr, scale);
  p.W = static_cast<int32_t>(W);
  p.lse = use_lse ? lse.data() : nullptr;
  p.group_reduce = red;
  p.out = out.data();
  cpu::snapkv_scores(p);

  const std::string name = case_name("snapkv", h, fmt("N%" PRId64 " W%" PRId64, N, W), dt, lay) +
                           fmt(" %s lens=%d lse=%d nan=%d sigma=%.1f", reduce_name(red), use_lens, use_lse,
                               with_nan, sigma);
  const std::vector<double> want = ref_snapkv(q, k, B, Hq, Hkv, N, W, use_lens ? &lens : nullptr,
                                              use_lse ? &lse : nullptr, red, scale);
  const double e = compare(out.data(), want, B * Hout, M, name);
  check(out[static_cast<size_t>(B * Hout * M)] == 12345.0f, name + ": wrote past out");
  // Entries j >= L - W of short rows are exact zeros.
  bool zeros = true;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hout; ++h)
      for (int64_t j = lens[b] - W; j < M; ++j)
        zeros = zeros && out[static_cast<size_t>((b * Hout + h) * M + j)] == 0.0f;
  check(zeros, name + ": zeros past L - W");

  // The other paths of the core give the very same bits (from an output of -1s: every vote written).
  std::vector<float> start(out.size(), -1.0f);
  start.back() = 12345.0f;
  check_other_paths(cpu::snapkv_problem(p), start, out, name);

  g_hash = hash_floats(out.data(), out.size(), g_hash);
  st.worst = std::max(st.worst, e);
  ++st.cases;
  if (verbose) std::printf("%-110s err %.2e\n", name.c_str(), e);
}

void accumulate_case(Stats& st, bool verbose) {
  const Heads h = random_heads();
  const int64_t Hkv = h.Hkv, Hq = h.Hq, B = h.B, D = h.D;
  const int64_t T = pick<int64_t>({1, 1, 3, 8, 17});
  const int64_t N = pick<int64_t>({1, 5, 100, 300, 513, 777});
  const DType dt = pick<DType>({DType::F32, DType::F16, DType::BF16});
  const Layout lay = pick<Layout>({Layout::Bhsd, Layout::Bshd, Layout::BhsdPadded});
  const bool use_lens = rand_int(0, 1) == 1;
  const bool noise = rand_int(0, 1) == 1;
  const float tau = pick<float>({1.0f, 1.37f, 2.0f});
  const float sigma = pick<float>({1.0f, 1.0f, 1.5f});
  const uint64_t seed = rng(), step = rand_int(0, 3) == 0 ? (uint64_t{1} << 33) + 7 : rand_int(0, 500);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));

  Tensor q = make_tensor(B, Hq, T, D, dt, lay, sigma);
  Tensor k = make_tensor(B, Hkv, N, D, dt, lay, sigma);
  std::vector<int32_t> lens(static_cast<size_t>(B), static_cast<int32_t>(N));
  // Mostly T <= L; now and then a row shorter than the step (its first queries see nothing).
  if (use_lens)
    for (auto& l : lens) l = static_cast<int32_t>(rand_int(std::min<int64_t>(T, N) / (rand_int(0, 4) ? 1 : 2), N));
  std::vector<float> init(static_cast<size_t>(B * Hkv * N + 1));
  for (auto& v : init) v = std::uniform_real_distribution<float>(0.f, 3.f)(rng);
  std::vector<float> scores = init;

  AccumulateParams p{};
  set_problem(p, q, k, dt, B, Hq, Hkv, N, D, use_lens ? lens.data() : nullptr, scale);
  p.T = static_cast<int32_t>(T);
  p.tau = tau;
  p.noise = noise ? NoiseKind::Gumbel : NoiseKind::None;
  p.seed = seed;
  p.step = step;
  p.scores = scores.data();
  cpu::accumulate(p);

  const std::string name = case_name("accumulate", h, fmt("T%" PRId64 " N%" PRId64, T, N), dt, lay) +
                           fmt(" lens=%d noise=%d tau=%.2f sigma=%.1f", use_lens, noise, tau, sigma);
  const std::vector<double> add = ref_accumulate(q, k, B, Hq, Hkv, N, T, use_lens ? &lens : nullptr,
                                                 scale, tau, noise, seed, step);
  // Compared on the added amount (the f32 sum with init adds one rounding of init's size).
  std::vector<float> got(static_cast<size_t>(B * Hkv * N));
  std::vector<double> want(got.size());
  bool untouched = scores.back() == init.back();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t j = 0; j < N; ++j) {
        const size_t i = static_cast<size_t>((b * Hkv + h) * N + j);
        got[i] = static_cast<float>(static_cast<double>(scores[i]) - init[i]);
        want[i] = add[i];
        if (j >= lens[b]) untouched = untouched && scores[i] == init[i];
      }
  // The subtraction of init costs up to one ulp of init (3 * 2^-23 ~ 4e-7 absolute): allowed.
  double e = 0;
  {
    double worst = 0;
    int bad = 0;
    for (int64_t r = 0; r < B * Hkv; ++r) {
      double rowmax = 0;
      for (int64_t j = 0; j < N; ++j) rowmax = std::max(rowmax, std::fabs(want[r * N + j]));
      for (int64_t j = 0; j < N; ++j) {
        const double w = want[r * N + j], g = got[r * N + j];
        const double mag = std::max({std::fabs(w), 1e-3 * rowmax, 1e-30});
        const double err = std::max(0.0, std::fabs(g - w) - 2.4e-7 * std::fabs(init[r * N + j])) / mag;
        if (!(err <= 1e-5) && bad++ < 3)
          std::printf("  %s: row %" PRId64 " col %" PRId64 " got %.9g want %.9g (err %.3g)\n", name.c_str(),
                      r, j, g, w, err);
        worst = std::max(worst, err);
      }
    }
    check(bad == 0, name);
    e = worst;
  }
  check(untouched, name + ": touched scores past L or past the end");

  check_other_paths(cpu::accumulate_problem(p), init, scores, name);

  g_hash = hash_floats(scores.data(), scores.size(), g_hash);
  st.worst = std::max(st.worst, e);
  ++st.cases;
  if (verbose) std::printf("%-110s err %.2e\n", name.c_str(), e);
}

// The core's vectorizable exp against libm's in double: relative error, edges and specials.
void exp_accuracy() {
  double worst = 0;
  for (int i = 0; i <= 2000000; ++i) {
    const float x = -87.0f + 175.0f * static_cast<float>(i) / 2000000.0f;
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(cpu::exp_f32(x) - want) / want);
  }
  std::printf("exp_f32: worst relative error %.2e on [-87, 88]\n", worst);
  check(worst < 3.0e-7, "exp_f32 within ~2.5 ulp");
  check(cpu::exp_f32(0.0f) == 1.0f, "exp_f32(0) == 1");
  check(cpu::exp_f32(-INFINITY) == 0.0f && cpu::exp_f32(-100.0f) == 0.0f, "exp_f32 of -inf, -100");
  check(std::isnan(cpu::exp_f32(NAN)), "exp_f32(NaN) is NaN");
  check(cpu::exp_f32(INFINITY) == INFINITY, "exp_f32(+inf) is +inf");
}

// Exact expectations that need no reference: N == W writes nothing, L == W votes all zero, and
// a single visible key gets probability exactly 1.
void edge_cases() {
  std::vector<float> out(8, 7.0f);
  Tensor q = make_tensor(1, 2, 4, 64, DType::F32, Layout::Bhsd, 1.0f);
  Tensor k = make_tensor(1, 1, 4, 64, DType::F32, Layout::Bhsd, 1.0f);
  SnapkvScoresParams p{};
  set_problem(p, q, k, DType::F32, 1, 2, 1, 4, 64, nullptr, 0.125);
  p.W = 4;
  p.out = out.data();
  cpu::snapkv_scores(p);
  check(out[0] == 7.0f, "snapkv N == W writes nothing");

  Tensor k2 = make_tensor(1, 1, 10, 64, DType::F32, Layout::Bhsd, 1.0f);
  p.k = k2.view;
  p.N = 10;
  int32_t len = 4;
  p.seq_lens = &len;
  cpu::snapkv_scores(p);
  bool zeros = true;
  for (int i = 0; i < 6; ++i) zeros = zeros && out[i] == 0.0f;
  check(zeros && out[6] == 7.0f, "snapkv L == W: all six votes are 0");

  // Accumulate, T = 1, L = 1: the only visible key gets exactly G * 1.
  std::vector<float> sc(10, 0.5f);
  Tensor qa = make_tensor(1, 2, 1, 64, DType::F32, Layout::Bhsd, 1.0f);
  int32_t one = 1;
  AccumulateParams a{};
  set_problem(a, qa, k2, DType::F32, 1, 2, 1, 10, 64, &one, 0.125);
  a.T = 1;
  a.tau = 1.0f;
  a.scores = sc.data();
  cpu::accumulate(a);
  check(sc[0] == 2.5f && sc[1] == 0.5f && sc[9] == 0.5f, "accumulate L = 1: +G on key 0 only");
}

void bench() {
  std::printf("threads: %d\n", cpu::num_threads());
  const int64_t B = 1, Hq = 32, Hkv = 8, D = 128;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t N : {8192, 32768}) {
      const int64_t W = 32;
      Tensor q = make_tensor(B, Hq, W, D, dt, Layout::Bhsd, 1.0f);
      Tensor k = make_tensor(B, Hkv, N, D, dt, Layout::Bhsd, 1.0f);
      std::vector<float> out(static_cast<size_t>(B * Hkv * (N - W)));
      SnapkvScoresParams p{};
      set_problem(p, q, k, dt, B, Hq, Hkv, N, D, nullptr, 1.0 / std::sqrt(128.0));
      p.W = W;
      p.group_reduce = GroupReduce::Mean;
      p.out = out.data();
      const double ms = median_ms([&] { cpu::snapkv_scores(p); }, N > 8192 ? 3 : 9);
      const double gflop = 2.0 * B * Hq * W * N * D * 1e-9;
      std::printf("snapkv %-4s Hq32 Hkv8 D128 W32 N%-6" PRId64 " %8.2f ms  (%.1f GFLOP/s of QK^T)\n",
                  dtype_name(dt), N, ms, gflop / ms * 1e3);
      std::vector<float> lse(static_cast<size_t>(B * Hq * W), 6.0f);
      p.lse = lse.data();
      const double ms2 = median_ms([&] { cpu::snapkv_scores(p); }, N > 8192 ? 3 : 9);
      std::printf("snapkv %-4s Hq32 Hkv8 D128 W32 N%-6" PRId64 " %8.2f ms  with lse\n",
                  dtype_name(dt), N, ms2);
    }
  }
  for (int64_t T : {1, 16}) {
    for (bool noise : {false, true}) {
      const int64_t N = 8192;
      Tensor q = make_tensor(B, Hq, T, D, DType::F32, Layout::Bhsd, 1.0f);
      Tensor k = make_tensor(B, Hkv, N, D, DType::F32, Layout::Bhsd, 1.0f);
      std::vector<float> sc(static_cast<size_t>(B * Hkv * N), 0.0f);
      AccumulateParams a{};
      set_problem(a, q, k, DType::F32, B, Hq, Hkv, N, D, nullptr, 1.0 / std::sqrt(128.0));
      a.T = static_cast<int32_t>(T);
      a.tau = 1.5f;
      a.noise = noise ? NoiseKind::Gumbel : NoiseKind::None;
      a.seed = 42;
      a.step = 3;
      a.scores = sc.data();
      const double ms = median_ms([&] { cpu::accumulate(a); }, 9);
      std::printf("accumulate f32 Hq32 Hkv8 D128 N8192 T%-3" PRId64 " noise=%d %8.2f ms\n", T,
                  noise, ms);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  rng.seed(20240612);
  bool verbose = false, hash_only = false;
  int cases = 160;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bench") == 0) {
      bench();
      return 0;
    }
    if (std::strcmp(argv[i], "-v") == 0) verbose = true;
    if (std::strcmp(argv[i], "--hash") == 0) hash_only = true;
    if (std::strcmp(argv[i], "--cases") == 0 && i + 1 < argc) cases = std::atoi(argv[++i]);
  }
  Stats snap, acc;
  for (int i = 0; i < cases; ++i) snapkv_case(snap, verbose);
  for (int i = 0; i < cases; ++i) accumulate_case(acc, verbose);
  if (hash_only) {
    std::printf("%016" PRIx64 "\n", g_hash);
    return 0;
  }
  edge_cases();
  exp_accuracy();
  std::printf("snapkv_scores: %d cases, worst error %.2e of the magnitude\n", snap.cases,
              snap.worst);
  std::printf("accumulate:    %d cases, worst error %.2e of the magnitude\n", acc.cases,
              acc.worst);

  // Same bits whatever the thread count: rerun this program with 1 and 3 threads.
  std::printf("threads here: %d, hash %016" PRIx64 "\n", cpu::num_threads(), g_hash);
  for (const char* th : {"1", "3"}) {
    std::string cmd = std::string("KVSIFT_NUM_THREADS=") + th + " '" + argv[0] +
                      "' --hash --cases " + std::to_string(cases);
    FILE* f = popen(cmd.c_str(), "r");
    char buf[64] = {0};
    bool ok = f != nullptr && std::fgets(buf, sizeof buf, f) != nullptr;
    if (f) pclose(f);
    char mine[32];
    std::snprintf(mine, sizeof mine, "%016" PRIx64, g_hash);
    check(ok && std::strncmp(buf, mine, 16) == 0,
          std::string("same bits with KVSIFT_NUM_THREADS=") + th + " (got " + buf + ")");
  }
  return finish();
}
