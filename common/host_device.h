// kvsift/common/host_device.h: KVSIFT_HD marks a function of a backend-neutral header that both
// backends run: __host__ __device__ under nvcc, so a kernel calls the very code the CPU backend
// does (one definition, the same bits), and a plain inline function for the host compiler (the
// CPU backend, and the emulated device, where kernels are host code).
#pragma once

#if defined(__CUDACC__)
#define KVSIFT_HD __host__ __device__ __forceinline__
#else
#define KVSIFT_HD inline
#endif
