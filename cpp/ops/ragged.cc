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

inline void TouchRagged(const RaggedArgs& r, cudaStream_t stream) {
  if (r.indptr.buffer != nullptr) r.indptr.buffer->set_stream(stream);
  if (r.has_lens) r.lens.buffer->set_stream(stream);
}

inline int64_t RowWidth(const TensorArg& t) { return t.rank() == 1 ? 1 : t.shape.back(); }

// raggedGather(src, selPositions, selIndptr, out, { batch, heads, reserve, layout?,
//              srcRagged?: { batch, heads, indptr, lens? }, outIndptr?, outLens?, identity?, op? }, stream?)
// src: dense [B, H, N, D] in the layout, or [rows, D] / [rows] with srcRagged. out: [total +
// B*H*reserve, D] (or [..] for rank-1 rows), src's dtype.
Napi::Value RaggedGather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = GetOptions(env, "compactRagged", info[4]);
  // The public op this gather serves (compactRagged, RaggedKvCache.fromSelection / .retain).
  Napi::Value opv = o.Get("op");
  const std::string op = opv.IsString() ? opv.As<Napi::String>().Utf8Value() : "compactRagged";
  TensorArg src = GetTensor(env, op, info[0], "src", kAnyRank, {});
  TensorArg sp = GetTensor(env, op, info[1], "selection.positions", 1, {DType::I32});
  TensorArg si = GetTensor(env, op, info[2], "selection.indptr", 1, {DType::I32});
  TensorArg out = GetTensor(env, op, info[3], "out", kAnyRank, {});
  int device = SameDevice(env, op, {&src, &sp, &si, &out});
  cudaStream_t stream = GetStream(env, op, info[5]);
  const int64_t B = GetInt(env, op, o.Get("batch"), "batch", 1, int64_t{1} << 30);
  const int64_t H = GetInt(env, op, o.Get("heads"), "heads", 1, int64_t{1} << 30);
  const int64_t reserve = GetInt(env, op, o.Get("reserve"), "reserve", 0, INT32_MAX);
  ExpectShape(env, op, si, "selection.indptr", {B * H + 1});
  if (out.dtype != src.dtype) ThrowInvalid(env, op, "out.dtype", dtype_name(src.dtype), dtype_name(out.dtype));
  RaggedGatherParams p{};
  RaggedArgs sr;
  Napi::Value srv = o.Get("srcRagged");
  const bool src_ragged = !srv.IsUndefined() && !srv.IsNull();
  int64_t D;
  if (src_ragged) {
    if (src.rank() != 1 && src.rank() != 2) ThrowInvalid(env, op, "src", "a tensor [rows, D] or [rows]", ShapeText(src.shape));
    sr = GetRagged(env, op, GetOptions(env, op, srv), src.rank() == 0 ? 0 : src.dim(0), device);
    if (sr.heads.B != B || sr.heads.H != H) ThrowInvalid(env, op, "srcRagged", "the selection's batch and heads", "others");
    D = RowWidth(src);
    p.src = View4{src.data, 0, 0, 0};
    p.src_heads = sr.heads;
  } else {
    if (src.rank() != 4) ThrowInvalid(env, op, "src", "a 4-D cache", ShapeText(src.shape));
    const int layout = Layout(env, op, o);
    Dims dd = DimsOf(src, layout);
    if (dd.B != B || dd.H != H) ThrowInvalid(env, op, "src", "a cache of the selection's batch and heads", ShapeText(src.shape));
    if (dd.S >= (int64_t{1} << 31)) ThrowInvalid(env, op, "src", "fewer than 2^31 tokens", ShapeText(src.shape));
    D = dd.D;
    p.src = ViewOf(src, layout);
    p.N = static_cast<int32_t>(dd.S);
  }
  const int64_t total = sp.numel;
  const int64_t out_rows = total + B * H * reserve;
  if (out_rows >= (int64_t{1} << 31)) ThrowInvalid(env, op, "reserve", "fewer than 2^31 rows in all", std::to_string(out_rows));
  if (out.rank() == 1 ? (D != 1 || out.numel != out_rows) : (out.rank() != 2 || out.dim(0) != out_rows || out.dim(1) != D)) {
    ThrowInvalid(env, op, "out", "[" + std::to_string(out_rows) + ", " + std::to_string(D) + "]", ShapeText(out.shape));
  }
  TensorArg oi, ol;
  Napi::Value oiv = o.Get("outIndptr"), olv = o.Get("outLens");
  if (!oiv.IsUndefined()) {
    oi = GetTensor(env, op, oiv, "outIndptr", 1, {DType::I32});
    ExpectShape(env, op, oi, "outIndptr", {B * H + 1});
    if (oi.device != device) ThrowInvalid(env, op, "outIndptr", "a tensor on the op's device", "another device");
    p.out_indptr = static_cast<int32_t*>(oi.data);
  }
  if (!olv.IsUndefined()) {
    ol = GetTensor(env, op, olv, "outLens", 1, {DType::I32});
    ExpectShape(env, op, ol, "outLens", {B * H});
    if (ol.device != device) ThrowInvalid(env, op, "outLens", "a tensor on the op's device", "another device");
    p.out_lens = static_cast<int32_t*>(ol.data);
  }
  p.dtype = src.dtype;
  p.B = static_cast<int32_t>(B);
  p.H = static_cast<int32_t>(H);
  p.D = static_cast<int32_t>(D);
  // identity: every row of the selection's heads in order (the selection's own positions moved
  // into a layout with room).
  p.sel_positions = o.Get("identity").ToBoolean() ? nullptr : static_cast<const int32_t*>(sp.data);
  p.sel_indptr = static_cast<const int32_t*>(si.data);
  p.sel_total = total;
  p.reserve = static_cast<int32_t>(reserve);
  p.out = out.data;
  Dispatch d(env, op, device, stream);
  if (device < 0) {
    int64_t bad = d.cpu([&] { return cpu::ragged_gather(p); });
    if (bad != 0) {
      Throw(env, code::kIndexOutOfRange, op + ": " + std::to_string(bad) + " selected positions fall outside their heads");
    }
  } else {
#ifdef KVSIFT_WITH_CUDA
    d.cuda_result(cuda::ragged_gather(p, stream));
    Touch(stream, {&src, &sp, &si, &out});
    if (p.out_indptr != nullptr) Touch(stream, {&oi});
    if (p.out_lens != nullptr) Touch(stream, {&ol});
    TouchRagged(sr, stream);
#endif
  }
  return env.Undefined();
}

