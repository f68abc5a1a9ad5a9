// kvsift/cpp/cpu/decode.cc: decode attention on the CPU, dense or over a selection, with H2O /
// Keyformer accumulation fused in (semantics: DecodeParams in common/decode.h).
//
// Work unit: one (batch, KV head) pair against one tile of Tk selected keys, for all R = G*T query
// rows of the group at once, so each K and V row is widened and read once per KV head. A tile's
// keys are packed ([D][Tk] f32) and multiplied by the rows with the register-blocked kernel of
// attn_colsum.h (private copy in this translation unit); per row the tile leaves a partial
// (max m_t, sum s_t of exp(l - m_t), o_t = sum exp(l - m_t) v). A combine merges the partials of
// each row in tile order (flash-decoding's split-K merge, fixed order, so any thread count gives
// the same bits). With accumulation the tempered, noisy exponentials of the tile are computed from
// the same logits, exactly as keyformer.accumulate computes them (same tile size, same kernels),
// kept in a store, and turned into column sums after the combine: K is read once.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "../../common/decode.h"
#include "attn_colsum.h"

namespace kvsift::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Partials of one chunk of pairs (outputs, maxima, sums, the accumulation store) stay under this.
constexpr int64_t kDecodeChunkBytes = int64_t{64} << 20;

struct DecodeCtx {
  const DecodeParams* P;
  ColsumCtx X;         // the attn_colsum context: packing, logits, noisy exponentials; its
                       // pair0 is the chunk's first pair (pair_info)
  int64_t G, R, T, D, Tk, ntiles;
  bool dense, accumulate, plain_is_mass;  // plain_is_mass: H2O (tau 1, no noise)
  float* part_m;       // [chunk pairs, ntiles, R]
  float* part_s;
  float* part_o;       // [chunk pairs, ntiles, R, D]
  float* mass_m;       // accumulate: [chunk pairs, ntiles, R]; after the combine: factors
  float* mass_s;
  float* store;        // accumulate: [chunk pairs, ntiles, R, Tk]
};

// Number of selected keys of pair (b, h) (dense: its real length).
int64_t selection_count(const DecodeParams& P, int64_t b, int64_t h, int64_t L) {
  const int64_t pair = b * P.Hkv + h;
  switch (P.selection) {
    case DecodeSelection::Dense: return L;
    case DecodeSelection::Positions: return P.sel_k;
    case DecodeSelection::Blocks: return static_cast<int64_t>(P.sel_k) * P.block_size;
    case DecodeSelection::Ragged: {
      const int64_t lo = std::clamp<int64_t>(P.indptr[pair], 0, P.sel_total);
      const int64_t hi = std::clamp<int64_t>(P.indptr[pair + 1], lo, P.sel_total);
      return hi - lo;
    }
  }
  return 0;
}

// Key index of selection entry i of pair (b, h), or -1 when it names no key of the row.
int64_t selected_key(const DecodeParams& P, int64_t b, int64_t h, int64_t L, int64_t i) {
  const int64_t pair = b * P.Hkv + h;
  int64_t j = -1;
  switch (P.selection) {
    case DecodeSelection::Dense: j = i; break;
    case DecodeSelection::Positions: j = P.sel[pair * P.sel_k + i]; break;
    case DecodeSelection::Blocks: {
      const int64_t blk = P.sel[pair * P.sel_k + i / P.block_size];
      j = blk < 0 ? -1 : blk * P.block_size + i % P.block_size;
      break;
    }
    case DecodeSelection::Ragged: {
      const int64_t lo = std::clamp<int64_t>(P.indptr[pair], 0, P.sel_total);
      j = P.sel[lo + i];
      break;
    }
  }
  return (j >= 0 && j < L) ? j : -1;
}

// kt[d * Tk + c] = k[idx[c], d] as f32 (zero for idx -1 and up to the next multiple of 32).
KVSIFT_ATTN_CLONES
void pack_gathered(const DecodeParams& P, int64_t b, int64_t h, const int64_t* idx, int64_t n,
                   int64_t Tk, float* kt) {
  const int64_t es = dtype_size(P.dtype);
  const char* base = static_cast<const char*>(P.k.data) + (b * P.k.sB + h * P.k.sH) * es;
  const int64_t padded = std::min<int64_t>((n + 31) / 32 * 32, Tk);
  for (int64_t c = 0; c < padded; ++c) {
    if (c >= n || idx[c] < 0) {
      for (int64_t d = 0; d < P.D; ++d) kt[d * Tk + c] = 0.0f;
      continue;
    }
    const char* src = base + idx[c] * P.k.sS * es;
    for (int64_t d = 0; d < P.D; ++d) kt[d * Tk + c] = load_as_f32(src, d, P.dtype);
  }
}

