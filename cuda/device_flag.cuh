// kvsift/cuda/device_flag.cuh: sticky per-device error flags. A kernel that meets bad input
// raises a `__device__ int` of its file with atomicOr, so the op never waits on the host; the
// host reads the flag later, where it synchronizes anyway (gather's out-of-range positions,
// retain's invalid selections).
#pragma once
#include "common.cuh"

namespace kvsift::cuda {

// *had_error = 1 when `flag` (a __device__ int) was raised since the last call, else 0.
// Cleared only when set: the common, clean case costs one small copy. The clear is waited for,
// so no later kernel on another stream can have its report wiped by a copy still in flight.
inline cudaError_t read_and_clear_flag(int& flag, int* had_error, cudaStream_t stream) {
  if (had_error == nullptr) return cudaErrorInvalidValue;
  int value = 0;
  cudaError_t err = cudaMemcpyFromSymbolAsync(&value, flag, sizeof(int), 0, cudaMemcpyDeviceToHost, stream);
  if (err != cudaSuccess) return err;
  err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return err;
  *had_error = value != 0 ? 1 : 0;
  if (value == 0) return cudaSuccess;
  static const int zero = 0;
  err = cudaMemcpyToSymbolAsync(flag, &zero, sizeof(int), 0, cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) return err;
  return cudaStreamSynchronize(stream);
}

}  // namespace kvsift::cuda
