// kvsift/cpp/ops/keyformer.cc: the Keyformer/H2O score accumulation entry (cuda/keyformer.cu, cpu/keyformer.cc).
#include "common.h"

#include <cfloat>

namespace kvsift::ops {
namespace {

// accumulate(queries, keys, scores, { layout, tau, noise, seed, step, seqLens? }, stream?)
Napi::Value Accumulate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "keyformer.accumulate";
  Napi::Object o = GetOptions(env, op, info[3]);
  int layout = Layout(env, op, o);
  TensorArg q = GetTensor(env, op, info[0], "queries", 4, kFloatTypes);
  TensorArg k = GetTensor(env, op, info[1], "keys", 4, kFloatTypes);
  TensorArg s = GetTensor(env, op, info[2], "scores", 3, {DType::F32});
  int device = SameDevice(env, op, {&q, &k, &s});
  cudaStream_t stream = GetStream(env, op, info[4]);
  if (q.dtype != k.dtype) ThrowInvalid(env, op, "queries.dtype", std::string("keys' dtype ") + dtype_name(k.dtype), dtype_name(q.dtype));
  Dims qd = DimsOf(q, layout), kd = DimsOf(k, layout);
  if (qd.B != kd.B || qd.D != kd.D || kd.H == 0 || qd.H == 0 || kd.D == 0 || qd.H % kd.H != 0 || qd.S < 1 || qd.S > kd.S) {
    ThrowInvalid(env, op, "queries.shape", "[B, Hq, T, D] matching keys, Hq a positive multiple of Hkv, D >= 1, 1 <= T <= N", ShapeText(q.shape));
  }
  ExpectShape(env, op, s, "scores", {kd.B, kd.H, kd.S});
  double tau = GetNumber(env, op, o.Get("tau"), "tau");
  // The kernels divide by tau in f32: it must be a normal f32 with a finite reciprocal there.
  float tau_f = static_cast<float>(tau);
  if (!(tau > 0) || !(tau_f >= FLT_MIN) || !std::isfinite(tau_f) || !std::isfinite(1.0f / tau_f)) {
    ThrowInvalid(env, op, "tau", "a positive number representable in f32", describe(o.Get("tau")));
  }
  int64_t noise = GetInt(env, op, o.Get("noise"), "noise", 0, 1);
  uint64_t seed = GetU64(env, op, o.Get("seed"), "seed");
  uint64_t step = GetU64(env, op, o.Get("step"), "step");
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", kd.B, qd.S, kd.S, device, stream);
  AccumulateParams p{};
  p.q = ViewOf(q, layout);
  p.k = ViewOf(k, layout);
  p.dtype = q.dtype;
  p.B = static_cast<int32_t>(kd.B);
  p.Hq = static_cast<int32_t>(qd.H);
  p.Hkv = static_cast<int32_t>(kd.H);
  p.T = static_cast<int32_t>(qd.S);
  p.N = static_cast<int32_t>(kd.S);
  p.D = static_cast<int32_t>(kd.D);
  p.seq_lens = lens.ptr();
  p.scale = 1.0f / std::sqrt(static_cast<float>(kd.D));
  p.tau = static_cast<float>(tau);
  p.noise = static_cast<NoiseKind>(noise);
  p.seed = seed;
  p.step = step;
  p.scores = static_cast<float*>(s.data);
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::accumulate(p); },
        [&] {
          Temp ws(env, op, device, KVSIFT_CUDA_CALL(cuda::accumulate_workspace_bytes(p)), stream);
          return KVSIFT_CUDA_CALL(cuda::accumulate(p, ws.get(), stream));
        },
        {&q, &k, &s});
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("accumulate", Accumulate);

}  // namespace kvsift::ops
