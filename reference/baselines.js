/**
 * Float64 references of the TOVA and StreamingLLM baselines (docs/ALGORITHMS.md, "Baselines").
 */
'use strict';

const { accumulate } = require('./keyformer');
const { topkPositions } = require('./select');

/** @typedef {import('./layout').Cache4} Cache4 */

/**
 * TOVA's layer scores [B, N]: the last query's softmax attention (tau 1, no noise, causal: it
 * sees keys j < L) averaged over all Hq query heads. 0 past each row's length.
 * @param {Cache4} q [B, Hq, 1, D]
 * @param {Cache4} k [B, Hkv, N, D]
 * @param {ArrayLike<number>} [seqLens]
 * @returns {Float64Array}
 */
function tovaScores(q, k, seqLens) {
  const perHead = accumulate(q, k, new Float64Array(k.B * k.H * k.S), { tau: 1, noise: 'none', seqLens });
  const out = new Float64Array(k.B * k.S);
  for (let b = 0; b < k.B; b++)
    for (let h = 0; h < k.H; h++) for (let j = 0; j < k.S; j++) out[b * k.S + j] += perHead[(b * k.H + h) * k.S + j] / q.H;
  return out;
}

/**
 * tova.select: one selection per batch row, [B, 1, C] ascending.
 * @param {Cache4} q
 * @param {Cache4} k
 * @param {{ capacity: number, seqLens?: ArrayLike<number> }} o
 * @returns {Int32Array}
 */
function tovaSelect(q, k, o) {
  const s = tovaScores(q, k, o.seqLens);
  const out = new Int32Array(k.B * o.capacity);
  for (let b = 0; b < k.B; b++) {
    out.set(topkPositions(s.subarray(b * k.S, (b + 1) * k.S), o.seqLens === undefined ? k.S : o.seqLens[b], o.capacity), b * o.capacity);
  }
  return out;
}

/**
 * streaming.select: 0..sinks-1 and n-recent..n-1, or all of 0..n-1 when they overlap.
 * @param {number} n
 * @param {number} sinks
 * @param {number} recent
 * @returns {number[]}
 */
function streamingSelect(n, sinks, recent) {
  if (sinks + recent >= n) return Array.from({ length: n }, (_, i) => i);
  const out = [];
  for (let i = 0; i < sinks; i++) out.push(i);
  for (let i = n - recent; i < n; i++) out.push(i);
  return out;
}

module.exports = { tovaScores, tovaSelect, streamingSelect };
