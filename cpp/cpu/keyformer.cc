// kvsift/cpp/cpu/keyformer.cc: Keyformer / H2O / TOVA score accumulation on the CPU
// (ALGORITHMS.md §3-4; semantics: AccumulateParams in common/params.h). The blocked two-pass core
// is in attn_colsum.h, shared with SnapKV's votes.
#include "attn_colsum.h"
#include "cpu_ops.h"

namespace kvsift::cpu {

void accumulate(const AccumulateParams& p) {
  ColsumProblem P{};
  P.kind = ColsumKind::Accumulate;
  P.q = p.q;
  P.k = p.k;
  P.dtype = p.dtype;
  P.B = p.B;
  P.Hq = p.Hq;
  P.Hkv = p.Hkv;
  P.Tq = p.T;
  P.N = p.N;
  P.D = p.D;
  P.seq_lens = p.seq_lens;
  P.lse = nullptr;
  P.scale = p.scale;
  P.tau = p.tau;
  P.noise = p.noise == NoiseKind::Gumbel;
  P.seed = p.seed;
  P.step = p.step;
  P.group_reduce = GroupReduce::Sum;
  P.out = p.scores;
  attn_colsum(P);
}

}  // namespace kvsift::cpu
