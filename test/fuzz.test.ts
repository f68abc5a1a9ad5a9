/**
 * Fuzzing: thousands of seeded random argument combinations thrown at every public function of
 * lib/index.ts and at every function of the raw native binding. The contract under test:
 *
 *   - a call ends in a valid result (a live Tensor, a Compacted, a Stream, a number, ...) or in a
 *     thrown KvsiftError whose code is one docs/ERRORS.md lists, with a non-empty message (the
 *     raw binding: any thrown Error); never in a crash, a hang or a foreign TypeError;
 *   - a failed op leaves its input tensors' bytes unchanged, and a successful one changes only the
 *     tensor it documents as written in place (keyformer/h2o.accumulate's scores);
 *   - failed ops leak nothing: after each suite memoryStats('cpu') is back at its baseline.
 *
 * Calls start from a valid argument list for the function and get 0-3 mutations (an argument or
 * an option replaced by a value of another JS type, a near-miss number, a wrong or disposed
 * tensor, a dropped or an extra argument), so both the validation paths and the kernels run.
 * The seed is printed on failure; replay with KVSIFT_TEST_SEED=<seed>. KVSIFT_FUZZ_SCALE=<x>
 * multiplies the iteration counts (e.g. 10 for a long soak run).
 *
 * The raw-binding fuzz runs in a child process (test/scripts/fuzz-native.ts), so a crash reports
 * the seed and the exact call that crashed instead of killing the vitest worker. The same script
 * runs under AddressSanitizer when a sanitizer build exists ('fuzz under AddressSanitizer').
 *
 * Inputs that hit a known, reported bug are steered around (knownBug()); each such bug is pinned
 * by an `it.fails` in 'known bugs', which starts failing once the bug is fixed.
 *
 * Tensor.fromDevicePointer is fuzzed on its validation paths only: a tensor wrapping a bogus
 * pointer is never read (that would be a real segfault, by design: kvsift cannot check a foreign
 * pointer).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { types } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cudaDeviceCount,
  defaultDevice,
  devices,
  dtypeBytes,
  evict,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  bf16ToF32,
  gather,
  h2o,
  keyformer,
  KvsiftError,
  l2,
  memoryStats,
  snapkv,
  Stream,
  streaming,
  synchronize,
  Tensor,
  topk,
  tova,
  type DType,
} from '../lib/index';
import { native } from '../lib/native';
import { BASE_SEED, catchKvsift, testRng, type Rng } from './helpers';
import { describeChild, REPO_ROOT, runChild } from './scripts/child';

const { isProxy } = types;

const SCALE = Number(process.env.KVSIFT_FUZZ_SCALE ?? '1') > 0 ? Number(process.env.KVSIFT_FUZZ_SCALE ?? '1') : 1;

/** The codes docs/ERRORS.md documents: the fuzzer accepts no other. */
const KNOWN_CODES: ReadonlySet<string> = new Set(
  [...readFileSync(path.join(REPO_ROOT, 'docs', 'ERRORS.md'), 'utf8').matchAll(/^\| `(ERR_[A-Z_]+)`/gm)].map((m) => m[1]),
);

/** Thrown by the fuzzer's own hostile getters: user code's exceptions may propagate as they are. */
const USER_ERROR = new Error('thrown by a user getter');

// ---------------------------------------------------------------------------------------------
// Values

type Args = unknown[];

interface Ctx {
  /** Live CPU tensors of assorted shapes and dtypes; never disposed until afterAll. */
  pool: Tensor[];
  disposedTensor: Tensor;
  cpuStream: Stream;
  disposedStream: Stream;
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length - 1)];
}

/**
 * Values of every JS type. Shapes in here are invalid, tiny, or too large for any host: a valid
 * mid-sized shape would make a mutation allocate gigabytes (legitimately) and slow the run.
 */
function chaosValues(ctx: Ctx): unknown[] {
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
function nearMiss(rng: Rng, v: number): unknown {
  return pick(rng, [v - 1, v + 1, 0, -v, v + 0.5, v * 2 ** 20, 2 ** 31 - 1, -1, NaN, String(v)]);
}

/** A plain options object the fuzzer made (never its hostile proxy). */
function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !isProxy(v) && !Array.isArray(v) && !ArrayBuffer.isView(v) && Object.getPrototypeOf(v) === Object.prototype;
}

const OPTION_KEYS = [
  'shape', 'dtype', 'device', 'stream', 'layout', 'window', 'capacity', 'kernel', 'kind', 'pooling', 'groupReduce',
  'seqLens', 'lse', 'lengths', 'order', 'sinks', 'recent', 'tau', 'seed', 'step', 'noise', 'maxNewTokens', 'tauInit',
  'tauEnd', 'resetPeak', '__proto__', 'constructor',
];

