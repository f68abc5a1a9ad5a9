/** bench entries of topk and gather (lib/select.ts). */
'use strict';

const { bind } = require('../timer');
const { CAPACITY, KERNEL, POOLING, bytes } = require('../shapes');
const { randomPositions, SEEDS } = require('../inputs');
const { poolRef } = require('../../reference/snapkv');
const { topkRef } = require('../../reference/select');
const { compareExact, compareGathered } = require('../compare');

/** The layer's rows of votes read, C - W positions per row written. */
const topkFloor = (c) => bytes.votes(c) + bytes.positions(c, c.C - c.w);
/** The kept rows of one cache read and written, plus the positions. */
const gatherFloor = (c) => 2 * c.b * c.hkv * c.C * c.d * c.esz + bytes.positions(c, c.C);

module.exports = [
  {
    name: 'topk',
    usesWindow: true,
    floor: topkFloor,
    graph: 'yes (no lengths)',
    runner: (kv, x, w) => bind(kv.topk, x.pooled(w), CAPACITY - w),
    check: (c) => {
      const { B, Hkv, P, W, C } = c.dims;
      const pooled = Float32Array.from(poolRef(Float32Array.from(c.refs.scores().votes), B * Hkv, P, KERNEL, POOLING));
      const k = C - W;
      const ref = topkRef(pooled, B * Hkv, P, k);
      const out = c.run((x, dev) => c.kv.topk(c.upload(pooled, [B, Hkv, P], dev), k));
      return out.map(([who, t]) => compareExact(`${who} positions`, t.toArray(), ref));
    },
  },
  {
    name: 'gather',
    floor: gatherFloor,
    runner: (kv, x) => bind(kv.gather, x.keys(), x.positions()),
    check: (c) => {
      const { B, Hkv, N, D, C } = c.dims;
      const pos = randomPositions(B * Hkv, N, C, SEEDS.positions);
      const out = c.run((x, dev) => c.kv.gather(x.k, c.upload(pos, [B, Hkv, C], dev)));
      return out.map(([who, t]) => compareGathered(`${who} rows`, t.toArray(), c.host.k, pos, B, Hkv, C, N, D));
    },
  },
];

module.exports.floors = { topk: topkFloor, gather: gatherFloor };
