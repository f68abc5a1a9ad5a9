/**
 * Shared pieces of the ops: layouts, argument checks that several ops repeat, and the temporary
 * tensors of composite ops (freed stream-ordered, so no host synchronization is needed).
 */
import type { NativeTensor } from '../binding';
import { KvsiftError } from './errors';
import { native } from './native';
import { streamHandle, type Stream } from './stream';
import { checkTensor, Tensor, type DType } from './tensor';
import { types } from 'node:util';
import { checkInt, checkOneOf, invalid, invalidText, isArray, snapshotArray, typedArrayLength } from './validate';

/** 'bhsd' = [B, H, N, D] (Hugging Face); 'bshd' = [B, N, H, D] (FlashAttention, vLLM). */
export type Layout = 'bhsd' | 'bshd';
export const LAYOUTS: readonly Layout[] = ['bhsd', 'bshd'];

/** Options every op accepts. */
export interface OpOptions {
  /** CUDA stream to run on (default: the device's legacy default stream). */
  stream?: Stream;
}

export interface LayoutOptions {
  /** Memory layout of 4-D inputs and outputs. Default 'bhsd'. */
  layout?: Layout;
}

export interface Dims4 {
  B: number;
  H: number;
  S: number;
  D: number;
}

/**
 * Runs `body`; when it throws, disposes `owned` (outputs already made by the same call) and
 * rethrows, so a failed op hands nothing half-made back and leaks nothing.
 */
export function disposeOnThrow<T>(owned: readonly { dispose(): void }[], body: () => T): T {
  try {
    return body();
  } catch (e) {
    for (const t of owned) t.dispose();
    throw e;
  }
}

/** The sizes of an attention problem: queries [B, Hq, T, D] against a cache [B, Hkv, N, D]. */
export interface AttentionDims {
  B: number;
  Hq: number;
  Hkv: number;
  T: number;
  N: number;
  D: number;
}

/**
 * The shape agreement every attention op needs between its queries [B, Hq, T, D] and keys
 * [B, Hkv, N, D]: the same batch and head dim, D >= 1, and Hq a non-zero multiple of Hkv
 * (grouped-query attention: query head h reads KV head h / (Hq / Hkv)). `queriesName` is the
 * argument's name in the op's own signature, so the error names what the caller passed.
 */
export function checkQueriesMatchKeys(op: string, queriesName: string, qd: Dims4, kd: Dims4): void {
  if (qd.B !== kd.B) throw invalidText(op, queriesName, `batch ${kd.B} (the keys')`, `${qd.B}`);
  if (qd.D !== kd.D) throw invalidText(op, queriesName, `head dim ${kd.D} (the keys')`, `${qd.D}`);
  if (qd.H === 0) throw invalidText(op, queriesName, 'at least one query head (Hq >= 1)', '0');
  if (kd.H === 0 || qd.H % kd.H !== 0) throw invalidText(op, queriesName, `a head count that is a multiple of the keys' ${kd.H}`, `${qd.H}`);
  if (kd.D === 0) throw invalidText(op, 'keys', 'a head dim D >= 1', '0');
}

export function layoutCode(op: string, layout: unknown): { layout: Layout; code: 0 | 1 } {
  const l = layout === undefined ? 'bhsd' : checkOneOf(op, 'options.layout', layout, LAYOUTS);
  return { layout: l, code: l === 'bhsd' ? 0 : 1 };
}

/** More KV heads than any model has: a 'bhsd' tensor with this many heads and fewer tokens is a 'bshd' one misread. */
export const MAX_PLAUSIBLE_HEADS = 256;

/**
 * A live 4-D tensor with a float dtype; its logical [B, H, S, D] under the layout. When the
 * layout was not given (`layoutExplicit` false) and the default 'bhsd' reading finds more than
 * MAX_PLAUSIBLE_HEADS heads and fewer tokens than heads, the tensor is almost surely a 'bshd'
 * cache: that is refused with a hint instead of silently selecting heads instead of tokens.
 */
export function check4d(op: string, name: string, value: unknown, layout: Layout, dtypes: readonly DType[] = ['f32', 'f16', 'bf16'], layoutExplicit = true): { t: Tensor; dims: Dims4 } {
  const t = checkTensor(op, name, value);
  if (t.shape.length !== 4) {
    throw invalidText(op, name, `a 4-D tensor ${layout === 'bhsd' ? '[B, H, N, D]' : '[B, N, H, D]'}`, `shape [${t.shape.join(', ')}]`);
  }
  if (!dtypes.includes(t.dtype)) throw invalidText(op, `${name}.dtype`, dtypes.map((d) => `'${d}'`).join(' | '), `'${t.dtype}'`);
  const [a, b, c, d] = t.shape;
  if (!layoutExplicit && layout === 'bhsd' && b > MAX_PLAUSIBLE_HEADS && c < b) {
    throw invalidText(
      op,
      name,
      `[B, H, N, D] with at most ${MAX_PLAUSIBLE_HEADS} heads (layout 'bhsd', the default)`,
      `shape [${t.shape.join(', ')}]: ${b} heads of ${c} tokens (did you mean layout: 'bshd'?)`,
    );
  }
  return { t, dims: layout === 'bhsd' ? { B: a, H: b, S: c, D: d } : { B: a, H: c, S: b, D: d } };
}

