// kvsift/cpp/cpu/cpu_ops.h: the CPU reference backend. Same params structs and semantics as the
// CUDA launchers (common/params.h), pointers into host memory. Multi-threaded through
// parallel_for; the binding has already validated shapes, so these only compute.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../../common/params.h"

namespace kvsift::cpu {

void snapkv_scores(const SnapkvScoresParams& p);
void pool1d(const PoolParams& p);
void topk(const TopkParams& p);
// Returns how many positions fell outside [0, N) (their rows are written as zeros).
int64_t gather(const GatherParams& p);
void fill_window(const FillWindowParams& p);
void l2_norms(const L2NormsParams& p);
void protect_scores(const ProtectParams& p);
void accumulate(const AccumulateParams& p);
void gumbel(const GumbelParams& p);
void head_reduce(const HeadReduceParams& p);

}  // namespace kvsift::cpu
