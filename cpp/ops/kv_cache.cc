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
  Ints(const Call& c, std::vector<int32_t> host) : host_(std::move(host)) {
    if (c.device < 0 || host_.empty()) {
      ptr_ = host_.data();
      return;
    }
#ifdef KVSIFT_WITH_CUDA
    temp_ = std::make_unique<Temp>(c.env, c.op, c.device, host_.size() * sizeof(int32_t), c.stream);
    ptr_ = static_cast<int32_t*>(temp_->get());
    CheckCuda(c.env, c.op, cuda::store_ints(ptr_, host_.data(), static_cast<int64_t>(host_.size()), c.stream));
#endif
  }
  int32_t* at(size_t i) const { return ptr_ + i; }

 private:
  std::vector<int32_t> host_;
  std::unique_ptr<Temp> temp_;
  int32_t* ptr_ = nullptr;
};

// The required Int32Array option `name` of n integers in [lo, hi], read on the host (Lengths would
// upload it with a pageable copy, which a CUDA graph capture rejects; Ints stores it instead).
std::vector<int32_t> HostInts(const Call& c, const char* name, int64_t n, int64_t lo, int64_t hi) {
  Napi::Value v = c.option(name);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    c.invalid(name, "an Int32Array", describe(v));
  }
  Napi::Int32Array arr = v.As<Napi::Int32Array>();
  if (static_cast<int64_t>(arr.ElementLength()) != n) {
    c.invalid(name, "an Int32Array of length " + std::to_string(n), "length " + std::to_string(arr.ElementLength()));
  }
  std::vector<int32_t> out(arr.Data(), arr.Data() + arr.ElementLength());
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] < lo || out[i] > hi) {
      c.invalid(std::string(name) + "[" + std::to_string(i) + "]",
                "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", std::to_string(out[i]));
    }
  }
  return out;
}

// copyAxis(dst, src, { axis, offset }, stream?): dst[..., offset + i, ...] = src[..., i, ...] along
// `axis`; every other axis equal. One row per index of the axes before `axis`: the src slab is
// contiguous, and so is its destination.
Napi::Value CopyAxis(const Napi::CallbackInfo& info) {
  Call c(info, "copy", 2);
  auto [dst, src] = c.tensors({{0, "dst", kAnyRank, {}}, {1, "src", kAnyRank, {}}});
  if (src.dtype != dst.dtype) c.invalid("src.dtype", dtype_name(dst.dtype), dtype_name(src.dtype));
  if (src.rank() != dst.rank() || src.rank() == 0) c.invalid("src", "a tensor of dst's rank", ShapeText(src.shape));
  const int64_t rank = static_cast<int64_t>(src.rank());
  const int64_t axis = c.integer("axis", 0, rank - 1);
  for (int64_t a = 0; a < rank; ++a) {
    if (a != axis && src.dim(a) != dst.dim(a)) c.invalid("src.shape", "dst's shape off the axis", ShapeText(src.shape));
  }
  const int64_t offset = c.integer("offset", 0, dst.dim(axis) - src.dim(axis));
  if (src.buffer == dst.buffer) c.invalid("src", "a tensor that does not share dst's storage", "a view of dst");
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
  return c.run([&] { cpu::row_copy(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::row_copy(p, c.stream)); });
}

