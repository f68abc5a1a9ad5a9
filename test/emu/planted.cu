// kvsift/test/emu/planted.cu: kernels with planted bugs, one per check of the emulated device
// (cuda/emu/), each of which must be caught with the right report; and clean kernels using every
// emulated mechanism, which must pass and compute the right thing. Built only in emulated builds
// as the executable emu_planted (never part of the addon), run by .ci/run and test/emulator.test.ts.
// Prints one line per case and a closing "N passed, M failed".
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../cuda/common.cuh"
#include "../../cuda/emu/emu_internal.h"
#include "../../cuda/ptx/cp_async.cuh"
#include "../../cuda/ptx/ldmatrix.cuh"
#include "../../cuda/ptx/mma.cuh"

using kvsift::cuda::launch;

namespace {

int g_passed = 0, g_failed = 0;

void expect(bool ok, const std::string& name, const std::string& detail) {
  std::printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name.c_str(), ok ? "" : ": ", ok ? "" : detail.c_str());
  (ok ? g_passed : g_failed)++;
}

// A planted bug must fail its launch with `code` and a report containing every `words`.
void expect_caught(const std::string& name, cudaError_t got, cudaError_t code, std::vector<std::string> words) {
  const std::string report = kvsift_emu::last_report_text();
  bool ok = got == code;
  for (const std::string& w : words) ok = ok && report.find(w) != std::string::npos;
  expect(ok, name, std::string("got ") + cudaGetErrorName(got) + ", report: " + report);
}

template <typename T>
T* device(size_t n) {
  void* p = nullptr;
  if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) std::abort();
  cudaMemset(p, 0, n * sizeof(T));
  return static_cast<T*>(p);
}

// ---- (a) global out of bounds: one thread too many writes past the end --------------------------
__global__ void oob_global(float* out) { out[threadIdx.x] = 1.f; }

// ---- (b) shared out of bounds, and a read of shared memory never written --------------------------
__global__ void oob_shared(float* out) {
  KVSIFT_SHARED(buf, float[32]);
  buf[threadIdx.x] = 1.f;  // launched with 33 threads
  __syncthreads();
  out[0] = buf[0];
}
__global__ void uninit_shared(float* out) {
  KVSIFT_SHARED(buf, float[64]);
  if (threadIdx.x < 32) buf[threadIdx.x] = 1.f;
  __syncthreads();
  out[threadIdx.x] = buf[threadIdx.x];  // threads 32..63 read words nobody wrote
}

// ---- (c) a shared-memory race: thread 0 writes what thread 33 reads, no barrier between ------------
__global__ void race_shared(float* out) {
  KVSIFT_SHARED(flag, float);
  if (threadIdx.x == 0) flag = 1.f;
  __syncthreads();
  if (threadIdx.x == 0) flag = 2.f;
  if (threadIdx.x == 33) out[0] = flag;
}

