// kvsift/cpp/memory.h: device memory for tensors and temporaries.
// CUDA memory comes from the device's stream-ordered pool (cudaMallocAsync) with its release
// threshold raised to "never", so after warm-up an allocation is a pool hit: no cudaMalloc, no
// host synchronization, and ops stay capturable in a CUDA graph. CPU memory is 64-byte aligned.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime.h"

namespace kvsift {

// Returns 0 or a CUDA error code (cudaErrorMemoryAllocation when the device is full, after one
// retry with the pool trimmed). CPU: 0, or 2 (cudaErrorMemoryAllocation's value) when malloc fails
// or the host memory guard refuses: Linux overcommits, so a loop of forgotten tensors would push
// the machine into swap long before malloc fails. A new host block of 1 MiB or more is refused
// when it would leave less than 1/16 of the machine's memory available (MemAvailable), or take
// kvsift's live CPU bytes past KVSIFT_CPU_MEMORY_LIMIT (bytes, when set). KVSIFT_DEBUG_POISON=1
// fills every new CPU allocation with 0xFF bytes (NaN as f32, -1 as i32), so tests can tell an
// output an op forgot to write.
int device_alloc(int device, size_t bytes, cudaStream_t stream, void** out);
// Stream-ordered free on `stream` (the stream that last used the memory). Never throws.
void device_free(int device, void* ptr, size_t bytes, cudaStream_t stream);
// The same for memory also used on other streams: `stream` first waits (an event recorded on each
// of them) until they reach this point, so the pool cannot hand the block to `stream` while
// work on another stream still uses it. Destroyed streams (their work is done) are skipped.
void device_free(int device, void* ptr, size_t bytes, cudaStream_t stream, const std::vector<cudaStream_t>& also_used_on);

// Returns every cached host block to the system. Called when the last Node environment using the
// addon goes away, so a worker that loads kvsift and exits (unloading the library) leaves nothing
// behind; blocks still in use stay theirs and are freed directly when they come back.
void release_host_cache();

// Streams kvsift destroyed: a buffer whose last stream is one of these is freed on the legacy
// default stream instead (destroy synchronizes the stream first, so its work is done). A handle
// that CUDA hands out again for a new stream is taken off the list.
void note_stream_created(cudaStream_t stream);
void note_stream_destroyed(cudaStream_t stream);

struct MemoryStats {
  int64_t live_buffers = 0;
  int64_t live_bytes = 0;
  int64_t peak_bytes = 0;
  // Freed blocks the allocator keeps for reuse: the host cache (CPU) or the stream-ordered pool's
  // reserved-but-unused bytes (CUDA). trim_memory gives them back.
  int64_t cached_bytes = 0;
  // Bytes copied out of this device's tensors into JS memory (toArray and friends, and device ->
  // CPU tensor copies for CUDA), and into them from JS memory: an engine can check that a loop
  // keeps its cache on the device.
  int64_t to_host_bytes = 0;
  int64_t from_host_bytes = 0;
};
// Owned buffers only (wrapped foreign memory is not counted).
MemoryStats memory_stats(int device);
void memory_stats_reset_peak(int device);
// Releases the cached blocks of memory_stats's cached_bytes (CUDA: cudaMemPoolTrimTo(pool, 0),
// which keeps blocks still in use by pending stream-ordered work). Returns 0 or a CUDA error.
int trim_memory(int device);
// Counted by the copies in cpp/core.cc.
void note_transfer(int device, bool to_host, int64_t bytes);

}  // namespace kvsift
