/**
 * A float64 reference of decode attention (dense and over a selection, with H2O / Keyformer
 * accumulation) and of Quest's metadata, bounds and selection (docs/ALGORITHMS.md, "Decode
 * attention", "Sparse decode attention", "Quest"), written from the spec, not from the kernels.
 */
'use strict';

const { at } = require('./layout');
const { philoxGumbel } = require('./philox');

/** @typedef {import('./layout').Cache4} Cache4 */
/**
 * @typedef {{ seqLens?: ArrayLike<number>, scale?: number,
 *   selection?: (b: number, h: number, L: number) => number[],
 *   accumulate?: { scores: ArrayLike<number>, tau: number, noise: 'gumbel' | 'none', seed?: number | bigint, step?: number | bigint } }} DecodeRefOptions
 */

/**
 * Query t of row b sits at p = L - T + t and attends (softmax over the scaled logits, default
 * scale 1/sqrt(D)) to the selected keys j with 0 <= j <= p and j < L (default selection: every
 * key below L); out = Σ softmax · v, lse = ln Σ exp(logit). A query that sees nothing: out 0,
 * lse -Infinity. With accumulate, scores[b, hq / G, j] += softmax((logit + g) / tau).
 * @param {Cache4} q [B, Hq, T, D]
 * @param {Cache4} k [B, Hkv, N, D]
 * @param {Cache4} v [B, Hkv, N, D]
 * @param {DecodeRefOptions} [o]
 * @returns {{ out: Float64Array, lse: Float64Array, scores?: Float64Array }} out [B, Hq, T, D], lse [B, Hq, T], scores [B, Hkv, N]
 */
function attention(q, k, v, o = {}) {
  const { B, H: Hq, S: T, D } = q;
  const { H: Hkv, S: N } = k;
  const G = Hq / Hkv;
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * Hq * T * D);
  const lse = new Float64Array(B * Hq * T);
  const scores = o.accumulate ? Float64Array.from(o.accumulate.scores) : undefined;
  for (let b = 0; b < B; b++) {
    const L = o.seqLens === undefined ? N : o.seqLens[b];
    for (let hq = 0; hq < Hq; hq++) {
      const h = Math.floor(hq / G);
      const sel = o.selection ? o.selection(b, h, L) : Array.from({ length: L }, (_, j) => j);
      for (let t = 0; t < T; t++) {
        const p = L - T + t;
        const keys = sel.filter((j) => j >= 0 && j < L && j <= p);
        const row = (b * Hq + hq) * T + t;
        if (keys.length === 0) {
          lse[row] = -Infinity;
          continue;
        }
        const logits = keys.map((j) => {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += at(q, b, hq, t, d) * at(k, b, h, j, d);
          return dot * scale;
        });
        const m = Math.max(...logits);
        let sum = 0;
        const w = logits.map((l) => {
          const e = Math.exp(l - m);
          sum += e;
          return e;
        });
        lse[row] = m + Math.log(sum);
        for (let i = 0; i < keys.length; i++)
          for (let d = 0; d < D; d++) out[row * D + d] += (w[i] / sum) * at(v, b, h, keys[i], d);
        if (o.accumulate && scores) {
          const a = o.accumulate;
          const x = logits.map((l, i) => (l + (a.noise === 'gumbel' ? philoxGumbel(a.seed ?? 0, a.step ?? 0, b, Hq, hq, t, keys[i]) : 0)) / a.tau);
          const mx = Math.max(...x);
          const ex = x.map((y) => Math.exp(y - mx));
          const sx = ex.reduce((s, y) => s + y, 0);
          for (let i = 0; i < keys.length; i++) scores[(b * Hkv + h) * N + keys[i]] += ex[i] / sx;
        }
      }
    }
  }
  return { out, lse, scores };
}

/**
 * min / max over each block's valid tokens, [B, H, nb, D]; +Infinity / -Infinity for an empty block.
 * @param {Cache4} k
 * @param {number} blockSize
 * @param {ArrayLike<number>} [seqLens]
 * @returns {{ min: Float64Array, max: Float64Array, nb: number }}
 */
function questMetadata(k, blockSize, seqLens) {
  const { B, H, S: N, D } = k;
  const nb = Math.ceil(N / blockSize);
  const min = new Float64Array(B * H * nb * D).fill(Infinity);
  const max = new Float64Array(B * H * nb * D).fill(-Infinity);
  for (let b = 0; b < B; b++) {
    const L = seqLens === undefined ? N : seqLens[b];
    for (let h = 0; h < H; h++)
      for (let j = 0; j < L; j++) {
        const c = Math.floor(j / blockSize);
        for (let d = 0; d < D; d++) {
          const i = ((b * H + h) * nb + c) * D + d;
          const x = at(k, b, h, j, d);
          if (x < min[i]) min[i] = x;
          if (x > max[i]) max[i] = x;
        }
      }
  }
  return { min, max, nb };
}

/**
 * Quest bounds Σ_d max(q_d·min_d, q_d·max_d) of one query per head, combined over the group:
 * [B, Hkv (Hq for 'none'), nb]; -Infinity for an empty block.
 * @param {Cache4} q [B, Hq, 1, D]
 * @param {ArrayLike<number>} min
 * @param {ArrayLike<number>} max
 * @param {number} Hkv
 * @param {number} nb
 * @param {'sum' | 'max' | 'none'} reduce
 * @returns {Float64Array}
 */
function questBounds(q, min, max, Hkv, nb, reduce) {
  const { B, H: Hq, D } = q;
  const G = Hq / Hkv;
  const Hout = reduce === 'none' ? Hq : Hkv;
  const out = new Float64Array(B * Hout * nb);
  for (let b = 0; b < B; b++)
    for (let ho = 0; ho < Hout; ho++) {
      const h = reduce === 'none' ? Math.floor(ho / G) : ho;
      const heads = reduce === 'none' ? [ho] : Array.from({ length: G }, (_, g) => h * G + g);
      for (let c = 0; c < nb; c++) {
        const base = ((b * Hkv + h) * nb + c) * D;
        if (min[base] > max[base]) {
          out[(b * Hout + ho) * nb + c] = -Infinity;
          continue;
        }
        const per = heads.map((hq) => {
          let s = 0;
          for (let d = 0; d < D; d++) s += Math.max(at(q, b, hq, 0, d) * min[base + d], at(q, b, hq, 0, d) * max[base + d]);
          return s;
        });
        out[(b * Hout + ho) * nb + c] = reduce === 'max' ? Math.max(...per) : per.reduce((a, x) => a + x, 0);
      }
    }
  return out;
}

/**
 * The k highest non-empty blocks of each row, ascending, ties to the lower id, -1 padded.
 * @param {ArrayLike<number>} bounds [rows, nb]
 * @param {number} rows
 * @param {number} nb
 * @param {number} k
 * @returns {Int32Array}
 */
function questSelect(bounds, rows, nb, k) {
  const out = new Int32Array(rows * k).fill(-1);
  for (let r = 0; r < rows; r++) {
    const ids = [];
    for (let c = 0; c < nb; c++) if (bounds[r * nb + c] !== -Infinity) ids.push(c);
    ids.sort((a, b) => bounds[r * nb + b] - bounds[r * nb + a] || a - b);
    out.set(ids.slice(0, k).sort((a, b) => a - b), r * k);
  }
  return out;
}

module.exports = { attention, questMetadata, questBounds, questSelect };
