// kvsift/cuda/emu/emu_internal.h: the emulator's internal state, shared by its parts:
//   emu.cc      configuration, launches, workers, fibers, block scheduling, barriers
//   memory.cc   the device heap and its shadow, streams, events, copies, device properties
//   checks.cc   the memory-access hooks: global bounds, alignment, shared-memory bounds, races,
//               uninitialized reads; the block's shared arena
//   warp.cc     warp collectives (shuffles, votes, __syncwarp) and the PTX emulations (cp.async,
//               ldmatrix, mma) with the fragment layouts of the PTX ISA
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "emu.h"

namespace kvsift_emu {

struct Config {
  int arch = 800;
  int workers = 2;
  bool determinism = true;
  uint64_t seed = 0;
  bool quiet = false;
  uint64_t memory_bytes = 0;
};
const Config& config();

// The properties of the real target the emulated device stands for.
struct DeviceLimits {
  const char* model;
  int sms;
  size_t smem_per_block;        // without opt-in
  size_t smem_per_block_optin;  // cudaFuncAttributeMaxDynamicSharedMemorySize's ceiling
  size_t smem_per_sm;
  size_t l2_bytes;
  int threads_per_sm;
  int blocks_per_sm;
};
const DeviceLimits& limits();

const char* base_error_string(cudaError_t code);
void set_last_error(cudaError_t code);
bool stream_is_valid(cudaStream_t stream);
void publish_report(cudaError_t code, const std::string& text);
// The text of the last report (for tests).
std::string last_report_text();
const char* report_text_for(cudaError_t code);
std::string describe_code(const void* pc);
std::string short_site(const char* file, int line);
std::mutex& device_mutex();

// ---------------------------------------------------------------------------------------------
// Shared-memory shadow: one entry per byte of the block's arena.

constexpr uint32_t kUnallocated = 0xffffffffu;  // outside every shared allocation (or a redzone)
constexpr uint32_t kPending = 0xfffffffeu;      // destination of a cp.async not yet waited for
constexpr uint32_t kUninit = 0;                 // allocated, never written
constexpr uint16_t kManyReaders = 0xffff;
constexpr uint16_t kAtomicWriter = 0xfffe;  // w_tid of a byte last updated by atomics
constexpr size_t kArenaBytes = 256 << 10;
constexpr size_t kRedzone = 64;

struct Shadow {
  uint32_t w_epoch;   // barrier epoch of the last write, or one of the codes above
  uint16_t w_tid;     // its thread
  uint16_t w_wepoch;  // its warp's collective count at the time
  uint32_t r_epoch;   // barrier epoch of the last read(s)
  uint16_t r_tid;     // the reading thread, or kManyReaders
  uint16_t r_wepoch;
};

enum class State : uint8_t { Runnable, AtBarrier, AtWarp, Exited };

struct AsyncCopy {
  uint32_t dst;
  const void* src;
  int cp_size, src_size;
};

struct Block;

struct ThreadCtx {
  Block* block = nullptr;
  int tid = 0, warp = 0, lane = 0;
  uint3 thread_idx{0, 0, 0};
  void* sp = nullptr;
  char* stack_lo = nullptr;
  char* stack_hi = nullptr;
  State state = State::Runnable;
  bool spinning = false;
  const char* site_file = nullptr;
  int site_line = 0;
  // cp.async: copies issued since the last commit, and the committed groups, oldest first.
  std::vector<AsyncCopy> uncommitted;
  std::vector<std::vector<AsyncCopy>> groups;
};

// A warp collective waiting for its lanes: the lanes' arguments stay on their fiber stacks.
struct Collective {
  bool active = false;
  unsigned mask = 0, arrived = 0;
  int kind = 0;
  const char* file = nullptr;
  int line = 0;
  void* lane_args[32] = {};
  void (*op)(Block& b, int warp, Collective& c) = nullptr;
};

struct Warp {
  unsigned exited = 0;  // lanes that have exited (or do not exist in a partial last warp)
  uint16_t epoch = 0;   // completed collectives
  Collective pending[4];
};

struct Launch;
struct Worker;

struct StaticSharedSite {
  const char* file;
  int line;
  size_t offset;
};

struct Block {
  Worker* worker = nullptr;
  Launch* launch = nullptr;
  ThreadCtx* threads = nullptr;
  int n = 0;
  uint3 block_idx{0, 0, 0};
  uint32_t epoch = 1;
  int at_barrier = 0, exited = 0;
  bool aborted = false;
  std::vector<Warp> warps;
  // shared arena
  size_t arena_top = 0, arena_hwm = 0, static_bytes = 0;
  std::vector<StaticSharedSite> sites;

