/**
 * SnapKV (arXiv 2404.14469; docs/ALGORITHMS.md, "SnapKV"): the last W queries of the prompt vote
 * for the prefix keys they attend to; the top-voted keys and the window are kept.
 */
import { native } from './native';
import { arange, check4d, checkCapacity, checkQueriesMatchKeys, checkLengths, layoutCode, opStream, sameDevice, shape4, withLayoutHint, withScope, type Layout, type LayoutOptions, type OpOptions, type Scope } from './common';
import type { Compacted } from './select';
import { checkTensor, Tensor } from './tensor';
import { checkInt, checkOneOf, checkOptions, invalidText } from './validate';

export type GroupReduce = 'mean' | 'sum' | 'max' | 'none';
const GROUP_REDUCE: Record<GroupReduce, number> = { mean: 0, sum: 1, max: 2, none: 3 };
export type PoolKind = 'avg' | 'max';

export interface ScoresOptions extends LayoutOptions, OpOptions {
  /** Observation window W: the number of query rows. Default: the queries' sequence length. */
  window?: number;
  /**
   * How the G query heads of a KV head combine their votes: 'mean' (default), 'sum', 'max', or
   * 'none' (one selection per query head, the reference's behaviour).
   */
  groupReduce?: GroupReduce;
  /** Real lengths of right-padded batch rows (W <= seqLens[b] <= N); each row's window is its last W real tokens. */
  seqLens?: Int32Array | readonly number[];
  /** f32 [B, Hq, W]: the window rows' log-sum-exp (natural log, of q.k/sqrt(D)) from the engine's prefill attention; saves a pass over K. */
  lse?: Tensor;
}

interface ScoresArgs {
  q: Tensor;
  k: Tensor;
  B: number;
  Hq: number;
  Hkv: number;
  N: number;
  W: number;
  D: number;
  layoutCode: 0 | 1;
  groupReduce: GroupReduce;
  seqLens?: Int32Array;
  lse?: Tensor;
  device: number;
  stream?: bigint;
}

function checkScoresArgs(op: string, queries: unknown, keys: unknown, opts: ScoresOptions): ScoresArgs {
  const { layout } = layoutCode(op, opts.layout);
  return withLayoutHint(layout, (l) => checkScoresArgsAs(op, queries, keys, opts, l));
}

function checkScoresArgsAs(op: string, queries: unknown, keys: unknown, opts: ScoresOptions, layout: Layout): ScoresArgs {
  const code = layout === 'bhsd' ? 0 : 1;
  const explicit = opts.layout !== undefined;
  const { t: q, dims: qd } = check4d(op, 'queries', queries, layout, undefined, explicit);
  const { t: k, dims: kd } = check4d(op, 'keys', keys, layout, undefined, explicit);
  const device = sameDevice(op, [q, k]);
  if (q.dtype !== k.dtype) throw invalidText(op, 'queries.dtype', `the keys' dtype '${k.dtype}'`, `'${q.dtype}'`);
  checkQueriesMatchKeys(op, 'queries', qd, kd);
  const W = opts.window === undefined ? qd.S : checkInt(op, 'options.window', opts.window, 1);
  if (W > kd.S) throw invalidText(op, 'options.window', `at most N = ${kd.S}`, `${W}`);
  if (W !== qd.S) throw invalidText(op, 'queries', `${W} window rows (options.window)`, `${qd.S}`);
  if (W < 1) throw invalidText(op, 'queries', 'at least one window row', '0');
  const groupReduce = opts.groupReduce === undefined ? 'mean' : checkOneOf(op, 'options.groupReduce', opts.groupReduce, ['mean', 'sum', 'max', 'none'] as const);
  const seqLens = checkLengths(op, 'options.seqLens', opts.seqLens, kd.B, W, kd.S);
  let lse: Tensor | undefined;
  if (opts.lse !== undefined) {
    lse = checkTensor(op, 'options.lse', opts.lse);
    sameDevice(op, [q, lse]);
    if (lse.dtype !== 'f32' || lse.shape.length !== 3 || lse.shape[0] !== qd.B || lse.shape[1] !== qd.H || lse.shape[2] !== W) {
      throw invalidText(op, 'options.lse', `an f32 tensor [${qd.B}, ${qd.H}, ${W}]`, `${lse.dtype} [${lse.shape.join(', ')}]`);
    }
  }
  return { q, k, B: kd.B, Hq: qd.H, Hkv: kd.H, N: kd.S, W, D: kd.D, layoutCode: code, groupReduce, seqLens, lse, device, stream: opStream(op, opts, device) };
}

/**
 * Observation-window votes: fused Q·Kᵀ, causal softmax in fp32 and the column sums over the
 * window, reduced over each GQA group. No [W × N] matrix is materialized.
 *
 * @param queries the last W queries, [B, Hq, W, D] ('bhsd') or [B, W, Hq, D] ('bshd'), f32/f16/bf16.
 * @param keys all N keys, [B, Hkv, N, D] or [B, N, Hkv, D], same dtype.
 * @returns f32 votes [B, Hkv, N - W] ([B, Hq, N - W] with groupReduce 'none'); entries past a
 *   short row's prefix (seqLens[b] - W) are 0.
 * @example
 * ```ts
 * const votes = snapkv.scores(windowQueries, keys, { window: 32 }); // queries [1, 32, 32, 128] -> [1, 8, N - 32]
 * ```
 */
