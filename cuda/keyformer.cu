// kvsift/cuda/keyformer.cu: Keyformer / H2O / TOVA score accumulation (ALGORITHMS.md §3-4) on
// the shared softmax-column-sum kernels of attn_colsum.cuh. The Gumbel noise is regenerated
// from Philox in both passes, never stored.
#include "common.cuh"

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
  if (p.Hq % p.Hkv != 0) return cudaErrorInvalidValue;
  if (cudaError_t err = check_head_dim("keyformer.accumulate", p.D, colsum::kMaxD)) return err;
  if (p.noise != NoiseKind::None && p.noise != NoiseKind::Gumbel) return cudaErrorInvalidValue;
  const colsum::Plan plan = colsum::make_plan(p.B, p.Hkv, p.Hq / p.Hkv, p.T, p.N, false);
  if (plan.rows_p > INT32_MAX / 2 || plan.heads > INT32_MAX) return cudaErrorInvalidValue;

  colsum::Args a = colsum::make_args(p.q, p.k, p.seq_lens, p.B, p.Hq, p.Hkv, p.N, p.D, p.T, p.N, false, plan);
  a.lse_in = nullptr;
  a.out = p.scores;
  a.seed = p.seed;
  a.step = p.step;
  // (q.k * scale + g) / tau in base 2: dot * (scale * log2e / tau) + g * (log2e / tau).
  a.c1 = p.scale * colsum::kLog2e / p.tau;
  a.c2 = colsum::kLog2e / p.tau;
  a.reduce = static_cast<int32_t>(GroupReduce::Sum);
  if (p.noise == NoiseKind::Gumbel)
    return colsum::run<colsum::AccumulateOp<true>>(a, p.dtype, workspace, plan, stream, "keyformer.accumulate");
  return colsum::run<colsum::AccumulateOp<false>>(a, p.dtype, workspace, plan, stream, "keyformer.accumulate");
}

}  // namespace kvsift::cuda
