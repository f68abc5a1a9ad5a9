// kvsift/cuda/ptx/ldmatrix.cuh: ldmatrix.sync.aligned.m8n8.x4.shared.b16 (sm_75+). Lanes 8i..8i+7
// give the 16-byte-aligned row addresses of matrix i; lane l receives, in r[i], the two b16
// elements at row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1 of matrix i. The emulated version
// (cuda/emu/warp.cc) is a 32-lane rendezvous that follows this table.
#pragma once
#include "../common.cuh"

namespace kvsift::cuda::ptx {

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], smem_addr_t addr) {
#if defined(KVSIFT_CUDA_EMULATED)
  ::kvsift_emu::ldmatrix_x4(r, addr, __FILE__, __LINE__);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#else
  __trap();
#endif
}

}  // namespace kvsift::cuda::ptx
