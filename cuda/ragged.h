// kvsift/cuda/ragged.h: the ragged per-head cache launchers (cuda/ragged.cu).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "../common/ragged.h"

namespace kvsift::cuda {

cudaError_t ragged_gather(const RaggedGatherParams& p, cudaStream_t stream);
cudaError_t ragged_append(const RaggedAppendParams& p, cudaStream_t stream);
size_t ragged_accumulate_workspace_bytes(const RaggedAccumulateParams& p);
cudaError_t ragged_accumulate(const RaggedAccumulateParams& p, void* workspace, cudaStream_t stream);
cudaError_t ragged_layer_scores(const RaggedLayerScoresParams& p, cudaStream_t stream);
cudaError_t ragged_zero_gaps(const RaggedZeroGapsParams& p, cudaStream_t stream);

}  // namespace kvsift::cuda
