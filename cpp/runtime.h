// kvsift/cpp/runtime.h: the CUDA runtime as the binding sees it, compiled with or without CUDA.
// Without KVSIFT_WITH_CUDA every function reports zero devices, so the rest of the binding has
// one code path. Device index -1 is the CPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#ifdef KVSIFT_WITH_CUDA
#include <cuda_runtime_api.h>
#else
typedef struct CUstream_st* cudaStream_t;
typedef int cudaError_t;
#endif

namespace kvsift {

constexpr int kCpuDevice = -1;

// Usable CUDA devices; 0 when CUDA is not compiled in, no driver is installed (the static cudart
// answers cudaErrorInsufficientDriver) or no GPU is present. Never throws.
int cuda_device_count();
// Why the count is 0 (for buildInfo / troubleshooting): "" when devices exist.
std::string cuda_unavailable_reason();

struct CudaDeviceInfo {
  std::string model;
  int major = 0, minor = 0;
  int multiprocessors = 0;
  uint64_t total_memory = 0, free_memory = 0;
  uint64_t l2_bytes = 0;
};
// Returns a CUDA error code (0 = success).
int cuda_device_info(int device, CudaDeviceInfo* out);

const char* cuda_error_name(int code);
const char* cuda_error_string(int code);
bool cuda_is_out_of_memory(int code);

// Sets the current device for the scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  int error() const { return error_; }

 private:
  int previous_ = -1;
  int error_ = 0;
};

}  // namespace kvsift
