// kvsift/cpp/cpu/snapkv_scores.cc: SnapKV observation-window votes on the CPU (ALGORITHMS.md §1,
// steps 1-4; semantics: SnapkvScoresParams in common/params.h). The blocked two-pass core is in
// attn_colsum.h, shared with Keyformer's accumulation.
#include "attn_colsum.h"
#include "cpu_ops.h"

namespace kvsift::cpu {

void snapkv_scores(const SnapkvScoresParams& p) {
  ColsumProblem P{};
  P.kind = ColsumKind::Snapkv;
  P.q = p.q;
  P.k = p.k;
  P.dtype = p.dtype;
  P.B = p.B;
  P.Hq = p.Hq;
  P.Hkv = p.Hkv;
  P.Tq = p.W;
  P.N = p.N;
  P.D = p.D;
  P.seq_lens = p.seq_lens;
  P.lse = p.lse;
  P.scale = p.scale;
  P.tau = 1.0f;  // (x * scale + 0) / 1 is exactly x * scale
  P.noise = false;
  P.group_reduce = p.group_reduce;
  P.out = p.out;
  attn_colsum(P);
}

}  // namespace kvsift::cpu
