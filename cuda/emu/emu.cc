// kvsift/cuda/emu/emu.cc: the emulated CUDA device. Compiled without instrumentation; the kernel
// sources (cuda/*.cu) are compiled with the compiler's ThreadSanitizer instrumentation, so every
// load and store they make calls one of the __tsan_* hooks of checks.cc, where the device's
// memory checks live.
//
// Why fibers: a block of 256 threads meets a barrier or a warp collective every few hundred
// instructions. On OS threads each such meeting costs a futex round trip per thread (several
// microseconds, far more with 2 cores and 256 runnable threads); a fiber switch here is a dozen
// instructions (~10 ns). The emulated suite does tens of millions of switches, so OS threads
// would take hours where fibers take seconds. Blocks still run in parallel on >= 2 worker threads,
// so the cross-block protocols (colsum tickets, topk's last block) meet real concurrency.
#include "emu.h"
#include "emu_internal.h"

#include <dlfcn.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace kvsift_emu {

// ---------------------------------------------------------------------------------------------
// Worker pool and launches.

namespace {

thread_local Worker* tls_worker = nullptr;

std::mutex g_device_mutex;  // one device operation (launch, copy, fill) at a time

struct Pool {
  std::mutex mutex;
  std::condition_variable wake, done;
  std::vector<Worker*> workers;
  Launch* job = nullptr;
  uint64_t generation = 0;
  int busy = 0;
};
Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: detached workers may outlive static destructors
  return *p;
}

void worker_loop(Worker* w) {
  tls_worker = w;
  Pool& p = pool();
  uint64_t seen = 0;
  for (;;) {
    Launch* job;
    {
      std::unique_lock<std::mutex> lock(p.mutex);
      p.wake.wait(lock, [&] { return p.generation != seen; });
      seen = p.generation;
      job = p.job;
    }
    run_blocks(w, job);
    {
      std::lock_guard<std::mutex> lock(p.mutex);
      if (--p.busy == 0) p.done.notify_all();
    }
  }
}

void ensure_workers() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  if (!p.workers.empty()) return;
  for (int i = 0; i < config().workers; ++i) {
    Worker* w = new Worker();
    w->index = i;
    p.workers.push_back(w);
    std::thread(worker_loop, w).detach();
  }
}

void run_on_workers(Launch* job) {
  Pool& p = pool();
  std::unique_lock<std::mutex> lock(p.mutex);
  p.job = job;
  p.busy = static_cast<int>(p.workers.size());
  ++p.generation;
  p.wake.notify_all();
  p.done.wait(lock, [&] { return p.busy == 0; });
}

struct KernelAttrs {
  int max_dynamic_smem = -1;  // -1: the default 48 KB
};
std::mutex g_attr_mutex;
std::map<const void*, KernelAttrs> g_attrs;

int max_dynamic_smem_of(const void* kernel) {
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  auto it = g_attrs.find(kernel);
  if (it == g_attrs.end() || it->second.max_dynamic_smem < 0) return static_cast<int>(limits().smem_per_block);
  return it->second.max_dynamic_smem;
}

uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

uint64_t gcd64(uint64_t a, uint64_t b) {
  while (b) {
    uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

std::atomic<uint64_t> g_launch_counter{0};

}  // namespace

thread_local ThreadCtx* g_tls_thread = nullptr;
Worker* current_worker() { return tls_worker; }
void set_current_thread(ThreadCtx* t) { g_tls_thread = t; }

void Launch::fail(cudaError_t code, const std::string& text, bool fatal) {
  std::lock_guard<std::mutex> lock(mutex);
  if (error == cudaSuccess) {
    error = code;
    report = text;
  }
  ++reports;
  if (fatal) aborted.store(true);
}

std::string Launch::kernel_name() const {
  std::lock_guard<std::mutex> lock(mutex);
  if (name.empty()) name = describe_code(kernel);
  const size_t at = name.find(" at ");
  return at == std::string::npos ? name : name.substr(0, at);
}

// Blocks in a shuffled order: an affine bijection i -> (a*i + c) mod n with gcd(a, n) = 1.
uint64_t Launch::block_at(uint64_t i) const {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(order_a) * i + order_c) % num_blocks);
}

