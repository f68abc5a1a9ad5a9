// kvsift/cuda/adaptive.h: the head-adaptive selection launcher (cuda/adaptive.cu).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "../common/adaptive.h"

namespace kvsift::cuda {

size_t adaptive_select_workspace_bytes(const AdaptiveSelectParams& p);
cudaError_t adaptive_select(const AdaptiveSelectParams& p, void* workspace, cudaStream_t stream);

}  // namespace kvsift::cuda
