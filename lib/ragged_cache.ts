/**
 * The ragged per-head KV cache (docs/ALGORITHMS.md "Adaptive budgets"): after a head-adaptive
 * selection every KV head keeps its own number of tokens, and the cache really holds only those:
 * keys and values are [rows, D] with per-head offsets (FlashInfer's CSR convention), not
 * [B, H, capacity, D].
 *
 * Layout: head bh = b * heads + h owns the storage rows [indptr[bh], indptr[bh + 1]); its live
 * tokens are the first lens[bh] of them (all of them without lens), ascending by original
 * position; the rest of its rows are room for appends. Rows of batch row b follow each other.
 */
import type { NativeRagged } from '../binding';
import { check4d, layoutCode, opStream, sameDevice, withScope, type Layout, type Scope, type LayoutOptions, type OpOptions } from './common';
import type { Device } from './device';
import { KvsiftError } from './errors';
import { native } from './native';
import { checkTensor, Tensor, type DType } from './tensor';
import { checkInt, checkOptions, invalid, invalidText, isArray, snapshotArray } from './validate';

/**
 * A ragged per-head layout, as the ops read it. {@link RaggedSelection}, {@link RaggedCompacted}
 * and {@link RaggedKvCache} all are one.
 */
export interface RaggedLayout {
  /** B */
  readonly batch: number;
  /** H: KV heads */
  readonly heads: number;
  /** i32 [B * H + 1]: where each head's rows start (the last entry: the storage's rows). */
  readonly indptr: Tensor;
  /** i32 [B * H]: live rows of each head; absent when every head's rows are all live (CSR). */
  readonly lens?: Tensor;
  /** i32 [rows]: each row's original position (RoPE, Keyformer's noise); absent: the index in the head. */
  readonly positions?: Tensor;
  /** Live tokens of each batch row (host-side), for the checks that need them without a sync. */
  readonly rowTokens?: readonly number[];
  /** The fewest live tokens any head holds (a lower bound, host-side). */
  readonly minHeadTokens?: number;
  /** One past the largest original position (TOVA's layer score spans [0, positionsEnd)). */
  readonly positionsEnd?: number;
}

/** What adaptive.select returns: the kept positions of each head, CSR. */
export interface RaggedSelection extends RaggedLayout {
  /** i32 [B * budget]: indices into each head's live tokens (original positions for a dense input), ascending within a head. */
  readonly positions: Tensor;
  /** i32 [B * H + 1]: head bh's entries are positions[indptr[bh] .. indptr[bh + 1]); row b owns [b * budget, (b + 1) * budget). */
  readonly indptr: Tensor;
  readonly budget: number;
}

/** A compacted ragged cache: only the kept rows. */
export interface RaggedCompacted extends RaggedLayout {
  /** [total, D], the source's dtype */
  readonly keys: Tensor;
  readonly values: Tensor;
  /** i32 [total]: original positions. The selection's own tensor (shared, not copied). */
  readonly positions: Tensor;
  /** i32 [B * H + 1]. The selection's own tensor (shared, not copied). */
  readonly indptr: Tensor;
}

/** @internal the checked layout, ready for the binding */
export interface CheckedRagged {
  native: NativeRagged;
  layout: RaggedLayout;
  positions?: Tensor;
  rows: number;
}