static cudaError_t run_once(Launch& L, uint64_t seed) {
  L.schedule_seed = seed;
  L.next_block.store(0);
  L.aborted.store(false);
  uint64_t a = 1 + mix64(seed) % std::max<uint64_t>(L.num_blocks, 1);
  while (gcd64(a, L.num_blocks) != 1) ++a;
  L.order_a = a % std::max<uint64_t>(L.num_blocks, 1);
  if (L.order_a == 0) L.order_a = 1;
  L.order_c = mix64(seed ^ 0x9e3779b97f4a7c15ull) % std::max<uint64_t>(L.num_blocks, 1);
  run_on_workers(&L);
  return L.error;
}

cudaError_t launch_raw(const void* kernel, Thunk thunk, const void* args, dim3 grid, dim3 block, size_t smem,
                       cudaStream_t stream) {
  const DeviceLimits& lim = limits();
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    set_last_error(cudaErrorInvalidConfiguration);
    return cudaErrorInvalidConfiguration;
  }
  if (smem > static_cast<size_t>(max_dynamic_smem_of(kernel)) || smem > lim.smem_per_block_optin) {
    set_last_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
  }
  if (!stream_is_valid(stream)) {
    set_last_error(cudaErrorInvalidResourceHandle);
    return cudaErrorInvalidResourceHandle;
  }
  ensure_workers();
  std::lock_guard<std::mutex> device_lock(g_device_mutex);
  Launch L;
  L.kernel = kernel;
  L.thunk = thunk;
  L.args = args;
  L.grid = grid;
  L.block = block;
  L.smem = smem;
  L.threads = static_cast<int>(threads);
  L.num_blocks = uint64_t{grid.x} * grid.y * grid.z;
  L.static_smem_limit = std::min<size_t>(lim.smem_per_block, lim.smem_per_block_optin);
  L.total_smem_limit = std::max<size_t>(static_cast<size_t>(max_dynamic_smem_of(kernel)), lim.smem_per_block);
  L.total_smem_limit = std::min<size_t>(L.total_smem_limit, lim.smem_per_block_optin);
  const uint64_t launch_id = g_launch_counter.fetch_add(1);
  const uint64_t seed1 = mix64(config().seed + 2 * launch_id);
  cudaError_t err;
  if (config().determinism) {
    // Run twice under two block orders and interleavings; the device memory each run wrote must
    // come out bit-identical (the kernels claim determinism). Pages are saved before their first
    // store in a run, so the second run starts from the same memory as the first.
    heap_begin_tracking();
    err = run_once(L, seed1);
    if (err == cudaSuccess) {
      DirtySet first = heap_end_tracking(/*restore=*/true);
      heap_begin_tracking();
      L.error = cudaSuccess;
      err = run_once(L, mix64(seed1 ^ 0xd1b54a32d192ed03ull));
      DirtySet second = heap_end_tracking(/*restore=*/false);
      if (err == cudaSuccess) {
        std::string where;
        if (!heap_same_after(first, second, &where)) {
          err = cudaErrorLaunchFailure;
          L.error = err;
          L.report = "nondeterminism in " + L.kernel_name() + ": two runs with different block orders and thread " +
                     "interleavings wrote different bytes (" + where + ")";
        }
      }
    } else {
      heap_end_tracking(/*restore=*/false);
    }
  } else {
    err = run_once(L, seed1);
  }
  if (err != cudaSuccess) {
    publish_report(err, L.report);
    set_last_error(err);
  }
  return err;
}

uint64_t launches() { return g_launch_counter.load(); }

// ---------------------------------------------------------------------------------------------
// Fibers: x86-64 context switch (callee-saved registers, MXCSR and the x87 control word).

extern "C" void kvsift_emu_swap(void** save_sp, void* load_sp);
extern "C" void kvsift_emu_fiber_start();
extern "C" [[noreturn]] void kvsift_emu_fiber_main(ThreadCtx* t);

asm(R"(
.text
.globl kvsift_emu_swap
.hidden kvsift_emu_swap
.type kvsift_emu_swap,@function
kvsift_emu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size kvsift_emu_swap,.-kvsift_emu_swap
.globl kvsift_emu_fiber_start
.hidden kvsift_emu_fiber_start
.type kvsift_emu_fiber_start,@function
kvsift_emu_fiber_start:
  movq %r12, %rdi
  call kvsift_emu_fiber_main
  ud2
.size kvsift_emu_fiber_start,.-kvsift_emu_fiber_start
)");

