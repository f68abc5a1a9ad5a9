// kvsift/cuda/launchers.h: the CUDA launchers. Each takes its params struct (common/params.h), a
// device workspace where it needs one, and a stream, and returns cudaError_t: it never
// synchronizes the host, never allocates, and never aborts. The binding (cpp/) checks shapes and
// owns the memory; the launcher only checks what it needs to launch (empty problems return
// cudaSuccess, unsupported head dims cudaErrorInvalidValue).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "../common/params.h"
#include "dispatch.h"

namespace kvsift::cuda {

// Workspace sizes in bytes (0 when none is needed); the binding takes them from its pool.
size_t snapkv_scores_workspace_bytes(const SnapkvScoresParams& p);
size_t topk_workspace_bytes(const TopkParams& p);
size_t accumulate_workspace_bytes(const AccumulateParams& p);

cudaError_t snapkv_scores(const SnapkvScoresParams& p, void* workspace, cudaStream_t stream);
cudaError_t pool1d(const PoolParams& p, cudaStream_t stream);
cudaError_t topk(const TopkParams& p, void* workspace, cudaStream_t stream);
cudaError_t gather(const GatherParams& p, cudaStream_t stream);
cudaError_t fill_window(const FillWindowParams& p, cudaStream_t stream);
cudaError_t l2_norms(const L2NormsParams& p, cudaStream_t stream);
cudaError_t protect_scores(const ProtectParams& p, cudaStream_t stream);
cudaError_t accumulate(const AccumulateParams& p, void* workspace, cudaStream_t stream);
cudaError_t gumbel(const GumbelParams& p, cudaStream_t stream);
cudaError_t head_reduce(const HeadReduceParams& p, cudaStream_t stream);

// Gather writes a flag on the current device when it met a position out of range. This reads
// it (synchronizing `stream`) and clears it: *had_error = 1 when any gather since the last call
// saw a bad position.
cudaError_t read_and_clear_index_error(int* had_error, cudaStream_t stream);

}  // namespace kvsift::cuda