/** @internal validates `options.ragged` against a storage of `rows` rows on `device`. */
export function checkRagged(op: string, value: unknown, device: number, rows: number, name = 'options.ragged'): CheckedRagged {
  if (value === null || typeof value !== 'object') throw invalid(op, name, 'a ragged layout { batch, heads, indptr, lens? }', value);
  const r = value as Record<string, unknown>;
  const batch = checkInt(op, `${name}.batch`, r.batch, 1, 0x3fffffff);
  const heads = checkInt(op, `${name}.heads`, r.heads, 1, 0x3fffffff);
  const indptr = checkTensor(op, `${name}.indptr`, r.indptr);
  if (indptr.dtype !== 'i32' || indptr.shape.length !== 1 || indptr.shape[0] !== batch * heads + 1) {
    throw invalidText(op, `${name}.indptr`, `an i32 tensor [${batch * heads + 1}]`, `${indptr.dtype} [${indptr.shape.join(', ')}]`);
  }
  const check = [indptr];
  let lens: Tensor | undefined;
  if (r.lens !== undefined) {
    lens = checkTensor(op, `${name}.lens`, r.lens);
    if (lens.dtype !== 'i32' || lens.shape.length !== 1 || lens.shape[0] !== batch * heads) {
      throw invalidText(op, `${name}.lens`, `an i32 tensor [${batch * heads}]`, `${lens.dtype} [${lens.shape.join(', ')}]`);
    }
    check.push(lens);
  }
  let positions: Tensor | undefined;
  if (r.positions !== undefined) {
    positions = checkTensor(op, `${name}.positions`, r.positions);
    if (positions.dtype !== 'i32' || positions.shape.length !== 1 || positions.shape[0] !== rows) {
      throw invalidText(op, `${name}.positions`, `an i32 tensor [${rows}] (one per row)`, `${positions.dtype} [${positions.shape.join(', ')}]`);
    }
    check.push(positions);
  }
  for (const t of check) {
    if (t._deviceIndex !== device) {
      throw new KvsiftError(`${op}: tensors on different devices (${t.device} and the op's); move them with tensor.to(device) first`, 'ERR_DEVICE_MISMATCH');
    }
  }
  return { native: { batch, heads, indptr, lens }, layout: value as RaggedLayout, positions, rows };
}

export interface CompactRaggedOptions extends LayoutOptions, OpOptions {}

/**
 * Compacts a dense K/V cache to a head-adaptive selection: keys and values become [total, D]
 * with only the kept rows (total = B × budget), so the new memory is total × D × dtype size for
 * each of them and nothing else: the result's `positions` and `indptr` ARE the selection's
 * tensors (shared, not copied; dispose them once).
 *
 * @param keys [B, H, N, D] ('bhsd') or [B, N, H, D] ('bshd'), any dtype
 * @param selection from {@link select | adaptive.select} over this cache's scores
 * @example
 * ```ts
 * const sel = adaptive.select(votes, { budget: 8 * 1024, window: 32, minPerHead: 64 });
 * const small = compactRagged(keys, values, sel);
 * keys.dispose(); values.dispose(); // small.keys: [B * 8192, 128]
 * ```
 */
export function compactRagged(keys: Tensor, values: Tensor, selection: RaggedSelection, options?: CompactRaggedOptions): RaggedCompacted {
  const op = 'compactRagged';
  const opts = checkOptions(op, options) as CompactRaggedOptions;
  const { layout, code } = layoutCode(op, opts.layout);
  const { k, v, dims, sel, stream } = checkCompactArgs(op, keys, values, selection, layout, opts);
  return withScope(k._deviceIndex, stream, (scope) => {
    const ko = scope.output([sel.total, dims.D], k.dtype);
    const vo = scope.output([sel.total, v.shape[3]], v.dtype);
    const common = { batch: dims.B, heads: dims.H, reserve: 0, layout: code };
    native.raggedGather(k, sel.positions, sel.indptr, ko, common, stream);
    native.raggedGather(v, sel.positions, sel.indptr, vo, common, stream);
    const budget = sel.total / dims.B;
    return {
      keys: ko,
      values: vo,
      positions: sel.positions,
      indptr: sel.indptr,
      batch: dims.B,
      heads: dims.H,
      rowTokens: new Array<number>(dims.B).fill(budget),
      minHeadTokens: selection.minHeadTokens ?? 0,
      positionsEnd: selection.positionsEnd ?? dims.S,
    };
  });
}

