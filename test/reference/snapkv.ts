/**
 * A plain float64 reference of SnapKV (ALGORITHMS.md §1; the seed's `KVCluster.update_kv`),
 * written for obviousness, not speed, and independently of the C++ backends.
 *
 * Every 4-D array here is logical [B, H, S, D] in row-major ("bhsd") order; tests convert to and
 * from "bshd" with {@link bhsdToBshd} / {@link bshdToBhsd}. Inputs are expected already rounded
 * to the dtype the device sees (Tensor.from(...).toArray() gives those values); from there every
 * step is float64, which stands in for the kernels' fp32 math.
 */

export type GroupReduce = 'mean' | 'sum' | 'max' | 'none';
export type PoolKind = 'avg' | 'max';

export interface Dims {
  B: number;
  Hq: number;
  Hkv: number;
  N: number;
  W: number;
  D: number;
}

/** Index of (b, h, s, d) in a bhsd array of [B, H, S, D]. */
function at(H: number, S: number, D: number, b: number, h: number, s: number, d: number): number {
  return ((b * H + h) * S + s) * D + d;
}

type NumArray = ArrayLike<number> & { [i: number]: number; length: number };
type TypedCtor<T> = { new (n: number): T };

/** [B, H, S, D] -> [B, S, H, D] for any typed array (raw bits travel unchanged). */
export function bhsdToBshd<T extends NumArray>(a: T, B: number, H: number, S: number, D: number): T {
  const out = new (a.constructor as TypedCtor<T>)(a.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let s = 0; s < S; s++)
        for (let d = 0; d < D; d++) out[((b * S + s) * H + h) * D + d] = a[at(H, S, D, b, h, s, d)];
  return out;
}

/** [B, S, H, D] -> [B, H, S, D]. */
export function bshdToBhsd<T extends NumArray>(a: T, B: number, H: number, S: number, D: number): T {
  const out = new (a.constructor as TypedCtor<T>)(a.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let s = 0; s < S; s++)
        for (let d = 0; d < D; d++) out[at(H, S, D, b, h, s, d)] = a[((b * S + s) * H + h) * D + d];
  return out;
}

export interface ScoresResult {
  /** [B, Hout, N - W]; entries j >= L - W of a short row are 0. */
  votes: Float64Array;
  /** Per query head, before the group reduce: [B, Hq, N - W]. */
  perHead: Float64Array;
  /** Natural-log log-sum-exp of each window row over its causal keys: [B, Hq, W]. */
  lse: Float64Array;
  Hout: number;
}

/**
 * Steps 1-4 of SnapKV. For batch row b with L real tokens (seqLens[b], or N), window query r sits
 * at absolute position L - W + r and sees keys j <= L - W + r (the seed's causal mask inside the
 * window: mask_cond < mask_cond + 1 . view(-1, 1)). p = softmax over those keys; vote[j] sums p
 * over the W rows for prefix keys j < L - W. GQA: query head h reads KV head floor(h / G).
 *
 * @param q [B, Hq, W, D] (the window queries only)
 * @param k [B, Hkv, N, D]
 */
