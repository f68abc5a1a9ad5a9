/** bench entries of decode attention (lib/decode.ts); bench/decode.js adds the fused ratio and Quest. */
'use strict';

const { bytes } = require('../shapes');
const { attention } = require('../../reference/decode');
const { TOL, compareNumeric } = require('../compare');

/** The step's output [B, Hq, 1, D] in the inputs' dtype. */
const outBytes = (c) => c.b * c.hq * c.d * c.esz;
/** out is rounded once to the inputs' dtype (bf16 in the CUDA sweep): about one bf16 ulp */
const OUT_TOL = Object.freeze({ rtol: 1e-2, atol: 1e-3 });
const KF = Object.freeze({ method: 'keyformer', tau: 1.5, seed: 42, step: 3 });

function caches(c) {
  const { B, Hkv, N, D } = c.dims;
  const { qd, k } = c.caches();
  return { qd, k, v: { data: c.host.v, B, H: Hkv, S: N, D } };
}

module.exports = [
  {
    name: 'decode.attention',
    /** one read of K and V + the decode query + the output */
    floor: (c) => 2 * bytes.keys(c) + bytes.qDecode(c) + outBytes(c),
    graph: 'yes (no seqLens)',
    runner: (kv, x) => {
      const [q, k, v] = [x.decodeQuery(), x.keys(), x.values()];
      return () => kv.decode.attention(q, k, v).out;
    },
    check: (c) => {
      const { qd, k, v } = caches(c);
      const ref = attention(qd, k, v);
      const out = c.run((x) => c.kv.decode.attention(x.qd, x.k, x.v).out);
      return [...out.map(([who, t]) => compareNumeric(`${who} out`, t.toArray(), ref.out, OUT_TOL)), ...c.vsCpu(out, OUT_TOL)];
    },
  },
  {
    name: 'decode.attention+keyformer',
    /** the same, plus the f32 scores read and written in place: K is read once for both */
    floor: (c) => 2 * bytes.keys(c) + bytes.qDecode(c) + outBytes(c) + 2 * bytes.rowScores(c),
    graph: 'yes (no seqLens)',
    runner: (kv, x) => {
      const [q, k, v, scores] = [x.decodeQuery(), x.keys(), x.values(), x.scores()];
      return () => kv.decode.attention(q, k, v, { accumulate: { scores, ...KF } }).out;
    },
    check: (c) => {
      const { B, Hkv, N } = c.dims;
      const { qd, k, v } = caches(c);
      const ref = attention(qd, k, v, { accumulate: { scores: new Float64Array(B * Hkv * N), tau: KF.tau, noise: 'gumbel', seed: KF.seed, step: KF.step } });
      const out = c.run((x, dev) => {
        const scores = c.kv.Tensor.zeros([B, Hkv, N], 'f32', dev);
        c.kv.decode.attention(x.qd, x.k, x.v, { accumulate: { scores, ...KF } }).out.dispose();
        return scores;
      });
      return [...out.map(([who, t]) => compareNumeric(`${who} scores`, t.toArray(), ref.scores, TOL.accumulate)), ...c.vsCpu(out, TOL.scores)];
    },
  },
];
