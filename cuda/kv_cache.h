// kvsift/cuda/kv_cache.h: launchers of cuda/kv_cache.cu (the row copy behind copy() and
// KvCache.append, appended positions, and retain's checked compaction). Semantics:
// common/kv_cache.h. Each returns cudaError_t, never synchronizes the host, never allocates.
#pragma once
#include <cuda_runtime_api.h>

#include "../common/kv_cache.h"

namespace kvsift::cuda {

cudaError_t row_copy(const RowCopyParams& p, cudaStream_t stream);
cudaError_t append_positions(const AppendPositionsParams& p, cudaStream_t stream);
// Adds the number of bad entries to *p.bad (which the caller zeroed on `stream`) and raises the
// device's retain-error flag when there are any.
cudaError_t retain_check(const RetainCheckParams& p, cudaStream_t stream);
// Out of place (out must not overlap src); writes nothing when *p.skip_if != 0.
cudaError_t retain_gather(const RetainGatherParams& p, cudaStream_t stream);

// Writes n host ints to device memory through kernel parameters (a launch per 256), not a
// pageable host-to-device copy: stream-ordered, nothing staged, capturable in a CUDA graph. For
// the few per-row integers append and retain need (offsets, counts, starts, lengths).
cudaError_t store_ints(int32_t* dst, const int32_t* host, int64_t n, cudaStream_t stream);

// Like read_and_clear_index_error (cuda/launchers.h), for retain's check: *had_error = 1 when a
// retain on the current device since the last call met an invalid selection (and wrote nothing).
cudaError_t read_and_clear_retain_error(int* had_error, cudaStream_t stream);

}  // namespace kvsift::cuda
