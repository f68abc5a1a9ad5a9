// kvsift/cpp/core.cc: the binding's foundation: build info, devices, buffers, copies, streams and
// synchronization. Op entry points live in cpp/ops/<family>.cc.
#include <napi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "args.h"
#include "buffer.h"
#include "core.h"
#include "cpu/half.h"
#include "cpu/parallel.h"
#include "errors.h"
#include "memory.h"
#include "runtime.h"
#ifdef KVSIFT_WITH_CUDA
#include "../cuda/kv_cache.h"
#include "../cuda/launchers.h"
#endif

namespace kvsift {

// ---- lifecycle -------------------------------------------------------------------------------
// Node loads the addon once per environment (the main thread and every worker that requires
// kvsift) into one copy of the library, and unloads it when the last of them is gone. Each
// environment holds a reference on the process-wide state (the CPU thread pool, the host cache);
// the last to go joins the pool's threads and returns the cached blocks, so no thread of the
// library runs, and no block of it stays allocated, once it can be unloaded. Its instance data's
// finalizer runs after the finalizers of its objects (every DeviceBuffer is freed by then).
namespace {
std::mutex g_env_mu;
int g_envs = 0;

void AttachEnv() {
  std::lock_guard<std::mutex> lock(g_env_mu);
  ++g_envs;
}

void DetachEnv() {
  std::lock_guard<std::mutex> lock(g_env_mu);
  if (--g_envs > 0) return;
  cpu::stop_pool();
  release_host_cache();
}
}  // namespace

AddonData::~AddonData() { DetachEnv(); }

bool EnvAlive(napi_env env) {
  void* data = nullptr;
  if (napi_get_instance_data(env, &data) != napi_ok || data == nullptr) return false;
  return !static_cast<AddonData*>(data)->closing;
}

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
  o.Set("cpuF16Conversion", cpu::f16_row_path());
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

// wrapPointer(ptr, bytes, device, alignment?): the engine's memory, never freed here. Nothing can
// check that [ptr, ptr + bytes) is real, live memory on that device (the contract in
// docs/ERRORS.md puts that on the caller); the cheap guards are null, alignment to the element
// size (every kernel reads whole elements, the vector paths 16 bytes at a time from aligned
// rows), and a range that does not wrap around the address space.
Napi::Value WrapPointer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "fromDevicePointer";
  uint64_t ptr = GetU64(env, op, info[0], "ptr");
  if (ptr == 0) ThrowInvalid(env, op, "ptr", "a non-null device pointer", "0n");
  int64_t bytes = GetInt(env, op, info[1], "bytes", 0, kMaxBytes);
  int device = GetDevice(env, op, info[2], "device");
  int64_t alignment = info.Length() > 3 && !info[3].IsUndefined() ? GetInt(env, op, info[3], "alignment", 1, 16) : 1;
  if ((alignment & (alignment - 1)) != 0) ThrowInvalid(env, op, "alignment", "a power of two", std::to_string(alignment));
  if (ptr % static_cast<uint64_t>(alignment) != 0) {
    ThrowInvalid(env, op, "ptr", "an address aligned to " + std::to_string(alignment) + " bytes (the dtype's size)",
                 "0x" + [&] {
                   char buf[32];
                   std::snprintf(buf, sizeof(buf), "%llx", static_cast<unsigned long long>(ptr));
                   return std::string(buf);
                 }());
  }
  if (ptr + static_cast<uint64_t>(bytes) < ptr) {
    ThrowInvalid(env, op, "ptr", "a range that fits in the address space", "an address " + std::to_string(bytes) + " bytes below 2^64");
  }
  return DeviceBuffer::Wrap(env, reinterpret_cast<void*>(static_cast<uintptr_t>(ptr)), static_cast<size_t>(bytes), device);
}

// wrapHost(arrayOrView, bytes): the CPU memory of an ArrayBuffer (or of a TypedArray's range of
// one), shared with JS; see DeviceBuffer::WrapHost.
Napi::Value WrapHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "Tensor.fromHostArray";
  int64_t bytes = GetInt(env, op, info[1], "bytes", 0, kMaxBytes);
  Napi::Value v = info[0];
  if (v.IsArrayBuffer()) {
    Napi::ArrayBuffer ab = v.As<Napi::ArrayBuffer>();
    return DeviceBuffer::WrapHost(env, ab, 0, static_cast<size_t>(bytes));
  }
  if (v.IsTypedArray()) {
    napi_typedarray_type type;
    size_t length = 0, offset = 0;
    void* data = nullptr;
    napi_value ab = nullptr;
    if (napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &offset) == napi_ok && ab != nullptr &&
        Napi::Value(env, ab).IsArrayBuffer()) {
      return DeviceBuffer::WrapHost(env, Napi::Value(env, ab).As<Napi::ArrayBuffer>(), offset, static_cast<size_t>(bytes));
    }
    env.GetAndClearPendingException();
  }
  ThrowInvalid(env, op, "array", "a TypedArray over an ArrayBuffer, or an ArrayBuffer", describe(v));
}