// vt[c * D + d] = v[idx[c], d] as f32 for the keys some row uses (idx >= 0).
KVSIFT_ATTN_CLONES
void pack_values(const DecodeParams& P, int64_t b, int64_t h, const int64_t* idx, int64_t n, float* vt) {
  const int64_t es = dtype_size(P.dtype), D = P.D;
  const char* base = static_cast<const char*>(P.v.data) + (b * P.v.sB + h * P.v.sH) * es;
  for (int64_t c = 0; c < n; ++c) {
    float* dst = vt + c * D;
    if (idx[c] < 0) {  // weighted by 0: must not hold a stale inf or NaN
      for (int64_t d = 0; d < D; ++d) dst[d] = 0.0f;
      continue;
    }
    widen_row(base + idx[c] * P.v.sS * es, P.dtype, D, dst);
  }
}

// o[d] = sum_c e[c] * vt[c][d] over the row's keys (c ascending), four keys per sweep of o.
KVSIFT_ATTN_CLONES
void weighted_values(const float* e, int64_t n, const float* vt, int64_t D, float* o) {
  for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
  int64_t c = 0;
  for (; c + 4 <= n; c += 4) {
    const float e0 = e[c], e1 = e[c + 1], e2 = e[c + 2], e3 = e[c + 3];
    const float* v0 = vt + c * D;
    const float* v1 = v0 + D;
    const float* v2 = v1 + D;
    const float* v3 = v2 + D;
    for (int64_t d = 0; d < D; ++d) o[d] = o[d] + e0 * v0[d] + e1 * v1[d] + e2 * v2[d] + e3 * v3[d];
  }
  for (; c < n; ++c) {
    const float ec = e[c];
    const float* vc = vt + c * D;
    for (int64_t d = 0; d < D; ++d) o[d] += ec * vc[d];
  }
}

struct DecodeScratch {
  std::vector<float> kt, tmp, rows, vt, acc;
  std::vector<int64_t> idx;
  explicit DecodeScratch(const DecodeCtx& C) {
    kt.resize(static_cast<size_t>(C.D * C.Tk));
    tmp.resize(static_cast<size_t>(8 * C.D));
    rows.resize(static_cast<size_t>(C.R * C.Tk));
    vt.resize(static_cast<size_t>(C.Tk * C.D));
    acc.resize(static_cast<size_t>(C.Tk));
    idx.resize(static_cast<size_t>(C.Tk));
  }
};

KVSIFT_ATTN_CLONES
void decode_pass1(const DecodeCtx& C, int64_t task0, int64_t task1) {
  const DecodeParams& P = *C.P;
  DecodeScratch S(C);
  const int64_t R = C.R, D = C.D, Tk = C.Tk;
  for (int64_t task = task0; task < task1; ++task) {
    const PairInfo pi = pair_info(C.X, task / C.ntiles);
    const int64_t tile = task % C.ntiles;
    const int64_t i0 = tile * Tk;
    const int64_t slot = pi.local * C.ntiles + tile;
    float* m_out = C.part_m + slot * R;
    float* s_out = C.part_s + slot * R;
    float* o_out = C.part_o + slot * R * D;
    const int64_t count = selection_count(P, pi.b, pi.hkv, pi.L);
    const int64_t n = std::min<int64_t>(Tk, count - i0);
    std::fill(m_out, m_out + R, kNegInf);
    std::fill(s_out, s_out + R, 0.0f);
    if (C.accumulate) {
      std::fill(C.mass_m + slot * R, C.mass_m + slot * R + R, kNegInf);
      std::fill(C.mass_s + slot * R, C.mass_s + slot * R + R, 0.0f);
    }
    if (n <= 0) continue;  // past the row's keys: nobody sees this tile
    int64_t* idx = S.idx.data();
    bool any = false;
    for (int64_t c = 0; c < n; ++c) {
      idx[c] = selected_key(P, pi.b, pi.hkv, pi.L, i0 + c);
      any = any || idx[c] >= 0;
    }
    if (!any) continue;
    // Logits for all rows. Dense tiles use attn_colsum's causal bounds; a selection computes
    // every column (the causal mask is applied per key below).
    PairInfo all = pi;
    if (!C.dense) all.L = std::numeric_limits<int32_t>::max();
    if (C.dense) pack_keys(C.X, pi, i0, n, S.kt.data(), S.tmp.data());
    else pack_gathered(P, pi.b, pi.hkv, idx, n, Tk, S.kt.data());
    tile_logits(C.X, all, C.dense ? i0 : 0, n, S.kt.data(), 0, R, S.rows.data());
    if (C.accumulate) {  // the noisy, tempered masses from a copy of the same dot products
      float* st = C.store + slot * R * Tk;
      std::copy(S.rows.data(), S.rows.data() + R * Tk, st);
      tile_exp(C.X, pi, i0, n, 0, R, st, nullptr, C.mass_m + slot * R, C.mass_s + slot * R);
    }
    pack_values(P, pi.b, pi.hkv, idx, n, S.vt.data());
    for (int64_t r = 0; r < R; ++r) {
      const int64_t t = r % C.T;
      const int64_t qpos = pi.L - C.T + t;
      float* x = S.rows.data() + r * Tk;
      int64_t nv;  // the row's scaled logits occupy x[0, nv), masked entries -inf
      if (C.dense) {
        nv = visible(C.X, pi, r, i0, n);
        if (C.plain_is_mass) {
          // H2O: the masses are the plain softmax; take its exponentials instead of redoing them
          const float* st = C.store + slot * R * Tk + r * Tk;
          m_out[r] = C.mass_m[slot * R + r];
          s_out[r] = C.mass_s[slot * R + r];
          if (nv > 0) weighted_values(st, nv, S.vt.data(), D, o_out + r * D);
          else std::fill(o_out + r * D, o_out + (r + 1) * D, 0.0f);
          continue;
        }
        for (int64_t c = 0; c < nv; ++c) x[c] *= P.scale;
      } else {
        nv = n;
        for (int64_t c = 0; c < n; ++c) x[c] = (idx[c] >= 0 && idx[c] <= qpos) ? x[c] * P.scale : kNegInf;
      }
      const float m = nv > 0 ? row_max(x, nv) : kNegInf;
      if (m == kNegInf) {
        std::fill(o_out + r * D, o_out + (r + 1) * D, 0.0f);
        continue;
      }
      m_out[r] = m;
      s_out[r] = exp_shift_sum(x, nv, m);
      weighted_values(x, nv, S.vt.data(), D, o_out + r * D);
    }
  }
}

