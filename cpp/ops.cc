#include "core.h"
namespace kvsift {
void RegisterOps(Napi::Env, Napi::Object) {}
}  // namespace kvsift
