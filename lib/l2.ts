/**
 * L2-norm key ranking (Devoto et al., arXiv 2406.11430; docs/ALGORITHMS.md, "L2-norm key ranking"):
 * keys with a low L2 norm draw high attention later, so keep the lowest-norm keys. Needs no
 * attention scores.
 */
import { native } from './native';
import { arange, check4d, checkCapacity, checkLengths, layoutCode, opStream, reshaped, sameDevice, shape4, withScope, type LayoutOptions, type OpOptions } from './common';
import type { Compacted } from './select';
import { checkRagged, type RaggedLayout } from './ragged_cache';
import { checkTensor, type Tensor } from './tensor';
import { checkInt, checkOptions, invalidText } from './validate';

export interface NormsOptions extends LayoutOptions, OpOptions {
  /** Real lengths of right-padded rows; norms past them are 0. */
  seqLens?: Int32Array | readonly number[];
  /** A ragged per-head cache: keys [rows, D], norms f32 [rows] (0 on a head's append room). */
  ragged?: RaggedLayout;
}

/**
 * ||k_j||₂ of every key, one fused pass over K with f32 accumulation.
 *
 * @returns f32 [B, Hkv, N] (f32 [rows] for a ragged cache)
 * @example
 * ```ts
 * const n = l2.norms(keys); // [B, Hkv, N]
 * const r = l2.norms(cache.keys, { ragged: cache }); // RaggedKvCache: [cache.rows]
 * ```
 */
export function norms(keys: Tensor, options?: NormsOptions): Tensor {
  const op = 'l2.norms';
  const opts = checkOptions(op, options) as NormsOptions;
  if (opts.ragged !== undefined) return raggedNorms(op, keys, opts);
  const { layout, code } = layoutCode(op, opts.layout);
  const { t: k, dims } = check4d(op, 'keys', keys, layout);
  const seqLens = checkLengths(op, 'options.seqLens', opts.seqLens, dims.B, 0, dims.S);
  const stream = opStream(op, opts, k._deviceIndex);
  return withScope(k._deviceIndex, stream, (scope) => {
    const out = scope.output([dims.B, dims.H, dims.S], 'f32');
    native.l2Norms(k, out, { layout: code, seqLens }, stream);
    return out;
  });
}

function raggedNorms(op: string, keys: unknown, opts: NormsOptions): Tensor {
  const k = checkTensor(op, 'keys', keys);
  if (k.shape.length !== 2 || !['f32', 'f16', 'bf16'].includes(k.dtype)) {
    throw invalidText(op, 'keys', "a ragged cache's keys [rows, D] (f32, f16 or bf16) with options.ragged", `${k.dtype} [${k.shape.join(', ')}]`);
  }
  if (opts.seqLens !== undefined) throw invalidText(op, 'options.seqLens', 'undefined with options.ragged (the cache holds its lengths)', 'seqLens');
  const [rows, D] = k.shape;
  const r = checkRagged(op, opts.ragged, k._deviceIndex, rows);
  const stream = opStream(op, opts, k._deviceIndex);
  return withScope(k._deviceIndex, stream, (scope) => {
    const out = scope.output([rows], 'f32');
    // Every row is a token: the dense kernel over one [1, 1, rows, D] head, then the room zeroed.
    native.l2Norms(reshaped(k, [1, 1, rows, D]), reshaped(out, [1, 1, rows]), { layout: 0 }, stream);
    if (r.native.lens !== undefined) native.raggedZeroGaps(out, { ragged: r.native }, stream);
    return out;
  });
}

export interface L2CompressOptions extends NormsOptions {
  /** Tokens kept per head. */
  capacity: number;
  /** The first `sinks` tokens are always kept. Default 0. */
  sinks?: number;
  /** The last `recent` real tokens are always kept. Default 0. */
  recent?: number;
}

/**
 * Keeps, per KV head, the `capacity` lowest-norm keys plus the protected first `sinks` and last
 * `recent` tokens (which count toward the capacity), positions ascending, ties to the lower
 * position. N <= capacity keeps everything.
 *
 * @returns keys/values [B, Hkv, capacity, D], positions i32 [B, Hkv, capacity]
 * @example
 * ```ts
 * const small = l2.compress(keys, values, { capacity: 2048, sinks: 4, recent: 64 });
 * ```
 */
export function compress(keys: Tensor, values: Tensor, options: L2CompressOptions): Compacted {
  const op = 'l2.compress';
  const opts = checkOptions(op, options) as unknown as L2CompressOptions;
  const { layout, code } = layoutCode(op, opts.layout);
  const { t: k, dims } = check4d(op, 'keys', keys, layout);
  const { t: v, dims: vd } = check4d(op, 'values', values, layout);
  const device = sameDevice(op, [k, v]);
  if (vd.B !== dims.B || vd.H !== dims.H || vd.S !== dims.S) {
    throw invalidText(op, 'values', `a cache with the keys' [B, H, N] = [${dims.B}, ${dims.H}, ${dims.S}]`, `[${vd.B}, ${vd.H}, ${vd.S}]`);
  }
  const capacity = checkCapacity(op, opts.capacity);
  const sinks = opts.sinks === undefined ? 0 : checkInt(op, 'options.sinks', opts.sinks, 0, 0x7fffffff);
  const recent = opts.recent === undefined ? 0 : checkInt(op, 'options.recent', opts.recent, 0, 0x7fffffff);
  if (sinks + recent > capacity) throw invalidText(op, 'options.sinks + options.recent', `at most capacity (${capacity})`, `${sinks + recent}`);
  const seqLens = checkLengths(op, 'options.seqLens', opts.seqLens, dims.B, 0, dims.S);
  const stream = opStream(op, opts, device);
  const allShort = dims.S <= capacity;
  if (!allShort && seqLens) {
    seqLens.forEach((l, b) => {
      if (l < capacity) throw invalidText(op, `options.seqLens[${b}]`, `at least capacity (${capacity}); compress shorter rows separately`, `${l}`);
    });
  }
  return withScope(device, stream, (scope) => {
    let positions: Tensor;
    if (allShort) {
      positions = scope.output([dims.B, dims.H, dims.S], 'i32');
      const host = new Int32Array(dims.B * dims.H * dims.S);
      for (let r = 0; r < dims.B * dims.H; r++) host.set(arange(dims.S), r * dims.S);
      native.copyFromHost(positions._buffer, 0, host, stream);
    } else {
      const n = scope.alloc([dims.B, dims.H, dims.S], 'f32');
      native.l2Norms(k, n, { layout: code, seqLens }, stream);
      // low norm ranks high: negate, and lift the protected tokens to +inf
      native.protectScores(n, n, { sinks, recent, sign: -1, seqLens }, stream);
      positions = scope.output([dims.B, dims.H, capacity], 'i32');
      native.topk(n, positions, { k: capacity, order: 0, outRowStride: capacity, lengths: seqLens }, stream);
    }
    const K = positions.shape[2];
    const ko = scope.output(shape4(layout, dims.B, dims.H, K, dims.D), k.dtype);
    native.gather(k, positions, ko, { layout: code, group: 1 }, stream);
    const vo = scope.output(shape4(layout, dims.B, dims.H, K, vd.D), v.dtype);
    native.gather(v, positions, vo, { layout: code, group: 1 }, stream);
    return { keys: ko, values: vo, positions };
  });
}
