/** bench entries of SnapKV (lib/snapkv.ts): the votes, the pooling and the whole compression. */
'use strict';

const { bind } = require('../timer');
const { CAPACITY, KERNEL, POOLING, bytes } = require('../shapes');
const { poolRef } = require('../../reference/snapkv');
const { TOL, compareNumeric, compareExact, compareSelection, compareGathered } = require('../compare');
const select = require('./select');

/** One read of K + the window queries + the f32 votes written. */
const scoresFloor = (c) => bytes.keys(c) + bytes.qWindow(c) + bytes.votes(c);
const poolFloor = (c) => 2 * bytes.votes(c);

/** The votes of the device and of the CPU backend against float64, then against each other. */
function checkVotes(c, out) {
  const ref = c.refs.scores().votes;
  return [...out.map(([who, t]) => compareNumeric(`${who} votes`, t.toArray(), ref, TOL.scores)), ...c.vsCpu(out, TOL.scores)];
}

module.exports = [
  {
    name: 'snapkv.scores',
    usesWindow: true,
    floor: scoresFloor,
    graph: 'yes (no seqLens)',
    runner: (kv, x, w) => bind(kv.snapkv.scores, x.windowQueries(w), x.keys(), { window: w }),
    check: (c) => checkVotes(c, c.run((x) => c.kv.snapkv.scores(x.q, x.k, { window: c.dims.W }))),
  },
  {
    name: 'snapkv.scores+lse',
    usesWindow: true,
    floor: (c) => scoresFloor(c) + c.b * c.hq * c.w * 4,
    graph: 'yes (no seqLens)',
    runner: (kv, x, w) => bind(kv.snapkv.scores, x.windowQueries(w), x.keys(), { window: w, lse: x.lse(w) }),
    check: (c) => {
      const { B, Hq, W } = c.dims;
      const lse = Float32Array.from(c.refs.scores().lse);
      return checkVotes(c, c.run((x, dev) => c.kv.snapkv.scores(x.q, x.k, { window: W, lse: c.upload(lse, [B, Hq, W], dev) })));
    },
  },
  {
    name: 'snapkv.pool',
    usesWindow: true,
    floor: poolFloor,
    graph: 'yes (no lengths)',
    runner: (kv, x, w) => bind(kv.snapkv.pool, x.votes(w), { kernel: KERNEL, kind: POOLING }),
    check: (c) => {
      const { B, Hkv, P } = c.dims;
      const votes = Float32Array.from(c.refs.scores().votes);
      const res = [];
      for (const kind of [POOLING, POOLING === 'max' ? 'avg' : 'max']) {
        const ref = poolRef(votes, B * Hkv, P, KERNEL, kind);
        const out = c.run((x, dev) => c.kv.snapkv.pool(c.upload(votes, [B, Hkv, P], dev), { kernel: KERNEL, kind }));
        for (const [who, t] of out) {
          // max picks one of its inputs: exact; avg sums K of them in f32
          res.push(kind === 'max' ? compareExact(`${who} ${kind}`, t.toArray(), Float32Array.from(ref)) : compareNumeric(`${who} ${kind}`, t.toArray(), ref, { rtol: 1e-6, atol: 1e-9 }));
        }
      }
      return res;
    },
  },
  {
    name: 'snapkv.compress',
    usesWindow: true,
    /** the sum of its parts: scores + pool + topk + gathers of K and V */
    floor: (c) => scoresFloor(c) + poolFloor(c) + select.floors.topk(c) + 2 * select.floors.gather(c),
    graph: 'yes (no seqLens)',
    torch: 'snapkv.update_kv',
    runner: (kv, x, w) => bind(kv.snapkv.compress, x.windowQueries(w), x.keys(), x.values(), { window: w, capacity: CAPACITY, kernel: KERNEL, pooling: POOLING }),
    check: (c) => {
      const { B, Hkv, N, D, W, C, P } = c.dims;
      const pooled = poolRef(c.refs.scores().votes, B * Hkv, P, KERNEL, POOLING);
      const out = c.run((x) => c.kv.snapkv.compress(x.q, x.k, x.v, { window: W, capacity: C, kernel: KERNEL, pooling: POOLING }));
      const res = [];
      for (const [who, r] of out) {
        const pos = r.positions.toArray();
        res.push(compareSelection(`${who} selection`, pos, pooled, B * Hkv, P, C - W, C));
        let windowOk = true;
        for (let row = 0; row < B * Hkv; row++) for (let i = 0; i < W; i++) if (pos[row * C + C - W + i] !== P + i) windowOk = false;
        res.push({ ok: windowOk, detail: windowOk ? `${who} window kept` : `${who}: the last ${W} positions of a row are not ${P}..${N - 1}` });
        res.push(compareGathered(`${who} keys`, r.keys.toArray(), c.host.k, pos, B, Hkv, C, N, D));
        res.push(compareGathered(`${who} values`, r.values.toArray(), c.host.v, pos, B, Hkv, C, N, D));
      }
      return res;
    },
  },
];
