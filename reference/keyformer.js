/**
 * A float64 reference of Keyformer and H2O (docs/ALGORITHMS.md, "Keyformer", "Baselines"): the
 * per-step score accumulation with Philox Gumbel noise, the temperature schedule and the
 * selection that keeps the recent tokens.
 */
'use strict';

const { at } = require('./layout');
const { philoxGumbel } = require('./philox');
const { selectProtected } = require('./select');

/** @typedef {import('./layout').Cache4} Cache4 */
/**
 * @typedef {{ tau: number, noise: 'gumbel' | 'none', seed?: number | bigint, step?: number | bigint,
 *   seqLens?: ArrayLike<number> }} AccumulateRefOptions
 */

/**
 * scores + Σ softmax_j((q·k_j/√D + g)/tau) over the T queries (query t of row b at position
 * L-T+t sees keys j <= L-T+t) and the G query heads of each KV head; g is the Philox Gumbel noise
 * of (seed, step, b, hq, t, j) as float32, or 0. Returns a new [B, Hkv, N] array.
 * @param {Cache4} q [B, Hq, T, D]
 * @param {Cache4} k [B, Hkv, N, D]
 * @param {ArrayLike<number>} scores [B, Hkv, N]
 * @param {AccumulateRefOptions} o
 * @returns {Float64Array}
 */
function accumulate(q, k, scores, o) {
  const { B, H: Hq, S: T, D } = q;
  const { H: Hkv, S: N } = k;
  const G = Hq / Hkv;
  const scale = 1 / Math.sqrt(D);
  const out = Float64Array.from(scores);
  const logits = new Float64Array(N);
  for (let b = 0; b < B; b++) {
    const L = o.seqLens === undefined ? N : o.seqLens[b];
    for (let hq = 0; hq < Hq; hq++) {
      const h = Math.floor(hq / G);
      for (let t = 0; t < T; t++) {
        const last = L - T + t; // the query's own position: it sees keys 0..last
        let max = -Infinity;
        for (let j = 0; j <= last; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += at(q, b, hq, t, d) * at(k, b, h, j, d);
          const g = o.noise === 'gumbel' ? philoxGumbel(o.seed ?? 0, o.step ?? 0, b, Hq, hq, t, j) : 0;
          logits[j] = (dot * scale + g) / o.tau;
          if (logits[j] > max) max = logits[j];
        }
        let sum = 0;
        for (let j = 0; j <= last; j++) {
          logits[j] = Math.exp(logits[j] - max);
          sum += logits[j];
        }
        for (let j = 0; j <= last; j++) out[(b * Hkv + h) * N + j] += logits[j] / sum;
      }
    }
  }
  return out;
}

/**
 * Keyformer's temperature: tauInit + step (tauEnd - tauInit) / maxNewTokens.
 * @param {number} step
 * @param {{ tauInit?: number, tauEnd?: number, maxNewTokens: number }} o
 * @returns {number}
 */
function tau(step, o) {
  const t0 = o.tauInit ?? 1;
  const t1 = o.tauEnd ?? 2;
  return t0 + (step * (t1 - t0)) / o.maxNewTokens;
}

/**
 * keyformer.select / h2o.select: [B, H, C] ascending, the last `recent` real tokens plus the
 * top capacity - recent others by score.
 * @param {ArrayLike<number>} scores [B, H, N]
 * @param {number} B
 * @param {number} H
 * @param {number} N
 * @param {{ capacity: number, recent: number, seqLens?: ArrayLike<number> }} o
 * @returns {Int32Array}
 */
function selectRecent(scores, B, H, N, o) {
  return selectProtected(scores, B, H, N, { capacity: o.capacity, sinks: 0, recent: o.recent, sign: 1, seqLens: o.seqLens });
}

module.exports = { accumulate, tau, selectRecent };