// raggedAppend(src, dst, { layout?, ragged: { batch, heads, indptr, lens }, updateLens,
//              positions?, posBase? }, stream?): src [B, H, T, D] in the layout, dst [rows, D].
Napi::Value RaggedAppend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "RaggedKvCache.append";
  Napi::Object o = GetOptions(env, op, info[2]);
  const int layout = Layout(env, op, o);
  TensorArg src = GetTensor(env, op, info[0], "src", 4, {});
  TensorArg dst = GetTensor(env, op, info[1], "dst", 2, {});
  int device = SameDevice(env, op, {&src, &dst});
  cudaStream_t stream = GetStream(env, op, info[3]);
  if (src.dtype != dst.dtype) ThrowInvalid(env, op, "src.dtype", dtype_name(dst.dtype), dtype_name(src.dtype));
  RaggedArgs r = GetRagged(env, op, GetOptions(env, op, o.Get("ragged")), dst.dim(0), device);
  if (!r.has_lens) ThrowInvalid(env, op, "ragged.lens", "an i32 tensor", "undefined");
  Dims sd = DimsOf(src, layout);
  if (sd.B != r.heads.B || sd.H != r.heads.H || sd.D != dst.dim(1) || sd.S >= INT32_MAX) {
    ThrowInvalid(env, op, "src", "[B, H, T, D] matching the cache", ShapeText(src.shape));
  }
  const bool update = o.Get("updateLens").ToBoolean();
  TensorArg pt;
  Napi::Value pv = o.Get("positions");
  RaggedAppendParams p{};
  if (!pv.IsUndefined()) {
    pt = GetTensor(env, op, pv, "positions", 1, {DType::I32});
    ExpectShape(env, op, pt, "positions", {dst.dim(0)});
    if (pt.device != device) ThrowInvalid(env, op, "positions", "a tensor on the op's device", "another device");
    p.positions = static_cast<int32_t*>(pt.data);
  }
  Lengths base(env, op, o.Get("posBase"), "posBase", sd.B, 0, INT32_MAX, device, stream);
  p.src = ViewOf(src, layout);
  p.dtype = src.dtype;
  p.B = static_cast<int32_t>(sd.B);
  p.H = static_cast<int32_t>(sd.H);
  p.T = static_cast<int32_t>(sd.S);
  p.D = static_cast<int32_t>(sd.D);
  p.heads = r.heads;
  p.lens = update ? static_cast<int32_t*>(r.lens.data) : nullptr;
  p.dst = dst.data;
  p.pos_base = base.ptr();
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::ragged_append(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::ragged_append(p, stream)); }, {&src, &dst});
  if (device >= 0) {
    TouchRagged(r, stream);
    if (p.positions != nullptr) Touch(stream, {&pt});
  }
  return env.Undefined();
}