// A buffer argument and the byte offset argument after it (dst, dstOffset; src, srcOffset).
struct BufferAt {
  DeviceBuffer* buf;
  int64_t offset;
  uint8_t* data() const { return static_cast<uint8_t*>(buf->data()) + offset; }
  int device() const { return buf->device(); }
};
BufferAt GetBufferAt(Napi::Env env, const std::string& op, const Napi::CallbackInfo& info, size_t at,
                     const std::string& name) {
  DeviceBuffer* buf = GetBuffer(env, op, info[at], name);
  return {buf, GetInt(env, op, info[at + 1], name + "Offset", 0, kMaxBytes)};
}

// Checks that [offset, offset + bytes) lies inside the buffer.
void CheckRange(Napi::Env env, const std::string& op, const BufferAt& at, int64_t bytes, const std::string& name) {
  const int64_t offset = at.offset;
  if (offset < 0 || bytes < 0 || static_cast<uint64_t>(offset) + static_cast<uint64_t>(bytes) > at.buf->bytes()) {
    ThrowInvalid(env, op, name, "a byte range inside " + std::to_string(at.buf->bytes()) + " bytes",
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
    // The view's real extent, as V8 keeps it (a detached or shrunk buffer reads as 0 elements),
    // never a length a JS object claims.
    size_t element = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: element = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: element = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: element = 8; break;
      default: element = 1;
    }
    if (data == nullptr) length = 0;
    return {static_cast<uint8_t*>(data), length * element};
  }
  if (v.IsDataView()) {
    Napi::DataView dv = v.As<Napi::DataView>();
    return {static_cast<uint8_t*>(dv.Data()), dv.ByteLength()};
  }
  if (v.IsArrayBuffer()) {
    Napi::ArrayBuffer ab = v.As<Napi::ArrayBuffer>();
    return {static_cast<uint8_t*>(ab.Data()), ab.ByteLength()};
  }
  ThrowInvalid(env, op, name, "a TypedArray or ArrayBuffer", describe(v));
}

// copyFromHost(dst, dstOffset, src, stream?, bytes?): host -> buffer. Returns once src may be
// reused. With `bytes`, src must hold exactly that many bytes now: the caller's length was read
// before user code (a getter, a lying TypedArray subclass) could detach or shrink the source.
Napi::Value CopyFromHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "copyFromHost";
  BufferAt dst = GetBufferAt(env, op, info, 0, "dst");
  cudaStream_t stream = GetStream(env, op, info[3]);
  (void)stream;
  int64_t expected = info.Length() > 4 && !info[4].IsUndefined() ? GetInt(env, op, info[4], "bytes", 0, kMaxBytes) : -1;
  // read last: nothing after this runs user code
  HostView src = GetHostView(env, op, info[2], "src");
  if (expected >= 0 && static_cast<int64_t>(src.bytes) != expected) {
    ThrowInvalid(env, op, "src", "a source of " + std::to_string(expected) + " bytes",
                 std::to_string(src.bytes) + " bytes (detached, resized or shorter than it claimed)");
  }
  CheckRange(env, op, dst, static_cast<int64_t>(src.bytes), "dst");
  if (src.bytes == 0) return env.Undefined();
  note_transfer(dst.device(), false, static_cast<int64_t>(src.bytes));
  if (dst.device() < 0) {
    std::memcpy(dst.data(), src.data, src.bytes);
    return env.Undefined();
  }
#ifdef KVSIFT_WITH_CUDA
  DeviceGuard guard(dst.device());
  CheckCuda(env, op, guard.error());
  // From pageable memory cudaMemcpyAsync returns once the source is staged, so the JS array may
  // be reused or collected right after.
  CheckCuda(env, op, cudaMemcpyAsync(dst.data(), src.data, src.bytes, cudaMemcpyHostToDevice, stream));
  dst.buf->set_stream(stream);
#endif
  return env.Undefined();
}

