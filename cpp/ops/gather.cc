// kvsift/cpp/ops/gather.cc: the gather of kept rows and the window fill (cuda/gather.cu, cpu/gather.cc).
#include "common.h"

namespace kvsift::ops {
namespace {

// gather(cache, positions, out, { layout, group }, stream?): positions i32 [B, Hp, K] with
// Hp = Hc * group (per head) or Hp = 1 (one selection broadcast to every head).
Napi::Value Gather(const Napi::CallbackInfo& info) {
  Call c(info, "gather", 3);
  int layout = c.layout();
  auto [cache, pos, out] = c.tensors({{0, "cache", 4, {}}, {1, "positions", 3, {DType::I32}}, {2, "out", 4, {}}});
  int64_t group = c.integer("group", 1, 1 << 16);
  Dims cd = DimsOf(cache, layout);
  int64_t K = pos.dim(2);
  int64_t hout = cd.H * group;
  if (pos.dim(0) != cd.B || (pos.dim(1) != hout && pos.dim(1) != 1)) {
    c.invalid("positions.shape", "[B, H, K] or [B, 1, K] matching the cache", ShapeText(pos.shape));
  }
  if (out.dtype != cache.dtype) c.invalid("out.dtype", dtype_name(cache.dtype), dtype_name(out.dtype));
  std::vector<int64_t> want = layout == 0 ? std::vector<int64_t>{cd.B, hout, K, cd.D} : std::vector<int64_t>{cd.B, K, hout, cd.D};
  c.expect_shape(out, "out", want);
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
  // The CPU checks every position before writing anything: a failed op leaves `out` untouched.
  const int64_t npos = pos.numel;
  auto cpu_gather = [&] {
    const int32_t* pp = p.positions;
    int64_t bad = 0;
    for (int64_t i = 0; i < npos; ++i) bad += (pp[i] < 0 || pp[i] >= cd.S) ? 1 : 0;
    return bad != 0 ? bad : cpu::gather(p);
  };
  return c.run_counted(cpu_gather, [&] { return KVSIFT_CUDA_CALL(cuda::gather(p, c.stream)); },
                       "positions fall outside [0, " + std::to_string(cd.S) + ")");
}

// fillWindow(positions, { window, n, rowStride, rowsPerBatch, seqLens? }, stream?)
Napi::Value FillWindow(const Napi::CallbackInfo& info) {
  Call c(info, "fillWindow", 1);
  auto [pos] = c.tensors({{0, "positions", kAnyRank, {DType::I32}}});
  int64_t stride = c.integer("rowStride", 1, int64_t{1} << 31);
  int64_t W = c.integer("window", 0, stride);
  int64_t N = c.integer("n", W, int64_t{1} << 31);
  int64_t rpb = c.integer("rowsPerBatch", 1, int64_t{1} << 31);
  int64_t R = pos.numel / stride;
  if (R * stride != pos.numel) c.invalid("positions", "a multiple of rowStride elements", std::to_string(pos.numel));
  Lengths lens = c.lengths("seqLens", (R + rpb - 1) / rpb, W, N);
  FillWindowParams p{static_cast<int32_t*>(pos.data), R, stride, rpb, static_cast<int32_t>(W), static_cast<int32_t>(N), lens.ptr()};
  return c.run([&] { cpu::fill_window(p); }, [&] { return KVSIFT_CUDA_CALL(cuda::fill_window(p, c.stream)); });
}

}  // namespace

KVSIFT_REGISTER_OP("gather", Gather);
KVSIFT_REGISTER_OP("fillWindow", FillWindow);

}  // namespace kvsift::ops
