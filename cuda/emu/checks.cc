// kvsift/cuda/emu/checks.cc: what compute-sanitizer would check on a GPU, built into the emulated
// device. Kernel sources are compiled with the compiler's ThreadSanitizer instrumentation (and
// none of its runtime), which turns every load and store of theirs into a call to one of the
// __tsan_* hooks at the end of this file before the access happens. A hook classifies the address with two comparisons:
//   - in the worker's shared arena: shared-memory bounds (redzones between allocations),
//     uninitialized reads (the arena is poisoned at block start), cp.async destinations read
//     before their wait_group, and races between threads of the block (two threads touch the
//     same byte between two barriers and one of them writes, unless a warp collective of their
//     own warp orders them);
//   - in the device heap: bounds and use-after-free through the heap's shadow;
//   - anything else (the thread's stack, kernel parameters, host globals): not checked.
// Sized accesses of 2, 4, 8 or 16 bytes must be aligned to their size, as on a GPU.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "emu_internal.h"

namespace kvsift_emu {
namespace {

std::string hex(uintptr_t a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(a));
  return buf;
}

std::string tid_text(const Block& b, int tid) {
  const dim3& bd = b.launch->block;
  char buf[64];
  std::snprintf(buf, sizeof buf, "thread (%u,%u,%u)", tid % bd.x, (tid / bd.x) % bd.y, tid / (bd.x * bd.y));
  return buf;
}

// Whether an earlier access by thread `prev` (its warp's collective count then: `prev_wepoch`)
// happens before the current thread's access in the same barrier epoch.
inline bool ordered(const Block& b, const ThreadCtx* t, uint16_t prev, uint16_t prev_wepoch) {
  if (prev == t->tid) return true;
  if (prev == kAtomicWriter) return false;
  return prev / 32 == t->warp && prev_wepoch != b.warps[t->warp].epoch;
}

// After a fatal report: the calling fiber (not necessarily the thread the report is about, when
// a collective checks for its lanes) goes back to the scheduler for good.
[[noreturn]] void abort_thread(ThreadCtx*) {
  yield_to_scheduler(current_thread());
  __builtin_unreachable();
}

void race(ThreadCtx* t, uintptr_t offset, const char* mine, const char* theirs, int other, const void* pc) {
  Block& b = *t->block;
  b.fail(cudaErrorLaunchFailure,
         std::string("shared-memory race in ") + b.launch->kernel_name() + ": " + tid_text(b, t->tid) + " " + mine +
             " shared byte " + std::to_string(offset) + " at " + describe_code(pc) + ", which " +
             (other < 0 ? std::string(other == -2 ? "atomics of other threads" : "other threads")
                        : tid_text(b, other)) +
             " " + theirs + " since the last barrier (block (" + std::to_string(b.block_idx.x) + "," +
             std::to_string(b.block_idx.y) + "," + std::to_string(b.block_idx.z) + "))",
         false);
}

}  // namespace

char* arena_of(ThreadCtx* t) { return t->block->worker->arena; }

void Block::arena_reset(size_t dynamic_bytes) {
  Shadow* sh = worker->shadow.data();
  for (size_t i = 0; i < arena_hwm; ++i) sh[i] = Shadow{kUnallocated, 0, 0, 0, 0, 0};
  sites.clear();
  static_bytes = 0;
  for (size_t i = 0; i < dynamic_bytes; ++i) sh[i] = Shadow{kUninit, 0, 0, 0, 0, 0};
  std::memset(worker->arena, 0xff, dynamic_bytes);  // reads as NaN / -1 if read uninitialized
  arena_top = (dynamic_bytes + 15) / 16 * 16 + kRedzone;
  arena_hwm = arena_top;
}

void* dynamic_shared() {
  ThreadCtx* t = current_thread();
  return t ? arena_of(t) : nullptr;
}

