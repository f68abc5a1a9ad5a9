/**
 * Shared test utilities: a seeded PRNG whose seed is printed when a test fails (replay with
 * KVSIFT_TEST_SEED=<seed>), random tensor data, the devices to run on, suites run once per
 * backend, CUDA suites that skip visibly, cache fixtures in either layout, per-dtype tolerances
 * and a closeness check that names the worst element.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { buildInfo, cudaDeviceCount, devices, KvsiftError, Tensor, type Device, type DType } from '../lib/index';
import { bshdToBhsd, fromLayout, shapeIn, toLayout, type Cache4, type Layout } from '../reference/layout';
import { Rng } from './rng';
export type { AttentionDims } from '../lib/common';
import type { AttentionDims } from '../lib/common';

export { Rng };

// ---------------------------------------------------------------------------------------------
// Seeds and random numbers

function parseSeed(text: string): number {
  const n = Number(text.trim());
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new Error(`KVSIFT_TEST_SEED must be an integer in [0, 2^32), got '${text}'`);
  }
  return n >>> 0;
}

/** The run's base seed: KVSIFT_TEST_SEED when set, else fresh from the OS each run. */
export const BASE_SEED: number =
  process.env.KVSIFT_TEST_SEED !== undefined && process.env.KVSIFT_TEST_SEED !== ''
    ? parseSeed(process.env.KVSIFT_TEST_SEED)
    : randomBytes(4).readUInt32LE(0);

/** FNV-1a over a string, folded into a seed, so each test draws its own stream. */
function mixSeed(seed: number, label: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * A PRNG for the current test, seeded from BASE_SEED and the test's full name (so one test
 * replays identically whatever ran before it). When the test fails, the seed to replay it is
 * printed and appended to the failure message. Call it inside a test; outside one (in a
 * describe body) pass a label.
 *
 * @example
 * ```ts
 * it('round-trips', () => { const rng = testRng(); const x = rng.normalArray(1000); ... });
 * ```
 */
export function testRng(label?: string): Rng {
  const name = label ?? expect.getState().currentTestName ?? '';
  const rng = new Rng(mixSeed(BASE_SEED, name));
  const note = `random inputs from KVSIFT_TEST_SEED=${BASE_SEED} (test stream ${rng.seed}); replay with KVSIFT_TEST_SEED=${BASE_SEED} npx vitest run`;
  try {
    onTestFailed(({ task }) => {
      console.error(`[kvsift] ${task.name}: ${note}`);
      for (const e of task.result?.errors ?? []) {
        if (typeof e.message === 'string' && !e.message.includes('KVSIFT_TEST_SEED')) e.message += `\n[${note}]`;
      }
    });
  } catch {
    // not inside a running test: the caller gets the seed in rng.seed
  }
  return rng;
}

// ---------------------------------------------------------------------------------------------
// Devices

/** 'cuda:N' for every usable CUDA device (empty without CUDA). */
export function cudaDevices(): Device[] {
  return devices()
    .map((d) => d.name)
    .filter((n) => n !== 'cpu') as Device[];
}

/** 'cpu' first, then every usable CUDA device. */
export function allDevices(): Device[] {
  return ['cpu', ...cudaDevices()];
}

/**
 * Whether the CUDA device is the emulated one (KVSIFT_CUDA_EMULATE: its kernels run on the host's
 * cores): case tables leave out their largest CUDA shapes there.
 */
export const CUDA_EMULATED: boolean = buildInfo.cudaArchitectures.includes('emulated');

/** Why the CUDA suites are skipped ('' when they run). */
export function cudaSkipReason(): string {
  if (cudaDeviceCount() > 0) return '';
  return buildInfo.cudaUnavailableReason || (buildInfo.cuda ? 'no CUDA device found' : 'kvsift was built without CUDA');
}

/**
 * `describe` for suites that need a CUDA device. Without one the suite is still listed, skipped,
 * with the reason in its name, e.g. "cuda streams [skipped: kvsift was built without CUDA]".
 */
export function describeCuda(name: string, fn: () => void): void {
  const reason = cudaSkipReason();
  if (reason === '') describe(name, fn);
  else describe.skip(`${name} [skipped: ${reason}]`, fn);
}