// copyToHost(src, srcOffset, dst, stream?): buffer -> host, complete on return.
Napi::Value CopyToHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "copyToHost";
  BufferAt src = GetBufferAt(env, op, info, 0, "src");
  HostView dst = GetHostView(env, op, info[2], "dst");
  cudaStream_t stream = GetStream(env, op, info[3]);
  (void)stream;
  CheckRange(env, op, src, static_cast<int64_t>(dst.bytes), "src");
  if (dst.bytes == 0) return env.Undefined();
  note_transfer(src.device(), true, static_cast<int64_t>(dst.bytes));
  if (src.device() < 0) {
    std::memcpy(dst.data, src.data(), dst.bytes);
    return env.Undefined();
  }
#ifdef KVSIFT_WITH_CUDA
  DeviceGuard guard(src.device());
  CheckCuda(env, op, guard.error());
  CheckCuda(env, op, cudaMemcpyAsync(dst.data, src.data(), dst.bytes, cudaMemcpyDeviceToHost, stream));
  CheckCuda(env, op, cudaStreamSynchronize(stream));
#endif
  return env.Undefined();
}

// ---- asynchronous work ------------------------------------------------------------------------
// An async job's JS-thread half never throws: it checks every N-API status itself, and when the
// environment is going away (worker.terminate(), process.exit() inside a worker, both of which
// still run pending completions while JS can no longer run) it drops the result instead of
// throwing across the C boundary, which would abort the whole process.
class AsyncJob {
 public:
  virtual ~AsyncJob() = default;

  // Queues the job and returns its promise; on failure (the environment is closing) throws.
  static Napi::Value Start(Napi::Env env, std::unique_ptr<AsyncJob> job) {
    napi_value promise = nullptr, name = nullptr;
    if (napi_create_promise(env, &job->deferred_, &promise) != napi_ok ||
        napi_create_string_utf8(env, "kvsift", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_create_async_work(env, nullptr, name, ExecuteThunk, CompleteThunk, job.get(), &job->work_) != napi_ok) {
      throw Napi::Error::New(env);
    }
    if (napi_queue_async_work(env, job->work_) != napi_ok) {
      napi_delete_async_work(env, job->work_);
      throw Napi::Error::New(env);
    }
    job.release();  // owned by the work now; CompleteThunk deletes it
    return Napi::Value(env, promise);
  }

 protected:
  explicit AsyncJob(std::string op) : op_(std::move(op)) {}
  // On a libuv thread; nothing in it may touch JS.
  virtual void Execute() = 0;
  // On the JS thread, with a live environment: the value to resolve with (nullptr after setting
  // custom_code_: the promise rejects with it).
  virtual napi_value Result(napi_env env) {
    napi_value u = nullptr;
    napi_get_undefined(env, &u);
    return u;
  }
  // On the JS thread, always exactly once, even when the environment is closing: drop references.
  virtual void Release(napi_env env) {}

  std::string op_;
  int cuda_error_ = 0;
  std::string custom_code_, custom_message_;

 private:
  static void ExecuteThunk(napi_env, void* data) {
    AsyncJob* job = static_cast<AsyncJob*>(data);
    try {
      job->Execute();
    } catch (const std::bad_alloc&) {
      job->custom_code_ = code::kOutOfMemory;
      job->custom_message_ = "out of host memory";
    } catch (...) {
      job->custom_code_ = code::kUnsupported;
      job->custom_message_ = "an internal error";
    }
  }

  static void CompleteThunk(napi_env env, napi_status status, void* data) {
    AsyncJob* job = static_cast<AsyncJob*>(data);
    if (status == napi_ok && EnvAlive(env)) {
      napi_handle_scope scope = nullptr;
      if (napi_open_handle_scope(env, &scope) == napi_ok) {
        try {
          job->Settle(env);
        } catch (...) {
          // a Napi::Error from a failed call: the environment is closing; nobody is waiting
        }
        // an exception a failed call left behind has no JS caller to go to
        bool pending = false;
        if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
          napi_value ignored = nullptr;
          napi_get_and_clear_last_exception(env, &ignored);
        }
        napi_close_handle_scope(env, scope);
      }
    }
    try {
      job->Release(env);
    } catch (...) {
    }
    napi_delete_async_work(env, job->work_);
    delete job;
  }

