// kvsift/cpp/core.cc: the binding's foundation: build info, devices, buffers, copies, streams and
// synchronization. Op entry points live in cpp/ops/<family>.cc.
#include <napi.h>

#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "buffer.h"
#include "core.h"
#include "cpu/parallel.h"
#include "errors.h"
#include "memory.h"
#include "runtime.h"
#ifdef KVSIFT_WITH_CUDA
#include "../cuda/launchers.h"
#endif

namespace kvsift {
namespace {

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) ThrowInvalid(env, "setErrorClass", "cls", "a function", describe(info[0]));
  GetAddonData(env).error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef KVSIFT_WITH_CUDA
  o.Set("cuda", true);
  Napi::Array archs = Napi::Array::New(env);
  std::string list = KVSIFT_CUDA_ARCHS;
  size_t start = 0;
  uint32_t i = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    if (end > start) archs.Set(i++, list.substr(start, end - start));
    start = end + 1;
  }
  o.Set("cudaArchitectures", archs);
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  o.Set("cudaRuntimeVersion", std::to_string(runtime / 1000) + "." + std::to_string((runtime % 1000) / 10));
  int driver = 0;
  if (cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0) {
    o.Set("cudaDriverVersion", std::to_string(driver / 1000) + "." + std::to_string((driver % 1000) / 10));
  } else {
    o.Set("cudaDriverVersion", env.Null());
  }
  cudaGetLastError();
#else
  o.Set("cuda", false);
  o.Set("cudaArchitectures", Napi::Array::New(env));
  o.Set("cudaRuntimeVersion", env.Null());
  o.Set("cudaDriverVersion", env.Null());
#endif
  o.Set("cudaUnavailableReason", cuda_unavailable_reason());
#ifdef KVSIFT_CUDA_EMULATED
  o.Set("cudaEmulated", true);
#else
  o.Set("cudaEmulated", false);
#endif
  o.Set("napiVersion", NAPI_VERSION);
  o.Set("cpuThreads", cpu::num_threads());
  return o;
}

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cuda_device_count());
}

Napi::Value CudaDeviceInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = GetDevice(env, "devices", info[0], "device");
  if (device < 0) ThrowInvalid(env, "devices", "device", "a CUDA device index", "-1");
  CudaDeviceInfo d;
  CheckCuda(env, "devices", cuda_device_info(device, &d));
  Napi::Object o = Napi::Object::New(env);
  o.Set("model", d.model);
  o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
  o.Set("totalMemory", static_cast<double>(d.total_memory));
  o.Set("freeMemory", static_cast<double>(d.free_memory));
  o.Set("multiprocessors", d.multiprocessors);
  o.Set("l2CacheBytes", static_cast<double>(d.l2_bytes));
  return o;
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = GetDevice(env, "alloc", info[0], "device");
  int64_t bytes = GetInt(env, "alloc", info[1], "bytes", 0, kMaxBytes);
  cudaStream_t stream = GetStream(env, "alloc", info[2]);
  return DeviceBuffer::Allocate(env, device, static_cast<size_t>(bytes), stream);
}

Napi::Value WrapPointer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t ptr = GetU64(env, "fromDevicePointer", info[0], "ptr");
  if (ptr == 0) ThrowInvalid(env, "fromDevicePointer", "ptr", "a non-null device pointer", "0n");
  int64_t bytes = GetInt(env, "fromDevicePointer", info[1], "bytes", 0, kMaxBytes);
  int device = GetDevice(env, "fromDevicePointer", info[2], "device");
  return DeviceBuffer::Wrap(env, reinterpret_cast<void*>(static_cast<uintptr_t>(ptr)), static_cast<size_t>(bytes), device);
}

