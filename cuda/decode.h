// kvsift/cuda/decode.h: launchers of decode attention (cuda/decode.cu) and Quest (cuda/quest.cu).
// Raw pointers and a stream in, cudaError_t out; they never synchronize the host, never allocate
// (the binding passes a workspace of *_workspace_bytes from its stream-ordered pool), never abort.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "../common/decode.h"
#include "../common/quest.h"

namespace kvsift::cuda {

// Workspace of decode_attention: split-K partials, and with accumulation the masses' logits.
size_t decode_workspace_bytes(const DecodeParams& p);
// cudaErrorInvalidValue for D > kDecodeMaxD, T > kDecodeMaxT or an unsupported dtype.
cudaError_t decode_attention(const DecodeParams& p, void* workspace, cudaStream_t stream);

cudaError_t quest_metadata(const QuestMetaParams& p, cudaStream_t stream);
cudaError_t quest_bounds(const QuestBoundsParams& p, cudaStream_t stream);
cudaError_t quest_pad(const QuestPadParams& p, cudaStream_t stream);

}  // namespace kvsift::cuda