/** 0-3 random mutations of a valid argument list (none for about a third of the calls). */
function mutate(rng: Rng, args: Args, ctx: Ctx, chaos: unknown[]): Args {
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
      if (rng.float() < 0.15) delete o[key];
      else if (typeof o[key] === 'number' && rng.float() < 0.5) o[key] = nearMiss(rng, o[key] as number);
      else o[key] = pick(rng, chaos);
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

// ---------------------------------------------------------------------------------------------
// Valid argument lists

interface Dims {
  B: number;
  Hkv: number;
  G: number;
  Hq: number;
  N: number;
  D: number;
  layout: 'bhsd' | 'bshd';
  dtype: 'f32' | 'f16' | 'bf16';
}

function randomDims(rng: Rng): Dims {
  const Hkv = rng.int(1, 3);
  const G = rng.int(1, 3);
  return { B: rng.int(1, 2), Hkv, G, Hq: Hkv * G, N: rng.int(1, 24), D: rng.int(1, 9), layout: pick(rng, ['bhsd', 'bshd'] as const), dtype: pick(rng, ['f32', 'f16', 'bf16'] as const) };
}

/** Normal data with the odd NaN, infinity and -0. */
function data(rng: Rng, n: number): Float32Array {
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

class Fresh {
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

function seqLens(rng: Rng, B: number, lo: number, hi: number): Int32Array | number[] | undefined {
  if (lo > hi || rng.float() < 0.6) return undefined;
  const a = rng.intArray(B, lo, hi);
  return rng.float() < 0.5 ? a : Array.from(a);
}

function maybeStream(rng: Rng, ctx: Ctx): { stream?: Stream } {
  return rng.float() < 0.15 ? { stream: ctx.cpuStream } : {};
}

/** Drops undefined keys so a generated option reads as "absent". */
function opts<T extends Record<string, unknown>>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

interface Spec {
  name: string;
  /** A valid argument list (tensors it makes go into `fresh`). */
  gen(rng: Rng, ctx: Ctx, fresh: Fresh): Args;
  call(args: Args): unknown;
  /** Index of the argument the function writes in place when it succeeds. */
  inPlace?: number;
  /** Checks a successful result; returns a reason when it is not valid. */
  check?(result: unknown, args: Args): string | undefined;
}

const anyf = (f: unknown) => f as (...a: unknown[]) => unknown;

const SPECS: Spec[] = [
  // ---- tensors
  {
    name: 'Tensor.from',
    gen(rng) {
      const shape = pick(rng, [[], [0], [3], [2, 3], [1, 2, 2], [2, 0, 4]]);
      const n = shape.reduce((a, b) => a * b, 1);
      const kind = rng.int(0, 5);
      if (kind === 0) return [data(rng, n), opts({ shape, dtype: pick(rng, ['f32', 'f16', 'bf16', undefined]), device: 'cpu' })];
      if (kind === 1) return [rng.intArray(n, -5, 5), opts({ shape, device: 'cpu' })];
      if (kind === 2) return [rng.bytes(n), opts({ shape, device: 'cpu' })];
      if (kind === 3) return [rng.bits16(n), opts({ shape, dtype: pick(rng, ['f16', 'bf16']), device: 'cpu' })];
      return [Array.from(rng.intArray(n, 0, 9)), opts({ shape, dtype: pick(rng, ['f32', 'f16', 'bf16', 'i32', 'u8', undefined]), device: 'cpu' })];
    },
    call: (a) => anyf(Tensor.from)(...a),
  },
  {
    name: 'Tensor.empty',
    gen: (rng) => [pick(rng, [[], [0], [5], [2, 3], [1, 1, 1, 1, 1, 1, 1, 1]]), pick(rng, ['f32', 'f16', 'bf16', 'i32', 'u8']), 'cpu'],
    call: (a) => anyf(Tensor.empty)(...a),
  },
  {
    name: 'Tensor.zeros',
    gen: (rng, ctx) => [pick(rng, [[], [0], [5], [2, 3]]), pick(rng, ['f32', 'f16', 'bf16', 'i32', 'u8']), 'cpu', rng.float() < 0.3 ? { stream: ctx.cpuStream } : undefined],
    call: (a) => anyf(Tensor.zeros)(...a),
    check: (r) => (r instanceof Tensor && Array.from(r.toRawArray()).some((v) => v !== 0) ? 'Tensor.zeros returned non-zero data' : undefined),
  },
  {
    name: 'Tensor.fromDevicePointer',
    gen(rng, ctx) {
      const src = pick(rng, ctx.pool);
      const dtype = pick(rng, ['f32', 'f16', 'bf16', 'i32', 'u8'] as const);
      const fit = Math.floor(src.byteLength / dtypeBytes(dtype));
      return [src.devicePointer, { shape: [rng.int(0, fit)], dtype, device: 'cpu' }];
    },
    call: (a) => anyf(Tensor.fromDevicePointer)(...a),
  },
  // ---- tensor methods (on a fresh tensor: dispose must not hit the pool)
  ...(['toArray', 'toRawArray', 'toArrayAsync', 'to', 'toString', 'dispose'] as const).map(
    (method): Spec => ({
      name: `tensor.${method}`,
      gen(rng, ctx, fresh) {
        const t = rng.float() < 0.1 ? ctx.disposedTensor : fresh.f(rng, pick(rng, [[3], [2, 2], [0], []]), pick(rng, ['f32', 'f16', 'bf16', 'i32', 'u8']));
        const arg = method === 'to' ? 'cpu' : rng.float() < 0.3 ? { stream: ctx.cpuStream } : undefined;
        return [t, arg];
      },
      call: (a) => {
        const t = a[0] as Record<string, unknown>;
        if (!(t instanceof Tensor) || Object.getPrototypeOf(t) !== Tensor.prototype) return 'not a tensor';
        if (method === 'dispose' && ctx.pool.includes(t)) return 'kept'; // the pool outlives the run
        return (t[method] as (...x: unknown[]) => unknown).call(t, ...a.slice(1));
      },
    }),
  ),
  {
    name: 'tensor.devicePointer',
    gen: (rng, ctx, fresh) => [rng.float() < 0.2 ? ctx.disposedTensor : fresh.f(rng, [2])],
    call: (a) => (a[0] instanceof Tensor ? a[0].devicePointer : 'not a tensor'),
  },
  // ---- devices, memory, streams, halves
  { name: 'memoryStats', gen: (rng) => ['cpu', rng.float() < 0.5 ? { resetPeak: rng.float() < 0.5 } : undefined], call: (a) => anyf(memoryStats)(...a) },
  { name: 'devices', gen: () => [], call: (a) => anyf(devices)(...a) },
  { name: 'defaultDevice', gen: () => [], call: (a) => anyf(defaultDevice)(...a) },
  { name: 'cudaDeviceCount', gen: () => [], call: (a) => anyf(cudaDeviceCount)(...a) },
  { name: 'dtypeBytes', gen: (rng) => [pick(rng, ['f32', 'f16', 'bf16', 'i32', 'u8'])], call: (a) => anyf(dtypeBytes)(...a), check: (r) => (typeof r === 'number' && r > 0 ? undefined : `dtypeBytes returned ${String(r)}`) },
  { name: 'synchronize', gen: () => ['cpu'], call: (a) => anyf(synchronize)(...a) },
  { name: 'Stream.create', gen: () => ['cpu'], call: (a) => anyf(Stream.create)(...a) },
  { name: 'Stream.default', gen: () => ['cpu'], call: (a) => anyf(Stream.default)(...a) },
  // wrapped handles on the CPU only: a CPU stream's handle is never used, a CUDA one would be
  { name: 'Stream.fromHandle', gen: (rng) => [BigInt(rng.u32()) << 16n, 'cpu'], call: (a) => anyf(Stream.fromHandle)(...a) },
  ...(['synchronize', 'dispose', 'handle'] as const).map(
    (method): Spec => ({
      name: `stream.${method}`,
      gen: (rng, ctx) => [rng.float() < 0.2 ? ctx.disposedStream : rng.float() < 0.5 ? Stream.create('cpu') : Stream.default('cpu')],
      call: (a) => {
        const s = a[0];
        if (!(s instanceof Stream)) return 'not a stream';
        if (method === 'dispose' && s === ctx.cpuStream) return 'kept';
        if (method === 'handle') return s.handle;
        return s[method]();
      },
    }),
  ),
  ...([
    ['f32ToF16', f32ToF16],
    ['f32ToBf16', f32ToBf16],
    ['f16ToF32', f16ToF32],
    ['bf16ToF32', bf16ToF32],
  ] as const).map(
    ([name, fn]): Spec => ({
      name,
      gen: (rng) => [name.startsWith('f32') ? rng.normal() * 1000 : rng.int(0, 0xffff)],
      call: (a) => anyf(fn)(...a),
      check: (r) => (typeof r === 'number' ? undefined : `${name} returned ${typeof r}`),
    }),
  ),
  // ---- selection
  {
    name: 'topk',
    gen(rng, ctx, fresh) {
      const shape = pick(rng, [[rng.int(1, 30)], [rng.int(1, 3), rng.int(1, 30)], [rng.int(1, 2), rng.int(1, 3), rng.int(1, 30)]]);
      const M = shape[shape.length - 1];
      const k = rng.int(1, M);
      const batch = shape.length === 1 ? 1 : shape[0];
      return [fresh.f(rng, shape), k, opts({ order: pick(rng, ['position', 'score', undefined]), lengths: seqLens(rng, batch, k, M), ...maybeStream(rng, ctx) })];
    },
    call: (a) => anyf(topk)(...a),
  },
  {
    name: 'gather',
    gen(rng, ctx, fresh) {
      const d = randomDims(rng);
      const cache = fresh.cache(rng, d, d.Hkv, d.N, d.D, pick(rng, ['f32', 'f16', 'bf16', 'i32', 'u8']));
      const Hp = pick(rng, [d.Hkv, 1, d.Hq]);
      const K = rng.int(0, 6);
      const bad = rng.float() < 0.1;
      const pos = fresh.i32(rng.intArray(d.B * Hp * K, bad ? -2 : 0, bad ? d.N + 2 : d.N - 1), [d.B, Hp, K]);
      return [cache, pos, opts({ layout: rng.float() < 0.5 ? d.layout : d.layout === 'bhsd' ? undefined : d.layout, ...maybeStream(rng, ctx) })];
    },
    call: (a) => anyf(gather)(...a),
  },
  {
    name: 'evict',
    gen(rng, ctx, fresh) {
      const d = randomDims(rng);
      const keys = fresh.cache(rng, d, d.Hkv, d.N);
      const values = fresh.cache(rng, d, d.Hkv, d.N, rng.int(1, 9), pick(rng, ['f32', 'f16', 'bf16', 'i32', 'u8']));
      const K = rng.int(0, 6);
      const form = rng.int(0, 2);
      const shape = form === 0 ? [K] : form === 1 ? [d.B, 1, K] : [d.B, d.Hkv, K];
      const n = shape.reduce((x, y) => x * y, 1);
      const pos = fresh.i32(rng.intArray(n, 0, d.N - 1), shape);
      return [keys, values, pos, opts({ layout: d.layout, ...maybeStream(rng, ctx) })];
    },
    call: (a) => anyf(evict)(...a),
  },
  // ---- SnapKV
  {
    name: 'snapkv.scores',
    gen(rng, ctx, fresh) {
      const d = randomDims(rng);
      const W = rng.int(1, d.N);
      const groupReduce = pick(rng, ['mean', 'sum', 'max', 'none', undefined]);
      const lse = rng.float() < 0.2 ? fresh.f(rng, [d.B, d.Hq, W]) : undefined;
      return [fresh.cache(rng, d, d.Hq, W), fresh.cache(rng, d, d.Hkv, d.N), opts({ window: W, groupReduce, layout: d.layout, seqLens: seqLens(rng, d.B, W, d.N), lse, ...maybeStream(rng, ctx) })];
    },
    call: (a) => anyf(snapkv.scores)(...a),
  },
  {
    name: 'snapkv.pool',
    gen(rng, ctx, fresh) {
      const shape = pick(rng, [[rng.int(1, 30)], [rng.int(1, 2), rng.int(1, 3), rng.int(1, 30)]]);
      const M = shape[shape.length - 1];
      return [fresh.f(rng, shape), opts({ kernel: pick(rng, [1, 3, 5, 7, 17, 33]), kind: pick(rng, ['avg', 'max']), lengths: seqLens(rng, shape.length === 1 ? 1 : shape[0], 0, M), ...maybeStream(rng, ctx) })];
    },
    call: (a) => anyf(snapkv.pool)(...a),
  },
  {
    name: 'snapkv.compress',
    gen(rng, ctx, fresh) {
      const d = randomDims(rng);
      const W = rng.int(1, d.N);
      const capacity = rng.int(W, d.N + 2);
      const lens = rng.float() < 0.3 ? Array.from(rng.intArray(d.B, Math.min(capacity, d.N), d.N)) : undefined;
      return [
        fresh.cache(rng, d, d.Hq, W),
        fresh.cache(rng, d, d.Hkv, d.N),
        fresh.cache(rng, d, d.Hkv, d.N, rng.int(1, 9)),
        opts({ window: W, capacity, kernel: pick(rng, [1, 3, 7, undefined]), pooling: pick(rng, ['avg', 'max', undefined]), groupReduce: pick(rng, ['mean', 'sum', 'max', 'none', undefined]), layout: d.layout, seqLens: lens, ...maybeStream(rng, ctx) }),
      ];
    },
    call: (a) => anyf(snapkv.compress)(...a),
  },
  // ---- L2
  {
    name: 'l2.norms',
    gen(rng, ctx, fresh) {
      const d = randomDims(rng);
      return [fresh.cache(rng, d, d.Hkv, d.N), opts({ layout: d.layout, seqLens: seqLens(rng, d.B, 0, d.N), ...maybeStream(rng, ctx) })];
    },
    call: (a) => anyf(l2.norms)(...a),
  },
  {
    name: 'l2.compress',
    gen(rng, ctx, fresh) {
      const d = randomDims(rng);
      const capacity = rng.int(1, d.N + 2);
      const sinks = rng.int(0, 2);
      const recent = rng.int(0, 2);
      const lens = rng.float() < 0.3 ? rng.intArray(d.B, Math.min(capacity, d.N), d.N) : undefined;
      return [fresh.cache(rng, d, d.Hkv, d.N), fresh.cache(rng, d, d.Hkv, d.N, rng.int(1, 9)), opts({ capacity, sinks, recent, layout: d.layout, seqLens: lens, ...maybeStream(rng, ctx) })];
    },
    call: (a) => anyf(l2.compress)(...a),
  },
  // ---- Keyformer, H2O, TOVA, StreamingLLM
  {
    name: 'keyformer.accumulate',
    gen(rng, ctx, fresh) {
      const d = randomDims(rng);
      const T = rng.int(1, Math.min(d.N, 4));
      const seed = rng.float() < 0.3 ? BigInt(rng.u32()) << 20n : rng.u32();
      return [
        fresh.cache(rng, d, d.Hq, T),
        fresh.cache(rng, d, d.Hkv, d.N),
        fresh.f(rng, [d.B, d.Hkv, d.N]),
        opts({ tau: pick(rng, [0.5, 1, 1.7, 2]), seed, step: rng.int(0, 100), noise: pick(rng, ['gumbel', 'none', undefined]), layout: d.layout, seqLens: seqLens(rng, d.B, T, d.N), ...maybeStream(rng, ctx) }),
      ];
    },
    call: (a) => anyf(keyformer.accumulate)(...a),
    inPlace: 2,
    check: (r, a) => (r === a[2] ? undefined : 'accumulate did not return its scores tensor'),
  },
  {
    name: 'keyformer.gumbel',
    gen: (rng, ctx) => [[rng.int(0, 2), rng.int(1, 3), rng.int(1, 2), rng.int(0, 9)], opts({ seed: rng.u32(), step: rng.int(0, 9), device: 'cpu', ...maybeStream(rng, ctx) })],
    call: (a) => anyf(keyformer.gumbel)(...a),
  },
  {
    name: 'keyformer.tau',
    gen: (rng) => [rng.int(0, 100), opts({ maxNewTokens: rng.int(1, 100), tauInit: pick(rng, [undefined, 0.5, 1]), tauEnd: pick(rng, [undefined, 2, 3]) })],
    call: (a) => anyf(keyformer.tau)(...a),
    check: (r) => (typeof r === 'number' && Number.isFinite(r) ? undefined : `tau returned ${String(r)}`),
  },
  ...([
    ['keyformer.select', keyformer.select],
    ['h2o.select', h2o.select],
  ] as const).map(
    ([name, fn]): Spec => ({
      name,
      gen(rng, ctx, fresh) {
        const B = rng.int(1, 2);
        const N = rng.int(1, 24);
        const capacity = rng.int(1, N);
        return [fresh.f(rng, [B, rng.int(1, 3), N]), opts({ capacity, recent: rng.int(0, capacity), seqLens: seqLens(rng, B, capacity, N), ...maybeStream(rng, ctx) })];
      },
      call: (a) => anyf(fn)(...a),
    }),
  ),
  {
    name: 'h2o.accumulate',
    gen(rng, ctx, fresh) {
      const d = randomDims(rng);
      const T = rng.int(1, Math.min(d.N, 4));
      return [fresh.cache(rng, d, d.Hq, T), fresh.cache(rng, d, d.Hkv, d.N), fresh.f(rng, [d.B, d.Hkv, d.N]), opts({ layout: d.layout, seqLens: seqLens(rng, d.B, T, d.N), ...maybeStream(rng, ctx) })];
    },
    call: (a) => anyf(h2o.accumulate)(...a),
    inPlace: 2,
  },
  {
    name: 'tova.select',
    gen(rng, ctx, fresh) {
      const d = randomDims(rng);
      const capacity = rng.int(1, d.N);
      return [fresh.cache(rng, d, d.Hq, 1), fresh.cache(rng, d, d.Hkv, d.N), opts({ capacity, layout: d.layout, seqLens: seqLens(rng, d.B, capacity, d.N), ...maybeStream(rng, ctx) })];
    },
    call: (a) => anyf(tova.select)(...a),
  },
  {
    name: 'streaming.select',
    gen: (rng) => [rng.int(0, 40), opts({ sinks: rng.int(0, 6), recent: rng.int(0, 30), device: 'cpu' })],
    call: (a) => anyf(streaming.select)(...a),
  },
];

// ---------------------------------------------------------------------------------------------
// Known bugs the generic fuzzer steers around, so it keeps finding new ones. Each is pinned by an
// `it.fails` in 'known bugs' below, whose comment gives the fix. When one is fixed its pinned test
// starts failing: delete its entry here and turn that test into a plain `it`.

const HALF_FNS = new Set(['f32ToF16', 'f32ToBf16', 'f16ToF32', 'bf16ToF32']);

function knownBug(name: string, args: Args): string | undefined {
  try {
    // BUG-3: streaming.select builds its positions in a JS array: a large valid n with large
    // sinks + recent kills the process with a V8 fatal error.
    if (name === 'streaming.select') {
      const [n, o] = args as [unknown, Record<string, unknown> | undefined];
      const big = (v: unknown) => typeof v === 'number' && v > 1e6;
      if (big(n) && o && typeof o === 'object' && (big(o.sinks) || big(o.recent))) return 'BUG-3';
    }
    // BUG-9: typed arrays over a SharedArrayBuffer fail in the binding with a plain Error.
    if (name === 'Tensor.from' && ArrayBuffer.isView(args[0]) && args[0].buffer instanceof SharedArrayBuffer) return 'BUG-9';
    // BUG-5: dtypeBytes of a non-dtype returns undefined.
    if (name === 'dtypeBytes' && !['f32', 'f16', 'bf16', 'i32', 'u8'].includes(args[0] as string)) return 'BUG-5';
    // BUG-6: the f16/bf16 conversions take any value: TypeError for a bigint or a symbol.
    if (HALF_FNS.has(name) && typeof args[0] !== 'number') return 'BUG-6';
    // BUG-7: keyformer.tau extrapolates past maxNewTokens without bound, and multiplies before it
    // divides: Infinity for finite, valid arguments.
    if (name === 'keyformer.tau' && typeof args[0] === 'number' && isPlainObject(args[1])) {
      const o = args[1];
      const [ti, te, mn] = [o.tauInit ?? 1, o.tauEnd ?? 2, o.maxNewTokens];
      if (typeof ti === 'number' && typeof te === 'number' && typeof mn === 'number') {
        const now = ti + (args[0] * (te - ti)) / mn;
        if (!Number.isFinite(now) || args[0] / mn > 1e300) return 'BUG-7';
      }
    }
  } catch {
    // a hostile options object: the call itself will meet it
  }
  return undefined;
}

/**
 * A mutation can turn a shape into a valid one of gigabytes ([2^31 - 1] f32 is 8 GiB): a legal
 * request, but one that would take the run's time and memory. Such calls are skipped; shapes no
 * host can hold (2^47 bytes and up) still go through, they must fail with ERR_OUT_OF_MEMORY.
 */
function allocatesTooMuch(args: Args): boolean {
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

interface Tally {
  ok: number;
  errors: number;
  codes: Record<string, number>;
}

/**
 * The real tensors among the arguments. A mutation may set an options object's __proto__ to a
 * tensor: `instanceof Tensor` holds for it, but it is no tensor (its own shape may not match the
 * buffer it inherits; the native byte-length check catches that when it reaches an op).
 */
function collectTensors(args: Args): Tensor[] {
  const found = new Set<Tensor>();
  const visit = (v: unknown, depth: number) => {
    if (v instanceof Tensor && Object.getPrototypeOf(v) === Tensor.prototype) found.add(v);
    else if (depth < 2 && isPlainObject(v)) for (const k of Object.keys(v)) visit(v[k], depth + 1);
    else if (depth < 2 && Array.isArray(v)) for (const x of v) visit(x, depth + 1);
  };
  for (const a of args) visit(a, 0);
  return [...found].filter((t) => !t.disposed);
}

function bytesOf(t: Tensor): Uint8Array {
  const raw = t.toRawArray();
  return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength).slice();
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Why a thrown value breaks the public contract, or undefined when it is fine. */
function badThrow(e: unknown): string | undefined {
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
async function settleResult(result: unknown, readable: boolean, keep: ReadonlySet<unknown>): Promise<string | undefined> {
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

interface FuzzOutcome {
  tally: Map<string, Tally>;
  failures: string[];
  skipped: number;
}

async function fuzzPublic(rng: Rng, ctx: Ctx, specs: Spec[], iterations: number): Promise<FuzzOutcome> {
  const chaos = chaosValues(ctx);
  const tally = new Map<string, Tally>();
  const failures: string[] = [];
  let skipped = 0;
  for (let it = 0; it < iterations && failures.length < 5; it++) {
    const spec = specs[it % specs.length];
    const fresh = new Fresh();
    try {
      const args = mutate(rng, spec.gen(rng, ctx, fresh), ctx, chaos);
      if (knownBug(spec.name, args) || allocatesTooMuch(args)) {
        skipped++;
        continue;
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
  return { tally, failures, skipped };
}

function describeArgs(args: Args): string {
  const one = (v: unknown, depth = 0): string => {
    if (isProxy(v)) return 'a Proxy';
    if (v instanceof Tensor) return v.toString();
    if (v instanceof Stream) return `Stream(${v.device}${v.disposed ? ', disposed' : ''})`;
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'symbol' || typeof v === 'function') return String(v).slice(0, 40);
    if (typeof v === 'string') return JSON.stringify(v.length > 20 ? `${v.slice(0, 20)}…` : v);
    if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
    if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
    if (Array.isArray(v)) return depth > 1 ? '[…]' : `[${v.slice(0, 8).map((x) => one(x, depth + 1)).join(', ')}${v.length > 8 ? ', …' : ''}]`;
    if (v !== null && typeof v === 'object') {
      if (!isPlainObject(v)) return `a ${(v as object).constructor?.name ?? 'null-prototype object'}`;
      return depth > 1 ? '{…}' : `{ ${Object.keys(v).map((k) => `${k}: ${one(v[k], depth + 1)}`).join(', ')} }`;
    }
    return String(v);
  };
  return `(${args.map((a) => one(a)).join(', ')})`;
}

// ---------------------------------------------------------------------------------------------
// The suites

const ctx = {} as Ctx;
let baseline: { liveTensors: number; liveBytes: number };

beforeAll(() => {
  const rng = testRng('fuzz pool');
  const stats = memoryStats('cpu');
  baseline = { liveTensors: stats.liveTensors, liveBytes: stats.liveBytes };
  ctx.pool = [
    Tensor.from(rng.normalArray(24), { shape: [2, 3, 4], device: 'cpu' }),
    Tensor.from(rng.normalArray(24), { shape: [1, 2, 3, 4], dtype: 'f16', device: 'cpu' }),
    Tensor.from(rng.normalArray(24), { shape: [2, 4, 1, 3], dtype: 'bf16', device: 'cpu' }),
    Tensor.from(rng.normalArray(6), { shape: [1, 1, 6], device: 'cpu' }),
    Tensor.from(rng.intArray(12, 0, 3), { shape: [2, 2, 3], device: 'cpu' }),
    Tensor.from(rng.intArray(4, -100, 100), { shape: [4], device: 'cpu' }),
    Tensor.from(rng.bytes(16), { shape: [1, 2, 2, 4], device: 'cpu' }),
    Tensor.from(new Float32Array([7]), { shape: [], device: 'cpu' }),
    Tensor.empty([0], 'f32', 'cpu'),
    Tensor.empty([2, 0, 3, 1], 'f32', 'cpu'),
    Tensor.from(rng.normalArray(16), { shape: [1, 1, 16, 1], device: 'cpu' }),
  ];
  ctx.disposedTensor = Tensor.from([1, 2, 3], { device: 'cpu' });
  ctx.disposedTensor.dispose();
  ctx.cpuStream = Stream.create('cpu');
  ctx.disposedStream = Stream.create('cpu');
  ctx.disposedStream.dispose();
});

afterAll(() => {
  for (const t of ctx.pool ?? []) t.dispose();
  ctx.cpuStream?.dispose();
  // everything the fuzzer made, failed ops' temporaries included, is gone
  expect(memoryStats('cpu')).toMatchObject(baseline);
});

/** Runs one family; its tally must show both outcomes, so the fuzzer is not vacuous. */
async function runFamily(names: string[], iterationsPerFn: number): Promise<void> {
  const rng = testRng();
  const specs = SPECS.filter((s) => names.includes(s.name));
  expect(specs.map((s) => s.name).sort()).toEqual([...names].sort());
  const before = memoryStats('cpu');
  const { tally, failures } = await fuzzPublic(rng, ctx, specs, Math.round(iterationsPerFn * SCALE) * specs.length);
  expect(failures, failures.join('\n\n')).toEqual([]);
  for (const s of specs) {
    const t = tally.get(s.name);
    expect(t, `${s.name} was never called`).toBeDefined();
    if (!NEVER_FAIL.has(s.name)) expect(t!.errors, `${s.name}: no call failed (${JSON.stringify(t)})`).toBeGreaterThan(0);
    expect(t!.ok, `${s.name}: no call succeeded (${JSON.stringify(t)})`).toBeGreaterThan(0);
  }
  // failed calls leaked nothing (the pool is allocated before, and kept)
  expect(memoryStats('cpu')).toMatchObject({ liveTensors: before.liveTensors, liveBytes: before.liveBytes });
}

/** Functions that take no argument they could reject: exempt from "some call failed". */
const NEVER_FAIL = new Set([
  'tensor.toString', 'tensor.dispose', 'stream.dispose', 'devices', 'defaultDevice', 'cudaDeviceCount',
  // only while BUG-5 / BUG-6 keep the fuzzer to valid arguments
  'dtypeBytes', ...HALF_FNS,
]);

describe('fuzz: the public API', () => {
  it('Tensor constructors and methods', async () => {
    await runFamily(
      ['Tensor.from', 'Tensor.empty', 'Tensor.zeros', 'Tensor.fromDevicePointer', 'tensor.toArray', 'tensor.toRawArray', 'tensor.toArrayAsync', 'tensor.to', 'tensor.toString', 'tensor.dispose', 'tensor.devicePointer'],
      240,
    );
  });

  it('devices, memory stats and streams', async () => {
    await runFamily(['memoryStats', 'devices', 'defaultDevice', 'cudaDeviceCount', 'dtypeBytes', 'synchronize', 'Stream.create', 'Stream.default', 'Stream.fromHandle', 'stream.synchronize', 'stream.dispose', 'stream.handle'], 120);
  });

  it('f16/bf16 conversions', async () => {
    await runFamily(['f32ToF16', 'f32ToBf16', 'f16ToF32', 'bf16ToF32'], 150);
  });

  it('topk, gather and evict', async () => {
    await runFamily(['topk', 'gather', 'evict'], 500);
  });

  it('snapkv.scores, snapkv.pool and snapkv.compress', async () => {
    await runFamily(['snapkv.scores', 'snapkv.pool', 'snapkv.compress'], 500);
  });

  it('l2.norms and l2.compress', async () => {
    await runFamily(['l2.norms', 'l2.compress'], 500);
  });

  it('keyformer, h2o, tova and streaming', async () => {
    await runFamily(['keyformer.accumulate', 'keyformer.gumbel', 'keyformer.tau', 'keyformer.select', 'h2o.accumulate', 'h2o.select', 'tova.select', 'streaming.select'], 300);
  });
});

/**
 * Errors the raw binding may raise that are not KvsiftErrors: V8's and node-addon-api's own
 * receiver and type checks (a DeviceBuffer method called on another object), and BUG-8 / BUG-9.
 */
const FOREIGN_ERRORS_ALLOWED = [
  /: TypeError: Illegal invocation$/,
  /^DeviceBuffer\.accessors: Error: Invalid argument$/,
  /: TypeError: Class constructors cannot be invoked without 'new'$/,
  // BUG-8 (Object.create(DeviceBuffer.prototype) as a buffer) and BUG-9 (SharedArrayBuffer data)
  /: Error: Invalid argument$/,
];

interface NativeSummary {
  calls: number;
  ok: number;
  threw: number;
  failures: string[];
  perFunction: Record<string, { ok: number; threw: number }>;
  foreignErrors: Record<string, number>;
}

/** Runs test/scripts/fuzz-native.ts and checks its report; `env` picks the addon and preloads. */
function runNativeFuzz(seed: number, iterations: number, env: Record<string, string> = {}): NativeSummary {
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

describe('fuzz: the raw native binding (child process)', () => {
  it('every native function with every JS type in every argument position: an Error or a result, never a crash', () => {
    const seed = testRng().seed;
    const iterations = Math.round(6000 * SCALE);
    const summary = runNativeFuzz(seed, iterations);
    // every function was reached, and the structured calls got past validation into the kernels
    for (const [fn, t] of Object.entries(summary.perFunction)) expect(t.ok + t.threw, fn).toBeGreaterThan(0);
    for (const fn of ['topk', 'gather', 'snapkvScores', 'pool1d', 'accumulate', 'l2Norms', 'protectScores', 'fillWindow', 'gumbel', 'headReduce', 'copyBuffer', 'copyToHostAsync']) {
      expect(summary.perFunction[fn]?.ok ?? 0, `${fn} never succeeded`).toBeGreaterThan(0);
      expect(summary.perFunction[fn]?.threw ?? 0, `${fn} never failed`).toBeGreaterThan(0);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Under AddressSanitizer: the same fuzzer against a sanitizer build, so reads and writes out of
// bounds or after free are reported even where they would not crash. Build it with
//   KVSIFT_SANITIZE=ON KVSIFT_CUDA=OFF npx cmake-js compile --out build-asan
// (or point KVSIFT_ASAN_ADDON at one); the runtime is preloaded into the child only.

const ASAN_ADDON = process.env.KVSIFT_ASAN_ADDON ?? path.join(REPO_ROOT, 'build-asan', 'Release', 'kvsift.node');

function sanitizerPreload(): string {
  if (process.env.KVSIFT_ASAN_PRELOAD) return process.env.KVSIFT_ASAN_PRELOAD;
  try {
    const lib = (name: string) => execFileSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' }).trim();
    return [lib('libasan.so'), lib('libubsan.so')].filter((p) => p.startsWith('/')).join(':');
  } catch {
    return '';
  }
}

const asanReason = !existsSync(ASAN_ADDON) ? `no sanitizer build at ${path.relative(REPO_ROOT, ASAN_ADDON)}` : sanitizerPreload() === '' ? 'no libasan found (set KVSIFT_ASAN_PRELOAD)' : '';
const asanEnv = (): Record<string, string> => ({
  KVSIFT_ADDON_PATH: ASAN_ADDON,
  LD_PRELOAD: sanitizerPreload(),
  // Node itself leaks by design at exit, and huge allocations must fail rather than abort
  ASAN_OPTIONS: 'detect_leaks=0:allocator_may_return_null=1:abort_on_error=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
});

(asanReason === '' ? describe : describe.skip)(`fuzz under AddressSanitizer${asanReason ? ` [skipped: ${asanReason}]` : ''}`, () => {
  it('the raw-binding fuzz finds no out-of-bounds or use-after-free access', () => {
    runNativeFuzz(testRng().seed, Math.round(6000 * SCALE), asanEnv());
  });

  // BUG-1 (fixed: GetTensor pins each buffer for the call), under the sanitizer.
  it('no native op touches a buffer that a JS getter freed during the call (BUG-1)', () => {
    const r = runChild('reentrancy.ts', { env: asanEnv() });
    expect(r.status, describeChild(r)).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Known bugs, each pinned as `it.fails` (passing while the bug is there). When a fix lands the test
// "fails to fail": turn it into a plain `it` and drop the bug's entry from knownBug() above.

describe('known bugs (it.fails until fixed; fixed ones stay as regression tests)', () => {
  /**
   * BUG-1 (cpp/args.cc GetTensor, every op in cpp/ops.cc): GetTensor captures the buffer's data
   * pointer, then the op keeps reading JS values (the next tensors' `_buffer` / `_dtypeCode` /
   * `shape`, the options' `window`, `k`, `seqLens`, ...). A getter among them can free a buffer
   * already read; the kernel then reads or writes freed memory (heap-use-after-free under ASan,
   * "corrupted double-linked list" or SIGSEGV without). Fix: pin each buffer for the call (in
   * GetTensor `buf->pin()`, and TensorArg unpins in its destructor, so a free() during the call is
   * deferred by the existing pin/unpin logic), or read every JS value first and take
   * `buffer->data()` (re-checking `freed()`) only after the last one.
   */
  it('no native op touches a buffer that a JS getter freed during the call (BUG-1)', () => {
    const r = runChild('reentrancy.ts');
    expect(r.signal, describeChild(r)).toBeNull();
    expect(r.status, describeChild(r)).toBe(0);
  });

  /**
   * BUG-3 (lib/baselines.ts streaming.select): the kept positions are pushed into a JS array, so
   * n = 2^26 with sinks = 2^26 (valid: a 256 MiB i32 tensor) grows the JS heap past its limit and
   * V8 aborts the process (n = 2^31 - 1 aborts even with the default heap: "Fatal JavaScript invalid
   * size error"). Fix: k = min(n, sinks + recent); allocate the [k] i32 tensor natively
   * (Tensor._alloc: ERR_OUT_OF_MEMORY if it cannot be had) and fill it in chunks of, say, 64 Ki
   * positions through native.copyFromHost at byte offsets; dispose it if a copy throws.
   */
  it('streaming.select of a large valid n is a tensor or a KvsiftError, never a V8 abort (BUG-3)', () => {
    const r = runChild('streaming-large.ts', { nodeFlags: ['--max-old-space-size=128'], timeoutMs: 60_000 });
    expect(r.signal, describeChild(r)).toBeNull();
    expect(r.status, describeChild(r)).toBe(0);
  });

  // BUG-4, fixed: Tensor.from(number[]) checked no element for float dtypes (TypeError or coercion)
  it('Tensor.from rejects number[] elements that are not numbers (BUG-4, fixed)', () => {
    for (const bad of [1n, Symbol('s'), 'a', {}, null, undefined, true]) {
      for (const dtype of ['f32', 'f16', 'bf16'] as const) {
        const e = catchKvsift(() => Tensor.from([0, bad] as unknown as number[], { dtype, device: 'cpu' }));
        expect(e.code).toBe('ERR_INVALID_ARG');
        expect(e.message).toBe(`Tensor.from: expected a number for data[1], but received ${describeValue(bad)}`);
      }
    }
  });

  /** BUG-5 (lib/tensor.ts dtypeBytes): an unknown dtype returns undefined. Fix: checkDType('dtypeBytes', 'dtype', dtype) first. */
  it('dtypeBytes rejects what is not a dtype (BUG-5)', () => {
    for (const bad of ['f64', '', undefined, 4]) expect(catchKvsift(() => dtypeBytes(bad as DType)).code).toBe('ERR_INVALID_ARG');
  });

  /**
   * BUG-6 (lib/half.ts): f32ToF16 / f32ToBf16 / f16ToF32 / bf16ToF32 take any value: a bigint or
   * a symbol throws a TypeError, a string or an object is coerced. Fix: a typeof check at the top
   * of each, throwing invalid('f32ToF16', 'value', 'a number', value) (bit patterns: an integer
   * in [0, 65535]); the bulk helpers used internally can stay unchecked.
   */
  it('the f16/bf16 conversions reject non-numbers with ERR_INVALID_ARG (BUG-6)', () => {
    for (const fn of [f32ToF16, f32ToBf16, f16ToF32, bf16ToF32]) {
      for (const bad of [1n, Symbol('s'), '1', {}]) expect(catchKvsift(() => fn(bad as number)).code).toBe('ERR_INVALID_ARG');
    }
  });

  /**
   * BUG-7 (lib/keyformer.ts tau): the schedule extrapolates past maxNewTokens without bound and
   * multiplies before it divides: a tiny maxNewTokens, a huge step or a huge tauEnd returns
   * Infinity (which accumulate then rejects). Fix: clamp the fraction first,
   * tauInit + Math.min(step / maxNew, 1) * (tauEnd - tauInit), so tau stays between tauInit and
   * tauEnd (the paper's schedule ends at tauEnd).
   */
  it('keyformer.tau stays between tauInit and tauEnd (BUG-7)', () => {
    for (const [step, maxNewTokens] of [[Number.MAX_VALUE, 10], [83, Number.MIN_VALUE], [200, 100]]) {
      const t = keyformer.tau(step, { maxNewTokens });
      expect(t).toBeGreaterThanOrEqual(1);
      expect(t).toBeLessThanOrEqual(2);
    }
    expect(Number.isFinite(keyformer.tau(65, { maxNewTokens: 95, tauEnd: Number.MAX_VALUE }))).toBe(true);
  });

  /**
   * BUG-8 (cpp/buffer.cc DeviceBuffer::From): an object that passes `instanceof DeviceBuffer`
   * without being one (Object.create(DeviceBuffer.prototype)) makes ObjectWrap::Unwrap throw a
   * plain Error('Invalid argument'). Fix: call napi_unwrap directly in From and return nullptr
   * when it fails, so the caller raises its ERR_INVALID_ARG "expected a DeviceBuffer".
   */
  it('the binding rejects a fake DeviceBuffer with ERR_INVALID_ARG (BUG-8)', () => {
    const fake = Object.create((native.DeviceBuffer as unknown as { prototype: object }).prototype);
    expect(catchKvsift(() => native.fill(fake, 0)).code).toBe('ERR_INVALID_ARG');
  });

  /**
   * BUG-9 (cpp/core.cc GetHostView): a typed array over a SharedArrayBuffer reaches
   * Napi::TypedArray::ArrayBuffer().Data(), which fails for shared memory with a plain
   * Error('Invalid argument'): Tensor.from(new Float32Array(new SharedArrayBuffer(16))) throws it.
   * Fix: take the data pointer from napi_get_typedarray_info (it is already offset by byteOffset
   * and works for shared buffers) instead of ArrayBuffer().Data() + ByteOffset().
   */
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
