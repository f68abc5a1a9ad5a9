#include "errors.h"

#include "runtime.h"

namespace kvsift {

AddonData& GetAddonData(Napi::Env env) {
  // RegisterCore sets it before anything else can run
  return *env.GetInstanceData<AddonData>();
}

Napi::Error MakeError(Napi::Env env, const char* code, const std::string& message) {
  AddonData& data = GetAddonData(env);
  if (!data.error_class.IsEmpty()) {
    Napi::Value err = data.error_class.New({Napi::String::New(env, message), Napi::String::New(env, code)});
    return Napi::Error(env, err);
  }
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

void Throw(Napi::Env env, const char* code, const std::string& message) {
  throw MakeError(env, code, message);
}

void ThrowInvalid(Napi::Env env, const std::string& op, const std::string& name,
                  const std::string& expected, const std::string& received) {
  Throw(env, code::kInvalidArg,
        op + ": expected " + expected + " for " + name + ", but received " + received);
}

void ThrowCuda(Napi::Env env, const std::string& op, int cuda_error) {
  std::string message = op + ": " + cuda_error_name(cuda_error) + ": " + cuda_error_string(cuda_error);
  Napi::Error err = MakeError(env, cuda_is_out_of_memory(cuda_error) ? code::kOutOfMemory : code::kCuda, message);
  err.Set("cudaError", Napi::String::New(env, cuda_error_name(cuda_error)));
  err.Set("op", Napi::String::New(env, op));
  throw err;
}

}  // namespace kvsift
