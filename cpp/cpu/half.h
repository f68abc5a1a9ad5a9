// kvsift/cpp/cpu/half.h: IEEE binary16 and bfloat16 conversions on the host, round to nearest
// even, NaN kept quiet. The CPU backend widens inputs to f32 with these; lib/half.ts mirrors them.
#pragma once
#include <cstdint>
#include <cstring>

#include "../../common/params.h"

namespace kvsift::cpu {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return bits_to_f32(sign);
    // subnormal: value = man * 2^-24, exact in f32
    float v = static_cast<float>(man) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

inline uint16_t f32_to_f16(float f) {
  uint32_t u = f32_to_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {
    // subnormal or zero in f16: add the magic 0.5 so the FPU rounds to nearest even for us
    float v = bits_to_f32(abs) + 0.5f;
    return static_cast<uint16_t>(sign | (f32_to_bits(v) - 0x3f000000u));
  }
  uint32_t mant_odd = (abs >> 13) & 1u;
  abs += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
  return static_cast<uint16_t>(sign | (abs >> 13));
}

// n f16 values widened to f32, with the CPU's hardware conversion where it has one (F16C, picked
// at load time; cpp/cpu/half.cc). Exact, like f16_to_f32.
void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n);
// Which path f16_to_f32_row took: "f16c" or "scalar" (for buildInfo and tests).
const char* f16_row_path();

// Load element i of a buffer of dtype F32 / F16 / BF16 as float.
inline float load_as_f32(const void* data, int64_t i, DType t) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(data)[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    default: return 0.f;
  }
}

}  // namespace kvsift::cpu