  void Settle(napi_env env) {
    Napi::Env e(env);
    if (cuda_error_ != 0) {
      Napi::Error err = MakeError(e, cuda_is_out_of_memory(cuda_error_) ? code::kOutOfMemory : code::kCuda,
                                  op_ + ": " + cuda_error_name(cuda_error_) + ": " + cuda_error_string(cuda_error_));
      err.Set("cudaError", Napi::String::New(e, cuda_error_name(cuda_error_)));
      err.Set("op", Napi::String::New(e, op_));
      napi_reject_deferred(env, deferred_, err.Value());
    } else if (!custom_code_.empty()) {
      napi_reject_deferred(env, deferred_, MakeError(e, custom_code_.c_str(), op_ + ": " + custom_message_).Value());
    } else {
      napi_value result = Result(env);
      if (result != nullptr) {
        napi_resolve_deferred(env, deferred_, result);
      } else if (!custom_code_.empty()) {
        // the result itself could not be made (host memory for the ArrayBuffer)
        napi_reject_deferred(env, deferred_, MakeError(e, custom_code_.c_str(), op_ + ": " + custom_message_).Value());
      }
    }
  }

  napi_deferred deferred_ = nullptr;
  napi_async_work work_ = nullptr;
};

// A promise already rejected with a KvsiftError (allocation failures of async calls reject, as
// every other failure of theirs does, instead of throwing or aborting).
Napi::Value Rejected(Napi::Env env, const char* code, const std::string& message) {
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  d.Reject(MakeError(env, code, message).Value());
  return d.Promise();
}

// Host memory for an async read's result: malloc'ed (so failure is a null, not an abort inside
// V8's allocator) and handed to V8 as an external ArrayBuffer.
struct HostResult {
  void* data = nullptr;
  size_t bytes = 0;
  bool Allocate(size_t n) {
    bytes = n;
    data = std::malloc(n == 0 ? 1 : n);
    return data != nullptr;
  }
  // Moves the memory into a new ArrayBuffer (nullptr on failure; the memory is then still ours).
  napi_value Hand(napi_env env) {
    napi_value ab = nullptr;
    if (napi_create_external_arraybuffer(
            env, data, bytes, [](napi_env, void* p, void*) { std::free(p); }, nullptr, &ab) == napi_ok) {
      data = nullptr;
      return ab;
    }
    // runtimes that forbid external buffers: copy into a V8-owned one
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    void* into = nullptr;
    if (napi_create_arraybuffer(env, bytes, &into, &ab) != napi_ok) return nullptr;
    if (bytes != 0) std::memcpy(into, data, bytes);
    return ab;
  }
  ~HostResult() { std::free(data); }
};

#ifdef KVSIFT_WITH_CUDA
// A CUDA read: the bytes were snapshotted, in stream order at the call, into a temporary device
// buffer; this waits for that copy (off the JS thread) and brings it to the host.
class CudaReadJob : public AsyncJob {
 public:
  CudaReadJob(int device, void* snapshot, size_t bytes, cudaStream_t stream)
      : AsyncJob("toArrayAsync"), device_(device), snapshot_(snapshot), bytes_(bytes), stream_(stream) {}
  HostResult host;

 protected:
  void Execute() override {
    cuda_error_ = cudaSetDevice(device_);
    if (cuda_error_ == 0 && bytes_ != 0) {
      cuda_error_ = cudaMemcpyAsync(host.data, snapshot_, bytes_, cudaMemcpyDeviceToHost, stream_);
    }
    if (cuda_error_ == 0) cuda_error_ = cudaStreamSynchronize(stream_);
  }
  napi_value Result(napi_env env) override {
    napi_value ab = host.Hand(env);
    if (ab == nullptr) {
      custom_code_ = code::kOutOfMemory;
      custom_message_ = "out of host memory for " + std::to_string(bytes_) + " bytes";
    }
    return ab;
  }
  void Release(napi_env) override { device_free(device_, snapshot_, bytes_, stream_); }

 private:
  int device_;
  void* snapshot_;
  size_t bytes_;
  cudaStream_t stream_;
};
#endif

