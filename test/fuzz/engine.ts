/**
 * The fuzz engine: values of every JS type, the mutations of a valid argument list, the harness
 * that runs a call and checks its contract, and the raw-binding fuzz runner. test/fuzz/specs.ts
 * holds the valid argument lists; test/fuzz.test.ts runs them. The contract under test:
 *
 *   - a call ends in a valid result (a live Tensor, a Compacted, a Stream, a number, ...) or in a
 *     thrown KvsiftError whose code is one docs/ERRORS.md lists, with a non-empty message (the
 *     raw binding: any thrown Error); never in a crash, a hang or a foreign TypeError;
 *   - a failed op leaves its input tensors' bytes unchanged, and a successful one changes only the
 *     tensor it documents as written in place (keyformer/h2o.accumulate's scores);
 *   - failed ops leak nothing: after each suite memoryStats('cpu') is back at its baseline;
 *   - hostile inputs (issue 11) change nothing of the above: options whose getters detach or
 *     shrink the data being read, typed arrays and arrays that lie about their length, and keys
 *     set on Object.prototype (which must not change any result: the call runs clean, then
 *     polluted, and both outcomes must be the same).
 *
 * Calls start from a valid argument list and get 0-3 mutations (an argument or an option replaced
 * by a value of another JS type, a near-miss number, a wrong or disposed tensor, a dropped or an
 * extra argument), and sometimes one hostile mutation, so both the validation paths and the
 * kernels run. The seed is printed on failure; replay with KVSIFT_TEST_SEED=<seed>.
 * KVSIFT_FUZZ_SCALE=<x> multiplies the iteration counts (e.g. 10 for a long soak run).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { types } from 'node:util';
import { expect } from 'vitest';
import { KvsiftError, Stream, Tensor, type DType } from '../../lib/index';
import { BASE_SEED, type Rng } from '../helpers';
import { describeChild, REPO_ROOT, runChild } from '../scripts/child';

const { isProxy } = types;

/** KVSIFT_FUZZ_TRACE=1 prints every call before it runs (to find a hang). */
const TRACE = process.env.KVSIFT_FUZZ_TRACE === '1';

export const SCALE = Number(process.env.KVSIFT_FUZZ_SCALE ?? '1') > 0 ? Number(process.env.KVSIFT_FUZZ_SCALE ?? '1') : 1;

/** The codes docs/ERRORS.md documents: the fuzzer accepts no other. */
export const KNOWN_CODES: ReadonlySet<string> = new Set(
  [...readFileSync(path.join(REPO_ROOT, 'docs', 'ERRORS.md'), 'utf8').matchAll(/^\| `(ERR_[A-Z_]+)`/gm)].map((m) => m[1]),
);

// ---------------------------------------------------------------------------------------------
// Values

/** Thrown by the fuzzer's own hostile getters: user code's exceptions may propagate as they are. */
export const USER_ERROR = new Error('thrown by a user getter');

// ---------------------------------------------------------------------------------------------
// Values

export type Args = unknown[];

export interface Ctx {
  /** Live CPU tensors of assorted shapes and dtypes; never disposed until afterAll. */
  pool: Tensor[];
  disposedTensor: Tensor;
  cpuStream: Stream;
  disposedStream: Stream;
}

export function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length - 1)];
}

/**
 * Values of every JS type. Shapes in here are invalid, tiny, or too large for any host: a valid
 * mid-sized shape would make a mutation allocate gigabytes (legitimately) and slow the run.
 */
