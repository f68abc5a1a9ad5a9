// kvsift/cuda/emu/memory.cc: the emulated device's memory and the CUDA runtime API around it.
//
// Device memory is one reserved range of host address space (the "heap"), so a kernel access is
// classified as device memory by one comparison. Each allocation is 256-byte aligned (as
// cudaMalloc's) and followed by a poisoned redzone; a shadow byte per 8 heap bytes says which
// bytes are addressable (ASan's encoding), so an out-of-bounds or use-after-free access by a
// kernel is caught before it happens. Freed blocks wait in a quarantine before reuse.
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "emu_internal.h"

namespace kvsift_emu {
namespace {

constexpr uint64_t kHeapReserve = uint64_t{64} << 30;  // address space only (MAP_NORESERVE)
constexpr uint64_t kAlign = 256;
constexpr uint64_t kTailRedzone = 256;
constexpr uint64_t kPage = 4096;
constexpr size_t kQuarantineBytes = size_t{64} << 20;
constexpr uint8_t kRedzoneByte = 0xfa, kFreedByte = 0xfd, kNeverByte = 0xff;

struct Heap {
  char* base = nullptr;
  uint8_t* shadow = nullptr;     // one byte per 8 heap bytes
  uint8_t* page_state = nullptr; // determinism tracking: 0 clean, 1 saved, 2 being saved
  std::mutex mutex;
  std::map<uint64_t, uint64_t> free_ranges;  // offset -> bytes
  struct Live {
    uint64_t span, bytes;
  };
  std::map<uint64_t, Live> live;  // offset -> allocation
  std::deque<std::pair<uint64_t, uint64_t>> quarantine;
  size_t quarantine_bytes = 0;
  uint64_t used = 0;
  // determinism tracking
  std::atomic<bool> tracking{false};
  std::mutex track_mutex;
  DirtySet dirty;
};

Heap& heap() {
  static Heap* h = [] {
    Heap* x = new Heap();
    void* b = mmap(nullptr, kHeapReserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void* s = mmap(nullptr, kHeapReserve / 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void* p = mmap(nullptr, kHeapReserve / kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (b == MAP_FAILED || s == MAP_FAILED || p == MAP_FAILED) {
      std::fprintf(stderr, "kvsift emulator: cannot reserve the device heap\n");
      std::abort();
    }
    x->base = static_cast<char*>(b);
    x->shadow = static_cast<uint8_t*>(s);
    x->page_state = static_cast<uint8_t*>(p);
    // Fresh anonymous pages read as 0 = addressable: mark the whole shadow as never allocated.
    // Only the part that can ever hold allocations is touched (the emulated memory plus redzones).
    const uint64_t span = std::min<uint64_t>(kHeapReserve, config().memory_bytes * 2 + (uint64_t{1} << 30));
    std::memset(x->shadow, kNeverByte, span / 8);
    x->free_ranges[0] = span;
    return x;
  }();
  return *h;
}

void poison(uint64_t off, uint64_t bytes, uint8_t code) {
  Heap& h = heap();
  std::memset(h.shadow + off / 8, code, (bytes + 7) / 8);
}

void unpoison(uint64_t off, uint64_t bytes) {
  Heap& h = heap();
  std::memset(h.shadow + off / 8, 0, bytes / 8);
  if (bytes % 8) h.shadow[(off + bytes) / 8] = static_cast<uint8_t>(bytes % 8);
}

void release_range(Heap& h, uint64_t off, uint64_t span) {
  auto it = h.free_ranges.emplace(off, span).first;
  // coalesce with the next and the previous free range
  auto next = std::next(it);
  if (next != h.free_ranges.end() && it->first + it->second == next->first) {
    it->second += next->second;
    h.free_ranges.erase(next);
  }
  if (it != h.free_ranges.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second == it->first) {
      prev->second += it->second;
      h.free_ranges.erase(it);
      it = prev;
    }
  }
  // Give large freed ranges back to the host.
  if (span >= (uint64_t{1} << 20)) madvise(h.base + off, span, MADV_DONTNEED);
}

}  // namespace

int device_alloc(size_t bytes, void** out) {
  Heap& h = heap();
  std::lock_guard<std::mutex> lock(h.mutex);
  const uint64_t want = std::max<uint64_t>(bytes, 1);
  const uint64_t span = (want + kAlign - 1) / kAlign * kAlign + kTailRedzone;
  if (h.used + span > config().memory_bytes + config().memory_bytes / 16) return cudaErrorMemoryAllocation;
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (auto it = h.free_ranges.begin(); it != h.free_ranges.end(); ++it) {
      if (it->second < span) continue;
      const uint64_t off = it->first, rest = it->second - span;
      h.free_ranges.erase(it);
      if (rest) h.free_ranges[off + span] = rest;
      h.live[off] = {span, bytes};
      h.used += span;
      unpoison(off, bytes);
      poison(off + (bytes + 7) / 8 * 8, span - (bytes + 7) / 8 * 8, kRedzoneByte);
      *out = h.base + off;
      return cudaSuccess;
    }
    // Empty the quarantine and try once more.
    while (!h.quarantine.empty()) {
      release_range(h, h.quarantine.front().first, h.quarantine.front().second);
      h.quarantine.pop_front();
    }
    h.quarantine_bytes = 0;
  }
  return cudaErrorMemoryAllocation;
}

int device_free(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  Heap& h = heap();
  std::lock_guard<std::mutex> lock(h.mutex);
  const uint64_t off = static_cast<uint64_t>(static_cast<char*>(ptr) - h.base);
  auto it = h.live.find(off);
  if (!in_heap(reinterpret_cast<uintptr_t>(ptr)) || it == h.live.end()) return cudaErrorInvalidValue;
  const uint64_t span = it->second.span;
  h.live.erase(it);
  h.used -= span;
  poison(off, span, kFreedByte);
  h.quarantine.emplace_back(off, span);
  h.quarantine_bytes += span;
  while (h.quarantine_bytes > kQuarantineBytes) {
    release_range(h, h.quarantine.front().first, h.quarantine.front().second);
    h.quarantine_bytes -= h.quarantine.front().second;
    h.quarantine.pop_front();
  }
  return cudaSuccess;
}

bool in_heap(uintptr_t addr) {
  const Heap& h = heap();
  return addr - reinterpret_cast<uintptr_t>(h.base) < kHeapReserve;
}

const char* heap_check(uintptr_t addr, size_t n) {
  Heap& h = heap();
  const uint64_t off = addr - reinterpret_cast<uintptr_t>(h.base);
  const uint64_t last = off + (n ? n - 1 : 0);
  for (uint64_t g = off / 8; g <= last / 8; ++g) {
    const uint8_t s = h.shadow[g];
    if (s == 0) continue;
    if (s < 8) {
      const uint64_t hi = std::min<uint64_t>(last, g * 8 + 7);
      if (hi - g * 8 < s) continue;
      return "out of bounds (past the end of an allocation)";
    }
    if (s == kRedzoneByte) return "out of bounds (past the end of an allocation)";
    if (s == kFreedByte) return "use after free";
    return "outside every device allocation";
  }
  return nullptr;
}

std::string heap_describe(uintptr_t addr) {
  Heap& h = heap();
  std::lock_guard<std::mutex> lock(h.mutex);
  const uint64_t off = addr - reinterpret_cast<uintptr_t>(h.base);
  auto it = h.live.upper_bound(off);
  if (it == h.live.begin()) return "";
  --it;
  char buf[160];
  const int64_t delta = static_cast<int64_t>(off - it->first);
  std::snprintf(buf, sizeof buf, "%lld bytes from the start of a %llu-byte allocation", static_cast<long long>(delta),
                static_cast<unsigned long long>(it->second.bytes));
  return buf;
}

bool device_range_ok(const void* p, size_t n) {
  if (n == 0) return true;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (!in_heap(a)) return true;  // host memory (the emulated device's memory is host memory too)
  return heap_check(a, n) == nullptr;
}

void heap_stats(uint64_t* used, uint64_t* total) {
  Heap& h = heap();
  std::lock_guard<std::mutex> lock(h.mutex);
  *used = h.used;
  *total = config().memory_bytes;
}

// --- determinism tracking: pages are saved before a launch's first store to them ---------------

void heap_note_store(uintptr_t addr, size_t n) {
  Heap& h = heap();
  if (!h.tracking.load(std::memory_order_relaxed)) return;
  const uint64_t off = addr - reinterpret_cast<uintptr_t>(h.base);
  for (uint64_t p = off / kPage; p <= (off + n - 1) / kPage; ++p) {
    uint8_t expected = 0;
    if (__atomic_load_n(&h.page_state[p], __ATOMIC_ACQUIRE) == 1) continue;
    if (__atomic_compare_exchange_n(&h.page_state[p], &expected, 2, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      std::vector<char> copy(h.base + p * kPage, h.base + (p + 1) * kPage);
      {
        std::lock_guard<std::mutex> lock(h.track_mutex);
        h.dirty.pages.push_back(p);
        h.dirty.before.push_back(std::move(copy));
      }
      __atomic_store_n(&h.page_state[p], 1, __ATOMIC_RELEASE);
    } else {
      while (__atomic_load_n(&h.page_state[p], __ATOMIC_ACQUIRE) != 1) {
      }
    }
  }
}

void heap_begin_tracking() {
  Heap& h = heap();
  h.dirty = DirtySet{};
  h.tracking.store(true);
}

DirtySet heap_end_tracking(bool restore) {
  Heap& h = heap();
  h.tracking.store(false);
  DirtySet d = std::move(h.dirty);
  h.dirty = DirtySet{};
  for (size_t i = 0; i < d.pages.size(); ++i) {
    char* page = h.base + d.pages[i] * kPage;
    if (restore) {
      d.after.emplace_back(page, page + kPage);
      std::memcpy(page, d.before[i].data(), kPage);
    }
    h.page_state[d.pages[i]] = 0;
  }
  return d;
}

bool heap_same_after(const DirtySet& first, const DirtySet& second, std::string* where) {
  Heap& h = heap();
  auto differs = [&](uint64_t page, const std::vector<char>& want) -> bool {
    const char* now = h.base + page * kPage;
    if (std::memcmp(now, want.data(), kPage) == 0) return false;
    size_t i = 0;
    while (now[i] == want[i]) ++i;
    const uintptr_t addr = reinterpret_cast<uintptr_t>(now + i);
    *where = "first difference " + heap_describe(addr);
    return true;
  };
  std::set<uint64_t> seen;
  for (size_t i = 0; i < first.pages.size(); ++i) {
    seen.insert(first.pages[i]);
    if (differs(first.pages[i], first.after[i])) return false;
  }
  for (size_t i = 0; i < second.pages.size(); ++i) {
    if (seen.count(second.pages[i])) continue;
    if (differs(second.pages[i], second.before[i])) return false;
  }
  return true;
}

}  // namespace kvsift_emu

// =============================================================================================
// The CUDA runtime API.

using namespace kvsift_emu;

namespace {
thread_local cudaError_t tls_last_error = cudaSuccess;
thread_local int tls_device = 0;
std::mutex g_handles_mutex;
std::set<const void*> g_streams, g_events;
int g_pool_tag;

struct NameText {
  cudaError_t code;
  const char* name;
  const char* text;
};
const NameText kErrors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection", "invalid copy direction for memcpy"},
    {cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered"},
    {cudaErrorLaunchOutOfResources, "cudaErrorLaunchOutOfResources", "too many resources requested for launch"},
    {cudaErrorIllegalInstruction, "cudaErrorIllegalInstruction", "an illegal instruction was encountered"},
    {cudaErrorMisalignedAddress, "cudaErrorMisalignedAddress", "misaligned address"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};

const NameText* find_error(cudaError_t e) {
  for (const NameText& n : kErrors) {
    if (n.code == e) return &n;
  }
  return nullptr;
}

cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) tls_last_error = e;
  return e;
}

// Streams and events are opaque tags: the emulator runs all work at once, so a handle carries
// nothing but its identity. Each kind is a set of live tags, so a destroyed or foreign handle is
// cudaErrorInvalidResourceHandle, as on a GPU.
template <typename Handle>
cudaError_t create_handle(std::set<const void*>& live, Handle* handle) {
  if (handle == nullptr) return ret(cudaErrorInvalidValue);
  auto* tag = new char[16];
  std::lock_guard<std::mutex> lock(g_handles_mutex);
  live.insert(tag);
  *handle = reinterpret_cast<Handle>(tag);
  return cudaSuccess;
}
cudaError_t destroy_handle(std::set<const void*>& live, const void* handle) {
  std::lock_guard<std::mutex> lock(g_handles_mutex);
  auto it = live.find(handle);
  if (it == live.end()) return ret(cudaErrorInvalidResourceHandle);
  live.erase(it);
  delete[] static_cast<const char*>(handle);
  return cudaSuccess;
}
bool handle_is_live(const std::set<const void*>& live, const void* handle) {
  std::lock_guard<std::mutex> lock(g_handles_mutex);
  return live.count(handle) != 0;
}

// The emulated device is device 0, hidden by CUDA_VISIBLE_DEVICES as a GPU would be: visible
// when the variable is unset or lists 0.
bool emulated_device_visible() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  if (v == nullptr) return true;
  std::string list(v);
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string token = list.substr(start, end - start);
    token.erase(0, token.find_first_not_of(' '));
    if (token == "0") return true;
    start = end + 1;
  }
  return false;
}

