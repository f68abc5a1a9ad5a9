// kvsift/cuda/emu/config.cc: the emulated device's configuration (from the environment), the
// limits of the real target it stands for, and its reports: every check that fires writes one,
// on stderr and into the error text of the failed launch.
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <string>

#include "emu_internal.h"

namespace kvsift_emu {

// ---------------------------------------------------------------------------------------------
// Configuration, read once from the environment.

namespace {
uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return fallback;
  return std::strtoull(v, nullptr, 0);
}
int parse_arch(const char* v) {
  if (v == nullptr || *v == 0) return 800;
  // accepts 75, 7.5, 750, sm_75
  std::string s(v);
  if (s.rfind("sm_", 0) == 0) s = s.substr(3);
  s.erase(std::remove(s.begin(), s.end(), '.'), s.end());
  int n = std::atoi(s.c_str());
  if (n < 100) n *= 10;
  return n;
}
}  // namespace

const Config& config() {
  static const Config c = [] {
    Config k;
    k.arch = parse_arch(std::getenv("KVSIFT_EMU_CC"));
    if (k.arch != 750 && k.arch != 800 && k.arch != 860 && k.arch != 890 && k.arch != 900) k.arch = 800;
    k.workers = static_cast<int>(std::max<uint64_t>(2, env_u64("KVSIFT_EMU_WORKERS", 2)));
    k.determinism = env_u64("KVSIFT_EMU_DETERMINISM", 1) != 0;
    k.seed = env_u64("KVSIFT_EMU_SEED", 0x6b7673696674ull);
    k.quiet = env_u64("KVSIFT_EMU_QUIET", 0) != 0;
    k.memory_bytes = env_u64("KVSIFT_EMU_MEMORY", uint64_t{4} << 30);
    return k;
  }();
  return c;
}

int device_arch() { return config().arch; }

const DeviceLimits& limits() {
  static const DeviceLimits l = [] {
    DeviceLimits d;
    switch (config().arch) {
      case 750: d = {"Tesla T4", 40, 48 << 10, 64 << 10, 64 << 10, 4 << 20, 1024, 16}; break;
      case 860: d = {"A10", 72, 48 << 10, 99 << 10, 100 << 10, 6 << 20, 1536, 16}; break;
      case 890: d = {"L4", 58, 48 << 10, 99 << 10, 100 << 10, 48 << 20, 1536, 24}; break;
      case 900: d = {"H100 SXM", 132, 48 << 10, 227 << 10, 228 << 10, 50 << 20, 2048, 32}; break;
      default: d = {"A100 SXM", 108, 48 << 10, 163 << 10, 164 << 10, 40 << 20, 2048, 32}; break;
    }
    return d;
  }();
  return l;
}

// ---------------------------------------------------------------------------------------------
// Reports: every check that fires writes one, on stderr and into the launch's error text.

namespace {
std::mutex g_report_mutex;
std::deque<std::string> g_report_texts;  // kept alive: cudaGetErrorString returns their c_str()
std::map<int, const char*> g_report_for_code;
std::atomic<uint64_t> g_report_count{0};
std::string g_last_report;
}  // namespace

void publish_report(cudaError_t code, const std::string& text) {
  std::lock_guard<std::mutex> lock(g_report_mutex);
  g_report_count.fetch_add(1);
  g_last_report = text;
  g_report_texts.push_back(std::string(base_error_string(code)) + " [kvsift emulator: " + text + "]");
  if (g_report_texts.size() > 256) g_report_texts.pop_front();
  g_report_for_code[code] = g_report_texts.back().c_str();
  if (!config().quiet) std::fprintf(stderr, "kvsift emulator: %s\n", text.c_str());
}

const char* report_text_for(cudaError_t code) {
  std::lock_guard<std::mutex> lock(g_report_mutex);
  auto it = g_report_for_code.find(code);
  return it == g_report_for_code.end() ? nullptr : it->second;
}

std::string last_report_text() {
  std::lock_guard<std::mutex> lock(g_report_mutex);
  return g_last_report;
}
uint64_t report_count() { return g_report_count.load(); }

// Names a code address: the function (demangled) and, when addr2line is there, file:line.
std::string describe_code(const void* pc) {
  if (pc == nullptr) return "?";
  Dl_info info{};
  if (dladdr(pc, &info) == 0 || info.dli_fname == nullptr) return "?";
  const uintptr_t offset = reinterpret_cast<uintptr_t>(pc) - reinterpret_cast<uintptr_t>(info.dli_fbase);
  char cmd[1024];
  std::snprintf(cmd, sizeof cmd, "addr2line -C -f -e '%s' 0x%lx 2>/dev/null", info.dli_fname,
                static_cast<unsigned long>(offset));
  std::string fn, loc;
  if (FILE* p = popen(cmd, "r")) {
    char line[2048];
    if (std::fgets(line, sizeof line, p)) fn = line;
    if (std::fgets(line, sizeof line, p)) loc = line;
    pclose(p);
  }
  auto trim = [](std::string& s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  };
  trim(fn);
  trim(loc);
  if (fn.empty() || fn == "??") fn = info.dli_sname ? info.dli_sname : "?";
  // Keep the function's name, not its signature: drop the parameter list (the last balanced
  // parentheses), the return type and "(anonymous namespace)::".
  for (std::string anon = "(anonymous namespace)::"; fn.find(anon) != std::string::npos;)
    fn.erase(fn.find(anon), anon.size());
  if (!fn.empty() && fn.back() == ')') {
    int depth = 0;
    for (size_t i = fn.size(); i-- > 0;) {
      if (fn[i] == ')') ++depth;
      if (fn[i] == '(' && --depth == 0) {
        fn = fn.substr(0, i);
        break;
      }
    }
  }
  int angle = 0;
  for (size_t i = 0; i < fn.size(); ++i) {
    if (fn[i] == '<') ++angle;
    if (fn[i] == '>') --angle;
    if (fn[i] == ' ' && angle == 0) {
      fn = fn.substr(i + 1);
      i = static_cast<size_t>(-1);
    }
  }
  if (!loc.empty() && loc.rfind("??", 0) != 0) {
    const size_t slash = loc.find("/cuda/");
    if (slash != std::string::npos) loc = loc.substr(slash + 1);
    const size_t disc = loc.find(" (discriminator");
    if (disc != std::string::npos) loc = loc.substr(0, disc);
    return fn + " at " + loc;
  }
  return fn;
}

}  // namespace kvsift_emu
