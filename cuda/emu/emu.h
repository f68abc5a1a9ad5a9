// kvsift/cuda/emu/emu.h: the CUDA device surface of the emulated device, for kernel sources
// compiled by the host C++ compiler (cuda/common.cuh includes it when KVSIFT_CUDA_EMULATED).
//
// Execution model (cuda/emu/emu.cc): a launch runs its blocks in a shuffled order on a pool of
// worker threads; a block is a set of fibers, one per CUDA thread, switched cooperatively at the
// points where a GPU thread can wait for another: __syncthreads, warp collectives (shuffles,
// votes, ldmatrix, mma), __nanosleep spins and exit. Between those points a thread runs alone, so
// shared-memory accesses between two barriers are checked for races by bookkeeping (every kernel
// load and store reaches the checker through compiler instrumentation, see CMakeLists.txt).
//
// Everything here is an inline shim over a small C++ API in namespace kvsift_emu; no part of it
// is in the normal (nvcc) build.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../../cpp/cpu/half.h"
#include "runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))

#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// __shared__ is deliberately not defined: shared memory goes through KVSIFT_SHARED and
// KVSIFT_DYNAMIC_SHARED (cuda/common.cuh), so the emulator can place and check it.

// ---------------------------------------------------------------------------------------------
// Vector and half types (the layouts of the CUDA headers).

namespace kvsift_emu {
// A GPU loads and stores an 8- or 16-byte vector type with one instruction that faults when the
// address is not aligned to the vector's size; the host compiler may split the copy into scalars.
// So the vector types check their own loads and stores.
void vector_access(const void* p, size_t bytes, bool write, const void* pc);
}  // namespace kvsift_emu

// Name(fields...) with a checked copy: the members are copied as bytes after the check.
#define KVSIFT_EMU_VEC(Name, A, ...)                                                        \
  struct alignas(A) Name {                                                                  \
    __VA_ARGS__;                                                                            \
    Name() = default;                                                                       \
    __attribute__((noinline)) Name(const Name& o) {                                         \
      kvsift_emu::vector_access(&o, sizeof(Name), false, __builtin_return_address(0));      \
      std::memcpy(static_cast<void*>(this), &o, sizeof(Name));                              \
    }                                                                                       \
    __attribute__((noinline)) Name& operator=(const Name& o) {                              \
      kvsift_emu::vector_access(&o, sizeof(Name), false, __builtin_return_address(0));      \
      kvsift_emu::vector_access(this, sizeof(Name), true, __builtin_return_address(0));     \
      std::memcpy(static_cast<void*>(this), &o, sizeof(Name));                              \
      return *this;                                                                         \
    }                                                                                       \
  };
struct uint3 { unsigned int x, y, z; };
KVSIFT_EMU_VEC(uint2, 8, unsigned int x, y)
KVSIFT_EMU_VEC(uint4, 16, unsigned int x, y, z, w)
KVSIFT_EMU_VEC(int2, 8, int x, y)
KVSIFT_EMU_VEC(int4, 16, int x, y, z, w)
KVSIFT_EMU_VEC(float2, 8, float x, y)
KVSIFT_EMU_VEC(float4, 16, float x, y, z, w)
KVSIFT_EMU_VEC(ushort4, 8, unsigned short x, y, z, w)
#undef KVSIFT_EMU_VEC
struct alignas(4) ushort2 { unsigned short x, y; };