// Per (pair, row): merge the tile partials in tile order into out and lse; with accumulation the
// masses' partials become the per-tile factors exp(m_t - M) / S exactly as attn_colsum makes them.
void decode_combine(const DecodeCtx& C, int64_t i0, int64_t i1) {
  const DecodeParams& P = *C.P;
  const int64_t R = C.R, D = C.D, nt = C.ntiles;
  std::vector<float> o(static_cast<size_t>(D));
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t local = i / R, r = i % R;
    const PairInfo pi = pair_info(C.X, local);
    const int64_t hq = pi.hkv * C.G + r / C.T, t = r % C.T;
    const float* m = C.part_m + local * nt * R + r;
    const float* s = C.part_s + local * nt * R + r;
    const float* po = C.part_o + local * nt * R * D + r * D;
    float M = kNegInf;
    for (int64_t k = 0; k < nt; ++k) M = m[k * R] > M ? m[k * R] : M;
    std::fill(o.begin(), o.end(), 0.0f);
    float lse = kNegInf;
    if (M != kNegInf) {
      float S = 0.0f;
      for (int64_t k = 0; k < nt; ++k) {
        if (m[k * R] == kNegInf) continue;
        const float w = std::exp(m[k * R] - M);
        S += s[k * R] * w;
        const float* ok = po + k * R * D;
        for (int64_t d = 0; d < D; ++d) o[d] += w * ok[d];
      }
      for (int64_t d = 0; d < D; ++d) o[d] /= S;
      lse = M + std::log(S);
    }
    const int64_t off = pi.b * P.out.sB + hq * P.out.sH + t * P.out.sS;
    switch (P.dtype) {
      case DType::F32: std::memcpy(static_cast<float*>(P.out.data) + off, o.data(), static_cast<size_t>(D) * 4); break;
      case DType::BF16: {
        uint16_t* dst = static_cast<uint16_t*>(P.out.data) + off;
        for (int64_t d = 0; d < D; ++d) dst[d] = f32_to_bf16(o[d]);
        break;
      }
      default: {
        uint16_t* dst = static_cast<uint16_t*>(P.out.data) + off;
        for (int64_t d = 0; d < D; ++d) dst[d] = f32_to_f16(o[d]);
        break;
      }
    }
    if (P.lse != nullptr) P.lse[(pi.b * P.Hq + hq) * C.T + t] = lse;
    if (C.accumulate) softmax_factors(C.mass_m + local * nt * R + r, C.mass_s + local * nt * R + r, nt, R);
  }
}

