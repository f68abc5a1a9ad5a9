/**
 * Plain float64 references for the L2-norm ranking, Keyformer/H2O accumulation and selection,
 * TOVA and StreamingLLM (ALGORITHMS.md §2-§4), written from the spec, not from the kernels.
 * Caches are logical [B, H, S, D] arrays (the 'bhsd' order); {@link toLayout} and
 * {@link fromLayout} convert to and from what a tensor in either layout stores.
 */
import { philoxGumbel } from './philox';

export type Layout = 'bhsd' | 'bshd';

/** A logical [B, H, S, D] cache. */
export interface Cache4 {
  data: ArrayLike<number>;
  B: number;
  H: number;
  S: number;
  D: number;
}

export function at(c: Cache4, b: number, h: number, s: number, d: number): number {
  return c.data[((b * c.H + h) * c.S + s) * c.D + d];
}

/** The stored shape of a logical [B, H, S, D] cache in a layout. */
export function shapeIn(layout: Layout, B: number, H: number, S: number, D: number): number[] {
  return layout === 'bhsd' ? [B, H, S, D] : [B, S, H, D];
}

/** Logical [B, H, S, D] data rearranged into the layout's storage order. */
export function toLayout(c: Cache4, layout: Layout): Float32Array {
  const out = new Float32Array(c.B * c.H * c.S * c.D);
  if (layout === 'bhsd') {
    for (let i = 0; i < out.length; i++) out[i] = c.data[i];
    return out;
  }
  let i = 0;
  for (let b = 0; b < c.B; b++)
    for (let s = 0; s < c.S; s++)
      for (let h = 0; h < c.H; h++) for (let d = 0; d < c.D; d++) out[i++] = at(c, b, h, s, d);
  return out;
}

/** Storage-order data of a layout back to a logical [B, H, S, D] cache. */
export function fromLayout(data: ArrayLike<number>, layout: Layout, B: number, H: number, S: number, D: number): Cache4 {
  if (layout === 'bhsd') return { data: Float32Array.from(data), B, H, S, D };
  const out = new Float32Array(B * H * S * D);
  let i = 0;
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) out[((b * H + h) * S + s) * D + d] = data[i++];
  return { data: out, B, H, S, D };
}

function lenOf(seqLens: ArrayLike<number> | undefined, b: number, N: number): number {
  return seqLens === undefined ? N : seqLens[b];
}

// ---------------------------------------------------------------------------------------------
// Ranking

/**
 * The k best positions among the first `len` entries of a row, ascending: a higher score ranks
 * first, a tie goes to the lower position, NaN ranks below everything (-Infinity included).
 */
export function topkPositions(row: ArrayLike<number>, len: number, k: number): number[] {
  const idx = Array.from({ length: len }, (_, i) => i);
  idx.sort((a, b) => {
    const x = row[a];
    const y = row[b];
    const xn = Number.isNaN(x);
    const yn = Number.isNaN(y);
    if (xn !== yn) return xn ? 1 : -1;
    if (!xn && x !== y) return x > y ? -1 : 1;
    return a - b;
  });
  return idx.slice(0, k).sort((a, b) => a - b);
}

/**
 * The protected row: +Infinity for the first `sinks` and the last `recent` of the first L entries,
 * sign * row elsewhere (common/params.h ProtectParams).
 */
export function protect(row: ArrayLike<number>, L: number, sinks: number, recent: number, sign: number): Float64Array {
  const out = new Float64Array(row.length);
  const s = Math.min(sinks, L);
  const from = Math.max(L - recent, s);
  for (let j = 0; j < row.length; j++) {
    if (j < L && (j < s || j >= from)) out[j] = Infinity;
    else out[j] = j < L ? sign * row[j] : row[j];
  }
  return out;
}

/** The rows of a cache at positions [B, Hp, K] (Hp = H or 1): a logical [B, H, K, D] cache. */
export function gatherRows(c: Cache4, positions: ArrayLike<number>, Hp: number, K: number): Cache4 {
  const out = new Float32Array(c.B * c.H * K * c.D);
  for (let b = 0; b < c.B; b++)
    for (let h = 0; h < c.H; h++)
      for (let i = 0; i < K; i++) {
        const p = positions[(b * Hp + (Hp === 1 ? 0 : h)) * K + i];
        for (let d = 0; d < c.D; d++) out[((b * c.H + h) * K + i) * c.D + d] = at(c, b, h, p, d);
      }
  return { data: out, B: c.B, H: c.H, S: K, D: c.D };
}

// ---------------------------------------------------------------------------------------------
// L2 (§2)

/** ||k_j||_2 in float64: [B, H, N], 0 past each row's length. */
export function l2Norms(k: Cache4, seqLens?: ArrayLike<number>): Float64Array {
  const out = new Float64Array(k.B * k.H * k.S);
  for (let b = 0; b < k.B; b++) {
    const L = lenOf(seqLens, b, k.S);
    for (let h = 0; h < k.H; h++)
      for (let j = 0; j < L; j++) {
        let ss = 0;
        for (let d = 0; d < k.D; d++) ss += at(k, b, h, j, d) ** 2;
        out[(b * k.H + h) * k.S + j] = Math.sqrt(ss);
      }
  }
  return out;
}

