#include "buffer.h"

#include <algorithm>

#include "errors.h"
#include "memory.h"

namespace kvsift {

Napi::Function DeviceBuffer::Init(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "DeviceBuffer",
                                    {
                                        InstanceMethod("free", &DeviceBuffer::Free),
                                        InstanceAccessor("ptr", &DeviceBuffer::GetPtr, nullptr),
                                        InstanceAccessor("byteLength", &DeviceBuffer::GetByteLength, nullptr),
                                        InstanceAccessor("device", &DeviceBuffer::GetDevice, nullptr),
                                        InstanceAccessor("owned", &DeviceBuffer::GetOwned, nullptr),
                                        InstanceAccessor("freed", &DeviceBuffer::GetFreed, nullptr),
                                    });
  GetAddonData(env).buffer_ctor = Napi::Persistent(ctor);
  return ctor;
}

DeviceBuffer::DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
  env_ = info.Env();
  // Constructed from JS directly it stays an empty, already-freed buffer: only Allocate and
  // Wrap hand out real memory.
  freed_ = true;
}

DeviceBuffer::~DeviceBuffer() {
  // The finalizer path: the JS object was collected without dispose(). No async reader can be
  // pending here (each keeps a reference to the object).
  if (!freed_ || free_deferred_) {
    freed_ = true;
    free_deferred_ = false;
    ReallyFree();
  }
}

Napi::Object DeviceBuffer::Make(Napi::Env env, void* data, size_t bytes, int device, bool owned) {
  Napi::Object obj = GetAddonData(env).buffer_ctor.New({});
  DeviceBuffer* self = Unwrap(obj);
  self->data_ = data;
  self->bytes_ = bytes;
  self->device_ = device;
  self->owned_ = owned;
  self->freed_ = false;  // a buffer constructed from JS starts freed
  return obj;
}

Napi::Object DeviceBuffer::Allocate(Napi::Env env, int device, size_t bytes, cudaStream_t stream) {
  void* ptr = nullptr;
  int err = device_alloc(device, bytes, stream, &ptr);
  if (err != 0) {
    std::string where = device < 0 ? std::string("cpu") : "cuda:" + std::to_string(device);
    if (device < 0) {
      // the usual cause on the CPU: tensors nobody disposed, which their finalizers free only once
      // the event loop turns
      Throw(env, code::kOutOfMemory,
            "alloc: out of memory on cpu allocating " + std::to_string(bytes) + " bytes (" +
                std::to_string(memory_stats(device).live_bytes) +
                " bytes held by live tensors; dispose() the ones you no longer need)");
    }
    if (cuda_is_out_of_memory(err)) {
      Throw(env, code::kOutOfMemory,
            "alloc: out of memory on " + where + " allocating " + std::to_string(bytes) + " bytes");
    }
    ThrowCuda(env, "alloc", err);
  }
  Napi::Object obj = Make(env, ptr, bytes, device, true);
  DeviceBuffer* self = Unwrap(obj);
  self->stream_ = stream;
  // Cap the hint: V8 only needs to know the object is heavy, and huge values trigger GCs that
  // cost more than they save.
  self->external_bytes_ = static_cast<int64_t>(bytes < (64u << 20) ? bytes : (64u << 20));
  int64_t total = 0;
  napi_adjust_external_memory(env, self->external_bytes_, &total);
  return obj;
}

Napi::Object DeviceBuffer::Wrap(Napi::Env env, void* ptr, size_t bytes, int device) {
  return Make(env, ptr, bytes, device, false);
}

Napi::Object DeviceBuffer::WrapHost(Napi::Env env, Napi::ArrayBuffer ab, size_t offset, size_t bytes) {
  // No address yet: Refresh() reads it from the ArrayBuffer.
  Napi::Object obj = Make(env, nullptr, bytes, kCpuDevice, false);
  DeviceBuffer* self = Unwrap(obj);
  self->host_backed_ = true;
  self->host_offset_ = offset;
  self->host_ref_ = Napi::Persistent(ab);
  if (!self->Refresh(env)) {
    self->Release();
    ThrowInvalid(env, "Tensor.fromHostArray", "array", "a live ArrayBuffer covering the tensor", "a detached or short buffer");
  }
  return obj;
}

bool DeviceBuffer::Refresh(Napi::Env env) {
  if (!host_backed_) return true;
  if (freed_ || host_ref_.IsEmpty()) return false;
  Napi::ArrayBuffer ab = host_ref_.Value();
  bool detached = false;
  if (napi_is_detached_arraybuffer(env, ab, &detached) != napi_ok || detached) {
    data_ = nullptr;
    return false;
  }
  void* base = nullptr;
  size_t length = 0;
  if (napi_get_arraybuffer_info(env, ab, &base, &length) != napi_ok || base == nullptr ||
      length < host_offset_ || length - host_offset_ < bytes_) {
    data_ = nullptr;
    return false;
  }
  data_ = static_cast<uint8_t*>(base) + host_offset_;
  return true;
}

DeviceBuffer* DeviceBuffer::From(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) return nullptr;
  AddonData& data = GetAddonData(env);
  if (data.buffer_ctor.IsEmpty()) return nullptr;
  Napi::Object obj = v.As<Napi::Object>();
  if (!obj.InstanceOf(data.buffer_ctor.Value())) return nullptr;
  // Object.create(DeviceBuffer.prototype) passes InstanceOf but wraps nothing
  void* native = nullptr;
  if (napi_unwrap(env, obj, &native) != napi_ok || native == nullptr) {
    env.GetAndClearPendingException();
    return nullptr;
  }
  return static_cast<DeviceBuffer*>(native);
}

void DeviceBuffer::set_stream(cudaStream_t s) {
  if (s == stream_) return;
  auto it = std::find(other_streams_.begin(), other_streams_.end(), s);
  if (it != other_streams_.end()) other_streams_.erase(it);
  if (std::find(other_streams_.begin(), other_streams_.end(), stream_) == other_streams_.end()) {
    other_streams_.push_back(stream_);
  }
  stream_ = s;
}

void DeviceBuffer::ReallyFree() {
  if (owned_) device_free(device_, data_, bytes_, stream_, other_streams_);
  other_streams_.clear();
  data_ = nullptr;
  if (host_backed_) host_ref_.Reset();
  if (external_bytes_ != 0 && env_ != nullptr) {
    // Raw call: this runs in finalizers and destructors, where a throw would abort the process.
    int64_t total = 0;
    napi_adjust_external_memory(env_, -external_bytes_, &total);
    external_bytes_ = 0;
  }
}

void DeviceBuffer::Release() {
  if (freed_) return;
  freed_ = true;
  if (pending_ > 0) {
    free_deferred_ = true;
    return;
  }
  ReallyFree();
}

void DeviceBuffer::unpin() {
  if (--pending_ == 0 && free_deferred_) {
    free_deferred_ = false;
    ReallyFree();
  }
}

Napi::Value DeviceBuffer::Free(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

Napi::Value DeviceBuffer::GetPtr(const Napi::CallbackInfo& info) {
  if (host_backed_ && !Refresh(info.Env())) return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(0));
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(freed_ ? nullptr : data_)));
}
Napi::Value DeviceBuffer::GetByteLength(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(bytes_));
}
Napi::Value DeviceBuffer::GetDevice(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), device_); }
Napi::Value DeviceBuffer::GetOwned(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), owned_); }
Napi::Value DeviceBuffer::GetFreed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), freed_); }

}  // namespace kvsift
