// kvsift/cpp/core.h: registration of the binding's parts (cpp/addon.cc is only the export table).
#pragma once
#include <napi.h>

namespace kvsift {
void RegisterCore(Napi::Env env, Napi::Object exports);
void RegisterOps(Napi::Env env, Napi::Object exports);
}  // namespace kvsift
