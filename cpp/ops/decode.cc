// kvsift/cpp/ops/decode.cc: the decode attention entry, dense or sparse, with optional fused
// H2O / Keyformer accumulation (cuda/decode.cu, cpu/decode.cc).
#include "../../common/decode.h"
#include "common.h"

#include <cfloat>
#ifdef KVSIFT_WITH_CUDA
#include "../../cuda/decode.h"
#endif

namespace kvsift::ops {
namespace {

// decodeAttention(q, keys, values, out, { layout, scale, seqLens?, lse?, selection, sel?, indptr?,
//   blockSize?, scores?, tau?, noise?, seed?, step? }, stream?)
//   selection 0 dense, 1 positions [B, Hkv, k], 2 ragged (sel [total] + indptr [B*Hkv + 1]),
//   3 blocks [B, Hkv, nb] of blockSize tokens. scores (f32 [B, Hkv, N]) turns accumulation on.
Napi::Value DecodeAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = GetOptions(env, "decode.attention", info[4]);
  const int64_t selection = o.Get("selection").IsUndefined() ? 0 : GetInt(env, "decode.attention", o.Get("selection"), "selection", 0, 3);
  const std::string op = selection == 0 ? "decode.attention" : "decode.sparseAttention";
  int layout = Layout(env, op, o);
  TensorArg q = GetTensor(env, op, info[0], "q", 4, kFloatTypes);
  TensorArg k = GetTensor(env, op, info[1], "keys", 4, kFloatTypes);
  TensorArg v = GetTensor(env, op, info[2], "values", 4, kFloatTypes);
  TensorArg out = GetTensor(env, op, info[3], "out", 4, kFloatTypes);
  int device = SameDevice(env, op, {&q, &k, &v, &out});
  cudaStream_t stream = GetStream(env, op, info[5]);
  if (k.dtype != q.dtype) ThrowInvalid(env, op, "keys.dtype", std::string("q's dtype ") + dtype_name(q.dtype), dtype_name(k.dtype));
  if (v.dtype != q.dtype) ThrowInvalid(env, op, "values.dtype", std::string("q's dtype ") + dtype_name(q.dtype), dtype_name(v.dtype));
  if (out.dtype != q.dtype) ThrowInvalid(env, op, "out.dtype", std::string("q's dtype ") + dtype_name(q.dtype), dtype_name(out.dtype));
  Dims qd = DimsOf(q, layout), kd = DimsOf(k, layout);
  ExpectShape(env, op, v, "values", k.shape);
  ExpectShape(env, op, out, "out", q.shape);
  if (qd.B != kd.B || qd.D != kd.D || kd.H == 0 || qd.H == 0 || kd.D == 0 || qd.H % kd.H != 0 || qd.S < 1 || qd.S > kDecodeMaxT || qd.S > kd.S) {
    ThrowInvalid(env, op, "q.shape", "[B, Hq, T, D] matching keys, Hq a multiple of Hkv, 1 <= T <= min(8, N)", ShapeText(q.shape));
  }
  if (kd.D > kDecodeMaxD) {
    Throw(env, code::kUnsupported, op + ": head dim " + std::to_string(kd.D) + " is not supported (at most " + std::to_string(kDecodeMaxD) + ")");
  }
  if (kd.S > INT32_MAX || kd.B * kd.H > INT32_MAX) ThrowInvalid(env, op, "keys.shape", "N and B*Hkv below 2^31", ShapeText(k.shape));
  double scale = GetNumber(env, op, o.Get("scale"), "scale");
  if (!std::isfinite(scale)) ThrowInvalid(env, op, "scale", "a finite number", std::to_string(scale));
  if (!std::isfinite(static_cast<float>(scale))) ThrowInvalid(env, op, "scale", "a number representable in f32", describe(o.Get("scale")));
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", kd.B, qd.S, kd.S, device, stream);

  DecodeParams p{};
  p.q = ViewOf(q, layout);
  p.k = ViewOf(k, layout);
  p.v = ViewOf(v, layout);
  p.out = MutViewOf(out, layout);
  p.dtype = q.dtype;
  p.B = static_cast<int32_t>(kd.B);
  p.Hq = static_cast<int32_t>(qd.H);
  p.Hkv = static_cast<int32_t>(kd.H);
  p.T = static_cast<int32_t>(qd.S);
  p.N = static_cast<int32_t>(kd.S);
  p.D = static_cast<int32_t>(kd.D);
  p.seq_lens = lens.ptr();
  p.scale = static_cast<float>(scale);
  p.selection = static_cast<DecodeSelection>(selection);

