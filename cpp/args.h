// kvsift/cpp/args.h: reading JS arguments in the binding. The TS layer validates first and gives
// users the friendly messages; these checks keep memory safe whatever a caller passes to the raw
// binding (a byte length that does not cover the shape, a freed buffer, a bad device or stream).
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../common/params.h"
#include "buffer.h"
#include "runtime.h"

namespace kvsift {

// A Tensor as the binding sees it: the TS Tensor object's _buffer, _dtypeCode and shape.
struct TensorArg {
  DeviceBuffer* buffer = nullptr;
  void* data = nullptr;
  int device = kCpuDevice;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  int64_t bytes = 0;
  // Keeps the buffer's memory alive until the call ends, even if a JS getter read later in the
  // same call disposes it (a free() then only marks it and the memory goes when this drops).
  std::shared_ptr<void> pin;
  int64_t dim(size_t i) const { return shape[i]; }
  size_t rank() const { return shape.size(); }
};


// Reads and checks a tensor argument: a Tensor with a live DeviceBuffer whose byte length
// covers shape x dtype without overflow.
TensorArg GetTensor(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name);
// Largest byte size or offset a JS number carries exactly (2^53 - 1), as lib/validate.ts.
constexpr int64_t kMaxBytes = (int64_t{1} << 53) - 1;

// Any rank, for GetTensor's rank argument.
constexpr size_t kAnyRank = static_cast<size_t>(-1);
// The same, also checking rank (unless kAnyRank) and (when allowed is non-empty) the dtype.
TensorArg GetTensor(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name,
                    size_t rank, std::initializer_list<DType> allowed);

DeviceBuffer* GetBuffer(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name);

// An integer in [lo, hi]; non-integers and out-of-range values throw ERR_INVALID_ARG.
int64_t GetInt(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name, int64_t lo, int64_t hi);
double GetNumber(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name);
uint64_t GetU64(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name);
// A device index: -1 (CPU) or a usable CUDA device.
int GetDevice(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name);
// undefined / null / 0n: the legacy default stream (nullptr); else a cudaStream_t as a bigint.
cudaStream_t GetStream(Napi::Env env, const std::string& op, Napi::Value v);

// All tensors on one device; returns it.
int SameDevice(Napi::Env env, const std::string& op, std::initializer_list<const TensorArg*> tensors);

std::string describe(Napi::Value v);
std::string device_name(int device);

}  // namespace kvsift
