// kvsift/cpp/ops/adaptive.cc: the head-adaptive selection entry (cuda/adaptive.cu, cpu/adaptive.cc).
#include "../../common/adaptive.h"
#include "common.h"
#include "ragged_args.h"
#ifdef KVSIFT_WITH_CUDA
#include "../../cuda/adaptive.h"
#endif

namespace kvsift::ops {
namespace {

// adaptiveSelect(scores, positions, indptr, { budget, minPerHead, window, lengths?,
//                ragged?: { batch, heads, indptr, lens? } }, stream?)
// scores: f32 [B, H, N] (dense) or f32 [rows] with options.ragged. positions: i32 [B * budget];
// indptr: i32 [B * H + 1] (outputs).
Napi::Value AdaptiveSelect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "adaptive.select";
  Napi::Object o = GetOptions(env, op, info[3]);
  TensorArg s = GetTensor(env, op, info[0], "scores", kAnyRank, {DType::F32});
  TensorArg pos = GetTensor(env, op, info[1], "positions", 1, {DType::I32});
  TensorArg ind = GetTensor(env, op, info[2], "indptr", 1, {DType::I32});
  int device = SameDevice(env, op, {&s, &pos, &ind});
  cudaStream_t stream = GetStream(env, op, info[4]);
  AdaptiveSelectParams p{};
  RaggedArgs ragged;
  Napi::Value rv = o.Get("ragged");
  const bool is_ragged = !rv.IsUndefined() && !rv.IsNull();
  int64_t B, H;
  if (is_ragged) {
    if (s.rank() != 1) ThrowInvalid(env, op, "scores", "an f32 tensor [rows] for a ragged input", ShapeText(s.shape));
    ragged = GetRagged(env, op, GetOptions(env, op, rv), s.numel, device);
    p.heads = ragged.heads;
    B = p.heads.B;
    H = p.heads.H;
    p.N = 0;
  } else {
    if (s.rank() != 3) ThrowInvalid(env, op, "scores", "an f32 tensor [B, H, N]", ShapeText(s.shape));
    B = s.dim(0);
    H = s.dim(1);
    p.N = s.dim(2);
    if (B * H * p.N >= (int64_t{1} << 31)) ThrowInvalid(env, op, "scores", "fewer than 2^31 entries", ShapeText(s.shape));
    p.heads.B = static_cast<int32_t>(B);
    p.heads.H = static_cast<int32_t>(H);
  }
  const int64_t budget = GetInt(env, op, o.Get("budget"), "budget", 1, INT32_MAX);
  const int64_t mph = GetInt(env, op, o.Get("minPerHead"), "minPerHead", 0, INT32_MAX);
  const int64_t window = GetInt(env, op, o.Get("window"), "window", 0, INT32_MAX);
  if (B * budget >= (int64_t{1} << 31)) ThrowInvalid(env, op, "budget", "B * budget below 2^31", std::to_string(budget));
  ExpectShape(env, op, pos, "positions", {B * budget});
  ExpectShape(env, op, ind, "indptr", {B * H + 1});
  Lengths lens(env, op, is_ragged ? env.Undefined() : o.Get("lengths"), "lengths", B, 0, p.N, device, stream);
  p.scores = static_cast<const float*>(s.data);
  p.lengths = lens.ptr();
  p.budget = static_cast<int32_t>(budget);
  p.min_per_head = static_cast<int32_t>(mph);
  p.window = static_cast<int32_t>(window);
  p.positions = static_cast<int32_t*>(pos.data);
  p.indptr = static_cast<int32_t*>(ind.data);
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::adaptive_select(p); },
        [&] {
          Temp ws(env, op, device, KVSIFT_CUDA_CALL(cuda::adaptive_select_workspace_bytes(p)), stream);
          return KVSIFT_CUDA_CALL(cuda::adaptive_select(p, ws.get(), stream));
        },
        {&s, &pos, &ind});
  if (is_ragged && device >= 0) {
    ragged.indptr.buffer->set_stream(stream);
    if (ragged.has_lens) ragged.lens.buffer->set_stream(stream);
  }
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("adaptiveSelect", AdaptiveSelect);

}  // namespace kvsift::ops
