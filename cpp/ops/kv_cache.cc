// kvsift/cpp/ops/kv_cache.cc: the native entries behind KvCache and copy() (lib/kv_cache.ts,
// lib/primitives.ts): copyAxis, kvAppend and kvRetain. Kernels: cuda/kv_cache.cu; CPU twin:
// cpp/cpu/kv_cache.cc; semantics: common/kv_cache.h.
#include "../../common/kv_cache.h"

#include <algorithm>

#include "common.h"
#ifdef KVSIFT_WITH_CUDA
#include "../../cuda/kv_cache.h"
#endif

namespace kvsift::ops {
namespace {

// A token tensor seen as rows: a 4-D K/V cache in its layout, or a 3-D [B, H, S] per-token tensor.
struct TokenRows {
  int64_t B, H, S, row_bytes;
  RowView view;
  MutRowView mut;
};

TokenRows RowsOfTokens(const TensorArg& t, int layout) {
  const int64_t es = dtype_size(t.dtype);
  TokenRows r{};
  if (t.rank() == 4) {
    Dims d = DimsOf(t, layout);
    View4 v = ViewOf(t, layout);
    r = {d.B, d.H, d.S, d.D * es, {t.data, v.sB * es, v.sH * es, v.sS * es}, {t.data, v.sB * es, v.sH * es, v.sS * es}};
  } else {
    r = {t.dim(0), t.dim(1), t.dim(2), es, {t.data, t.dim(1) * t.dim(2) * es, t.dim(2) * es, es},
         {t.data, t.dim(1) * t.dim(2) * es, t.dim(2) * es, es}};
  }
  return r;
}

// Host ints on the op's device: written by a kernel that takes them as launch parameters
// (cuda::store_ints), so no pageable copy is staged and append/retain stay capturable in a CUDA
// graph. The CPU backend reads the host vector.
class Ints {
 public:
  Ints(Napi::Env env, const std::string& op, int device, std::vector<int32_t> host, cudaStream_t stream)
      : host_(std::move(host)) {
    if (device < 0 || host_.empty()) {
      ptr_ = host_.data();
      return;
    }
#ifdef KVSIFT_WITH_CUDA
    temp_ = std::make_unique<Temp>(env, op, device, host_.size() * sizeof(int32_t), stream);
    ptr_ = static_cast<int32_t*>(temp_->get());
    CheckCuda(env, op, cuda::store_ints(ptr_, host_.data(), static_cast<int64_t>(host_.size()), stream));
#endif
  }
  int32_t* at(size_t i) const { return ptr_ + i; }

 private:
  std::vector<int32_t> host_;
  std::unique_ptr<Temp> temp_;
  int32_t* ptr_ = nullptr;
};

std::vector<int32_t> HostInts(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name, int64_t n,
                              int64_t lo, int64_t hi) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowInvalid(env, op, name, "an Int32Array", describe(v));
  }
  Napi::Int32Array arr = v.As<Napi::Int32Array>();
  if (static_cast<int64_t>(arr.ElementLength()) != n) {
    ThrowInvalid(env, op, name, "an Int32Array of length " + std::to_string(n), "length " + std::to_string(arr.ElementLength()));
  }
  std::vector<int32_t> out(arr.Data(), arr.Data() + arr.ElementLength());
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] < lo || out[i] > hi) {
      ThrowInvalid(env, op, name + "[" + std::to_string(i) + "]",
                   "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", std::to_string(out[i]));
    }
  }
  return out;
}

