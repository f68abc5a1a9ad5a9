/**
 * Ranking, top-k, protection and gathers: the selection steps every method shares, in float64,
 * written from docs/ALGORITHMS.md rather than from the kernels.
 */
'use strict';

/** @typedef {import('./layout').Cache4} Cache4 */
/** @typedef {import('./layout').NumArray} NumArray */

/**
 * True when score a at position i ranks above score b at position j: a higher score first, a tie
 * (-0 === +0 included) to the lower position, NaN below everything (-Infinity included).
 * @param {number} a
 * @param {number} i
 * @param {number} b
 * @param {number} j
 * @returns {boolean}
 */
function ranksAbove(a, i, b, j) {
  const an = Number.isNaN(a);
  const bn = Number.isNaN(b);
  if (an !== bn) return bn;
  if (!an && a !== b) return a > b;
  return i < j;
}

/**
 * The positions of one row [0, len) in ranking order: best first.
 * @param {ArrayLike<number>} row
 * @param {number} [len]
 * @returns {number[]}
 */
function rankRow(row, len = row.length) {
  const idx = Array.from({ length: len }, (_, i) => i);
  return idx.sort((i, j) => (ranksAbove(row[i], i, row[j], j) ? -1 : 1));
}

/**
 * The k best positions among the first `len` entries of a row, ascending.
 * @param {ArrayLike<number>} row
 * @param {number} len
 * @param {number} k
 * @returns {number[]}
 */
function topkPositions(row, len, k) {
  return rankRow(row, len)
    .slice(0, k)
    .sort((a, b) => a - b);
}

/**
 * Top-k of every row of [R, M]: the k best of the row's first len entries (row r belongs to batch
 * floor(r / rowsPerBatch), whose length is lengths[b]; all M without lengths). 'position' order:
 * ascending positions; 'score': best first. Returns [R, k].
 * @param {ArrayLike<number>} input
 * @param {number} R
 * @param {number} M
 * @param {number} k
 * @param {'position' | 'score'} [order]
 * @param {ArrayLike<number>} [lengths]
 * @param {number} [rowsPerBatch]
 * @returns {Int32Array}
 */
function topkRef(input, R, M, k, order = 'position', lengths, rowsPerBatch = 1) {
  const out = new Int32Array(R * k);
  for (let r = 0; r < R; r++) {
    const len = lengths ? lengths[Math.floor(r / rowsPerBatch)] : M;
    const row = Array.from({ length: M }, (_, j) => input[r * M + j]);
    const best = rankRow(row, len).slice(0, k);
    if (order === 'position') best.sort((a, b) => a - b);
    out.set(best, r * k);
  }
  return out;
}

/**
 * The protected row: +Infinity for the first `sinks` and the last `recent` of the first L entries,
 * sign * row elsewhere (common/params.h ProtectParams).
 * @param {ArrayLike<number>} row
 * @param {number} L
 * @param {number} sinks
 * @param {number} recent
 * @param {number} sign
 * @returns {Float64Array}
 */
function protect(row, L, sinks, recent, sign) {
  const out = new Float64Array(row.length);
  const s = Math.min(sinks, L);
  const from = Math.max(L - recent, s);
  for (let j = 0; j < row.length; j++) {
    if (j < L && (j < s || j >= from)) out[j] = Infinity;
    else out[j] = j < L ? sign * row[j] : row[j];
  }
  return out;
}

/**
 * Per row of [B, H, N] scores, the C best of the row's first L entries (seqLens[b], or N) after
 * {@link protect} (sinks and recent tokens first; sign -1 keeps the lowest scores), ascending.
 * Returns [B, H, C].
 * @param {ArrayLike<number>} scores
 * @param {number} B
 * @param {number} H
 * @param {number} N
 * @param {{ capacity: number, sinks: number, recent: number, sign: number, seqLens?: ArrayLike<number> }} o
 * @returns {Int32Array}
 */
