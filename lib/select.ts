/**
 * Selection and compaction shared by every method: top-k per row, gathering cache rows at
 * positions, and eviction (compacting K and V to the kept positions, so memory is really freed).
 */
import { native } from './native';
import { check4d, checkLengths, layoutCode, opStream, sameDevice, shape4, withScope, type Layout, type LayoutOptions, type OpOptions } from './common';
import { checkTensor, Tensor } from './tensor';
import { checkInt, checkOneOf, checkOptions, invalidText } from './validate';

export interface TopkOptions extends OpOptions {
  /** 'position' (default): the chosen positions ascending; 'score': by descending score. */
  order?: 'position' | 'score';
  /**
   * Valid entries per batch row (the first dimension): only the first lengths[b] entries of each
   * row of batch b compete. Each must be >= k.
   */
  lengths?: Int32Array | readonly number[];
}

/**
 * The k highest-scoring positions of every row (the last axis) of an f32 tensor, in one launch
 * for all rows. Ties go to the lower position; NaN ranks below every number, +Inf above all.
 *
 * @returns i32 tensor shaped like `scores` with the last axis replaced by k.
 * @example
 * ```ts
 * const keep = topk(pooledVotes, 2016);            // [B, H, 2016], ascending positions
 * const best = topk(scores, 8, { order: 'score' }); // best first
 * ```
 */
export function topk(scores: Tensor, k: number, options?: TopkOptions): Tensor {
  const op = 'topk';
  const s = checkTensor(op, 'scores', scores);
  const opts = checkOptions(op, options) as TopkOptions;
  if (s.dtype !== 'f32') throw invalidText(op, 'scores.dtype', "'f32'", `'${s.dtype}'`);
  if (s.shape.length < 1) throw invalidText(op, 'scores', 'a tensor of rank >= 1', 'a scalar');
  const M = s.shape[s.shape.length - 1];
  checkInt(op, 'k', k, 1, Math.max(1, M));
  if (k > M) throw invalidText(op, 'k', `an integer in [1, ${M}] (the row length)`, `${k}`);
  const order = opts.order === undefined ? 'position' : checkOneOf(op, 'options.order', opts.order, ['position', 'score'] as const);
  const batch = s.shape.length === 1 ? 1 : s.shape[0];
  const lengths = checkLengths(op, 'options.lengths', opts.lengths, batch, k, M);
  const device = s._deviceIndex;
  const stream = opStream(op, opts, device);
  return withScope(device, stream, (scope) => {
    const out = scope.output([...s.shape.slice(0, -1), k], 'i32');
    native.topk(s, out, { k, order: order === 'position' ? 0 : 1, outRowStride: k, lengths }, stream);
    return out;
  });
}

/**
 * The rows of a K or V cache at the given positions.
 *
 * @param cache [B, H, N, D] ('bhsd') or [B, N, H, D] ('bshd'), any dtype.
 * @param positions i32 [B, Hp, k]: Hp = H (one selection per head), Hp = 1 (one selection for
 *   every head, as TOVA's), or Hp = H * G (one per query head: each reads KV head h / G).
 * @returns [B, Hp or H, k, D] in the cache's layout.
 * @example
 * ```ts
 * const keptKeys = gather(keys, positions); // positions from topk
 * ```
 */
export function gather(cache: Tensor, positions: Tensor, options?: LayoutOptions & OpOptions): Tensor {
  const op = 'gather';
  const opts = checkOptions(op, options) as LayoutOptions & OpOptions;
  const { layout, code } = layoutCode(op, opts.layout);
  const { t: c, dims } = check4d(op, 'cache', cache, layout, ['f32', 'f16', 'bf16', 'i32', 'u8']);
  const p = checkTensor(op, 'positions', positions);
  const device = sameDevice(op, [c, p]);
  if (p.dtype !== 'i32') throw invalidText(op, 'positions.dtype', "'i32'", `'${p.dtype}'`);
  if (p.shape.length !== 3 || p.shape[0] !== dims.B || !(p.shape[1] === 1 || p.shape[1] % dims.H === 0) || p.shape[1] === 0) {
    throw invalidText(op, 'positions', `an i32 tensor [${dims.B}, ${dims.H} (or 1, or a multiple of ${dims.H}), k]`, `shape [${p.shape.join(', ')}]`);
  }
  const K = p.shape[2];
  const group = p.shape[1] === 1 ? 1 : p.shape[1] / dims.H;
  const hout = dims.H * group;
  const stream = opStream(op, opts, device);
  return withScope(device, stream, (scope) => {
    const out = scope.output(shape4(layout, dims.B, hout, K, dims.D), c.dtype);
    native.gather(c, p, out, { layout: code, group }, stream);
    return out;
  });
}

