// kvsift/cpp/ops.cc: the op registry. Each op family's entries live in cpp/ops/<family>.cc, named
// after its kernel file (cuda/<family>.cu) and CPU twin (cpp/cpu/<family>.cc), and register
// themselves here with KVSIFT_REGISTER_OP; RegisterOps exports them all.
#include <utility>
#include <vector>

#include "core.h"
#include "ops/common.h"

namespace kvsift {
namespace ops {
namespace {
std::vector<std::pair<const char*, OpEntry>>& Registry() {
  static std::vector<std::pair<const char*, OpEntry>> registry;
  return registry;
}
}  // namespace

OpRegistration::OpRegistration(const char* name, OpEntry fn) { Registry().emplace_back(name, fn); }
}  // namespace ops

void RegisterOps(Napi::Env env, Napi::Object exports) {
  for (const auto& [name, fn] : ops::Registry()) exports.Set(name, Napi::Function::New(env, fn, name));
}

}  // namespace kvsift
