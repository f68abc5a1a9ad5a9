// kvsift/cpp/ops/pool.cc: the 1-D pooling entry (cuda/pool.cu, cpu/pool.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// pool1d(input, out, { kernel, kind, lengths?, rowsPerBatch }, stream?)
Napi::Value Pool1d(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "snapkv.pool";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg in = GetTensor(env, op, info[0], "votes", kAnyRank, {});
  TensorArg out = GetTensor(env, op, info[1], "out", kAnyRank, {});
  (void)0;
  int device = SameDevice(env, op, {&in, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  if (in.dtype != DType::F32 || in.rank() < 1) ThrowInvalid(env, op, "votes", "an f32 tensor of rank >= 1", dtype_name(in.dtype));
  if (out.dtype != DType::F32 || out.shape != in.shape) ThrowInvalid(env, op, "out", "an f32 tensor shaped like votes", ShapeText(out.shape));
  if (in.data == out.data) ThrowInvalid(env, op, "out", "a tensor distinct from votes", "the same buffer");
  int64_t R, M;
  RowsOf(in, &R, &M);
  int64_t kernel = GetInt(env, op, o.Get("kernel"), "kernel", 1, 1 << 20);
  if (kernel % 2 == 0) ThrowInvalid(env, op, "kernel", "an odd integer", std::to_string(kernel));
  int64_t kind = GetInt(env, op, o.Get("kind"), "kind", 0, 1);
  int64_t batch = in.rank() == 1 ? 1 : in.shape[0];
  int64_t rpb = in.rank() == 1 ? 1 : (batch == 0 ? 1 : R / batch);
  Lengths lens(env, op, o.Get("lengths"), "lengths", batch, 0, M, device, stream);
  PoolParams p{static_cast<const float*>(in.data), static_cast<float*>(out.data), R, M, static_cast<int32_t>(kernel),
               static_cast<PoolKind>(kind), lens.ptr(), rpb == 0 ? 1 : rpb};
  if (in.rank() == 1) p.rows_per_batch = 1;
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::pool1d(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::pool1d(p, stream)); },
        {&in, &out});
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("pool1d", Pool1d);

}  // namespace kvsift::ops
