// kvsift/cpp/ops/pool.cc: the 1-D pooling entry (cuda/pool.cu, cpu/pool.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// pool1d(input, out, { kernel, kind, lengths?, rowsPerBatch }, stream?)
Napi::Value Pool1d(const Napi::CallbackInfo& info) {
  Call c(info, "snapkv.pool", 2);
  auto [in, out, r] = F32RowsInOut(c, "votes");
  if (out.dtype != DType::F32 || out.shape != in.shape) c.invalid("out", "an f32 tensor shaped like votes", ShapeText(out.shape));
  if (in.data == out.data) c.invalid("out", "a tensor distinct from votes", "the same buffer");
  int64_t kernel = c.integer("kernel", 1, 1 << 20);
  if (kernel % 2 == 0) c.invalid("kernel", "an odd integer", std::to_string(kernel));
  int64_t kind = c.integer("kind", 0, 1);
  Lengths lens = c.lengths("lengths", r.batch, 0, r.M);
  PoolParams p{static_cast<const float*>(in.data), static_cast<float*>(out.data), r.R, r.M, static_cast<int32_t>(kernel),
               static_cast<PoolKind>(kind), lens.ptr(), r.rows_per_batch};
  return c.run([&] { cpu::pool1d(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::pool1d(p, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("pool1d", Pool1d);

}  // namespace kvsift::ops
