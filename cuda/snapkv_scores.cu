// kvsift/cuda/snapkv_scores.cu: SnapKV observation-window scoring (ALGORITHMS.md §1, steps 1-4)
// on the shared softmax-column-sum kernels of attn_colsum.cuh.
#include "common.cuh"

#include <cstddef>
#include <cstdint>

#include "attn_colsum.cuh"
#include "launchers.h"
#include "../common/params.h"

namespace kvsift::cuda {

namespace {

// Max and none need each head's column sum on its own, so each head's rows start a fresh
// 16-row tile; mean and sum only add, so the rows pack densely.
bool per_head_rows(GroupReduce r) { return r == GroupReduce::Max || r == GroupReduce::None; }

bool known_reduce(GroupReduce r) {
  return r == GroupReduce::Mean || r == GroupReduce::Sum || r == GroupReduce::Max ||
         r == GroupReduce::None;
}

}  // namespace

size_t snapkv_scores_workspace_bytes(const SnapkvScoresParams& p) {
  if (p.lse != nullptr) return 0;  // pass 1 is skipped: nothing to keep
  if (p.B <= 0 || p.Hq <= 0 || p.Hkv <= 0 || p.W <= 0 || p.N <= p.W || p.Hq % p.Hkv != 0) return 0;
  return colsum::make_plan(p.B, p.Hkv, p.Hq / p.Hkv, p.W, p.N, per_head_rows(p.group_reduce)).bytes;
}

cudaError_t snapkv_scores(const SnapkvScoresParams& p, void* workspace, cudaStream_t stream) {
  if (p.B < 0 || p.Hq < 0 || p.Hkv < 0 || p.N < 0 || p.W < 0 || p.D < 0) return cudaErrorInvalidValue;
  if (p.B == 0 || p.Hq == 0 || p.Hkv == 0 || p.N == 0) return cudaSuccess;
  if (p.Hq % p.Hkv != 0 || p.W > p.N || !known_reduce(p.group_reduce)) return cudaErrorInvalidValue;
  if (cudaError_t err = check_head_dim("snapkv.scores", p.D, colsum::kMaxD)) return err;
  if (p.N == p.W) return cudaSuccess;  // no prefix key to vote for: the output is empty
  const int64_t hout = p.group_reduce == GroupReduce::None ? p.Hq : p.Hkv;
  if (p.W == 0) {
    // No window query votes: every score is an empty sum.
    return cudaMemsetAsync(p.out, 0,
                           static_cast<size_t>(p.B) * static_cast<size_t>(hout) *
                               static_cast<size_t>(p.N) * sizeof(float),
                           stream);
  }
  const bool per_head = per_head_rows(p.group_reduce);
  const colsum::Plan plan = colsum::make_plan(p.B, p.Hkv, p.Hq / p.Hkv, p.W, p.N, per_head);
  if (plan.rows_p > INT32_MAX / 2 || plan.heads > INT32_MAX) return cudaErrorInvalidValue;

  colsum::Args a = colsum::make_args(p.q, p.k, p.seq_lens, p.B, p.Hq, p.Hkv, p.N, p.D, p.W, p.N - p.W,
                                     per_head, plan);
  a.lse_in = p.lse;
  a.out = p.out;
  a.c1 = p.scale * colsum::kLog2e;
  a.c2 = 0.f;
  a.reduce = static_cast<int32_t>(p.group_reduce);
  return colsum::run<colsum::SnapkvOp>(a, p.dtype, workspace, plan, stream, "snapkv.scores");
}

}  // namespace kvsift::cuda
