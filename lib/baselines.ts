/**
 * The baselines users compare against (docs/ALGORITHMS.md, "Baselines"): H2O (accumulated attention
 * + recent window), TOVA (the last query's attention averaged over every head of the layer) and
 * StreamingLLM (attention sinks + recent window, no scores).
 */
import { native } from './native';
import { check4d, checkCapacity, checkLengths, layoutCode, opStream, sameDevice, withScope, type LayoutOptions, type OpOptions } from './common';
import { deviceIndex, defaultDevice, type Device } from './device';
import { runAccumulate, runSelect, type SelectOptions } from './keyformer';
import { checkRagged, type RaggedLayout } from './ragged_cache';
import { checkTensor, type Tensor } from './tensor';
import { checkInt, checkOptions, invalidText } from './validate';

export interface H2OAccumulateOptions extends LayoutOptions, OpOptions {
  seqLens?: Int32Array | readonly number[];
  /** A ragged per-head cache: keys [rows, D], scores f32 [rows] (as keyformer.accumulate). */
  ragged?: RaggedLayout;
}

/** H2O: heavy-hitter accumulation = Keyformer with no noise and tau 1. */
export const h2o = {
  /**
   * scores[b, h, j] += Σ softmax_j(q·k_j/√D) over the step's queries and the group's heads.
   *
   * @example
   * ```ts
   * h2o.accumulate(q, keys, scores);
   * ```
   */
  accumulate(queries: Tensor, keys: Tensor, scores: Tensor, options?: H2OAccumulateOptions): Tensor {
    const op = 'h2o.accumulate';
    const opts = checkOptions(op, options) as H2OAccumulateOptions;
    return runAccumulate(op, queries, keys, scores, { ...opts, tau: 1, seed: 0, step: 0, noise: 'none' });
  },
  /**
   * The recent window plus the heaviest hitters, positions ascending.
   *
   * @example
   * ```ts
   * const pos = h2o.select(scores, { capacity: 1024, recent: 128 });
   * ```
   */
  select(scores: Tensor, options: SelectOptions): Tensor {
    return runSelect('h2o.select', scores, options);
  },
};

export interface TovaOptions extends LayoutOptions, OpOptions {
  /** Tokens kept (one selection for every head of the layer). */
  capacity: number;
  seqLens?: Int32Array | readonly number[];
  /**
   * A ragged per-head cache (keys [rows, D]): the layer's score of an original position is the
   * last query's attention to it averaged over all query heads (0 from heads that no longer hold
   * it); positions no head holds rank last. Needs the layout's positionsEnd.
   */
  ragged?: RaggedLayout;
}

/** TOVA: token omission via attention. */
export const tova = {
  /**
   * Keeps the `capacity` tokens with the highest attention from the last query, averaged over
   * all query heads of the layer: one selection for the whole layer.
   *
   * @param queries the last query, [B, Hq, 1, D]
   * @returns i32 [B, 1, capacity], ascending (pass to `evict`, which applies it to every head).
   *   With `options.ragged`: the kept original positions (indices in each head without the
   *   layout's positions), the same as on the equivalent dense rows.
   * @example
   * ```ts
   * const pos = tova.select(lastQuery, keys, { capacity: 1024 });
   * const small = evict(keys, values, pos);
   * ```
   */
  select(queries: Tensor, keys: Tensor, options: TovaOptions): Tensor {
    const op = 'tova.select';
    const opts = checkOptions(op, options) as unknown as TovaOptions;
    if (opts.ragged !== undefined) return tovaRagged(op, queries, keys, opts);
    const { layout, code } = layoutCode(op, opts.layout);
    const { t: q, dims: qd } = check4d(op, 'queries', queries, layout);
    const { t: k, dims: kd } = check4d(op, 'keys', keys, layout);
    const device = sameDevice(op, [q, k]);
    if (qd.S !== 1) throw invalidText(op, 'queries', 'the last query only (T = 1)', `${qd.S} rows`);
    if (q.dtype !== k.dtype) throw invalidText(op, 'queries.dtype', `the keys' dtype '${k.dtype}'`, `'${q.dtype}'`);
    if (qd.B !== kd.B || qd.D !== kd.D || kd.H === 0 || qd.H % kd.H !== 0) {
      throw invalidText(op, 'queries', `[${kd.B}, a multiple of ${kd.H}, 1, ${kd.D}]`, `[${qd.B}, ${qd.H}, ${qd.S}, ${qd.D}]`);
    }
    const capacity = checkCapacity(op, opts.capacity);
    if (capacity > kd.S) throw invalidText(op, 'options.capacity', `at most N = ${kd.S}`, `${capacity}`);
    const seqLens = checkLengths(op, 'options.seqLens', opts.seqLens, kd.B, capacity, kd.S);
    const stream = opStream(op, opts, device);
    return withScope(device, stream, (scope) => {
      const perHead = scope.alloc([kd.B, kd.H, kd.S], 'f32');
      native.fill(perHead._buffer, 0, stream);
      native.accumulate(q, k, perHead, { layout: code, tau: 1, noise: 0, seed: 0, step: 0, seqLens }, stream);
      const layer = scope.alloc([kd.B, kd.S], 'f32');
      native.headReduce(perHead, layer, { scale: 1 / qd.H }, stream);
      const out = scope.output([kd.B, 1, capacity], 'i32');
      native.topk(layer, out, { k: capacity, order: 0, outRowStride: capacity, lengths: seqLens }, stream);
      return out;
    });
  },
};