export function chaosValues(ctx: Ctx): unknown[] {
  const hostile = new Proxy(
    {},
    {
      get() {
        throw USER_ERROR;
      },
    },
  );
  return [
    undefined, null, true, false,
    0, -0, 1, -1, 2, 3, 7, 0.5, -2.5, 1e-300, NaN, Infinity, -Infinity,
    2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), Number.MAX_VALUE, Number.MIN_VALUE,
    '', '0', '1', 'cpu', 'cuda', 'cuda:0', 'cuda:7', 'cuda:-1', 'cuda:01', 'CPU', 'f32', 'f16', 'i32', 'u8', 'bf16',
    'bhsd', 'bshd', 'max', 'avg', 'mean', 'none', 'position', 'score', 'gumbel', 'x'.repeat(64), '__proto__',
    0n, 1n, -1n, 7n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n, -(2n ** 70n), 2n ** 200n,
    Symbol('kvsift'), () => 1, function named() {}, class Foo {},
    {}, Object.create(null), { length: 2 }, { _buffer: {}, _dtypeCode: 0, shape: [1] },
    { _buffer: ctx.pool[0]._buffer, _dtypeCode: 9, shape: [1] }, { shape: [4], dtype: 'f32' }, hostile,
    new Date(0), /re/, new Map(), new Set([1]), new Error('not a tensor'), new WeakMap(),
    [], [1], [0], [-1], [1.5], [NaN], ['1'], [1n], [null], [undefined], [2 ** 31], [1, , 3], [[1]], [Symbol('s')],
    [2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1], [2 ** 20, 2 ** 20, 2 ** 20], new Array(9).fill(1), [1, 2, 3, 4], [2, 0, 5],
    new Float32Array(0), new Float32Array([1, NaN, -Infinity]), new Float64Array(3), new Int16Array(2),
    new Uint32Array(3), new Int32Array([1, 2]), new Int32Array([-1]), new Int32Array([2 ** 31 - 1]), new Uint16Array(4),
    new Uint8Array(5), new Uint8ClampedArray(2), new BigInt64Array(2), new ArrayBuffer(8), new DataView(new ArrayBuffer(4)),
    Buffer.from('abcd'), new Int32Array(new SharedArrayBuffer(8)), new Float32Array(new SharedArrayBuffer(12)),
    ctx.disposedTensor, ctx.disposedStream, ctx.cpuStream, Stream.default('cpu'),
    ...ctx.pool,
  ];
}

/** A number close to a valid one, or one of a few edge values. */
export function nearMiss(rng: Rng, v: number): unknown {
  return pick(rng, [v - 1, v + 1, 0, -v, v + 0.5, v * 2 ** 20, 2 ** 31 - 1, -1, NaN, String(v)]);
}

/** A plain options object the fuzzer made (never its hostile proxy). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !isProxy(v) && !Array.isArray(v) && !ArrayBuffer.isView(v) && Object.getPrototypeOf(v) === Object.prototype;
}

export const OPTION_KEYS = [
  'shape', 'dtype', 'device', 'stream', 'layout', 'window', 'capacity', 'kernel', 'kind', 'pooling', 'groupReduce',
  'seqLens', 'lse', 'lengths', 'order', 'sinks', 'recent', 'tau', 'seed', 'step', 'noise', 'maxNewTokens', 'tauInit',
  'tauEnd', 'resetPeak', '__proto__', 'constructor',
];

/** 0-3 random mutations of a valid argument list (none for about a third of the calls). */
export function mutate(rng: Rng, args: Args, ctx: Ctx, chaos: unknown[]): Args {
  const out = args.map((a) => (isPlainObject(a) ? { ...a } : a));
  const u = rng.float();
  const count = u < 0.35 ? 0 : u < 0.75 ? 1 : u < 0.92 ? 2 : 3;
  for (let m = 0; m < count; m++) {
    const kind = rng.int(0, 9);
    const i = out.length === 0 ? 0 : rng.int(0, out.length - 1);
    if (kind <= 2 || out.length === 0) {
      out[i] = pick(rng, chaos);
    } else if (kind <= 5 && isPlainObject(out[i])) {
      const o = out[i] as Record<string, unknown>;
      const keys = Object.keys(o);
      const key = keys.length > 0 && rng.float() < 0.7 ? pick(rng, keys) : pick(rng, OPTION_KEYS);
      // own data properties, defined rather than assigned: an inherited getter-only key (a hostile
      // prototype) must not make the harness itself throw
      const set = (v: unknown) => Object.defineProperty(o, key, { value: v, writable: true, configurable: true, enumerable: true });
      if (rng.float() < 0.15) delete o[key];
      else if (typeof o[key] === 'number' && rng.float() < 0.5) set(nearMiss(rng, o[key] as number));
      else set(pick(rng, chaos));
    } else if (kind === 6 && typeof out[i] === 'number') {
      out[i] = nearMiss(rng, out[i] as number);
    } else if (kind === 7 && out[i] instanceof Tensor) {
      out[i] = rng.float() < 0.2 ? ctx.disposedTensor : pick(rng, ctx.pool);
    } else if (kind === 8 && Array.isArray(out[i]) && (out[i] as unknown[]).length > 0) {
      const a = [...(out[i] as unknown[])];
      a[rng.int(0, a.length - 1)] = rng.float() < 0.5 ? pick(rng, chaos) : nearMiss(rng, 1);
      out[i] = a;
    } else if (kind === 8) {
      out.length = rng.int(0, out.length);
    } else {
      out.push(pick(rng, chaos));
    }
  }
  return out;
}



