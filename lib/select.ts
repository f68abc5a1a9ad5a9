/**
 * Selection and compaction shared by every method: top-k per row, gathering cache rows at
 * positions, and eviction (compacting K and V to the kept positions, so memory is really freed).
 */
import { KvsiftError } from './errors';
import { native } from './native';
import { check4d, checkLengths, disposeOnThrow, layoutCode, opStream, reshaped, sameDevice, shape4, withScope, type Layout, type LayoutOptions, type OpOptions } from './common';
import type { NativeTensor } from '../binding';
import { checkTensor, Tensor, type DType } from './tensor';
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
export function topk(scores: Tensor, k: number, options?: TopkOptions): Tensor<'i32'> {
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
    const out = scope.output([...s.shape.slice(0, -1), k], 'i32') as Tensor<'i32'>;
    native.topk(s, out, { k, order: order === 'position' ? 0 : 1, outRowStride: k, lengths }, stream);
    return out;
  });
}

export interface GatherOptions extends LayoutOptions, OpOptions {
  /**
   * The axis selected along (negative counts from the end). Default: the token axis of a 4-D
   * cache in its `layout` (2 for 'bhsd', 1 for 'bshd'), the last axis for any other rank.
   */
  axis?: number;
}

/**
 * The entries of a tensor at the given positions along one axis: the rows of a K or V cache,
 * the kept entries of per-token scores [B, H, N], of positions [B, H, N] or [B, N], and so on.
 *
 * A 4-D cache with the default axis keeps its layout-aware meaning: cache [B, H, N, D] ('bhsd')
 * or [B, N, H, D] ('bshd'), any dtype, positions i32 [B, Hp, k] with Hp = H (one selection per
 * head), Hp = 1 (one selection for every head, as TOVA's), or Hp = H * G (one per query head:
 * each reads KV head h / G); the result is [B, Hp or H, k, D] in the cache's layout.
 *
 * Any other call selects along `axis`: positions are i32 [...t.shape[0..axis), k] (t's leading
 * axes, then the kept count), where a leading axis of size 1 broadcasts one selection over t's
 * axis; the axes after `axis` come along whole. The result is t's shape with `axis` replaced by k.
 *
 * @example
 * ```ts
 * const keptKeys = gather(keys, positions);                    // [B, H, k, D]
 * const keptScores = gather(scores, positions);                // scores [B, H, N] -> [B, H, k]
 * const keptIds = gather(tokenIds, rowPositions, { axis: 1 }); // [B, N] with [B, k] -> [B, k]
 * ```
 */
export function gather<D extends DType>(t: Tensor<D>, positions: Tensor, options?: GatherOptions): Tensor<D> {
  const op = 'gather';
  const opts = checkOptions(op, options) as GatherOptions;
  const { layout } = layoutCode(op, opts.layout);
  const c = checkTensor(op, 'cache', t) as Tensor<D>;
  const rank = c.shape.length;
  const axis = opts.axis === undefined ? undefined : normalizeAxis(op, opts.axis, rank);
  const tokenAxis = layout === 'bhsd' ? 2 : 1;
  if (rank !== 4 || (axis !== undefined && axis !== tokenAxis)) {
    return gatherAxis(op, c, positions, axis ?? rank - 1, opts) as Tensor<D>;
  }
  return gatherAs(op, c, positions, opts.layout, opts.stream, 'cache') as Tensor<D>;
}

