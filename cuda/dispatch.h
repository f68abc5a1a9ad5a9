// kvsift/cuda/dispatch.h: how a launcher says "this configuration is not supported". It returns
// unsupported("<what>, <the limit>"), which records the text for the calling thread and returns
// cudaErrorNotSupported; the binding (cpp/ops/common.h) turns that into ERR_UNSUPPORTED with the
// text, instead of a bare cudaErrorInvalidValue. Plain host C++ (the binding includes it);
// dispatch_float() in cuda/common.cuh is the launchers' one dtype switch.
#pragma once
#include <cuda_runtime_api.h>

#include <string>
#include <utility>

#include "../common/params.h"

namespace kvsift::cuda {

inline std::string& unsupported_message() {
  thread_local std::string message;
  return message;
}

inline cudaError_t unsupported(std::string what) {
  unsupported_message() = std::move(what);
  return cudaErrorNotSupported;
}

// The message of the last unsupported() on this thread, cleared.
inline std::string take_unsupported_message() {
  std::string m = std::move(unsupported_message());
  unsupported_message().clear();
  return m;
}

// Head dims above `limit` are unsupported, with the limit named.
inline cudaError_t check_head_dim(const char* what, int64_t D, int64_t limit) {
  if (D <= limit) return cudaSuccess;
  return unsupported(std::string(what) + " supports head dims up to " + std::to_string(limit) +
                     " on CUDA, but D is " + std::to_string(D));
}

}  // namespace kvsift::cuda