function checkCompactArgs(op: string, keys: unknown, values: unknown, selection: unknown, layout: Layout, opts: OpOptions) {
  const { t: k, dims } = check4d(op, 'keys', keys, layout, ['f32', 'f16', 'bf16', 'i32', 'u8']);
  const { t: v, dims: vdims } = check4d(op, 'values', values, layout, ['f32', 'f16', 'bf16', 'i32', 'u8']);
  if (vdims.B !== dims.B || vdims.H !== dims.H || vdims.S !== dims.S) {
    throw invalidText(op, 'values', `a cache with the keys' [B, H, N] = [${dims.B}, ${dims.H}, ${dims.S}]`, `[${vdims.B}, ${vdims.H}, ${vdims.S}]`);
  }
  const sel = checkSelection(op, selection, dims.B, dims.H);
  const device = sameDevice(op, [k, v, sel.positions, sel.indptr]);
  const stream = opStream(op, opts, device);
  return { k, v, dims, sel, stream };
}

function checkSelection(op: string, value: unknown, B: number, H: number): { positions: Tensor; indptr: Tensor; total: number } {
  if (value === null || typeof value !== 'object') throw invalid(op, 'selection', 'a selection { positions, indptr } from adaptive.select', value);
  const s = value as Record<string, unknown>;
  const positions = checkTensor(op, 'selection.positions', s.positions);
  const indptr = checkTensor(op, 'selection.indptr', s.indptr);
  if (positions.dtype !== 'i32' || positions.shape.length !== 1 || positions.shape[0] % B !== 0) {
    throw invalidText(op, 'selection.positions', `an i32 tensor [B * budget] with B = ${B}`, `${positions.dtype} [${positions.shape.join(', ')}]`);
  }
  if (indptr.dtype !== 'i32' || indptr.shape.length !== 1 || indptr.shape[0] !== B * H + 1) {
    throw invalidText(op, 'selection.indptr', `an i32 tensor [${B * H + 1}] (B * H + 1)`, `${indptr.dtype} [${indptr.shape.join(', ')}]`);
  }
  return { positions, indptr, total: positions.shape[0] };
}

export interface RaggedKvCacheOptions extends LayoutOptions, OpOptions {
  /** Rows of append room after each head's kept tokens. Default 0. */
  reserve?: number;
  /** Each batch row's next original position (tokens seen so far). Default: the source's N. */
  nextPosition?: Int32Array | readonly number[];
}

export interface RaggedAppendOptions extends LayoutOptions, OpOptions {}

export interface RaggedRetainOptions extends OpOptions {
  /** Per-row tensors f32/i32 [rows] of this cache (e.g. accumulated scores), compacted the same way; their room rows are set to 0. Replaced in place in the array. */
  also?: Tensor[];
  /** Room per head after the retain. Default: the cache's reserve. */
  reserve?: number;
}

/**
 * One layer's ragged per-head K/V cache: made from a head-adaptive selection, it keeps working
 * in decode: `append` writes each step's tokens after every head's live rows (on the device,
 * no host synchronization), the decode ops take it as `options.ragged`, and `retain` compacts it
 * again to a new selection. Memory: rows × D × dtype size for each of K and V, plus 4 bytes a
 * row of positions, plus indptr and lens (4 bytes a head).
 *
 * @example
 * ```ts
 * const sel = adaptive.select(votes, { budget: 8 * 1024, window: 32 });
 * const cache = RaggedKvCache.fromSelection(keys, values, sel, { reserve: 64 });
 * cache.append(kStep, vStep);                     // [B, H, 1, D]
 * keyformer.accumulate(qStep, cache.keys, scores, { tau: 1, seed: 1, step: 0, ragged: cache });
 * ```
 */
export class RaggedKvCache implements RaggedLayout {
  readonly batch: number;
  readonly heads: number;
  readonly headDim: number;
  readonly dtype: DType;
  readonly device: Device;
  readonly layout: Layout;
  /** Replaced as a whole by retain, so a failed retain leaves every tensor of the old one in place. */
  private _store: RaggedStorage;
  private _rowTokens: number[];
  private _minHead: number;
  private _room: number;
  private _next: Int32Array;
  private _reserve: number;
  private _disposed = false;

