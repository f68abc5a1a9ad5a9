/** bench entries of head-adaptive selection and ragged compaction (lib/adaptive.ts, lib/ragged_cache.ts). */
'use strict';

const { CAPACITY, bytes } = require('../shapes');
const { adaptiveSelect, denseLayout } = require('../../reference/adaptive');
const { compareExact } = require('../compare');

/** AdaKV over SnapKV's pooled prefix votes: the layer keeps Hkv x (C - W) prefix tokens, 20% of a head's share per head at least. */
const budgetOf = (hkv, w, C = CAPACITY) => hkv * (C - w);
const optionsOf = (hkv, w, C = CAPACITY) => ({ budget: budgetOf(hkv, w, C), minPerHead: Math.floor(0.2 * (C - w)) });

/** The pooled votes read, the positions and the indptr written. */
const selectFloor = (c) => bytes.votes(c) + c.b * budgetOf(c.hkv, c.w, c.C) * 4 + (c.b * c.hkv + 1) * 4;
/** The kept rows of K and V read and written, plus the positions read. */
const compactFloor = (c) => 2 * 2 * c.b * budgetOf(c.hkv, c.w, c.C) * c.d * c.esz + c.b * budgetOf(c.hkv, c.w, c.C) * 4;

/** The check shape's votes as f32 (what both backends and the reference select from), and the options. */
function checkInputs(c) {
  const { B, Hkv, P, W, C } = c.dims;
  return { votes: Float32Array.from(c.refs.scores().votes), shape: [B, Hkv, P], opts: optionsOf(Hkv, W, C) };
}

/** Every kept row of a compacted cache [total, D] against the dense cache's row at its position. */
function compareRagged(what, out, cache, pos, indptr, B, H, N, D) {
  for (let bh = 0; bh < B * H; bh++) {
    for (let e = indptr[bh]; e < indptr[bh + 1]; e++) {
      const src = (bh * N + pos[e]) * D;
      for (let d = 0; d < D; d++) {
        if (!Object.is(out[e * D + d], cache[src + d])) return { ok: false, detail: `${what}: row ${e} (head ${bh}, position ${pos[e]}) differs at ${d}` };
      }
    }
  }
  return { ok: true, detail: `${what}: ${indptr[B * H]} rows exact` };
}

module.exports = [
  {
    name: 'adaptive.select',
    usesWindow: true,
    floor: selectFloor,
    runner: (kv, x, w) => {
      const votes = x.pooled(w);
      const opts = optionsOf(votes.shape[1], w);
      return () => {
        const s = kv.adaptive.select(votes, opts);
        return [s.positions, s.indptr];
      };
    },
    check: (c) => {
      const { B, Hkv, P } = c.dims;
      const { votes, shape, opts } = checkInputs(c);
      const ref = adaptiveSelect(votes, denseLayout(B, Hkv, P), opts);
      const res = [];
      for (const [who, [positions, indptr]] of c.run((x, dev) => {
        const s = c.kv.adaptive.select(c.upload(votes, shape, dev), opts);
        return [s.positions, s.indptr];
      })) {
        res.push(compareExact(`${who} indptr`, indptr.toArray(), ref.indptr));
        res.push(compareExact(`${who} positions`, positions.toArray(), ref.positions));
      }
      return res;
    },
  },
  {
    name: 'compactRagged',
    usesWindow: true,
    floor: compactFloor,
    runner: (kv, x, w) => {
      const [k, v, votes] = [x.keys(), x.values(), x.pooled(w)];
      // the selection is made once, outside the timing (a forgotten tensor: its finalizer frees it);
      // the result's positions and indptr are the selection's own, so only K and V are released
      const sel = kv.adaptive.select(votes, optionsOf(votes.shape[1], w));
      return () => {
        const r = kv.compactRagged(k, v, sel);
        return [r.keys, r.values];
      };
    },
    check: (c) => {
      const { B, Hkv, N, D, P } = c.dims;
      const { votes, shape, opts } = checkInputs(c);
      const ref = adaptiveSelect(votes, denseLayout(B, Hkv, P), opts);
      const res = [];
      for (const [who, [keys, values]] of c.run((x, dev) => {
        const sel = c.kv.adaptive.select(c.upload(votes, shape, dev), opts);
        const out = c.kv.compactRagged(x.k, x.v, sel);
        return [out.keys, out.values, sel.positions, sel.indptr];
      })) {
        res.push(compareRagged(`${who} keys`, keys.toArray(), c.host.k, ref.positions, ref.indptr, B, Hkv, N, D));
        res.push(compareRagged(`${who} values`, values.toArray(), c.host.v, ref.positions, ref.indptr, B, Hkv, N, D));
      }
      return res;
    },
  },
];
