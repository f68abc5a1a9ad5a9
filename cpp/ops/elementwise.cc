// kvsift/cpp/ops/elementwise.cc: score protection, Gumbel noise and the head reduction (cuda/elementwise.cu, cpu/elementwise.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// protectScores(input, out, { sinks, recent, sign, seqLens? }, stream?): input [B, ..., M]
Napi::Value ProtectScores(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "protectScores";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg in = GetTensor(env, op, info[0], "scores", kAnyRank, {DType::F32});
  TensorArg out = GetTensor(env, op, info[1], "out", kAnyRank, {DType::F32});
  int device = SameDevice(env, op, {&in, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  if (in.rank() < 1 || out.shape != in.shape) ThrowInvalid(env, op, "out", "a tensor shaped like scores", ShapeText(out.shape));
  int64_t R, M;
  RowsOf(in, &R, &M);
  int64_t sinks = GetInt(env, op, o.Get("sinks"), "sinks", 0, int64_t{1} << 31);
  int64_t recent = GetInt(env, op, o.Get("recent"), "recent", 0, int64_t{1} << 31);
  double sign = GetF32(env, op, o.Get("sign"), "sign");
  int64_t batch = in.rank() == 1 ? 1 : in.shape[0];
  int64_t rpb = in.rank() == 1 ? 1 : (batch == 0 ? 1 : R / batch);
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", batch, 0, M, device, stream);
  ProtectParams p{static_cast<const float*>(in.data), static_cast<float*>(out.data), R, M, rpb == 0 ? 1 : rpb,
                  static_cast<int32_t>(sinks), static_cast<int32_t>(recent), static_cast<float>(sign), lens.ptr()};
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::protect_scores(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::protect_scores(p, stream)); },
        {&in, &out});
  return env.Undefined();
}

// gumbel(out, { seed, step }, stream?): out f32 [B, H, T, N]
Napi::Value Gumbel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "keyformer.gumbel";
  Napi::Object o = GetOptions(env, op, info[1]);
  TensorArg out = GetTensor(env, op, info[0], "out", 4, {DType::F32});
  cudaStream_t stream = GetStream(env, op, info[2]);
  GumbelParams p{static_cast<int32_t>(out.dim(0)), static_cast<int32_t>(out.dim(1)), static_cast<int32_t>(out.dim(2)),
                 static_cast<int32_t>(out.dim(3)), GetU64(env, op, o.Get("seed"), "seed"),
                 GetU64(env, op, o.Get("step"), "step"), static_cast<float*>(out.data)};
  Dispatch d(env, op, out.device, stream);
  d.run([&] { cpu::gumbel(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::gumbel(p, stream)); },
        {&out});
  return env.Undefined();
}

// headReduce(input [B, H, N], out [B, N], { scale }, stream?)
Napi::Value HeadReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "headReduce";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg in = GetTensor(env, op, info[0], "scores", 3, {DType::F32});
  TensorArg out = GetTensor(env, op, info[1], "out", 2, {DType::F32});
  int device = SameDevice(env, op, {&in, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  ExpectShape(env, op, out, "out", {in.dim(0), in.dim(2)});
  HeadReduceParams p{static_cast<const float*>(in.data), static_cast<float*>(out.data), static_cast<int32_t>(in.dim(0)),
                     static_cast<int32_t>(in.dim(1)), static_cast<int32_t>(in.dim(2)),
                     GetF32(env, op, o.Get("scale"), "scale")};
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::head_reduce(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::head_reduce(p, stream)); },
        {&in, &out});
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("protectScores", ProtectScores);
KVSIFT_REGISTER_OP("gumbel", Gumbel);
KVSIFT_REGISTER_OP("headReduce", HeadReduce);

}  // namespace kvsift::ops
