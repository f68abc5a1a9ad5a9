// kvsift/cpp/ops/topk.cc: the top-k selection entry (cuda/topk.cu, cpu/topk.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// topk(input, out, { k, order, outRowStride, lengths? }, stream?): input [B, ..., M]; out holds
// R rows of outRowStride i32. lengths (per batch, the first dim) limit each row's valid entries.
Napi::Value Topk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "topk";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg in = GetTensor(env, op, info[0], "scores", kAnyRank, {});
  TensorArg out = GetTensor(env, op, info[1], "out", kAnyRank, {});
  int device = SameDevice(env, op, {&in, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  if (in.dtype != DType::F32 || in.rank() < 1) ThrowInvalid(env, op, "scores", "an f32 tensor of rank >= 1", dtype_name(in.dtype));
  if (out.dtype != DType::I32) ThrowInvalid(env, op, "out.dtype", "i32", dtype_name(out.dtype));
  int64_t R, M;
  RowsOf(in, &R, &M);
  int64_t k = GetInt(env, op, o.Get("k"), "k", 1, std::max<int64_t>(M, 1));
  int64_t stride = o.Get("outRowStride").IsUndefined() ? k : GetInt(env, op, o.Get("outRowStride"), "outRowStride", k, int64_t{1} << 31);
  int64_t order = GetInt(env, op, o.Get("order"), "order", 0, 1);
  if (out.numel < R * stride) ThrowInvalid(env, op, "out", "at least " + std::to_string(R * stride) + " elements", std::to_string(out.numel));
  int64_t batch = in.rank() == 1 ? 1 : in.shape[0];
  int64_t rpb = in.rank() == 1 ? 1 : (batch == 0 ? 1 : R / batch);
  Lengths lens(env, op, o.Get("lengths"), "lengths", batch, k, M, device, stream);
  TopkParams p{static_cast<const float*>(in.data), static_cast<int32_t*>(out.data), R, M, static_cast<int32_t>(k), stride,
               static_cast<TopkOrder>(order), lens.ptr(), rpb == 0 ? 1 : rpb};
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::topk(p); },
        [&] {
          Temp ws(env, op, device, KVSIFT_CUDA_CALL(cuda::topk_workspace_bytes(p)), stream);
          return KVSIFT_CUDA_CALL(cuda::topk(p, ws.get(), stream));
        },
        {&in, &out});
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("topk", Topk);

}  // namespace kvsift::ops
