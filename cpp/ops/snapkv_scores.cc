// kvsift/cpp/ops/snapkv_scores.cc: the SnapKV window-scoring entry (cuda/snapkv_scores.cu, cpu/snapkv_scores.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// snapkvScores(queries, keys, out, { window, groupReduce, layout, seqLens?, lse? }, stream?)
Napi::Value SnapkvScores(const Napi::CallbackInfo& info) {
  Call c(info, "snapkv.scores", 3);
  auto [layout, q, k, out, d] = GetAttentionScoreArgs(c, "out");
  int64_t W = c.integer("window", 1, d.kd.S);
  int64_t gr = c.integer("groupReduce", 0, 3);
  if (d.qd.B != d.kd.B || d.qd.D != d.kd.D || d.qd.S != W || d.kd.H == 0 || d.qd.H == 0 || d.kd.D == 0 || d.qd.H % d.kd.H != 0) {
    c.invalid("queries.shape", "[B, Hq, W, D] matching keys with Hq a positive multiple of Hkv and D >= 1", ShapeText(q.shape));
  }
  int64_t hout = gr == 3 ? d.qd.H : d.kd.H;
  c.expect_shape(out, "out", {d.kd.B, hout, d.kd.S - W});
  Lengths lens = c.lengths("seqLens", d.kd.B, W, d.kd.S);
  const float* lse = nullptr;
  TensorArg lse_t;
  if (c.has("lse")) {
    lse_t = c.option_tensor(c.option("lse"), "lse", 3, {DType::F32});
    SameDevice(c.env, c.op, {&q, &lse_t});
    c.expect_shape(lse_t, "lse", {d.qd.B, d.qd.H, W});
    lse = static_cast<const float*>(lse_t.data);
  }
  SnapkvScoresParams p{};
  SetQueryKeys(p, q, k, layout, d, lens.ptr());
  p.W = static_cast<int32_t>(W);
  p.lse = lse;
  p.group_reduce = static_cast<GroupReduce>(gr);
  p.out = static_cast<float*>(out.data);
  return c.run([&] { cpu::snapkv_scores(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::snapkv_scores_workspace_bytes(p)); },
               [&](void* ws) { return KVSIFT_CUDA_CALL(cuda::snapkv_scores(p, ws, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("snapkvScores", SnapkvScores);

}  // namespace kvsift::ops