// Checks that [offset, offset + bytes) lies inside buf.
void CheckRange(Napi::Env env, const std::string& op, DeviceBuffer* buf, int64_t offset, int64_t bytes,
                const std::string& name) {
  if (offset < 0 || bytes < 0 || static_cast<uint64_t>(offset) + static_cast<uint64_t>(bytes) > buf->bytes()) {
    ThrowInvalid(env, op, name, "a byte range inside " + std::to_string(buf->bytes()) + " bytes",
                 "[" + std::to_string(offset) + ", " + std::to_string(offset + bytes) + ")");
  }
}

struct HostView {
  uint8_t* data;
  size_t bytes;
};
HostView GetHostView(Napi::Env env, const std::string& op, Napi::Value v, const std::string& name) {
  if (v.IsTypedArray()) {
    // napi_get_typedarray_info also works for views of a SharedArrayBuffer
    napi_typedarray_type type;
    size_t length = 0, offset = 0;
    void* data = nullptr;
    if (napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, &offset) != napi_ok) {
      env.GetAndClearPendingException();
      ThrowInvalid(env, op, name, "a TypedArray or ArrayBuffer", describe(v));
    }
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    return {static_cast<uint8_t*>(data), ta.ByteLength()};
  }
  if (v.IsArrayBuffer()) {
    Napi::ArrayBuffer ab = v.As<Napi::ArrayBuffer>();
    return {static_cast<uint8_t*>(ab.Data()), ab.ByteLength()};
  }
  ThrowInvalid(env, op, name, "a TypedArray or ArrayBuffer", describe(v));
}

#ifdef KVSIFT_WITH_CUDA
cudaMemcpyKind KindOf(int dst_device, int src_device) {
  if (dst_device < 0 && src_device < 0) return cudaMemcpyHostToHost;
  if (dst_device < 0) return cudaMemcpyDeviceToHost;
  if (src_device < 0) return cudaMemcpyHostToDevice;
  return cudaMemcpyDeviceToDevice;
}
#endif

// copyFromHost(dst, dstOffset, src, stream?): host -> buffer. Returns once src may be reused.
Napi::Value CopyFromHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "copyFromHost";
  DeviceBuffer* dst = GetBuffer(env, op, info[0], "dst");
  int64_t off = GetInt(env, op, info[1], "dstOffset", 0, kMaxBytes);
  HostView src = GetHostView(env, op, info[2], "src");
  cudaStream_t stream = GetStream(env, op, info[3]);
  (void)stream;
  CheckRange(env, op, dst, off, static_cast<int64_t>(src.bytes), "dst");
  if (src.bytes == 0) return env.Undefined();
  if (dst->device() < 0) {
    std::memcpy(static_cast<uint8_t*>(dst->data()) + off, src.data, src.bytes);
    return env.Undefined();
  }
#ifdef KVSIFT_WITH_CUDA
  DeviceGuard guard(dst->device());
  CheckCuda(env, op, guard.error());
  // From pageable memory cudaMemcpyAsync returns once the source is staged, so the JS array may
  // be reused or collected right after.
  CheckCuda(env, op, cudaMemcpyAsync(static_cast<uint8_t*>(dst->data()) + off, src.data, src.bytes,
                                     cudaMemcpyHostToDevice, stream));
  dst->set_stream(stream);
#endif
  return env.Undefined();
}

// copyToHost(src, srcOffset, dst, stream?): buffer -> host, complete on return.
Napi::Value CopyToHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "copyToHost";
  DeviceBuffer* src = GetBuffer(env, op, info[0], "src");
  int64_t off = GetInt(env, op, info[1], "srcOffset", 0, kMaxBytes);
  HostView dst = GetHostView(env, op, info[2], "dst");
  cudaStream_t stream = GetStream(env, op, info[3]);
  (void)stream;
  CheckRange(env, op, src, off, static_cast<int64_t>(dst.bytes), "src");
  if (dst.bytes == 0) return env.Undefined();
  if (src->device() < 0) {
    std::memcpy(dst.data, static_cast<const uint8_t*>(src->data()) + off, dst.bytes);
    return env.Undefined();
  }
