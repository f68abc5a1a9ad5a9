// kvsift/cpp/ops/quest.cc: Quest's metadata / update and block selection entries
// (cuda/quest.cu, cpu/quest.cc; the selection runs the shared topk).
#include "../../common/quest.h"
#include "common.h"
#ifdef KVSIFT_WITH_CUDA
#include "../../cuda/decode.h"
#endif

namespace kvsift::ops {
namespace {

// questMetadata(keys, min, max, { layout, blockSize, seqLens?, from?, fromRows? }, stream?):
// min/max f32 [B, Hkv, ceil(N / blockSize), D]; only blocks holding tokens >= from are written.
Napi::Value QuestMetadata(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = GetOptions(env, "quest.metadata", info[3]);
  const bool update = !o.Get("from").IsUndefined() || !o.Get("fromRows").IsUndefined();
  const std::string op = update ? "quest.update" : "quest.metadata";
  int layout = Layout(env, op, o);
  TensorArg k = GetTensor(env, op, info[0], "keys", 4, kFloatTypes);
  TensorArg mn = GetTensor(env, op, info[1], "min", 4, {DType::F32});
  TensorArg mx = GetTensor(env, op, info[2], "max", 4, {DType::F32});
  int device = SameDevice(env, op, {&k, &mn, &mx});
  cudaStream_t stream = GetStream(env, op, info[4]);
  Dims kd = DimsOf(k, layout);
  if (kd.S > INT32_MAX || kd.B * kd.H > INT32_MAX) ThrowInvalid(env, op, "keys.shape", "N and B*Hkv below 2^31", ShapeText(k.shape));
  const int64_t bs = GetInt(env, op, o.Get("blockSize"), "blockSize", 1, INT32_MAX);
  const int64_t nb = (kd.S + bs - 1) / bs;
  ExpectShape(env, op, mn, "min", {kd.B, kd.H, nb, kd.D});
  ExpectShape(env, op, mx, "max", {kd.B, kd.H, nb, kd.D});
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", kd.B, 0, kd.S, device, stream);
  Lengths from(env, op, o.Get("fromRows"), "from", kd.B, 0, kd.S, device, stream);
  const int64_t from_all = o.Get("from").IsUndefined() ? 0 : GetInt(env, op, o.Get("from"), "from", 0, kd.S);
  QuestMetaParams p{};
  p.k = ViewOf(k, layout);
  p.dtype = k.dtype;
  p.B = static_cast<int32_t>(kd.B);
  p.H = static_cast<int32_t>(kd.H);
  p.N = static_cast<int32_t>(kd.S);
  p.D = static_cast<int32_t>(kd.D);
  p.block_size = static_cast<int32_t>(bs);
  p.nblocks = static_cast<int32_t>(nb);
  p.seq_lens = lens.ptr();
  p.from = from.ptr();
  p.from_all = static_cast<int32_t>(from_all);
  p.min = static_cast<float*>(mn.data);
  p.max = static_cast<float*>(mx.data);
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::quest_metadata(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::quest_metadata(p, stream)); }, {&k, &mn, &mx});
  return env.Undefined();
}

// questSelect(q, min, max, out, { layout, k, groupReduce }, stream?): q [B, Hq, 1, D]; out i32
// [B, Hkv (Hq for groupReduce 3 'none'), k]; groupReduce 1 sum, 2 max, 3 none.
Napi::Value QuestSelect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "quest.select";
  Napi::Object o = GetOptions(env, op, info[4]);
  int layout = Layout(env, op, o);
  TensorArg q = GetTensor(env, op, info[0], "q", 4, kFloatTypes);
  TensorArg mn = GetTensor(env, op, info[1], "min", 4, {DType::F32});
  TensorArg mx = GetTensor(env, op, info[2], "max", 4, {DType::F32});
  TensorArg out = GetTensor(env, op, info[3], "out", 3, {DType::I32});
  int device = SameDevice(env, op, {&q, &mn, &mx, &out});
  cudaStream_t stream = GetStream(env, op, info[5]);
  Dims qd = DimsOf(q, layout);
  const int64_t B = mn.dim(0), Hkv = mn.dim(1), nb = mn.dim(2), D = mn.dim(3);
  ExpectShape(env, op, mx, "max", mn.shape);
  if (qd.B != B || qd.D != D || Hkv == 0 || qd.H % Hkv != 0 || qd.S != 1) {
    ThrowInvalid(env, op, "q.shape", "[B, Hq, 1, D] matching the metadata, Hq a multiple of Hkv", ShapeText(q.shape));
  }
  if (nb > INT32_MAX || B * qd.H > INT32_MAX) ThrowInvalid(env, op, "min.shape", "fewer than 2^31 blocks and rows", ShapeText(mn.shape));
  const int64_t reduce = GetInt(env, op, o.Get("groupReduce"), "groupReduce", 1, 3);
  const int64_t kk = GetInt(env, op, o.Get("k"), "blocks", 1, std::max<int64_t>(nb, 1));
  const int64_t rows = B * (reduce == 3 ? qd.H : Hkv);
  ExpectShape(env, op, out, "out", {B, reduce == 3 ? qd.H : Hkv, kk});
  Temp bounds(env, op, device, static_cast<size_t>(rows * nb) * sizeof(float), stream);
  Temp valid(env, op, device, static_cast<size_t>(rows) * sizeof(int32_t), stream);
  QuestBoundsParams bp{};
  bp.q = ViewOf(q, layout);
  bp.dtype = q.dtype;
  bp.min = static_cast<const float*>(mn.data);
  bp.max = static_cast<const float*>(mx.data);
  bp.B = static_cast<int32_t>(B);
  bp.Hq = static_cast<int32_t>(qd.H);
  bp.Hkv = static_cast<int32_t>(Hkv);
  bp.D = static_cast<int32_t>(D);
  bp.nblocks = static_cast<int32_t>(nb);
  bp.reduce = static_cast<GroupReduce>(reduce);
  bp.out = static_cast<float*>(bounds.get());
  bp.valid = static_cast<int32_t*>(valid.get());
  // Empty blocks bound at -inf: topk takes them only when fewer than k blocks are valid, and the
  // pad turns them into -1.
  TopkParams tp{bp.out, static_cast<int32_t*>(out.data), rows, nb, static_cast<int32_t>(kk), kk, TopkOrder::Position, nullptr, 1};
  QuestPadParams pp{static_cast<int32_t*>(out.data), bp.valid, rows, static_cast<int32_t>(kk)};
  if (rows == 0 || nb == 0) return env.Undefined();
  Dispatch d(env, op, device, stream);
  d.run(
      [&] {
        cpu::quest_bounds(bp);
        cpu::topk(tp);
        cpu::quest_pad(pp);
      },
      [&] {
        int err = static_cast<int>(KVSIFT_CUDA_CALL(cuda::quest_bounds(bp, stream)));
        if (err != 0) return err;
        Temp ws(env, op, device, KVSIFT_CUDA_CALL(cuda::topk_workspace_bytes(tp)), stream);
        err = static_cast<int>(KVSIFT_CUDA_CALL(cuda::topk(tp, ws.get(), stream)));
        if (err != 0) return err;
        return static_cast<int>(KVSIFT_CUDA_CALL(cuda::quest_pad(pp, stream)));
      },
      {&q, &mn, &mx, &out});
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("questMetadata", QuestMetadata);
KVSIFT_REGISTER_OP("questSelect", QuestSelect);

}  // namespace kvsift::ops