function selectProtected(scores, B, H, N, o) {
  const C = o.capacity;
  const out = new Int32Array(B * H * C);
  for (let b = 0; b < B; b++) {
    const L = o.seqLens === undefined ? N : o.seqLens[b];
    for (let r = b * H; r < (b + 1) * H; r++) {
      const row = protect(Array.prototype.slice.call(scores, r * N, (r + 1) * N), L, o.sinks, o.recent, o.sign);
      out.set(topkPositions(row, L, C), r * C);
    }
  }
  return out;
}

/**
 * out[b, h, i, :] = cache[b, floor(h / group), pos[b, h or 0, i], :] over any typed array (raw
 * f16/bf16 bits gather exactly). positions is [B, Hp, K] with Hp = 1 (broadcast) or Hc * group.
 * @template {NumArray} T
 * @param {T} cache [B, Hc, N, D]
 * @param {number} B
 * @param {number} Hc
 * @param {number} N
 * @param {number} D
 * @param {ArrayLike<number>} positions
 * @param {number} Hp
 * @param {number} K
 * @param {number} [group]
 * @returns {T}
 */
function gatherRef(cache, B, Hc, N, D, positions, Hp, K, group = 1) {
  const Hout = Hp === 1 ? Hc : Hc * group;
  /** @type {T} */
  const out = new (/** @type {new (n: number) => T} */ (cache.constructor))(B * Hout * K * D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hout; h++)
      for (let i = 0; i < K; i++) {
        const p = positions[(b * Hp + (Hp === 1 ? 0 : h)) * K + i];
        if (p < 0 || p >= N) throw new Error(`gatherRef: position ${p} outside [0, ${N})`);
        const hc = Math.floor(h / (Hp === 1 ? 1 : group));
        for (let d = 0; d < D; d++) out[((b * Hout + h) * K + i) * D + d] = cache[((b * Hc + hc) * N + p) * D + d];
      }
  return out;
}

/**
 * The rows of a logical cache at positions [B, Hp, K] (Hp = H or 1): a logical [B, H, K, D] cache.
 * @param {Cache4} c
 * @param {ArrayLike<number>} positions
 * @param {number} Hp
 * @param {number} K
 * @returns {Cache4}
 */
function gatherRows(c, positions, Hp, K) {
  return { data: gatherRef(Float32Array.from(c.data), c.B, c.H, c.S, c.D, positions, Hp, K), B: c.B, H: c.H, S: K, D: c.D };
}

/**
 * Checks one row's selection against reference scores, robust to near-ties: every position whose
 * reference score beats the k-th best by more than `rtol` (relative, with `atol` floor) must be
 * chosen, and no chosen position may score below the k-th best by more than that. Returns a
 * description of the first violation, or '' when the selection is acceptable. When the gap
 * between the k-th and (k+1)-th reference values is clear, this is exact set equality.
 * @param {ArrayLike<number>} refRow
 * @param {number} len
 * @param {ArrayLike<number>} chosen
 * @param {number} [rtol]
 * @param {number} [atol]
 * @returns {string}
 */
function selectionViolation(refRow, len, chosen, rtol = 1e-4, atol = 1e-9) {
  const k = chosen.length;
  const order = rankRow(refRow, len);
  const kth = refRow[order[k - 1]];
  const tol = atol + rtol * Math.abs(kth);
  const set = new Set();
  for (let i = 0; i < k; i++) {
    const p = chosen[i];
    if (!(p >= 0 && p < len)) return `position ${p} outside [0, ${len})`;
    if (set.has(p)) return `position ${p} chosen twice`;
    set.add(p);
    if (refRow[p] < kth - tol) return `position ${p} (reference score ${refRow[p]}) chosen, but the k-th best scores ${kth}`;
  }
  for (let j = 0; j < len; j++) {
    if (refRow[j] > kth + tol && !set.has(j)) return `position ${j} (reference score ${refRow[j]}) missing; the k-th best scores ${kth}`;
  }
  return '';
}

module.exports = { rankRow, topkPositions, topkRef, protect, selectProtected, gatherRef, gatherRows, selectionViolation };