#ifdef KVSIFT_WITH_CUDA
  DeviceGuard guard(src->device());
  CheckCuda(env, op, guard.error());
  CheckCuda(env, op, cudaMemcpyAsync(dst.data, static_cast<const uint8_t*>(src->data()) + off, dst.bytes,
                                     cudaMemcpyDeviceToHost, stream));
  CheckCuda(env, op, cudaStreamSynchronize(stream));
#endif
  return env.Undefined();
}

// Resolves a promise from a worker thread's result; the error object is made on the JS thread.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::string op)
      : Napi::AsyncWorker(env, "kvsift"), deferred_(Napi::Promise::Deferred::New(env)), op_(std::move(op)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void OnOK() override {
    Napi::Env env = Env();
    Cleanup();
    if (cuda_error_ != 0) {
      Napi::Error err = MakeError(env, cuda_is_out_of_memory(cuda_error_) ? code::kOutOfMemory : code::kCuda,
                                  op_ + ": " + cuda_error_name(cuda_error_) + ": " + cuda_error_string(cuda_error_));
      err.Set("cudaError", Napi::String::New(env, cuda_error_name(cuda_error_)));
      err.Set("op", Napi::String::New(env, op_));
      deferred_.Reject(err.Value());
    } else if (!custom_code_.empty()) {
      deferred_.Reject(MakeError(env, custom_code_.c_str(), op_ + ": " + custom_message_).Value());
    } else {
      deferred_.Resolve(Result(env));
    }
  }
  void OnError(const Napi::Error& e) override {
    Cleanup();
    deferred_.Reject(e.Value());
  }
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  virtual void Cleanup() {}

  Napi::Promise::Deferred deferred_;
  std::string op_;
  int cuda_error_ = 0;
  std::string custom_code_, custom_message_;
};

class CopyToHostWorker : public PromiseWorker {
 public:
  CopyToHostWorker(Napi::Env env, Napi::Object buffer_obj, DeviceBuffer* src, int64_t offset, int64_t bytes,
                   cudaStream_t stream)
      : PromiseWorker(env, "copyToHostAsync"), src_(src), offset_(offset), stream_(stream), host_(bytes) {
    ref_ = Napi::Persistent(buffer_obj);
    src_->pin();
  }
  void Execute() override {
    if (host_.empty()) return;
    const uint8_t* from = static_cast<const uint8_t*>(src_->data()) + offset_;
    if (src_->device() < 0) {
      std::memcpy(host_.data(), from, host_.size());
      return;
    }
#ifdef KVSIFT_WITH_CUDA
    cuda_error_ = cudaSetDevice(src_->device());
    if (cuda_error_ == 0) cuda_error_ = cudaMemcpyAsync(host_.data(), from, host_.size(), cudaMemcpyDeviceToHost, stream_);
    if (cuda_error_ == 0) cuda_error_ = cudaStreamSynchronize(stream_);
#endif
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, host_.size());
    if (!host_.empty()) std::memcpy(ab.Data(), host_.data(), host_.size());
    return ab;
  }
  void Cleanup() override {
    src_->unpin();
    ref_.Reset();
  }

 private:
  DeviceBuffer* src_;
  int64_t offset_;
  cudaStream_t stream_;
  std::vector<uint8_t> host_;
  Napi::ObjectReference ref_;
};

// copyToHostAsync(src, srcOffset, bytes, stream?) -> Promise<ArrayBuffer>; the event loop keeps
// running while the device finishes.
Napi::Value CopyToHostAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "copyToHostAsync";
  DeviceBuffer* src = GetBuffer(env, op, info[0], "src");
  int64_t off = GetInt(env, op, info[1], "srcOffset", 0, kMaxBytes);
  int64_t bytes = GetInt(env, op, info[2], "bytes", 0, kMaxBytes);
  cudaStream_t stream = GetStream(env, op, info[3]);
  (void)stream;
  CheckRange(env, op, src, off, bytes, "src");
  auto* worker = new CopyToHostWorker(env, info[0].As<Napi::Object>(), src, off, bytes, stream);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// copyBuffer(dst, dstOffset, src, srcOffset, bytes, stream?): any device to any device.