/** The dimensions of one generated attention problem. */
export interface Dims {
  B: number;
  Hkv: number;
  G: number;
  Hq: number;
  N: number;
  D: number;
  layout: 'bhsd' | 'bshd';
  dtype: 'f32' | 'f16' | 'bf16';
}

/** Normal data with the odd NaN, infinity and -0. */
export function data(rng: Rng, n: number): Float32Array {
  const a = rng.normalArray(n);
  if (rng.float() < 0.3) {
    for (let i = 0; i < n; i++) {
      const u = rng.float();
      if (u < 0.03) a[i] = NaN;
      else if (u < 0.05) a[i] = rng.float() < 0.5 ? Infinity : -Infinity;
      else if (u < 0.07) a[i] = -0;
    }
  }
  return a;
}

export class Fresh {
  readonly tensors: Tensor[] = [];
  f(rng: Rng, shape: number[], dtype: DType = 'f32'): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    let t: Tensor;
    if (dtype === 'i32') t = Tensor.from(rng.intArray(n, -3, 40), { shape, device: 'cpu' });
    else if (dtype === 'u8') t = Tensor.from(rng.bytes(n), { shape, device: 'cpu' });
    else t = Tensor.from(data(rng, n), { shape, dtype, device: 'cpu' });
    this.tensors.push(t);
    return t;
  }
  i32(values: Int32Array, shape: number[]): Tensor {
    const t = Tensor.from(values, { shape, device: 'cpu' });
    this.tensors.push(t);
    return t;
  }
  cache(rng: Rng, d: Dims, H: number, S: number, D = d.D, dtype: DType = d.dtype): Tensor {
    return this.f(rng, d.layout === 'bhsd' ? [d.B, H, S, D] : [d.B, S, H, D], dtype);
  }
  disposeAll(): void {
    for (const t of this.tensors) t.dispose();
    this.tensors.length = 0;
  }
}


export interface Spec {
  name: string;
  /** A valid argument list (tensors it makes go into `fresh`). */
  gen(rng: Rng, ctx: Ctx, fresh: Fresh): Args;
  call(args: Args): unknown;
  /** Index of the argument the function writes in place when it succeeds. */
  inPlace?: number;
  /** Checks a successful result; returns a reason when it is not valid. */
  check?(result: unknown, args: Args): string | undefined;
  /** False when two identical calls may give different results (uninitialized memory, live
   * counters): the prototype-pollution mutator then leaves the function alone. */
  deterministic?: boolean;
}


// ---------------------------------------------------------------------------------------------
// Hostile mutations (issue 11): memory read through objects user code can change during the call

export type HostileKind = 'detach' | 'resize' | 'lie';
export const HOSTILE_KINDS: readonly HostileKind[] = ['detach', 'resize', 'lie'];

/** A typed array the fuzzer made for this call alone (never a chaos value, a Buffer or shared memory). */
function ownedView(v: unknown, chaos: ReadonlySet<unknown>): v is ArrayBufferView {
  if (!types.isTypedArray(v) || chaos.has(v) || Buffer.isBuffer(v)) return false;
  const buf = (v as ArrayBufferView).buffer;
  return buf instanceof ArrayBuffer && buf.byteLength === (v as ArrayBufferView).byteLength && (v as ArrayBufferView).byteOffset === 0;
}

/** Where a typed array sits in an argument list: a top-level argument or an option's value. */
interface Slot {
  get(): unknown;
  set(v: unknown): void;
}
function viewSlots(args: Args, chaos: ReadonlySet<unknown>): Slot[] {
  const slots: Slot[] = [];
  args.forEach((a, i) => {
    if (ownedView(a, chaos)) slots.push({ get: () => args[i], set: (v) => (args[i] = v) });
    else if (isPlainObject(a)) {
      for (const k of Object.keys(a)) if (ownedView(a[k], chaos)) slots.push({ get: () => a[k], set: (v) => (a[k] = v) });
    }
  });
  return slots;
}

