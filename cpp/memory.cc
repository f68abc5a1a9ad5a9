#include "memory.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kvsift {
namespace {

constexpr int kMaxDevices = 64;
struct Counters {
  std::atomic<int64_t> buffers{0}, bytes{0}, peak{0};
  std::atomic<int64_t> to_host{0}, from_host{0};
};
Counters g_counters[kMaxDevices + 1];  // slot 0 = CPU, slot d+1 = cuda:d

Counters& counters_for(int device) {
  int slot = device + 1;
  if (slot < 0 || slot > kMaxDevices) slot = 0;
  return g_counters[slot];
}

void count_alloc(int device, size_t bytes) {
  Counters& c = counters_for(device);
  c.buffers.fetch_add(1);
  int64_t now = c.bytes.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
  int64_t peak = c.peak.load();
  while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
  }
}

void count_free(int device, size_t bytes) {
  Counters& c = counters_for(device);
  c.buffers.fetch_sub(1);
  c.bytes.fetch_sub(static_cast<int64_t>(bytes));
}

std::mutex g_dead_mu;
std::unordered_set<cudaStream_t> g_dead_streams;

[[maybe_unused]] bool is_dead(cudaStream_t s) {
  if (s == nullptr) return false;
  std::lock_guard<std::mutex> lock(g_dead_mu);
  return g_dead_streams.count(s) != 0;
}

int64_t EnvBytes(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return 0;
  char* end = nullptr;
  double d = std::strtod(v, &end);
  return d > 0 ? static_cast<int64_t>(d) : 0;
}

bool PoisonEnabled() {
  static const bool on = [] {
    const char* v = std::getenv("KVSIFT_DEBUG_POISON");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}

// MemAvailable from /proc/meminfo in bytes; -1 when it cannot be read (not Linux).
int64_t MemAvailable() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return -1;
  char line[256];
  int64_t kb = -1, total_kb = -1;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    long long v = 0;
    if (std::sscanf(line, "MemAvailable: %lld kB", &v) == 1) kb = v;
    if (std::sscanf(line, "MemTotal: %lld kB", &v) == 1) total_kb = v;
  }
  std::fclose(f);
  if (kb < 0 || total_kb <= 0) return -1;
  // keep 1/16 of the machine for everyone else
  return (kb - total_kb / 16) * 1024;
}

// The host memory guard (see memory.h), first half: kvsift's own budget, when one is set.
bool WithinBudget(size_t bytes, int64_t live) {
  static const int64_t limit = EnvBytes("KVSIFT_CPU_MEMORY_LIMIT");
  return limit <= 0 || live + static_cast<int64_t>(bytes) <= limit;
}

// Second half, for new blocks only (cache hits cost the machine nothing): room on the machine.
bool SystemHasRoom(size_t bytes) {
  if (bytes < (size_t{1} << 20)) return true;
  int64_t available = MemAvailable();
  return available < 0 || static_cast<int64_t>(bytes) <= available;
}


// Host memory for CPU tensors. glibc hands blocks of 32 MiB and more to mmap and unmaps them on
// free, so every op output would page-fault its way in again (about 3x slower for l2.compress at
// 4k tokens). Like CUDA's pool, large blocks are kept for reuse, up to a cap. Sanitizer builds
// skip the cache so AddressSanitizer sees every free.
class HostCache {
 public:
  static constexpr size_t kMinCached = size_t{256} << 10;  // smaller blocks: malloc is fine
  static constexpr size_t kGranule = size_t{64} << 10;
  static constexpr size_t kMaxCached = size_t{1} << 30;