void* static_shared_alloc(const char* file, int line, size_t bytes, size_t align) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) {
    std::fprintf(stderr, "kvsift emulator: shared memory declared outside a kernel (%s:%d)\n", file, line);
    std::abort();
  }
  Block& b = *t->block;
  for (const StaticSharedSite& s : b.sites) {
    if (s.line == line && (s.file == file || std::strcmp(s.file, file) == 0)) return arena_of(t) + s.offset;
  }
  const size_t off = (b.arena_top + align - 1) / align * align;
  b.static_bytes += bytes;
  const size_t total = b.static_bytes + b.launch->smem;
  if (b.static_bytes > b.launch->static_smem_limit || total > limits().smem_per_block_optin ||
      off + bytes + kRedzone > kArenaBytes) {
    b.fail(cudaErrorInvalidValue,
           b.launch->kernel_name() + " needs " + std::to_string(b.static_bytes) + " bytes of static and " +
               std::to_string(b.launch->smem) + " bytes of dynamic shared memory; the device allows " +
               std::to_string(b.launch->static_smem_limit) + " static and " +
               std::to_string(limits().smem_per_block_optin) + " in all per block",
           true);
    abort_thread(t);
  }
  Shadow* sh = b.worker->shadow.data();
  for (size_t i = off; i < off + bytes; ++i) sh[i] = Shadow{kUninit, 0, 0, 0, 0, 0};
  std::memset(arena_of(t) + off, 0xff, bytes);
  b.sites.push_back({file, line, off});
  b.arena_top = off + bytes + kRedzone;
  b.arena_hwm = std::max(b.arena_hwm, b.arena_top);
  return arena_of(t) + off;
}

uint32_t smem_addr(const void* p) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return 0;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(arena_of(t));
  if (a - base >= kArenaBytes) {
    Block& b = *t->block;
    b.fail(cudaErrorIllegalAddress,
           "__cvta_generic_to_shared of a pointer that is not shared memory (" + hex(a) + ") in " +
               b.launch->kernel_name() + " by " + b.where(t->tid),
           true);
    abort_thread(t);
  }
  return static_cast<uint32_t>(a - base);
}

void check_shared(ThreadCtx* t, uintptr_t addr, size_t n, bool write, const void* pc) {
  Block& b = *t->block;
  const uintptr_t off = addr - reinterpret_cast<uintptr_t>(arena_of(t));
  Shadow* sh = b.worker->shadow.data();
  const uint32_t epoch = b.epoch;
  const uint16_t wepoch = b.warps[t->warp].epoch;
  for (size_t i = off; i < off + n; ++i) {
    Shadow& s = sh[i];
    if (s.w_epoch == kUnallocated) {
      b.fail(cudaErrorIllegalAddress,
             std::string("out-of-bounds shared-memory ") + (write ? "write" : "read") + " of " + std::to_string(n) +
                 " bytes at shared offset " + std::to_string(off) + " in " + b.launch->kernel_name() + " at " +
                 describe_code(pc) + " by " + b.where(t->tid),
             true);
      abort_thread(t);
    }
    if (write) {
      if (s.w_epoch == kPending) {
        race(t, i, "wrote", "targets with a cp.async not yet waited for", s.w_tid, pc);
      } else if (s.w_epoch == epoch && !ordered(b, t, s.w_tid, s.w_wepoch)) {
        race(t, i, "wrote", s.w_tid == kAtomicWriter ? "updated" : "also wrote",
             s.w_tid == kAtomicWriter ? -2 : s.w_tid, pc);
      } else if (s.r_epoch == epoch && s.r_tid != t->tid &&
                 (s.r_tid == kManyReaders || !ordered(b, t, s.r_tid, s.r_wepoch))) {
        race(t, i, "wrote", "read", s.r_tid == kManyReaders ? -1 : s.r_tid, pc);
      }
      s.w_epoch = epoch;
      s.w_tid = static_cast<uint16_t>(t->tid);
      s.w_wepoch = wepoch;
    } else {
      if (s.w_epoch == kUninit) {
        b.fail(cudaErrorLaunchFailure,
               "read of uninitialized shared memory (shared offset " + std::to_string(i) + ") in " +
                   b.launch->kernel_name() + " at " + describe_code(pc) + " by " + b.where(t->tid),
               false);
      } else if (s.w_epoch == kPending) {
        b.fail(cudaErrorLaunchFailure,
               "read of shared memory (offset " + std::to_string(i) + ") that a cp.async by " +
                   tid_text(b, s.w_tid) + " has not completed: cp.async.wait_group missing, in " +
                   b.launch->kernel_name() + " at " + describe_code(pc) + " by " + b.where(t->tid),
               false);
      } else if (s.w_epoch == epoch && !ordered(b, t, s.w_tid, s.w_wepoch)) {
        race(t, i, "read", s.w_tid == kAtomicWriter ? "updated" : "wrote", s.w_tid == kAtomicWriter ? -2 : s.w_tid,
             pc);
      }
      if (s.r_epoch != epoch) {
        s.r_epoch = epoch;
        s.r_tid = static_cast<uint16_t>(t->tid);
        s.r_wepoch = wepoch;
      } else if (s.r_tid != t->tid && s.r_tid != kManyReaders) {
        // Two readers: remember one of them unless both are of one warp and ordered by it.
        if (!(s.r_tid / 32 == t->warp)) s.r_tid = kManyReaders;
        else {
          s.r_tid = static_cast<uint16_t>(t->tid);
          s.r_wepoch = wepoch;
        }
      }
    }
  }
}

