// kvsift/cuda/emu/warp.cc: warp collectives and the PTX instructions kvsift wraps in cuda/ptx/.
//
// A collective is a rendezvous of the lanes in its mask: each lane parks its arguments (on its own
// fiber stack) and waits; the last lane to arrive computes every lane's result. The lanes must
// all be at the same call site with the same mask, and none of them may have exited: otherwise
// the emulator reports the divergence (a GPU would hang or compute garbage).
//
// The PTX emulations follow the fragment tables of the PTX ISA (section "Matrix Fragments for
// mma.m16n8k16 / mma.m16n8k8" and "ldmatrix"): for lane l, groupID = l >> 2 and
// threadID_in_group = l % 4; the lower 16 bits of a .b32 register hold the lower-indexed element.
#include <cmath>
#include <cstdio>
#include <cstring>

#include "emu_internal.h"

namespace kvsift_emu {
namespace {

const char* kind_name(int kind) {
  switch (kind) {
    case 0: return "__shfl_sync";
    case 1: return "__shfl_up_sync";
    case 2: return "__shfl_down_sync";
    case 3: return "__shfl_xor_sync";
    case 4: return "__ballot_sync/__any_sync/__all_sync";
    case 5: return "__syncwarp";
    case 6: return "ldmatrix";
    case 7: return "mma";
    default: return "a warp collective";
  }
}

std::string mask_text(unsigned m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", m);
  return buf;
}

[[noreturn]] void fatal(ThreadCtx* t, cudaError_t code, const std::string& text) {
  t->block->fail(code, text, true);
  yield_to_scheduler(current_thread());
  __builtin_unreachable();
}

}  // namespace

void warp_collective(ThreadCtx* t, int kind, unsigned mask, const char* file, int line, void* args,
                     void (*op)(Block& b, int warp, Collective& c)) {
  Block& b = *t->block;
  Warp& w = b.warps[t->warp];
  const unsigned bit = 1u << t->lane;
  if ((mask & bit) == 0) {
    fatal(t, cudaErrorLaunchFailure,
          std::string(kind_name(kind)) + " " + short_site(file, line) + " in " + b.launch->kernel_name() +
              " called by " + b.where(t->tid) + " with mask " + mask_text(mask) + ", which excludes the calling lane");
  }
  Collective* c = nullptr;
  for (Collective& p : w.pending) {
    if (p.active && (p.mask & mask) != 0) {
      c = &p;
      break;
    }
  }
  if (c != nullptr) {
    if (c->mask != mask || c->kind != kind || c->line != line || std::strcmp(c->file, file) != 0) {
      fatal(t, cudaErrorLaunchFailure,
            "warp divergence in " + b.launch->kernel_name() + ": " + b.where(t->tid) + " reaches " + kind_name(kind) + " " +
                short_site(file, line) + " with mask " + mask_text(mask) + " while lanes " + mask_text(c->arrived) +
                " of its warp wait in " + kind_name(c->kind) + " " + short_site(c->file, c->line) + " with mask " +
                mask_text(c->mask));
    }
  } else {
    if ((mask & w.exited) != 0) {
      fatal(t, cudaErrorLaunchFailure,
            std::string(kind_name(kind)) + " " + short_site(file, line) + " in " + b.launch->kernel_name() + " by " +
                b.where(t->tid) + " names lanes " + mask_text(mask & w.exited) + " in its mask " + mask_text(mask) +
                ", which have exited");
    }
    for (Collective& p : w.pending) {
      if (!p.active) {
        c = &p;
        break;
      }
    }
    if (c == nullptr) fatal(t, cudaErrorLaunchFailure, "more than 4 concurrent collectives in one warp");
    c->active = true;
    c->mask = mask;
    c->arrived = 0;
    c->kind = kind;
    c->file = file;
    c->line = line;
    c->op = op;
  }
  c->arrived |= bit;
  c->lane_args[t->lane] = args;
  if (c->arrived == c->mask) {
    c->op(b, t->warp, *c);
    ++w.epoch;
    for (int l = 0; l < 32; ++l) {
      if ((c->mask >> l) & 1u) {
        ThreadCtx& lt = b.threads[t->warp * 32 + l];
        if (lt.state == State::AtWarp) lt.state = State::Runnable;
      }
    }
    c->active = false;
    if (b.aborted) yield_to_scheduler(current_thread());
    return;
  }
  t->state = State::AtWarp;
  t->site_file = file;
  t->site_line = line;
  yield_to_scheduler(t);
}

void warp_lane_exited(ThreadCtx* t) {
  Block& b = *t->block;
  Warp& w = b.warps[t->warp];
  const unsigned bit = 1u << t->lane;
  w.exited |= bit;
  for (Collective& c : w.pending) {
    if (c.active && (c.mask & bit) && !(c.arrived & bit)) {
      b.fail(cudaErrorLaunchFailure,
             "warp divergence in " + b.launch->kernel_name() + ": " + b.where(t->tid) + " exited while lanes " +
                 mask_text(c.arrived) + " of its warp wait for it in " + kind_name(c.kind) + " " +
                 short_site(c.file, c.line) + " with mask " + mask_text(c.mask),
             true);
      return;
    }
  }
}

// --- shuffles, votes, __syncwarp ----------------------------------------------------------------

namespace {
struct ShflArgs {
  uint64_t value;
  int arg, width;
  uint64_t result;
};

void shfl_op(Block& b, int warp, Collective& c) {
  for (int l = 0; l < 32; ++l) {
    if (!((c.mask >> l) & 1u)) continue;
    ShflArgs* a = static_cast<ShflArgs*>(c.lane_args[l]);
    const int w = a->width;
    if (w <= 0 || w > 32 || (w & (w - 1)) != 0) {
      b.fail(cudaErrorLaunchFailure, std::string(kind_name(c.kind)) + " " + short_site(c.file, c.line) +
                                         " with width " + std::to_string(w) + " (not a power of two <= 32)",
             true);
      return;
    }
    const int base = l & ~(w - 1);
    int src = l;
    switch (c.kind) {
      case 0: src = base + (a->arg & (w - 1)); break;
      case 1: src = (l - base) >= a->arg ? l - a->arg : l; break;
      case 2: src = (l - base) + a->arg < w ? l + a->arg : l; break;
      case 3: src = l ^ (a->arg & 31); if (src >= base + w) src = l; break;
    }
    if (!((c.mask >> src) & 1u)) {
      b.fail(cudaErrorLaunchFailure,
             std::string(kind_name(c.kind)) + " " + short_site(c.file, c.line) + " in " + b.launch->kernel_name() +
                 ": lane " + std::to_string(l) + " of warp " + std::to_string(warp) + " reads lane " +
                 std::to_string(src) + ", which is not in the mask " + mask_text(c.mask) + " (undefined value)",
             false);
      src = l;
    }
    a->result = static_cast<ShflArgs*>(c.lane_args[src])->value;
  }
}

struct VoteArgs {
  int kind;
  bool pred;
  unsigned result;
};
void vote_op(Block&, int, Collective& c) {
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l) {
    if (((c.mask >> l) & 1u) && static_cast<VoteArgs*>(c.lane_args[l])->pred) ballot |= 1u << l;
  }
  for (int l = 0; l < 32; ++l) {
    if (!((c.mask >> l) & 1u)) continue;
    VoteArgs* a = static_cast<VoteArgs*>(c.lane_args[l]);
    a->result = a->kind == 0 ? ballot : a->kind == 1 ? (ballot != 0) : (ballot == c.mask);
  }
}
void nothing_op(Block&, int, Collective&) {}
}  // namespace

