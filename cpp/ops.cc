// kvsift/cpp/ops.cc: the op entry points. Each reads its tensors (outputs are allocated by the TS
// layer), re-checks every shape and bound that memory safety depends on, builds the params struct
// of cuda/params.h and dispatches to the CPU backend or the CUDA launcher on the inputs' device.
#include <napi.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "core.h"
#include "cpu/cpu_ops.h"
#include "errors.h"
#include "memory.h"
#include "runtime.h"
#ifdef KVSIFT_WITH_CUDA
#include "../cuda/launchers.h"
#endif

// A launcher call in CUDA builds; never reached (devices are all CPU) in C++-only ones.
#ifdef KVSIFT_WITH_CUDA
#define KVSIFT_CUDA_CALL(call) (call)
#else
#define KVSIFT_CUDA_CALL(call) 0
#endif

namespace kvsift {
namespace {

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

Napi::Object GetOptions(Napi::Env env, const std::string& op, Napi::Value v) {
  if (!v.IsObject()) ThrowInvalid(env, op, "options", "an options object", describe(v));
  return v.As<Napi::Object>();
}

int Layout(Napi::Env env, const std::string& op, Napi::Object o) {
  Napi::Value v = o.Get("layout");
  if (v.IsUndefined()) return 0;
  return static_cast<int>(GetInt(env, op, v, "layout", 0, 1));
}

// Logical [B, H, S, D] of a 4-D tensor in the given layout (bshd stores [B, S, H, D]).
struct Dims {
  int64_t B, H, S, D;
};
Dims DimsOf(const TensorArg& t, int layout) {
  if (layout == 0) return {t.dim(0), t.dim(1), t.dim(2), t.dim(3)};
  return {t.dim(0), t.dim(2), t.dim(1), t.dim(3)};
}
View4 ViewOf(const TensorArg& t, int layout) {
  Dims d = DimsOf(t, layout);
  if (layout == 0) return {t.data, d.H * d.S * d.D, d.S * d.D, d.D};
  return {t.data, d.S * d.H * d.D, d.D, d.H * d.D};
}
MutView4 MutViewOf(const TensorArg& t, int layout) {
  View4 v = ViewOf(t, layout);
  return {t.data, v.sB, v.sH, v.sS};
}

std::string ShapeText(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void ExpectShape(Napi::Env env, const std::string& op, const TensorArg& t, const std::string& name,
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
  void cuda_result(int err) { CheckCuda(env, op, err); }
  // The tail every op shares: the CPU backend, or the CUDA launcher with its error checked and
  // the stream recorded on the tensors it touched (their frees are ordered on it).
  template <typename CpuFn, typename CudaFn>
  void run(CpuFn&& cpu_fn, CudaFn&& cuda_fn, std::initializer_list<const TensorArg*> touched) {
    if (device < 0) {
      cpu(cpu_fn);
      return;
    }
    CheckCuda(env, op, cuda_fn());
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

[[maybe_unused]] void Touch(cudaStream_t stream, std::initializer_list<const TensorArg*> ts) {
  for (const TensorArg* t : ts) t->buffer->set_stream(stream);
}

constexpr std::initializer_list<DType> kFloatTypes = {DType::F32, DType::F16, DType::BF16};

// snapkvScores(queries, keys, out, { window, groupReduce, layout, seqLens?, lse? }, stream?)
Napi::Value SnapkvScores(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "snapkv.scores";
  Napi::Object o = GetOptions(env, op, info[3]);
  int layout = Layout(env, op, o);
  TensorArg q = GetTensor(env, op, info[0], "queries", 4, kFloatTypes);
  TensorArg k = GetTensor(env, op, info[1], "keys", 4, kFloatTypes);
  TensorArg out = GetTensor(env, op, info[2], "out", 3, {DType::F32});
  int device = SameDevice(env, op, {&q, &k, &out});
  cudaStream_t stream = GetStream(env, op, info[4]);
  if (q.dtype != k.dtype) ThrowInvalid(env, op, "queries.dtype", std::string("keys' dtype ") + dtype_name(k.dtype), dtype_name(q.dtype));
  Dims qd = DimsOf(q, layout), kd = DimsOf(k, layout);
  int64_t W = GetInt(env, op, o.Get("window"), "window", 1, kd.S);
  int64_t gr = GetInt(env, op, o.Get("groupReduce"), "groupReduce", 0, 3);
  if (qd.B != kd.B || qd.D != kd.D || qd.S != W || kd.H == 0 || qd.H % kd.H != 0) {
    ThrowInvalid(env, op, "queries.shape", "[B, Hq, W, D] matching keys with Hq a multiple of Hkv", ShapeText(q.shape));
  }
  int64_t hout = gr == 3 ? qd.H : kd.H;
  ExpectShape(env, op, out, "out", {kd.B, hout, kd.S - W});
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", kd.B, W, kd.S, device, stream);
  const float* lse = nullptr;
  TensorArg lse_t;
  if (!o.Get("lse").IsUndefined()) {
    lse_t = GetTensor(env, op, o.Get("lse"), "lse", 3, {DType::F32});
    SameDevice(env, op, {&q, &lse_t});
    ExpectShape(env, op, lse_t, "lse", {qd.B, qd.H, W});
    lse = static_cast<const float*>(lse_t.data);
  }
  SnapkvScoresParams p{};
  p.q = ViewOf(q, layout);
  p.k = ViewOf(k, layout);
  p.dtype = q.dtype;
  p.B = static_cast<int32_t>(kd.B);
  p.Hq = static_cast<int32_t>(qd.H);
  p.Hkv = static_cast<int32_t>(kd.H);
  p.N = static_cast<int32_t>(kd.S);
  p.W = static_cast<int32_t>(W);
  p.D = static_cast<int32_t>(kd.D);
  p.seq_lens = lens.ptr();
  p.lse = lse;
  p.group_reduce = static_cast<GroupReduce>(gr);
  p.scale = 1.0f / std::sqrt(static_cast<float>(kd.D));
  p.out = static_cast<float*>(out.data);
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::snapkv_scores(p); },
        [&] {
          Temp ws(env, op, device, KVSIFT_CUDA_CALL(cuda::snapkv_scores_workspace_bytes(p)), stream);
          return KVSIFT_CUDA_CALL(cuda::snapkv_scores(p, ws.get(), stream));
        },
        {&q, &k, &out});
  return env.Undefined();
}

// Rows view of a tensor: [..., M] as R rows of M.
void RowsOf(const TensorArg& t, int64_t* R, int64_t* M) {
  *M = t.rank() == 0 ? 1 : t.shape.back();
  *R = *M == 0 ? 0 : t.numel / *M;
}

// pool1d(input, out, { kernel, kind, lengths?, rowsPerBatch }, stream?)
Napi::Value Pool1d(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "snapkv.pool";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg in = GetTensor(env, op, info[0], "votes", kAnyRank, {});
  TensorArg out = GetTensor(env, op, info[1], "out", kAnyRank, {});
  (void)0;
  int device = SameDevice(env, op, {&in, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  if (in.dtype != DType::F32 || in.rank() < 1) ThrowInvalid(env, op, "votes", "an f32 tensor of rank >= 1", dtype_name(in.dtype));
  if (out.dtype != DType::F32 || out.shape != in.shape) ThrowInvalid(env, op, "out", "an f32 tensor shaped like votes", ShapeText(out.shape));
  if (in.data == out.data) ThrowInvalid(env, op, "out", "a tensor distinct from votes", "the same buffer");
  int64_t R, M;
  RowsOf(in, &R, &M);
  int64_t kernel = GetInt(env, op, o.Get("kernel"), "kernel", 1, 1 << 20);
  if (kernel % 2 == 0) ThrowInvalid(env, op, "kernel", "an odd integer", std::to_string(kernel));
  int64_t kind = GetInt(env, op, o.Get("kind"), "kind", 0, 1);
  int64_t batch = in.rank() == 1 ? 1 : in.shape[0];
  int64_t rpb = in.rank() == 1 ? 1 : (batch == 0 ? 1 : R / batch);
  Lengths lens(env, op, o.Get("lengths"), "lengths", batch, 0, M, device, stream);
  PoolParams p{static_cast<const float*>(in.data), static_cast<float*>(out.data), R, M, static_cast<int32_t>(kernel),
               static_cast<PoolKind>(kind), lens.ptr(), rpb == 0 ? 1 : rpb};
  if (in.rank() == 1) p.rows_per_batch = 1;
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::pool1d(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::pool1d(p, stream)); },
        {&in, &out});
  return env.Undefined();
}

// topk(input, out, { k, order, outRowStride, lengths? }, stream?): input [B, ..., M]; out holds
// R rows of outRowStride i32. lengths (per batch, the first dim) limit each row's valid entries.
Napi::Value Topk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "topk";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg in = GetTensor(env, op, info[0], "scores", kAnyRank, {});
  TensorArg out = GetTensor(env, op, info[1], "out", kAnyRank, {});
  int device = SameDevice(env, op, {&in, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  if (in.dtype != DType::F32 || in.rank() < 1) ThrowInvalid(env, op, "scores", "an f32 tensor of rank >= 1", dtype_name(in.dtype));
  if (out.dtype != DType::I32) ThrowInvalid(env, op, "out.dtype", "i32", dtype_name(out.dtype));
  int64_t R, M;
  RowsOf(in, &R, &M);
  int64_t k = GetInt(env, op, o.Get("k"), "k", 1, std::max<int64_t>(M, 1));
  int64_t stride = o.Get("outRowStride").IsUndefined() ? k : GetInt(env, op, o.Get("outRowStride"), "outRowStride", k, int64_t{1} << 31);
  int64_t order = GetInt(env, op, o.Get("order"), "order", 0, 1);
  if (out.numel < R * stride) ThrowInvalid(env, op, "out", "at least " + std::to_string(R * stride) + " elements", std::to_string(out.numel));
  int64_t batch = in.rank() == 1 ? 1 : in.shape[0];
  int64_t rpb = in.rank() == 1 ? 1 : (batch == 0 ? 1 : R / batch);
  Lengths lens(env, op, o.Get("lengths"), "lengths", batch, k, M, device, stream);
  TopkParams p{static_cast<const float*>(in.data), static_cast<int32_t*>(out.data), R, M, static_cast<int32_t>(k), stride,
               static_cast<TopkOrder>(order), lens.ptr(), rpb == 0 ? 1 : rpb};
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::topk(p); },
        [&] {
          Temp ws(env, op, device, KVSIFT_CUDA_CALL(cuda::topk_workspace_bytes(p)), stream);
          return KVSIFT_CUDA_CALL(cuda::topk(p, ws.get(), stream));
        },
        {&in, &out});
  return env.Undefined();
}

// gather(cache, positions, out, { layout, group }, stream?): positions i32 [B, Hp, K] with
// Hp = Hc * group (per head) or Hp = 1 (one selection broadcast to every head).
Napi::Value Gather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "gather";
  Napi::Object o = GetOptions(env, op, info[3]);
  int layout = Layout(env, op, o);
  TensorArg cache = GetTensor(env, op, info[0], "cache", 4, {});
  TensorArg pos = GetTensor(env, op, info[1], "positions", 3, {DType::I32});
  TensorArg out = GetTensor(env, op, info[2], "out", 4, {});
  int device = SameDevice(env, op, {&cache, &pos, &out});
  cudaStream_t stream = GetStream(env, op, info[4]);
  int64_t group = GetInt(env, op, o.Get("group"), "group", 1, 1 << 16);
  Dims cd = DimsOf(cache, layout);
  int64_t K = pos.dim(2);
  int64_t hout = cd.H * group;
  if (pos.dim(0) != cd.B || (pos.dim(1) != hout && pos.dim(1) != 1)) {
    ThrowInvalid(env, op, "positions.shape", "[B, H, K] or [B, 1, K] matching the cache", ShapeText(pos.shape));
  }
  if (out.dtype != cache.dtype) ThrowInvalid(env, op, "out.dtype", dtype_name(cache.dtype), dtype_name(out.dtype));
  std::vector<int64_t> want = layout == 0 ? std::vector<int64_t>{cd.B, hout, K, cd.D} : std::vector<int64_t>{cd.B, K, hout, cd.D};
  ExpectShape(env, op, out, "out", want);
  GatherParams p{};
  p.cache = ViewOf(cache, layout);
  p.out = MutViewOf(out, layout);
  p.dtype = cache.dtype;
  p.B = static_cast<int32_t>(cd.B);
  p.Hc = static_cast<int32_t>(cd.H);
  p.N = static_cast<int32_t>(cd.S);
  p.D = static_cast<int32_t>(cd.D);
  p.K = static_cast<int32_t>(K);
  p.group = static_cast<int32_t>(group);
  p.positions = static_cast<const int32_t*>(pos.data);
  p.pos_sB = pos.dim(1) * K;
  p.pos_sH = pos.dim(1) == 1 ? 0 : K;
  Dispatch d(env, op, device, stream);
  if (device < 0) {
    // Check every position before writing anything: a failed op leaves `out` untouched.
    const int32_t* pp = p.positions;
    int64_t bad = 0;
    for (int64_t i = 0; i < pos.numel; ++i) bad += (pp[i] < 0 || pp[i] >= cd.S) ? 1 : 0;
    if (bad == 0) bad = d.cpu([&] { return cpu::gather(p); });
    if (bad != 0) {
      Throw(env, code::kIndexOutOfRange,
            op + ": " + std::to_string(bad) + " positions fall outside [0, " + std::to_string(cd.S) + ")");
    }
  } else {
#ifdef KVSIFT_WITH_CUDA
    d.cuda_result(cuda::gather(p, stream));
    Touch(stream, {&cache, &pos, &out});
#endif
  }
  return env.Undefined();
}

// fillWindow(positions, { window, n, rowStride, rowsPerBatch, seqLens? }, stream?)
Napi::Value FillWindow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "fillWindow";
  Napi::Object o = GetOptions(env, op, info[1]);
  TensorArg pos = GetTensor(env, op, info[0], "positions", kAnyRank, {DType::I32});
  cudaStream_t stream = GetStream(env, op, info[2]);
  int64_t stride = GetInt(env, op, o.Get("rowStride"), "rowStride", 1, int64_t{1} << 31);
  int64_t W = GetInt(env, op, o.Get("window"), "window", 0, stride);
  int64_t N = GetInt(env, op, o.Get("n"), "n", W, int64_t{1} << 31);
  int64_t rpb = GetInt(env, op, o.Get("rowsPerBatch"), "rowsPerBatch", 1, int64_t{1} << 31);
  int64_t R = pos.numel / stride;
  if (R * stride != pos.numel) ThrowInvalid(env, op, "positions", "a multiple of rowStride elements", std::to_string(pos.numel));
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", (R + rpb - 1) / rpb, W, N, pos.device, stream);
  FillWindowParams p{static_cast<int32_t*>(pos.data), R, stride, rpb, static_cast<int32_t>(W), static_cast<int32_t>(N), lens.ptr()};
  Dispatch d(env, op, pos.device, stream);
  d.run([&] { cpu::fill_window(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::fill_window(p, stream)); },
        {&pos});
  return env.Undefined();
}

