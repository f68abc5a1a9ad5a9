// kvsift/cpp/cpu/topk.cc: per-row top-k on the CPU backend (twin of cuda/topk.cu). Semantics:
// common/params.h.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_ops.h"
#include "half.h"
#include "parallel.h"

namespace kvsift::cpu {
namespace {

// Maps a float to a uint32 whose unsigned order is the ranking order of params.h: NaN (every
// payload, either sign) is 0, below -inf; -0.0 and +0.0 share one key so they tie and the lower
// position wins. Every other float keeps its IEEE order (flip all bits of negatives, set the
// sign bit of positives).
inline uint32_t rank_key(float f) {
  uint32_t u = f32_to_bits(f);
  uint32_t mag = u & 0x7fffffffu;
  uint32_t neg = static_cast<uint32_t>(static_cast<int32_t>(u) >> 31);
  uint32_t key = u ^ (neg | 0x80000000u);
  key = mag == 0 ? 0x80000000u : key;  // written as selects: no branch in the hot loop
  return mag > 0x7f800000u ? 0u : key;
}

inline int64_t row_len(const int32_t* lengths, int64_t rows_per_batch, int64_t r, int64_t M) {
  int64_t len = M;
  if (lengths != nullptr) {
    int64_t b = rows_per_batch > 0 ? r / rows_per_batch : 0;
    len = lengths[b];
  }
  return std::min<int64_t>(std::max<int64_t>(len, 0), M);
}

// Walks a histogram from its top bin down and returns the bin that holds the remaining-th
// largest element; `remaining` becomes the rank inside that bin.
inline uint32_t pick_bin(const uint32_t* hist, uint32_t bins, int64_t* remaining) {
  int64_t cum = 0;
  for (uint32_t d = bins; d-- > 0;) {
    if (cum + hist[d] >= *remaining) {
      *remaining -= cum;
      return d;
    }
    cum += hist[d];
  }
  return 0;  // unreachable when remaining <= element count
}

struct TopkScratch {
  std::vector<uint32_t> keys;
  std::vector<uint32_t> cand;
  std::vector<uint64_t> chosen, tmp;
  uint32_t hist0[4][1024];
  uint32_t hist[2049];
};

// Radix digits of the 32-bit key, most significant first: 10 + 11 + 11 bits.
constexpr int kShift0 = 22, kShift1 = 11;
constexpr uint32_t kBins0 = 1u << 10, kMask1 = 0x7ffu, kMask2 = 0x7ffu;

// One row. Radix select over the 32-bit keys in three digits finds the k-th largest key T and
// how many of the keys equal to T are taken (`need`); a final scan in position order then emits
// every key > T and the first `need` keys == T, which is exactly the tie rule (lower position
// first) and yields Position order without a sort. O(len) per row whatever the distribution:
// many duplicates only keep the candidate list long.
void topk_row(const float* in, int64_t len, int64_t k, TopkOrder order, int32_t* out,
              TopkScratch& s) {
  s.keys.resize(static_cast<size_t>(len));
  uint32_t* keys = s.keys.data();

  // Scores cluster in a few bins (one exponent holds most of them), so a single histogram
  // would serialise on store-to-load forwarding of the same counter; four interleaved copies
  // break the chain.
  static_assert(sizeof(s.hist0[0]) == kBins0 * sizeof(uint32_t), "first digit bins");
  std::memset(s.hist0, 0, sizeof(s.hist0));
  uint32_t* h0 = s.hist0[0];
  uint32_t* h1 = s.hist0[1];
  uint32_t* h2 = s.hist0[2];
  uint32_t* h3 = s.hist0[3];
  int64_t j = 0;
  for (; j + 4 <= len; j += 4) {
    uint32_t a = rank_key(in[j]), b = rank_key(in[j + 1]);
    uint32_t c = rank_key(in[j + 2]), d = rank_key(in[j + 3]);
    keys[j] = a;
    keys[j + 1] = b;
    keys[j + 2] = c;
    keys[j + 3] = d;
    ++h0[a >> kShift0];
    ++h1[b >> kShift0];
    ++h2[c >> kShift0];
    ++h3[d >> kShift0];
  }
  for (; j < len; ++j) {
    uint32_t a = rank_key(in[j]);
    keys[j] = a;
    ++h0[a >> kShift0];
  }
  for (uint32_t i = 0; i < kBins0; ++i) h0[i] += h1[i] + h2[i] + h3[i];
  int64_t remaining = k;
  uint32_t d0 = pick_bin(h0, kBins0, &remaining);

  // Only keys in bucket d0 or above can be chosen: list their positions, ascending. The next
  // digits and the final emission walk this list (about k plus one bucket) instead of the row.
  s.cand.resize(static_cast<size_t>(len));
  uint32_t* list = s.cand.data();
  int64_t n = 0;
  for (j = 0; j < len; ++j) {
    list[n] = static_cast<uint32_t>(j);
    n += (keys[j] >> kShift0) >= d0;
  }

  // Entries above the prefix so far fall into the spare last bin rather than a branch.
  uint32_t* hist = s.hist;
  std::memset(hist, 0, (kMask1 + 2) * sizeof(uint32_t));
  for (int64_t i = 0; i < n; ++i) {
    uint32_t key = keys[list[i]];
    ++hist[(key >> kShift0) == d0 ? (key >> kShift1) & kMask1 : kMask1 + 1];
  }
  uint32_t d1 = pick_bin(hist, kMask1 + 1, &remaining);
  const uint32_t p1 = (d0 << (kShift0 - kShift1)) | d1;  // the top 21 bits of T

  std::memset(hist, 0, (kMask2 + 2) * sizeof(uint32_t));
  for (int64_t i = 0; i < n; ++i) {
    uint32_t key = keys[list[i]];
    ++hist[(key >> kShift1) == p1 ? key & kMask2 : kMask2 + 1];
  }
  uint32_t d2 = pick_bin(hist, kMask2 + 1, &remaining);

  const uint32_t T = (p1 << kShift1) | d2;
  int64_t need = remaining;        // keys equal to T still to take, lowest positions first
  const int64_t ties = hist[d2];   // keys equal to T in the whole row

  // The chosen are scattered through the list, so a branch per entry would mispredict on many
  // of them: copy every position down and advance only on a take (in place: w <= e). Until the
  // last tie to take has gone by, the test is key >= T; after it, key >= T + 1 (no overflow: no
  // key exceeds that of +inf, 0xff800000). When every key equal to T is taken (the usual case)
  // the first loop does nothing.
  uint32_t* chosen_pos = list;
  int64_t w = 0, e = 0;
  if (need < ties) {
    for (; need > 0; ++e) {
      uint32_t pos = list[e];
      uint32_t key = keys[pos];
      need -= key == T;
      chosen_pos[w] = pos;
      w += key >= T;
    }
  }
  const uint32_t cut = need < ties ? T + 1 : T;
  for (; e < n; ++e) {
    uint32_t pos = list[e];
    chosen_pos[w] = pos;
    w += keys[pos] >= cut;
  }
  // w == k here: exactly k keys are > T or among the first `need` equal to T. The clamp costs
  // nothing and keeps a broken invariant from writing past the caller's row.
  w = std::min(w, k);

  if (order == TopkOrder::Position) {
    std::memcpy(out, chosen_pos, static_cast<size_t>(w) * sizeof(int32_t));
    return;
  }

  // Score order is (key desc, position asc), i.e. ascending ~key << 32 | position. chosen_pos
  // is in ascending position, so a stable LSD radix sort on the 32 key bits alone finishes the
  // job: four byte passes over k items, each skipped when one bucket holds everything (scores
  // in one exponent range share their top bytes).
  s.chosen.resize(static_cast<size_t>(w));
  s.tmp.resize(static_cast<size_t>(w));
  uint64_t* a = s.chosen.data();
  uint64_t* b = s.tmp.data();
  uint32_t counts[4][256];
  std::memset(counts, 0, sizeof(counts));
  for (int64_t i = 0; i < w; ++i) {
    uint32_t pos = chosen_pos[i];
    uint32_t nk = ~keys[pos];
    for (int pass = 0; pass < 4; ++pass) ++counts[pass][(nk >> (8 * pass)) & 0xffu];
    a[i] = (static_cast<uint64_t>(nk) << 32) | pos;
  }
  for (int pass = 0; pass < 4; ++pass) {
    uint32_t* c = counts[pass];
    const int shift = 32 + 8 * pass;
    if (c[(a[0] >> shift) & 0xffu] == static_cast<uint32_t>(w)) continue;
    uint32_t sum = 0;
    for (int d = 0; d < 256; ++d) {
      uint32_t t = c[d];
      c[d] = sum;
      sum += t;
    }
    for (int64_t i = 0; i < w; ++i) b[c[(a[i] >> shift) & 0xffu]++] = a[i];
    std::swap(a, b);
  }
  for (int64_t i = 0; i < w; ++i) out[i] = static_cast<int32_t>(static_cast<uint32_t>(a[i]));
}

}  // namespace

void topk(const TopkParams& p) {
  if (p.R <= 0 || p.M <= 0 || p.k <= 0) return;
  parallel_for(p.R, 1, [&](int64_t r0, int64_t r1) {
    thread_local TopkScratch scratch;
    for (int64_t r = r0; r < r1; ++r) {
      int64_t len = row_len(p.lengths, p.rows_per_batch, r, p.M);
      int32_t* out = p.out + r * p.out_row_stride;
      // k <= len is the caller's promise; should it break, the slots no row can fill get -1,
      // which a later gather reports as out of range instead of reading garbage.
      int64_t k = std::min<int64_t>(p.k, len);
      for (int64_t i = k; i < p.k; ++i) out[i] = -1;
      if (k > 0) topk_row(p.in + r * p.M, len, k, p.order, out, scratch);
    }
  });
}

}  // namespace kvsift::cpu
