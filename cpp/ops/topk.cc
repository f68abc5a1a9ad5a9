// kvsift/cpp/ops/topk.cc: the top-k selection entry (cuda/topk.cu, cpu/topk.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// topk(input, out, { k, order, outRowStride, lengths? }, stream?): input [B, ..., M]; out holds
// R rows of outRowStride i32. lengths (per batch, the first dim) limit each row's valid entries.
Napi::Value Topk(const Napi::CallbackInfo& info) {
  Call c(info, "topk", 2);
  auto [in, out, r] = F32RowsInOut(c, "scores");
  if (out.dtype != DType::I32) c.invalid("out.dtype", "i32", dtype_name(out.dtype));
  int64_t k = c.integer("k", 1, std::max<int64_t>(r.M, 1));
  int64_t stride = c.has("outRowStride") ? c.integer("outRowStride", k, int64_t{1} << 31) : k;
  int64_t order = c.integer("order", 0, 1);
  if (out.numel < r.R * stride) c.invalid("out", "at least " + std::to_string(r.R * stride) + " elements", std::to_string(out.numel));
  Lengths lens = c.lengths("lengths", r.batch, k, r.M);
  TopkParams p{static_cast<const float*>(in.data), static_cast<int32_t*>(out.data), r.R, r.M, static_cast<int32_t>(k), stride,
               static_cast<TopkOrder>(order), lens.ptr(), r.rows_per_batch};
  return c.run([&] { cpu::topk(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::topk_workspace_bytes(p)); },
               [&](void* ws) { return KVSIFT_CUDA_CALL(cuda::topk(p, ws, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("topk", Topk);

}  // namespace kvsift::ops
