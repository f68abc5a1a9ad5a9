/**
 * Argument checks shared by every public entry point. One message template, shared with the
 * native layer (cpp/errors.cc):
 *   `<op>: expected <expected> for <name>, but received <received>`
 */
import { KvsiftError } from './errors';

/** A short description of a received value for error messages. */
export function describe(value: unknown): string {
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
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `${article(value.constructor.name)} ${value.constructor.name} of length ${(value as unknown as { length?: number }).length ?? value.byteLength}`;
  const name = (value as object).constructor?.name;
  if (name && name !== 'Object') return `${article(name)} ${name}`;
  return 'a plain object';
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

export function checkOptions(op: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalid(op, 'options', 'an options object', value);
  return value as Record<string, unknown>;
}

/** Largest element count a tensor may have: its byte size must stay a safe integer. */
export const MAX_BYTES = Number.MAX_SAFE_INTEGER;

export function checkShape(op: string, name: string, shape: unknown, elementBytes: number): number[] {
  if (!Array.isArray(shape)) throw invalid(op, name, 'an array of non-negative integers', shape);
  if (shape.length > 8) throw invalidText(op, name, 'at most 8 dimensions', `${shape.length}`);
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
  return shape.slice();
}