// Per (pair, tile): scores += the column sums of the stored masses (dense accumulation only).
void decode_pass2(const DecodeCtx& C, int64_t task0, int64_t task1) {
  const DecodeParams& P = *C.P;
  std::vector<float> acc(static_cast<size_t>(C.Tk));
  for (int64_t task = task0; task < task1; ++task) {
    const PairInfo pi = pair_info(C.X, task / C.ntiles);
    const int64_t tile = task % C.ntiles;
    const int64_t j0 = tile * C.Tk;
    const int64_t slot = pi.local * C.ntiles + tile;
    const int64_t nvote = std::min<int64_t>(std::max<int64_t>(pi.L - j0, 0), C.Tk);
    if (nvote <= 0) continue;
    std::fill(acc.begin(), acc.end(), 0.0f);
    tile_colsum(C.X, pi, j0, nvote, 0, C.R, C.store + slot * C.R * C.Tk, C.mass_s + slot * C.R, 1, acc.data());
    float* o = P.scores + (pi.b * P.Hkv + pi.hkv) * P.N + j0;
    for (int64_t c = 0; c < nvote; ++c) o[c] += acc[c];
  }
}

}  // namespace

void decode_attention(const DecodeParams& P) {
  if (P.B <= 0 || P.Hkv <= 0 || P.Hq <= 0 || P.T <= 0 || P.D <= 0) return;
  const int64_t G = P.Hq / P.Hkv, R = G * P.T, D = P.D;
  const int64_t pairs = static_cast<int64_t>(P.B) * P.Hkv;
  const bool dense = P.selection == DecodeSelection::Dense;
  const bool accumulate = dense && P.scores != nullptr && P.N > 0;

  // The masses of the fused accumulation are keyformer.accumulate's (tau 1 without it: the
  // plain logits); their column sums go to P.scores in decode_pass2, not through CP.out.
  ColsumProblem CP = colsum_problem(ColsumKind::Accumulate, P, P.T, accumulate ? P.tau : 1.0f, nullptr);
  CP.noise = accumulate && P.noise == NoiseKind::Gumbel;
  CP.seed = P.seed;
  CP.step = P.step;

  // The longest selection sets the tile count (a function of the shapes and the selection only).
  int64_t longest = 0;
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t b = pair / P.Hkv;
    const int64_t L = std::min<int64_t>(std::max<int64_t>(P.seq_lens ? P.seq_lens[b] : P.N, 0), P.N);
    longest = std::max(longest, dense ? static_cast<int64_t>(P.N) : selection_count(P, b, pair % P.Hkv, L));
  }
  const int64_t Tk = tile_keys(D);
  const int64_t ntiles = std::max<int64_t>(1, (longest + Tk - 1) / Tk);

  const int64_t per_pair = ntiles * R * (2 + D) * 4 + R * D * 4 + (accumulate ? ntiles * R * (2 + Tk) * 4 : 0);
  const int64_t chunk = std::min<int64_t>(pairs, std::max<int64_t>(1, kDecodeChunkBytes / per_pair));
  std::unique_ptr<float[]> qf = scratch_floats(chunk * R * D), part_m = scratch_floats(chunk * ntiles * R),
                           part_s = scratch_floats(chunk * ntiles * R), part_o = scratch_floats(chunk * ntiles * R * D),
                           mass_m, mass_s, store;
  if (accumulate) {
    mass_m = scratch_floats(chunk * ntiles * R);
    mass_s = scratch_floats(chunk * ntiles * R);
    store = scratch_floats(chunk * ntiles * R * Tk);
  }

  DecodeCtx C;
  C.P = &P;
  C.G = G;
  C.R = R;
  C.T = P.T;
  C.D = D;
  C.Tk = Tk;
  C.ntiles = ntiles;
  C.dense = dense;
  C.accumulate = accumulate;
  C.plain_is_mass = accumulate && P.noise == NoiseKind::None && P.tau == 1.0f;
  C.part_m = part_m.get();
  C.part_s = part_s.get();
  C.part_o = part_o.get();
  C.mass_m = mass_m.get();
  C.mass_s = mass_s.get();
  C.store = store.get();
  // attn_colsum's context packs and multiplies; its partials and store stay unused (null).
  C.X = colsum_ctx(CP, Tk, ntiles, qf.get());

  for (int64_t p0 = 0; p0 < pairs; p0 += chunk) {
    const int64_t np = std::min(chunk, pairs - p0);
    C.X.pair0 = p0;
    pack_queries(C.X, np, qf.get());
    const int64_t tasks = np * ntiles;
    parallel_for(tasks, 1, [&](int64_t a, int64_t b) { decode_pass1(C, a, b); });
    parallel_for(np * R, 16, [&](int64_t a, int64_t b) { decode_combine(C, a, b); });
    if (accumulate) parallel_for(tasks, 1, [&](int64_t a, int64_t b) { decode_pass2(C, a, b); });
  }
}

}  // namespace kvsift::cpu
