// kvsift/cpp/ops/elementwise.cc: score protection, Gumbel noise and the head reduction (cuda/elementwise.cu, cpu/elementwise.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// protectScores(input, out, { sinks, recent, sign, seqLens? }, stream?): input [B, ..., M]
Napi::Value ProtectScores(const Napi::CallbackInfo& info) {
  Call c(info, "protectScores", 2);
  auto [in, out] = c.tensors({{0, "scores", kAnyRank, {DType::F32}}, {1, "out", kAnyRank, {DType::F32}}});
  if (in.rank() < 1 || out.shape != in.shape) c.invalid("out", "a tensor shaped like scores", ShapeText(out.shape));
  Rows r = RowsOf(in);
  int64_t sinks = c.integer("sinks", 0, int64_t{1} << 31);
  int64_t recent = c.integer("recent", 0, int64_t{1} << 31);
  double sign = c.f32("sign");
  Lengths lens = c.lengths("seqLens", r.batch, 0, r.M);
  ProtectParams p{static_cast<const float*>(in.data), static_cast<float*>(out.data), r.R, r.M, r.rows_per_batch,
                  static_cast<int32_t>(sinks), static_cast<int32_t>(recent), static_cast<float>(sign), lens.ptr()};
  return c.run([&] { cpu::protect_scores(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::protect_scores(p, c.stream)); });
}

// gumbel(out, { seed, step }, stream?): out f32 [B, H, T, N]
Napi::Value Gumbel(const Napi::CallbackInfo& info) {
  Call c(info, "keyformer.gumbel", 1);
  auto [out] = c.tensors({{0, "out", 4, {DType::F32}}});
  GumbelParams p{static_cast<int32_t>(out.dim(0)), static_cast<int32_t>(out.dim(1)), static_cast<int32_t>(out.dim(2)),
                 static_cast<int32_t>(out.dim(3)), c.u64("seed"), c.u64("step"), static_cast<float*>(out.data)};
  return c.run([&] { cpu::gumbel(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::gumbel(p, c.stream)); });
}

// headReduce(input [B, H, N], out [B, N], { scale }, stream?)
Napi::Value HeadReduce(const Napi::CallbackInfo& info) {
  Call c(info, "headReduce", 2);
  auto [in, out] = c.tensors({{0, "scores", 3, {DType::F32}}, {1, "out", 2, {DType::F32}}});
  c.expect_shape(out, "out", {in.dim(0), in.dim(2)});
  HeadReduceParams p{static_cast<const float*>(in.data), static_cast<float*>(out.data), static_cast<int32_t>(in.dim(0)),
                     static_cast<int32_t>(in.dim(1)), static_cast<int32_t>(in.dim(2)), c.f32("scale")};
  return c.run([&] { cpu::head_reduce(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::head_reduce(p, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("protectScores", ProtectScores);
KVSIFT_REGISTER_OP("gumbel", Gumbel);
KVSIFT_REGISTER_OP("headReduce", HeadReduce);

}  // namespace kvsift::ops