/**
 * Runs an op's shape checks under its layout; when they fail with ERR_INVALID_ARG but would pass
 * under the other layout (the head and token axes swapped), the error gains the hint
 * "(did you mean layout: '<other>'?)". `check` must have no side effects.
 */
export function withLayoutHint<T>(layout: Layout, check: (layout: Layout) => T): T {
  try {
    return check(layout);
  } catch (e) {
    if (!(e instanceof KvsiftError) || e.code !== 'ERR_INVALID_ARG' || e.message.includes('did you mean layout')) throw e;
    const other: Layout = layout === 'bhsd' ? 'bshd' : 'bhsd';
    try {
      check(other);
    } catch {
      throw e;
    }
    e.message += ` (did you mean layout: '${other}'?)`;
    throw e;
  }
}

/** The shape of a [B, H, S, D] tensor stored in a layout. */
export function shape4(layout: Layout, B: number, H: number, S: number, D: number): number[] {
  return layout === 'bhsd' ? [B, H, S, D] : [B, S, H, D];
}

export function sameDevice(op: string, tensors: Tensor[]): number {
  const device = tensors[0]._deviceIndex;
  for (const t of tensors) {
    if (t._deviceIndex !== device) {
      throw new KvsiftError(
        `${op}: tensors on different devices (${tensors[0].device} and ${t.device}); move them with tensor.to(device) first`,
        'ERR_DEVICE_MISMATCH',
      );
    }
  }
  return device;
}

/**
 * Per-batch lengths: an Int32Array (or number[]) of B integers in [lo, hi], copied once into a new
 * Int32Array. Every number[] element must be an integer in range as a number: nothing wraps
 * modulo 2^32 (2^32 + 4 is not 4) and a hole is an error, not 0.
 */
export function checkLengths(op: string, name: string, value: unknown, batch: number, lo: number, hi: number): Int32Array | undefined {
  if (value === undefined) return undefined;
  const expected = `an Int32Array or number[] of ${batch} lengths`;
  let arr: Int32Array;
  if (types.isInt32Array(value)) {
    // the real contents, whatever a subclass claims its length is
    // a detached view has no elements (and cannot be copied from)
    arr = typedArrayLength(value) === 0 ? new Int32Array(0) : new Int32Array(value);
  } else if (!types.isProxy(value) && isArray(value)) {
    const items = snapshotArray(op, name, value, expected);
    if (items.length !== batch) throw invalidText(op, name, `${batch} lengths (one per batch row)`, `${items.length}`);
    arr = new Int32Array(items.length);
    for (let b = 0; b < items.length; b++) {
      const v = items[b];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw invalid(op, `${name}[${b}]`, `an integer in [${lo}, ${hi}]`, v);
      arr[b] = v;
    }
  } else throw invalid(op, name, expected, value);
  if (arr.length !== batch) throw invalidText(op, name, `${batch} lengths (one per batch row)`, `${arr.length}`);
  for (let b = 0; b < arr.length; b++) {
    if (arr[b] < lo || arr[b] > hi) throw invalidText(op, `${name}[${b}]`, `an integer in [${lo}, ${hi}]`, `${arr[b]}`);
  }
  return arr;
}

export function checkCapacity(op: string, value: unknown, min = 1): number {
  return checkInt(op, 'options.capacity', value, min, 0x7fffffff);
}

/** A view of a tensor's buffer under another shape of the same element count, for the binding. */
export function reshaped(t: Tensor, shape: number[]): NativeTensor {
  return { _buffer: t._buffer, _dtypeCode: t._dtypeCode, shape };
}

/**
 * Runs `body` with a scope that tracks temporaries: every tensor made through `scope.alloc` is
 * disposed when the body ends, except the ones it returns through `scope.keep`. On failure all of
 * them are disposed, so a failed op leaks nothing.
 */
export function withScope<T>(device: number, stream: bigint | undefined, body: (scope: Scope) => T): T {
  const scope = new Scope(device, stream);
  try {
    const result = body(scope);
    scope.release();
    return result;
  } catch (e) {
    scope.releaseAll();
    throw e;
  }
}

export class Scope {
  private readonly temps: Tensor[] = [];
  private readonly kept = new Set<Tensor>();
  constructor(readonly device: number, readonly stream: bigint | undefined) {}
  alloc<D extends DType>(shape: number[], dtype: D): Tensor<D> {
    const t = Tensor._alloc(shape, dtype, this.device, this.stream);
    this.temps.push(t);
    return t;
  }
  /** Allocates a tensor that survives the scope (an output). */
  output<D extends DType>(shape: number[], dtype: D): Tensor<D> {
    const t = this.alloc(shape, dtype);
    this.kept.add(t);
    return t;
  }
  /** Host data as a tensor on the scope's device (temporary). */
  upload(data: Int32Array | Float32Array, shape: number[]): Tensor {
    const t = this.alloc(shape, data instanceof Int32Array ? 'i32' : 'f32');
    native.copyFromHost(t._buffer, 0, data, this.stream);
    return t;
  }
  release(): void {
    for (const t of this.temps) if (!this.kept.has(t)) t.dispose();
  }
  releaseAll(): void {
    for (const t of this.temps) t.dispose();
  }
}

export function opStream(op: string, options: { stream?: unknown } | undefined, device: number): bigint | undefined {
  return streamHandle(op, options?.stream, device);
}

/** Ascending 0..n-1 positions, broadcast later to every head. */
export function arange(n: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}