// copyToHostAsync(src, srcOffset, bytes, stream?) -> Promise<ArrayBuffer>. The result is the
// buffer as of the call, as stream order gives on CUDA: work issued after the call (an in-place
// op, a dispose) never shows in it. The CPU backend copies at once (its ops complete on return,
// so this is the same snapshot, and no read can race a later op); CUDA copies, in stream order,
// into a temporary device buffer and brings that to the host off the JS thread. Allocation
// failures reject with ERR_OUT_OF_MEMORY.
Napi::Value CopyToHostAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "copyToHostAsync";
  BufferAt src = GetBufferAt(env, op, info, 0, "src");
  int64_t bytes = GetInt(env, op, info[2], "bytes", 0, kMaxBytes);
  cudaStream_t stream = GetStream(env, op, info[3]);
  CheckRange(env, op, src, bytes, "src");
  note_transfer(src.device(), true, bytes);
  auto host_oom = [&] {
    return Rejected(env, code::kOutOfMemory,
                    "toArrayAsync: out of host memory for a copy of " + std::to_string(bytes) + " bytes");
  };
  const uint8_t* from = src.data();
  if (src.device() < 0) {
    HostResult host;
    if (!host.Allocate(static_cast<size_t>(bytes))) return host_oom();
    if (bytes != 0) std::memcpy(host.data, from, static_cast<size_t>(bytes));
    napi_value ab = host.Hand(env);
    if (ab == nullptr) return host_oom();
    Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
    d.Resolve(Napi::Value(env, ab));
    return d.Promise();
  }
#ifdef KVSIFT_WITH_CUDA
  void* snapshot = nullptr;
  int err = bytes == 0 ? 0 : device_alloc(src.device(), static_cast<size_t>(bytes), stream, &snapshot);
  if (err != 0) {
    if (cuda_is_out_of_memory(err)) {
      return Rejected(env, code::kOutOfMemory, "toArrayAsync: out of memory on " + device_name(src.device()) +
                                                   " for a snapshot of " + std::to_string(bytes) + " bytes");
    }
    ThrowCuda(env, "toArrayAsync", err);
  }
  auto job = std::make_unique<CudaReadJob>(src.device(), snapshot, static_cast<size_t>(bytes), stream);
  if (!job->host.Allocate(static_cast<size_t>(bytes))) {
    device_free(src.device(), snapshot, static_cast<size_t>(bytes), stream);
    return host_oom();
  }
  if (bytes != 0) {
    DeviceGuard guard(src.device());
    int copy_err = guard.error();
    if (copy_err == 0) copy_err = cudaMemcpyAsync(snapshot, from, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, stream);
    if (copy_err != 0) {
      device_free(src.device(), snapshot, static_cast<size_t>(bytes), stream);
      ThrowCuda(env, "toArrayAsync", copy_err);
    }
    src.buf->set_stream(stream);
  }
  return AsyncJob::Start(env, std::move(job));
#else
  (void)stream;
  return env.Undefined();
#endif
}

// copyBuffer(dst, dstOffset, src, srcOffset, bytes, stream?): any device to any device.
Napi::Value CopyBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "copy";
  BufferAt dst = GetBufferAt(env, op, info, 0, "dst");
  BufferAt src = GetBufferAt(env, op, info, 2, "src");
  int64_t bytes = GetInt(env, op, info[4], "bytes", 0, kMaxBytes);
  cudaStream_t stream = GetStream(env, op, info[5]);
  (void)stream;
  CheckRange(env, op, dst, bytes, "dst");
  CheckRange(env, op, src, bytes, "src");
  if (bytes == 0) return env.Undefined();
  // Between a CUDA device and host memory: a transfer, counted on the CUDA side.
  if (dst.device() < 0 && src.device() >= 0) note_transfer(src.device(), true, bytes);
  if (dst.device() >= 0 && src.device() < 0) note_transfer(dst.device(), false, bytes);
  uint8_t* d = dst.data();
  const uint8_t* s = src.data();
  if (dst.device() < 0 && src.device() < 0) {
    std::memmove(d, s, static_cast<size_t>(bytes));
    return env.Undefined();
  }
#ifdef KVSIFT_WITH_CUDA
  int device = dst.device() >= 0 ? dst.device() : src.device();
  DeviceGuard guard(device);
  CheckCuda(env, op, guard.error());
  if (dst.device() >= 0 && src.device() >= 0 && dst.device() != src.device()) {
    CheckCuda(env, op, cudaMemcpyPeerAsync(d, dst.device(), s, src.device(), static_cast<size_t>(bytes), stream));
  } else {
    // One side at least is a CUDA device (host to host returned above).
    const cudaMemcpyKind kind = dst.device() < 0   ? cudaMemcpyDeviceToHost
                                : src.device() < 0 ? cudaMemcpyHostToDevice
                                                   : cudaMemcpyDeviceToDevice;
    CheckCuda(env, op, cudaMemcpyAsync(d, s, static_cast<size_t>(bytes), kind, stream));
  }
  // Device -> pageable host copies complete before returning; the rest are stream-ordered.
  if (dst.device() >= 0) dst.buf->set_stream(stream);
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