/**
 * The case table of an op, once per backend: `body(device)` runs inside a describe named
 * `${name} on ${device}` for 'cpu' and for every CUDA device; without one, a single CUDA suite is
 * listed, skipped, like {@link describeCuda}. The body compares the CPU backend with the float64
 * reference, and a CUDA device with the CPU backend on the same inputs.
 *
 * @example
 * ```ts
 * describeEachDevice('l2.norms', (device) => { for (const c of CASES) it(label(c), () => run(c, device)); });
 * ```
 */
export function describeEachDevice(name: string, body: (device: Device) => void): void {
  describe(`${name} on cpu`, () => body('cpu'));
  const cuda = cudaDevices();
  if (cuda.length === 0) describeCuda(`${name} on cuda`, () => body('cuda:0'));
  else for (const device of cuda) describe(`${name} on ${device}`, () => body(device));
}

/** `it` for single tests that need a CUDA device; skipped visibly like {@link describeCuda}. */
export function itCuda(name: string, fn: () => unknown | Promise<unknown>, timeout?: number): void {
  const reason = cudaSkipReason();
  if (reason === '') it(name, fn, timeout);
  else it.skip(`${name} [skipped: ${reason}]`, fn, timeout);
}

// ---------------------------------------------------------------------------------------------
// Fixtures

export type FloatDType = 'f32' | 'f16' | 'bf16';
export const LAYOUTS: readonly Layout[] = Object.freeze(['bhsd', 'bshd'] as const);
export const FLOAT_DTYPES: readonly FloatDType[] = Object.freeze(['f32', 'f16', 'bf16'] as const);
/** Every layout x float dtype: the smallest case table of a 4-D op. */
export const LAYOUT_DTYPES: ReadonlyArray<{ layout: Layout; dtype: FloatDType }> = LAYOUTS.flatMap((layout) => FLOAT_DTYPES.map((dtype) => ({ layout, dtype })));

/**
 * Disposes, after each test, every tensor handed to `track` (or the three of a compressed cache
 * handed to `trackAll`). Call once at the top of a test file.
 */
export function tensorScope(): { track: <T extends Tensor>(t: T) => T; trackAll: <T extends { keys: Tensor; values: Tensor; positions: Tensor }>(c: T) => T } {
  const live: Tensor[] = [];
  afterEach(() => {
    for (const t of live.splice(0)) t.dispose();
  });
  const track = <T extends Tensor>(t: T): T => {
    live.push(t);
    return t;
  };
  const trackAll = <T extends { keys: Tensor; values: Tensor; positions: Tensor }>(c: T): T => {
    live.push(c.keys, c.values, c.positions);
    return c;
  };
  return { track, trackAll };
}

/**
 * A cache tensor from logical [B, H, S, D] f32 data, stored in `layout` and `dtype` on `device`,
 * and the reference's view of it: the values as the device holds them (rounded to the dtype),
 * logical [B, H, S, D].
 */
export function makeCache(data: Float32Array, dims: readonly [number, number, number, number], dtype: DType, layout: Layout, device: Device = 'cpu'): { t: Tensor; ref: Cache4 } {
  const [B, H, S, D] = dims;
  const t = Tensor.from(toLayout({ data, B, H, S, D }, layout), { shape: shapeIn(layout, B, H, S, D), dtype, device });
  return { t, ref: fromLayout(t.toArray(), layout, B, H, S, D) };
}

/**
 * Queries [B, Hq, T, D] and keys [B, Hkv, N, D] with normal entries of std 1.5 D^-1/4, so the
 * logits q.k/sqrt(D) are of order 1 (a softmax neither flat nor one-hot): on `device` with the
 * reference's view, and `cpu`, the same inputs on the CPU backend (the same tensors on the CPU).
 */
export function qkCaches(rng: Rng, d: AttentionDims, dtype: DType, layout: Layout, device: Device = 'cpu') {
  const { B, Hq, Hkv, T, N, D } = d;
  const std = Math.pow(D, -0.25) * 1.5;
  const qData = rng.normalArray(B * Hq * T * D, 0, std);
  const kData = rng.normalArray(B * Hkv * N * D, 0, std);
  const q = makeCache(qData, [B, Hq, T, D], dtype, layout, device);
  const k = makeCache(kData, [B, Hkv, N, D], dtype, layout, device);
  const cpu = device === 'cpu' ? { q: q.t, k: k.t } : { q: makeCache(qData, [B, Hq, T, D], dtype, layout).t, k: makeCache(kData, [B, Hkv, N, D], dtype, layout).t };
  return { q, k, cpu };
}

