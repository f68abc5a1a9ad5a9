/**
 * A plain reference of head-adaptive selection, the ragged per-head cache and the layer budgets
 * (docs/ALGORITHMS.md "Adaptive budgets", "Layer budgets"), written from the spec with sorts and
 * float64, not from the kernels.
 */
'use strict';

const { philoxGumbel } = require('./philox');

/**
 * A ragged layout on the host: head bh owns rows [indptr[bh], indptr[bh + 1]), its first
 * lens[bh] live (all of them without lens).
 * @typedef {{ B: number, H: number, indptr: ArrayLike<number>, lens?: ArrayLike<number> }} HostRagged
 */

/**
 * Region and live length of head bh.
 * @param {HostRagged} r
 * @param {number} bh
 * @returns {{ start: number, cap: number, len: number }}
 */
function headOf(r, bh) {
  const start = r.indptr[bh];
  const cap = r.indptr[bh + 1] - start;
  return { start, cap, len: r.lens ? r.lens[bh] : cap };
}

/**
 * Sort order: a higher score first, NaN last, ties to the lower (head, position) = lower index.
 * @param {number} x
 * @param {number} y
 * @param {number} ix
 * @param {number} iy
 * @returns {number}
 */
function before(x, y, ix, iy) {
  const xn = Number.isNaN(x);
  const yn = Number.isNaN(y);
  if (xn !== yn) return xn ? 1 : -1;
  if (!xn && x !== y) return x > y ? -1 : 1;
  return ix - iy;
}

/**
 * AdaKV's rule over one layer: per batch row, every head keeps its last `window` live tokens and
 * its `minPerHead` best others; the rest of the budget goes to the best remaining tokens of all
 * heads together. scores holds one value per storage row of `r` (a dense [B, H, N] is the
 * layout indptr[bh] = bh N, lens[bh] = lengths[b]). Returns CSR positions (indices in each head)
 * and indptr.
 * @param {ArrayLike<number>} scores
 * @param {HostRagged} r
 * @param {{ budget: number, minPerHead?: number, window?: number }} o
 * @returns {{ positions: Int32Array, indptr: Int32Array }}
 */
function adaptiveSelect(scores, r, o) {
  const w = o.window ?? 0;
  const m = o.minPerHead ?? 0;
  const positions = new Int32Array(r.B * o.budget);
  const indptr = new Int32Array(r.B * r.H + 1);
  for (let b = 0; b < r.B; b++) {
    /** @type {boolean[][]} */
    const kept = [];
    /** @type {{ h: number, i: number, s: number, flat: number }[]} */
    const rest = [];
    let count = 0;
    for (let h = 0; h < r.H; h++) {
      const { start, len } = headOf(r, b * r.H + h);
      const k = new Array(len).fill(false);
      const prefix = Math.max(len - w, 0);
      for (let i = prefix; i < len; i++) k[i] = true;
      const order = Array.from({ length: prefix }, (_, i) => i).sort((x, y) => before(scores[start + x], scores[start + y], x, y));
      for (const i of order.slice(0, m)) k[i] = true;
      for (let i = 0; i < len; i++) {
        if (k[i]) count++;
        else rest.push({ h, i, s: scores[start + i], flat: start + i });
      }
      kept.push(k);
    }
    rest.sort((x, y) => before(x.s, y.s, x.flat, y.flat));
    for (const e of rest.slice(0, o.budget - count)) kept[e.h][e.i] = true;
    let slot = 0;
    for (let h = 0; h < r.H; h++) {
      indptr[b * r.H + h] = b * o.budget + slot;
      kept[h].forEach((k, i) => {
        if (k) positions[b * o.budget + slot++] = i;
      });
    }
  }
  indptr[r.B * r.H] = r.B * o.budget;
  return { positions, indptr };
}

/**
 * The dense [B, H, N] layout as a HostRagged (lengths per batch row).
 * @param {number} B
 * @param {number} H
 * @param {number} N
 * @param {ArrayLike<number>} [lengths]
 * @returns {HostRagged}
 */
function denseLayout(B, H, N, lengths) {
  const indptr = Array.from({ length: B * H + 1 }, (_, bh) => bh * N);
  const lens = Array.from({ length: B * H }, (_, bh) => (lengths ? lengths[Math.floor(bh / H)] : N));
  return { B, H, indptr, lens };
}

/**
 * Keyformer/H2O accumulation over a ragged cache in float64: keys [rows, D]; query t of the step
 * sees the first len - T + t + 1 live keys of its head; the noise of row i of head (b, hkv) for
 * query head hq is philoxGumbel(b, hq, t, j) at its original position j (positions[row], or i).
 * @param {{ data: ArrayLike<number>, B: number, H: number, T: number, D: number }} q [B, Hq, T, D]
 * @param {ArrayLike<number>} keys
 * @param {HostRagged} r
 * @param {ArrayLike<number>} scores
 * @param {{ tau: number, noise: 'gumbel' | 'none', seed?: number, step?: number, positions?: ArrayLike<number> }} o
 * @returns {Float64Array}
 */
function raggedAccumulate(q, keys, r, scores, o) {
  const { B, H: Hq, T, D } = q;
  const G = Hq / r.H;
  const out = Float64Array.from(scores);
  const scale = 1 / Math.sqrt(D);
  for (let b = 0; b < B; b++)
    for (let hq = 0; hq < Hq; hq++) {
      const h = Math.floor(hq / G);
      const { start, len } = headOf(r, b * r.H + h);
      for (let t = 0; t < T; t++) {
        const nv = Math.min(Math.max(len - T + t + 1, 0), len);
        const logits = new Float64Array(nv);
        let max = -Infinity;
        for (let i = 0; i < nv; i++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q.data[((b * Hq + hq) * T + t) * D + d] * keys[(start + i) * D + d];
          const j = o.positions ? o.positions[start + i] : i;
          const g = o.noise === 'gumbel' ? philoxGumbel(o.seed ?? 0, o.step ?? 0, b, Hq, hq, t, j) : 0;
          logits[i] = (dot * scale + g) / o.tau;
          max = Math.max(max, logits[i]);
        }
        let sum = 0;
        for (let i = 0; i < nv; i++) sum += logits[i] = Math.exp(logits[i] - max);
        for (let i = 0; i < nv; i++) out[start + i] += logits[i] / sum;
      }
    }
  return out;
}

/**
 * PyramidKV's real (unrounded) schedule; one layer gets the total.
 * @param {number} layers
 * @param {number} total
 * @param {number} window
 * @param {number} [beta]
 * @returns {number[]}
 */
function pyramidReal(layers, total, window, beta = 20) {
  if (layers === 1) return [total];
  const A = total / layers - window;
  const min = A / beta;
  const max = 2 * A - min;
  return Array.from({ length: layers }, (_, l) => window + max - (l * (max - min)) / (layers - 1));
}

module.exports = { headOf, adaptiveSelect, denseLayout, raggedAccumulate, pyramidReal };
