// kvsift/cpp/ops/ragged.cc: the ragged per-head cache entries (cuda/ragged.cu, cpu/ragged.cc):
// gather into ragged storage, append, accumulation, TOVA's layer score, gap zeroing.
#include "../../common/ragged.h"
#include "common.h"
#include "ragged_args.h"
#ifdef KVSIFT_WITH_CUDA
#include "../../cuda/ragged.h"
#endif

namespace kvsift::ops {
namespace {

inline int64_t RowWidth(const TensorArg& t) { return t.rank() == 1 ? 1 : t.shape.back(); }

// raggedGather(src, selPositions, selIndptr, out, { batch, heads, reserve, layout?,
//              srcRagged?: { batch, heads, indptr, lens? }, outIndptr?, outLens?, identity?, op? }, stream?)
// src: dense [B, H, N, D] in the layout, or [rows, D] / [rows] with srcRagged. out: [total +
// B*H*reserve, D] (or [..] for rank-1 rows), src's dtype.
Napi::Value RaggedGather(const Napi::CallbackInfo& info) {
  Call c(info, "compactRagged", 4);
  // The public op this gather serves (compactRagged, RaggedKvCache.fromSelection / .retain).
  Napi::Value opv = c.option("op");
  if (opv.IsString()) c.serve_as(opv.As<Napi::String>().Utf8Value());
  auto [src, sp, si, out] = c.tensors({{0, "src", kAnyRank, {}},
                                       {1, "selection.positions", 1, {DType::I32}},
                                       {2, "selection.indptr", 1, {DType::I32}},
                                       {3, "out", kAnyRank, {}}});
  const int64_t B = c.integer("batch", 1, int64_t{1} << 30);
  const int64_t H = c.integer("heads", 1, int64_t{1} << 30);
  const int64_t reserve = c.integer("reserve", 0, INT32_MAX);
  c.expect_shape(si, "selection.indptr", {B * H + 1});
  if (out.dtype != src.dtype) c.invalid("out.dtype", dtype_name(src.dtype), dtype_name(out.dtype));
  RaggedGatherParams p{};
  RaggedArgs sr;
  Napi::Value srv = c.option("srcRagged");
  const bool src_ragged = !srv.IsUndefined() && !srv.IsNull();
  int64_t D;
  if (src_ragged) {
    if (src.rank() != 1 && src.rank() != 2) c.invalid("src", "a tensor [rows, D] or [rows]", ShapeText(src.shape));
    sr = GetRagged(c, srv, src.rank() == 0 ? 0 : src.dim(0));
    if (sr.heads.B != B || sr.heads.H != H) c.invalid("srcRagged", "the selection's batch and heads", "others");
    D = RowWidth(src);
    p.src = View4{src.data, 0, 0, 0};
    p.src_heads = sr.heads;
  } else {
    if (src.rank() != 4) c.invalid("src", "a 4-D cache", ShapeText(src.shape));
    const int layout = c.layout();
    Dims dd = DimsOf(src, layout);
    if (dd.B != B || dd.H != H) c.invalid("src", "a cache of the selection's batch and heads", ShapeText(src.shape));
    if (dd.S >= (int64_t{1} << 31)) c.invalid("src", "fewer than 2^31 tokens", ShapeText(src.shape));
    D = dd.D;
    p.src = ViewOf(src, layout);
    p.N = static_cast<int32_t>(dd.S);
  }
  const int64_t total = sp.numel;
  const int64_t out_rows = total + B * H * reserve;
  if (out_rows >= (int64_t{1} << 31)) c.invalid("reserve", "fewer than 2^31 rows in all", std::to_string(out_rows));
  if (out.rank() == 1 ? (D != 1 || out.numel != out_rows) : (out.rank() != 2 || out.dim(0) != out_rows || out.dim(1) != D)) {
    c.invalid("out", "[" + std::to_string(out_rows) + ", " + std::to_string(D) + "]", ShapeText(out.shape));
  }
  TensorArg oi = OptionalDeviceI32(c, "outIndptr", B * H + 1);
  TensorArg ol = OptionalDeviceI32(c, "outLens", B * H);
  p.out_indptr = static_cast<int32_t*>(oi.data);
  p.out_lens = static_cast<int32_t*>(ol.data);
  p.dtype = src.dtype;
  p.B = static_cast<int32_t>(B);
  p.H = static_cast<int32_t>(H);
  p.D = static_cast<int32_t>(D);
  // identity: every row of the selection's heads in order (the selection's own positions moved
  // into a layout with room).
  p.sel_positions = c.option("identity").ToBoolean() ? nullptr : static_cast<const int32_t*>(sp.data);
  p.sel_indptr = static_cast<const int32_t*>(si.data);
  p.sel_total = total;
  p.reserve = static_cast<int32_t>(reserve);
  p.out = out.data;
  return c.run_counted([&] { return cpu::ragged_gather(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::ragged_gather(p, c.stream)); },
                       "selected positions fall outside their heads");
}

// raggedAppend(src, dst, { layout?, ragged: { batch, heads, indptr, lens }, updateLens,
//              positions?, posBase? }, stream?): src [B, H, T, D] in the layout, dst [rows, D].
Napi::Value RaggedAppend(const Napi::CallbackInfo& info) {
  Call c(info, "RaggedKvCache.append", 2);
  const int layout = c.layout();
  auto [src, dst] = c.tensors({{0, "src", 4, {}}, {1, "dst", 2, {}}});
  if (src.dtype != dst.dtype) c.invalid("src.dtype", dtype_name(dst.dtype), dtype_name(src.dtype));
  RaggedArgs r = GetRagged(c, c.option("ragged"), dst.dim(0));
  if (!r.has_lens) c.invalid("ragged.lens", "an i32 tensor", "undefined");
  Dims sd = DimsOf(src, layout);
  if (sd.B != r.heads.B || sd.H != r.heads.H || sd.D != dst.dim(1) || sd.S >= INT32_MAX) {
    c.invalid("src", "[B, H, T, D] matching the cache", ShapeText(src.shape));
  }
  const bool update = c.option("updateLens").ToBoolean();
  TensorArg pt = OptionalDeviceI32(c, "positions", dst.dim(0));
  Lengths base = c.lengths("posBase", sd.B, 0, INT32_MAX);
  RaggedAppendParams p{};
  p.positions = static_cast<int32_t*>(pt.data);
  p.src = ViewOf(src, layout);
  p.dtype = src.dtype;
  p.heads = r.heads;
  p.B = r.heads.B;  // src's batch and heads are the layout's (checked above)
  p.H = r.heads.H;
  p.T = static_cast<int32_t>(sd.S);
  p.D = static_cast<int32_t>(sd.D);
  p.lens = update ? static_cast<int32_t*>(r.lens.data) : nullptr;
  p.dst = dst.data;
  p.pos_base = base.ptr();
  return c.run([&] { cpu::ragged_append(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::ragged_append(p, c.stream)); });
}

// raggedAccumulate(queries, keys, scores, { layout?, tau, noise, seed, step,
//                  ragged: { batch, heads, indptr, lens? }, positions? }, stream?)
Napi::Value RaggedAccumulate(const Napi::CallbackInfo& info) {
  Call c(info, "keyformer.accumulate", 3);
  const int layout = c.layout();
  auto [q, k, s] = c.tensors({{0, "queries", 4, kFloatTypes}, {1, "keys", 2, kFloatTypes}, {2, "scores", 1, {DType::F32}}});
  if (q.dtype != k.dtype) c.invalid("queries.dtype", std::string("keys' dtype ") + dtype_name(k.dtype), dtype_name(q.dtype));
  RaggedArgs r = GetRagged(c, c.option("ragged"), k.dim(0));
  Dims qd = DimsOf(q, layout);
  if (qd.B != r.heads.B || qd.D != k.dim(1) || qd.H == 0 || qd.D == 0 || qd.H % r.heads.H != 0 || qd.S < 1 || qd.S >= INT32_MAX || qd.D >= INT32_MAX) {
    c.invalid("queries.shape", "[B, Hq, T, D] matching the ragged keys, Hq a multiple of Hkv", ShapeText(q.shape));
  }
  c.expect_shape(s, "scores", {k.dim(0)});
  RaggedAccumulateParams p{};
  p.tau = F32Tau(c, c.number("tau"));
  TensorArg pt = OptionalDeviceI32(c, "positions", k.dim(0));
  p.positions = static_cast<const int32_t*>(pt.data);
  p.q = ViewOf(q, layout);
  p.k = k.data;
  p.dtype = k.dtype;
  p.heads = r.heads;
  p.B = r.heads.B;  // the queries' batch is the layout's (checked above)
  p.Hq = static_cast<int32_t>(qd.H);
  p.Hkv = r.heads.H;
  p.T = static_cast<int32_t>(qd.S);
  p.D = static_cast<int32_t>(qd.D);
  p.scale = 1.0f / std::sqrt(static_cast<float>(qd.D));
  SetNoise(c, p);
  p.scores = static_cast<float*>(s.data);
  return c.run([&] { cpu::ragged_accumulate(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::ragged_accumulate_workspace_bytes(p)); },
               [&](void* ws) { return KVSIFT_CUDA_CALL(cuda::ragged_accumulate(p, ws, c.stream)); });
}

// raggedLayerScores(perHead, out, { ragged, positions?, scale }, stream?): out f32 [B, n].
Napi::Value RaggedLayerScores(const Napi::CallbackInfo& info) {
  Call c(info, "tova.select", 2);
  auto [ph, out] = c.tensors({{0, "perHead", 1, {DType::F32}}, {1, "out", 2, {DType::F32}}});
  RaggedArgs r = GetRagged(c, c.option("ragged"), ph.numel);
  if (out.dim(0) != r.heads.B || out.dim(1) >= INT32_MAX) c.invalid("out", "[B, n]", ShapeText(out.shape));
  TensorArg pt = OptionalDeviceI32(c, "positions", ph.numel);
  RaggedLayerScoresParams p{};
  p.positions = static_cast<const int32_t*>(pt.data);
  p.per_head = static_cast<const float*>(ph.data);
  p.heads = r.heads;
  p.n = static_cast<int32_t>(out.dim(1));
  p.scale = c.f32("scale");
  p.out = static_cast<float*>(out.data);
  return c.run([&] { cpu::ragged_layer_scores(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::ragged_layer_scores(p, c.stream)); });
}

// raggedZeroGaps(x, { ragged }, stream?): x f32 [rows].
Napi::Value RaggedZeroGaps(const Napi::CallbackInfo& info) {
  Call c(info, "l2.norms", 1);
  auto [x] = c.tensors({{0, "x", 1, {DType::F32}}});
  RaggedArgs r = GetRagged(c, c.option("ragged"), x.numel);
  RaggedZeroGapsParams p{static_cast<float*>(x.data), r.heads};
  return c.run([&] { cpu::ragged_zero_gaps(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::ragged_zero_gaps(p, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("raggedGather", RaggedGather);
KVSIFT_REGISTER_OP("raggedAppend", RaggedAppend);
KVSIFT_REGISTER_OP("raggedAccumulate", RaggedAccumulate);
KVSIFT_REGISTER_OP("raggedLayerScores", RaggedLayerScores);
KVSIFT_REGISTER_OP("raggedZeroGaps", RaggedZeroGaps);

}  // namespace kvsift::ops
