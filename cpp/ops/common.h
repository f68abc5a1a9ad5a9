// kvsift/cpp/ops/common.h: the argument plumbing every op entry shares (cpp/ops/<family>.cc):
// options objects, layouts and views, shape checks, uploaded lengths, stream-ordered temporaries
// and the CPU/CUDA dispatch tail. An op entry reads its tensors (outputs are allocated by the TS
// layer), re-checks every shape and bound that memory safety depends on, fills its params struct
// and dispatches to the CPU backend or the CUDA launcher on the inputs' device.
#pragma once
#include <napi.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "../args.h"
#include "../core.h"
#include "../cpu/cpu_ops.h"
#include "../errors.h"
#include "../memory.h"
#include "../runtime.h"
#ifdef KVSIFT_WITH_CUDA
#include "../../cuda/launchers.h"
#endif
// A launcher call in CUDA builds; never reached (devices are all CPU) in C++-only ones.
#ifdef KVSIFT_WITH_CUDA
#define KVSIFT_CUDA_CALL(call) (call)
#else
#define KVSIFT_CUDA_CALL(call) 0
#endif


namespace kvsift::ops {

// Stream-ordered temporary device memory (workspaces, uploaded seqLens), from the caching pool.
class Temp {
 public:
  Temp(Napi::Env env, const std::string& op, int device, size_t bytes, cudaStream_t stream)
      : device_(device), bytes_(bytes), stream_(stream) {
    if (bytes == 0) return;
    int err = device_alloc(device, bytes, stream, &ptr_);
    if (err != 0) {
      if (device < 0 || cuda_is_out_of_memory(err)) {
        Throw(env, code::kOutOfMemory, op + ": out of memory for a " + std::to_string(bytes) + "-byte workspace on " +
                                           device_name(device));
      }
      ThrowCuda(env, op, err);
    }
  }
  ~Temp() { device_free(device_, ptr_, bytes_, stream_); }
  Temp(const Temp&) = delete;
  Temp& operator=(const Temp&) = delete;
  void* get() const { return ptr_; }

