/**
 * Argument checks shared by every public entry point. One message template, shared with the
 * native layer (cpp/errors.cc):
 *   `<op>: expected <expected> for <name>, but received <received>`
 */
import { types } from 'node:util';
import { KvsiftError } from './errors';

/**
 * A short description of a received value for error messages. Never throws: a revoked Proxy, a
 * symbol length or a constructor that is not a function must not turn a KvsiftError into a
 * TypeError.
 */
export function describe(value: unknown): string {
  try {
    return describeUnsafe(value);
  } catch {
    return 'an object';
  }
}

function describeUnsafe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  switch (typeof value) {
    case 'number':
      return Number.isNaN(value) ? 'NaN' : String(value);
    case 'string':
      return value.length > 40 ? `a string` : `'${value}'`;
    case 'boolean':
      return String(value);
    case 'bigint':
      return `${value}n`;
    case 'function':
      return 'a function';
    case 'symbol':
      return 'a symbol';
  }
  if (types.isProxy(value)) return 'a Proxy';
  if (isArray(value)) return `an array of length ${describeLength(value.length)}`;
  if (ArrayBuffer.isView(value)) {
    const name = typedArrayName(value);
    return `${article(name)} ${name} of length ${types.isTypedArray(value) ? typedArrayLength(value) : value.byteLength}`;
  }
  const ctor = (value as { constructor?: unknown }).constructor;
  const name = typeof ctor === 'function' ? ctor.name : undefined;
  if (typeof name === 'string' && name && name !== 'Object') return `${article(name)} ${name}`;
  return 'a plain object';
}

function describeLength(length: unknown): string {
  return typeof length === 'number' ? String(length) : describe(length);
}

/** The real element count of a typed array, as V8 keeps it: never a `length` a subclass claims. */
export function typedArrayLength(view: ArrayBufferView): number {
  return TYPED_ARRAY_LENGTH.call(view) as number;
}
const TYPED_ARRAY_LENGTH = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Int8Array.prototype), 'length')!.get!;
const TYPED_ARRAY_TAG = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Int8Array.prototype), Symbol.toStringTag)!.get!;

/** 'Float32Array' etc. from the internal slot (a subclass reports its base), 'DataView' otherwise. */
export function typedArrayName(view: ArrayBufferView): string {
  return (TYPED_ARRAY_TAG.call(view) as string | undefined) ?? 'DataView';
}

function article(word: string): string {
  // 'an Int32Array', 'an Error', but 'a Uint16Array' (said "you")
  return /^[aeioAEIO]/.test(word) ? 'an' : 'a';
}

export function invalid(op: string, name: string, expected: string, received: unknown): KvsiftError {
  return new KvsiftError(`${op}: expected ${expected} for ${name}, but received ${describe(received)}`, 'ERR_INVALID_ARG');
}

/** Same template, with the received part already described (e.g. a shape). */
export function invalidText(op: string, name: string, expected: string, received: string): KvsiftError {
  return new KvsiftError(`${op}: expected ${expected} for ${name}, but received ${received}`, 'ERR_INVALID_ARG');
}