  std::vector<const TensorArg*> touched = {&q, &k, &v, &out};
  TensorArg lse, sel, indptr, scores;
  if (!o.Get("lse").IsUndefined()) {
    lse = GetTensor(env, op, o.Get("lse"), "lse", 3, {DType::F32});
    ExpectShape(env, op, lse, "lse", {qd.B, qd.H, qd.S});
    p.lse = static_cast<float*>(lse.data);
    touched.push_back(&lse);
  }
  const int64_t pairs = kd.B * kd.H;
  if (selection == 1 || selection == 3) {
    const std::string name = selection == 1 ? "positions" : "blocks";
    sel = GetTensor(env, op, o.Get("sel"), name, 3, {DType::I32});
    if (sel.dim(0) != kd.B || sel.dim(1) != kd.H) ThrowInvalid(env, op, name + ".shape", "[" + std::to_string(kd.B) + ", " + std::to_string(kd.H) + ", k]", ShapeText(sel.shape));
    if (sel.dim(2) > INT32_MAX) ThrowInvalid(env, op, name + ".shape", "fewer than 2^31 entries per row", ShapeText(sel.shape));
    p.sel_k = static_cast<int32_t>(sel.dim(2));
    if (selection == 3) {
      p.block_size = static_cast<int32_t>(GetInt(env, op, o.Get("blockSize"), "blockSize", 1, INT32_MAX));
      if (static_cast<int64_t>(p.sel_k) * p.block_size > INT32_MAX) ThrowInvalid(env, op, "blocks", "fewer than 2^31 selected tokens per row", std::to_string(static_cast<int64_t>(p.sel_k) * p.block_size));
    }
  } else if (selection == 2) {
    sel = GetTensor(env, op, o.Get("sel"), "positions", 1, {DType::I32});
    indptr = GetTensor(env, op, o.Get("indptr"), "indptr", 1, {DType::I32});
    ExpectShape(env, op, indptr, "indptr", {pairs + 1});
    p.sel_total = sel.numel;
    p.indptr = static_cast<const int32_t*>(indptr.data);
    touched.push_back(&indptr);
  }
  if (selection != 0) {
    SameDevice(env, op, {&q, &sel});
    if (selection == 2) SameDevice(env, op, {&q, &indptr});
    p.sel = static_cast<const int32_t*>(sel.data);
    touched.push_back(&sel);
  }
  if (!o.Get("scores").IsUndefined()) {
    if (selection != 0) ThrowInvalid(env, op, "scores", "no accumulation for a sparse attention", "scores");
    scores = GetTensor(env, op, o.Get("scores"), "scores", 3, {DType::F32});
    SameDevice(env, op, {&q, &scores});
    ExpectShape(env, op, scores, "scores", {kd.B, kd.H, kd.S});
    double tau = GetNumber(env, op, o.Get("tau"), "tau");
    if (!(tau > 0) || !std::isfinite(tau)) ThrowInvalid(env, op, "tau", "a positive number", std::to_string(tau));
    // the kernels divide by tau in f32: it must be a normal f32 with a finite reciprocal there
    const float tau_f = static_cast<float>(tau);
    if (!(tau_f >= FLT_MIN) || !std::isfinite(tau_f) || !std::isfinite(1.0f / tau_f)) {
      ThrowInvalid(env, op, "tau", "a positive number representable in f32", describe(o.Get("tau")));
    }
    p.scores = static_cast<float*>(scores.data);
    p.tau = static_cast<float>(tau);
    p.noise = static_cast<NoiseKind>(GetInt(env, op, o.Get("noise"), "noise", 0, 1));
    p.seed = GetU64(env, op, o.Get("seed"), "seed");
    p.step = GetU64(env, op, o.Get("step"), "step");
    touched.push_back(&scores);
  }
  if (p.lse != nullptr) SameDevice(env, op, {&q, &lse});

  Dispatch d(env, op, device, stream);
  if (device < 0) {
    d.cpu([&] { cpu::decode_attention(p); });
    return env.Undefined();
  }
#ifdef KVSIFT_WITH_CUDA
  {
    Temp ws(env, op, device, cuda::decode_workspace_bytes(p), stream);
    d.cuda_result(cuda::decode_attention(p, ws.get(), stream));
  }
  for (const TensorArg* t : touched) t->buffer->set_stream(stream);
#endif
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("decodeAttention", DecodeAttention);

}  // namespace kvsift::ops