/** The values a device sees after rounding f32 data to dtype, widened to f32 exactly. */
export function rounded(data: Float32Array, dtype: FloatDType): Float32Array {
  const t = Tensor.from(data, { dtype, device: 'cpu' });
  const out = t.toArray() as Float32Array;
  t.dispose();
  return out;
}

/** A 4-D tensor's stored bits (Float32Array or Uint16Array) in logical bhsd order. */
export function rawBhsd(t: Tensor, layout: Layout): Float32Array | Uint16Array {
  const raw = t.toRawArray() as Float32Array | Uint16Array;
  if (layout === 'bhsd') return raw;
  const [B, S, H, D] = t.shape;
  return bshdToBhsd(raw, B, H, S, D);
}

// ---------------------------------------------------------------------------------------------
// Tolerances and comparisons

export interface Tolerance {
  rtol: number;
  atol: number;
}

/**
 * Tolerances for results computed in f32 from inputs stored in each dtype: about one unit in the
 * last place of the storage format (f16 has 11 significant bits, bf16 8), plus an absolute floor
 * for values near zero.
 */
export const TOLERANCE: Readonly<Record<'f32' | 'f16' | 'bf16', Tolerance>> = Object.freeze({
  f32: { rtol: 1e-5, atol: 1e-6 },
  f16: { rtol: 2e-3, atol: 1e-4 },
  bf16: { rtol: 1.6e-2, atol: 1e-3 },
});

/** The tolerance for a float dtype (integer dtypes compare exactly: rtol = atol = 0). */
export function tolerance(dtype: DType): Tolerance {
  if (dtype === 'f32' || dtype === 'f16' || dtype === 'bf16') return TOLERANCE[dtype];
  return { rtol: 0, atol: 0 };
}

function formatIndex(i: number, shape?: readonly number[]): string {
  if (!shape || shape.length === 0) return `[${i}]`;
  const idx: number[] = [];
  let rest = i;
  for (let d = shape.length - 1; d >= 0; d--) {
    idx.unshift(rest % shape[d]);
    rest = Math.floor(rest / shape[d]);
  }
  return `[${idx.join(', ')}] (flat ${i})`;
}

/**
 * Asserts |actual - expected| <= atol + rtol * |expected| everywhere. NaN and infinity placement
 * is checked first (a NaN where a number was expected fails regardless of tolerance), then the
 * element that exceeds its bound the most is reported with its index.
 *
 * @example
 * ```ts
 * expectClose(gpu.toArray(), cpu.toArray(), { ...tolerance('bf16'), shape: gpu.shape });
 * ```
 */
export function expectClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  opts: Partial<Tolerance> & { shape?: readonly number[]; label?: string } = {},
): void {
  const rtol = opts.rtol ?? TOLERANCE.f32.rtol;
  const atol = opts.atol ?? TOLERANCE.f32.atol;
  const what = opts.label ? `${opts.label}: ` : '';
  if (actual.length !== expected.length) {
    throw new Error(`${what}length mismatch: actual ${actual.length}, expected ${expected.length}`);
  }
  let nanMismatches = 0;
  let firstNan = -1;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const bad = Number.isNaN(a) !== Number.isNaN(e) || ((!Number.isFinite(a) || !Number.isFinite(e)) && !Number.isNaN(a) && a !== e);
    if (bad) {
      nanMismatches++;
      if (firstNan < 0) firstNan = i;
    }
  }
  if (nanMismatches > 0) {
    throw new Error(
      `${what}${nanMismatches} of ${actual.length} elements differ in NaN/Inf placement; first at ` +
        `${formatIndex(firstNan, opts.shape)}: actual ${actual[firstNan]}, expected ${expected[firstNan]}`,
    );
  }
  let worst = -1;
  let worstExcess = 0;
  let failures = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (!Number.isFinite(a)) continue; // equal infinities or both NaN, checked above
    const excess = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (excess > 0) {
      failures++;
      if (excess > worstExcess) {
        worstExcess = excess;
        worst = i;
      }
    }
  }
  if (failures > 0) {
    const a = actual[worst];
    const e = expected[worst];
    throw new Error(
      `${what}${failures} of ${actual.length} elements outside atol=${atol}, rtol=${rtol}; worst at ` +
        `${formatIndex(worst, opts.shape)}: actual ${a}, expected ${e}, |diff| ${Math.abs(a - e)} > ` +
        `allowed ${atol + rtol * Math.abs(e)}`,
    );
  }
}