/** Turns one option of an options object into a getter that runs `effect` first. */
function hookOption(rng: Rng, args: Args, effect: () => void): boolean {
  const objects = args.filter(isPlainObject);
  if (objects.length === 0) return false;
  const o = pick(rng, objects);
  const keys = Object.keys(o);
  const key = keys.length > 0 ? pick(rng, keys) : pick(rng, OPTION_KEYS.filter((k) => k !== '__proto__'));
  const value = o[key];
  Object.defineProperty(o, key, {
    enumerable: true,
    configurable: true,
    get() {
      effect();
      return value;
    },
  });
  return true;
}

type ViewCtor = new (buffer: ArrayBufferLike, byteOffset?: number, length?: number) => ArrayBufferView;

/**
 * Applies one hostile mutation in place; returns its kind, or undefined when none applies:
 *   detach: an option getter transfers (detaches) the buffer of a typed array being passed;
 *   resize: that typed array moves to a resizable buffer, which an option getter shrinks;
 *   lie:    a typed array becomes a subclass whose `length` lies, or a number[] a Proxy that does.
 */
export function hostileMutation(rng: Rng, args: Args, chaos: ReadonlySet<unknown>): HostileKind | undefined {
  const kind = pick(rng, HOSTILE_KINDS);
  const slots = viewSlots(args, chaos);
  if (kind === 'detach' && slots.length > 0) {
    const view = pick(rng, slots).get() as ArrayBufferView;
    return hookOption(rng, args, () => {
      if (view.buffer.byteLength > 0) structuredClone(view.buffer, { transfer: [view.buffer as ArrayBuffer] });
    })
      ? kind
      : undefined;
  }
  if (kind === 'resize' && slots.length > 0) {
    const slot = pick(rng, slots);
    const view = slot.get() as ArrayBufferView & { length: number; BYTES_PER_ELEMENT: number };
    const Resizable = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer & { resize(n: number): void };
    const buf = new Resizable(view.byteLength, { maxByteLength: view.byteLength });
    new Uint8Array(buf).set(new Uint8Array(view.buffer as ArrayBuffer, view.byteOffset, view.byteLength));
    const tracking = new (view.constructor as ViewCtor)(buf); // length-tracking
    slot.set(tracking);
    const shrinkTo = rng.int(0, view.length) * view.BYTES_PER_ELEMENT;
    return hookOption(rng, args, () => buf.resize(shrinkTo)) ? kind : undefined;
  }
  if (kind === 'lie') {
    const claimed = pick(rng, [0, 1, 3, 1 << 20, -1, 2 ** 32, NaN, 2.5]);
    if (slots.length > 0 && rng.float() < 0.7) {
      const slot = pick(rng, slots);
      const view = slot.get() as ArrayBufferView;
      const Base = view.constructor as ViewCtor;
      const Liar = class extends (Base as unknown as new (...a: unknown[]) => object) {
        get length(): number {
          return claimed;
        }
      };
      slot.set(new (Liar as unknown as ViewCtor)(view.buffer, view.byteOffset, (view as unknown as { length: number }).length));
      return kind;
    }
    const arrays = args.map((a, i) => [a, i] as const).filter(([a]) => Array.isArray(a) && !isProxy(a) && !chaos.has(a));
    if (arrays.length === 0) return undefined;
    const [array, i] = pick(rng, arrays);
    args[i] = new Proxy(array as unknown[], { get: (t, k, r) => (k === 'length' ? claimed : Reflect.get(t, k, r)) });
    return kind;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Prototype pollution: the same call, clean and then with option names set on Object.prototype

/** Values that would change a result if an op read them from the prototype. */
const POLLUTION_VALUES: Record<string, unknown[]> = {
  order: ['score'], noise: ['none'], layout: ['bshd'], window: [1, 2], groupReduce: ['max', 'none'], capacity: [1, 3],
  kernel: [3, 5], pooling: ['avg'], kind: ['avg', 'max'], sinks: [1], recent: [2], tau: [0.25], seed: [99], step: [12],
  dtype: ['bf16', 'u8'], shape: [[1]], device: ['cuda:7'], resetPeak: [true], lengths: [[1]], seqLens: [[1]], lse: [1],
  maxNewTokens: [3], tauInit: [0.5], tauEnd: [7], stream: [1n], _buffer: [{}], _dtypeCode: [2],
};

/** Sets 1-3 polluting keys on Object.prototype; returns the undo. */
export function pollute(rng: Rng): { keys: string[]; undo: () => void } {
  const proto = Object.prototype as Record<string, unknown>;
  const names = Object.keys(POLLUTION_VALUES);
  const keys = [...new Set(Array.from({ length: rng.int(1, 3) }, () => pick(rng, names)))];
  // defineProperty, not assignment: a getter-only key that a hostile option object put on a
  // prototype chain must not make the harness itself throw.
  for (const k of keys) Object.defineProperty(proto, k, { value: pick(rng, POLLUTION_VALUES[k]), writable: true, configurable: true, enumerable: true });
  return {
    keys,
    undo: () => {
      for (const k of keys) delete proto[k];
    },
  };
}

/** What a call came to, as comparable text: its error, or its result's type, shape and bytes. */
export async function outcomeOf(run: () => unknown, keep: ReadonlySet<unknown>, pollution?: () => void): Promise<string> {
  let result: unknown;
  try {
    result = run();
  } catch (e) {
    return e === USER_ERROR ? 'user error' : e instanceof KvsiftError ? `${e.code}: ${e.message}` : `foreign: ${String(e)}`;
  } finally {
    // option reading is synchronous: an async result settles unpolluted
    pollution?.();
  }
  try {
    if (result instanceof Promise) result = await result;
  } catch (e) {
    return e instanceof KvsiftError ? `${e.code}: ${e.message}` : `foreign: ${String(e)}`;
  }
  // results are released here (never what the caller passed in)
  const one = (t: Tensor): string => {
    if (t.disposed) return 'disposed tensor';
    const raw = t.toRawArray();
    const text = `${t.dtype}[${t.shape.join(',')}]${t.device}:${Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64')}`;
    if (!keep.has(t)) t.dispose();
    return text;
  };
  if (result instanceof Tensor) return one(result);
  if (result instanceof Stream) {
    if (!keep.has(result)) result.dispose();
    return 'Stream';
  }
  if (result !== null && typeof result === 'object' && 'positions' in result) {
    const c = result as Record<string, Tensor>;
    return ['keys', 'values', 'positions'].map((k) => one(c[k])).join('|');
  }
  if (ArrayBuffer.isView(result)) return Buffer.from(result.buffer, result.byteOffset, result.byteLength).toString('base64');
  return `${typeof result}:${typeof result === 'object' ? JSON.stringify(result) : String(result)}`;
}

// ---------------------------------------------------------------------------------------------
// Calls the harness leaves out

/**
 * A mutation can turn a shape into a valid one of gigabytes ([2^31 - 1] f32 is 8 GiB): a legal
 * request, but one that would take the run's time and memory. Such calls are skipped; shapes no
 * host can hold (2^47 bytes and up) still go through, they must fail with ERR_OUT_OF_MEMORY.
 */
export function allocatesTooMuch(args: Args): boolean {
  let found = false;
  const visit = (v: unknown, depth: number) => {
    if (Array.isArray(v)) {
      if (v.length > 0 && v.every((d) => typeof d === 'number' && Number.isInteger(d) && d >= 0)) {
        const numel = (v as number[]).reduce((a, b) => a * b, 1);
        if (numel > 2 ** 18 && numel * 8 < 2 ** 47) found = true;
      }
    } else if (depth < 2 && isPlainObject(v)) {
      for (const k of Object.keys(v)) visit(v[k], depth + 1);
    }
  };
  for (const a of args) visit(a, 0);
  return found;
}


// ---------------------------------------------------------------------------------------------
// The harness

export interface Tally {
  ok: number;
  errors: number;
  codes: Record<string, number>;
}

/**
 * The real tensors among the arguments. A mutation may set an options object's __proto__ to a
 * tensor: `instanceof Tensor` holds for it, but it is no tensor (its own shape may not match the
 * buffer it inherits; the native byte-length check catches that when it reaches an op).
 */
export function collectTensors(args: Args): Tensor[] {
  const found = new Set<Tensor>();
  const visit = (v: unknown, depth: number) => {
    if (v instanceof Tensor && Object.getPrototypeOf(v) === Tensor.prototype) found.add(v);
    else if (depth < 2 && isPlainObject(v)) for (const k of Object.keys(v)) visit(v[k], depth + 1);
    // a Proxy array may claim any length (the lying-length mutation): not walked
    else if (depth < 2 && Array.isArray(v) && !isProxy(v)) for (const x of v) visit(x, depth + 1);
  };
  for (const a of args) visit(a, 0);
  return [...found].filter((t) => !t.disposed);
}

export function bytesOf(t: Tensor): Uint8Array {
  const raw = t.toRawArray();
  return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength).slice();
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Why a thrown value breaks the public contract, or undefined when it is fine. */
export function badThrow(e: unknown): string | undefined {
  if (e === USER_ERROR) return undefined;
  if (!(e instanceof KvsiftError)) {
    return `threw ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : `a non-Error ${typeof e}`} instead of a KvsiftError`;
  }
  if (!KNOWN_CODES.has(e.code)) return `threw KvsiftError with undocumented code ${String(e.code)}: ${e.message}`;
  if (typeof e.message !== 'string' || e.message.length === 0) return `threw KvsiftError ${e.code} with an empty message`;
  return undefined;
}

/**
 * Checks and releases a successful result (never a tensor the caller passed in, which the caller
 * owns); returns a reason when it is not valid. `readable` is false for a fromDevicePointer
 * wrapper, whose pointer may be anything the mutations made it.
 */
export async function settleResult(result: unknown, readable: boolean, keep: ReadonlySet<unknown>): Promise<string | undefined> {
  if (result instanceof Promise) {
    try {
      return await settleResult(await result, readable, keep);
    } catch (e) {
      return badThrow(e);
    }
  }
  if (result instanceof Tensor) {
    if (result.disposed) return 'returned a disposed tensor';
    if (!Object.isFrozen(result.shape) || !result.shape.every((d) => Number.isInteger(d) && d >= 0)) return `returned a tensor with shape ${String(result.shape)}`;
    if (readable && result.toRawArray().length !== result.numel) return 'returned a tensor whose data does not match its shape';
    if (!keep.has(result)) result.dispose();
    return undefined;
  }
  if (result instanceof Stream) {
    if (!keep.has(result)) result.dispose();
    return undefined;
  }
  if (result !== null && typeof result === 'object' && 'keys' in result && 'values' in result && 'positions' in result) {
    const c = result as { keys: unknown; values: unknown; positions: unknown };
    for (const part of ['keys', 'values', 'positions'] as const) {
      if (!(c[part] instanceof Tensor)) return `${part} is not a tensor`;
    }
    if ((c.positions as Tensor).dtype !== 'i32') return 'positions are not i32';
    for (const part of ['keys', 'values', 'positions'] as const) {
      const r = await settleResult(c[part], true, keep);
      if (r) return `${part}: ${r}`;
    }
    return undefined;
  }
  return undefined; // numbers, strings, bigints, arrays, plain objects, undefined
}

export interface FuzzOutcome {
  tally: Map<string, Tally>;
  failures: string[];
  skipped: number;
  /** How many calls each hostile mutation (and the pollution check) got. */
  hostile: Record<string, number>;
}

export async function fuzzPublic(rng: Rng, ctx: Ctx, specs: Spec[], iterations: number): Promise<FuzzOutcome> {
  const chaos = chaosValues(ctx);
  const chaosSet = new Set<unknown>(chaos);
  const hostileCounts: Record<string, number> = {};
  const tally = new Map<string, Tally>();
  const failures: string[] = [];
  let skipped = 0;
  for (let it = 0; it < iterations && failures.length < 5; it++) {
    const spec = specs[it % specs.length];
    const fresh = new Fresh();
    try {
      const args = mutate(rng, spec.gen(rng, ctx, fresh), ctx, chaos);
      if (allocatesTooMuch(args)) {
        skipped++;
        continue;
      }
      const where0 = `call #${it} ${spec.name}`;
      if (TRACE) process.stderr.write(`${where0} ${describeArgs(args)}\n`);
      const u = rng.float();
      if (u < 0.12 && spec.deterministic !== false && spec.inPlace === undefined) {
        // the same call clean, then polluted: the outcomes must be the same
        const shown = describeArgs(args);
        const keep = new Set<unknown>([...collectTensors(args), ...args, ...ctx.pool, ctx.cpuStream]);
        const clean = await outcomeOf(() => spec.call(args), keep);
        const { keys, undo } = pollute(rng);
        let polluted: string;
        try {
          polluted = await outcomeOf(() => spec.call(args), keep, undo);
        } finally {
          undo();
        }
        hostileCounts.pollute = (hostileCounts.pollute ?? 0) + 1;
        if (clean !== polluted) failures.push(`${where0}: Object.prototype.{${keys.join(', ')}} changed the outcome\n  clean:    ${clean.slice(0, 300)}\n  polluted: ${polluted.slice(0, 300)}\n  args: ${shown}`);
        continue;
      }
      if (u < 0.3) {
        const kind = hostileMutation(rng, args, chaosSet);
        if (kind) hostileCounts[kind] = (hostileCounts[kind] ?? 0) + 1;
      }
      const inputs = collectTensors(args);
      const before = inputs.map(bytesOf);
      const t = tally.get(spec.name) ?? { ok: 0, errors: 0, codes: {} };
      tally.set(spec.name, t);
      const where = `call #${it} ${spec.name}`;
      let result: unknown;
      let threw = false;
      try {
        result = spec.call(args);
        if (result instanceof Promise) result = await result;
      } catch (e) {
        threw = true;
        const why = badThrow(e);
        if (why) failures.push(`${where}: ${why}\n  args: ${describeArgs(args)}`);
        t.errors++;
        if (e instanceof KvsiftError) t.codes[e.code] = (t.codes[e.code] ?? 0) + 1;
      }
      // reading results and inputs back must work too: a tensor whose shape outgrew its buffer, say,
      // would fail here
      try {
        if (!threw) {
          t.ok++;
          const keep = new Set<unknown>([...inputs, ...args]);
          const why = spec.check?.(result, args) ?? (await settleResult(result, spec.name !== 'Tensor.fromDevicePointer', keep));
          if (why) failures.push(`${where}: ${why}\n  args: ${describeArgs(args)}`);
        }
        // inputs are untouched by a failed call, and by a successful one except the in-place one
        const written = !threw && spec.inPlace !== undefined ? args[spec.inPlace] : undefined;
        inputs.forEach((input, i) => {
          if (input === written || input.disposed) return;
          if (!sameBytes(bytesOf(input), before[i])) {
            failures.push(`${where}: ${threw ? 'failed' : 'succeeded'} and changed its input ${input.toString()}\n  args: ${describeArgs(args)}`);
          }
        });
      } catch (e) {
        failures.push(`${where}: ${threw ? 'failed' : 'succeeded'}, then reading back its result or inputs threw ${String(e)}\n  args: ${describeArgs(args)}`);
      }
    } finally {
      fresh.disposeAll();
    }
  }
  return { tally, failures, skipped, hostile: hostileCounts };
}

export function describeArgs(args: Args): string {
  const one = (v: unknown, depth = 0): string => {
    if (isProxy(v)) return 'a Proxy';
    if (v instanceof Tensor) return v.toString();
    if (v instanceof Stream) return `Stream(${v.device}${v.disposed ? ', disposed' : ''})`;
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'symbol' || typeof v === 'function') return String(v).slice(0, 40);
    if (typeof v === 'string') return JSON.stringify(v.length > 20 ? `${v.slice(0, 20)}…` : v);
    if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
    if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
    if (Array.isArray(v)) return depth > 1 ? '[…]' : `[${Array.prototype.slice.call(v, 0, 8).map((x) => one(x, depth + 1)).join(', ')}${v.length > 8 ? ', …' : ''}]`;
    if (v !== null && typeof v === 'object') {
      if (!isPlainObject(v)) return `a ${(v as object).constructor?.name ?? 'null-prototype object'}`;
      return depth > 1 ? '{…}' : `{ ${Object.keys(v).map((k) => `${k}: ${one(v[k], depth + 1)}`).join(', ')} }`;
    }
    return String(v);
  };
  return `(${args.map((a) => one(a)).join(', ')})`;
}


// ---------------------------------------------------------------------------------------------
// The raw binding, in a child process (test/scripts/fuzz-native.ts), so a crash reports the seed
// and the exact call that crashed instead of killing the vitest worker.

/**
 * Errors the raw binding may raise that are not KvsiftErrors: V8's and node-addon-api's own
 * receiver and type checks (a DeviceBuffer method called on another object), and BUG-8 / BUG-9.
 */
export const FOREIGN_ERRORS_ALLOWED = [
  /: TypeError: Illegal invocation$/,
  /^DeviceBuffer\.accessors: Error: Invalid argument$/,
  /: TypeError: Class constructors cannot be invoked without 'new'$/,
  // BUG-8 (Object.create(DeviceBuffer.prototype) as a buffer) and BUG-9 (SharedArrayBuffer data)
  /: Error: Invalid argument$/,
];

export interface NativeSummary {
  calls: number;
  ok: number;
  threw: number;
  failures: string[];
  perFunction: Record<string, { ok: number; threw: number }>;
  foreignErrors: Record<string, number>;
}

/** Runs test/scripts/fuzz-native.ts and checks its report; `env` picks the addon and preloads. */
export function runNativeFuzz(seed: number, iterations: number, env: Record<string, string> = {}): NativeSummary {
  const lastCall = path.join(tmpdir(), `kvsift-fuzz-native-${process.pid}-${seed}.txt`);
  const r = runChild('fuzz-native.ts', { args: ['--seed', String(seed), '--iterations', String(iterations), '--last-call', lastCall], env, timeoutMs: 300_000 });
  const crashedAt = existsSync(lastCall) ? readFileSync(lastCall, 'utf8').trim() : '(unknown)';
  rmSync(lastCall, { force: true });
  const replay =
    `last call started: ${crashedAt}\n` +
    `replay: KVSIFT_TEST_SEED=${BASE_SEED} npx vitest run test/fuzz.test.ts, or ` +
    `node -r ./test/scripts/register-ts.cjs test/scripts/fuzz-native.ts --seed ${seed} --iterations ${iterations}`;
  expect(r.signal, `${describeChild(r)}\n${replay}`).toBeNull();
  expect(r.status, `${describeChild(r)}\n${replay}`).toBe(0);
  const summary = r.json as NativeSummary;
  expect(summary?.failures, `${describeChild(r)}\n${replay}`).toEqual([]);
  expect(summary.calls).toBe(iterations);
  const unexpected = Object.keys(summary.foreignErrors).filter((k) => !FOREIGN_ERRORS_ALLOWED.some((re) => re.test(k)));
  expect(unexpected, `errors that are neither KvsiftErrors nor known (${replay})`).toEqual([]);
  return summary;
}


// ---------------------------------------------------------------------------------------------
// Under AddressSanitizer: the same fuzzer against a sanitizer build, so reads and writes out of
// bounds or after free are reported even where they would not crash. Build it with
//   KVSIFT_SANITIZE=ON KVSIFT_CUDA=OFF npx cmake-js compile --out build-asan
// (or point KVSIFT_ASAN_ADDON at one); the runtime is preloaded into the child only.

export const ASAN_ADDON = process.env.KVSIFT_ASAN_ADDON ?? path.join(REPO_ROOT, 'build-asan', 'Release', 'kvsift.node');

export function sanitizerPreload(): string {
  if (process.env.KVSIFT_ASAN_PRELOAD) return process.env.KVSIFT_ASAN_PRELOAD;
  try {
    const lib = (name: string) => execFileSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' }).trim();
    return [lib('libasan.so'), lib('libubsan.so')].filter((p) => p.startsWith('/')).join(':');
  } catch {
    return '';
  }
}

export const asanReason = !existsSync(ASAN_ADDON) ? `no sanitizer build at ${path.relative(REPO_ROOT, ASAN_ADDON)}` : sanitizerPreload() === '' ? 'no libasan found (set KVSIFT_ASAN_PRELOAD)' : '';
export const asanEnv = (): Record<string, string> => ({
  KVSIFT_ADDON_PATH: ASAN_ADDON,
  LD_PRELOAD: sanitizerPreload(),
  // Node itself leaks by design at exit, and huge allocations must fail rather than abort
  ASAN_OPTIONS: 'detect_leaks=0:allocator_may_return_null=1:abort_on_error=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
});

