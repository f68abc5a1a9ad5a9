// kvsift/cuda/common.cuh: what every kernel file includes first. It is the one place that knows
// whether the code is compiled by nvcc for a GPU or by the host compiler for the emulated device
// (KVSIFT_CUDA_EMULATED, cuda/emu/), so kernels are written once against these names:
//
//   KVSIFT_ARCH_AT_LEAST(cc)        the code running was compiled for (GPU) or emulates (emulated
//                                   device) compute capability >= cc, as 750 / 800 / 900. Use it
//                                   in a plain `if`; instructions a lower arch lacks live behind
//                                   cuda/ptx/ wrappers, so both branches compile everywhere.
//   KVSIFT_SHARED(name, Type)       a statically sized __shared__ variable (Type may be an array
//                                   type: KVSIFT_SHARED(hist, uint32_t[256]))
//   KVSIFT_DYNAMIC_SHARED(name, T)  T* name: the block's dynamic shared memory (16-byte aligned)
//   smem_addr_t / smem_addr(p)      a shared-state-space address, as ldmatrix and cp.async take it
//   launch(kernel, grid, block, smem, stream, args...)
//                                   the one kernel launch; returns the launch's cudaError_t
//
// No inline PTX outside cuda/ptx/, no raw __CUDA_ARCH__ test outside this file and cuda/ptx/,
// no <<<>>> outside launch().
#pragma once

#ifdef KVSIFT_CUDA_EMULATED
#include "emu/emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cstddef>
#include <cstdint>
#include <utility>

#include "dispatch.h"

namespace kvsift::cuda {

// An alias that lets an array type stand where a declaration wants a type name.
template <typename T>
using type_t = T;

// A shared-state-space address (what __cvta_generic_to_shared returns): 32 bits on every GPU.
using smem_addr_t = uint32_t;

}  // namespace kvsift::cuda

#if defined(KVSIFT_CUDA_EMULATED)
#define KVSIFT_ARCH_AT_LEAST(cc) (::kvsift_emu::device_arch() >= (cc))
#elif defined(__CUDA_ARCH__)
#define KVSIFT_ARCH_AT_LEAST(cc) (__CUDA_ARCH__ >= (cc))
#else
#define KVSIFT_ARCH_AT_LEAST(cc) false
#endif

// A device function kept out of line (__noinline__ is a GCC attribute spelling on the host).
#if defined(KVSIFT_CUDA_EMULATED)
#define KVSIFT_NOINLINE __attribute__((noinline))
#else
#define KVSIFT_NOINLINE __noinline__
#endif

#if defined(KVSIFT_CUDA_EMULATED)
// One block-wide allocation in the emulated block's shared arena per declaration site.
#define KVSIFT_SHARED(name, ...)                                                           \
  ::kvsift::cuda::type_t<__VA_ARGS__>& name =                                              \
      ::kvsift_emu::static_shared<::kvsift::cuda::type_t<__VA_ARGS__>>(__FILE__, __LINE__)
#define KVSIFT_DYNAMIC_SHARED(name, T) T* name = reinterpret_cast<T*>(::kvsift_emu::dynamic_shared())
#else
#define KVSIFT_SHARED(name, ...) __shared__ ::kvsift::cuda::type_t<__VA_ARGS__> name
#define KVSIFT_DYNAMIC_SHARED(name, T)                                                     \
  extern __shared__ __align__(16) unsigned char kvsift_dynamic_smem[];                     \
  T* name = reinterpret_cast<T*>(kvsift_dynamic_smem)
#endif

namespace kvsift::cuda {

__device__ __forceinline__ smem_addr_t smem_addr(const void* p) {
#if defined(KVSIFT_CUDA_EMULATED)
  return ::kvsift_emu::smem_addr(p);
#else
  return static_cast<smem_addr_t>(__cvta_generic_to_shared(p));
#endif
}

// The one launch site: kernel<<<grid, block, smem, stream>>>(args...), returning the launch
// error (not an earlier sticky one: a bad configuration is reported by this call).
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
#if defined(KVSIFT_CUDA_EMULATED)
  return ::kvsift_emu::launch(kernel, grid, block, smem, stream, std::forward<Args>(args)...);
#else
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
#endif
}

// The grid of a flat grid-stride kernel over `total` items, kFlatThreads per block: a thread per
// item, up to kMaxFlatBlocks blocks; the kernel's loop strides over the rest.
constexpr int kFlatThreads = 256;
constexpr int64_t kMaxFlatBlocks = 1 << 12;
inline unsigned flat_blocks(int64_t total) {
  const int64_t blocks = (total + kFlatThreads - 1) / kFlatThreads;
  return static_cast<unsigned>(blocks < kMaxFlatBlocks ? blocks : kMaxFlatBlocks);
}

// Calls f(float{}), f(__half{}) or f(__nv_bfloat16{}) (a value of the element type: use
// decltype to get it); any other dtype is unsupported.
template <typename F>
cudaError_t dispatch_float(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::F32: return f(float{});
    case DType::F16: return f(__half{});
    case DType::BF16: return f(__nv_bfloat16{});
    default:
      return unsupported(std::string(what) + " does not support dtype " + dtype_name(dtype) +
                         " on CUDA (f32, f16 and bf16 are)");
  }
}

}  // namespace kvsift::cuda