uint64_t shfl(ShflKind kind, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return value;
  ShflArgs a{value, arg, width, 0};
  warp_collective(t, static_cast<int>(kind), mask, file, line, &a, shfl_op);
  return a.result;
}

unsigned vote(int kind, unsigned mask, bool pred, const char* file, int line) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return 0;
  VoteArgs a{kind, pred, 0};
  warp_collective(t, 4, mask, file, line, &a, vote_op);
  return a.result;
}

void syncwarp(unsigned mask, const char* file, int line) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  warp_collective(t, 5, mask, file, line, nullptr, nothing_op);
}

unsigned active_mask() {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return 1u;
  return ~t->block->warps[t->warp].exited;
}

// --- cp.async ------------------------------------------------------------------------------------

namespace {
void require_arch(ThreadCtx* t, int arch, const char* what, const void* pc) {
  if (device_arch() >= arch) return;
  Block& b = *t->block;
  fatal(t, cudaErrorIllegalInstruction,
        std::string(what) + " needs sm_" + std::to_string(arch / 10) + " but the device is sm_" +
            std::to_string(device_arch() / 10) + ": " + b.launch->kernel_name() + " at " + describe_code(pc) +
            " by " + b.where(t->tid) + " (the launcher chose code the device cannot run)");
}

void perform_copy(ThreadCtx* t, const AsyncCopy& c) {
  Block& b = *t->block;
  char* dst = arena_of(t) + c.dst;
  if (c.src_size > 0) std::memcpy(dst, c.src, static_cast<size_t>(c.src_size));
  if (c.cp_size > c.src_size) std::memset(dst + c.src_size, 0, static_cast<size_t>(c.cp_size - c.src_size));
  Shadow* sh = b.worker->shadow.data();
  for (int i = 0; i < c.cp_size; ++i) {
    Shadow& s = sh[c.dst + i];
    s.w_epoch = b.epoch;
    s.w_tid = static_cast<uint16_t>(t->tid);
    s.w_wepoch = b.warps[t->warp].epoch;
  }
}
}  // namespace