// l2Norms(keys, out, { layout, seqLens? }, stream?)
Napi::Value L2Norms(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "l2.norms";
  Napi::Object o = GetOptions(env, op, info[2]);
  int layout = Layout(env, op, o);
  TensorArg k = GetTensor(env, op, info[0], "keys", 4, kFloatTypes);
  TensorArg out = GetTensor(env, op, info[1], "out", 3, {DType::F32});
  int device = SameDevice(env, op, {&k, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  Dims kd = DimsOf(k, layout);
  ExpectShape(env, op, out, "out", {kd.B, kd.H, kd.S});
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", kd.B, 0, kd.S, device, stream);
  L2NormsParams p{ViewOf(k, layout), k.dtype, static_cast<int32_t>(kd.B), static_cast<int32_t>(kd.H),
                  static_cast<int32_t>(kd.S), static_cast<int32_t>(kd.D), lens.ptr(), static_cast<float*>(out.data)};
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::l2_norms(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::l2_norms(p, stream)); },
        {&k, &out});
  return env.Undefined();
}

// protectScores(input, out, { sinks, recent, sign, seqLens? }, stream?): input [B, ..., M]
Napi::Value ProtectScores(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "protectScores";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg in = GetTensor(env, op, info[0], "scores", kAnyRank, {DType::F32});
  TensorArg out = GetTensor(env, op, info[1], "out", kAnyRank, {DType::F32});
  int device = SameDevice(env, op, {&in, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  if (in.rank() < 1 || out.shape != in.shape) ThrowInvalid(env, op, "out", "a tensor shaped like scores", ShapeText(out.shape));
  int64_t R, M;
  RowsOf(in, &R, &M);
  int64_t sinks = GetInt(env, op, o.Get("sinks"), "sinks", 0, int64_t{1} << 31);
  int64_t recent = GetInt(env, op, o.Get("recent"), "recent", 0, int64_t{1} << 31);
  double sign = GetNumber(env, op, o.Get("sign"), "sign");
  int64_t batch = in.rank() == 1 ? 1 : in.shape[0];
  int64_t rpb = in.rank() == 1 ? 1 : (batch == 0 ? 1 : R / batch);
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", batch, 0, M, device, stream);
  ProtectParams p{static_cast<const float*>(in.data), static_cast<float*>(out.data), R, M, rpb == 0 ? 1 : rpb,
                  static_cast<int32_t>(sinks), static_cast<int32_t>(recent), static_cast<float>(sign), lens.ptr()};
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::protect_scores(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::protect_scores(p, stream)); },
        {&in, &out});
  return env.Undefined();
}

