// kvsift/cuda/convert.cuh: conversions between the storage dtypes (f32, f16, bf16) and the f32
// that all kernel arithmetic runs in. Stores round to nearest even.
#pragma once
#include <type_traits>

#include "common.cuh"

namespace kvsift::cuda {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "a storage dtype: f32, f16 or bf16");
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(x);
  else return x;
}

}  // namespace kvsift::cuda
