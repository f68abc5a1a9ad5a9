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
  Call c(info, "quest.metadata", 3);
  if (c.has("from") || c.has("fromRows")) c.serve_as("quest.update");
  int layout = c.layout();
  auto [k, mn, mx] = c.tensors({{0, "keys", 4, kFloatTypes}, {1, "min", 4, {DType::F32}}, {2, "max", 4, {DType::F32}}});
  Dims kd = DimsOf(k, layout);
  const KeyDims32 n = KeysInt32(c, k, kd);
  const int64_t bs = c.integer("blockSize", 1, INT32_MAX);
  const int64_t nb = (kd.S + bs - 1) / bs;
  c.expect_shape(mn, "min", {kd.B, kd.H, nb, kd.D});
  c.expect_shape(mx, "max", {kd.B, kd.H, nb, kd.D});
  Lengths lens = c.lengths("seqLens", kd.B, 0, kd.S);
  // fromRows is the public `from` given per row, so messages name it `from`.
  Lengths from(c.env, c.op, c.option("fromRows"), "from", kd.B, 0, kd.S, c.device, c.stream);
  const int64_t from_all = c.has("from") ? c.integer("from", 0, kd.S) : 0;
  QuestMetaParams p{};
  p.k = ViewOf(k, layout);
  p.dtype = k.dtype;
  p.B = n.B;
  p.H = n.H;
  p.N = n.N;
  p.D = n.D;
  p.block_size = static_cast<int32_t>(bs);
  p.nblocks = static_cast<int32_t>(nb);
  p.seq_lens = lens.ptr();
  p.from = from.ptr();
  p.from_all = static_cast<int32_t>(from_all);
  p.min = static_cast<float*>(mn.data);
  p.max = static_cast<float*>(mx.data);
  return c.run([&] { cpu::quest_metadata(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::quest_metadata(p, c.stream)); });
}

// questSelect(q, min, max, out, { layout, k, groupReduce }, stream?): q [B, Hq, 1, D]; out i32
// [B, Hkv (Hq for groupReduce 3 'none'), k]; groupReduce 1 sum, 2 max, 3 none.
Napi::Value QuestSelect(const Napi::CallbackInfo& info) {
  Call c(info, "quest.select", 4);
  int layout = c.layout();
  auto [q, mn, mx, out] = c.tensors({{0, "q", 4, kFloatTypes}, {1, "min", 4, {DType::F32}}, {2, "max", 4, {DType::F32}}, {3, "out", 3, {DType::I32}}});
  Dims qd = DimsOf(q, layout);
  const int64_t B = mn.dim(0), Hkv = mn.dim(1), nb = mn.dim(2), D = mn.dim(3);
  c.expect_shape(mx, "max", mn.shape);
  if (qd.B != B || qd.D != D || Hkv == 0 || qd.H % Hkv != 0 || qd.S != 1) {
    c.invalid("q.shape", "[B, Hq, 1, D] matching the metadata, Hq a multiple of Hkv", ShapeText(q.shape));
  }
  if (nb > INT32_MAX || B * qd.H > INT32_MAX) c.invalid("min.shape", "fewer than 2^31 blocks and rows", ShapeText(mn.shape));
  const int64_t reduce = c.integer("groupReduce", 1, 3);
  const int64_t kk = GetInt(c.env, c.op, c.option("k"), "blocks", 1, std::max<int64_t>(nb, 1));
  const int64_t rows = B * (reduce == 3 ? qd.H : Hkv);
  c.expect_shape(out, "out", {B, reduce == 3 ? qd.H : Hkv, kk});
  Temp bounds = c.workspace(static_cast<size_t>(rows * nb) * sizeof(float));
  Temp valid = c.workspace(static_cast<size_t>(rows) * sizeof(int32_t));
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
  if (rows == 0 || nb == 0) return c.env.Undefined();
  return c.run(
      [&] {
        cpu::quest_bounds(bp);
        cpu::topk(tp);
        cpu::quest_pad(pp);
      },
      [&] {
        int err = static_cast<int>(KVSIFT_CUDA_CALL(cuda::quest_bounds(bp, c.stream)));
        if (err != 0) return err;
        Temp ws = c.workspace(KVSIFT_CUDA_CALL(cuda::topk_workspace_bytes(tp)));
        err = static_cast<int>(KVSIFT_CUDA_CALL(cuda::topk(tp, ws.get(), c.stream)));
        if (err != 0) return err;
        return static_cast<int>(KVSIFT_CUDA_CALL(cuda::quest_pad(pp, c.stream)));
      });
}

}  // namespace

KVSIFT_REGISTER_OP("questMetadata", QuestMetadata);
KVSIFT_REGISTER_OP("questSelect", QuestSelect);

}  // namespace kvsift::ops
