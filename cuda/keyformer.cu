// kvsift/cuda/keyformer.cu: Keyformer / H2O / TOVA score accumulation (ALGORITHMS.md §3-4) on
// the shared softmax-column-sum kernels of attn_colsum.cuh. The Gumbel noise is regenerated
// from Philox in both passes, never stored.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "attn_colsum.cuh"
#include "launchers.h"
#include "../common/params.h"

namespace kvsift::cuda {

size_t accumulate_workspace_bytes(const AccumulateParams& p) {
  if (p.B <= 0 || p.Hq <= 0 || p.Hkv <= 0 || p.T <= 0 || p.N <= 0 || p.Hq % p.Hkv != 0) return 0;
  return colsum::make_plan(p.B, p.Hkv, p.Hq / p.Hkv, p.T, p.N, false).bytes;
}

cudaError_t accumulate(const AccumulateParams& p, void* workspace, cudaStream_t stream) {
  if (p.B < 0 || p.Hq < 0 || p.Hkv < 0 || p.T < 0 || p.N < 0 || p.D < 0) return cudaErrorInvalidValue;
  if (p.B == 0 || p.Hq == 0 || p.Hkv == 0 || p.T == 0 || p.N == 0) return cudaSuccess;
  if (p.Hq % p.Hkv != 0 || p.D > colsum::kMaxD) return cudaErrorInvalidValue;
  if (p.dtype != DType::F32 && p.dtype != DType::F16 && p.dtype != DType::BF16)
    return cudaErrorInvalidValue;
  if (p.noise != NoiseKind::None && p.noise != NoiseKind::Gumbel) return cudaErrorInvalidValue;
  const colsum::Plan plan = colsum::make_plan(p.B, p.Hkv, p.Hq / p.Hkv, p.T, p.N, false);
  if (plan.rows_p > INT32_MAX / 2 || plan.heads > INT32_MAX) return cudaErrorInvalidValue;

  colsum::Args a{};
  a.q = p.q.data;
  a.k = p.k.data;
  a.q_sB = p.q.sB;
  a.q_sH = p.q.sH;
  a.q_sS = p.q.sS;
  a.k_sB = p.k.sB;
  a.k_sH = p.k.sH;
  a.k_sS = p.k.sS;
  a.seq_lens = p.seq_lens;
  a.lse_in = nullptr;
  a.out = p.scores;
  a.seed = p.seed;
  a.step = p.step;
  // (q.k * scale + g) / tau in base 2: dot * (scale * log2e / tau) + g * (log2e / tau).
  a.c1 = p.scale * colsum::kLog2e / p.tau;
  a.c2 = colsum::kLog2e / p.tau;
  a.B = p.B;
  a.Hq = p.Hq;
  a.Hkv = p.Hkv;
  a.G = p.Hq / p.Hkv;
  a.N = p.N;
  a.D = p.D;
  a.R = p.T;
  a.n_out = p.N;
  a.reduce = static_cast<int32_t>(GroupReduce::Sum);
  a.per_head = 0;
  a.period = static_cast<int32_t>(plan.period);
  a.rows_p = static_cast<int32_t>(plan.rows_p);
  a.ks1 = static_cast<int32_t>(plan.ks1);
  a.s1 = static_cast<int32_t>(plan.s1);
  a.heads = static_cast<int32_t>(plan.heads);
  colsum::plan_pass2(plan.heads, a.n_out, &a.ks2, &a.s2);
  if (p.noise == NoiseKind::Gumbel)
    return colsum::launch<colsum::AccumulateOp<true>>(a, p.dtype, workspace, plan, stream);
  return colsum::launch<colsum::AccumulateOp<false>>(a, p.dtype, workspace, plan, stream);
}

}  // namespace kvsift::cuda
