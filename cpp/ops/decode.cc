// kvsift/cpp/ops/decode.cc: the decode attention entry, dense or sparse, with optional fused
// H2O / Keyformer accumulation (cuda/decode.cu, cpu/decode.cc).
#include "../../common/decode.h"
#include "common.h"

#ifdef KVSIFT_WITH_CUDA
#include "../../cuda/decode.h"
#endif

namespace kvsift::ops {
namespace {

// Keys, values and the output share q's dtype (one kernel instantiation per dtype).
void ExpectDtypeOfQ(const Call& c, const TensorArg& q, const TensorArg& t, const char* name) {
  if (t.dtype != q.dtype) c.invalid(std::string(name) + ".dtype", std::string("q's dtype ") + dtype_name(q.dtype), dtype_name(t.dtype));
}

// decodeAttention(q, keys, values, out, { layout, scale, seqLens?, lse?, selection, sel?, indptr?,
//   blockSize?, scores?, tau?, noise?, seed?, step? }, stream?)
//   selection 0 dense, 1 positions [B, Hkv, k], 2 ragged (sel [total] + indptr [B*Hkv + 1]),
//   3 blocks [B, Hkv, nb] of blockSize tokens. scores (f32 [B, Hkv, N]) turns accumulation on.
Napi::Value DecodeAttention(const Napi::CallbackInfo& info) {
  Call c(info, "decode.attention", 4);
  const int64_t selection = c.has("selection") ? c.integer("selection", 0, 3) : 0;
  if (selection != 0) c.serve_as("decode.sparseAttention");
  int layout = c.layout();
  auto [q, k, v, out] = c.tensors({{0, "q", 4, kFloatTypes}, {1, "keys", 4, kFloatTypes}, {2, "values", 4, kFloatTypes}, {3, "out", 4, kFloatTypes}});
  ExpectDtypeOfQ(c, q, k, "keys");
  ExpectDtypeOfQ(c, q, v, "values");
  ExpectDtypeOfQ(c, q, out, "out");
  Dims qd = DimsOf(q, layout), kd = DimsOf(k, layout);
  c.expect_shape(v, "values", k.shape);
  c.expect_shape(out, "out", q.shape);
  if (qd.B != kd.B || qd.D != kd.D || kd.H == 0 || qd.H == 0 || kd.D == 0 || qd.H % kd.H != 0 || qd.S < 1 || qd.S > kDecodeMaxT || qd.S > kd.S) {
    c.invalid("q.shape", "[B, Hq, T, D] matching keys, Hq a multiple of Hkv, 1 <= T <= min(8, N)", ShapeText(q.shape));
  }
  if (kd.D > kDecodeMaxD) {
    Throw(c.env, code::kUnsupported, c.op + ": head dim " + std::to_string(kd.D) + " is not supported (at most " + std::to_string(kDecodeMaxD) + ")");
  }
  KeysInt32(c, k, kd);  // the check; SetQueryKeys narrows them below
  double scale = c.number("scale");
  if (!std::isfinite(scale)) c.invalid("scale", "a finite number", std::to_string(scale));
  if (!std::isfinite(static_cast<float>(scale))) c.invalid("scale", "a number representable in f32", describe(c.option("scale")));
  Lengths lens = c.lengths("seqLens", kd.B, qd.S, kd.S);

  DecodeParams p{};
  SetQueryKeys(p, q, k, layout, {qd, kd}, lens.ptr());
  p.v = ViewOf(v, layout);
  p.out = MutViewOf(out, layout);
  p.T = static_cast<int32_t>(qd.S);
  p.scale = static_cast<float>(scale);  // the caller's, in place of SetQueryKeys' 1/sqrt(D)
  p.selection = static_cast<DecodeSelection>(selection);

  TensorArg lse, sel, indptr, scores;
  if (c.has("lse")) {
    lse = c.option_tensor(c.option("lse"), "lse", 3, {DType::F32});
    c.expect_shape(lse, "lse", {qd.B, qd.H, qd.S});
    p.lse = static_cast<float*>(lse.data);
  }
  const int64_t pairs = kd.B * kd.H;
  if (selection == 1 || selection == 3) {
    const std::string name = selection == 1 ? "positions" : "blocks";
    sel = c.option_tensor(c.option("sel"), name, 3, {DType::I32});
    if (sel.dim(0) != kd.B || sel.dim(1) != kd.H) c.invalid(name + ".shape", "[" + std::to_string(kd.B) + ", " + std::to_string(kd.H) + ", k]", ShapeText(sel.shape));
    if (sel.dim(2) > INT32_MAX) c.invalid(name + ".shape", "fewer than 2^31 entries per row", ShapeText(sel.shape));
    p.sel_k = static_cast<int32_t>(sel.dim(2));
    if (selection == 3) {
      p.block_size = static_cast<int32_t>(c.integer("blockSize", 1, INT32_MAX));
      if (static_cast<int64_t>(p.sel_k) * p.block_size > INT32_MAX) c.invalid("blocks", "fewer than 2^31 selected tokens per row", std::to_string(static_cast<int64_t>(p.sel_k) * p.block_size));
    }
  } else if (selection == 2) {
    sel = c.option_tensor(c.option("sel"), "positions", 1, {DType::I32});
    indptr = c.option_tensor(c.option("indptr"), "indptr", 1, {DType::I32});
    c.expect_shape(indptr, "indptr", {pairs + 1});
    p.sel_total = sel.numel;
    p.indptr = static_cast<const int32_t*>(indptr.data);
  }
  if (selection != 0) {
    SameDevice(c.env, c.op, {&q, &sel});
    if (selection == 2) SameDevice(c.env, c.op, {&q, &indptr});
    p.sel = static_cast<const int32_t*>(sel.data);
  }
  if (c.has("scores")) {
    if (selection != 0) c.invalid("scores", "no accumulation for a sparse attention", "scores");
    scores = c.option_tensor(c.option("scores"), "scores", 3, {DType::F32});
    SameDevice(c.env, c.op, {&q, &scores});
    c.expect_shape(scores, "scores", {kd.B, kd.H, kd.S});
    double tau = c.number("tau");
    if (!(tau > 0) || !std::isfinite(tau)) c.invalid("tau", "a positive number", std::to_string(tau));
    p.scores = static_cast<float*>(scores.data);
    p.tau = F32Tau(c, tau);
    SetNoise(c, p);
  }
  if (p.lse != nullptr) SameDevice(c.env, c.op, {&q, &lse});
  return c.run([&] { cpu::decode_attention(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::decode_workspace_bytes(p)); },
               [&](void* ws) { return KVSIFT_CUDA_CALL(cuda::decode_attention(p, ws, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("decodeAttention", DecodeAttention);

}  // namespace kvsift::ops