export interface L2SelectOptions {
  capacity: number;
  sinks?: number;
  recent?: number;
  seqLens?: ArrayLike<number>;
}

/**
 * l2.compress's positions: [B, H, C] ascending, the lowest norms plus the protected tokens; all
 * of 0..N-1 ([B, H, N]) when N <= capacity.
 */
export function l2Select(k: Cache4, o: L2SelectOptions): Int32Array {
  const { B, H, S: N } = k;
  if (N <= o.capacity) {
    const out = new Int32Array(B * H * N);
    for (let r = 0; r < B * H; r++) for (let j = 0; j < N; j++) out[r * N + j] = j;
    return out;
  }
  const norms = l2Norms(k, o.seqLens);
  const C = o.capacity;
  const out = new Int32Array(B * H * C);
  for (let b = 0; b < B; b++) {
    const L = lenOf(o.seqLens, b, N);
    for (let h = 0; h < H; h++) {
      const r = b * H + h;
      const row = protect(norms.subarray(r * N, (r + 1) * N), L, o.sinks ?? 0, o.recent ?? 0, -1);
      out.set(topkPositions(row, L, C), r * C);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Keyformer / H2O (§3, §4)

export interface AccumulateRefOptions {
  tau: number;
  noise: 'gumbel' | 'none';
  seed?: number | bigint;
  step?: number | bigint;
  seqLens?: ArrayLike<number>;
}

/**
 * scores + Σ softmax_j((q·k_j/√D + g)/tau) over the T queries (query t of row b at position
 * L-T+t sees keys j <= L-T+t) and the G query heads of each KV head; g is the Philox Gumbel noise
 * of (seed, step, b, hq, t, j) as float32, or 0. Returns a new [B, Hkv, N] array.
 */
export function accumulate(q: Cache4, k: Cache4, scores: ArrayLike<number>, o: AccumulateRefOptions): Float64Array {
  const { B, H: Hq, S: T, D } = q;
  const { H: Hkv, S: N } = k;
  const G = Hq / Hkv;
  const scale = 1 / Math.sqrt(D);
  const out = Float64Array.from(scores);
  const logits = new Float64Array(N);
  for (let b = 0; b < B; b++) {
    const L = lenOf(o.seqLens, b, N);
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

/** Keyformer's temperature: tauInit + step (tauEnd - tauInit) / maxNewTokens. */
export function tau(step: number, o: { tauInit?: number; tauEnd?: number; maxNewTokens: number }): number {
  const t0 = o.tauInit ?? 1;
  const t1 = o.tauEnd ?? 2;
  return t0 + (step * (t1 - t0)) / o.maxNewTokens;
}

/**
 * keyformer.select / h2o.select: [B, H, C] ascending, the last `recent` real tokens plus the
 * top capacity - recent others by score.
 */
export function selectRecent(scores: ArrayLike<number>, B: number, H: number, N: number, o: { capacity: number; recent: number; seqLens?: ArrayLike<number> }): Int32Array {
  const C = o.capacity;
  const out = new Int32Array(B * H * C);
  for (let b = 0; b < B; b++) {
    const L = lenOf(o.seqLens, b, N);
    for (let h = 0; h < H; h++) {
      const r = b * H + h;
      const row = protect(Array.prototype.slice.call(scores, r * N, (r + 1) * N) as number[], L, 0, o.recent, 1);
      out.set(topkPositions(row, L, C), r * C);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// TOVA, StreamingLLM (§4)

/**
 * TOVA's layer scores [B, N]: the last query's softmax attention (tau 1, no noise, causal: it
 * sees keys j < L) averaged over all Hq query heads. 0 past each row's length.
 */
export function tovaScores(q: Cache4, k: Cache4, seqLens?: ArrayLike<number>): Float64Array {
  const perHead = accumulate(q, k, new Float64Array(k.B * k.H * k.S), { tau: 1, noise: 'none', seqLens });
  const out = new Float64Array(k.B * k.S);
  for (let b = 0; b < k.B; b++)
    for (let h = 0; h < k.H; h++) for (let j = 0; j < k.S; j++) out[b * k.S + j] += perHead[(b * k.H + h) * k.S + j] / q.H;
  return out;
}

/** tova.select: one selection per batch row, [B, 1, C] ascending. */
export function tovaSelect(q: Cache4, k: Cache4, o: { capacity: number; seqLens?: ArrayLike<number> }): Int32Array {
  const s = tovaScores(q, k, o.seqLens);
  const out = new Int32Array(k.B * o.capacity);
  for (let b = 0; b < k.B; b++) {
    out.set(topkPositions(s.subarray(b * k.S, (b + 1) * k.S), lenOf(o.seqLens, b, k.S), o.capacity), b * o.capacity);
  }
  return out;
}

/** streaming.select: 0..sinks-1 and n-recent..n-1, or all of 0..n-1 when they overlap. */
export function streamingSelect(n: number, sinks: number, recent: number): number[] {
  if (sinks + recent >= n) return Array.from({ length: n }, (_, i) => i);
  const out: number[] = [];
  for (let i = 0; i < sinks; i++) out.push(i);
  for (let i = n - recent; i < n; i++) out.push(i);
  return out;
}