/** Exact equality, NaN equal to NaN and +0 distinct from -0; reports the first difference. */
export function expectIdentical(actual: ArrayLike<number>, expected: ArrayLike<number>, label = ''): void {
  const what = label ? `${label}: ` : '';
  if (actual.length !== expected.length) {
    throw new Error(`${what}length mismatch: actual ${actual.length}, expected ${expected.length}`);
  }
  for (let i = 0; i < actual.length; i++) {
    if (!Object.is(actual[i], expected[i])) {
      throw new Error(`${what}first difference at [${i}]: actual ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

/** Bitwise equality of two typed arrays' bytes (NaN payloads included). */
export function expectSameBytes(actual: ArrayBufferView, expected: ArrayBufferView, label = ''): void {
  const a = new Uint8Array(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = new Uint8Array(expected.buffer, expected.byteOffset, expected.byteLength);
  const what = label ? `${label}: ` : '';
  if (a.length !== e.length) throw new Error(`${what}byte length mismatch: actual ${a.length}, expected ${e.length}`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== e[i]) throw new Error(`${what}first differing byte at ${i}: actual ${a[i]}, expected ${e[i]}`);
  }
}

/** Asserts two selections hold the same elements, order ignored (top-k results tie-break freely). */
export function expectSameSet(actual: ArrayLike<number>, expected: ArrayLike<number>, label = ''): void {
  const what = label ? `${label}: ` : '';
  const a = Array.from(actual).sort((x, y) => x - y);
  const e = Array.from(expected).sort((x, y) => x - y);
  const missing = e.filter((v) => !a.includes(v));
  const extra = a.filter((v) => !e.includes(v));
  if (a.length !== e.length || missing.length > 0 || extra.length > 0) {
    throw new Error(
      `${what}sets differ (sizes ${a.length} vs ${e.length}); missing [${missing.slice(0, 10).join(', ')}], ` +
        `unexpected [${extra.slice(0, 10).join(', ')}]`,
    );
  }
}

/** Normalized mean squared error sum((a-e)^2) / sum(e^2), as ggml's backend tests use. */
export function nmse(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    num += d * d;
    den += expected[i] * expected[i];
  }
  return den === 0 ? num : num / den;
}

// ---------------------------------------------------------------------------------------------
// Errors

/**
 * Runs fn and returns the KvsiftError it throws; fails if it returns or throws anything else.
 *
 * @example
 * ```ts
 * expect(catchKvsift(() => Tensor.empty([-1])).code).toBe('ERR_INVALID_ARG');
 * ```
 */
export function catchKvsift(fn: () => unknown): KvsiftError {
  try {
    fn();
  } catch (e) {
    if (e instanceof KvsiftError) return e;
    throw new Error(`expected a KvsiftError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
  throw new Error('expected a KvsiftError, but nothing was thrown');
}

/** Like {@link catchKvsift} for a promise: returns the KvsiftError it rejects with. */
export async function rejectsKvsift(p: Promise<unknown> | (() => Promise<unknown>)): Promise<KvsiftError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (e instanceof KvsiftError) return e;
    throw new Error(`expected a KvsiftError rejection, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
  throw new Error('expected a KvsiftError rejection, but the promise resolved');
}

/** Asserts fn throws a KvsiftError with this code and, when given, exactly this message. */
export function expectKvsiftError(fn: () => unknown, code: string, message?: string | RegExp): KvsiftError {
  const e = catchKvsift(fn);
  expect(e.code).toBe(code);
  if (typeof message === 'string') expect(e.message).toBe(message);
  else if (message) expect(e.message).toMatch(message);
  return e;
}

// ---------------------------------------------------------------------------------------------
// Garbage collection

/** global.gc (vitest.config.ts passes --expose-gc), or V8's own through the flags API. */
export function getGc(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('node:v8').setFlagsFromString('--expose-gc');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('node:vm').runInNewContext('gc') as () => void;
}

/**
 * Collects garbage until `done()` holds or `rounds` passes. Native finalizers may run after the
 * GC pass, from the event loop, so each round yields to it.
 */
export async function collectUntil(done: () => boolean, rounds = 50): Promise<boolean> {
  const gc = getGc();
  for (let i = 0; i < rounds; i++) {
    if (done()) return true;
    gc();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, i < 10 ? 0 : 10));
  }
  return done();
}
