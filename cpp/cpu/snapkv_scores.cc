// kvsift/cpp/cpu/snapkv_scores.cc: SnapKV observation-window votes on the CPU (docs/ALGORITHMS.md,
// "SnapKV", steps 1-4; semantics: SnapkvScoresParams in common/params.h). The blocked two-pass
// core is in attn_colsum.h, shared with Keyformer's accumulation.
#include "attn_colsum.h"
#include "cpu_ops.h"

namespace kvsift::cpu {

void snapkv_scores(const SnapkvScoresParams& p) { attn_colsum(snapkv_problem(p)); }

}  // namespace kvsift::cpu
