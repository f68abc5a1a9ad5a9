// kvsift/cuda/ptx/math.cuh: approximate math instructions.
#pragma once
#include "../common.cuh"

namespace kvsift::cuda::ptx {

// 2^x, ex2.approx.ftz.f32 (max relative error 2^-22.5; subnormal inputs and results flush to
// zero). The emulated device computes exp2f with the same flushing; its last bits differ.
__device__ __forceinline__ float ex2_approx(float x) {
#if defined(KVSIFT_CUDA_EMULATED)
  return ::kvsift_emu::ex2_approx_ftz(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

}  // namespace kvsift::cuda::ptx
