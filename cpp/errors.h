// kvsift/cpp/errors.h: every error the binding raises is a KvsiftError (lib/errors.ts), built
// here through the class the TS layer registers at load time, with a stable `code`.
#pragma once
#include <napi.h>

#include <string>

namespace kvsift {

namespace code {
constexpr const char* kInvalidArg = "ERR_INVALID_ARG";
constexpr const char* kDisposed = "ERR_DISPOSED";
constexpr const char* kDeviceMismatch = "ERR_DEVICE_MISMATCH";
constexpr const char* kNoDevice = "ERR_NO_DEVICE";
constexpr const char* kOutOfMemory = "ERR_OUT_OF_MEMORY";
constexpr const char* kCuda = "ERR_CUDA";
constexpr const char* kIndexOutOfRange = "ERR_INDEX_OUT_OF_RANGE";
constexpr const char* kUnsupported = "ERR_UNSUPPORTED";
}  // namespace code

// Per-environment state: the registered KvsiftError class and the DeviceBuffer constructor. Made
// by RegisterCore, deleted with its environment (cpp/core.cc: the last one stops the CPU pool).
struct AddonData {
  Napi::FunctionReference error_class;
  Napi::FunctionReference buffer_ctor;
  // Object.setPrototypeOf as it was at load (options snapshots have no prototype)
  Napi::FunctionReference set_prototype_of;
  // set by an environment cleanup hook: the environment is closing and JS can no longer run
  bool closing = false;
  ~AddonData();
};
AddonData& GetAddonData(Napi::Env env);
// False once the environment started closing: async completions then settle nothing.
bool EnvAlive(napi_env env);

// Builds a KvsiftError (or a plain Error with .code when none is registered yet).
Napi::Error MakeError(Napi::Env env, const char* code, const std::string& message);

[[noreturn]] void Throw(Napi::Env env, const char* code, const std::string& message);

// The one validation template, shared with lib/validate.ts:
//   "<op>: expected <expected> for <name>, but received <received>"
[[noreturn]] void ThrowInvalid(Napi::Env env, const std::string& op, const std::string& name,
                               const std::string& expected, const std::string& received);

// "<op>: <cudaErrorName>: <cuda error text>"; ERR_OUT_OF_MEMORY for allocation failures.
[[noreturn]] void ThrowCuda(Napi::Env env, const std::string& op, int cuda_error);

// Throws when err != 0.
inline void CheckCuda(Napi::Env env, const std::string& op, int cuda_error) {
  if (cuda_error != 0) ThrowCuda(env, op, cuda_error);
}

}  // namespace kvsift