namespace {
constexpr size_t kStackBytes = 256 << 10;
constexpr size_t kGuardBytes = 4096;

void* fiber_initial_sp(char* stack_hi, ThreadCtx* t) {
  uintptr_t top = reinterpret_cast<uintptr_t>(stack_hi) & ~uintptr_t{15};
  uint64_t* sp = reinterpret_cast<uint64_t*>(top) - 8;
  uint32_t ctl[2] = {0x1f80u, 0x037fu};  // default MXCSR; x87 control word
  std::memcpy(&sp[0], ctl, 8);
  sp[1] = 0;                                              // r15
  sp[2] = 0;                                              // r14
  sp[3] = 0;                                              // r13
  sp[4] = reinterpret_cast<uint64_t>(t);                  // r12 -> the thread
  sp[5] = 0;                                              // rbx
  sp[6] = 0;                                              // rbp
  sp[7] = reinterpret_cast<uint64_t>(&kvsift_emu_fiber_start);  // ret
  return sp;
}
}  // namespace

Worker::Worker() {
  stacks_bytes = 1024 * (kStackBytes + kGuardBytes);
  stacks = static_cast<char*>(
      mmap(nullptr, stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (stacks == MAP_FAILED) {
    std::fprintf(stderr, "kvsift emulator: cannot map fiber stacks\n");
    std::abort();
  }
  for (int i = 0; i < 1024; ++i) mprotect(stacks + i * (kStackBytes + kGuardBytes), kGuardBytes, PROT_NONE);
  threads.resize(1024);
  arena = static_cast<char*>(aligned_alloc(4096, kArenaBytes));
  shadow.assign(kArenaBytes, Shadow{kUnallocated, 0, 0, 0, 0, 0});
}

char* Worker::stack_hi(int t) { return stacks + static_cast<size_t>(t) * (kStackBytes + kGuardBytes) + kGuardBytes + kStackBytes; }
char* Worker::stack_lo(int t) { return stacks + static_cast<size_t>(t) * (kStackBytes + kGuardBytes) + kGuardBytes; }

extern "C" void kvsift_emu_fiber_main(ThreadCtx* t) {
  Block& b = *t->block;
  b.launch->thunk(b.launch->kernel, b.launch->args);
  thread_exit(t);
  __builtin_unreachable();
}

void resume(Worker* w, ThreadCtx* t) {
  set_current_thread(t);
  kvsift_emu_swap(&w->sched_sp, t->sp);
  set_current_thread(nullptr);
}

void yield_to_scheduler(ThreadCtx* t) {
  kvsift_emu_swap(&t->sp, t->block->worker->sched_sp);
}

// ---------------------------------------------------------------------------------------------
// Running one block.

namespace {

std::string thread_text(const Block& b, int tid) {
  const dim3& bd = b.launch->block;
  char buf[128];
  std::snprintf(buf, sizeof buf, "thread (%u,%u,%u)", tid % bd.x, (tid / bd.x) % bd.y, tid / (bd.x * bd.y));
  return buf;
}

}  // namespace

std::string Block::where(int tid) const {
  char buf[96];
  std::snprintf(buf, sizeof buf, " of block (%u,%u,%u)", block_idx.x, block_idx.y, block_idx.z);
  return thread_text(*this, tid) + buf;
}

void Block::fail(cudaError_t code, const std::string& text, bool fatal) {
  launch->fail(code, text, fatal);
  if (fatal) aborted = true;
}

void Block::release_barrier(ThreadCtx* last) {
  // Every live thread is at a barrier: they must all be at the same one.
  const ThreadCtx* first = nullptr;
  for (int i = 0; i < n; ++i) {
    ThreadCtx& t = threads[i];
    if (t.state != State::AtBarrier) continue;
    if (first == nullptr) {
      first = &t;
    } else if (t.site_line != first->site_line || std::strcmp(t.site_file, first->site_file) != 0) {
      fail(cudaErrorLaunchFailure,
           "barrier divergence in " + launch->kernel_name() + ": " + where(first->tid) + " waits at __syncthreads() " +
               short_site(first->site_file, first->site_line) + " while " + thread_text(*this, t.tid) +
               " waits at __syncthreads() " + short_site(t.site_file, t.site_line),
           true);
      return;
    }
  }
  ++epoch;
  at_barrier = 0;
  for (int i = 0; i < n; ++i) {
    if (threads[i].state == State::AtBarrier) threads[i].state = State::Runnable;
  }
  (void)last;
}

std::string short_site(const char* file, int line) {
  std::string f = file ? file : "?";
  const size_t c = f.find("cuda/");
  if (c != std::string::npos) f = f.substr(c);
  return "(" + f + ":" + std::to_string(line) + ")";
}

void syncthreads(const char* file, int line) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  Block& b = *t->block;
  t->state = State::AtBarrier;
  t->site_file = file;
  t->site_line = line;
  ++b.at_barrier;
  if (b.at_barrier + b.exited == b.n) {
    b.release_barrier(t);
    if (b.aborted) yield_to_scheduler(t);
    return;
  }
  yield_to_scheduler(t);
}

void nanosleep_yield() {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  t->spinning = true;
  yield_to_scheduler(t);
}

void trap(const char* file, int line) {
  ThreadCtx* t = current_thread();
  if (t != nullptr) {
    Block& b = *t->block;
    b.fail(cudaErrorLaunchFailure,
           "__trap() in " + b.launch->kernel_name() + " " + short_site(file, line) + " by " + b.where(t->tid), true);
    yield_to_scheduler(t);
  }
  std::abort();
}

[[noreturn]] void thread_exit(ThreadCtx* t) {
  Block& b = *t->block;
  complete_async_copies(t, 0, /*all=*/true);
  t->state = State::Exited;
  ++b.exited;
  warp_lane_exited(t);
  if (!b.aborted && b.at_barrier > 0 && b.at_barrier + b.exited == b.n) b.release_barrier(t);
  yield_to_scheduler(t);
  __builtin_unreachable();
}

void run_block(Worker* w, Launch& L, uint64_t linear) {
  Block& b = w->block;
  b.worker = w;
  b.launch = &L;
  b.n = L.threads;
  b.block_idx = {static_cast<unsigned>(linear % L.grid.x), static_cast<unsigned>((linear / L.grid.x) % L.grid.y),
                 static_cast<unsigned>(linear / (uint64_t{L.grid.x} * L.grid.y))};
  b.epoch = 1;
  b.at_barrier = 0;
  b.exited = 0;
  b.aborted = false;
  b.arena_reset(L.smem);
  const int nwarps = (b.n + 31) / 32;
  b.warps.assign(nwarps, Warp{});
  for (int wi = 0; wi < nwarps; ++wi) {
    const int live = std::min(32, b.n - wi * 32);
    b.warps[wi].exited = live == 32 ? 0u : ~((1u << live) - 1u);
  }
  b.threads = w->threads.data();
  for (int i = 0; i < b.n; ++i) {
    ThreadCtx& t = b.threads[i];
    t = ThreadCtx{};
    t.block = &b;
    t.tid = i;
    t.thread_idx = {static_cast<unsigned>(i % L.block.x), static_cast<unsigned>((i / L.block.x) % L.block.y),
                    static_cast<unsigned>(i / (L.block.x * L.block.y))};
    t.warp = i / 32;
    t.lane = i % 32;
    t.stack_lo = w->stack_lo(i);
    t.stack_hi = w->stack_hi(i);
    t.sp = fiber_initial_sp(t.stack_hi, &t);
    t.state = State::Runnable;
  }
  // Interleavings: each pass visits the runnable threads from a rotating, seeded start with a
  // seeded stride coprime to n, so two schedules differ in the order threads reach each point.
  uint64_t rng = mix64(L.schedule_seed ^ (linear * 0x9e3779b97f4a7c15ull));
  for (;;) {
    rng = mix64(rng + 1);
    const int n = b.n;
    int stride = 1 + static_cast<int>(rng % static_cast<uint64_t>(n));
    while (gcd64(static_cast<uint64_t>(stride), static_cast<uint64_t>(n)) != 1) ++stride;
    const int start = static_cast<int>((rng >> 20) % static_cast<uint64_t>(n));
    bool ran = false, only_spinners = true;
    for (int k = 0; k < n && !b.aborted; ++k) {
      ThreadCtx& t = b.threads[(start + static_cast<int64_t>(k) * stride) % n];
      if (t.state != State::Runnable) continue;
      ran = true;
      if (!t.spinning) only_spinners = false;
      t.spinning = false;
      resume(w, &t);
      if (L.aborted.load(std::memory_order_relaxed)) b.aborted = true;
    }
    if (b.aborted) break;
    if (b.exited == b.n) break;
    if (!ran) {
      b.report_deadlock();
      break;
    }
    if (only_spinners) sched_yield();
  }
  // Copies left in flight by an aborted block are dropped, as the GPU's context would be lost.
  b.launch = nullptr;
}

void run_blocks(Worker* w, Launch* L) {
  for (;;) {
    if (L->aborted.load()) return;
    const uint64_t i = L->next_block.fetch_add(1);
    if (i >= L->num_blocks) return;
    w->block.launch = L;
    run_block(w, *L, L->block_at(i));
  }
}

void Block::report_deadlock() {
  std::string text = "deadlock in " + launch->kernel_name() + " " + where(0).substr(where(0).find(" of ") + 1) +
                     ": no thread can continue;";
  int shown = 0;
  for (int i = 0; i < n && shown < 4; ++i) {
    const ThreadCtx& t = threads[i];
    if (t.state == State::AtBarrier) {
      text += " " + thread_text(*this, t.tid) + " waits at __syncthreads() " + short_site(t.site_file, t.site_line) + ";";
      ++shown;
    } else if (t.state == State::AtWarp) {
      text += " " + thread_text(*this, t.tid) + " waits in a warp collective " + short_site(t.site_file, t.site_line) + ";";
      ++shown;
    }
  }
  fail(cudaErrorLaunchFailure, text, true);
}

// ---------------------------------------------------------------------------------------------
// Thread coordinates.

namespace {
const uint3 kZero3{0, 0, 0};
const dim3 kOne3{1, 1, 1};
}  // namespace

const uint3& thread_idx() {
  ThreadCtx* t = current_thread();
  return t ? t->thread_idx : kZero3;
}
const uint3& block_idx() {
  ThreadCtx* t = current_thread();
  return t ? t->block->block_idx : kZero3;
}
const dim3& block_dim() {
  ThreadCtx* t = current_thread();
  return t ? t->block->launch->block : kOne3;
}
const dim3& grid_dim() {
  ThreadCtx* t = current_thread();
  return t ? t->block->launch->grid : kOne3;
}

// ---------------------------------------------------------------------------------------------
// Function attributes and occupancy.

}  // namespace kvsift_emu

