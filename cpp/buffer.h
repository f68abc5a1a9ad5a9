// kvsift/cpp/buffer.h: DeviceBuffer, the native object behind every Tensor: a byte range on one
// device, owned (freed by dispose or, failing that, by the garbage collector's finalizer) or
// wrapped (another engine's memory, never freed here).
#pragma once
#include <napi.h>

#include <cstdint>
#include <vector>

#include "runtime.h"

namespace kvsift {

class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  static Napi::Function Init(Napi::Env env);
  // A new owned allocation; throws ERR_OUT_OF_MEMORY / ERR_CUDA on failure.
  static Napi::Object Allocate(Napi::Env env, int device, size_t bytes, cudaStream_t stream);
  static Napi::Object Wrap(Napi::Env env, void* ptr, size_t bytes, int device);
  // CPU memory inside a JS ArrayBuffer (Tensor.fromHostArray): the buffer holds the ArrayBuffer
  // alive until free(), and Refresh() re-reads its address before every use, so a detached or
  // shrunk ArrayBuffer is never read.
  static Napi::Object WrapHost(Napi::Env env, Napi::ArrayBuffer ab, size_t offset, size_t bytes);
  // nullptr when v is not a DeviceBuffer.
  static DeviceBuffer* From(Napi::Env env, Napi::Value v);

  explicit DeviceBuffer(const Napi::CallbackInfo& info);
  ~DeviceBuffer() override;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }
  bool freed() const { return freed_; }
  // Ops record every stream that touches the memory (record-stream): the free is issued on the
  // last one, after it waited for the others to reach that point, so a buffer used on several
  // streams is never handed out again while one of them may still read or write it.
  void set_stream(cudaStream_t s);
  // Streams it was used on before the last one.
  const std::vector<cudaStream_t>& other_streams() const { return other_streams_; }

  // Async readers keep the memory alive across a free() issued while they run.
  void pin() { ++pending_; }
  void unpin();

  void Release();

  // Host-backed buffers: re-reads the ArrayBuffer's address; false when it was detached or no
  // longer covers [offset, offset + bytes). Always true for other buffers.
  bool Refresh(Napi::Env env);
  bool host_backed() const { return host_backed_; }

 private:
  // The JS object and its native half over [data, data + bytes) on `device`, live; owned: freed
  // here (Allocate), else the caller's memory (Wrap, WrapHost). The factories add the rest.
  static Napi::Object Make(Napi::Env env, void* data, size_t bytes, int device, bool owned);
  Napi::Value Free(const Napi::CallbackInfo& info);
  Napi::Value GetPtr(const Napi::CallbackInfo& info);
  Napi::Value GetByteLength(const Napi::CallbackInfo& info);
  Napi::Value GetDevice(const Napi::CallbackInfo& info);
  Napi::Value GetOwned(const Napi::CallbackInfo& info);
  Napi::Value GetFreed(const Napi::CallbackInfo& info);
  void ReallyFree();

  void* data_ = nullptr;
  size_t bytes_ = 0;
  int device_ = kCpuDevice;
  bool owned_ = false;
  bool freed_ = false;
  bool free_deferred_ = false;
  int pending_ = 0;
  int64_t external_bytes_ = 0;  // reported to V8 so forgotten tensors create GC pressure
  napi_env env_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::vector<cudaStream_t> other_streams_;
  bool host_backed_ = false;
  size_t host_offset_ = 0;
  Napi::Reference<Napi::ArrayBuffer> host_ref_;
};

}  // namespace kvsift