export function snapkvScoresRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  dims: Dims,
  opts: { groupReduce?: GroupReduce; seqLens?: ArrayLike<number> } = {},
): ScoresResult {
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
        let max = -Infinity;
        for (let j = 0; j <= last; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[at(Hq, W, D, b, h, r, d)] * k[at(Hkv, N, D, b, hk, j, d)];
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
 */
export function poolRef(
  input: ArrayLike<number>,
  R: number,
  M: number,
  kernel: number,
  kind: PoolKind,
  lengths?: ArrayLike<number>,
  rowsPerBatch = 1,
): Float64Array {
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

/** True when score a at position i ranks above score b at position j (NaN last, ties to lower). */
function ranksAbove(a: number, i: number, b: number, j: number): boolean {
  const an = Number.isNaN(a);
  const bn = Number.isNaN(b);
  if (an !== bn) return bn;
  if (!an && a !== b) return a > b; // -0 === +0: a tie
  return i < j;
}

/** The positions of one row [0, len) in ranking order: best first. */
export function rankRow(row: ArrayLike<number>, len = row.length): number[] {
  const idx = Array.from({ length: len }, (_, i) => i);
  return idx.sort((i, j) => (ranksAbove(row[i], i, row[j], j) ? -1 : 1));
}

/**
 * Top-k of every row of [R, M]: the k best of the row's first len entries (lengths per batch as in
 * {@link poolRef}). 'position' order: ascending positions; 'score': best first. Returns [R, k].
 */
export function topkRef(
  input: ArrayLike<number>,
  R: number,
  M: number,
  k: number,
  order: 'position' | 'score' = 'position',
  lengths?: ArrayLike<number>,
  rowsPerBatch = 1,
): Int32Array {
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
 * out[b, h, i, :] = cache[b, floor(h / group), pos[b, h or 0, i], :] over any typed array (raw
 * f16/bf16 bits gather exactly). positions is [B, Hp, K] with Hp = 1 (broadcast) or Hc * group.
 */
export function gatherRef<T extends NumArray>(
  cache: T,
  B: number,
  Hc: number,
  N: number,
  D: number,
  positions: ArrayLike<number>,
  Hp: number,
  K: number,
  group = 1,
): T {
  const Hout = Hp === 1 ? Hc : Hc * group;
  const out = new (cache.constructor as TypedCtor<T>)(B * Hout * K * D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hout; h++)
      for (let i = 0; i < K; i++) {
        const p = positions[(b * Hp + (Hp === 1 ? 0 : h)) * K + i];
        if (p < 0 || p >= N) throw new Error(`gatherRef: position ${p} outside [0, ${N})`);
        const hc = Math.floor(h / (Hp === 1 ? 1 : group));
        for (let d = 0; d < D; d++) out[at(Hout, K, D, b, h, i, d)] = cache[at(Hc, N, D, b, hc, p, d)];
      }
  return out;
}

export interface CompressRefOptions {
  window: number;
  capacity: number;
  kernel?: number;
  pooling?: PoolKind;
  groupReduce?: GroupReduce;
  seqLens?: ArrayLike<number>;
}

export interface CompressRefResult {
  /** [B, Hout, C]: C = capacity, or N when N <= capacity (nothing dropped). */
  positions: Int32Array;
  /** [B, Hout, N - W] pooled votes (empty when nothing is dropped). */
  pooled: Float64Array;
  votes: Float64Array;
  Hout: number;
  C: number;
}

/**
 * The whole pipeline: votes, pooling over each row's prefix, top capacity - W prefix positions
 * (ascending, ties to the lower position), then the W window positions L - W .. L - 1. When
 * N <= capacity nothing is dropped: positions 0..N-1 for every head. Gather K/V with
 * {@link gatherRef}(cache, ..., positions, Hout, C, Hout / Hkv).
 */
export function snapkvCompressRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  dims: Dims,
  opts: CompressRefOptions,
): CompressRefResult {
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

/**
 * Checks one row's selection against reference scores, robust to near-ties: every position whose
 * reference score beats the k-th best by more than `rtol` (relative, with `atol` floor) must be
 * chosen, and no chosen position may score below the k-th best by more than that. Returns a
 * description of the first violation, or '' when the selection is acceptable. When the gap
 * between the k-th and (k+1)-th reference values is clear, this is exact set equality.
 */
export function selectionViolation(
  refRow: ArrayLike<number>,
  len: number,
  chosen: ArrayLike<number>,
  rtol = 1e-4,
  atol = 1e-9,
): string {
  const k = chosen.length;
  const order = rankRow(refRow, len);
  const kth = refRow[order[k - 1]];
  const tol = atol + rtol * Math.abs(kth);
  const set = new Set<number>();
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
