#include "runtime.h"

#include <mutex>

namespace kvsift {

#ifdef KVSIFT_WITH_CUDA

namespace {
std::once_flag g_count_once;
int g_count = 0;
cudaError_t g_count_error = cudaSuccess;
}  // namespace

int cuda_device_count() {
  std::call_once(g_count_once, [] {
    int n = 0;
    g_count_error = cudaGetDeviceCount(&n);
    g_count = g_count_error == cudaSuccess ? n : 0;
    // cudaGetDeviceCount leaves a sticky-looking last error on failure; clear it so the first
    // op of a CPU-only session does not report it.
    cudaGetLastError();
  });
  return g_count;
}

std::string cuda_unavailable_reason() {
  if (cuda_device_count() > 0) return "";
  if (g_count_error == cudaSuccess) return "no CUDA device found";
  return std::string(cudaGetErrorName(g_count_error)) + ": " + cudaGetErrorString(g_count_error);
}

int cuda_device_info(int device, CudaDeviceInfo* out) {
  cudaDeviceProp prop;
  cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) return err;
  out->model = prop.name;
  out->major = prop.major;
  out->minor = prop.minor;
  out->multiprocessors = prop.multiProcessorCount;
  out->total_memory = prop.totalGlobalMem;
  out->l2_bytes = static_cast<uint64_t>(prop.l2CacheSize);
  DeviceGuard guard(device);
  if (guard.error()) return guard.error();
  size_t free_b = 0, total_b = 0;
  err = cudaMemGetInfo(&free_b, &total_b);
  if (err != cudaSuccess) return err;
  out->free_memory = free_b;
  return cudaSuccess;
}

const char* cuda_error_name(int code) { return cudaGetErrorName(static_cast<cudaError_t>(code)); }
const char* cuda_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }
bool cuda_is_out_of_memory(int code) { return code == cudaErrorMemoryAllocation; }

DeviceGuard::DeviceGuard(int device) {
  if (device < 0) return;
  cudaGetDevice(&previous_);
  if (previous_ != device) error_ = cudaSetDevice(device);
}
DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

#else  // C++-only build

int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() { return "kvsift was built without CUDA"; }
int cuda_device_info(int, CudaDeviceInfo*) { return 100; }
const char* cuda_error_name(int) { return "cudaErrorNoDevice"; }
const char* cuda_error_string(int) { return "kvsift was built without CUDA"; }
bool cuda_is_out_of_memory(int) { return false; }
DeviceGuard::DeviceGuard(int) {}
DeviceGuard::~DeviceGuard() {}

#endif

}  // namespace kvsift