/** The 4-D cache gather under the name of the op that calls it (evict's errors say 'evict: ...'). */
function gatherAs(op: string, cache: unknown, positions: unknown, layoutOpt: unknown, streamOpt: unknown, cacheName: string): Tensor {
  const { layout, code } = layoutCode(op, layoutOpt);
  const { t: c, dims } = check4d(op, cacheName, cache, layout, ['f32', 'f16', 'bf16', 'i32', 'u8']);
  const p = checkTensor(op, 'positions', positions);
  if (layout === 'bhsd' && p.shape.length === 3 && p.shape[0] === 1 && dims.B > 1 && (p.shape[1] === 1 || p.shape[1] === dims.H)) {
    // one selection for every batch row: the generic rule's broadcast (same axes in 'bhsd')
    return gatherAxis(op, c, p, 2, { stream: streamOpt as OpOptions['stream'] });
  }
  const device = sameDevice(op, [c, p]);
  if (p.dtype !== 'i32') throw invalidText(op, 'positions.dtype', "'i32'", `'${p.dtype}'`);
  if (p.shape.length !== 3 || p.shape[0] !== dims.B || !(p.shape[1] === 1 || p.shape[1] % dims.H === 0) || p.shape[1] === 0) {
    throw invalidText(op, 'positions', `an i32 tensor [${dims.B}, ${dims.H} (or 1, or a multiple of ${dims.H}), k]`, `shape [${p.shape.join(', ')}]`);
  }
  const K = p.shape[2];
  const group = p.shape[1] === 1 ? 1 : p.shape[1] / dims.H;
  const hout = dims.H * group;
  const stream = opStream(op, { stream: streamOpt }, device);
  return withScope(device, stream, (scope) => {
    const out = scope.output(shape4(layout, dims.B, hout, K, dims.D), c.dtype);
    renamedAs(op, () => native.gather(c, p, out, { layout: code, group }, stream));
    return out;
  });
}

/** Runs a native call whose binding entry names itself ('gather: ...') under the caller's name. */
function renamedAs(op: string, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (op !== 'gather' && e instanceof KvsiftError && e.message.startsWith('gather: ')) {
      const renamed = new KvsiftError(`${op}: ${e.message.slice('gather: '.length)}`, e.code);
      if (e.cudaError !== undefined) renamed.cudaError = e.cudaError;
      if (e.op !== undefined) renamed.op = op;
      throw renamed;
    }
    throw e;
  }
}

function normalizeAxis(op: string, axis: unknown, rank: number): number {
  const a = checkInt(op, 'options.axis', axis, -Math.max(rank, 1), Math.max(rank - 1, 0));
  return a < 0 ? a + rank : a;
}

/**
 * gather along any axis of any rank, through the 4-D row gather: t is seen as [G1, G2, N, R]
 * (leading axes merged into at most two groups, R = the product of the trailing axes) and the
 * positions as [G1 or 1, G2 or 1, k]. A broadcast pattern that does not fit two groups (size-1
 * axes of positions before full ones) is expanded on the device first.
 */
function gatherAxis(op: string, t: Tensor, positions: Tensor, axis: number, opts: OpOptions): Tensor {
  const p = checkTensor(op, 'positions', positions);
  const device = sameDevice(op, [t, p]);
  if (p.dtype !== 'i32') throw invalidText(op, 'positions.dtype', "'i32'", `'${p.dtype}'`);
  const lead = t.shape.slice(0, axis);
  const want = `an i32 tensor [${[...lead.map((n) => `${n}${n === 1 ? '' : ' or 1'}`), 'k'].join(', ')}]`;
  if (p.shape.length !== axis + 1 || lead.some((n, i) => p.shape[i] !== n && p.shape[i] !== 1)) {
    throw invalidText(op, 'positions', want, `shape [${p.shape.join(', ')}]`);
  }
  const K = p.shape[axis];
  const N = t.shape[axis];
  const rowElems = t.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outShape = [...lead, K, ...t.shape.slice(axis + 1)];
  const stream = opStream(op, opts, device);
  // Runs of leading axes that are selected per index (full) or broadcast; size-1 axes join either.
  const groups: { size: number; broadcast: boolean }[] = [];
  lead.forEach((n, i) => {
    if (n === 1) return;
    const broadcast = p.shape[i] === 1;
    const last = groups[groups.length - 1];
    if (last !== undefined && last.broadcast === broadcast) last.size *= n;
    else groups.push({ size: n, broadcast });
  });
  const leadCount = lead.reduce((a, b) => a * b, 1);
  if (rowElems > 0x7fffffff || N > 0x7fffffff) throw new KvsiftError(`${op}: rows of more than 2^31 - 1 elements are not supported`, 'ERR_UNSUPPORTED');
  return withScope(device, stream, (scope) => {
    const out = scope.output(outShape, t.dtype);
    if (out.numel === 0) return out;
    let G1 = 1;
    let G2 = 1;
    let pos: NativeTensor = reshaped(p, [1, 1, K]);
    const fits = groups.length === 0 || groups.length === 1 || (groups.length === 2 && !groups[0].broadcast);
    if (fits) {
      if (groups.length === 1) {
        G2 = groups[0].size;
        pos = reshaped(p, [1, groups[0].broadcast ? 1 : G2, K]);
      } else if (groups.length === 2) {
        G1 = groups[0].size;
        G2 = groups[1].size;
        pos = reshaped(p, [G1, 1, K]);
      }
    } else {
      // Expand the positions over every leading axis, one axis at a time, with device copies.
      let cur: Tensor = p;
      for (let i = 0; i < axis; i++) {
        if (cur.shape[i] === lead[i]) continue;
        const shape = cur.shape.slice();
        shape[i] = lead[i];
        const next = scope.alloc(shape, 'i32');
        for (let j = 0; j < lead[i]; j++) native.copyAxis(next, cur, { axis: i, offset: j }, stream);
        cur = next;
      }
      G2 = leadCount;
      pos = reshaped(cur, [1, G2, K]);
    }
    renamedAs(op, () => native.gather(reshaped(t, [G1, G2, N, rowElems]), pos, reshaped(out, [G1, G2, K, rowElems]), { layout: 0, group: 1 }, stream));
    return out;
  });
}

