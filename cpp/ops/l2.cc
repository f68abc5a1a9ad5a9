// kvsift/cpp/ops/l2.cc: the key-norm entry (cuda/l2.cu, cpu/l2.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// l2Norms(keys, out, { layout, seqLens? }, stream?)
Napi::Value L2Norms(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "l2.norms";
  Napi::Object o = GetOptions(env, op, info[2]);
  int layout = Layout(env, op, o);
  TensorArg k = GetTensor(env, op, info[0], "keys", 4, kFloatTypes);
  TensorArg out = GetTensor(env, op, info[1], "out", 3, {DType::F32});
  int device = SameDevice(env, op, {&k, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  Dims kd = DimsOf(k, layout);
  ExpectShape(env, op, out, "out", {kd.B, kd.H, kd.S});
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", kd.B, 0, kd.S, device, stream);
  L2NormsParams p{ViewOf(k, layout), k.dtype, static_cast<int32_t>(kd.B), static_cast<int32_t>(kd.H),
                  static_cast<int32_t>(kd.S), static_cast<int32_t>(kd.D), lens.ptr(), static_cast<float*>(out.data)};
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::l2_norms(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::l2_norms(p, stream)); },
        {&k, &out});
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("l2Norms", L2Norms);

}  // namespace kvsift::ops