bool valid_device(int d) { return d == 0 && emulated_device_visible(); }
}  // namespace

namespace kvsift_emu {
const char* base_error_string(cudaError_t code) {
  const NameText* n = find_error(code);
  return n ? n->text : "unrecognized error code";
}
void set_last_error(cudaError_t code) { tls_last_error = code; }
bool stream_is_valid(cudaStream_t s) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(s);
  if (v == 0 || v == 1 || v == 2) return true;  // legacy, per-thread default streams
  return handle_is_live(g_streams, s);
}
}  // namespace kvsift_emu

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return ret(cudaErrorInvalidValue);
  *count = emulated_device_visible() ? 1 : 0;
  return *count ? cudaSuccess : ret(cudaErrorNoDevice);
}
cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return ret(cudaErrorInvalidValue);
  *device = tls_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (!valid_device(device)) return ret(cudaErrorInvalidDevice);
  tls_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return ret(cudaErrorInvalidValue);
  if (!valid_device(device)) return ret(cudaErrorInvalidDevice);
  const DeviceLimits& l = limits();
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "kvsift emulated CUDA device (sm_%d, %s limits)", config().arch / 10,
                l.model);
  prop->totalGlobalMem = config().memory_bytes;
  prop->sharedMemPerBlock = l.smem_per_block;
  prop->sharedMemPerBlockOptin = l.smem_per_block_optin;
  prop->sharedMemPerMultiprocessor = l.smem_per_sm;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->maxThreadsPerMultiProcessor = l.threads_per_sm;
  prop->major = config().arch / 100;
  prop->minor = (config().arch / 10) % 10;
  prop->multiProcessorCount = l.sms;
  prop->l2CacheSize = static_cast<int>(l.l2_bytes);
  prop->maxBlocksPerMultiProcessor = l.blocks_per_sm;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr) return ret(cudaErrorInvalidValue);
  if (!valid_device(device)) return ret(cudaErrorInvalidDevice);
  const DeviceLimits& l = limits();
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxBlockDimX: *value = 1024; break;
    case cudaDevAttrMaxGridDimX: *value = 2147483647; break;
    case cudaDevAttrMaxGridDimY: *value = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(l.smem_per_block); break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = l.sms; break;
    case cudaDevAttrL2CacheSize: *value = static_cast<int>(l.l2_bytes); break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = l.threads_per_sm; break;
    case cudaDevAttrComputeCapabilityMajor: *value = config().arch / 100; break;
    case cudaDevAttrComputeCapabilityMinor: *value = (config().arch / 10) % 10; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = static_cast<int>(l.smem_per_sm); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(l.smem_per_block_optin); break;
    default: return ret(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* v) {
  if (v == nullptr) return ret(cudaErrorInvalidValue);
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  if (v == nullptr) return ret(cudaErrorInvalidValue);
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  cudaError_t e = tls_last_error;
  tls_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return tls_last_error; }