void cp_async(uint32_t dst, const void* src, int cp_size, int src_size, const char* file, int line) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  const void* pc = __builtin_return_address(0);
  require_arch(t, 800, "cp.async", pc);
  Block& b = *t->block;
  if ((cp_size != 4 && cp_size != 8 && cp_size != 16) || src_size < 0 || src_size > cp_size) {
    fatal(t, cudaErrorIllegalInstruction,
          "cp.async with cp-size " + std::to_string(cp_size) + " and src-size " + std::to_string(src_size) + " " +
              short_site(file, line));
  }
  const uintptr_t s = reinterpret_cast<uintptr_t>(src);
  if ((dst % static_cast<uint32_t>(cp_size)) != 0 || (s % static_cast<uintptr_t>(cp_size)) != 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "(shared %u, global 0x%lx)", dst, static_cast<unsigned long>(s));
    fatal(t, cudaErrorMisalignedAddress,
          "misaligned " + std::to_string(cp_size) + "-byte cp.async " + buf + " in " + b.launch->kernel_name() +
              " " + short_site(file, line) + " by " + b.where(t->tid));
  }
  if (src_size > 0 && in_heap(s)) check_global(t, s, static_cast<size_t>(src_size), false, pc);
  mark_shared_pending(t, reinterpret_cast<uintptr_t>(arena_of(t)) + dst, static_cast<size_t>(cp_size), pc);
  t->uncommitted.push_back({dst, src, cp_size, src_size});
}

void cp_async_commit() {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  t->groups.push_back(std::move(t->uncommitted));
  t->uncommitted.clear();
}

void cp_async_wait(int n) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  complete_async_copies(t, n, false);
}

void complete_async_copies(ThreadCtx* t, int keep_groups, bool all) {
  while (static_cast<int>(t->groups.size()) > keep_groups) {
    for (const AsyncCopy& c : t->groups.front()) perform_copy(t, c);
    t->groups.erase(t->groups.begin());
  }
  if (all) {
    for (const AsyncCopy& c : t->uncommitted) perform_copy(t, c);
    t->uncommitted.clear();
  }
}

// --- ldmatrix ------------------------------------------------------------------------------------

namespace {
struct LdmArgs {
  uint32_t addr;
  uint32_t* r;
  const void* pc;
};

void ldmatrix_op(Block& b, int warp, Collective& c) {
  char* arena = b.worker->arena;
  uint32_t row_addr[4][8];
  for (int l = 0; l < 32; ++l) {
    LdmArgs* a = static_cast<LdmArgs*>(c.lane_args[l]);
    ThreadCtx* lt = &b.threads[warp * 32 + l];
    if (a->addr % 16 != 0) {
      b.fail(cudaErrorMisalignedAddress,
             "misaligned ldmatrix row address (shared " + std::to_string(a->addr) + ") in " + b.launch->kernel_name() +
                 " at " + describe_code(a->pc) + " by " + b.where(lt->tid),
             true);
      return;
    }
    if (a->addr + 16 > kArenaBytes) {
      b.fail(cudaErrorIllegalAddress, "ldmatrix row outside shared memory in " + b.launch->kernel_name(), true);
      return;
    }
    check_shared(lt, reinterpret_cast<uintptr_t>(arena) + a->addr, 16, false, a->pc);
    if (b.aborted) return;
    row_addr[l / 8][l % 8] = a->addr;
  }
  for (int l = 0; l < 32; ++l) {
    LdmArgs* a = static_cast<LdmArgs*>(c.lane_args[l]);
    for (int m = 0; m < 4; ++m) std::memcpy(&a->r[m], arena + row_addr[m][l / 4] + 4 * (l % 4), 4);
  }
}
}  // namespace