  void* Alloc(size_t bytes) {
#ifndef KVSIFT_NO_HOST_CACHE
    if (bytes >= kMinCached) {
      size_t want = (bytes + kGranule - 1) / kGranule * kGranule;
      {
        std::lock_guard<std::mutex> lock(mu_);
        // best fit, wasting at most a quarter of the block
        auto it = free_.lower_bound(want);
        if (it != free_.end() && it->first <= want + want / 4) {
          void* p = it->second;
          cached_ -= it->first;
          free_.erase(it);
          return p;
        }
      }
      void* p = TryAlloc(want);
      if (p != nullptr) {
        std::lock_guard<std::mutex> lock(mu_);
        released_ = false;
        capacity_[p] = want;
      }
      return p;
    }
#endif
    return TryAlloc(bytes);
  }

  size_t CachedBytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }
  void Trim() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, p] : free_) {
      capacity_.erase(p);
      std::free(p);
    }
    free_.clear();
    cached_ = 0;
  }

  void Free(void* p) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = capacity_.find(p);
      if (it != capacity_.end()) {
        if (!released_ && cached_ + it->second <= kMaxCached) {
          free_.emplace(it->second, p);
          cached_ += it->second;
          return;
        }
        capacity_.erase(it);
      }
    }
    std::free(p);
  }

 private:
  void* TryAlloc(size_t bytes) {
    if (!SystemHasRoom(bytes)) {
      Trim();
      if (!SystemHasRoom(bytes)) return nullptr;
    }
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) {
      Trim();
      p = std::aligned_alloc(64, bytes);
    }
    return p;
  }

 public:
  // Trim, and keep nothing that comes back until the next allocation (the last environment went).
  void Release() {
    Trim();
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    if (capacity_.empty()) std::unordered_map<void*, size_t>().swap(capacity_);
  }

 private:
  std::mutex mu_;
  bool released_ = false;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> capacity_;
  size_t cached_ = 0;
};

HostCache& host_cache() {
  // Never destroyed (tensors may be finalized at exit), and not heap-allocated either, so an
  // unload of the library leaves nothing behind once release_host_cache() emptied it.
  alignas(HostCache) static unsigned char storage[sizeof(HostCache)];
  static HostCache* cache = new (storage) HostCache();
  return *cache;
}


#ifdef KVSIFT_WITH_CUDA
std::once_flag g_pool_once[kMaxDevices];
void configure_pool(int device) {
  if (device >= kMaxDevices) return;
  std::call_once(g_pool_once[device], [device] {
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      uint64_t keep_everything = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_everything);
    }
    cudaGetLastError();
  });
}
#endif

}  // namespace

int device_alloc(int device, size_t bytes, cudaStream_t stream, void** out) {
  *out = nullptr;
  // A zero-byte tensor still gets a real, distinct pointer; 256 keeps CUDA rows aligned.
  size_t rounded = bytes == 0 ? 256 : (bytes + 255) / 256 * 256;
  if (rounded < bytes) return 2;  // overflow
  if (device < 0) {
    if (!WithinBudget(rounded, counters_for(device).bytes.load())) return 2;
    void* p = host_cache().Alloc(rounded);
    if (p == nullptr) return 2;
    if (PoisonEnabled()) std::memset(p, 0xFF, rounded);
    *out = p;
    count_alloc(device, bytes);
    return 0;
  }
#ifdef KVSIFT_WITH_CUDA
  configure_pool(device);
  DeviceGuard guard(device);
  if (guard.error()) return guard.error();
  cudaError_t err = cudaMallocAsync(out, rounded, stream);
  if (err == cudaErrorMemoryAllocation) {
    // Cached blocks may be pinned by pending frees on other streams: give them back and retry
    // once. Slow, but only on the out-of-memory path.
    cudaGetLastError();
    cudaDeviceSynchronize();
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
    err = cudaMallocAsync(out, rounded, stream);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();  // allocation failures are not sticky; keep later calls clean
    *out = nullptr;
    return err;
  }
  count_alloc(device, bytes);
  return 0;
#else
  (void)stream;
  return 100;  // cudaErrorNoDevice
#endif
}

