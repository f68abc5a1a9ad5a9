#include "args.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "errors.h"

namespace kvsift {

std::string device_name(int device) { return device < 0 ? "cpu" : "cuda:" + std::to_string(device); }

std::string describe(Napi::Value v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (std::isnan(d)) return "NaN";
    if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
    if (std::floor(d) == d && std::fabs(d) <= 9007199254740992.0) return std::to_string(static_cast<int64_t>(d));
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.17g", d);
    return buf;
  }
  if (v.IsString()) return "a string";
  if (v.IsBigInt()) return "a bigint";
  if (v.IsArray()) return "an array";
  if (v.IsFunction()) return "a function";
  if (v.IsTypedArray()) return "a typed array";
  return "an object";
}

DeviceBuffer* GetBuffer(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name) {
  DeviceBuffer* buf = DeviceBuffer::From(env, v);
  if (buf == nullptr) ThrowInvalid(env, op, name, "a DeviceBuffer", describe(v));
  if (buf->freed()) Throw(env, code::kDisposed, op + ": " + name + " is disposed");
  return buf;
}

TensorArg GetTensor(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name) {
  if (!v.IsObject() || v.IsArray()) ThrowInvalid(env, op, name, "a Tensor", describe(v));
  Napi::Object obj = v.As<Napi::Object>();
  Napi::Value bufv = obj.Get("_buffer");
  DeviceBuffer* buf = DeviceBuffer::From(env, bufv);
  if (buf == nullptr) ThrowInvalid(env, op, name, "a Tensor", describe(v));
  if (buf->freed()) Throw(env, code::kDisposed, op + ": " + name + " is disposed");
  TensorArg t;
  t.buffer = buf;
  t.data = buf->data();
  buf->pin();
  t.pin = std::shared_ptr<void>(nullptr, [buf](void*) { buf->unpin(); });
  t.device = buf->device();
  int64_t code = GetInt(env, op, obj.Get("_dtypeCode"), name + ".dtype", 0, 4);
  t.dtype = static_cast<DType>(code);
  Napi::Value sv = obj.Get("shape");
  if (!sv.IsArray()) ThrowInvalid(env, op, name + ".shape", "an array", describe(sv));
  Napi::Array arr = sv.As<Napi::Array>();
  uint32_t rank = arr.Length();
  if (rank > 8) ThrowInvalid(env, op, name + ".shape", "at most 8 dimensions", std::to_string(rank));
  int64_t numel = 1;
  for (uint32_t i = 0; i < rank; ++i) {
    int64_t d = GetInt(env, op, arr.Get(i), name + ".shape[" + std::to_string(i) + "]", 0,
                       std::numeric_limits<int32_t>::max());
    t.shape.push_back(d);
    if (d != 0 && numel > std::numeric_limits<int64_t>::max() / 16 / d) {
      ThrowInvalid(env, op, name + ".shape", "a shape whose byte size fits in 64 bits", "an overflowing shape");
    }
    numel *= d;
  }
  t.numel = numel;
  t.bytes = numel * dtype_size(t.dtype);
  if (static_cast<uint64_t>(t.bytes) > buf->bytes()) {
    ThrowInvalid(env, op, name, "a buffer of at least " + std::to_string(t.bytes) + " bytes",
                 std::to_string(buf->bytes()) + " bytes");
  }
  return t;
}

TensorArg GetTensor(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name, size_t rank,
                    std::initializer_list<DType> allowed) {
  TensorArg t = GetTensor(env, op, v, name);
  if (rank != kAnyRank && t.rank() != rank) {
    ThrowInvalid(env, op, name, "a " + std::to_string(rank) + "-D tensor", std::to_string(t.rank()) + "-D");
  }
  if (allowed.size() != 0) {
    bool ok = false;
    std::string list;
    for (DType d : allowed) {
      ok = ok || d == t.dtype;
      list += (list.empty() ? "" : " | ") + std::string(dtype_name(d));
    }
    if (!ok) ThrowInvalid(env, op, name + ".dtype", list, dtype_name(t.dtype));
  }
  return t;
}

int64_t GetInt(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) {
    ThrowInvalid(env, op, name, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", describe(v));
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(std::floor(d) == d) || d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
    ThrowInvalid(env, op, name, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", describe(v));
  }
  return static_cast<int64_t>(d);
}

double GetNumber(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name) {
  if (!v.IsNumber()) ThrowInvalid(env, op, name, "a number", describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) ThrowInvalid(env, op, name, "a finite number", describe(v));
  return d;
}

uint64_t GetU64(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name) {
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t u = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowInvalid(env, op, name, "a bigint in [0, 2^64)", "an out-of-range bigint");
    return u;
  }
  return static_cast<uint64_t>(GetInt(env, op, v, name, 0, (int64_t{1} << 53) - 1));
}

int GetDevice(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name) {
  int64_t d = GetInt(env, op, v, name, -1, 1 << 20);
  if (d >= 0 && d >= cuda_device_count()) {
    Throw(env, code::kNoDevice, op + ": no such device cuda:" + std::to_string(d) + " (" +
                                    std::to_string(cuda_device_count()) + " CUDA devices usable)");
  }
  return static_cast<int>(d);
}

cudaStream_t GetStream(Napi::Env env, const std::string& op, Napi::Value v) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  if (!v.IsBigInt()) ThrowInvalid(env, op, "stream", "a stream handle (bigint)", describe(v));
  bool lossless = true;
  uint64_t u = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) ThrowInvalid(env, op, "stream", "a stream handle (bigint)", "an out-of-range bigint");
  return reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(u));
}

int SameDevice(Napi::Env env, const std::string& op, std::initializer_list<const TensorArg*> tensors) {
  int device = (*tensors.begin())->device;
  for (const TensorArg* t : tensors) {
    if (t->device != device) {
      Throw(env, code::kDeviceMismatch, op + ": tensors on different devices (" + device_name(device) + " and " +
                                            device_name(t->device) + "); move them with tensor.to(device) first");
    }
  }
  return device;
}

}  // namespace kvsift
