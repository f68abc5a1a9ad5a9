/**
 * KvCache: one layer's K and V in preallocated device memory that grows by append and shrinks in
 * place by retain, so an engine's prefill -> compress -> decode loop never copies the cache
 * through the host.
 *
 * How it is built (for readers writing a sibling cache):
 *   - storage: `keys` / `values` are [B, Hkv, capacity, D] tensors in the cache's layout, and
 *     `positions` an i32 [B, Hkv, capacity] tensor; all three are allocated once, zero-filled.
 *   - bookkeeping lives on the host: `lengths[b]` (live tokens of row b, the same for every head)
 *     and `appended[b]` (tokens ever appended to row b: the next token's original position). The
 *     host knows both without reading the device, so append's capacity check never synchronizes.
 *   - append = one native call (cpp/ops/kv_cache.cc `kvAppend`): two row copies (K, V) at each
 *     row's own offset plus the positions fill, reading per-row offsets/counts/starts uploaded in
 *     one small host-to-device copy.
 *   - retain = one native call (`kvRetain`): a check of the selection against `lengths` first,
 *     then the compaction of K, V, positions and every `also` tensor. On CUDA the check writes a
 *     device flag that every later kernel of the call reads before writing, so a bad selection
 *     leaves everything unchanged without the host waiting; on the CPU it throws at once.
 */
import { check4d, disposeOnThrow, layoutCode, opStream, sameDevice, shape4, type Layout, type OpOptions } from './common';
import { defaultDevice, deviceIndex, type Device } from './device';
import { KvsiftError } from './errors';
import { native } from './native';
import { checkDType, checkTensor, Tensor } from './tensor';
import { checkInt, checkOneOf, checkOptions, invalid, invalidText, isArray, snapshotArray } from './validate';

/** The float dtypes a cache holds. */
export type CacheDType = 'f32' | 'f16' | 'bf16';

export interface KvCacheOptions {
  batch: number;
  kvHeads: number;
  headDim: number;
  /** Tokens per row the storage holds. */
  capacity: number;
  dtype: CacheDType;
  /** Default: {@link defaultDevice}. */
  device?: Device;
  /** 'bhsd' (default): keys/values [B, Hkv, capacity, D]; 'bshd': [B, capacity, Hkv, D]. */
  layout?: Layout;
}

export interface AppendOptions extends OpOptions {
  /**
   * Real tokens per row among the T given (each in [0, T]), for a right-padded prefill: the rest
   * of a row's T tokens are not appended. Default: all T of every row.
   */
  lengths?: Int32Array | readonly number[];
}

export interface RetainOptions extends OpOptions {
  /**
   * Per-token tensors [B, Hkv, capacity] (any dtype; accumulated scores, say) compacted with the
   * cache; their entries from C on are set to 0, so tokens appended later start from zero.
   */
  also?: readonly Tensor[];
}

/**
 * One layer's K/V cache with a fixed capacity, preallocated on a device.
 *
 * `keys`/`values` are the whole storage; tokens j < lengths[b] of row b are live. Ops take the
 * cache directly, with `seqLens: cache.lengths`, so it is never copied to run one:
 *
 * @example
 * ```ts
 * const cache = new KvCache({ batch: 1, kvHeads: 8, headDim: 128, capacity: 4096, dtype: 'bf16', device: 'cuda:0' });
 * cache.append(promptKeys, promptValues);                          // prefill: [1, 8, n, 128]
 * const keep = snapkv.select(window, cache.keys, { window: 32, capacity: 1024, seqLens: cache.lengths });
 * cache.retain(keep);                                              // in place: lengths = [1024]
 * keep.dispose();
 * const scores = Tensor.zeros([1, 8, 4096], 'f32', 'cuda:0');
 * for (let step = 0; step < 64; step++) {
 *   cache.append(stepKey, stepValue);                              // [1, 8, 1, 128]
 *   h2o.accumulate(stepQuery, cache.keys, scores, { seqLens: cache.lengths });
 *   if (step % 16 === 15) {
 *     const kept = h2o.select(scores, { capacity: 1024, recent: 64, seqLens: cache.lengths });
 *     cache.retain(kept, { also: [scores] });                      // scores compacted along
 *     kept.dispose();
 *   }
 * }
 * ```
 */