inline uint2 make_uint2(unsigned x, unsigned y) { uint2 v; v.x = x; v.y = y; return v; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { uint4 v; v.x = x; v.y = y; v.z = z; v.w = w; return v; }
inline int2 make_int2(int x, int y) { int2 v; v.x = x; v.y = y; return v; }
inline int4 make_int4(int x, int y, int z, int w) { int4 v; v.x = x; v.y = y; v.z = z; v.w = w; return v; }
inline float2 make_float2(float x, float y) { float2 v; v.x = x; v.y = y; return v; }
inline float4 make_float4(float x, float y, float z, float w) { float4 v; v.x = x; v.y = y; v.z = z; v.w = w; return v; }

struct alignas(2) __half {
  unsigned short __x;
};
struct alignas(2) __nv_bfloat16 {
  unsigned short __x;
};
struct alignas(4) __half2 {
  __half x, y;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
using half = __half;
using half2 = __half2;

namespace kvsift_emu {
// One set of conversions for the host: the CPU backend's (round to nearest even, NaN kept quiet),
// which are the hardware's __float2half_rn / __float2bfloat16_rn.
inline uint32_t f2u(float f) { return kvsift::cpu::f32_to_bits(f); }
inline float u2f(uint32_t u) { return kvsift::cpu::bits_to_f32(u); }
inline unsigned short f32_to_f16_bits(float f) { return kvsift::cpu::f32_to_f16(f); }
inline float f16_bits_to_f32(unsigned short h) { return kvsift::cpu::f16_to_f32(h); }
inline unsigned short f32_to_bf16_bits(float f) { return kvsift::cpu::f32_to_bf16(f); }
inline float bf16_bits_to_f32(unsigned short b) { return kvsift::cpu::bf16_to_f32(b); }
}  // namespace kvsift_emu

inline float __half2float(__half h) { return kvsift_emu::f16_bits_to_f32(h.__x); }
inline __half __float2half(float f) { return __half{kvsift_emu::f32_to_f16_bits(f)}; }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline float __bfloat162float(__nv_bfloat16 b) { return kvsift_emu::bf16_bits_to_f32(b.__x); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16{kvsift_emu::f32_to_bf16_bits(f)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return make_float2(__bfloat162float(h.x), __bfloat162float(h.y)); }
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half(a), __float2half(b)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }

// ---------------------------------------------------------------------------------------------
// Bit reinterpretation and integer intrinsics.

inline float __uint_as_float(unsigned int u) { return kvsift_emu::u2f(u); }
inline unsigned int __float_as_uint(float f) { return kvsift_emu::f2u(f); }
inline float __int_as_float(int i) { return kvsift_emu::u2f(static_cast<uint32_t>(i)); }
inline int __float_as_int(float f) { return static_cast<int>(kvsift_emu::f2u(f)); }
inline long long __double_as_longlong(double d) {
  long long l;
  std::memcpy(&l, &d, 8);
  return l;
}
inline double __longlong_as_double(long long l) {
  double d;
  std::memcpy(&d, &l, 8);
  return d;
}
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return static_cast<unsigned int>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
  const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned int r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned int>((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
  return r;
}

// CUDA's global min/max overloads.
#define KVSIFT_EMU_MINMAX(T)                         \
  inline T min(T a, T b) { return b < a ? b : a; } \
  inline T max(T a, T b) { return a < b ? b : a; }
KVSIFT_EMU_MINMAX(int)
KVSIFT_EMU_MINMAX(unsigned int)
KVSIFT_EMU_MINMAX(long)
KVSIFT_EMU_MINMAX(unsigned long)
KVSIFT_EMU_MINMAX(long long)
KVSIFT_EMU_MINMAX(unsigned long long)
#undef KVSIFT_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// Fast-math intrinsics: the emulator computes them exactly (it cannot reproduce the hardware's
// approximation bits; docs/GPU.md says so).
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __saturatef(float x) { return x != x ? 0.f : fminf(fmaxf(x, 0.f), 1.f); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }

// ---------------------------------------------------------------------------------------------
// The emulator's API (cuda/emu/emu.cc).

namespace kvsift_emu {

// The calling CUDA thread's coordinates.
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
// Emulated compute capability as 10 * major + minor times 10 (750, 800, 860, 890, 900).
int device_arch();

void syncthreads(const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
void nanosleep_yield();
[[noreturn]] void trap(const char* file, int line);

enum class ShflKind { Idx, Up, Down, Xor };
uint64_t shfl(ShflKind kind, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);
unsigned vote(int kind, unsigned mask, bool pred, const char* file, int line);  // 0 ballot, 1 any, 2 all
unsigned active_mask();

void* static_shared_alloc(const char* file, int line, size_t bytes, size_t align);
void* dynamic_shared();
uint32_t smem_addr(const void* p);

// PTX emulations (fragment layouts of the PTX ISA, cuda/emu/ptx.cc).
void cp_async(uint32_t dst, const void* src, int cp_size, int src_size, const char* file, int line);
void cp_async_commit();
void cp_async_wait(int n);
void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, const char* file, int line);
void mma_m16n8k16(bool bf16, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const char* file,
                  int line);
void mma_m16n8k8_f16(float (&d)[4], const uint32_t (&a)[2], uint32_t b, const char* file, int line);
float ex2_approx_ftz(float x);

// A launch: the thunk calls the kernel with the arguments stored at `args`.
using Thunk = void (*)(const void* kernel, const void* args);
cudaError_t launch_raw(const void* kernel, Thunk thunk, const void* args, dim3 grid, dim3 block, size_t smem,
                       cudaStream_t stream);

template <typename T>
T& static_shared(const char* file, int line) {
  return *static_cast<T*>(static_shared_alloc(file, line, sizeof(T), alignof(T) < 16 ? 16 : alignof(T)));
}

template <typename Kernel, typename Tuple, size_t... I>
void call_with(Kernel kernel, const Tuple& t, std::index_sequence<I...>) {
  kernel(std::get<I>(t)...);
}

template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  // The arguments convert to the kernel's parameter types here, as <<<>>> converts them, and
  // every thread gets its own copy of them (by-value parameters), as on a GPU.
  using Stored = std::tuple<std::decay_t<Params>...>;
  const Stored stored(std::forward<Args>(args)...);
  Thunk thunk = [](const void* k, const void* a) {
    call_with(reinterpret_cast<void (*)(Params...)>(const_cast<void*>(k)), *static_cast<const Stored*>(a),
              std::index_sequence_for<Params...>{});
  };
  return launch_raw(reinterpret_cast<const void*>(kernel), thunk, &stored, grid, block, smem, stream);
}

// Loads that must not be cached or hoisted (cross-block flags and partials): an acquire load done
// by the emulator (the compiler's instrumentation would turn an atomic into a runtime call that
// does not exist here), after the usual access check.
void load_acquire(void* dst, const void* src, size_t bytes, const void* pc);
void fence();
template <typename T>
inline T load_volatile(const T* p) {
  T out;
  load_acquire(&out, p, sizeof(T), __builtin_return_address(0));
  return out;
}

}  // namespace kvsift_emu

#define threadIdx (::kvsift_emu::thread_idx())
#define blockIdx (::kvsift_emu::block_idx())
#define blockDim (::kvsift_emu::block_dim())
#define gridDim (::kvsift_emu::grid_dim())
constexpr int warpSize = 32;

#define __syncthreads() ::kvsift_emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::kvsift_emu::syncwarp(kvsift_emu_mask_or_all(__VA_ARGS__), __FILE__, __LINE__)
inline unsigned kvsift_emu_mask_or_all(unsigned mask = 0xffffffffu) { return mask; }
#define __nanosleep(ns) ::kvsift_emu::nanosleep_yield()
#define __trap() ::kvsift_emu::trap(__FILE__, __LINE__)
#define __activemask() ::kvsift_emu::active_mask()
#define __ballot_sync(mask, pred) ::kvsift_emu::vote(0, (mask), (pred), __FILE__, __LINE__)
#define __any_sync(mask, pred) (::kvsift_emu::vote(1, (mask), (pred), __FILE__, __LINE__) != 0)
#define __all_sync(mask, pred) (::kvsift_emu::vote(2, (mask), (pred), __FILE__, __LINE__) != 0)

namespace kvsift_emu {
template <typename T>
inline T shfl_typed(ShflKind kind, unsigned mask, T v, int arg, int width, const char* file, int line) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shfl(kind, mask, bits, arg, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
inline int width_or_warp(int width = 32) { return width; }
}  // namespace kvsift_emu
#define __shfl_sync(mask, v, src, ...)                                                                      \
  ::kvsift_emu::shfl_typed(::kvsift_emu::ShflKind::Idx, (mask), (v), (src),                                 \
                           ::kvsift_emu::width_or_warp(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, delta, ...)                                                                 \
  ::kvsift_emu::shfl_typed(::kvsift_emu::ShflKind::Up, (mask), (v), static_cast<int>(delta),               \
                           ::kvsift_emu::width_or_warp(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, delta, ...)                                                               \
  ::kvsift_emu::shfl_typed(::kvsift_emu::ShflKind::Down, (mask), (v), static_cast<int>(delta),             \
                           ::kvsift_emu::width_or_warp(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, lanemask, ...)                                                             \
  ::kvsift_emu::shfl_typed(::kvsift_emu::ShflKind::Xor, (mask), (v), static_cast<int>(lanemask),           \
                           ::kvsift_emu::width_or_warp(__VA_ARGS__), __FILE__, __LINE__)

// Read-only and cache-hinted loads: plain loads on the host; __ldcg and __ldcv are volatile so a
// spin on another block's data re-reads memory.
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcg(const T* p) {
  return kvsift_emu::load_volatile(p);
}
template <typename T>
inline T __ldcv(const T* p) {
  return kvsift_emu::load_volatile(p);
}
template <typename T>
inline T __ldcs(const T* p) {
  return *p;
}
template <typename T>
inline T __ldlu(const T* p) {
  return *p;
}
template <typename T>
inline void __stcg(T* p, T v) {
  *p = v;
  kvsift_emu::fence();
}
template <typename T>
inline void __stcs(T* p, T v) {
  *p = v;
}
template <typename T>
inline void __stwt(T* p, T v) {
  *p = v;
  kvsift_emu::fence();
}

// Atomics: device-scope, relaxed like the hardware's (fences order them), on real host atomics
// because blocks run concurrently on several workers. They are compiled without the access hooks
// and report themselves instead: atomics never race with each other, only with plain accesses.
namespace kvsift_emu {
void atomic_access(void* p, size_t bytes, const void* pc);
}
#define KVSIFT_EMU_ATOMIC_FN __attribute__((no_sanitize_thread, noinline))
namespace kvsift_emu {
// The one read-modify-write: old = *p; *p = update(old), atomically; returns old.
template <typename T, typename Update>
KVSIFT_EMU_ATOMIC_FN T atomic_update(T* p, Update update, const void* pc) {
  atomic_access(p, sizeof(T), pc);
  T old;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  T desired = update(old);
  while (!__atomic_compare_exchange(p, &old, &desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) desired = update(old);
  return old;
}
}  // namespace kvsift_emu
#define KVSIFT_EMU_RMW(name, T, expr) \
  KVSIFT_EMU_ATOMIC_FN inline T name(T* p, T v) { return kvsift_emu::atomic_update(p, [v](T o) { return static_cast<T>(expr); }, __builtin_return_address(0)); }
#define KVSIFT_EMU_INTEGER_ATOMICS(T)                 \
  KVSIFT_EMU_RMW(atomicAdd, T, o + v)                 \
  KVSIFT_EMU_RMW(atomicSub, T, o - v)                 \
  KVSIFT_EMU_RMW(atomicOr, T, o | v)                  \
  KVSIFT_EMU_RMW(atomicAnd, T, o & v)                 \
  KVSIFT_EMU_RMW(atomicXor, T, o ^ v)                 \
  KVSIFT_EMU_RMW(atomicExch, T, v)                    \
  KVSIFT_EMU_RMW(atomicMax, T, o < v ? v : o)         \
  KVSIFT_EMU_RMW(atomicMin, T, v < o ? v : o)         \
  KVSIFT_EMU_ATOMIC_FN inline T atomicCAS(T* p, T expected, T desired) { \
    return kvsift_emu::atomic_update(p, [=](T o) { return o == expected ? desired : o; }, __builtin_return_address(0)); \
  }
KVSIFT_EMU_INTEGER_ATOMICS(int)
KVSIFT_EMU_INTEGER_ATOMICS(unsigned int)
KVSIFT_EMU_INTEGER_ATOMICS(unsigned long long)
KVSIFT_EMU_RMW(atomicInc, unsigned int, o >= v ? 0u : o + 1u)
// Float atomics exist for completeness; kvsift's kernels avoid them (their sums would depend on
// the order of arrival and break determinism).
KVSIFT_EMU_RMW(atomicAdd, float, o + v)
#undef KVSIFT_EMU_INTEGER_ATOMICS
#undef KVSIFT_EMU_RMW

inline void __threadfence() { kvsift_emu::fence(); }
inline void __threadfence_block() { kvsift_emu::fence(); }
inline void __threadfence_system() { kvsift_emu::fence(); }
