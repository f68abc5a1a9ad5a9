/**
 * A plain float64 reference of SnapKV (docs/ALGORITHMS.md, "SnapKV"; the seed's
 * `KVCluster.update_kv`), written for obviousness, not speed, and independently of the backends.
 *
 * Every 4-D array here is logical [B, H, S, D] in row-major ('bhsd') order (reference/layout.js
 * converts). Inputs are expected already rounded to the dtype the device sees
 * (Tensor.from(...).toArray() gives those values); from there every step is float64, which
 * stands in for the kernels' fp32 math.
 */
'use strict';

const { topkRef } = require('./select');

/** @typedef {'mean' | 'sum' | 'max' | 'none'} GroupReduce */
/** @typedef {'avg' | 'max'} PoolKind */
/**
 * W: the observation window (the queries' S); Hq a multiple of Hkv.
 * @typedef {{ B: number, Hq: number, Hkv: number, N: number, W: number, D: number }} Dims
 */
/**
 * votes: [B, Hout, N - W] (entries j >= L - W of a short row are 0); perHead: [B, Hq, N - W]
 * before the group reduce; lse: natural-log log-sum-exp of each window row over its causal keys,
 * [B, Hq, W].
 * @typedef {{ votes: Float64Array, perHead: Float64Array, lse: Float64Array, Hout: number }} ScoresResult
 */

/**
 * Steps 1-4 of SnapKV. For batch row b with L real tokens (seqLens[b], or N), window query r sits
 * at absolute position L - W + r and sees keys j <= L - W + r (the seed's causal mask inside the
 * window). p = softmax over those keys; vote[j] sums p over the W rows for prefix keys j < L - W.
 * GQA: query head h reads KV head floor(h / G).
 * @param {ArrayLike<number>} q [B, Hq, W, D] (the window queries only)
 * @param {ArrayLike<number>} k [B, Hkv, N, D]
 * @param {Dims} dims
 * @param {{ groupReduce?: GroupReduce, seqLens?: ArrayLike<number> }} [opts]
 * @returns {ScoresResult}
 */
function snapkvScoresRef(q, k, dims, opts = {}) {
  const { B, Hq, Hkv, N, W, D } = dims;
  const G = Hq / Hkv;
  const M = N - W;
  const scale = 1 / Math.sqrt(D);
  const perHead = new Float64Array(B * Hq * M);
  const lse = new Float64Array(B * Hq * W);
  const logits = new Float64Array(N);
  for (let b = 0; b < B; b++) {
    const L = opts.seqLens ? opts.seqLens[b] : N;
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / G);
      for (let r = 0; r < W; r++) {
        const last = L - W + r; // the last key this query sees
        const qo = ((b * Hq + h) * W + r) * D;
        let max = -Infinity;
        for (let j = 0; j <= last; j++) {
          const ko = ((b * Hkv + hk) * N + j) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d] * k[ko + d];
          logits[j] = dot * scale;
          if (logits[j] > max) max = logits[j];
        }
        let sum = 0;
        for (let j = 0; j <= last; j++) sum += Math.exp(logits[j] - max);
        lse[(b * Hq + h) * W + r] = max + Math.log(sum);
        for (let j = 0; j < L - W; j++) perHead[(b * Hq + h) * M + j] += Math.exp(logits[j] - max) / sum;
      }
    }
  }
  const groupReduce = opts.groupReduce ?? 'mean';
  if (groupReduce === 'none') return { votes: perHead.slice(), perHead, lse, Hout: Hq };
  const votes = new Float64Array(B * Hkv * M);
  for (let b = 0; b < B; b++)
    for (let hk = 0; hk < Hkv; hk++)
      for (let j = 0; j < M; j++) {
        let acc = groupReduce === 'max' ? -Infinity : 0;
        for (let g = 0; g < G; g++) {
          const v = perHead[(b * Hq + hk * G + g) * M + j];
          acc = groupReduce === 'max' ? Math.max(acc, v) : acc + v;
        }
        votes[(b * Hkv + hk) * M + j] = groupReduce === 'mean' ? acc / G : acc;
      }
  return { votes, perHead, lse, Hout: Hkv };
}

