// kvsift/cpp/cpu/l2.cc: key norms on the CPU backend (twin of cuda/l2.cu). Semantics:
// common/params.h.
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

}  // namespace kvsift::cpu
