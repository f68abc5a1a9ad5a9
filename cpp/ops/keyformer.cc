// kvsift/cpp/ops/keyformer.cc: the Keyformer/H2O score accumulation entry (cuda/keyformer.cu, cpu/keyformer.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// accumulate(queries, keys, scores, { layout, tau, noise, seed, step, seqLens? }, stream?)
Napi::Value Accumulate(const Napi::CallbackInfo& info) {
  Call c(info, "keyformer.accumulate", 3);
  int layout = c.layout();
  auto [q, k, s] = c.tensors({{0, "queries", 4, kFloatTypes}, {1, "keys", 4, kFloatTypes}, {2, "scores", 3, {DType::F32}}});
  QueryKeys d = CheckQueryKeys(c, q, k, layout);
  if (d.qd.B != d.kd.B || d.qd.D != d.kd.D || d.kd.H == 0 || d.qd.H % d.kd.H != 0 || d.qd.S < 1 || d.qd.S > d.kd.S) {
    c.invalid("queries.shape", "[B, Hq, T, D] matching keys, Hq a multiple of Hkv, 1 <= T <= N", ShapeText(q.shape));
  }
  c.expect_shape(s, "scores", {d.kd.B, d.kd.H, d.kd.S});
  double tau = c.number("tau");
  if (!(tau > 0)) c.invalid("tau", "a positive number", std::to_string(tau));
  int64_t noise = c.integer("noise", 0, 1);
  uint64_t seed = c.u64("seed");
  uint64_t step = c.u64("step");
  Lengths lens = c.lengths("seqLens", d.kd.B, d.qd.S, d.kd.S);
  AccumulateParams p{};
  SetQueryKeys(p, q, k, layout, d, lens.ptr());
  p.T = static_cast<int32_t>(d.qd.S);
  p.tau = static_cast<float>(tau);
  p.noise = static_cast<NoiseKind>(noise);
  p.seed = seed;
  p.step = step;
  p.scores = static_cast<float*>(s.data);
  return c.run([&] { cpu::accumulate(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::accumulate_workspace_bytes(p)); },
               [&](void* ws) { return KVSIFT_CUDA_CALL(cuda::accumulate(p, ws, c.stream)); }, {&q, &k, &s});
}

}  // namespace

KVSIFT_REGISTER_OP("accumulate", Accumulate);

}  // namespace kvsift::ops
