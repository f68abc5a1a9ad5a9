// kvsift/cpp/ops/ragged_args.h: reading a ragged per-head layout (common/ragged.h) from an op's
// options: { batch, heads, indptr: i32 [B*H + 1], lens?: i32 [B*H] } over `rows` storage rows.
#pragma once
#include "../../common/ragged.h"
#include "common.h"

namespace kvsift::ops {

struct RaggedArgs {
  TensorArg indptr, lens;
  bool has_lens = false;
  RaggedHeads heads{};
};

inline RaggedArgs GetRagged(Napi::Env env, const std::string& op, Napi::Object o, int64_t rows, int device) {
  RaggedArgs a;
  const int64_t B = GetInt(env, op, o.Get("batch"), "batch", 1, int64_t{1} << 30);
  const int64_t H = GetInt(env, op, o.Get("heads"), "heads", 1, int64_t{1} << 30);
  if (B * H >= (int64_t{1} << 31)) ThrowInvalid(env, op, "batch * heads", "less than 2^31", std::to_string(B * H));
  a.indptr = GetTensor(env, op, o.Get("indptr"), "indptr", 1, {DType::I32});
  ExpectShape(env, op, a.indptr, "indptr", {B * H + 1});
  if (a.indptr.device != device) ThrowInvalid(env, op, "indptr", "a tensor on the op's device", "another device");
  Napi::Value lv = o.Get("lens");
  if (!lv.IsUndefined() && !lv.IsNull()) {
    a.lens = GetTensor(env, op, lv, "lens", 1, {DType::I32});
    ExpectShape(env, op, a.lens, "lens", {B * H});
    if (a.lens.device != device) ThrowInvalid(env, op, "lens", "a tensor on the op's device", "another device");
    a.has_lens = true;
  }
  if (rows >= (int64_t{1} << 31)) ThrowInvalid(env, op, "rows", "fewer than 2^31 rows", std::to_string(rows));
  a.heads.indptr = static_cast<const int32_t*>(a.indptr.data);
  a.heads.lens = a.has_lens ? static_cast<const int32_t*>(a.lens.data) : nullptr;
  a.heads.B = static_cast<int32_t>(B);
  a.heads.H = static_cast<int32_t>(H);
  a.heads.rows = rows;
  return a;
}

}  // namespace kvsift::ops
