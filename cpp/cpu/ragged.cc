// kvsift/cpp/cpu/ragged.cc: the ragged per-head cache on the CPU backend (twin of
// cuda/ragged.cu): gather into ragged storage, append, Keyformer/H2O accumulation, TOVA's layer
// score and gap zeroing. Semantics: common/ragged.h.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../../common/philox.h"
#include "../../common/ragged.h"
#include "half.h"
#include "parallel.h"

namespace kvsift::cpu {
namespace {

// CSR entry range of selection head bh, clamped to [0, total].
inline void sel_range(const int32_t* indptr, int64_t total, int64_t bh, int64_t* e0, int64_t* e1) {
  int64_t s = indptr[bh], e = indptr[bh + 1];
  s = std::min<int64_t>(std::max<int64_t>(s, 0), total);
  e = std::min<int64_t>(std::max<int64_t>(e, s), total);
  *e0 = s;
  *e1 = e;
}

}  // namespace

int64_t ragged_gather(const RaggedGatherParams& p) {
  const int64_t B = p.B, H = p.H;
  if (B <= 0 || H <= 0) return 0;
  const int64_t es = dtype_size(p.dtype);
  const int64_t row_bytes = static_cast<int64_t>(p.D) * es;
  const bool dense = p.src_heads.indptr == nullptr;
  const char* src = static_cast<const char*>(p.src.data);
  char* out = static_cast<char*>(p.out);
  std::atomic<int64_t> bad{0};
  parallel_for(B * H, 1, [&](int64_t h0, int64_t h1) {
    int64_t local_bad = 0;
    for (int64_t bh = h0; bh < h1; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      int64_t e0, e1;
      sel_range(p.sel_indptr, p.sel_total, bh, &e0, &e1);
      const int64_t out0 = e0 + bh * p.reserve;
      HeadRange sr{0, 0, 0};
      if (!dense) sr = head_range(p.src_heads, bh);
      for (int64_t e = e0; e < e1; ++e) {
        const int64_t pos = p.sel_positions != nullptr ? p.sel_positions[e] : e - e0;
        char* dst = out + (out0 + (e - e0)) * row_bytes;
        const int64_t limit = dense ? p.N : sr.len;
        if (pos < 0 || pos >= limit) {
          std::memset(dst, 0, static_cast<size_t>(row_bytes));
          ++local_bad;
          continue;
        }
        const char* s = dense ? src + (b * p.src.sB + h * p.src.sH + pos * p.src.sS) * es
                              : src + (sr.start + pos) * row_bytes;
        std::memcpy(dst, s, static_cast<size_t>(row_bytes));
      }
      if (p.reserve > 0) {
        std::memset(out + (out0 + (e1 - e0)) * row_bytes, 0, static_cast<size_t>(p.reserve * row_bytes));
      }
    }
    if (local_bad != 0) bad.fetch_add(local_bad, std::memory_order_relaxed);
  });
  if (p.out_indptr != nullptr || p.out_lens != nullptr) {
    for (int64_t bh = 0; bh <= B * H; ++bh) {
      int64_t e0, e1;
      sel_range(p.sel_indptr, p.sel_total, std::min(bh, B * H - 1), &e0, &e1);
      if (bh == B * H) e0 = e1;  // the end of the last region
      if (p.out_indptr != nullptr) p.out_indptr[bh] = static_cast<int32_t>(e0 + bh * p.reserve);
      if (p.out_lens != nullptr && bh < B * H) p.out_lens[bh] = static_cast<int32_t>(e1 - e0);
    }
  }
  return bad.load();
}

void ragged_append(const RaggedAppendParams& p) {
  const int64_t B = p.B, H = p.H, T = p.T;
  if (B <= 0 || H <= 0 || T <= 0) return;
  const int64_t es = dtype_size(p.dtype);
  const int64_t row_bytes = static_cast<int64_t>(p.D) * es;
  const char* src = static_cast<const char*>(p.src.data);
  char* dst = static_cast<char*>(p.dst);
  parallel_for(B * H, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t bh = h0; bh < h1; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const HeadRange r = head_range(p.heads, bh);
      const int64_t n = std::min<int64_t>(T, r.cap - r.len);  // the caller guarantees T fits
      for (int64_t t = 0; t < n; ++t) {
        const int64_t row = r.start + r.len + t;
        std::memcpy(dst + row * row_bytes, src + (b * p.src.sB + h * p.src.sH + t * p.src.sS) * es,
                    static_cast<size_t>(row_bytes));
        if (p.positions != nullptr) p.positions[row] = (p.pos_base != nullptr ? p.pos_base[b] : 0) + static_cast<int32_t>(t);
      }
      if (p.lens != nullptr) p.lens[bh] = static_cast<int32_t>(r.len + n);
    }
  });
}