  private constructor(
    shape: { batch: number; heads: number; headDim: number; dtype: DType; layout: Layout },
    store: RaggedStorage,
    counters: { rowTokens: number[]; minHead: number; room: number; next: Int32Array; reserve: number },
  ) {
    ({ batch: this.batch, heads: this.heads, headDim: this.headDim, dtype: this.dtype, layout: this.layout } = shape);
    this.device = store.keys.device;
    this._store = store;
    ({ rowTokens: this._rowTokens, minHead: this._minHead, room: this._room, next: this._next, reserve: this._reserve } = counters);
  }

  /**
   * A ragged cache of a dense cache's selected tokens, with `reserve` rows of append room per head.
   *
   * @param selection from adaptive.select over the dense cache's scores (positions = original positions)
   * @example
   * ```ts
   * const cache = RaggedKvCache.fromSelection(keys, values, adaptive.select(votes, { budget: 4096 }), { reserve: 128 });
   * ```
   */
  static fromSelection(keys: Tensor, values: Tensor, selection: RaggedSelection, options?: RaggedKvCacheOptions): RaggedKvCache {
    const op = 'RaggedKvCache.fromSelection';
    const opts = checkOptions(op, options) as RaggedKvCacheOptions;
    const { layout, code } = layoutCode(op, opts.layout);
    const { k, v, dims, sel, stream } = checkCompactArgs(op, keys, values, selection, layout, opts);
    const reserve = opts.reserve === undefined ? 0 : checkInt(op, 'options.reserve', opts.reserve, 0, 0x7fffffff);
    const next = nextPositions(op, opts.nextPosition, dims.B, dims.S);
    const rows = sel.total + dims.B * dims.H * reserve;
    if (rows > 0x7fffffff) throw invalidText(op, 'options.reserve', 'a room that keeps the rows below 2^31', `${reserve}`);
    const device = k._deviceIndex;
    return withScope(device, stream, (scope) => {
      const out = allocateStorage(scope, rows, dims.D, k.dtype, dims.B * dims.H);
      const base = { batch: dims.B, heads: dims.H, reserve, layout: code, op };
      native.raggedGather(k, sel.positions, sel.indptr, out.keys, base, stream);
      native.raggedGather(v, sel.positions, sel.indptr, out.values, base, stream);
      // The selection's entries are the original positions: moved as they are into the layout with room.
      const srcRagged = { batch: dims.B, heads: dims.H, indptr: sel.indptr };
      native.raggedGather(sel.positions, sel.positions, sel.indptr, out.positions, { ...base, srcRagged, identity: true, outIndptr: out.indptr, outLens: out.lens }, stream);
      return new RaggedKvCache(
        { batch: dims.B, heads: dims.H, headDim: dims.D, dtype: k.dtype, layout },
        out,
        { rowTokens: new Array<number>(dims.B).fill(sel.total / dims.B), minHead: selection.minHeadTokens ?? 0, room: reserve, next, reserve },
      );
    });
  }

  /** Storage keys [rows, D] (room rows included). */
  get keys(): Tensor { return this._live('keys')._store.keys; }
  /** Storage values [rows, D]. */
  get values(): Tensor { return this._live('values')._store.values; }
  /** i32 [rows]: original positions of the live rows. */
  get positions(): Tensor { return this._live('positions')._store.positions; }
  /** i32 [B * H + 1]: head regions. */
  get indptr(): Tensor { return this._live('indptr')._store.indptr; }
  /** i32 [B * H]: live rows of each head (on the device). */
  get lens(): Tensor { return this._live('lens')._store.lens; }
  /** Live tokens of each batch row (host-side, exact). */
  get rowTokens(): readonly number[] { return this._rowTokens.slice(); }
  /** A lower bound on every head's live tokens. */
  get minHeadTokens(): number { return this._minHead; }
  /** One past the largest original position. */
  get positionsEnd(): number { return this._next.reduce((a, b) => Math.max(a, b), 0); }
  /** Rows of append room left in every head. */
  get room(): number { return this._room; }
  /** Storage rows. */
  get rows(): number { return this._store.keys.shape[0]; }

