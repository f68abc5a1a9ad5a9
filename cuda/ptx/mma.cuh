// kvsift/cuda/ptx/mma.cuh: warp-wide tensor-core products, fp32 accumulate, row.col.
//   mma_m16n8k16_f16 / _bf16 (sm_80+): d (16x8) += a (16x16) * b (16x8)
//   mma_m16n8k8_f16 (sm_75+):          d (16x8) += a (16x8)  * b (8x8)
// Fragments (PTX ISA, lane l, g = l >> 2, t = l % 4, two elements per .b32, lower index low):
//   a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
//   b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   d[0] = D[g][2t], d[1] = D[g][2t+1], d[2] = D[g+8][2t], d[3] = D[g+8][2t+1]
// The emulated versions (cuda/emu/warp.cc) gather the fragments of all 32 lanes by this table.
#pragma once
#include "../common.cuh"

namespace kvsift::cuda::ptx {

// The m16n8k16 product for f16 (kBf16 = false) or bf16 inputs. The two PTX instructions differ
// only in the input type's name, spliced into the one instruction string below.
template <bool kBf16>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(KVSIFT_CUDA_EMULATED)
  ::kvsift_emu::mma_m16n8k16(kBf16, d, a, b, __FILE__, __LINE__);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define KVSIFT_MMA_M16N8K16(AB)                                                                                 \
  asm("mma.sync.aligned.m16n8k16.row.col.f32." AB "." AB ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, " \
      "{%0, %1, %2, %3};\n"                                                                                     \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                          \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))
  if constexpr (kBf16) {
    KVSIFT_MMA_M16N8K16("bf16");
  } else {
    KVSIFT_MMA_M16N8K16("f16");
  }
#undef KVSIFT_MMA_M16N8K16
#else
  __trap();
#endif
}

__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  mma_m16n8k16<false>(d, a, b);
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  mma_m16n8k16<true>(d, a, b);
}

__device__ __forceinline__ void mma_m16n8k8_f16(float (&d)[4], const uint32_t (&a)[2], uint32_t b) {
#if defined(KVSIFT_CUDA_EMULATED)
  ::kvsift_emu::mma_m16n8k8_f16(d, a, b, __FILE__, __LINE__);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  asm(
      "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(b));
#else
  __trap();
#endif
}

}  // namespace kvsift::cuda::ptx