export class KvCache {
  readonly batch: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly capacity: number;
  readonly dtype: CacheDType;
  readonly device: Device;
  readonly layout: Layout;
  /** The key storage: [B, Hkv, capacity, D] in the layout; tokens j < lengths[b] are live. */
  readonly keys: Tensor<CacheDType>;
  /** The value storage, shaped like keys. */
  readonly values: Tensor<CacheDType>;
  /** i32 [B, Hkv, capacity]: each live token's original position (for RoPE). */
  readonly positions: Tensor<'i32'>;
  /**
   * Live tokens per batch row. Pass it as an op's `seqLens`. The cache updates it; do not write
   * to it.
   */
  readonly lengths: Int32Array;
  /** Tokens ever appended to each row (evictions do not lower it): the next token's position. */
  readonly appended: Int32Array;
  private readonly _layoutCode: 0 | 1;
  private readonly _deviceIndex: number;
  private _disposed = false;

  constructor(options: KvCacheOptions) {
    const op = 'KvCache';
    const opts = checkOptions(op, options) as unknown as KvCacheOptions;
    if (options === undefined) throw invalid(op, 'options', 'an options object', options);
    this.batch = checkInt(op, 'options.batch', opts.batch, 1, 0x7fffffff);
    this.kvHeads = checkInt(op, 'options.kvHeads', opts.kvHeads, 1, 0x7fffffff);
    this.headDim = checkInt(op, 'options.headDim', opts.headDim, 1, 0x7fffffff);
    this.capacity = checkInt(op, 'options.capacity', opts.capacity, 1, 0x7fffffff);
    if (opts.dtype === undefined) throw invalid(op, 'options.dtype', "one of 'f32', 'f16', 'bf16'", undefined);
    const dtype = checkDType(op, 'options.dtype', opts.dtype);
    this.dtype = checkOneOf(op, 'options.dtype', dtype, ['f32', 'f16', 'bf16'] as const);
    const { layout, code } = layoutCode(op, opts.layout);
    this.layout = layout;
    this._layoutCode = code;
    this._deviceIndex = deviceIndex(op, 'options.device', opts.device ?? defaultDevice());
    const [B, H, S, D] = [this.batch, this.kvHeads, this.capacity, this.headDim];
    const shape = shape4(layout, B, H, S, D);
    // zero-filled: reading past a row's length (which no op does) sees zeros, never stale data
    this.keys = Tensor.zeros(shape, this.dtype, this._deviceIndex < 0 ? 'cpu' : `cuda:${this._deviceIndex}`);
    this.device = this.keys.device;
    this.values = disposeOnThrow([this.keys], () => Tensor.zeros(shape, this.dtype, this.device));
    this.positions = disposeOnThrow([this.keys, this.values], () => Tensor.zeros([B, H, S], 'i32', this.device));
    this.lengths = new Int32Array(B);
    this.appended = new Int32Array(B);
  }

  get disposed(): boolean {
    return this._disposed;
  }

  /**
   * Writes T new tokens per row after each row's live tokens, on the device and stream-ordered
   * (no host synchronization). The new tokens' positions continue each row's `appended` count.
   *
   * @param keys [B, Hkv, T, D] in the cache's layout ([B, T, Hkv, D] for 'bshd'), the cache's dtype
   * @param values shaped like keys
   * @throws ERR_INVALID_ARG naming the capacity when a row would exceed it (nothing is written)
   * @example
   * ```ts
   * cache.append(stepKey, stepValue);                                      // one decode token
   * cache.append(promptK, promptV, { lengths: new Int32Array([300, 212]) }); // right-padded prefill
   * ```
   */
  append(keys: Tensor, values: Tensor, options?: AppendOptions): void {
    const op = 'KvCache.append';
    this._check('append');
    const opts = checkOptions(op, options) as AppendOptions;
    const k = this._checkTokens(op, 'keys', keys);
    const v = this._checkTokens(op, 'values', values);
    if (v.shape.some((n, i) => n !== k.shape[i])) {
      throw invalidText(op, 'values', `the keys' shape [${k.shape.join(', ')}]`, `[${v.shape.join(', ')}]`);
    }
    const T = this.layout === 'bhsd' ? k.shape[2] : k.shape[1];
    const counts = new Int32Array(this.batch);
    if (opts.lengths === undefined) counts.fill(T);
    else {
      const expected = `an Int32Array of ${this.batch} counts`;
      const raw = opts.lengths;
      // a number[] is read once, element by element: a hole or a getter cannot pass as a count
      const l = raw instanceof Int32Array ? Int32Array.from(raw) : isArray(raw) ? snapshotArray(op, 'options.lengths', raw, expected) : undefined;
      if (l === undefined || !(l instanceof Int32Array || l.every((x) => typeof x === 'number' && Number.isInteger(x)))) {
        throw invalid(op, 'options.lengths', expected, raw);
      }
      if (l.length !== this.batch) throw invalidText(op, 'options.lengths', `${this.batch} counts (one per batch row)`, `${l.length}`);
      for (let b = 0; b < this.batch; b++) {
        const n = l[b] as number;
        if (n < 0 || n > T) throw invalidText(op, `options.lengths[${b}]`, `an integer in [0, ${T}] (the tokens given)`, `${n}`);
        counts[b] = n;
      }
    }
    for (let b = 0; b < this.batch; b++) {
      const total = this.lengths[b] + counts[b];
      if (total > this.capacity) {
        throw invalidText(op, 'keys', `at most the cache's capacity of ${this.capacity} tokens per row`, `${total} in row ${b} (${this.lengths[b]} live + ${counts[b]} appended)`);
      }
      if (this.appended[b] + counts[b] > 0x7fffffff) throw invalidText(op, 'keys', 'positions below 2^31', `${this.appended[b] + counts[b]}`);
    }
    const stream = opStream(op, opts, this._deviceIndex);
    native.kvAppend(this.keys, this.values, this.positions, k, v, { layout: this._layoutCode, lengths: this.lengths, counts, starts: this.appended }, stream);
    for (let b = 0; b < this.batch; b++) {
      this.lengths[b] += counts[b];
      this.appended[b] += counts[b];
    }
  }

