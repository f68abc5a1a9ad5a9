/**
 * Valid argument lists for every public function of lib/index.ts (the fuzz engine in
 * test/fuzz/engine.ts mutates them). Tensor.fromDevicePointer is fuzzed on its validation paths
 * only: a tensor wrapping a bogus pointer is never read (that would be a real segfault, by design:
 * kvsift cannot check a foreign pointer).
 */
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
  l2,
  memoryStats,
  snapkv,
  Stream,
  streaming,
  synchronize,
  Tensor,
  topk,
  tova,
} from '../../lib/index';
import { types } from 'node:util';
import type { Rng } from '../helpers';
import { data, Fresh, pick, type Args, type Ctx, type Dims, type Spec } from './engine';



export function randomDims(rng: Rng): Dims {
  const Hkv = rng.int(1, 3);
  const G = rng.int(1, 3);
  return { B: rng.int(1, 2), Hkv, G, Hq: Hkv * G, N: rng.int(1, 24), D: rng.int(1, 9), layout: pick(rng, ['bhsd', 'bshd'] as const), dtype: pick(rng, ['f32', 'f16', 'bf16'] as const) };
}


export function seqLens(rng: Rng, B: number, lo: number, hi: number): Int32Array | number[] | undefined {
  if (lo > hi || rng.float() < 0.6) return undefined;
  const a = rng.intArray(B, lo, hi);
  return rng.float() < 0.5 ? a : Array.from(a);
}

export function maybeStream(rng: Rng, ctx: Ctx): { stream?: Stream } {
  return rng.float() < 0.15 ? { stream: ctx.cpuStream } : {};
}

/** Drops undefined keys so a generated option reads as "absent". */
export function opts<T extends Record<string, unknown>>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}


const anyf = (f: unknown) => f as (...a: unknown[]) => unknown;

const TYPED_LENGTH = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Int8Array.prototype), 'length')!.get!;

/**
 * A Tensor.from of a typed array holds exactly the array's bytes as they are after the call (its
 * getters ran before the data was read), at the array's real length, whatever it claimed.
 */
function fromCopiedWhatItRead(result: unknown, args: Args): string | undefined {
  const [src] = args;
  if (!(result instanceof Tensor) || !types.isTypedArray(src)) return undefined;
  const natural = types.isFloat32Array(src) ? 'f32' : types.isInt32Array(src) ? 'i32' : types.isUint8Array(src) ? 'u8' : types.isUint16Array(src) ? 'half' : '';
  const rawKind = result.dtype === 'f16' || result.dtype === 'bf16' ? 'half' : result.dtype;
  if (natural !== rawKind) return undefined;
  const length = TYPED_LENGTH.call(src) as number;
  if (result.numel !== length) return `Tensor.from made ${result.numel} elements of data that has ${length}`;
  if (length === 0) return undefined;
  const view = src as unknown as { buffer: ArrayBufferLike; byteOffset: number; BYTES_PER_ELEMENT: number };
  const want = Buffer.from(new Uint8Array(view.buffer, view.byteOffset, length * view.BYTES_PER_ELEMENT));
  const raw = result.toRawArray();
  const got = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  return want.equals(got) ? undefined : 'Tensor.from holds bytes other than its data (stale or torn memory)';
}

/** The shared fuzz context (pool tensors, streams), filled by the suite before it runs. */
export const ctx = {} as Ctx;

export const SPECS: Spec[] = [
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
    check: (r, a) => fromCopiedWhatItRead(r, a),
  },
  {
    name: 'Tensor.empty',
    deterministic: false,
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
    deterministic: false,
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
  { name: 'memoryStats', deterministic: false, gen: (rng) => ['cpu', rng.float() < 0.5 ? { resetPeak: rng.float() < 0.5 } : undefined], call: (a) => anyf(memoryStats)(...a) },
  { name: 'devices', deterministic: false, gen: () => [], call: (a) => anyf(devices)(...a) },
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

