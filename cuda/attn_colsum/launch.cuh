// kvsift/cuda/attn_colsum/launch.cuh: the host side of a fused column-sum launch
// (cuda/attn_colsum.cuh): the workspace, the ticket lag, and the choice of engine.
#pragma once
#include <climits>
#include <string>

#include "../dispatch.h"
#include "schedule.cuh"
#include "simt_engine.cuh"
#include "tc_engine.cuh"

namespace kvsift::cuda::colsum {

// ------------------------------------------------------------------------------------------
// Host launch.

inline bool aligned16(const void* p, int64_t sB, int64_t sH, int64_t sS) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0 && sB % 8 == 0 && sH % 8 == 0 && sS % 8 == 0;
}

template <class E, class Op>
cudaError_t launch_engine(Args a, void* workspace, const Plan& plan, cudaStream_t stream) {
  const bool two_pass = a.lse_in == nullptr;
  const int64_t chunks = ceil_div(a.rows_p, E::kRC);
  const int64_t iph1 = two_pass ? chunks * a.s1 : 0;
  const int64_t per_head = iph1 + a.s2;
  const int64_t total = static_cast<int64_t>(a.heads) * per_head;
  if (total <= 0) return cudaSuccess;
  if (total > INT_MAX) return cudaErrorInvalidValue;
  a.chunks = static_cast<int32_t>(chunks);
  a.iph1 = static_cast<int32_t>(iph1);
  a.iph2 = a.s2;
  a.lag = 1;
  if (two_pass) {
    if (workspace == nullptr) return cudaErrorInvalidValue;
    char* ws = static_cast<char*>(workspace);
    a.counters = reinterpret_cast<unsigned int*>(ws);
    a.lse2 = reinterpret_cast<float*>(ws + plan.off_lse2);
    a.part = reinterpret_cast<float2*>(ws + plan.off_part);
    cudaError_t err = cudaMemsetAsync(
        ws, 0, static_cast<size_t>(1 + 2 * static_cast<int64_t>(a.heads)) * sizeof(unsigned int), stream);
    if (err != cudaSuccess) return err;
    int dev = 0, sms = 0, per_sm = 0;
    err = cudaGetDevice(&dev);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (err == cudaSuccess)
      err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, colsum_kernel<E, Op>, E::kThreads, 0);
    if (err != cudaSuccess) return err;
    const int64_t resident = static_cast<int64_t>(std::max(per_sm, 1)) * std::max(sms, 1);
    const int64_t lag = ceil_div(resident * kLagNum, static_cast<int64_t>(kLagDen) * per_head);
    a.lag = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(lag, 1), a.heads));
  }
  return ::kvsift::cuda::launch(colsum_kernel<E, Op>, dim3(static_cast<unsigned int>(total)), dim3(E::kThreads), 0,
                                stream, a);
}

// The architecture of the code a kernel will run as on the current device (the SASS chosen
// for it, or the device's own when PTX is JIT-compiled): what its KVSIFT_ARCH_AT_LEAST tests saw.
template <typename Kernel>
cudaError_t code_arch(Kernel* kernel, int* arch) {
  cudaFuncAttributes attr{};
  cudaError_t err = cudaFuncGetAttributes(&attr, kernel);
  *arch = attr.binaryVersion * 10;
  return err;
}

// Picks the engine: tensor cores where the dtype, head dim and the code that will run allow,
// SIMT otherwise. The test is on the kernel's code, not on the device: a build for sm_75 alone
// runs its sm_75 code on an sm_80 GPU, where bf16 tensor cores were never compiled in.
template <class Op>
cudaError_t run(Args a, DType dtype, void* workspace, const Plan& plan, cudaStream_t stream, const char* what) {
  if (cudaError_t err = check_head_dim(what, a.D, kMaxD)) return err;
  const bool tc_dim = a.D == 64 || a.D == 128;
  if (tc_dim && (dtype == DType::F16 || dtype == DType::BF16)) {
    a.vec_q = aligned16(a.q, a.q_sB, a.q_sH, a.q_sS) ? 1 : 0;
    a.vec_k = aligned16(a.k, a.k_sB, a.k_sH, a.k_sS) ? 1 : 0;
    int arch = 0;
    if (dtype == DType::F16) {
      using E = TcEngine<__half, 64>;
      if (cudaError_t err = code_arch(colsum_kernel<E, Op>, &arch)) return err;
      if (arch >= 750) {
        return a.D == 64 ? launch_engine<TcEngine<__half, 64>, Op>(a, workspace, plan, stream)
                         : launch_engine<TcEngine<__half, 128>, Op>(a, workspace, plan, stream);
      }
    } else {
      using E = TcEngine<__nv_bfloat16, 64>;
      if (cudaError_t err = code_arch(colsum_kernel<E, Op>, &arch)) return err;
      if (arch >= 800) {
        return a.D == 64 ? launch_engine<TcEngine<__nv_bfloat16, 64>, Op>(a, workspace, plan, stream)
                         : launch_engine<TcEngine<__nv_bfloat16, 128>, Op>(a, workspace, plan, stream);
      }
    }
  }
  return dispatch_float(dtype, what, [&](auto element) {
    return launch_engine<SimtEngine<decltype(element)>, Op>(a, workspace, plan, stream);
  });
}

}  // namespace kvsift::cuda::colsum