export function scores(queries: Tensor, keys: Tensor, options?: ScoresOptions): Tensor {
  const op = 'snapkv.scores';
  const a = checkScoresArgs(op, queries, keys, checkOptions(op, options) as ScoresOptions);
  return runScores(a);
}

function runScores(a: ScoresArgs): Tensor {
  const hout = a.groupReduce === 'none' ? a.Hq : a.Hkv;
  return withScope(a.device, a.stream, (scope) => {
    const out = scope.output([a.B, hout, a.N - a.W], 'f32');
    native.snapkvScores(a.q, a.k, out, { window: a.W, groupReduce: GROUP_REDUCE[a.groupReduce], layout: a.layoutCode, seqLens: a.seqLens, lse: a.lse }, a.stream);
    return out;
  });
}

export interface PoolOptions extends OpOptions {
  /** Odd pooling kernel, stride 1, same length. */
  kernel: number;
  /** 'avg' (divides by the kernel at the edges too, as PyTorch's count_include_pad) or 'max'. */
  kind: PoolKind;
  /** Valid entries per batch row (first dimension); the rest count as padding and come out 0. */
  lengths?: Int32Array | readonly number[];
}

/**
 * 1-D pooling of votes along the last axis ("clustering" in SnapKV): odd kernel, stride 1,
 * zero padding of kernel/2 on each side.
 *
 * @example
 * ```ts
 * const pooled = snapkv.pool(votes, { kernel: 7, kind: 'max' });
 * ```
 */
export function pool(votes: Tensor, options: PoolOptions): Tensor {
  const op = 'snapkv.pool';
  const v = checkTensor(op, 'votes', votes);
  const opts = checkOptions(op, options) as unknown as PoolOptions;
  if (v.dtype !== 'f32') throw invalidText(op, 'votes.dtype', "'f32'", `'${v.dtype}'`);
  if (v.shape.length < 1) throw invalidText(op, 'votes', 'a tensor of rank >= 1', 'a scalar');
  const kernel = checkInt(op, 'options.kernel', opts.kernel, 1, 1 << 20);
  if (kernel % 2 === 0) throw invalidText(op, 'options.kernel', 'an odd integer', `${kernel}`);
  const kind = checkOneOf(op, 'options.kind', opts.kind, ['avg', 'max'] as const);
  const M = v.shape[v.shape.length - 1];
  const lengths = checkLengths(op, 'options.lengths', opts.lengths, v.shape.length === 1 ? 1 : v.shape[0], 0, M);
  const stream = opStream(op, opts, v._deviceIndex);
  return withScope(v._deviceIndex, stream, (scope) => {
    const out = scope.output(v.shape.slice(), 'f32');
    native.pool1d(v, out, { kernel, kind: kind === 'avg' ? 0 : 1, lengths }, stream);
    return out;
  });
}

export interface SelectOptions extends ScoresOptions {
  /** Observation window W (required here). */
  window: number;
  /** Tokens kept per head: the top capacity - W prefix tokens, then the window. */
  capacity: number;
  /** Pooling kernel (odd). Default 7. */
  kernel?: number;
  /** Default 'max'. */
  pooling?: PoolKind;
}

/** @deprecated the same options as {@link SelectOptions}. */
export type CompressOptions = SelectOptions;

interface Selection {
  positions: Tensor<'i32'>;
  hout: number;
  group: number;
}