/**
 * Step 5: 1-D pooling along the last axis, odd kernel K, stride 1, padding K // 2, as PyTorch's
 * avg_pool1d (count_include_pad=True: the sum is always divided by K) and max_pool1d (padding is
 * -inf, so it never wins). Rows are [R, M]; row r belongs to batch floor(r / rowsPerBatch), whose
 * first lengths[b] entries are real; the rest are padding and come out 0.
 * @param {ArrayLike<number>} input
 * @param {number} R
 * @param {number} M
 * @param {number} kernel
 * @param {PoolKind} kind
 * @param {ArrayLike<number>} [lengths]
 * @param {number} [rowsPerBatch]
 * @returns {Float64Array}
 */
function poolRef(input, R, M, kernel, kind, lengths, rowsPerBatch = 1) {
  const out = new Float64Array(R * M);
  const half = Math.floor(kernel / 2);
  for (let r = 0; r < R; r++) {
    const len = lengths ? lengths[Math.floor(r / rowsPerBatch)] : M;
    for (let j = 0; j < len; j++) {
      let acc = kind === 'avg' ? 0 : -Infinity;
      for (let t = j - half; t <= j + half; t++) {
        if (t < 0 || t >= len) continue; // avg: adds 0 (still counted in K); max: never wins
        const v = input[r * M + t];
        acc = kind === 'avg' ? acc + v : Math.max(acc, v);
      }
      out[r * M + j] = kind === 'avg' ? acc / kernel : acc;
    }
  }
  return out;
}

/**
 * @typedef {{ window: number, capacity: number, kernel?: number, pooling?: PoolKind,
 *   groupReduce?: GroupReduce, seqLens?: ArrayLike<number> }} CompressRefOptions
 */
/**
 * positions: [B, Hout, C] with C = capacity, or N when N <= capacity (nothing dropped); pooled:
 * [B, Hout, N - W] pooled votes (empty when nothing is dropped).
 * @typedef {{ positions: Int32Array, pooled: Float64Array, votes: Float64Array, Hout: number, C: number }} CompressRefResult
 */

/**
 * The whole pipeline: votes, pooling over each row's prefix, top capacity - W prefix positions
 * (ascending, ties to the lower position), then the W window positions L - W .. L - 1. When
 * N <= capacity nothing is dropped: positions 0..N-1 for every head. Gather K/V with
 * gatherRef(cache, ..., positions, Hout, C, Hout / Hkv) (reference/select.js).
 * @param {ArrayLike<number>} q
 * @param {ArrayLike<number>} k
 * @param {Dims} dims
 * @param {CompressRefOptions} opts
 * @returns {CompressRefResult}
 */
function snapkvCompressRef(q, k, dims, opts) {
  const { B, Hq, Hkv, N, W } = dims;
  const groupReduce = opts.groupReduce ?? 'mean';
  const Hout = groupReduce === 'none' ? Hq : Hkv;
  const C = opts.capacity;
  if (N <= C) {
    const positions = new Int32Array(B * Hout * N);
    for (let r = 0; r < B * Hout; r++) for (let j = 0; j < N; j++) positions[r * N + j] = j;
    return { positions, pooled: new Float64Array(0), votes: new Float64Array(0), Hout, C: N };
  }
  const { votes } = snapkvScoresRef(q, k, dims, { groupReduce, seqLens: opts.seqLens });
  const M = N - W;
  const prefixLens = opts.seqLens ? Array.from(opts.seqLens, (l) => l - W) : undefined;
  const pooled = poolRef(votes, B * Hout, M, opts.kernel ?? 7, opts.pooling ?? 'max', prefixLens, Hout);
  const select = C - W;
  const chosen = select > 0 ? topkRef(pooled, B * Hout, M, select, 'position', prefixLens, Hout) : new Int32Array(0);
  const positions = new Int32Array(B * Hout * C);
  for (let r = 0; r < B * Hout; r++) {
    const L = opts.seqLens ? opts.seqLens[Math.floor(r / Hout)] : N;
    for (let i = 0; i < select; i++) positions[r * C + i] = chosen[r * select + i];
    for (let i = 0; i < W; i++) positions[r * C + select + i] = L - W + i;
  }
  return { positions, pooled, votes, Hout, C };
}

module.exports = { snapkvScoresRef, poolRef, snapkvCompressRef };
