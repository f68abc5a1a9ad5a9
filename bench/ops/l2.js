/** bench entries of the L2-norm key ranking (lib/l2.ts). */
'use strict';

const { bind } = require('../timer');
const { CAPACITY, bytes } = require('../shapes');
const { l2Norms } = require('../../reference/l2');
const { TOL, compareNumeric, compareSelection, compareGathered } = require('../compare');
const select = require('./select');

/** One read of K + the f32 norms written. */
const normsFloor = (c) => bytes.keys(c) + bytes.rowScores(c);

module.exports = [
  {
    name: 'l2.norms',
    floor: normsFloor,
    graph: 'yes (no seqLens)',
    runner: (kv, x) => bind(kv.l2.norms, x.keys()),
    check: (c) => {
      const ref = l2Norms(c.caches().k);
      const out = c.run((x) => c.kv.l2.norms(x.k));
      return [...out.map(([who, t]) => compareNumeric(`${who} norms`, t.toArray(), ref, TOL.norms)), ...c.vsCpu(out, TOL.norms)];
    },
  },
  {
    name: 'l2.compress',
    /** norms + top C of N + gathers of K and V */
    floor: (c) => normsFloor(c) + bytes.rowScores(c) + bytes.positions(c, c.C) + 2 * select.floors.gather(c),
    graph: 'yes (no seqLens)',
    torch: 'knorm',
    runner: (kv, x) => bind(kv.l2.compress, x.keys(), x.values(), { capacity: CAPACITY }),
    check: (c) => {
      const { B, Hkv, N, D, C } = c.dims;
      const neg = l2Norms(c.caches().k).map((x) => -x);
      const res = [];
      for (const [who, r] of c.run((x) => c.kv.l2.compress(x.k, x.v, { capacity: C }))) {
        const pos = r.positions.toArray();
        res.push(compareSelection(`${who} selection`, pos, neg, B * Hkv, N, C));
        res.push(compareGathered(`${who} keys`, r.keys.toArray(), c.host.k, pos, B, Hkv, C, N, D));
        res.push(compareGathered(`${who} values`, r.values.toArray(), c.host.v, pos, B, Hkv, C, N, D));
      }
      return res;
    },
  },
];
