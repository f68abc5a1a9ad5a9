// kvsift/cpp/ops/gather.cc: the gather of kept rows and the window fill (cuda/gather.cu, cpu/gather.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

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

}  // namespace

KVSIFT_REGISTER_OP("gather", Gather);
KVSIFT_REGISTER_OP("fillWindow", FillWindow);

}  // namespace kvsift::ops