  /**
   * Writes T new tokens per head after each head's live rows, with original positions
   * continuing each row's count; on the device, stream-ordered, no host synchronization.
   *
   * @param keys [B, H, T, D] in the cache's layout
   * @example
   * ```ts
   * cache.append(kStep, vStep); // kStep, vStep: [B, H, 1, D]
   * ```
   */
  append(keys: Tensor, values: Tensor, options?: RaggedAppendOptions): void {
    const op = 'RaggedKvCache.append';
    this._live(op);
    const opts = checkOptions(op, options) as RaggedAppendOptions;
    const { code } = layoutCode(op, opts.layout ?? this.layout);
    const { t: k, dims } = check4d(op, 'keys', keys, opts.layout ?? this.layout, ['f32', 'f16', 'bf16', 'i32', 'u8']);
    const { t: v, dims: vdims } = check4d(op, 'values', values, opts.layout ?? this.layout, ['f32', 'f16', 'bf16', 'i32', 'u8']);
    const want = `[${this.batch}, ${this.heads}, T, ${this.headDim}] (logical) of dtype '${this.dtype}'`;
    for (const [name, t, d] of [['keys', k, dims], ['values', v, vdims]] as const) {
      if (d.B !== this.batch || d.H !== this.heads || d.D !== this.headDim || t.dtype !== this.dtype) {
        throw invalidText(op, name, want, `${t.dtype} [${t.shape.join(', ')}]`);
      }
    }
    if (vdims.S !== dims.S) throw invalidText(op, 'values', `${dims.S} tokens (as keys)`, `${vdims.S}`);
    const T = dims.S;
    if (T > this._room) {
      throw invalidText(op, 'keys', `at most ${this._room} new tokens (the room left in each head; make the cache with a larger reserve or retain first)`, `${T}`);
    }
    const device = sameDevice(op, [k, v, this._store.keys]);
    const stream = opStream(op, opts, device);
    const ragged = { batch: this.batch, heads: this.heads, indptr: this._store.indptr, lens: this._store.lens };
    native.raggedAppend(v, this._store.values, { layout: code, ragged, updateLens: false }, stream);
    native.raggedAppend(k, this._store.keys, { layout: code, ragged, updateLens: true, positions: this._store.positions, posBase: this._next }, stream);
    this._room -= T;
    this._minHead += T;
    this._rowTokens = this._rowTokens.map((n) => n + this.heads * T);
    this._next = this._next.map((n) => n + T);
  }

  /**
   * Compacts the cache to a new selection of its live tokens (adaptive.select with
   * `ragged: cache`), into new storage with `reserve` rows of room per head; the old storage is
   * freed (stream-ordered). Tensors in `also` ([rows] per-row data such as accumulated scores)
   * are compacted the same way and replaced in the array; their room rows are 0.
   *
   * @example
   * ```ts
   * const sel = adaptive.select(scores, { budget: 4096, window: 16, ragged: cache });
   * const also = [scores];
   * cache.retain(sel, { also }); // also[0] is the compacted scores; the old one is disposed
   * ```
   */
  retain(selection: RaggedSelection, options?: RaggedRetainOptions): void {
    const op = 'RaggedKvCache.retain';
    this._live(op);
    const opts = checkOptions(op, options) as RaggedRetainOptions;
    const sel = checkSelection(op, selection, this.batch, this.heads);
    const device = sameDevice(op, [this._store.keys, sel.positions, sel.indptr]);
    const stream = opStream(op, opts, device);
    const reserve = opts.reserve === undefined ? this._reserve : checkInt(op, 'options.reserve', opts.reserve, 0, 0x7fffffff);
    const also = opts.also ?? [];
    if (!isArray(also)) throw invalid(op, 'options.also', 'an array of tensors', also);
    const oldRows = this.rows;
    also.forEach((t, i) => {
      const a = checkTensor(op, `options.also[${i}]`, t);
      if (a.shape.length !== 1 || a.shape[0] !== oldRows || (a.dtype !== 'f32' && a.dtype !== 'i32')) {
        throw invalidText(op, `options.also[${i}]`, `an f32 or i32 tensor [${oldRows}] (one entry per row)`, `${a.dtype} [${a.shape.join(', ')}]`);
      }
      sameDevice(op, [this._store.keys, a]);
    });
    const B = this.batch, H = this.heads;
    const perRow = sel.total / B;
    for (let b = 0; b < B; b++) {
      if (perRow > this._rowTokens[b]) throw invalidText(op, 'selection', `at most ${this._rowTokens[b]} tokens for batch row ${b} (its live tokens)`, `${perRow}`);
    }
    const rows = sel.total + B * H * reserve;
    if (rows > 0x7fffffff) throw invalidText(op, 'options.reserve', 'a room that keeps the rows below 2^31', `${reserve}`);
    const old = this._store;
    const src = { batch: B, heads: H, indptr: old.indptr, lens: old.lens };
    const made = withScope(device, stream, (scope) => {
      const out = allocateStorage(scope, rows, this.headDim, this.dtype, B * H);
      const base = { batch: B, heads: H, reserve, srcRagged: src, op };
      native.raggedGather(old.keys, sel.positions, sel.indptr, out.keys, base, stream);
      native.raggedGather(old.values, sel.positions, sel.indptr, out.values, base, stream);
      native.raggedGather(old.positions, sel.positions, sel.indptr, out.positions, { ...base, outIndptr: out.indptr, outLens: out.lens }, stream);
      const alsoOut = also.map((t) => {
        const o = scope.output([rows], t.dtype);
        native.raggedGather(t, sel.positions, sel.indptr, o, base, stream);
        return o;
      });
      return { out, alsoOut };
    });
    disposeStorage(old);
    also.forEach((t, i) => {
      t.dispose();
      also[i] = made.alsoOut[i];
    });
    this._store = made.out;
    this._rowTokens = new Array<number>(B).fill(perRow);
    this._minHead = selection.minHeadTokens ?? 0;
    this._room = reserve;
    this._reserve = reserve;
  }