// accumulate(queries, keys, scores, { layout, tau, noise, seed, step, seqLens? }, stream?)
Napi::Value Accumulate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "keyformer.accumulate";
  Napi::Object o = GetOptions(env, op, info[3]);
  int layout = Layout(env, op, o);
  TensorArg q = GetTensor(env, op, info[0], "queries", 4, kFloatTypes);
  TensorArg k = GetTensor(env, op, info[1], "keys", 4, kFloatTypes);
  TensorArg s = GetTensor(env, op, info[2], "scores", 3, {DType::F32});
  int device = SameDevice(env, op, {&q, &k, &s});
  cudaStream_t stream = GetStream(env, op, info[4]);
  if (q.dtype != k.dtype) ThrowInvalid(env, op, "queries.dtype", std::string("keys' dtype ") + dtype_name(k.dtype), dtype_name(q.dtype));
  Dims qd = DimsOf(q, layout), kd = DimsOf(k, layout);
  if (qd.B != kd.B || qd.D != kd.D || kd.H == 0 || qd.H % kd.H != 0 || qd.S < 1 || qd.S > kd.S) {
    ThrowInvalid(env, op, "queries.shape", "[B, Hq, T, D] matching keys, Hq a multiple of Hkv, 1 <= T <= N", ShapeText(q.shape));
  }
  ExpectShape(env, op, s, "scores", {kd.B, kd.H, kd.S});
  double tau = GetNumber(env, op, o.Get("tau"), "tau");
  if (!(tau > 0)) ThrowInvalid(env, op, "tau", "a positive number", std::to_string(tau));
  int64_t noise = GetInt(env, op, o.Get("noise"), "noise", 0, 1);
  uint64_t seed = GetU64(env, op, o.Get("seed"), "seed");
  uint64_t step = GetU64(env, op, o.Get("step"), "step");
  Lengths lens(env, op, o.Get("seqLens"), "seqLens", kd.B, qd.S, kd.S, device, stream);
  AccumulateParams p{};
  p.q = ViewOf(q, layout);
  p.k = ViewOf(k, layout);
  p.dtype = q.dtype;
  p.B = static_cast<int32_t>(kd.B);
  p.Hq = static_cast<int32_t>(qd.H);
  p.Hkv = static_cast<int32_t>(kd.H);
  p.T = static_cast<int32_t>(qd.S);
  p.N = static_cast<int32_t>(kd.S);
  p.D = static_cast<int32_t>(kd.D);
  p.seq_lens = lens.ptr();
  p.scale = 1.0f / std::sqrt(static_cast<float>(kd.D));
  p.tau = static_cast<float>(tau);
  p.noise = static_cast<NoiseKind>(noise);
  p.seed = seed;
  p.step = step;
  p.scores = static_cast<float*>(s.data);
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::accumulate(p); },
        [&] {
          Temp ws(env, op, device, KVSIFT_CUDA_CALL(cuda::accumulate_workspace_bytes(p)), stream);
          return KVSIFT_CUDA_CALL(cuda::accumulate(p, ws.get(), stream));
        },
        {&q, &k, &s});
  return env.Undefined();
}

