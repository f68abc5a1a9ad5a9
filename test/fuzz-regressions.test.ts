/**
 * Regression tests for the bugs the fuzzer (test/fuzz.test.ts) found, one per bug, each with one
 * line saying why it exists.
 */
import { describe, expect, it } from 'vitest';
import { bf16ToF32, dtypeBytes, f16ToF32, f32ToBf16, f32ToF16, keyformer, Tensor, type DType } from '../lib/index';
import { native } from '../lib/native';
import { catchKvsift } from './helpers';
import { describeChild, runChild } from './scripts/child';

describe('regressions found by the fuzzer', () => {
  // Why: a JS getter could free a buffer an op had already read (use after free).
  it('no native op touches a buffer that a JS getter freed during the call (BUG-1)', () => {
    const r = runChild('reentrancy.ts');
    expect(r.signal, describeChild(r)).toBeNull();
    expect(r.status, describeChild(r)).toBe(0);
  });

  // Why: streaming.select built its positions in a JS array and V8 aborted for large n.
  it('streaming.select of a large valid n is a tensor or a KvsiftError, never a V8 abort (BUG-3)', () => {
    const r = runChild('streaming-large.ts', { nodeFlags: ['--max-old-space-size=128'], timeoutMs: 60_000 });
    expect(r.signal, describeChild(r)).toBeNull();
    expect(r.status, describeChild(r)).toBe(0);
  });

  // Why: Tensor.from(number[]) checked no element for float dtypes (TypeError or coercion) (BUG-4).
  it('Tensor.from rejects number[] elements that are not numbers (BUG-4, fixed)', () => {
    for (const bad of [1n, Symbol('s'), 'a', {}, null, undefined, true]) {
      for (const dtype of ['f32', 'f16', 'bf16'] as const) {
        const e = catchKvsift(() => Tensor.from([0, bad] as unknown as number[], { dtype, device: 'cpu' }));
        expect(e.code).toBe('ERR_INVALID_ARG');
        expect(e.message).toBe(`Tensor.from: expected a number for data[1], but received ${describeValue(bad)}`);
      }
    }
  });

  // Why: dtypeBytes of an unknown dtype returned undefined (BUG-5).
  it('dtypeBytes rejects what is not a dtype (BUG-5)', () => {
    for (const bad of ['f64', '', undefined, 4]) expect(catchKvsift(() => dtypeBytes(bad as DType)).code).toBe('ERR_INVALID_ARG');
  });

  // Why: the half conversions took any value (TypeError for a bigint or a symbol).
  it('the f16/bf16 conversions reject non-numbers with ERR_INVALID_ARG (BUG-6)', () => {
    for (const fn of [f32ToF16, f32ToBf16, f16ToF32, bf16ToF32]) {
      for (const bad of [1n, Symbol('s'), '1', {}]) expect(catchKvsift(() => fn(bad as number)).code).toBe('ERR_INVALID_ARG');
    }
  });

  // Why: the schedule extrapolated past maxNewTokens to Infinity.
  it('keyformer.tau stays between tauInit and tauEnd (BUG-7)', () => {
    for (const [step, maxNewTokens] of [[Number.MAX_VALUE, 10], [83, Number.MIN_VALUE], [200, 100]]) {
      const t = keyformer.tau(step, { maxNewTokens });
      expect(t).toBeGreaterThanOrEqual(1);
      expect(t).toBeLessThanOrEqual(2);
    }
    expect(Number.isFinite(keyformer.tau(65, { maxNewTokens: 95, tauEnd: Number.MAX_VALUE }))).toBe(true);
  });

  // Why: Object.create(DeviceBuffer.prototype) made the binding throw a plain Error.
  it('the binding rejects a fake DeviceBuffer with ERR_INVALID_ARG (BUG-8)', () => {
    const fake = Object.create((native.DeviceBuffer as unknown as { prototype: object }).prototype);
    expect(catchKvsift(() => native.fill(fake, 0)).code).toBe('ERR_INVALID_ARG');
  });

  // Why: typed arrays over a SharedArrayBuffer failed in the binding with a plain Error.
  it('Tensor.from copies typed arrays over a SharedArrayBuffer (BUG-9)', () => {
    const data = new Float32Array(new SharedArrayBuffer(16)).fill(2.5);
    const t = Tensor.from(data, { device: 'cpu' });
    try {
      expect(Array.from(t.toArray())).toEqual([2.5, 2.5, 2.5, 2.5]);
    } finally {
      t.dispose();
    }
  });
});

/** The received-value text of lib/validate.ts describe(), for the exact messages above. */
function describeValue(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'symbol') return 'a symbol';
  if (typeof v === 'string') return `'${v}'`;
  if (typeof v === 'boolean') return String(v);
  return 'a plain object';
}