// copyAxis(dst, src, { axis, offset }, stream?): dst[..., offset + i, ...] = src[..., i, ...] along
// `axis`; every other axis equal. One row per index of the axes before `axis`: the src slab is
// contiguous, and so is its destination.
Napi::Value CopyAxis(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "copy";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg dst = GetTensor(env, op, info[0], "dst");
  TensorArg src = GetTensor(env, op, info[1], "src");
  int device = SameDevice(env, op, {&dst, &src});
  cudaStream_t stream = GetStream(env, op, info[3]);
  if (src.dtype != dst.dtype) ThrowInvalid(env, op, "src.dtype", dtype_name(dst.dtype), dtype_name(src.dtype));
  if (src.rank() != dst.rank() || src.rank() == 0) ThrowInvalid(env, op, "src", "a tensor of dst's rank", ShapeText(src.shape));
  const int64_t rank = static_cast<int64_t>(src.rank());
  const int64_t axis = GetInt(env, op, o.Get("axis"), "axis", 0, rank - 1);
  for (int64_t a = 0; a < rank; ++a) {
    if (a != axis && src.dim(a) != dst.dim(a)) ThrowInvalid(env, op, "src.shape", "dst's shape off the axis", ShapeText(src.shape));
  }
  const int64_t offset = GetInt(env, op, o.Get("offset"), "offset", 0, dst.dim(axis) - src.dim(axis));
  if (src.buffer == dst.buffer) ThrowInvalid(env, op, "src", "a tensor that does not share dst's storage", "a view of dst");
  int64_t outer = 1, inner = dtype_size(src.dtype);
  for (int64_t a = 0; a < axis; ++a) outer *= src.dim(a);
  for (int64_t a = axis + 1; a < rank; ++a) inner *= src.dim(a);
  RowCopyParams p{};
  p.src = {src.data, src.dim(axis) * inner, 0, 0};
  p.dst = {static_cast<char*>(dst.data) + offset * inner, dst.dim(axis) * inner, 0, 0};
  p.B = outer;
  p.H = 1;
  p.T = 1;
  p.row_bytes = src.dim(axis) * inner;
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::row_copy(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::row_copy(p, stream)); }, {&dst, &src});
  return env.Undefined();
}

// kvAppend(keys, values, positions, newKeys, newValues, { layout, lengths, counts, starts }, stream?):
// row b's first counts[b] new tokens go to slots lengths[b].. of keys/values ([B, H, capacity, D]
// in the layout), and positions[b, h, lengths[b] + i] = starts[b] + i.
Napi::Value KvAppend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "KvCache.append";
  Napi::Object o = GetOptions(env, op, info[5]);
  int layout = Layout(env, op, o);
  TensorArg keys = GetTensor(env, op, info[0], "cache.keys", 4, kFloatTypes);
  TensorArg values = GetTensor(env, op, info[1], "cache.values", 4, kFloatTypes);
  TensorArg positions = GetTensor(env, op, info[2], "cache.positions", 3, {DType::I32});
  TensorArg nk = GetTensor(env, op, info[3], "keys", 4, kFloatTypes);
  TensorArg nv = GetTensor(env, op, info[4], "values", 4, kFloatTypes);
  int device = SameDevice(env, op, {&keys, &values, &positions, &nk, &nv});
  cudaStream_t stream = GetStream(env, op, info[6]);
  Dims cd = DimsOf(keys, layout);
  Dims kd = DimsOf(nk, layout);
  ExpectShape(env, op, values, "cache.values", keys.shape);
  ExpectShape(env, op, positions, "cache.positions", {cd.B, cd.H, cd.S});
  if (nk.dtype != keys.dtype) ThrowInvalid(env, op, "keys.dtype", dtype_name(keys.dtype), dtype_name(nk.dtype));
  if (nv.dtype != values.dtype) ThrowInvalid(env, op, "values.dtype", dtype_name(values.dtype), dtype_name(nv.dtype));
  if (kd.B != cd.B || kd.H != cd.H || kd.D != cd.D) {
    ThrowInvalid(env, op, "keys.shape", "[B, H, T, D] matching the cache", ShapeText(nk.shape));
  }
  ExpectShape(env, op, nv, "values", nk.shape);
  const int64_t B = cd.B, T = kd.S, cap = cd.S;
  std::vector<int32_t> ints = HostInts(env, op, o.Get("lengths"), "lengths", B, 0, cap);
  std::vector<int32_t> counts = HostInts(env, op, o.Get("counts"), "counts", B, 0, T);
  std::vector<int32_t> starts = HostInts(env, op, o.Get("starts"), "starts", B, 0, INT32_MAX);
  for (int64_t b = 0; b < B; ++b) {
    if (int64_t{ints[b]} + counts[b] > cap) {
      ThrowInvalid(env, op, "keys", "at most the capacity " + std::to_string(cap) + " tokens per row",
                   std::to_string(int64_t{ints[b]} + counts[b]) + " in row " + std::to_string(b));
    }
    if (int64_t{starts[b]} + counts[b] > INT32_MAX) ThrowInvalid(env, op, "starts", "positions below 2^31", std::to_string(starts[b]));
  }
  ints.insert(ints.end(), counts.begin(), counts.end());
  ints.insert(ints.end(), starts.begin(), starts.end());
  Dispatch d(env, op, device, stream);  // first: the upload below runs on the tensors' device
  Ints dev(env, op, device, std::move(ints), stream);
  TokenRows ck = RowsOfTokens(keys, layout), cv = RowsOfTokens(values, layout);
  TokenRows sk = RowsOfTokens(nk, layout), sv = RowsOfTokens(nv, layout);
  RowCopyParams pk{sk.view, ck.mut, B, cd.H, T, ck.row_bytes, dev.at(0), dev.at(B), nullptr};
  RowCopyParams pv{sv.view, cv.mut, B, cd.H, T, cv.row_bytes, dev.at(0), dev.at(B), nullptr};
  AppendPositionsParams pp{static_cast<int32_t*>(positions.data), B, cd.H, T, cap, dev.at(0), dev.at(B), dev.at(2 * B)};
  d.run(
      [&] {
        cpu::row_copy(pk);
        cpu::row_copy(pv);
        cpu::append_positions(pp);
      },
      [&] {
#ifdef KVSIFT_WITH_CUDA
        cudaError_t err = cuda::row_copy(pk, stream);
        if (err == cudaSuccess) err = cuda::row_copy(pv, stream);
        if (err == cudaSuccess) err = cuda::append_positions(pp, stream);
        return static_cast<int>(err);
#else
        return 0;
#endif
      },
      {&keys, &values, &positions, &nk, &nv});
  return env.Undefined();
}