void ragged_accumulate(const RaggedAccumulateParams& p) {
  const int64_t B = p.B, Hq = p.Hq, Hkv = p.Hkv, T = p.T, D = p.D;
  if (B <= 0 || Hkv <= 0 || Hq <= 0 || T <= 0 || D <= 0) return;
  const int64_t G = Hq / Hkv;
  // One task per (b, hkv) pair: its G * T query rows against its live keys. Rows are added in
  // (g, t) order into one accumulator per key, then once into the scores: a fixed order.
  parallel_for(B * Hkv, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> q(static_cast<size_t>(D)), logit, acc, kf;
    for (int64_t pair = p0; pair < p1; ++pair) {
      const int64_t b = pair / Hkv, hkv = pair % Hkv;
      const HeadRange r = head_range(p.heads, pair);
      const int64_t L = r.len;
      if (L <= 0) continue;
      // The head's keys widened to f32 once, shared by its G * T rows.
      kf.resize(static_cast<size_t>(L * D));
      for (int64_t i = 0; i < L * D; ++i) kf[i] = load_as_f32(p.k, r.start * D + i, p.dtype);
      logit.resize(static_cast<size_t>(L));
      acc.assign(static_cast<size_t>(L), 0.0f);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = hkv * G + g;
        for (int64_t t = 0; t < T; ++t) {
          const int64_t nv = std::min<int64_t>(std::max<int64_t>(L - T + t + 1, 0), L);
          if (nv == 0) continue;
          const int64_t qoff = b * p.q.sB + hq * p.q.sH + t * p.q.sS;
          for (int64_t d = 0; d < D; ++d) q[d] = load_as_f32(p.q.data, qoff + d, p.dtype);
          float m = -std::numeric_limits<float>::infinity();
          const uint32_t bhq = static_cast<uint32_t>(b * Hq + hq);
          for (int64_t i = 0; i < nv; ++i) {
            const float* kr = kf.data() + i * D;
            float dot = 0.0f;
            for (int64_t d = 0; d < D; ++d) dot += q[d] * kr[d];
            float g_noise = 0.0f;
            if (p.noise == NoiseKind::Gumbel) {
              const int64_t j = p.positions != nullptr ? p.positions[r.start + i] : i;
              g_noise = philox_gumbel(p.seed, p.step, bhq, static_cast<uint32_t>(t), static_cast<uint32_t>(j));
            }
            const float l = (dot * p.scale + g_noise) / p.tau;
            logit[i] = l;
            m = l > m ? l : m;
          }
          float s = 0.0f;
          for (int64_t i = 0; i < nv; ++i) {
            logit[i] = std::exp(logit[i] - m);
            s += logit[i];
          }
          const float inv = 1.0f / s;
          for (int64_t i = 0; i < nv; ++i) acc[i] += logit[i] * inv;
        }
      }
      float* out = p.scores + r.start;
      for (int64_t i = 0; i < L; ++i) out[i] += acc[i];
    }
  });
}

void ragged_layer_scores(const RaggedLayerScoresParams& p) {
  const int64_t B = p.heads.B, n = p.n;
  if (B <= 0 || n <= 0) return;
  parallel_for(B * n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t idx = i0; idx < i1; ++idx) p.out[idx] = ragged_layer_score(p, idx / n, idx % n);
  });
}

void ragged_zero_gaps(const RaggedZeroGapsParams& p) {
  const int64_t BH = static_cast<int64_t>(p.heads.B) * p.heads.H;
  parallel_for(BH, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t bh = h0; bh < h1; ++bh) {
      const HeadRange r = head_range(p.heads, bh);
      std::fill(p.x + r.start + r.len, p.x + r.start + r.cap, 0.0f);
    }
  });
}

}  // namespace kvsift::cpu
