// kvsift/common/kv_cache.h: the problems behind KvCache (lib/kv_cache.ts) and the tensor copy
// primitive (lib/primitives.ts): a strided row copy, the positions of appended tokens, and the
// checked, in-place compaction of retain. Backend-neutral: the CPU twins live in
// cpp/cpu/kv_cache.cc, the CUDA launchers in cuda/kv_cache.cu (declared in cuda/kv_cache.h).
//
// Every tensor these touch is seen as rows: element row (b, h, s) of a [B, H, S, ...] tensor
// starts at data + b*sB + h*sH + s*sS bytes and holds row_bytes contiguous bytes. That one view
// covers a K/V cache in either layout (bhsd: sS = D*es; bshd: sS = H*D*es), a per-token tensor
// [B, H, S] (row_bytes = element size) and a whole axis slab for copy().
#pragma once
#include <cstdint>

#include "params.h"

namespace kvsift {

// Byte-strided rows: row (b, h, s) at data + b*sB + h*sH + s*sS, each row_bytes long.
struct RowView {
  const void* data;
  int64_t sB, sH, sS;
};
struct MutRowView {
  void* data;
  int64_t sB, sH, sS;
};

// dst row (b, h, offsets[b] + i) = src row (b, h, i) for i < counts[b], every b < B, h < H.
// offsets / counts are [B] (device memory on CUDA), or nullptr for 0 / T. A src stride of 0
// broadcasts. src.data == nullptr writes zero rows instead. When skip_if is not null and *skip_if
// != 0 (read on the device) nothing is written: retain's write-back obeys its check this way.
// src and dst rows must not overlap.
struct RowCopyParams {
  RowView src;
  MutRowView dst;
  int64_t B, H, T;
  int64_t row_bytes;
  const int32_t* offsets;
  const int32_t* counts;
  const int32_t* skip_if;
};

// The positions of appended tokens: positions[b, h, offsets[b] + i] = starts[b] + i for
// i < counts[b] (<= T); positions is i32 [B, H, stride] contiguous. offsets/counts/starts are [B].
struct AppendPositionsParams {
  int32_t* positions;
  int64_t B, H, T, stride;
  const int32_t* offsets;
  const int32_t* counts;
  const int32_t* starts;
};

// The CPU twins of copy() and KvCache.append.
namespace cpu {
void row_copy(const RowCopyParams& p);
void append_positions(const AppendPositionsParams& p);
}  // namespace cpu

// retain's check: keep[b, h, i] (element b*keep_sB + h*keep_sH + i, i < C; keep_sH = 0 is one
// selection for every head) must be strictly ascending and inside [0, lengths[b]). *bad (device
// memory on CUDA, zeroed by the caller) receives the number of entries that break the rule; the
// CUDA kernel also raises the device's retain-error flag (read_and_clear_retain_error).
struct RetainCheckParams {
  const int32_t* keep;
  int64_t keep_sB, keep_sH;
  int64_t B, H, C;
  const int32_t* lengths;
  int32_t* bad;
};

// retain's gather: out row (b, h, i) = src row (b, h, keep[b, h, i]) for i < C, unless *skip_if.
// The CUDA path gathers into a temporary and copies it back with RowCopyParams (parallel rows
// must not read what other rows write); the CPU twin compacts in place (retain_in_place).
struct RetainGatherParams {
  RowView src;
  MutRowView out;
  int64_t B, H, C, row_bytes;
  const int32_t* keep;
  int64_t keep_sB, keep_sH;
  const int32_t* skip_if;
};

// The CPU twins of KvCache.retain.
namespace cpu {
// Returns the number of bad entries (0: the selection is valid); *p.bad is ignored.
int64_t retain_check(const RetainCheckParams& p);
// In place (out.data == src.data with the same strides): valid because keep[i] >= i and ascending,
// so row i never overwrites a row a later i still reads. Rows of different (b, h) run in parallel.
void retain_in_place(const RetainGatherParams& p);
}  // namespace cpu

}  // namespace kvsift