// The first entry of keep that breaks retain's rule, as a message (CPU only: it is raised at once).
std::string DescribeBadKeep(const RetainCheckParams& p) {
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t h = 0; h < p.H; ++h) {
      const int32_t* keep = p.keep + b * p.keep_sB + h * p.keep_sH;
      const std::string at = "positions[" + std::to_string(b) + ", " + std::to_string(h) + ", ";
      for (int64_t i = 0; i < p.C; ++i) {
        if (keep[i] < 0 || keep[i] >= p.lengths[b]) {
          return at + std::to_string(i) + "] = " + std::to_string(keep[i]) + " is outside row " + std::to_string(b) +
                 "'s [0, " + std::to_string(p.lengths[b]) + ")";
        }
        if (i > 0 && keep[i - 1] >= keep[i]) {
          return at + std::to_string(i) + "] = " + std::to_string(keep[i]) + " is not above the previous " +
                 std::to_string(keep[i - 1]) + " (positions must be strictly ascending)";
        }
      }
    }
  }
  return "positions are invalid";
}

// kvRetain(keep, { lengths }, items, stream?): items = [{ tensor, layout, zeroTail }], each a 4-D
// cache ([B, H, capacity, D] in its layout) or a 3-D [B, H, capacity] per-token tensor. keep i32
// [B, H or 1, C]. Checks keep against lengths, then compacts every item to its kept rows 0..C-1
// (rows C.. zeroed for zeroTail items). Nothing is written when the check fails: the CPU throws at
// once; CUDA kernels skip their writes and synchronize() reports it.
Napi::Value KvRetain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "KvCache.retain";
  Napi::Object o = GetOptions(env, op, info[1]);
  TensorArg keep = GetTensor(env, op, info[0], "positions", 3, {DType::I32});
  if (!info[2].IsArray()) ThrowInvalid(env, op, "items", "an array", describe(info[2]));
  cudaStream_t stream = GetStream(env, op, info[3]);
  Napi::Array list = info[2].As<Napi::Array>();
  std::vector<TensorArg> items;
  std::vector<int> layouts;
  std::vector<bool> zero_tail;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    const std::string name = "items[" + std::to_string(i) + "]";
    Napi::Object item = GetOptions(env, op, list.Get(i));
    items.push_back(GetTensor(env, op, item.Get("tensor"), name + ".tensor"));
    layouts.push_back(Layout(env, op, item));
    zero_tail.push_back(item.Get("zeroTail").ToBoolean().Value());
    if (items.back().rank() != 3 && items.back().rank() != 4) {
      ThrowInvalid(env, op, name + ".tensor", "a 3-D or 4-D tensor", ShapeText(items.back().shape));
    }
  }
  if (items.empty()) return env.Undefined();
  std::vector<const TensorArg*> all{&keep};
  for (const TensorArg& t : items) all.push_back(&t);
  int device = keep.device;
  for (const TensorArg* t : all) {
    if (t->device != device) Throw(env, code::kDeviceMismatch, op + ": tensors on different devices");
  }
  TokenRows first = RowsOfTokens(items[0], layouts[0]);
  const int64_t B = first.B, H = first.H, cap = first.S, C = keep.dim(2);
  for (size_t i = 0; i < items.size(); ++i) {
    TokenRows r = RowsOfTokens(items[i], layouts[i]);
    if (r.B != B || r.H != H || r.S != cap) {
      ThrowInvalid(env, op, "items[" + std::to_string(i) + "].tensor", "[B, H, capacity] = " + ShapeText({B, H, cap}),
                   ShapeText(items[i].shape));
    }
    for (size_t j = 0; j < i; ++j) {
      if (items[j].buffer == items[i].buffer) ThrowInvalid(env, op, "options.also", "tensors that do not share storage", "a repeated tensor");
    }
  }
  if (keep.dim(0) != B || (keep.dim(1) != H && keep.dim(1) != 1) || C > cap) {
    ThrowInvalid(env, op, "positions", "an i32 tensor [" + std::to_string(B) + ", " + std::to_string(H) + ", C <= " +
                                           std::to_string(cap) + "]", ShapeText(keep.shape));
  }
  std::vector<int32_t> lengths = HostInts(env, op, o.Get("lengths"), "lengths", B, 0, cap);
  const int64_t keep_sB = keep.dim(1) * C, keep_sH = keep.dim(1) == 1 ? 0 : C;
  Dispatch d(env, op, device, stream);
  if (device < 0) {
    RetainCheckParams check{static_cast<const int32_t*>(keep.data), keep_sB, keep_sH, B, H, C, lengths.data(), nullptr};
    const int64_t bad = d.cpu([&] { return cpu::retain_check(check); });
    if (bad != 0) {
      // Out of range is an index error; repeats and disorder are a malformed argument.
      std::string what = DescribeBadKeep(check);
      bool range = what.find("is outside") != std::string::npos;
      Throw(env, range ? code::kIndexOutOfRange : code::kInvalidArg,
            op + ": " + std::to_string(bad) + " invalid positions: " + what + "; the cache is unchanged");
    }
    d.cpu([&] {
      for (size_t i = 0; i < items.size(); ++i) {
        TokenRows r = RowsOfTokens(items[i], layouts[i]);
        cpu::retain_in_place({r.view, r.mut, B, H, C, r.row_bytes, check.keep, keep_sB, keep_sH, nullptr});
        if (zero_tail[i] && cap > C) {
          MutRowView tail{static_cast<char*>(r.mut.data) + C * r.mut.sS, r.mut.sB, r.mut.sH, r.mut.sS};
          cpu::row_copy({{nullptr, 0, 0, 0}, tail, B, H, cap - C, r.row_bytes, nullptr, nullptr, nullptr});
        }
      }
    });
    return env.Undefined();
  }