// kvAppend(keys, values, positions, newKeys, newValues, { layout, lengths, counts, starts }, stream?):
// row b's first counts[b] new tokens go to slots lengths[b].. of keys/values ([B, H, capacity, D]
// in the layout), and positions[b, h, lengths[b] + i] = starts[b] + i.
Napi::Value KvAppend(const Napi::CallbackInfo& info) {
  Call c(info, "KvCache.append", 5);
  int layout = c.layout();
  auto [keys, values, positions, nk, nv] = c.tensors({{0, "cache.keys", 4, kFloatTypes},
                                                      {1, "cache.values", 4, kFloatTypes},
                                                      {2, "cache.positions", 3, {DType::I32}},
                                                      {3, "keys", 4, kFloatTypes},
                                                      {4, "values", 4, kFloatTypes}});
  Dims cd = DimsOf(keys, layout);
  Dims kd = DimsOf(nk, layout);
  c.expect_shape(values, "cache.values", keys.shape);
  c.expect_shape(positions, "cache.positions", {cd.B, cd.H, cd.S});
  if (nk.dtype != keys.dtype) c.invalid("keys.dtype", dtype_name(keys.dtype), dtype_name(nk.dtype));
  if (nv.dtype != values.dtype) c.invalid("values.dtype", dtype_name(values.dtype), dtype_name(nv.dtype));
  if (kd.B != cd.B || kd.H != cd.H || kd.D != cd.D) c.invalid("keys.shape", "[B, H, T, D] matching the cache", ShapeText(nk.shape));
  c.expect_shape(nv, "values", nk.shape);
  const int64_t B = cd.B, T = kd.S, cap = cd.S;
  std::vector<int32_t> ints = HostInts(c, "lengths", B, 0, cap);
  std::vector<int32_t> counts = HostInts(c, "counts", B, 0, T);
  std::vector<int32_t> starts = HostInts(c, "starts", B, 0, INT32_MAX);
  for (int64_t b = 0; b < B; ++b) {
    if (int64_t{ints[b]} + counts[b] > cap) {
      c.invalid("keys", "at most the capacity " + std::to_string(cap) + " tokens per row",
                std::to_string(int64_t{ints[b]} + counts[b]) + " in row " + std::to_string(b));
    }
    if (int64_t{starts[b]} + counts[b] > INT32_MAX) c.invalid("starts", "positions below 2^31", std::to_string(starts[b]));
  }
  ints.insert(ints.end(), counts.begin(), counts.end());
  ints.insert(ints.end(), starts.begin(), starts.end());
  Dispatch d(c.env, c.op, c.device, c.stream);  // first: the upload below runs on the tensors' device
  Ints dev(c, std::move(ints));
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
        cudaError_t err = cuda::row_copy(pk, c.stream);
        if (err == cudaSuccess) err = cuda::row_copy(pv, c.stream);
        if (err == cudaSuccess) err = cuda::append_positions(pp, c.stream);
        return static_cast<int>(err);
#else
        return 0;
#endif
      },
      {&keys, &values, &positions, &nk, &nv});
  return c.env.Undefined();
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
  // Call::tensors reads a fixed list with the stream after the options; retain's tensors are a
  // list and its stream follows it, so they are read here and the Call gets device and stream.
  Call c(info, "KvCache.retain", 1);
  Napi::Env env = c.env;
  const std::string& op = c.op;
  TensorArg keep = GetTensor(env, op, info[0], "positions", 3, {DType::I32});
  if (!info[2].IsArray()) c.invalid("items", "an array", describe(info[2]));
  c.stream = GetStream(env, op, info[3]);
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
    if (items.back().rank() != 3 && items.back().rank() != 4) c.invalid(name + ".tensor", "a 3-D or 4-D tensor", ShapeText(items.back().shape));
  }
  if (items.empty()) return env.Undefined();
  std::vector<const TensorArg*> all{&keep};
  for (const TensorArg& t : items) all.push_back(&t);
  c.device = keep.device;
  for (const TensorArg* t : all) {
    if (t->device != c.device) Throw(env, code::kDeviceMismatch, op + ": tensors on different devices");
  }
  const int device = c.device;
  cudaStream_t stream = c.stream;
  TokenRows first = RowsOfTokens(items[0], layouts[0]);
  const int64_t B = first.B, H = first.H, cap = first.S, C = keep.dim(2);
  for (size_t i = 0; i < items.size(); ++i) {
    TokenRows r = RowsOfTokens(items[i], layouts[i]);
    if (r.B != B || r.H != H || r.S != cap) {
      c.invalid("items[" + std::to_string(i) + "].tensor", "[B, H, capacity] = " + ShapeText({B, H, cap}), ShapeText(items[i].shape));
    }
    for (size_t j = 0; j < i; ++j) {
      if (items[j].buffer == items[i].buffer) c.invalid("options.also", "tensors that do not share storage", "a repeated tensor");
    }
  }
  if (keep.dim(0) != B || (keep.dim(1) != H && keep.dim(1) != 1) || C > cap) {
    c.invalid("positions", "an i32 tensor [" + std::to_string(B) + ", " + std::to_string(H) + ", C <= " + std::to_string(cap) + "]",
              ShapeText(keep.shape));
  }
  std::vector<int32_t> lengths = HostInts(c, "lengths", B, 0, cap);
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
  Ints dev(c, std::move(ints));
  int64_t temp_bytes = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    TokenRows r = RowsOfTokens(items[i], layouts[i]);
    temp_bytes = std::max(temp_bytes, B * H * C * r.row_bytes);
  }
  // One tensor's kept rows at a time: the temporary is at most one layer's K.
  Temp temp = c.workspace(static_cast<size_t>(temp_bytes));
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