/** A compacted cache: the kept rows of K and V and their original positions. */
export interface Compacted {
  keys: Tensor;
  values: Tensor;
  /** i32 [B, H, C] (or [B, 1, C] for one selection per layer): original positions, ascending. */
  positions: Tensor<'i32'>;
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
export function evict(keys: Tensor, values: Tensor, positions: Tensor, options?: GatherOptions): Compacted {
  const op = 'evict';
  const opts = checkOptions(op, options) as GatherOptions;
  const { layout } = layoutCode(op, opts.layout);
  const rank = checkTensor(op, 'keys', keys).shape.length;
  const axis = opts.axis === undefined ? undefined : normalizeAxis(op, opts.axis, rank);
  if (rank !== 4 || (axis !== undefined && axis !== (layout === 'bhsd' ? 2 : 1))) {
    // any rank: both tensors along the same axis; their leading axes and the axis itself agree
    const v = checkTensor(op, 'values', values);
    const ax = axis ?? rank - 1;
    if (v.shape.length <= ax || v.shape.slice(0, ax + 1).some((n, i) => n !== keys.shape[i])) {
      throw invalidText(op, 'values', `a tensor with the keys' leading shape [${keys.shape.slice(0, ax + 1).join(', ')}]`, `shape [${v.shape.join(', ')}]`);
    }
    const k = gatherAxis(op, keys, positions, ax, opts);
    const vals = disposeOnThrow([k], () => gatherAxis(op, v, positions, ax, opts));
    const device = positions._deviceIndex;
    const pos = disposeOnThrow([k, vals], () => withScope(device, opStream(op, opts, device), (scope) => copyPositions(positions, scope)));
    return { keys: k, values: vals, positions: pos };
  }
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

function copyPositions(p: Tensor, scope: { output(shape: number[], dtype: 'i32'): Tensor; stream: bigint | undefined }): Tensor<'i32'> {
  const out = scope.output(p.shape.slice(), 'i32') as Tensor<'i32'>;
  native.copyBuffer(out._buffer, 0, p._buffer, 0, p.byteLength, scope.stream);
  return out;
}

function evictWith(k: Tensor, v: Tensor, p: Tensor, layout: Layout, opts: OpOptions, copyPos = false): Compacted {
  const keys = gatherAs('evict', k, p, layout, opts.stream, 'keys');
  const values = disposeOnThrow([keys], () => gatherAs('evict', v, p, layout, opts.stream, 'values'));
  if (!copyPos) return { keys, values, positions: p as Tensor<'i32'> };
  const positions = disposeOnThrow([keys, values], () => withScope(p._deviceIndex, opStream('evict', opts, p._deviceIndex), (scope) => copyPositions(p, scope)));
  return { keys, values, positions };
}

