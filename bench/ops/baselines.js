/** bench entries of the baselines (lib/baselines.ts). */
'use strict';

const { CAPACITY, bytes } = require('../shapes');
const { refDecodeAttention } = require('../reference');
const { compareSelection } = require('../compare');

module.exports = [
  {
    name: 'tova.select',
    /** one read of K + the decode query + C positions per batch row */
    floor: (c) => bytes.keys(c) + bytes.qDecode(c) + c.b * c.C * 4,
    graph: 'yes (no seqLens)',
    runner: (kv, x) => {
      const [q, k] = [x.decodeQuery(), x.keys()];
      return () => kv.tova.select(q, k, { capacity: CAPACITY });
    },
    check: (c) => {
      const { B, Hq, N, C } = c.dims;
      const f = refDecodeAttention(c.host.qd, c.host.k, c.dims, null, 1);
      const layer = new Float64Array(B * N);
      for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) for (let j = 0; j < N; j++) layer[b * N + j] += f[(b * Hq + h) * N + j] / Hq;
      return c.run((x) => c.kv.tova.select(x.qd, x.k, { capacity: C })).map(([who, t]) => compareSelection(`${who} selection`, t.toArray(), layer, B, N, C));
    },
  },
];