Napi::Value CopyBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "copy";
  DeviceBuffer* dst = GetBuffer(env, op, info[0], "dst");
  int64_t doff = GetInt(env, op, info[1], "dstOffset", 0, kMaxBytes);
  DeviceBuffer* src = GetBuffer(env, op, info[2], "src");
  int64_t soff = GetInt(env, op, info[3], "srcOffset", 0, kMaxBytes);
  int64_t bytes = GetInt(env, op, info[4], "bytes", 0, kMaxBytes);
  cudaStream_t stream = GetStream(env, op, info[5]);
  (void)stream;
  CheckRange(env, op, dst, doff, bytes, "dst");
  CheckRange(env, op, src, soff, bytes, "src");
  if (bytes == 0) return env.Undefined();
  uint8_t* d = static_cast<uint8_t*>(dst->data()) + doff;
  const uint8_t* s = static_cast<const uint8_t*>(src->data()) + soff;
  if (dst->device() < 0 && src->device() < 0) {
    std::memmove(d, s, static_cast<size_t>(bytes));
    return env.Undefined();
  }
#ifdef KVSIFT_WITH_CUDA
  int device = dst->device() >= 0 ? dst->device() : src->device();
  DeviceGuard guard(device);
  CheckCuda(env, op, guard.error());
  if (dst->device() >= 0 && src->device() >= 0 && dst->device() != src->device()) {
    CheckCuda(env, op, cudaMemcpyPeerAsync(d, dst->device(), s, src->device(), static_cast<size_t>(bytes), stream));
  } else {
    CheckCuda(env, op, cudaMemcpyAsync(d, s, static_cast<size_t>(bytes), KindOf(dst->device(), src->device()), stream));
  }
  // Device -> pageable host copies complete before returning; the rest are stream-ordered.
  if (dst->device() >= 0) dst->set_stream(stream);
#endif
  return env.Undefined();
}

// fill(dst, byte, stream?): memset.
Napi::Value Fill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceBuffer* dst = GetBuffer(env, "fill", info[0], "dst");
  int64_t value = GetInt(env, "fill", info[1], "value", 0, 255);
  cudaStream_t stream = GetStream(env, "fill", info[2]);
  (void)stream;
  if (dst->device() < 0) {
    std::memset(dst->data(), static_cast<int>(value), dst->bytes());
    return env.Undefined();
  }
#ifdef KVSIFT_WITH_CUDA
  DeviceGuard guard(dst->device());
  CheckCuda(env, "fill", guard.error());
  CheckCuda(env, "fill", cudaMemsetAsync(dst->data(), static_cast<int>(value), dst->bytes(), stream));
  dst->set_stream(stream);
#endif
  return env.Undefined();
}

Napi::Value StreamCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = GetDevice(env, "Stream.create", info[0], "device");
  if (device < 0) return Napi::BigInt::New(env, static_cast<uint64_t>(0));
#ifdef KVSIFT_WITH_CUDA
  DeviceGuard guard(device);
  CheckCuda(env, "Stream.create", guard.error());
  cudaStream_t s = nullptr;
  // Non-blocking: an engine's streams should not serialize behind the legacy default stream.
  CheckCuda(env, "Stream.create", cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  note_stream_created(s);
  return Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(s)));
#else
  return Napi::BigInt::New(env, static_cast<uint64_t>(0));
#endif
}

Napi::Value StreamDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = GetDevice(env, "Stream.dispose", info[0], "device");
  cudaStream_t s = GetStream(env, "Stream.dispose", info[1]);
  if (device < 0 || s == nullptr) return env.Undefined();