/** A compacted cache: the kept rows of K and V and their original positions. */
export interface Compacted {
  keys: Tensor;
  values: Tensor;
  /** i32 [B, H, C] (or [B, 1, C] for one selection per layer): original positions, ascending. */
  positions: Tensor;
}

/**
 * Compacts K and V to the kept positions. Unlike the reference implementations, which only
 * mask evicted tokens, the result is a new, smaller cache: dispose the old one to free memory.
 *
 * @param positions i32 [B, H, C], [B, 1, C] (one selection for all heads), or [C] (one for
 *   every batch row and head, as `streaming.select` returns).
 * @example
 * ```ts
 * const pos = keyformer.select(scores, { capacity: 1024, recent: 256 });
 * const small = evict(keys, values, pos);
 * keys.dispose(); values.dispose();
 * ```
 */
export function evict(keys: Tensor, values: Tensor, positions: Tensor, options?: LayoutOptions & OpOptions): Compacted {
  const op = 'evict';
  const opts = checkOptions(op, options) as LayoutOptions & OpOptions;
  const { layout } = layoutCode(op, opts.layout);
  const { t: k, dims } = check4d(op, 'keys', keys, layout, ['f32', 'f16', 'bf16', 'i32', 'u8']);
  const { t: v, dims: vd } = check4d(op, 'values', values, layout, ['f32', 'f16', 'bf16', 'i32', 'u8']);
  if (vd.B !== dims.B || vd.H !== dims.H || vd.S !== dims.S) {
    throw invalidText(op, 'values', `a cache with the keys' [B, H, N] = [${dims.B}, ${dims.H}, ${dims.S}]`, `[${vd.B}, ${vd.H}, ${vd.S}]`);
  }
  const p = checkTensor(op, 'positions', positions);
  const device = sameDevice(op, [k, v, p]);
  const stream = opStream(op, opts, device);
  if (p.dtype !== 'i32') throw invalidText(op, 'positions.dtype', "'i32'", `'${p.dtype}'`);
  const okRank3 = p.shape.length === 3 && p.shape[0] === dims.B && p.shape[1] > 0 && (p.shape[1] === 1 || p.shape[1] % dims.H === 0);
  if (p.shape.length !== 1 && !okRank3) {
    throw invalidText(op, 'positions', `an i32 tensor [k], [${dims.B}, 1, k] or [${dims.B}, ${dims.H}, k]`, `shape [${p.shape.join(', ')}]`);
  }
  if (p.shape.length === 1) {
    // one selection for the whole layer: tile it over the batch (positions are small)
    const host = p.toArray() as Int32Array;
    const tiled = new Int32Array(dims.B * host.length);
    for (let b = 0; b < dims.B; b++) tiled.set(host, b * host.length);
    return withScope(device, stream, (scope) => {
      const pt = scope.upload(tiled, [dims.B, 1, host.length]);
      const out = evictWith(k, v, pt, layout, opts);
      return { ...out, positions: copyPositions(pt, scope) };
    });
  }
  return evictWith(k, v, p, layout, opts, true);
}

function copyPositions(p: Tensor, scope: { output(shape: number[], dtype: 'i32'): Tensor; stream: bigint | undefined }): Tensor {
  const out = scope.output(p.shape.slice(), 'i32');
  native.copyBuffer(out._buffer, 0, p._buffer, 0, p.byteLength, scope.stream);
  return out;
}

function evictWith(k: Tensor, v: Tensor, p: Tensor, layout: Layout, opts: OpOptions, copyPos = false): Compacted {
  const keys = gather(k, p, { layout, stream: opts.stream });
  try {
    const values = gather(v, p, { layout, stream: opts.stream });
    if (!copyPos) return { keys, values, positions: p };
    try {
      return withScope(p._deviceIndex, opStream('evict', opts, p._deviceIndex), (scope) => ({ keys, values, positions: copyPositions(p, scope) }));
    } catch (e) {
      values.dispose();
      throw e;
    }
  } catch (e) {
    keys.dispose();
    throw e;
  }
}