#ifdef KVSIFT_WITH_CUDA
  // ints: [0] the check's bad count, [1..B] the lengths.
  std::vector<int32_t> ints{0};
  ints.insert(ints.end(), lengths.begin(), lengths.end());
  Ints dev(env, op, device, std::move(ints), stream);
  int64_t temp_bytes = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    TokenRows r = RowsOfTokens(items[i], layouts[i]);
    temp_bytes = std::max(temp_bytes, B * H * C * r.row_bytes);
  }
  // One tensor's kept rows at a time: the temporary is at most one layer's K.
  Temp temp(env, op, device, static_cast<size_t>(temp_bytes), stream);
  RetainCheckParams check{static_cast<const int32_t*>(keep.data), keep_sB, keep_sH, B, H, C, dev.at(1), dev.at(0)};
  d.cuda_result(cuda::retain_check(check, stream));
  for (size_t i = 0; i < items.size(); ++i) {
    TokenRows r = RowsOfTokens(items[i], layouts[i]);
    MutRowView tmp{temp.get(), H * C * r.row_bytes, C * r.row_bytes, r.row_bytes};
    d.cuda_result(cuda::retain_gather({r.view, tmp, B, H, C, r.row_bytes, check.keep, keep_sB, keep_sH, dev.at(0)}, stream));
    d.cuda_result(cuda::row_copy({{tmp.data, tmp.sB, tmp.sH, tmp.sS}, r.mut, B, H, C, r.row_bytes, nullptr, nullptr, dev.at(0)}, stream));
    if (zero_tail[i] && cap > C) {
      MutRowView tail{static_cast<char*>(r.mut.data) + C * r.mut.sS, r.mut.sB, r.mut.sH, r.mut.sS};
      d.cuda_result(cuda::row_copy({{nullptr, 0, 0, 0}, tail, B, H, cap - C, r.row_bytes, nullptr, nullptr, dev.at(0)}, stream));
    }
  }
  for (const TensorArg* t : all) t->buffer->set_stream(stream);
#endif
  return env.Undefined();
}

}  // namespace

KVSIFT_REGISTER_OP("copyAxis", CopyAxis);
KVSIFT_REGISTER_OP("kvAppend", KvAppend);
KVSIFT_REGISTER_OP("kvRetain", KvRetain);

}  // namespace kvsift::ops
