// kvsift/cpp/ops/adaptive.cc: the head-adaptive selection entry (cuda/adaptive.cu, cpu/adaptive.cc).
#include "../../common/adaptive.h"
#include "common.h"
#include "ragged_args.h"
#ifdef KVSIFT_WITH_CUDA
#include "../../cuda/adaptive.h"
#endif

namespace kvsift::ops {
namespace {

// The heads of the scores: a dense [B, H, N] tensor, or [rows] in the ragged layout given as
// options.ragged (no buffers for a dense input). Sets p.heads (B and H either way) and p.N (0
// for a ragged input, whose heads carry their own live lengths).
struct ScoreHeads {
  RaggedArgs ragged;
  int64_t B, H;
};
ScoreHeads GetScoreHeads(const Call& c, const TensorArg& s, AdaptiveSelectParams& p) {
  Napi::Value rv = c.option("ragged");
  if (!rv.IsUndefined() && !rv.IsNull()) {
    if (s.rank() != 1) c.invalid("scores", "an f32 tensor [rows] for a ragged input", ShapeText(s.shape));
    RaggedArgs ragged = GetRagged(c, rv, s.numel);
    p.heads = ragged.heads;
    p.N = 0;
    return {ragged, p.heads.B, p.heads.H};
  }
  if (s.rank() != 3) c.invalid("scores", "an f32 tensor [B, H, N]", ShapeText(s.shape));
  p.N = s.dim(2);
  if (s.dim(0) * s.dim(1) * p.N >= (int64_t{1} << 31)) c.invalid("scores", "fewer than 2^31 entries", ShapeText(s.shape));
  p.heads.B = static_cast<int32_t>(s.dim(0));
  p.heads.H = static_cast<int32_t>(s.dim(1));
  return {RaggedArgs{}, s.dim(0), s.dim(1)};
}

// adaptiveSelect(scores, positions, indptr, { budget, minPerHead, window, lengths?,
//                ragged?: { batch, heads, indptr, lens? } }, stream?)
// scores: f32 [B, H, N] (dense) or f32 [rows] with options.ragged. positions: i32 [B * budget];
// indptr: i32 [B * H + 1] (outputs).
Napi::Value AdaptiveSelect(const Napi::CallbackInfo& info) {
  Call c(info, "adaptive.select", 3);
  auto [s, pos, ind] = c.tensors({{0, "scores", kAnyRank, {DType::F32}}, {1, "positions", 1, {DType::I32}}, {2, "indptr", 1, {DType::I32}}});
  AdaptiveSelectParams p{};
  auto [ragged, B, H] = GetScoreHeads(c, s, p);
  const bool is_ragged = ragged.indptr.buffer != nullptr;
  const int64_t budget = c.integer("budget", 1, INT32_MAX);
  const int64_t mph = c.integer("minPerHead", 0, INT32_MAX);
  const int64_t window = c.integer("window", 0, INT32_MAX);
  if (B * budget >= (int64_t{1} << 31)) c.invalid("budget", "B * budget below 2^31", std::to_string(budget));
  c.expect_shape(pos, "positions", {B * budget});
  c.expect_shape(ind, "indptr", {B * H + 1});
  Lengths lens(c.env, c.op, is_ragged ? c.env.Undefined() : c.option("lengths"), "lengths", B, 0, p.N, c.device, c.stream);
  p.scores = static_cast<const float*>(s.data);
  p.lengths = lens.ptr();
  p.budget = static_cast<int32_t>(budget);
  p.min_per_head = static_cast<int32_t>(mph);
  p.window = static_cast<int32_t>(window);
  p.positions = static_cast<int32_t*>(pos.data);
  p.indptr = static_cast<int32_t*>(ind.data);
  return c.run([&] { cpu::adaptive_select(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::adaptive_select_workspace_bytes(p)); },
               [&](void* ws) { return KVSIFT_CUDA_CALL(cuda::adaptive_select(p, ws, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("adaptiveSelect", AdaptiveSelect);

}  // namespace kvsift::ops
