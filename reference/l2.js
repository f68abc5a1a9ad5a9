/**
 * A float64 reference of the L2-norm key ranking (docs/ALGORITHMS.md, "L2-norm key ranking"):
 * keep the lowest-norm keys plus the protected sinks and recent tokens.
 */
'use strict';

const { at } = require('./layout');
const { selectProtected } = require('./select');

/** @typedef {import('./layout').Cache4} Cache4 */

/**
 * ||k_j||_2 in float64: [B, H, N], 0 past each row's length.
 * @param {Cache4} k
 * @param {ArrayLike<number>} [seqLens]
 * @returns {Float64Array}
 */
function l2Norms(k, seqLens) {
  const out = new Float64Array(k.B * k.H * k.S);
  for (let b = 0; b < k.B; b++) {
    const L = seqLens === undefined ? k.S : seqLens[b];
    for (let h = 0; h < k.H; h++)
      for (let j = 0; j < L; j++) {
        let ss = 0;
        for (let d = 0; d < k.D; d++) ss += at(k, b, h, j, d) ** 2;
        out[(b * k.H + h) * k.S + j] = Math.sqrt(ss);
      }
  }
  return out;
}

/**
 * l2.compress's positions: [B, H, C] ascending, the lowest norms plus the protected tokens; all
 * of 0..N-1 ([B, H, N]) when N <= capacity.
 * @param {Cache4} k
 * @param {{ capacity: number, sinks?: number, recent?: number, seqLens?: ArrayLike<number> }} o
 * @returns {Int32Array}
 */
function l2Select(k, o) {
  const { B, H, S: N } = k;
  if (N <= o.capacity) {
    const out = new Int32Array(B * H * N);
    for (let r = 0; r < B * H; r++) for (let j = 0; j < N; j++) out[r * N + j] = j;
    return out;
  }
  return selectProtected(l2Norms(k, o.seqLens), B, H, N, { capacity: o.capacity, sinks: o.sinks ?? 0, recent: o.recent ?? 0, sign: -1, seqLens: o.seqLens });
}

module.exports = { l2Norms, l2Select };
