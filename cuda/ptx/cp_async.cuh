// kvsift/cuda/ptx/cp_async.cuh: asynchronous global -> shared copies (sm_80+). The GPU version is
// the PTX instruction; the emulated one (cuda/emu/warp.cc) queues the copy per commit group,
// poisons its destination until the wait, and performs it at cp.async.wait_group.
#pragma once
#include "../common.cuh"

namespace kvsift::cuda::ptx {

// 16 bytes from `src` (16-byte aligned global) to `dst` (16-byte aligned shared), bypassing L1
// (.cg); only the first `src_bytes` are read and the rest are zero-filled (0 = a zero row).
__device__ __forceinline__ void cp_async_cg_16(smem_addr_t dst, const void* src, int src_bytes) {
#if defined(KVSIFT_CUDA_EMULATED)
  ::kvsift_emu::cp_async(dst, src, 16, src_bytes, __FILE__, __LINE__);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
#else
  __trap();  // callers test KVSIFT_ARCH_AT_LEAST(800) first
#endif
}

// Commit and wait have nothing to do below sm_80 (no copy can be in flight there).
__device__ __forceinline__ void cp_async_commit() {
#if defined(KVSIFT_CUDA_EMULATED)
  ::kvsift_emu::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(KVSIFT_CUDA_EMULATED)
  ::kvsift_emu::cp_async_wait(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

}  // namespace kvsift::cuda::ptx