void device_free(int device, void* ptr, size_t bytes, cudaStream_t stream) {
  if (ptr == nullptr) return;
  if (device < 0) {
    host_cache().Free(ptr);
    count_free(device, bytes);
    return;
  }
#ifdef KVSIFT_WITH_CUDA
  DeviceGuard guard(device);
  if (is_dead(stream)) stream = nullptr;
  if (cudaFreeAsync(ptr, stream) != cudaSuccess) {
    // The stream may be gone (an engine destroyed its own stream): free in legacy-stream order.
    cudaGetLastError();
    cudaFreeAsync(ptr, nullptr);
    cudaGetLastError();
  }
  count_free(device, bytes);
#else
  (void)stream;
  (void)bytes;
#endif
}

void device_free(int device, void* ptr, size_t bytes, cudaStream_t stream, const std::vector<cudaStream_t>& also_used_on) {
#ifdef KVSIFT_WITH_CUDA
  if (ptr != nullptr && device >= 0 && !also_used_on.empty()) {
    DeviceGuard guard(device);
    cudaStream_t on = is_dead(stream) ? nullptr : stream;
    for (cudaStream_t other : also_used_on) {
      if (other == on || is_dead(other)) continue;
      cudaEvent_t reached;
      if (cudaEventCreateWithFlags(&reached, cudaEventDisableTiming) != cudaSuccess) {
        // no event to order with: wait on the host instead (slow, never wrong)
        cudaGetLastError();
        cudaStreamSynchronize(other);
        cudaGetLastError();
        continue;
      }
      // an engine's stream it destroyed itself fails here: its work is over then
      if (cudaEventRecord(reached, other) == cudaSuccess) cudaStreamWaitEvent(on, reached, 0);
      cudaEventDestroy(reached);  // released once it completes; the wait above is already queued
      cudaGetLastError();
    }
    stream = on;
  }
#endif
  device_free(device, ptr, bytes, stream);
}

void release_host_cache() { host_cache().Release(); }

void note_stream_created(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(g_dead_mu);
  g_dead_streams.erase(stream);
}

void note_stream_destroyed(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(g_dead_mu);
  g_dead_streams.insert(stream);
}

MemoryStats memory_stats(int device) {
  Counters& c = counters_for(device);
  MemoryStats s;
  s.live_buffers = c.buffers.load();
  s.live_bytes = c.bytes.load();
  s.peak_bytes = c.peak.load();
  s.to_host_bytes = c.to_host.load();
  s.from_host_bytes = c.from_host.load();
  if (device < 0) {
    s.cached_bytes = static_cast<int64_t>(host_cache().CachedBytes());
  } else {
#if defined(KVSIFT_WITH_CUDA) && !defined(KVSIFT_CUDA_EMULATED)  // the emulator has no pool attributes
    cudaMemPool_t pool;
    uint64_t reserved = 0, used = 0;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess &&
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) == cudaSuccess &&
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) == cudaSuccess && reserved >= used) {
      s.cached_bytes = static_cast<int64_t>(reserved - used);
    }
    cudaGetLastError();
#endif
  }
  return s;
}

int trim_memory(int device) {
  if (device < 0) {
    host_cache().Trim();
    return 0;
  }
#ifdef KVSIFT_WITH_CUDA
  DeviceGuard guard(device);
  if (guard.error()) return guard.error();
  cudaMemPool_t pool;
  cudaError_t err = cudaDeviceGetDefaultMemPool(&pool, device);
  if (err == cudaSuccess) err = cudaMemPoolTrimTo(pool, 0);
  return err;
#else
  return 100;  // cudaErrorNoDevice
#endif
}

void note_transfer(int device, bool to_host, int64_t bytes) {
  Counters& c = counters_for(device);
  (to_host ? c.to_host : c.from_host).fetch_add(bytes);
}

void memory_stats_reset_peak(int device) {
  Counters& c = counters_for(device);
  c.peak.store(c.bytes.load());
}

}  // namespace kvsift