void mark_shared_pending(ThreadCtx* t, uintptr_t addr, size_t n, const void* pc) {
  Block& b = *t->block;
  const uintptr_t off = addr - reinterpret_cast<uintptr_t>(arena_of(t));
  Shadow* sh = b.worker->shadow.data();
  for (size_t i = off; i < off + n; ++i) {
    if (i >= kArenaBytes || sh[i].w_epoch == kUnallocated) {
      b.fail(cudaErrorIllegalAddress,
             "out-of-bounds cp.async destination (shared offset " + std::to_string(off) + ") in " +
                 b.launch->kernel_name() + " at " + describe_code(pc) + " by " + b.where(t->tid),
             true);
      abort_thread(t);
    }
    sh[i].w_epoch = kPending;
    sh[i].w_tid = static_cast<uint16_t>(t->tid);
  }
}

void check_global(ThreadCtx* t, uintptr_t addr, size_t n, bool write, const void* pc) {
  if (const char* what = heap_check(addr, n)) {
    Block& b = *t->block;
    std::string detail = heap_describe(addr);
    b.fail(cudaErrorIllegalAddress,
           std::string("global-memory ") + (write ? "write" : "read") + " of " + std::to_string(n) + " bytes at " +
               hex(addr) + " " + what + (detail.empty() ? "" : " (" + detail + ")") + " in " +
               b.launch->kernel_name() + " at " + describe_code(pc) + " by " + b.where(t->tid),
           true);
    abort_thread(t);
  }
  if (write) heap_note_store(addr, n);
}

// An atomic read-modify-write: bounds, alignment and initialization like any access; it does not
// race with other atomics, but a plain access to the same byte in the same barrier epoch races
// with it.
void atomic_access(void* p, size_t n, const void* pc) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  Block& b = *t->block;
  const uintptr_t arena = reinterpret_cast<uintptr_t>(arena_of(t));
  const bool shared = a - arena < kArenaBytes;
  if (!shared && !in_heap(a)) return;
  if ((a & (n - 1)) != 0) {
    b.fail(cudaErrorMisalignedAddress,
           "misaligned " + std::to_string(n) + "-byte atomic at " + hex(a) + " in " + b.launch->kernel_name() + " at " +
               describe_code(pc) + " by " + b.where(t->tid),
           true);
    abort_thread(t);
  }
  if (!shared) {
    check_global(t, a, n, true, pc);
    return;
  }
  Shadow* sh = b.worker->shadow.data();
  const uintptr_t off = a - arena;
  for (size_t i = off; i < off + n; ++i) {
    Shadow& s = sh[i];
    if (s.w_epoch == kUnallocated) {
      b.fail(cudaErrorIllegalAddress,
             "out-of-bounds shared-memory atomic at shared offset " + std::to_string(off) + " in " +
                 b.launch->kernel_name() + " at " + describe_code(pc) + " by " + b.where(t->tid),
             true);
      abort_thread(t);
    }
    if (s.w_epoch == kUninit) {
      b.fail(cudaErrorLaunchFailure,
             "atomic on uninitialized shared memory (shared offset " + std::to_string(i) + ") in " +
                 b.launch->kernel_name() + " at " + describe_code(pc) + " by " + b.where(t->tid),
             false);
    } else if (s.w_epoch == b.epoch && s.w_tid != kAtomicWriter && !ordered(b, t, s.w_tid, s.w_wepoch)) {
      race(t, i, "updated atomically", "wrote", s.w_tid, pc);
    } else if (s.r_epoch == b.epoch && s.r_tid != t->tid &&
               (s.r_tid == kManyReaders || !ordered(b, t, s.r_tid, s.r_wepoch))) {
      race(t, i, "updated atomically", "read", s.r_tid == kManyReaders ? -1 : s.r_tid, pc);
    }
    s.w_epoch = b.epoch;
    s.w_tid = kAtomicWriter;
    s.w_wepoch = b.warps[t->warp].epoch;
  }
}

