/** bench entry of Keyformer's decode-step accumulation (lib/keyformer.ts). */
'use strict';

const { bytes } = require('../shapes');
const { accumulate } = require('../../reference/keyformer');
const { TOL, compareNumeric } = require('../compare');

/** Two steps, so '+=' is checked too. */
const STEPS = Object.freeze([
  { tau: 1.5, seed: 42, step: 3 },
  { tau: 1.6, seed: 42, step: 4 },
]);

module.exports = [
  {
    name: 'keyformer.accumulate',
    /** one read of K + the decode query + the f32 scores read and written in place */
    floor: (c) => bytes.keys(c) + bytes.qDecode(c) + 2 * bytes.rowScores(c),
    graph: 'yes (no seqLens)',
    torch: 'keyformer.step',
    runner: (kv, x) => {
      // one decode step (T = 1) into the layer's running scores, in place: nothing to dispose
      const [q, k, scores] = [x.decodeQuery(), x.keys(), x.scores()];
      let step = 0;
      return () => {
        kv.keyformer.accumulate(q, k, scores, { tau: kv.keyformer.tau(step % 512, { maxNewTokens: 512 }), seed: 42, step: step++ });
        return null;
      };
    },
    check: (c) => {
      const { B, Hkv, N } = c.dims;
      const { qd, k } = c.caches();
      let ref = new Float64Array(B * Hkv * N);
      for (const s of STEPS) ref = accumulate(qd, k, ref, { ...s, noise: 'gumbel' });
      const out = c.run((x, dev) => {
        const scores = c.kv.Tensor.zeros([B, Hkv, N], 'f32', dev);
        for (const s of STEPS) c.kv.keyformer.accumulate(x.qd, x.k, scores, s);
        return scores;
      });
      return [...out.map(([who, t]) => compareNumeric(`${who} scores`, t.toArray(), ref, TOL.accumulate)), ...c.vsCpu(out, TOL.scores)];
    },
  },
];