  /**
   * Compacts the cache in place to the kept tokens: afterwards every row's length is C and
   * keys/values/positions hold the kept tokens at 0..C-1, in order. Every `also` tensor is
   * compacted the same way and zeroed from C on. Stream-ordered, with one temporary of at most
   * one layer's K on CUDA.
   *
   * A bad selection (a position at or past its row's length, repeated, or unsorted) writes
   * nothing: on the CPU retain throws at once (ERR_INDEX_OUT_OF_RANGE for out-of-range,
   * ERR_INVALID_ARG for repeats/disorder, naming `positions`); on CUDA the kernel checks before it
   * writes and the next `synchronize()` rejects with ERR_INDEX_OUT_OF_RANGE. The device data is
   * then unchanged, but `lengths` already reads C (the host cannot know without waiting): call
   * {@link KvCache.setLengths} with the lengths from before the call to keep using the cache.
   *
   * @param positions i32 [B, Hkv, C] (or [B, 1, C]: one selection for every head), strictly
   *   ascending, each below its row's length: what `snapkv.select`, `h2o.select`,
   *   `keyformer.select`, `l2.select`, `tova.select` or `topk` return.
   * @example
   * ```ts
   * cache.retain(h2o.select(scores, { capacity: 1024, recent: 64, seqLens: cache.lengths }), { also: [scores] });
   * ```
   */
  retain(positions: Tensor, options?: RetainOptions): void {
    const op = 'KvCache.retain';
    this._check('retain');
    const opts = checkOptions(op, options) as RetainOptions;
    const p = checkTensor(op, 'positions', positions);
    const [B, H, S] = [this.batch, this.kvHeads, this.capacity];
    if (p.dtype !== 'i32') throw invalidText(op, 'positions.dtype', "'i32'", `'${p.dtype}'`);
    if (p.shape.length !== 3 || p.shape[0] !== B || (p.shape[1] !== H && p.shape[1] !== 1) || p.shape[2] > S) {
      throw invalidText(op, 'positions', `an i32 tensor [${B}, ${H} (or 1), C <= ${S}]`, `shape [${p.shape.join(', ')}]`);
    }
    const C = p.shape[2];
    const also = opts.also === undefined ? [] : opts.also;
    if (!isArray(also)) throw invalid(op, 'options.also', 'an array of tensors', also);
    const alsoTensors = also.map((t, i) => {
      const a = checkTensor(op, `options.also[${i}]`, t);
      if (a.shape.length !== 3 || a.shape[0] !== B || a.shape[1] !== H || a.shape[2] !== S) {
        throw invalidText(op, `options.also[${i}]`, `a tensor [${B}, ${H}, ${S}] (per token of the cache)`, `shape [${a.shape.join(', ')}]`);
      }
      return a;
    });
    sameDevice(op, [this.keys, p, ...alsoTensors]);
    const own = [this.keys, this.values, this.positions, ...alsoTensors];
    if (own.some((t) => t._buffer === p._buffer)) throw invalidText(op, 'positions', 'a tensor that is not the cache\'s or an `also` tensor\'s storage', 'one of them');
    for (let i = 0; i < alsoTensors.length; i++) {
      if (own.slice(0, 3 + i).some((t) => t._buffer === alsoTensors[i]._buffer)) {
        throw invalidText(op, `options.also[${i}]`, 'a tensor of its own (not the cache\'s, not repeated)', 'a shared one');
      }
    }
    for (let b = 0; b < B; b++) {
      if (C > this.lengths[b]) throw invalidText(op, 'positions', `at most ${this.lengths[b]} kept tokens in row ${b} (its length)`, `${C}`);
    }
    const stream = opStream(op, opts, this._deviceIndex);
    native.kvRetain(
      p,
      { lengths: this.lengths },
      [
        { tensor: this.keys, layout: this._layoutCode, zeroTail: false },
        { tensor: this.values, layout: this._layoutCode, zeroTail: false },
        { tensor: this.positions, zeroTail: false },
        ...alsoTensors.map((t) => ({ tensor: t, zeroTail: true })),
      ],
      stream,
    );
    this.lengths.fill(C);
  }