namespace {
inline void access(uintptr_t a, size_t n, bool write, bool sized, const void* pc);
}  // namespace

void fence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

void vector_access(const void* p, size_t bytes, bool write, const void* pc) {
  access(reinterpret_cast<uintptr_t>(p), bytes, write, true, pc);
}

void load_acquire(void* dst, const void* src, size_t bytes, const void* pc) {
  access(reinterpret_cast<uintptr_t>(src), bytes, false, bytes == 2 || bytes == 4 || bytes == 8 || bytes == 16, pc);
  switch (bytes) {
    case 4: {
      const uint32_t v = __atomic_load_n(static_cast<const uint32_t*>(src), __ATOMIC_ACQUIRE);
      std::memcpy(dst, &v, 4);
      return;
    }
    case 8: {
      const uint64_t v = __atomic_load_n(static_cast<const uint64_t*>(src), __ATOMIC_ACQUIRE);
      std::memcpy(dst, &v, 8);
      return;
    }
    default:
      __atomic_thread_fence(__ATOMIC_ACQUIRE);
      std::memcpy(dst, src, bytes);
      __atomic_thread_fence(__ATOMIC_ACQUIRE);
  }
}

namespace {

inline void access(uintptr_t a, size_t n, bool write, bool sized, const void* pc) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;  // host code of a .cu file, or the emulator itself
  const uintptr_t arena = reinterpret_cast<uintptr_t>(t->block->worker->arena);
  const bool shared = a - arena < kArenaBytes;
  if (!shared && !in_heap(a)) return;
  if (sized && n > 1 && (a & (n - 1)) != 0) {
    Block& b = *t->block;
    b.fail(cudaErrorMisalignedAddress,
           std::string("misaligned ") + std::to_string(n) + "-byte " + (shared ? "shared" : "global") + " " +
               (write ? "write" : "read") + " at " + hex(a) + " in " + b.launch->kernel_name() + " at " +
               describe_code(pc) + " by " + b.where(t->tid),
           true);
    abort_thread(t);
  }
  if (shared) {
    check_shared(t, a, n, write, pc);
  } else {
    check_global(t, a, n, write, pc);
  }
}

}  // namespace
}  // namespace kvsift_emu

// The instrumentation's entry points. The kernel sources are compiled with -fsanitize=thread,
// used only as an instrumentation pass (its runtime is never linked): it calls a hook before every
// load and store, reads and writes separately even for a read-modify-write (AddressSanitizer's
// pass folds a store into the load check before it, which would hide writes from the race and
// determinism checks). Sized hooks are for accesses the compiler knows to be naturally aligned;
// every hook checks the address actually used.
#define KVSIFT_EMU_HOOKS(n)                                                                          \
  extern "C" void __tsan_read##n(void* a) {                                                          \
    kvsift_emu::access(reinterpret_cast<uintptr_t>(a), n, false, true, __builtin_return_address(0));  \
  }                                                                                                  \
  extern "C" void __tsan_write##n(void* a) {                                                         \
    kvsift_emu::access(reinterpret_cast<uintptr_t>(a), n, true, true, __builtin_return_address(0));   \
  }                                                                                                  \
  extern "C" void __tsan_unaligned_read##n(void* a) {                                                \
    kvsift_emu::access(reinterpret_cast<uintptr_t>(a), n, false, true, __builtin_return_address(0));  \
  }                                                                                                  \
  extern "C" void __tsan_unaligned_write##n(void* a) {                                               \
    kvsift_emu::access(reinterpret_cast<uintptr_t>(a), n, true, true, __builtin_return_address(0));   \
  }
KVSIFT_EMU_HOOKS(1)
KVSIFT_EMU_HOOKS(2)
KVSIFT_EMU_HOOKS(4)
KVSIFT_EMU_HOOKS(8)
KVSIFT_EMU_HOOKS(16)
#undef KVSIFT_EMU_HOOKS
extern "C" void __tsan_read_range(void* a, unsigned long n) {
  kvsift_emu::access(reinterpret_cast<uintptr_t>(a), n, false, false, __builtin_return_address(0));
}
extern "C" void __tsan_write_range(void* a, unsigned long n) {
  kvsift_emu::access(reinterpret_cast<uintptr_t>(a), n, true, false, __builtin_return_address(0));
}
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}
