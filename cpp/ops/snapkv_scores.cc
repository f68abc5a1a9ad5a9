// kvsift/cpp/ops/snapkv_scores.cc: the SnapKV window-scoring entry (cuda/snapkv_scores.cu, cpu/snapkv_scores.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// snapkvScores(queries, keys, out, { window, groupReduce, layout, seqLens?, lse? }, stream?)
Napi::Value SnapkvScores(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "snapkv.scores";
  Napi::Object o = GetOptions(env, op, info[3]);
  int layout = Layout(env, op, o);
  TensorArg q = GetTensor(env, op, info[0], "queries", 4, kFloatTypes);
  TensorArg k = GetTensor(env, op, info[1], "keys", 4, kFloatTypes);
  TensorArg out = GetTensor(env, op, info[2], "out", 3, {DType::F32});
  int device = SameDevice(env, op, {&q, &k, &out});
  cudaStream_t stream = GetStream(env, op, info[4]);
  if (q.dtype != k.dtype) ThrowInvalid(env, op, "queries.dtype", std::string("keys' dtype ") + dtype_name(k.dtype), dtype_name(q.dtype));
  Dims qd = DimsOf(q, layout), kd = DimsOf(k, layout);
  int64_t W = GetInt(env, op, o.Get("window"), "window", 1, kd.S);
  int64_t gr = GetInt(env, op, o.Get("groupReduce"), "groupReduce", 0, 3);
  if (qd.B != kd.B || qd.D != kd.D || qd.S != W || kd.H == 0 || qd.H == 0 || kd.D == 0 || qd.H % kd.H != 0) {
    ThrowInvalid(env, op, "queries.shape", "[B, Hq, W, D] matching keys with Hq a positive multiple of Hkv and D >= 1", ShapeText(q.shape));
  }
  int64_t hout = gr == 3 ? qd.H : kd.H;
  ExpectShape(env, op, out, "out", {kd.B, hout, kd.S - W});
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", kd.B, W, kd.S, device, stream);
  const float* lse = nullptr;
  TensorArg lse_t;
  if (!o.Get("lse").IsUndefined()) {
    lse_t = GetTensor(env, op, o.Get("lse"), "lse", 3, {DType::F32});
    SameDevice(env, op, {&q, &lse_t});
    ExpectShape(env, op, lse_t, "lse", {qd.B, qd.H, W});
    lse = static_cast<const float*>(lse_t.data);
  }
  SnapkvScoresParams p{};
  p.q = ViewOf(q, layout);
  p.k = ViewOf(k, layout);
  p.dtype = q.dtype;
  p.B = static_cast<int32_t>(kd.B);
  p.Hq = static_cast<int32_t>(qd.H);
  p.Hkv = static_cast<int32_t>(kd.H);
  p.N = static_cast<int32_t>(kd.S);
  p.W = static_cast<int32_t>(W);
  p.D = static_cast<int32_t>(kd.D);
  p.seq_lens = lens.ptr();
  p.lse = lse;
  p.group_reduce = static_cast<GroupReduce>(gr);
  p.scale = 1.0f / std::sqrt(static_cast<float>(kd.D));
  p.out = static_cast<float*>(out.data);
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::snapkv_scores(p); },
        [&] {
          Temp ws(env, op, device, KVSIFT_CUDA_CALL(cuda::snapkv_scores_workspace_bytes(p)), stream);
          return KVSIFT_CUDA_CALL(cuda::snapkv_scores(p, ws.get(), stream));
        },
        {&q, &k, &out});
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("snapkvScores", SnapkvScores);

}  // namespace kvsift::ops
