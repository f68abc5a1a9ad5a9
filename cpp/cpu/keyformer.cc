// kvsift/cpp/cpu/keyformer.cc: Keyformer / H2O / TOVA score accumulation on the CPU
// (docs/ALGORITHMS.md, "Keyformer" and "Baselines"; semantics: AccumulateParams in
// common/params.h). The blocked two-pass core is in attn_colsum.h, shared with SnapKV's votes.
#include "attn_colsum.h"
#include "cpu_ops.h"

namespace kvsift::cpu {

void accumulate(const AccumulateParams& p) { attn_colsum(accumulate_problem(p)); }

}  // namespace kvsift::cpu