using namespace kvsift_emu;

cudaError_t kvsift_emu_func_set_attribute(const void* func, cudaFuncAttribute attr, int value) {
  if (func == nullptr) return cudaErrorInvalidValue;
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > limits().smem_per_block_optin) return cudaErrorInvalidValue;
    std::lock_guard<std::mutex> lock(g_attr_mutex);
    g_attrs[func].max_dynamic_smem = value;
  }
  return cudaSuccess;
}

cudaError_t kvsift_emu_func_get_attributes(cudaFuncAttributes* attr, const void* func) {
  if (attr == nullptr || func == nullptr) return cudaErrorInvalidValue;
  *attr = cudaFuncAttributes{};
  attr->maxThreadsPerBlock = 1024;
  attr->numRegs = 64;
  attr->ptxVersion = config().arch / 10;
  attr->binaryVersion = config().arch / 10;
  attr->maxDynamicSharedSizeBytes = max_dynamic_smem_of(func);
  return cudaSuccess;
}

cudaError_t kvsift_emu_occupancy(int* blocks, const void* func, int block_size, size_t dynamic_smem) {
  if (blocks == nullptr || block_size <= 0 || block_size > 1024) return cudaErrorInvalidValue;
  const DeviceLimits& l = limits();
  int by_threads = l.threads_per_sm / block_size;
  int by_smem = dynamic_smem == 0 ? l.blocks_per_sm : static_cast<int>(l.smem_per_sm / dynamic_smem);
  *blocks = std::max(0, std::min({by_threads, by_smem, l.blocks_per_sm}));
  return cudaSuccess;
}

namespace kvsift_emu {
std::mutex& device_mutex() { return g_device_mutex; }
}  // namespace kvsift_emu
