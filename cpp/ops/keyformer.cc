// kvsift/cpp/ops/keyformer.cc: the Keyformer/H2O score accumulation entry (cuda/keyformer.cu, cpu/keyformer.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// accumulate(queries, keys, scores, { layout, tau, noise, seed, step, seqLens? }, stream?)
Napi::Value Accumulate(const Napi::CallbackInfo& info) {
  Call c(info, "keyformer.accumulate", 3);
  auto [layout, q, k, s, d] = GetAttentionScoreArgs(c, "scores");
  if (d.qd.B != d.kd.B || d.qd.D != d.kd.D || d.kd.H == 0 || d.qd.H == 0 || d.kd.D == 0 || d.qd.H % d.kd.H != 0 || d.qd.S < 1 || d.qd.S > d.kd.S) {
    c.invalid("queries.shape", "[B, Hq, T, D] matching keys, Hq a positive multiple of Hkv, D >= 1, 1 <= T <= N", ShapeText(q.shape));
  }
  c.expect_shape(s, "scores", {d.kd.B, d.kd.H, d.kd.S});
  AccumulateParams p{};
  p.scores = static_cast<float*>(s.data);  // accumulated in place
  p.tau = F32Tau(c, c.number("tau"));
  SetNoise(c, p);
  Lengths lens = c.lengths("seqLens", d.kd.B, d.qd.S, d.kd.S);
  SetQueryKeys(p, q, k, layout, d, lens.ptr());
  p.T = static_cast<int32_t>(d.qd.S);
  return c.run([&] { cpu::accumulate(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::accumulate_workspace_bytes(p)); },
               [&](void* ws) { return KVSIFT_CUDA_CALL(cuda::accumulate(p, ws, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("accumulate", Accumulate);

}  // namespace kvsift::ops