const char* cudaGetErrorName(cudaError_t e) {
  const NameText* n = find_error(e);
  return n ? n->name : "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  if (const char* r = report_text_for(e)) return r;
  return base_error_string(e);
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (ptr == nullptr) return ret(cudaErrorInvalidValue);
  return ret(static_cast<cudaError_t>(device_alloc(bytes, ptr)));
}
cudaError_t cudaFree(void* ptr) { return ret(static_cast<cudaError_t>(device_free(ptr))); }
cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream) {
  if (!stream_is_valid(stream)) return ret(cudaErrorInvalidResourceHandle);
  return cudaMalloc(ptr, bytes);
}
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  if (!stream_is_valid(stream)) return ret(cudaErrorInvalidResourceHandle);
  return cudaFree(ptr);
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  uint64_t used, total;
  heap_stats(&used, &total);
  if (free_bytes) *free_bytes = used >= total ? 0 : total - used;
  if (total_bytes) *total_bytes = total;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  if (pool == nullptr) return ret(cudaErrorInvalidValue);
  if (!valid_device(device)) return ret(cudaErrorInvalidDevice);
  *pool = reinterpret_cast<cudaMemPool_t>(&g_pool_tag);
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (!stream_is_valid(stream)) return ret(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr || static_cast<int>(kind) < 0 || static_cast<int>(kind) > 4) {
    return ret(cudaErrorInvalidValue);
  }
  if (!device_range_ok(dst, bytes) || !device_range_ok(src, bytes)) return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(device_mutex());
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device, size_t bytes,
                                cudaStream_t stream) {
  if (!valid_device(dst_device) || !valid_device(src_device)) return ret(cudaErrorInvalidDevice);
  return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) { return cudaMemsetAsync(ptr, value, bytes, nullptr); }
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  if (!stream_is_valid(stream)) return ret(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  if (ptr == nullptr || !device_range_ok(ptr, bytes)) return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(device_mutex());
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) { return create_handle(g_streams, stream); }
cudaError_t cudaStreamDestroy(cudaStream_t stream) { return destroy_handle(g_streams, stream); }
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  return stream_is_valid(stream) ? cudaSuccess : ret(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaStreamQuery(cudaStream_t stream) { return cudaStreamSynchronize(stream); }

namespace {
bool event_is_valid(cudaEvent_t e) { return handle_is_live(g_events, e); }
}  // namespace

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  if (!stream_is_valid(stream) || !event_is_valid(event)) return ret(cudaErrorInvalidResourceHandle);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) { return create_handle(g_events, event); }
cudaError_t cudaEventDestroy(cudaEvent_t event) { return destroy_handle(g_events, event); }
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!stream_is_valid(stream) || !event_is_valid(event)) return ret(cudaErrorInvalidResourceHandle);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return event_is_valid(event) ? cudaSuccess : ret(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventQuery(cudaEvent_t event) { return cudaEventSynchronize(event); }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr) return ret(cudaErrorInvalidValue);
  if (!event_is_valid(start) || !event_is_valid(end)) return ret(cudaErrorInvalidResourceHandle);
  *ms = 0.f;  // the emulator has no timing
  return cudaSuccess;
}