  /** Frees the storage now; idempotent. */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    disposeStorage(this._store);
  }

  get disposed(): boolean {
    return this._disposed;
  }

  private _live(what: string): this {
    if (this._disposed) throw new KvsiftError(`RaggedKvCache is disposed (${what})`, 'ERR_DISPOSED');
    return this;
  }
}

/** The device tensors of a ragged cache: [rows, D] keys and values, i32 positions [rows], indptr [B*H+1], lens [B*H]. */
interface RaggedStorage {
  keys: Tensor;
  values: Tensor;
  positions: Tensor;
  indptr: Tensor;
  lens: Tensor;
}

function allocateStorage(scope: Scope, rows: number, headDim: number, dtype: DType, heads: number): RaggedStorage {
  return {
    keys: scope.output([rows, headDim], dtype),
    values: scope.output([rows, headDim], dtype),
    positions: scope.output([rows], 'i32'),
    indptr: scope.output([heads + 1], 'i32'),
    lens: scope.output([heads], 'i32'),
  };
}

function disposeStorage(store: RaggedStorage): void {
  for (const t of [store.keys, store.values, store.positions, store.indptr, store.lens]) t.dispose();
}

function nextPositions(op: string, value: unknown, B: number, N: number): Int32Array {
  if (value === undefined) return new Int32Array(B).fill(N);
  let arr: Int32Array;
  if (value instanceof Int32Array) arr = Int32Array.from(value);
  else if (isArray(value)) {
    // read once, element by element: a hole is no position
    const items = snapshotArray(op, 'options.nextPosition', value, `an Int32Array of ${B} positions`);
    if (!items.every((x) => typeof x === 'number' && Number.isInteger(x) && x <= 0x7fffffff)) throw invalid(op, 'options.nextPosition', `an Int32Array of ${B} positions`, value);
    arr = Int32Array.from(items as number[]);
  } else throw invalid(op, 'options.nextPosition', `an Int32Array of ${B} positions`, value);
  if (arr.length !== B) throw invalidText(op, 'options.nextPosition', `${B} positions (one per batch row)`, `${arr.length}`);
  arr.forEach((x, b) => {
    if (x < 0) throw invalidText(op, `options.nextPosition[${b}]`, 'a non-negative integer', `${x}`);
  });
  return arr;
}