function tovaRagged(op: string, queries: unknown, keys: unknown, opts: TovaOptions): Tensor {
  const { layout, code } = layoutCode(op, opts.layout);
  const { t: q, dims: qd } = check4d(op, 'queries', queries, layout);
  const k = checkTensor(op, 'keys', keys);
  if (k.shape.length !== 2 || !['f32', 'f16', 'bf16'].includes(k.dtype)) {
    throw invalidText(op, 'keys', "a ragged cache's keys [rows, D] (f32, f16 or bf16) with options.ragged", `${k.dtype} [${k.shape.join(', ')}]`);
  }
  const device = sameDevice(op, [q, k]);
  const [rows, D] = k.shape;
  const r = checkRagged(op, opts.ragged, device, rows);
  const { batch: B, heads: Hkv } = r.native;
  if (qd.S !== 1) throw invalidText(op, 'queries', 'the last query only (T = 1)', `${qd.S} rows`);
  if (q.dtype !== k.dtype) throw invalidText(op, 'queries.dtype', `the keys' dtype '${k.dtype}'`, `'${q.dtype}'`);
  if (qd.B !== B || qd.D !== D || qd.H % Hkv !== 0) {
    throw invalidText(op, 'queries', `[${B}, a multiple of ${Hkv}, 1, ${D}]`, `[${qd.B}, ${qd.H}, ${qd.S}, ${qd.D}]`);
  }
  const n = r.layout.positionsEnd;
  if (n === undefined) throw invalidText(op, 'options.ragged.positionsEnd', 'one past the largest original position', 'undefined');
  checkInt(op, 'options.ragged.positionsEnd', n, 1, 0x7fffffff);
  const capacity = checkCapacity(op, opts.capacity);
  if (capacity > n) throw invalidText(op, 'options.capacity', `at most positionsEnd = ${n}`, `${capacity}`);
  if (opts.seqLens !== undefined) throw invalidText(op, 'options.seqLens', 'undefined with options.ragged (the cache holds its lengths)', 'seqLens');
  const stream = opStream(op, opts, device);
  return withScope(device, stream, (scope) => {
    const perHead = scope.alloc([rows], 'f32');
    native.fill(perHead._buffer, 0, stream);
    native.raggedAccumulate(q, k, perHead, { layout: code, tau: 1, noise: 0, seed: 0, step: 0, ragged: r.native }, stream);
    const layer = scope.alloc([B, n], 'f32');
    native.raggedLayerScores(perHead, layer, { ragged: r.native, positions: r.positions, scale: 1 / qd.H }, stream);
    const out = scope.output([B, 1, capacity], 'i32');
    native.topk(layer, out, { k: capacity, order: 0, outRowStride: capacity }, stream);
    return out;
  });
}

export interface StreamingOptions {
  /** The first `sinks` tokens ("attention sinks"). */
  sinks: number;
  /** The last `recent` tokens. */
  recent: number;
  /** Where the positions tensor goes. Default: {@link defaultDevice}. */
  device?: Device;
}

/** StreamingLLM: attention sinks plus a recent window. */
export const streaming = {
  /**
   * Positions 0..sinks-1 and n-recent..n-1 (all of 0..n-1 when they overlap), ascending.
   *
   * @returns i32 [k] with k = min(n, sinks + recent): pass to `evict`, which applies it to every
   *   batch row and head
   * @example
   * ```ts
   * const pos = streaming.select(n, { sinks: 4, recent: 1020 });
   * const small = evict(keys, values, pos);
   * ```
   */
  select(n: number, options: StreamingOptions): Tensor {
    const op = 'streaming.select';
    checkInt(op, 'n', n, 0, 0x7fffffff);
    const opts = checkOptions(op, options) as unknown as StreamingOptions;
    const sinks = checkInt(op, 'options.sinks', opts.sinks, 0, 0x7fffffff);
    const recent = checkInt(op, 'options.recent', opts.recent, 0, 0x7fffffff);
    const device = deviceIndex(op, 'options.device', opts.device ?? defaultDevice());
    const k = Math.min(n, sinks + recent);
    // position of the i-th kept token: the sinks, then the recent window
    const at = (i: number): number => (k === n || i < sinks ? i : n - recent + (i - sinks));
    return withScope(device, undefined, (scope) => {
      const out = scope.output([k], 'i32');
      // filled in bounded chunks: k can be 2^31 - 1
      const chunk = new Int32Array(Math.min(k, 1 << 16));
      for (let start = 0; start < k; start += chunk.length) {
        const len = Math.min(chunk.length, k - start);
        for (let i = 0; i < len; i++) chunk[i] = at(start + i);
        native.copyFromHost(out._buffer, start * 4, len === chunk.length ? chunk : chunk.subarray(0, len));
      }
      return out;
    });
  },
};