// raggedAccumulate(queries, keys, scores, { layout?, tau, noise, seed, step,
//                  ragged: { batch, heads, indptr, lens? }, positions? }, stream?)
Napi::Value RaggedAccumulate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "keyformer.accumulate";
  Napi::Object o = GetOptions(env, op, info[3]);
  const int layout = Layout(env, op, o);
  TensorArg q = GetTensor(env, op, info[0], "queries", 4, kFloatTypes);
  TensorArg k = GetTensor(env, op, info[1], "keys", 2, kFloatTypes);
  TensorArg s = GetTensor(env, op, info[2], "scores", 1, {DType::F32});
  int device = SameDevice(env, op, {&q, &k, &s});
  cudaStream_t stream = GetStream(env, op, info[4]);
  if (q.dtype != k.dtype) ThrowInvalid(env, op, "queries.dtype", std::string("keys' dtype ") + dtype_name(k.dtype), dtype_name(q.dtype));
  RaggedArgs r = GetRagged(env, op, GetOptions(env, op, o.Get("ragged")), k.dim(0), device);
  Dims qd = DimsOf(q, layout);
  if (qd.B != r.heads.B || qd.D != k.dim(1) || qd.H % r.heads.H != 0 || qd.S < 1 || qd.S >= INT32_MAX || qd.D >= INT32_MAX) {
    ThrowInvalid(env, op, "queries.shape", "[B, Hq, T, D] matching the ragged keys, Hq a multiple of Hkv", ShapeText(q.shape));
  }
  ExpectShape(env, op, s, "scores", {k.dim(0)});
  double tau = GetNumber(env, op, o.Get("tau"), "tau");
  if (!(tau > 0)) ThrowInvalid(env, op, "tau", "a positive number", std::to_string(tau));
  RaggedAccumulateParams p{};
  TensorArg pt;
  Napi::Value pv = o.Get("positions");
  if (!pv.IsUndefined()) {
    pt = GetTensor(env, op, pv, "positions", 1, {DType::I32});
    ExpectShape(env, op, pt, "positions", {k.dim(0)});
    if (pt.device != device) ThrowInvalid(env, op, "positions", "a tensor on the op's device", "another device");
    p.positions = static_cast<const int32_t*>(pt.data);
  }
  p.q = ViewOf(q, layout);
  p.k = k.data;
  p.dtype = k.dtype;
  p.B = static_cast<int32_t>(qd.B);
  p.Hq = static_cast<int32_t>(qd.H);
  p.Hkv = r.heads.H;
  p.T = static_cast<int32_t>(qd.S);
  p.D = static_cast<int32_t>(qd.D);
  p.heads = r.heads;
  p.scale = 1.0f / std::sqrt(static_cast<float>(qd.D));
  p.tau = static_cast<float>(tau);
  p.noise = static_cast<NoiseKind>(GetInt(env, op, o.Get("noise"), "noise", 0, 1));
  p.seed = GetU64(env, op, o.Get("seed"), "seed");
  p.step = GetU64(env, op, o.Get("step"), "step");
  p.scores = static_cast<float*>(s.data);
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::ragged_accumulate(p); },
        [&] {
          Temp ws(env, op, device, KVSIFT_CUDA_CALL(cuda::ragged_accumulate_workspace_bytes(p)), stream);
          return KVSIFT_CUDA_CALL(cuda::ragged_accumulate(p, ws.get(), stream));
        },
        {&q, &k, &s});
  if (device >= 0) {
    TouchRagged(r, stream);
    if (p.positions != nullptr) Touch(stream, {&pt});
  }
  return env.Undefined();
}