// ---- (d) barrier divergence and a warp collective only part of its mask reaches ------------------
__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.f;
}
__global__ void divergent_shuffle(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if ((threadIdx.x & 31) < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

// ---- (e) misaligned accesses a GPU faults on ------------------------------------------------------
__global__ void misaligned_vec16(const float* in, float* out) {
  const uint4 v = *reinterpret_cast<const uint4*>(in + 1);
  out[threadIdx.x] = __uint_as_float(v.x) + __uint_as_float(v.w);
}
__global__ void misaligned_load4(const unsigned char* in, float* out) {
  out[threadIdx.x] = static_cast<float>(*reinterpret_cast<const int*>(in + 2));
}
__global__ void misaligned_load2(const unsigned char* in, float* out) {
  out[threadIdx.x] = static_cast<float>(*reinterpret_cast<const unsigned short*>(in + 1));
}
__global__ void misaligned_cp_async(const float* in, float* out) {
  KVSIFT_SHARED(buf, float[64]);
  kvsift::cuda::ptx::cp_async_cg_16(kvsift::cuda::smem_addr(buf), in + 1, 16);
  kvsift::cuda::ptx::cp_async_commit();
  kvsift::cuda::ptx::cp_async_wait<0>();
  out[0] = buf[0];
}
// A read of a cp.async destination before its wait_group.
__global__ void cp_async_early_read(const float* in, float* out) {
  KVSIFT_SHARED(buf, float[4]);
  kvsift::cuda::ptx::cp_async_cg_16(kvsift::cuda::smem_addr(buf), in, 16);
  kvsift::cuda::ptx::cp_async_commit();
  out[0] = buf[0];
  kvsift::cuda::ptx::cp_async_wait<0>();
}

// ---- (f) a result that depends on the order blocks run in ---------------------------------------
__global__ void order_dependent(unsigned* counter, unsigned* out) {
  if (threadIdx.x == 0) out[atomicAdd(counter, 1u)] = blockIdx.x;
}

// ---- clean kernels: every mechanism used correctly --------------------------------------------
// Block sum through shared memory, barriers, shuffles and a cross-block last-block merge.
__global__ void clean_sum(const float* in, float* partial, unsigned* done, float* out, int n) {
  KVSIFT_SHARED(warp_sums, float[8]);
  KVSIFT_SHARED(is_last, int);
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  float v = i < n ? in[i] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int w = 0; w < 8; ++w) s += warp_sums[w];
    partial[blockIdx.x] = s;
    __threadfence();
    is_last = atomicAdd(done, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (is_last && threadIdx.x == 0) {
    __threadfence();
    float s = 0.f;
    for (unsigned b = 0; b < gridDim.x; ++b) s += __ldcg(partial + b);  // fixed order: deterministic
    *out = s;
  }
}

// cp.async, ldmatrix and mma on one 16x16 (A) by 16x8 (B) f16 tile: D = A * B.
__global__ void clean_mma(const unsigned short* a, const unsigned short* b_colmajor, float* d) {
  KVSIFT_SHARED(sa, unsigned short[16 * 16]);
  KVSIFT_SHARED(sb, unsigned short[8 * 16]);
  const int lane = static_cast<int>(threadIdx.x);
  // 16 rows of A (32 bytes each = 2 chunks) and 8 columns of B (2 chunks each): 48 chunks of 16 B.
  for (int c = lane; c < 48; c += 32) {
    if (c < 32) {
      kvsift::cuda::ptx::cp_async_cg_16(kvsift::cuda::smem_addr(sa + c * 8), a + c * 8, 16);
    } else {
      kvsift::cuda::ptx::cp_async_cg_16(kvsift::cuda::smem_addr(sb + (c - 32) * 8), b_colmajor + (c - 32) * 8, 16);
    }
  }
  kvsift::cuda::ptx::cp_async_commit();
  kvsift::cuda::ptx::cp_async_wait<0>();
  __syncwarp();
  // A fragments: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
  const int mi = lane >> 3, rr = lane & 7;
  uint32_t fa[4];
  kvsift::cuda::ptx::ldmatrix_x4(fa, kvsift::cuda::smem_addr(sa + ((mi & 1) * 8 + rr) * 16 + (mi >> 1) * 8));
  // B fragments: column n = lane / 4 holds k in rows; ldmatrix of B^T rows gives b0 (k 0-7), b1 (k 8-15).
  uint32_t fb4[4];
  kvsift::cuda::ptx::ldmatrix_x4(fb4, kvsift::cuda::smem_addr(sb + rr * 16 + (mi & 1) * 8));
  const uint32_t fb[2] = {fb4[0], fb4[1]};
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  kvsift::cuda::ptx::mma_m16n8k16_f16(acc, fa, fb);
  const int g = lane >> 2, t = lane & 3;
  d[g * 8 + 2 * t] = acc[0];
  d[g * 8 + 2 * t + 1] = acc[1];
  d[(g + 8) * 8 + 2 * t] = acc[2];
  d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

__global__ void big_dynamic(float* out) {
  KVSIFT_DYNAMIC_SHARED(buf, float);
  buf[threadIdx.x] = 1.f;
  __syncthreads();
  out[threadIdx.x] = buf[threadIdx.x];
}

unsigned short to_f16(float f) { return __half_as_ushort(__float2half(f)); }

}  // namespace

int main() {
  const int arch = kvsift_emu::device_arch();
  std::printf("emulated device: sm_%d\n", arch / 10);
  float* out = device<float>(256);

  expect_caught("(a) global write past the end", launch(oob_global, dim3(1), dim3(32), 0, nullptr, device<float>(31)),
                cudaErrorIllegalAddress, {"global-memory write", "out of bounds", "oob_global", "thread (31,0,0)"});
  expect_caught("(b) shared write past an array", launch(oob_shared, dim3(1), dim3(33), 0, nullptr, out),
                cudaErrorIllegalAddress, {"out-of-bounds shared-memory write", "oob_shared"});
  expect_caught("(b) read of shared memory never written", launch(uninit_shared, dim3(1), dim3(64), 0, nullptr, out),
                cudaErrorLaunchFailure, {"uninitialized shared memory", "uninit_shared"});
  expect_caught("(c) shared-memory race", launch(race_shared, dim3(1), dim3(64), 0, nullptr, out),
                cudaErrorLaunchFailure, {"shared-memory race", "race_shared", "thread (0,0,0)", "thread (33,0,0)"});
  expect_caught("(d) barrier divergence", launch(divergent_barrier, dim3(1), dim3(64), 0, nullptr, out),
                cudaErrorLaunchFailure, {"barrier divergence", "divergent_barrier"});
  expect_caught("(d) warp collective reached by half its mask", launch(divergent_shuffle, dim3(1), dim3(32), 0, nullptr, out),
                cudaErrorLaunchFailure, {"warp divergence", "__shfl_xor_sync", "divergent_shuffle"});
  float* in = device<float>(64);
  expect_caught("(e) misaligned 16-byte load", launch(misaligned_vec16, dim3(1), dim3(1), 0, nullptr, in, out),
                cudaErrorMisalignedAddress, {"misaligned 16-byte global read", "misaligned_vec16"});
  expect_caught("(e) misaligned 4-byte load",
                launch(misaligned_load4, dim3(1), dim3(1), 0, nullptr, reinterpret_cast<const unsigned char*>(in), out),
                cudaErrorMisalignedAddress, {"misaligned 4-byte global read"});
  expect_caught("(e) misaligned 2-byte load",
                launch(misaligned_load2, dim3(1), dim3(1), 0, nullptr, reinterpret_cast<const unsigned char*>(in), out),
                cudaErrorMisalignedAddress, {"misaligned 2-byte global read"});
  if (arch >= 800) {
    expect_caught("(e) misaligned cp.async", launch(misaligned_cp_async, dim3(1), dim3(1), 0, nullptr, in, out),
                  cudaErrorMisalignedAddress, {"misaligned 16-byte cp.async"});
    expect_caught("cp.async destination read before its wait", launch(cp_async_early_read, dim3(1), dim3(1), 0, nullptr, in, out),
                  cudaErrorLaunchFailure, {"has not completed", "cp_async_early_read"});
  } else {
    expect_caught("cp.async on an sm_75 device", launch(misaligned_cp_async, dim3(1), dim3(1), 0, nullptr, in, out),
                  cudaErrorIllegalInstruction, {"cp.async needs sm_80"});
  }
  unsigned* counter = device<unsigned>(1);
  unsigned* order = device<unsigned>(64);
  expect_caught("(f) result depends on the block order", launch(order_dependent, dim3(64), dim3(32), 0, nullptr, counter, order),
                cudaErrorLaunchFailure, {"nondeterminism", "order_dependent"});

  // Launches a GPU's driver would reject.
  expect(launch(big_dynamic, dim3(1), dim3(1025), 0, nullptr, out) == cudaErrorInvalidConfiguration,
         "1025 threads per block rejected", "");
  expect(launch(big_dynamic, dim3(1, 65536), dim3(32), 0, nullptr, out) == cudaErrorInvalidConfiguration,
         "grid.y of 65536 rejected", "");
  expect(launch(big_dynamic, dim3(1), dim3(32), 64 << 10, nullptr, out) == cudaErrorInvalidValue,
         "64 KB of dynamic shared memory without the opt-in rejected", "");
  if (arch >= 800) {
    cudaFuncSetAttribute(big_dynamic, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10);
    expect(launch(big_dynamic, dim3(1), dim3(32), 64 << 10, nullptr, out) == cudaSuccess,
           "64 KB of dynamic shared memory with the opt-in accepted", kvsift_emu::last_report_text());
  }

  // Clean kernels.
  {
    const int n = 10000, threads = 256, blocks = (n + threads - 1) / threads;
    std::vector<float> h(n);
    double want = 0;
    for (int i = 0; i < n; ++i) {
      h[i] = static_cast<float>((i * 37) % 101) / 64.f;
      want += h[i];
    }
    float* d_in = device<float>(n);
    cudaMemcpy(d_in, h.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    float* partial = device<float>(blocks);
    unsigned* done = device<unsigned>(1);
    float* d_out = device<float>(1);
    const cudaError_t e = launch(clean_sum, dim3(blocks), dim3(threads), 0, nullptr, d_in, partial, done, d_out, n);
    float got = 0;
    cudaMemcpy(&got, d_out, 4, cudaMemcpyDeviceToHost);
    expect(e == cudaSuccess && std::abs(got - want) < 1e-2, "clean: block sums, shuffles, last-block merge",
           std::string(cudaGetErrorName(e)) + " " + std::to_string(got) + " vs " + std::to_string(want) + " " +
               kvsift_emu::last_report_text());
  }
  if (arch >= 800) {
    std::vector<unsigned short> a(256), b(128);
    std::vector<float> af(256), bf(128);
    for (int i = 0; i < 256; ++i) af[i] = static_cast<float>((i * 7) % 13 - 6) / 4.f, a[i] = to_f16(af[i]);
    for (int i = 0; i < 128; ++i) bf[i] = static_cast<float>((i * 5) % 11 - 5) / 2.f, b[i] = to_f16(bf[i]);
    unsigned short* da = device<unsigned short>(256);
    unsigned short* db = device<unsigned short>(128);
    float* dd = device<float>(128);
    cudaMemcpy(da, a.data(), 512, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b.data(), 256, cudaMemcpyHostToDevice);
    const cudaError_t e = launch(clean_mma, dim3(1), dim3(32), 0, nullptr, da, db, dd);
    std::vector<float> d(128);
    cudaMemcpy(d.data(), dd, 512, cudaMemcpyDeviceToHost);
    double worst = 0;
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        double s = 0;
        for (int k = 0; k < 16; ++k) s += static_cast<double>(af[i * 16 + k]) * bf[j * 16 + k];  // B column-major
        worst = std::max(worst, std::abs(s - d[i * 8 + j]));
      }
    expect(e == cudaSuccess && worst < 1e-4, "clean: cp.async + ldmatrix + mma.m16n8k16 = A * B",
           std::string(cudaGetErrorName(e)) + " worst error " + std::to_string(worst) + " " +
               kvsift_emu::last_report_text());
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