// gumbel(out, { seed, step }, stream?): out f32 [B, H, T, N]
Napi::Value Gumbel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "keyformer.gumbel";
  Napi::Object o = GetOptions(env, op, info[1]);
  TensorArg out = GetTensor(env, op, info[0], "out", 4, {DType::F32});
  cudaStream_t stream = GetStream(env, op, info[2]);
  GumbelParams p{static_cast<int32_t>(out.dim(0)), static_cast<int32_t>(out.dim(1)), static_cast<int32_t>(out.dim(2)),
                 static_cast<int32_t>(out.dim(3)), GetU64(env, op, o.Get("seed"), "seed"),
                 GetU64(env, op, o.Get("step"), "step"), static_cast<float*>(out.data)};
  Dispatch d(env, op, out.device, stream);
  d.run([&] { cpu::gumbel(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::gumbel(p, stream)); },
        {&out});
  return env.Undefined();
}

// headReduce(input [B, H, N], out [B, N], { scale }, stream?)
Napi::Value HeadReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "headReduce";
  Napi::Object o = GetOptions(env, op, info[2]);
  TensorArg in = GetTensor(env, op, info[0], "scores", 3, {DType::F32});
  TensorArg out = GetTensor(env, op, info[1], "out", 2, {DType::F32});
  int device = SameDevice(env, op, {&in, &out});
  cudaStream_t stream = GetStream(env, op, info[3]);
  ExpectShape(env, op, out, "out", {in.dim(0), in.dim(2)});
  HeadReduceParams p{static_cast<const float*>(in.data), static_cast<float*>(out.data), static_cast<int32_t>(in.dim(0)),
                     static_cast<int32_t>(in.dim(1)), static_cast<int32_t>(in.dim(2)),
                     static_cast<float>(GetNumber(env, op, o.Get("scale"), "scale"))};
  Dispatch d(env, op, device, stream);
  d.run([&] { cpu::head_reduce(p); },
        [&] { return KVSIFT_CUDA_CALL(cuda::head_reduce(p, stream)); },
        {&in, &out});
  return env.Undefined();
}

}  // namespace

void RegisterOps(Napi::Env env, Napi::Object exports) {
  exports.Set("snapkvScores", Napi::Function::New(env, SnapkvScores, "snapkvScores"));
  exports.Set("pool1d", Napi::Function::New(env, Pool1d, "pool1d"));
  exports.Set("topk", Napi::Function::New(env, Topk, "topk"));
  exports.Set("gather", Napi::Function::New(env, Gather, "gather"));
  exports.Set("fillWindow", Napi::Function::New(env, FillWindow, "fillWindow"));
  exports.Set("l2Norms", Napi::Function::New(env, L2Norms, "l2Norms"));
  exports.Set("protectScores", Napi::Function::New(env, ProtectScores, "protectScores"));
  exports.Set("accumulate", Napi::Function::New(env, Accumulate, "accumulate"));
  exports.Set("gumbel", Napi::Function::New(env, Gumbel, "gumbel"));
  exports.Set("headReduce", Napi::Function::New(env, HeadReduce, "headReduce"));
}

}  // namespace kvsift