  void arena_reset(size_t dynamic_bytes);
  void release_barrier(ThreadCtx* last);
  void report_deadlock();
  std::string where(int tid) const;
  void fail(cudaError_t code, const std::string& text, bool fatal);
};

struct Worker {
  Worker();
  int index = 0;
  void* sched_sp = nullptr;
  char* stacks = nullptr;
  size_t stacks_bytes = 0;
  std::vector<ThreadCtx> threads;
  Block block;
  char* arena = nullptr;
  std::vector<Shadow> shadow;
  char* stack_hi(int t);
  char* stack_lo(int t);
};

struct Launch {
  const void* kernel = nullptr;
  Thunk thunk = nullptr;
  const void* args = nullptr;
  dim3 grid, block;
  size_t smem = 0;
  int threads = 0;
  uint64_t num_blocks = 0;
  size_t static_smem_limit = 0, total_smem_limit = 0;
  uint64_t schedule_seed = 0, order_a = 1, order_c = 0;
  std::atomic<uint64_t> next_block{0};
  std::atomic<bool> aborted{false};
  mutable std::mutex mutex;
  cudaError_t error = cudaSuccess;
  std::string report;
  mutable std::string name;
  int reports = 0;

  void fail(cudaError_t code, const std::string& text, bool fatal);
  std::string kernel_name() const;
  uint64_t block_at(uint64_t i) const;
};

extern thread_local ThreadCtx* g_tls_thread;
Worker* current_worker();
inline ThreadCtx* current_thread() { return g_tls_thread; }
void yield_to_scheduler(ThreadCtx* t);
[[noreturn]] void thread_exit(ThreadCtx* t);
void run_blocks(Worker* w, Launch* L);

// warp.cc
void warp_lane_exited(ThreadCtx* t);
void complete_async_copies(ThreadCtx* t, int keep_groups, bool all);
// Runs a collective for the calling lane; returns once every lane of `mask` has arrived and `op`
// has run (the last lane to arrive runs it).
void warp_collective(ThreadCtx* t, int kind, unsigned mask, const char* file, int line, void* args,
                     void (*op)(Block& b, int warp, Collective& c));

// checks.cc: explicit checks for accesses the emulator makes on a thread's behalf.
void check_shared(ThreadCtx* t, uintptr_t addr, size_t n, bool write, const void* pc);
void mark_shared_pending(ThreadCtx* t, uintptr_t addr, size_t n, const void* pc);
void check_global(ThreadCtx* t, uintptr_t addr, size_t n, bool write, const void* pc);
char* arena_of(ThreadCtx* t);

// memory.cc: the device heap.
struct DirtySet {
  std::vector<uint64_t> pages;             // page indexes, in first-store order
  std::vector<std::vector<char>> before;   // their contents before the first store
  std::vector<std::vector<char>> after;    // and after the run (filled when it is undone)
};
int device_alloc(size_t bytes, void** out);
int device_free(void* ptr);
bool device_range_ok(const void* p, size_t n);
void heap_stats(uint64_t* used, uint64_t* total);
bool in_heap(uintptr_t addr);
// 0 when [addr, addr + n) is inside one live allocation; else a description of what it hits.
const char* heap_check(uintptr_t addr, size_t n);
std::string heap_describe(uintptr_t addr);
void heap_note_store(uintptr_t addr, size_t n);
void heap_begin_tracking();
DirtySet heap_end_tracking(bool restore);
bool heap_same_after(const DirtySet& first, const DirtySet& second, std::string* where);

}  // namespace kvsift_emu