 private:
  int device_;
  size_t bytes_;
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

inline Napi::Object GetOptions(Napi::Env env, const std::string& op, Napi::Value v) {
  if (!v.IsObject()) ThrowInvalid(env, op, "options", "an options object", describe(v));
  return v.As<Napi::Object>();
}

inline int Layout(Napi::Env env, const std::string& op, Napi::Object o) {
  Napi::Value v = o.Get("layout");
  if (v.IsUndefined()) return 0;
  return static_cast<int>(GetInt(env, op, v, "layout", 0, 1));
}

// Logical [B, H, S, D] of a 4-D tensor in the given layout (bshd stores [B, S, H, D]).
struct Dims {
  int64_t B, H, S, D;
};
inline Dims DimsOf(const TensorArg& t, int layout) {
  if (layout == 0) return {t.dim(0), t.dim(1), t.dim(2), t.dim(3)};
  return {t.dim(0), t.dim(2), t.dim(1), t.dim(3)};
}
inline View4 ViewOf(const TensorArg& t, int layout) {
  Dims d = DimsOf(t, layout);
  if (layout == 0) return {t.data, d.H * d.S * d.D, d.S * d.D, d.D};
  return {t.data, d.S * d.H * d.D, d.D, d.H * d.D};
}
inline MutView4 MutViewOf(const TensorArg& t, int layout) {
  View4 v = ViewOf(t, layout);
  return {t.data, v.sB, v.sH, v.sS};
}

inline std::string ShapeText(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline void ExpectShape(Napi::Env env, const std::string& op, const TensorArg& t, const std::string& name,
                 const std::vector<int64_t>& want) {
  if (t.shape != want) ThrowInvalid(env, op, name + ".shape", ShapeText(want), ShapeText(t.shape));
}

// Per-batch lengths (seqLens or valid lengths) from an Int32Array, checked on the host against
// [lo, hi] and uploaded to the op's device. ptr() is null when the option is absent.
class Lengths {
 public:
  Lengths(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name, int64_t batch, int64_t lo,
          int64_t hi, int device, cudaStream_t stream) {
    if (v.IsUndefined() || v.IsNull()) return;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
      ThrowInvalid(env, op, name, "an Int32Array", describe(v));
    }
    Napi::Int32Array arr = v.As<Napi::Int32Array>();
    if (static_cast<int64_t>(arr.ElementLength()) != batch) {
      ThrowInvalid(env, op, name, "an Int32Array of length " + std::to_string(batch), "length " + std::to_string(arr.ElementLength()));
    }
    host_.assign(arr.Data(), arr.Data() + arr.ElementLength());
    for (size_t b = 0; b < host_.size(); ++b) {
      if (host_[b] < lo || host_[b] > hi) {
        ThrowInvalid(env, op, name + "[" + std::to_string(b) + "]",
                     "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", std::to_string(host_[b]));
      }
    }
    if (device < 0) {
      ptr_ = host_.data();
      return;
    }
#ifdef KVSIFT_WITH_CUDA
    temp_ = std::make_unique<Temp>(env, op, device, host_.size() * sizeof(int32_t), stream);
    CheckCuda(env, op, cudaMemcpyAsync(temp_->get(), host_.data(), host_.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
    ptr_ = static_cast<const int32_t*>(temp_->get());
#endif
  }
  const int32_t* ptr() const { return ptr_; }
  int32_t at(size_t b, int32_t fallback) const { return host_.empty() ? fallback : host_[b]; }
  bool present() const { return !host_.empty() || ptr_ != nullptr; }

 private:
  std::vector<int32_t> host_;
  std::unique_ptr<Temp> temp_;
  const int32_t* ptr_ = nullptr;
};

// Runs the CPU function or the CUDA launcher on the tensors' device.
struct Dispatch {
  Napi::Env env;
  std::string op;
  int device;
  cudaStream_t stream;
  DeviceGuard guard;
  Dispatch(Napi::Env e, std::string o, int d, cudaStream_t s) : env(e), op(std::move(o)), device(d), stream(s), guard(d) {
    CheckCuda(env, op, guard.error());
  }
  // A launcher's error: an unsupported configuration is ERR_UNSUPPORTED with the launcher's text
  // (cuda/dispatch.h), anything else a CUDA error.
  void cuda_result(int err) {
#ifdef KVSIFT_WITH_CUDA
    if (err == cudaErrorNotSupported) {
      std::string what = cuda::take_unsupported_message();
      Throw(env, code::kUnsupported, op + ": " + (what.empty() ? "not supported on this device" : what));
    }
#endif
    CheckCuda(env, op, err);
  }
  // The tail every op shares: the CPU backend, or the CUDA launcher with its error checked and
  // the stream recorded on the tensors it touched (their frees are ordered on it).
  template <typename CpuFn, typename CudaFn>
  void run(CpuFn&& cpu_fn, CudaFn&& cuda_fn, std::initializer_list<const TensorArg*> touched) {
    if (device < 0) {
      cpu(cpu_fn);
      return;
    }
    cuda_result(cuda_fn());
    for (const TensorArg* t : touched) t->buffer->set_stream(stream);
  }
  // Runs a CPU backend call; its scratch allocations may fail.
  template <typename F>
  auto cpu(F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const std::bad_alloc&) {
      Throw(env, code::kOutOfMemory, op + ": out of host memory for the CPU backend's scratch space");
    } catch (const std::exception& e) {
      Throw(env, code::kUnsupported, op + ": " + e.what());
    }
  }
};

inline void Touch(cudaStream_t stream, std::initializer_list<const TensorArg*> ts) {
  for (const TensorArg* t : ts) t->buffer->set_stream(stream);
}

inline constexpr std::initializer_list<DType> kFloatTypes = {DType::F32, DType::F16, DType::BF16};

// Rows view of a tensor: [..., M] as R rows of M.
inline void RowsOf(const TensorArg& t, int64_t* R, int64_t* M) {
  *M = t.rank() == 0 ? 1 : t.shape.back();
  *R = *M == 0 ? 0 : t.numel / *M;
}

// Op entries register themselves with the export table (cpp/addon.cc) from their own file.
using OpEntry = Napi::Value (*)(const Napi::CallbackInfo&);
struct OpRegistration {
  OpRegistration(const char* name, OpEntry fn);
};

}  // namespace kvsift::ops

#define KVSIFT_OP_CONCAT2(a, b) a##b
#define KVSIFT_OP_CONCAT(a, b) KVSIFT_OP_CONCAT2(a, b)
// KVSIFT_REGISTER_OP("snapkvScores", SnapkvScores): exported under that name by RegisterOps.
#define KVSIFT_REGISTER_OP(name, fn) \
  static const ::kvsift::ops::OpRegistration KVSIFT_OP_CONCAT(kvsift_op_registration_, __LINE__)(name, fn)