// raggedLayerScores(perHead, out, { ragged, positions?, scale }, stream?): out f32 [B, n].
Napi::Value RaggedLayerScores(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "tova.select";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg ph = GetTensor(env, op, info[0], "perHead", 1, {DType::F32});
  TensorArg out = GetTensor(env, op, info[1], "out", 2, {DType::F32});
  int device = SameDevice(env, op, {&ph, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  RaggedArgs r = GetRagged(env, op, GetOptions(env, op, o.Get("ragged")), ph.numel, device);
  if (out.dim(0) != r.heads.B || out.dim(1) >= INT32_MAX) ThrowInvalid(env, op, "out", "[B, n]", ShapeText(out.shape));
  RaggedLayerScoresParams p{};
  TensorArg pt;
  Napi::Value pv = o.Get("positions");
  if (!pv.IsUndefined()) {
    pt = GetTensor(env, op, pv, "positions", 1, {DType::I32});
    ExpectShape(env, op, pt, "positions", {ph.numel});
    if (pt.device != device) ThrowInvalid(env, op, "positions", "a tensor on the op's device", "another device");
    p.positions = static_cast<const int32_t*>(pt.data);
  }
  p.per_head = static_cast<const float*>(ph.data);
  p.heads = r.heads;
  p.n = static_cast<int32_t>(out.dim(1));
  p.scale = static_cast<float>(GetNumber(env, op, o.Get("scale"), "scale"));
  p.out = static_cast<float*>(out.data);
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::ragged_layer_scores(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::ragged_layer_scores(p, stream)); },
        {&ph, &out});
  if (device >= 0) {
    TouchRagged(r, stream);
    if (p.positions != nullptr) Touch(stream, {&pt});
  }
  return env.Undefined();
}

// raggedZeroGaps(x, { ragged }, stream?): x f32 [rows].
Napi::Value RaggedZeroGaps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "l2.norms";
  Napi::Object o = GetOptions(env, op, info[1]);
  TensorArg x = GetTensor(env, op, info[0], "x", 1, {DType::F32});
  cudaStream_t stream = GetStream(env, op, info[2]);
  RaggedArgs r = GetRagged(env, op, GetOptions(env, op, o.Get("ragged")), x.numel, x.device);
  RaggedZeroGapsParams p{static_cast<float*>(x.data), r.heads};
  Dispatch d(env, op, x.device, stream);
  d.run([&] { cpu::ragged_zero_gaps(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::ragged_zero_gaps(p, stream)); }, {&x});
  if (x.device >= 0) TouchRagged(r, stream);
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("raggedGather", RaggedGather);
KVSIFT_REGISTER_OP("raggedAppend", RaggedAppend);
KVSIFT_REGISTER_OP("raggedAccumulate", RaggedAccumulate);
KVSIFT_REGISTER_OP("raggedLayerScores", RaggedLayerScores);
KVSIFT_REGISTER_OP("raggedZeroGaps", RaggedZeroGaps);

}  // namespace kvsift::ops
