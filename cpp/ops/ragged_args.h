// kvsift/cpp/ops/ragged_args.h: reading a ragged per-head layout (common/ragged.h) from an op's
// options: { batch, heads, indptr: i32 [B*H + 1], lens?: i32 [B*H] } over `rows` storage rows,
// and the other i32 tensors the ragged entries take as options.
#pragma once
#include "../../common/ragged.h"
#include "common.h"

namespace kvsift::ops {

// An i32 [n] tensor passed as an option (a layout's indptr and lens, per-row positions, the
// gather's new indptr and lens): unlike the entry's tensor arguments it is not part of the
// device check, so its device is checked here.
inline TensorArg DeviceI32(const Call& c, Napi::Value v, const std::string& name, int64_t n) {
  TensorArg t = c.option_tensor(v, name, 1, {DType::I32});
  ExpectShape(c.env, c.op, t, name, {n});
  if (t.device != c.device) c.invalid(name, "a tensor on the op's device", "another device");
  return t;
}

// The same for an optional option: undefined gives a TensorArg without a buffer (a null data
// pointer for the params).
inline TensorArg OptionalDeviceI32(const Call& c, const char* name, int64_t n) {
  Napi::Value v = c.option(name);
  return v.IsUndefined() ? TensorArg{} : DeviceI32(c, v, name, n);
}

struct RaggedArgs {
  TensorArg indptr, lens;  // lens: no buffer when the layout has none
  bool has_lens = false;
  RaggedHeads heads{};
};

// The layout given as the options object `v` (the entry's `ragged` or `srcRagged` option).
inline RaggedArgs GetRagged(const Call& c, Napi::Value v, int64_t rows) {
  Napi::Object o = GetOptions(c.env, c.op, v);
  RaggedArgs a;
  const int64_t B = GetInt(c.env, c.op, o.Get("batch"), "batch", 1, int64_t{1} << 30);
  const int64_t H = GetInt(c.env, c.op, o.Get("heads"), "heads", 1, int64_t{1} << 30);
  if (B * H >= (int64_t{1} << 31)) c.invalid("batch * heads", "less than 2^31", std::to_string(B * H));
  a.indptr = DeviceI32(c, o.Get("indptr"), "indptr", B * H + 1);
  Napi::Value lv = o.Get("lens");
  if (!lv.IsUndefined() && !lv.IsNull()) {
    a.lens = DeviceI32(c, lv, "lens", B * H);
    a.has_lens = true;
  }
  if (rows >= (int64_t{1} << 31)) c.invalid("rows", "fewer than 2^31 rows", std::to_string(rows));
  a.heads.indptr = static_cast<const int32_t*>(a.indptr.data);
  a.heads.lens = static_cast<const int32_t*>(a.lens.data);
  a.heads.B = static_cast<int32_t>(B);
  a.heads.H = static_cast<int32_t>(H);
  a.heads.rows = rows;
  return a;
}

}  // namespace kvsift::ops
