// kvsift/cpp/cpu/half.cc: the row conversion f16 -> f32 behind the CPU backend's f16 inputs.
// The scalar conversion (half.h) is a handful of integer operations per element that compilers do
// not vectorize, which made f16 inputs 3-8x slower than bf16 (a shift). x86 has the conversion
// in hardware (F16C: 8 per instruction), so the row function is picked once at load
// time from what the CPU supports (the same ifunc-style choice as attn_colsum.h's target_clones). The results are
// identical on every path (the conversion is exact).
#include <cstdint>
#include <cstdlib>

#include "half.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define KVSIFT_HALF_X86 1
#endif

namespace kvsift::cpu {
namespace {

void f16_row_scalar(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

#if defined(KVSIFT_HALF_X86)
__attribute__((target("avx,f16c"))) void f16_row_f16c(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

#endif

using RowFn = void (*)(const uint16_t*, float*, int64_t);

RowFn pick_f16_row() {
#if defined(KVSIFT_HALF_X86)
  // F16C (8 lanes) only: a row is D = 64..256 values, which 256-bit conversions already cover
  // in a few instructions; measured on a Xeon with AVX-512, the 512-bit form was no faster.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c")) return f16_row_f16c;
#endif
  return f16_row_scalar;
}

// KVSIFT_HALF_SCALAR=1 forces the portable path (tests compare it with the hardware one).
RowFn f16_row_impl() {
  static const RowFn fn = [] {
    const char* force = std::getenv("KVSIFT_HALF_SCALAR");
    return (force != nullptr && force[0] == '1') ? f16_row_scalar : pick_f16_row();
  }();
  return fn;
}

}  // namespace

void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n) { f16_row_impl()(src, dst, n); }

const char* f16_row_path() {
  RowFn fn = f16_row_impl();
#if defined(KVSIFT_HALF_X86)
  if (fn == f16_row_f16c) return "f16c";
#endif
  (void)fn;
  return "scalar";
}

}  // namespace kvsift::cpu
