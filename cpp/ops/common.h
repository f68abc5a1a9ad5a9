// kvsift/cpp/ops/common.h: the argument plumbing every op entry shares (cpp/ops/<family>.cc):
// options objects, layouts and views, shape checks, uploaded lengths, stream-ordered temporaries
// and the CPU/CUDA dispatch tail. An op entry reads its tensors (outputs are allocated by the TS
// layer), re-checks every shape and bound that memory safety depends on, fills its params struct
// and dispatches to the CPU backend or the CUDA launcher on the inputs' device.
#pragma once
#include <napi.h>

#include <array>
#include <cfloat>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
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

// Own properties only, snapshotted once (see OwnSnapshot): Object.prototype pollution never
// reaches an op, and a getter cannot answer one way to a check and another way later.
inline Napi::Object GetOptions(Napi::Env env, const std::string& op, Napi::Value v) {
  if (!v.IsObject()) ThrowInvalid(env, op, "options", "an options object", describe(v));
  return OwnSnapshot(env, v.As<Napi::Object>());
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

// Records `stream` on the tensors an op used, so their frees are ordered after its work. An
// optional tensor the call did not get (a default TensorArg, no buffer) is skipped. Entries that
// go through Call::run need no list: it records every tensor the Call read.
inline void Touch(cudaStream_t stream, std::initializer_list<const TensorArg*> ts) {
  for (const TensorArg* t : ts) {
    if (t->buffer != nullptr) t->buffer->set_stream(stream);
  }
}

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
  // the stream recorded on the tensors it touched (their frees are ordered on it; see Touch).
  template <typename CpuFn, typename CudaFn>
  void run(CpuFn&& cpu_fn, CudaFn&& cuda_fn, std::initializer_list<const TensorArg*> touched) {
    if (device < 0) {
      cpu(cpu_fn);
      return;
    }
    cuda_result(cuda_fn());
    Touch(stream, touched);
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


inline constexpr std::initializer_list<DType> kFloatTypes = {DType::F32, DType::F16, DType::BF16};

// Rows view of a tensor [B, ..., M]: R rows of M, in batches (the first dim) of rows_per_batch
// rows; a 1-D tensor is one batch of one row.
struct Rows {
  int64_t R, M, batch, rows_per_batch;
};
inline Rows RowsOf(const TensorArg& t) {
  Rows r{};
  r.M = t.rank() == 0 ? 1 : t.shape.back();
  r.R = r.M == 0 ? 0 : t.numel / r.M;
  r.batch = t.rank() == 1 ? 1 : t.shape[0];
  const int64_t rpb = t.rank() == 1 ? 1 : (r.batch == 0 ? 1 : r.R / r.batch);
  r.rows_per_batch = rpb == 0 ? 1 : rpb;
  return r;
}

// A tensor argument: its position, name (in messages), rank (or kAnyRank) and allowed dtypes
// (empty: any).
struct TensorSpec {
  int at;
  const char* name;
  size_t rank;
  std::initializer_list<DType> types;
};

// One call of an op entry: its name, arguments and options object, and the readers every entry
// uses. The checks run in the entries' order: the options, the layout, the tensors, their common
// device, the stream (the argument after the options), then the op's own.
class Call {
 public:
  Call(const Napi::CallbackInfo& info, std::string op_name, int options_at)
      : env(info.Env()), op(std::move(op_name)), o(GetOptions(env, op, info[options_at])), info_(info), options_at_(options_at) {}

  int layout() const { return Layout(env, op, o); }

  // An entry behind several public ops takes the name its options select (decode.sparseAttention,
  // quest.update, the callers of raggedGather); until then its messages use the first name.
  void serve_as(std::string name) { op = std::move(name); }

  // The tensors, then `device` (they must share it) and `stream`.
  template <size_t N>
  std::array<TensorArg, N> tensors(const TensorSpec (&specs)[N]) {
    std::array<TensorArg, N> t;
    for (size_t i = 0; i < N; ++i) t[i] = read_tensor(info_[specs[i].at], specs[i].name, specs[i].rank, specs[i].types);
    device = same_device(t, std::make_index_sequence<N>());
    stream = GetStream(env, op, info_[options_at_ + 1]);
    return t;
  }

  // A tensor passed inside the options (lse, positions, a ragged layout's indptr): checked like
  // the positional ones; its device is the entry's to check.
  TensorArg option_tensor(Napi::Value v, const std::string& name, size_t rank, std::initializer_list<DType> types) const {
    return read_tensor(v, name, rank, types);
  }

  int64_t integer(const char* name, int64_t lo, int64_t hi) const { return GetInt(env, op, o.Get(name), name, lo, hi); }
  double number(const char* name) const { return GetNumber(env, op, o.Get(name), name); }
  // A number the f32 kernels take: finite and representable in f32 (1e-300 is not).
  float f32(const char* name) const { return GetF32(env, op, o.Get(name), name); }
  uint64_t u64(const char* name) const { return GetU64(env, op, o.Get(name), name); }
  bool has(const char* name) const { return !o.Get(name).IsUndefined(); }
  Napi::Value option(const char* name) const { return o.Get(name); }

  // Per-batch lengths option `name`, each in [lo, hi], uploaded to the call's device.
  Lengths lengths(const char* name, int64_t batch, int64_t lo, int64_t hi) const {
    return Lengths(env, op, o.Get(name), name, batch, lo, hi, device, stream);
  }
  void expect_shape(const TensorArg& t, const std::string& name, const std::vector<int64_t>& want) const {
    ExpectShape(env, op, t, name, want);
  }
  [[noreturn]] void invalid(const std::string& name, const std::string& expected, const std::string& received) const {
    ThrowInvalid(env, op, name, expected, received);
  }
  // A stream-ordered workspace of `bytes` on the call's device.
  Temp workspace(size_t bytes) const { return Temp(env, op, device, bytes, stream); }

  // The CPU function or the CUDA launcher (see Dispatch::run); the entry's return value. On
  // CUDA, every tensor the call read (positional or option) gets the stream recorded, so its free
  // waits for this launch: an entry cannot forget an optional tensor.
  template <typename CpuFn, typename CudaFn>
  Napi::Value run(CpuFn&& cpu_fn, CudaFn&& cuda_fn) {
    Dispatch d(env, op, device, stream);
    d.run(std::forward<CpuFn>(cpu_fn), std::forward<CudaFn>(cuda_fn), {});
    if (device >= 0) {
      for (const ReadTensor& r : read_) r.buffer->set_stream(stream);
    }
    return env.Undefined();
  }

  // The same with a stream-ordered workspace of bytes() bytes, handed to cuda_fn(void*).
  template <typename CpuFn, typename BytesFn, typename CudaFn>
  Napi::Value run(CpuFn&& cpu_fn, BytesFn&& bytes, CudaFn&& cuda_fn) {
    return run(std::forward<CpuFn>(cpu_fn), [&] {
      Temp ws = workspace(bytes());
      return cuda_fn(ws.get());
    });
  }

  // The same for a CPU function that returns how many indices fell out of range (writing their
  // rows as zeros): a count > 0 throws ERR_INDEX_OUT_OF_RANGE, "<op>: <count> <what>". A CUDA
  // kernel raises the device's out-of-range flag instead, which synchronize() reports.
  template <typename CpuFn, typename CudaFn>
  Napi::Value run_counted(CpuFn&& cpu_fn, CudaFn&& cuda_fn, const std::string& what) {
    int64_t bad = 0;
    run([&] { bad = cpu_fn(); }, std::forward<CudaFn>(cuda_fn));
    if (bad != 0) Throw(env, code::kIndexOutOfRange, op + ": " + std::to_string(bad) + " " + what);
    return env.Undefined();
  }

  Napi::Env env;
  std::string op;
  const Napi::Object o;
  int device = -1;
  cudaStream_t stream = nullptr;

 private:
  template <size_t N, size_t... I>
  int same_device(const std::array<TensorArg, N>& t, std::index_sequence<I...>) const {
    return SameDevice(env, op, {&t[I]...});
  }
  // Reads a tensor and remembers its buffer, pinned until the call ends, for run()'s stream record.
  TensorArg read_tensor(Napi::Value v, const std::string& name, size_t rank, std::initializer_list<DType> types) const {
    TensorArg t = GetTensor(env, op, v, name, rank, types);
    read_.push_back({t.buffer, t.pin});
    return t;
  }
  struct ReadTensor {
    DeviceBuffer* buffer;
    std::shared_ptr<void> pin;
  };
  const Napi::CallbackInfo& info_;
  int options_at_;
  mutable std::vector<ReadTensor> read_;
};

// The two tensors of the row ops (topk's scores, pool's votes): an f32 input of rank >= 1, seen
// as rows, and the op's output; their shapes are the op's to check.
struct RowsInOut {
  TensorArg in, out;
  Rows rows;
};
inline RowsInOut F32RowsInOut(Call& c, const char* in_name) {
  auto [in, out] = c.tensors({{0, in_name, kAnyRank, {}}, {1, "out", kAnyRank, {}}});
  if (in.dtype != DType::F32 || in.rank() < 1) c.invalid(in_name, "an f32 tensor of rank >= 1", dtype_name(in.dtype));
  const Rows rows = RowsOf(in);
  return {std::move(in), std::move(out), rows};
}

// Queries [B, Hq, T, D] and keys [B, Hkv, N, D] of the attention ops: their logical dims in the
// call's layout.
struct QueryKeys {
  Dims qd, kd;
};

// The arguments of the attention-score entries (snapkvScores, accumulate): queries and keys of one
// dtype in the call's layout, and the f32 [B, H, N]-like tensor `scores_name` they write.
struct AttentionScoreArgs {
  int layout;
  TensorArg q, k, scores;
  QueryKeys d;
};
inline AttentionScoreArgs GetAttentionScoreArgs(Call& c, const char* scores_name) {
  const int layout = c.layout();
  auto [q, k, scores] = c.tensors({{0, "queries", 4, kFloatTypes}, {1, "keys", 4, kFloatTypes}, {2, scores_name, 3, {DType::F32}}});
  if (q.dtype != k.dtype) c.invalid("queries.dtype", std::string("keys' dtype ") + dtype_name(k.dtype), dtype_name(q.dtype));
  const QueryKeys d{DimsOf(q, layout), DimsOf(k, layout)};
  return {layout, std::move(q), std::move(k), std::move(scores), d};
}

// Keys [B, Hkv, N, D] (decode's, Quest's) whose token and (batch, head) indices the kernels
// take in int32: checked, then narrowed.
struct KeyDims32 {
  int32_t B, H, N, D;
};
inline KeyDims32 KeysInt32(const Call& c, const TensorArg& k, const Dims& kd) {
  if (kd.S > INT32_MAX || kd.B * kd.H > INT32_MAX) c.invalid("keys.shape", "N and B*Hkv below 2^31", ShapeText(k.shape));
  return {static_cast<int32_t>(kd.B), static_cast<int32_t>(kd.H), static_cast<int32_t>(kd.S), static_cast<int32_t>(kd.D)};
}

// The fields the attention ops' params share (SnapkvScoresParams, AccumulateParams, DecodeParams),
// with the softmax scale 1/sqrt(D).
template <typename Params>
void SetQueryKeys(Params& p, const TensorArg& q, const TensorArg& k, int layout, const QueryKeys& d,
                  const int32_t* seq_lens) {
  p.q = ViewOf(q, layout);
  p.k = ViewOf(k, layout);
  p.dtype = q.dtype;
  p.B = static_cast<int32_t>(d.kd.B);
  p.Hq = static_cast<int32_t>(d.qd.H);
  p.Hkv = static_cast<int32_t>(d.kd.H);
  p.N = static_cast<int32_t>(d.kd.S);
  p.D = static_cast<int32_t>(d.kd.D);
  p.seq_lens = seq_lens;
  p.scale = 1.0f / std::sqrt(static_cast<float>(d.kd.D));
}

// Keyformer's temperature (accumulate, decode's fused accumulation, the ragged accumulate): the
// kernels divide by it in f32, so it must be a normal f32 with a finite reciprocal there.
inline float F32Tau(const Call& c, double tau) {
  const float tau_f = static_cast<float>(tau);
  if (!(tau > 0) || !(tau_f >= FLT_MIN) || !std::isfinite(tau_f) || !std::isfinite(1.0f / tau_f)) {
    c.invalid("tau", "a positive number representable in f32", describe(c.option("tau")));
  }
  return tau_f;
}

// Keyformer's Gumbel noise, as the params that draw it name it (AccumulateParams, DecodeParams,
// RaggedAccumulateParams): the kind, then the Philox seed and step.
template <typename Params>
void SetNoise(const Call& c, Params& p) {
  p.noise = static_cast<NoiseKind>(c.integer("noise", 0, 1));
  p.seed = c.u64("seed");
  p.step = c.u64("step");
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