/** Checks compress/select options and returns the kept positions (inside `scope`). */
function selectInScope(op: string, a: ScoresArgs, opts: SelectOptions, scope: Scope): Selection {
  const capacity = checkCapacity(op, opts.capacity);
  if (capacity < a.W) throw invalidText(op, 'options.capacity', `at least the window (${a.W})`, `${capacity}`);
  const kernel = opts.kernel === undefined ? 7 : checkInt(op, 'options.kernel', opts.kernel, 1, 1 << 20);
  if (kernel % 2 === 0) throw invalidText(op, 'options.kernel', 'an odd integer', `${kernel}`);
  const pooling = opts.pooling === undefined ? 'max' : checkOneOf(op, 'options.pooling', opts.pooling, ['avg', 'max'] as const);
  const hout = a.groupReduce === 'none' ? a.Hq : a.Hkv;
  const group = hout / a.Hkv;
  const lens = a.seqLens;
  // capacity >= N: nothing to drop (the meaning every op shares; see docs/API.md)
  const allShort = a.N <= capacity;
  if (lens !== undefined && !allShort) {
    for (let b = 0; b < lens.length; b++) {
      if (lens[b] < capacity) {
        throw invalidText(op, `options.seqLens[${b}]`, `at least capacity (${capacity}); compress shorter rows separately`, `${lens[b]}`);
      }
    }
  }
  if (allShort) {
    // nothing to drop: every token, in order
    const tiled = scope.output([a.B, hout, a.N], 'i32');
    const host = new Int32Array(a.B * hout * a.N);
    for (let r = 0; r < a.B * hout; r++) host.set(arange(a.N), r * a.N);
    native.copyFromHost(tiled._buffer, 0, host, a.stream);
    return { positions: tiled, hout, group };
  }
  const votes = scope.alloc([a.B, hout, a.N - a.W], 'f32');
  native.snapkvScores(a.q, a.k, votes, { window: a.W, groupReduce: GROUP_REDUCE[a.groupReduce], layout: a.layoutCode, seqLens: lens, lse: a.lse }, a.stream);
  const prefixLens = lens === undefined ? undefined : lens.map((l) => l - a.W);
  const pooled = scope.alloc([a.B, hout, a.N - a.W], 'f32');
  native.pool1d(votes, pooled, { kernel, kind: pooling === 'avg' ? 0 : 1, lengths: prefixLens }, a.stream);
  const positions = scope.output([a.B, hout, capacity], 'i32');
  const select = capacity - a.W;
  if (select > 0) native.topk(pooled, positions, { k: select, order: 0, outRowStride: capacity, lengths: prefixLens }, a.stream);
  native.fillWindow(positions, { window: a.W, n: a.N, rowStride: capacity, rowsPerBatch: hout, seqLens: lens }, a.stream);
  return { positions, hout, group };
}

/**
 * SnapKV's selection alone: the positions `compress` would keep, without gathering K and V. With
 * a {@link KvCache}, pass its storage and lengths and retain the result in place.
 *
 * capacity >= N (the keys' token count) keeps every token: positions 0..N-1. Otherwise every row
 * must hold at least `capacity` real tokens (seqLens).
 *
 * @returns i32 [B, H, capacity] (H = Hkv, or Hq with groupReduce 'none'), ascending
 * @example
 * ```ts
 * const keep = snapkv.select(window, cache.keys, { window: 32, capacity: 1024, seqLens: cache.lengths });
 * cache.retain(keep);
 * ```
 */
export function select(queries: Tensor, keys: Tensor, options: SelectOptions): Tensor<'i32'> {
  const op = 'snapkv.select';
  const opts = checkOptions(op, options) as unknown as SelectOptions;
  if (opts.window === undefined) throw invalidText(op, 'options.window', 'an integer >= 1', 'undefined');
  const a = checkScoresArgs(op, queries, keys, opts);
  return withScope(a.device, a.stream, (scope) => selectInScope(op, a, opts, scope).positions);
}

/**
 * The whole SnapKV pipeline on the device, with no host synchronization: votes, pooling, top
 * capacity - W selection (positions ascending, ties to the lower position), the window appended,
 * and K and V gathered into a compact cache.
 *
 * When N <= capacity nothing is dropped: the result is a copy with positions 0..N-1 (the meaning
 * of capacity >= N for every op). Otherwise, with seqLens, every row must hold at least
 * `capacity` real tokens.
 *
 * @returns keys/values [B, H, capacity, D] in the input layout (H = Hkv, or Hq with groupReduce
 *   'none'), positions i32 [B, H, capacity] (original positions, for RoPE position ids).
 * @example
 * ```ts
 * const { keys, values, positions } = snapkv.compress(qWindow, k, v, { window: 32, capacity: 2048 });
 * ```
 */
export function compress(queries: Tensor, keys: Tensor, values: Tensor, options: SelectOptions): Compacted {
  const op = 'snapkv.compress';
  const opts = checkOptions(op, options) as unknown as SelectOptions;
  if (opts.window === undefined) throw invalidText(op, 'options.window', 'an integer >= 1', 'undefined');
  const a = checkScoresArgs(op, queries, keys, opts);
  const { layout } = layoutCode(op, opts.layout);
  const { t: v, dims: vd } = check4d(op, 'values', values, layout, ['f32', 'f16', 'bf16']);
  sameDevice(op, [a.k, v]);
  if (vd.B !== a.B || vd.H !== a.Hkv || vd.S !== a.N) {
    throw invalidText(op, 'values', `a cache with the keys' [B, H, N] = [${a.B}, ${a.Hkv}, ${a.N}]`, `[${vd.B}, ${vd.H}, ${vd.S}]`);
  }
  return withScope(a.device, a.stream, (scope) => {
    const { positions, hout, group } = selectInScope(op, a, opts, scope);
    const K = positions.shape[2];
    const keysOut = scope.output(shape4(layout, a.B, hout, K, a.D), a.k.dtype);
    native.gather(a.k, positions, keysOut, { layout: a.layoutCode, group }, a.stream);
    const valuesOut = scope.output(shape4(layout, a.B, hout, K, vd.D), v.dtype);
    native.gather(v, positions, valuesOut, { layout: a.layoutCode, group }, a.stream);
    return { keys: keysOut, values: valuesOut, positions };
  });
}