#ifdef KVSIFT_WITH_CUDA
  DeviceGuard guard(device);
  // Finish the stream's work first: buffers last used on it are then freed in legacy-stream
  // order (see note_stream_destroyed) without racing that work.
  int sync_err = cudaStreamSynchronize(s);
  CheckCuda(env, "Stream.dispose", cudaStreamDestroy(s));
  note_stream_destroyed(s);
  CheckCuda(env, "Stream.dispose", sync_err);
#endif
  return env.Undefined();
}

class SyncWorker : public PromiseWorker {
 public:
  SyncWorker(Napi::Env env, int device, cudaStream_t stream, bool whole_device)
      : PromiseWorker(env, whole_device ? "synchronize" : "stream.synchronize"),
        device_(device), stream_(stream), whole_device_(whole_device) {}
  void Execute() override {
    if (device_ < 0) return;
#ifdef KVSIFT_WITH_CUDA
    cuda_error_ = cudaSetDevice(device_);
    if (cuda_error_ != 0) return;
    cuda_error_ = whole_device_ ? cudaDeviceSynchronize() : cudaStreamSynchronize(stream_);
    if (cuda_error_ != 0) return;
    int bad_index = 0;
    cuda_error_ = cuda::read_and_clear_index_error(&bad_index, stream_);
    if (cuda_error_ == 0 && bad_index) {
      custom_code_ = code::kIndexOutOfRange;
      custom_message_ = "a gather on cuda:" + std::to_string(device_) +
                        " met positions outside [0, N); their rows were written as zeros";
    }
#endif
  }

 private:
  int device_;
  cudaStream_t stream_;
  bool whole_device_;
};

Napi::Value StreamSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = GetDevice(env, "stream.synchronize", info[0], "device");
  cudaStream_t s = GetStream(env, "stream.synchronize", info[1]);
  auto* worker = new SyncWorker(env, device, s, false);
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

Napi::Value DeviceSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = GetDevice(env, "synchronize", info[0], "device");
  auto* worker = new SyncWorker(env, device, nullptr, true);
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

Napi::Value MemoryStatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = GetDevice(env, "memoryStats", info[0], "device");
  MemoryStats s = memory_stats(device);
  if (info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value()) memory_stats_reset_peak(device);
  Napi::Object o = Napi::Object::New(env);
  o.Set("liveBuffers", static_cast<double>(s.live_buffers));
  o.Set("liveBytes", static_cast<double>(s.live_bytes));
  o.Set("peakBytes", static_cast<double>(s.peak_bytes));
  return o;
}

}  // namespace

void RegisterCore(Napi::Env env, Napi::Object exports) {
  exports.Set("DeviceBuffer", DeviceBuffer::Init(env));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo, "buildInfo"));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCount, "cudaDeviceCount"));
  exports.Set("cudaDeviceInfo", Napi::Function::New(env, CudaDeviceInfoJs, "cudaDeviceInfo"));
  exports.Set("alloc", Napi::Function::New(env, Alloc, "alloc"));
  exports.Set("wrapPointer", Napi::Function::New(env, WrapPointer, "wrapPointer"));
  exports.Set("copyFromHost", Napi::Function::New(env, CopyFromHost, "copyFromHost"));
  exports.Set("copyToHost", Napi::Function::New(env, CopyToHost, "copyToHost"));
  exports.Set("copyToHostAsync", Napi::Function::New(env, CopyToHostAsync, "copyToHostAsync"));
  exports.Set("copyBuffer", Napi::Function::New(env, CopyBuffer, "copyBuffer"));
  exports.Set("fill", Napi::Function::New(env, Fill, "fill"));
  exports.Set("streamCreate", Napi::Function::New(env, StreamCreate, "streamCreate"));
  exports.Set("streamDestroy", Napi::Function::New(env, StreamDestroy, "streamDestroy"));
  exports.Set("streamSynchronize", Napi::Function::New(env, StreamSynchronize, "streamSynchronize"));
  exports.Set("deviceSynchronize", Napi::Function::New(env, DeviceSynchronize, "deviceSynchronize"));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStatsJs, "memoryStats"));
}

}  // namespace kvsift