  /**
   * Sets the live lengths, for the one case the cache cannot track itself: a CUDA retain whose
   * selection was reported bad at synchronize (the device data was left as it was).
   *
   * @example
   * ```ts
   * const before = cache.lengths.slice();
   * cache.retain(keep);
   * await synchronize('cuda:0').catch(() => cache.setLengths(before));
   * ```
   */
  setLengths(lengths: Int32Array | readonly number[]): void {
    const op = 'KvCache.setLengths';
    this._check('setLengths');
    const expected = `an Int32Array of ${this.batch} lengths`;
    if (!(lengths instanceof Int32Array) && !isArray(lengths)) throw invalid(op, 'lengths', expected, lengths);
    // checked and stored from one snapshot: a getter cannot answer the check one way and the copy another
    const l = lengths instanceof Int32Array ? Int32Array.from(lengths) : snapshotArray(op, 'lengths', lengths, expected);
    if (l.length !== this.batch) throw invalidText(op, 'lengths', `${this.batch} lengths`, `${l.length}`);
    const next = new Int32Array(this.batch);
    for (let b = 0; b < this.batch; b++) {
      const max = Math.min(this.capacity, this.appended[b]);
      next[b] = checkInt(op, `lengths[${b}]`, l[b], 0, max);
    }
    this.lengths.set(next);
  }

  /** Frees keys, values and positions. Idempotent; later use throws ERR_DISPOSED. */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    this.keys.dispose();
    this.values.dispose();
    this.positions.dispose();
  }

  toString(): string {
    return `KvCache(${this.dtype}, [${this.batch}, ${this.kvHeads}, ${this.capacity}, ${this.headDim}], ${this.layout}, ${this.device}${this._disposed ? ', disposed' : ''})`;
  }

  private _check(what: string): void {
    if (this._disposed) throw new KvsiftError(`KvCache is disposed (${what})`, 'ERR_DISPOSED');
  }

  /** New tokens: 4-D in the cache's layout, [B, Hkv, T, D] logically, the cache's dtype and device. */
  private _checkTokens(op: string, name: string, value: unknown): Tensor {
    const { t, dims } = check4d(op, name, value, this.layout);
    sameDevice(op, [this.keys, t]);
    if (t.dtype !== this.dtype) throw invalidText(op, `${name}.dtype`, `the cache's '${this.dtype}'`, `'${t.dtype}'`);
    if (dims.B !== this.batch || dims.H !== this.kvHeads || dims.D !== this.headDim) {
      const want = this.layout === 'bhsd' ? `[${this.batch}, ${this.kvHeads}, T, ${this.headDim}]` : `[${this.batch}, T, ${this.kvHeads}, ${this.headDim}]`;
      const swapped = t.shape[0] === this.batch && t.shape[3] === this.headDim && (this.layout === 'bhsd' ? t.shape[2] : t.shape[1]) === this.kvHeads;
      const hint = swapped ? ` (the cache's layout is '${this.layout}'; these look like '${this.layout === 'bhsd' ? 'bshd' : 'bhsd'}' tokens: transpose them, or make the cache with layout: '${this.layout === 'bhsd' ? 'bshd' : 'bhsd'}')` : '';
      throw invalidText(op, name, `a tensor ${want} (the cache's layout '${this.layout}')`, `shape [${t.shape.join(', ')}]${hint}`);
    }
    return t;
  }
}
