/** bench entries of the baselines (lib/baselines.ts). */
'use strict';

const { bind } = require('../timer');
const { CAPACITY, bytes } = require('../shapes');
const { tovaScores } = require('../../reference/baselines');
const { compareSelection } = require('../compare');

module.exports = [
  {
    name: 'tova.select',
    /** one read of K + the decode query + C positions per batch row */
    floor: (c) => bytes.keys(c) + bytes.qDecode(c) + c.b * c.C * 4,
    graph: 'yes (no seqLens)',
    runner: (kv, x) => bind(kv.tova.select, x.decodeQuery(), x.keys(), { capacity: CAPACITY }),
    check: (c) => {
      const { B, N, C } = c.dims;
      const { qd, k } = c.caches();
      const layer = tovaScores(qd, k);
      return c.run((x) => c.kv.tova.select(x.qd, x.k, { capacity: C })).map(([who, t]) => compareSelection(`${who} selection`, t.toArray(), layer, B, N, C));
    },
  },
];