void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, const char* file, int line) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  const void* pc = __builtin_return_address(0);
  require_arch(t, 750, "ldmatrix", pc);
  LdmArgs a{addr, r, pc};
  warp_collective(t, 6, 0xffffffffu, file, line, &a, ldmatrix_op);
}

// --- mma -----------------------------------------------------------------------------------------

namespace {
struct MmaArgs {
  int k;  // 16 or 8
  bool bf16;
  const uint32_t* a;
  const uint32_t* b;
  float* d;
};

float element(uint32_t reg, int half, bool bf16) {
  const unsigned short bits = static_cast<unsigned short>(half ? reg >> 16 : reg & 0xffffu);
  return bf16 ? bf16_bits_to_f32(bits) : f16_bits_to_f32(bits);
}

void mma_op(Block&, int, Collective& c) {
  const MmaArgs* first = static_cast<MmaArgs*>(c.lane_args[0]);
  const int K = first->k;
  const bool bf16 = first->bf16;
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const MmaArgs* m = static_cast<MmaArgs*>(c.lane_args[l]);
    const int g = l >> 2, tg = l & 3;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * tg + h] = element(m->a[0], h, bf16);
      A[g + 8][2 * tg + h] = element(m->a[1], h, bf16);
      B[2 * tg + h][g] = element(m->b[0], h, bf16);
      if (K == 16) {
        A[g][2 * tg + 8 + h] = element(m->a[2], h, bf16);
        A[g + 8][2 * tg + 8 + h] = element(m->a[3], h, bf16);
        B[2 * tg + 8 + h][g] = element(m->b[1], h, bf16);
      }
    }
    C[g][2 * tg] = m->d[0];
    C[g][2 * tg + 1] = m->d[1];
    C[g + 8][2 * tg] = m->d[2];
    C[g + 8][2 * tg + 1] = m->d[3];
  }
  // Products of f16/bf16 values are exact in fp32; the hardware's accumulation order is not
  // specified, so the sum is formed in double and rounded once.
  float D[16][8];
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      double s = C[i][j];
      for (int k = 0; k < K; ++k) s += static_cast<double>(A[i][k]) * B[k][j];
      D[i][j] = static_cast<float>(s);
    }
  }
  for (int l = 0; l < 32; ++l) {
    MmaArgs* m = static_cast<MmaArgs*>(c.lane_args[l]);
    const int g = l >> 2, tg = l & 3;
    m->d[0] = D[g][2 * tg];
    m->d[1] = D[g][2 * tg + 1];
    m->d[2] = D[g + 8][2 * tg];
    m->d[3] = D[g + 8][2 * tg + 1];
  }
}
}  // namespace

void mma_m16n8k16(bool bf16, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const char* file,
                  int line) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  require_arch(t, 800, bf16 ? "mma.m16n8k16 (bf16)" : "mma.m16n8k16 (f16)", __builtin_return_address(0));
  MmaArgs m{16, bf16, a, b, d};
  warp_collective(t, 7, 0xffffffffu, file, line, &m, mma_op);
}

void mma_m16n8k8_f16(float (&d)[4], const uint32_t (&a)[2], uint32_t b, const char* file, int line) {
  ThreadCtx* t = current_thread();
  if (t == nullptr) return;
  require_arch(t, 750, "mma.m16n8k8 (f16)", __builtin_return_address(0));
  const uint32_t bb[1] = {b};
  MmaArgs m{8, false, a, bb, d};
  warp_collective(t, 7, 0xffffffffu, file, line, &m, mma_op);
}

float ex2_approx_ftz(float x) {
  // FTZ on the input and the result, as .ftz does; the value itself is exp2f's (the hardware's
  // approximation differs in the last bits: docs/GPU.md).
  if (std::fpclassify(x) == FP_SUBNORMAL) x = std::copysign(0.0f, x);
  float y = exp2f(x);
  if (std::fpclassify(y) == FP_SUBNORMAL) y = 0.0f;
  return y;
}

}  // namespace kvsift_emu
