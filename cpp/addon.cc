// kvsift/cpp/addon.cc: the export table of the native addon; binding.d.ts declares it.
#include <napi.h>

#include "core.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  kvsift::RegisterCore(env, exports);
  kvsift::RegisterOps(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(kvsift, Init)