export function checkInt(op: string, name: string, value: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`;
    throw invalid(op, name, range, value);
  }
  return value;
}

export function checkNumber(op: string, name: string, value: unknown, opts: { min?: number; exclusiveMin?: number } = {}): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw invalid(op, name, 'a finite number', value);
  if (opts.min !== undefined && value < opts.min) throw invalid(op, name, `a number >= ${opts.min}`, value);
  if (opts.exclusiveMin !== undefined && value <= opts.exclusiveMin) throw invalid(op, name, `a number > ${opts.exclusiveMin}`, value);
  return value;
}

export function checkOneOf<T extends string>(op: string, name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalid(op, name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value);
  }
  return value as T;
}

/** Array.isArray without its TypeError for a revoked Proxy (which is then no array). */
export function isArray(value: unknown): value is unknown[] {
  try {
    return Array.isArray(value);
  } catch {
    return false;
  }
}

/**
 * An options object as a snapshot of its own properties, with no prototype: a key set
 * on Object.prototype (or on a class the object comes from) is never read, and every getter runs
 * exactly once, here, before any argument is checked or any memory is read.
 */
export function checkOptions(op: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return Object.create(null) as Record<string, unknown>;
  if (value === null || typeof value !== 'object' || isArray(value)) throw invalid(op, 'options', 'an options object', value);
  const snapshot = Object.create(null) as Record<string, unknown>;
  // every own string key, enumerable or not (Object.defineProperty makes non-enumerable ones)
  for (const key of Object.getOwnPropertyNames(value)) snapshot[key] = (value as Record<string, unknown>)[key];
  return snapshot;
}

/** An own property of an options-like object, never one inherited (undefined when absent). */
export function ownOption(value: unknown, key: string): unknown {
  if (value === null || typeof value !== 'object') return undefined;
  return Object.prototype.hasOwnProperty.call(value, key) ? (value as Record<string, unknown>)[key] : undefined;
}

/** Smallest positive normal f32: anything below flushes to 0 (or a subnormal) in the kernels. */
export const F32_MIN_NORMAL = 1.1754943508222875e-38;
/** Largest finite f32. */
export const F32_MAX = 3.4028234663852886e38;

/**
 * A number the kernels, which compute in f32, see as the same number: finite in f32, and for
 * `positive` at least the smallest normal f32 with a finite reciprocal (tau = 1e-300 passes
 * `> 0` as a double but is 0 in f32).
 */
export function checkF32(op: string, name: string, value: unknown, opts: { positive?: boolean } = {}): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw invalid(op, name, 'a finite number', value);
  const f = Math.fround(value);
  if (opts.positive) {
    if (!(value > 0)) throw invalid(op, name, 'a number > 0', value);
    if (!(f >= F32_MIN_NORMAL) || !Number.isFinite(f) || !Number.isFinite(Math.fround(1 / f))) {
      throw invalid(op, name, `a positive number representable in f32 (between ${F32_MIN_NORMAL} and ${F32_MAX})`, value);
    }
  } else if (!Number.isFinite(f)) {
    throw invalid(op, name, `a number representable in f32 (at most ${F32_MAX} in magnitude)`, value);
  }
  return value;
}

/**
 * Reads an array-like once, element by element, into a plain array: a Proxy or an array with
 * getters cannot answer differently later. Holes are rejected. `maxLength` bounds the work.
 */
export function snapshotArray(op: string, name: string, value: unknown, expected: string, maxLength = 0x7fffffff): unknown[] {
  if (!isArray(value)) throw invalid(op, name, expected, value);
  const length: unknown = value.length;
  if (typeof length !== 'number' || !Number.isInteger(length) || length < 0 || length > maxLength) {
    throw invalidText(op, name, expected, `an array of length ${describe(length)}`);
  }
  const out = new Array<unknown>(length);
  for (let i = 0; i < length; i++) {
    if (!Object.prototype.hasOwnProperty.call(value, i)) throw invalidText(op, `${name}[${i}]`, 'an element (holes are not allowed)', 'a hole');
    out[i] = value[i];
  }
  return out;
}

/** Largest element count a tensor may have: its byte size must stay a safe integer. */
export const MAX_BYTES = Number.MAX_SAFE_INTEGER;

export function checkShape(op: string, name: string, value: unknown, elementBytes: number): number[] {
  if (!isArray(value)) throw invalid(op, name, 'an array of non-negative integers', value);
  const rank: unknown = value.length;
  if (typeof rank === 'number' && rank > 8) throw invalidText(op, name, 'at most 8 dimensions', `${rank}`);
  // each dimension read once: a Proxy cannot pass the checks with one value and then give another
  const shape = snapshotArray(op, name, value, 'an array of non-negative integers', 8);
  let numel = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0 || d > 0x7fffffff) {
      throw invalid(op, `${name}[${i}]`, 'a non-negative integer below 2^31', d);
    }
    numel *= d;
  }
  if (numel * elementBytes > MAX_BYTES) {
    throw invalidText(op, name, 'a shape whose byte size fits in 2^53', `[${shape.join(', ')}]`);
  }
  return shape as number[];
}