class SyncJob : public AsyncJob {
 public:
  SyncJob(int device, cudaStream_t stream, bool whole_device)
      : AsyncJob(whole_device ? "synchronize" : "stream.synchronize"), device_(device), stream_(stream),
        whole_device_(whole_device) {}

 protected:
  void Execute() override {
    if (device_ < 0) return;
#ifdef KVSIFT_WITH_CUDA
    cuda_error_ = cudaSetDevice(device_);
    if (cuda_error_ != 0) return;
    cuda_error_ = whole_device_ ? cudaDeviceSynchronize() : cudaStreamSynchronize(stream_);
    if (cuda_error_ != 0) return;
    // The device's error flags that kernels raise instead of failing, in the order they are read;
    // the first one raised rejects the promise with its op's message.
    const std::string on = " on cuda:" + std::to_string(device_);
    const struct {
      cudaError_t (*read_and_clear)(int* had_error, cudaStream_t stream);
      std::string message;
    } flags[] = {
        {cuda::read_and_clear_index_error,
         "a gather" + on + " met positions outside [0, N); their rows were written as zeros"},
        {cuda::read_and_clear_retain_error,
         "a KvCache.retain" + on +
             " met positions that were out of range, repeated or unsorted; it wrote nothing, so "
             "keys, values, positions and the `also` tensors are unchanged"},
    };
    for (const auto& flag : flags) {
      int raised = 0;
      cuda_error_ = flag.read_and_clear(&raised, stream_);
      if (cuda_error_ != 0) return;
      if (raised) {
        custom_code_ = code::kIndexOutOfRange;
        custom_message_ = flag.message;
        return;
      }
    }
#endif
  }

 private:
  int device_;
  cudaStream_t stream_;
  bool whole_device_;
};

// A promise that settles once the work issued so far on `stream` (or, whole_device, on the whole
// device) is done. On the CPU every op completed on return: it resolves at once, with no thread
// involved.
Napi::Value Synchronized(Napi::Env env, int device, cudaStream_t stream, bool whole_device) {
  if (device < 0) {
    Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  return AsyncJob::Start(env, std::make_unique<SyncJob>(device, stream, whole_device));
}

Napi::Value StreamSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = GetDevice(env, "stream.synchronize", info[0], "device");
  return Synchronized(env, device, GetStream(env, "stream.synchronize", info[1]), false);
}

Napi::Value DeviceSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Synchronized(env, GetDevice(env, "synchronize", info[0], "device"), nullptr, true);
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
  o.Set("cachedBytes", static_cast<double>(s.cached_bytes));
  o.Set("toHostBytes", static_cast<double>(s.to_host_bytes));
  o.Set("fromHostBytes", static_cast<double>(s.from_host_bytes));
  return o;
}

Napi::Value TrimMemoryJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = GetDevice(env, "trimMemory", info[0], "device");
  CheckCuda(env, "trimMemory", trim_memory(device));
  return env.Undefined();
}

}  // namespace

void RegisterCore(Napi::Env env, Napi::Object exports) {
  AddonData* data = new AddonData();
  AttachEnv();
  env.SetInstanceData<AddonData>(data);
  data->set_prototype_of =
      Napi::Persistent(env.Global().Get("Object").As<Napi::Object>().Get("setPrototypeOf").As<Napi::Function>());
  // Completions that arrive after the environment's cleanup hooks ran settle nothing (earlier ones,
  // flushed while JS can no longer run, find their N-API calls failing and drop the result).
  napi_add_env_cleanup_hook(env, [](void* d) { static_cast<AddonData*>(d)->closing = true; }, data);
  exports.Set("DeviceBuffer", DeviceBuffer::Init(env));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo, "buildInfo"));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCount, "cudaDeviceCount"));
  exports.Set("cudaDeviceInfo", Napi::Function::New(env, CudaDeviceInfoJs, "cudaDeviceInfo"));
  exports.Set("alloc", Napi::Function::New(env, Alloc, "alloc"));
  exports.Set("wrapPointer", Napi::Function::New(env, WrapPointer, "wrapPointer"));
  exports.Set("wrapHost", Napi::Function::New(env, WrapHost, "wrapHost"));
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
  exports.Set("trimMemory", Napi::Function::New(env, TrimMemoryJs, "trimMemory"));
}

}  // namespace kvsift
