// kvsift/cpp/ops/l2.cc: the key-norm entry (cuda/l2.cu, cpu/l2.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// l2Norms(keys, out, { layout, seqLens? }, stream?)
Napi::Value L2Norms(const Napi::CallbackInfo& info) {
  Call c(info, "l2.norms", 2);
  int layout = c.layout();
  auto [k, out] = c.tensors({{0, "keys", 4, kFloatTypes}, {1, "out", 3, {DType::F32}}});
  Dims kd = DimsOf(k, layout);
  c.expect_shape(out, "out", {kd.B, kd.H, kd.S});
  Lengths lens = c.lengths("seqLens", kd.B, 0, kd.S);
  L2NormsParams p{ViewOf(k, layout), k.dtype, static_cast<int32_t>(kd.B), static_cast<int32_t>(kd.H),
                  static_cast<int32_t>(kd.S), static_cast<int32_t>(kd.D), lens.ptr(), static_cast<float*>(out.data)};
  return c.run([&] { cpu::l2_norms(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::l2_norms(p, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("l2Norms", L2Norms);

}  // namespace kvsift::ops
