/**
 * Fuzzes the raw native binding (binding.d.ts) in a process of its own: every function gets
 * every JS type in every argument position (half of the calls), or a call shaped like the
 * TypeScript layer's with 0-3 mutations: lying shapes (larger than the buffer, negative,
 * fractional, 2^31), dtype codes out of range, freed and fake buffers, wrong typed arrays, options
 * of the wrong type (the other half). Every call must return or throw an Error; a failed call
 * must leave the bytes of every real buffer it was given unchanged; at the end every buffer the
 * fuzzer allocated is freed (memoryStats back at the start).
 *
 *   node -r ./test/scripts/register-ts.cjs test/scripts/fuzz-native.ts --seed 1 --iterations 6000
 *
 * Options: --last-call FILE (the call about to run is written there first, so a crash can be
 * traced to it). KVSIFT_ADDON_PATH=/path/to/kvsift.node (read by lib/native.ts) picks the addon,
 * e.g. a sanitizer build (see test/fuzz.test.ts). Prints one JSON line:
 * { calls, ok, threw, failures, perFunction, foreignErrors }.
 *
 * Never fuzzed: reading or writing through a pointer the fuzzer made up (wrapPointer of a random
 * address, a random cudaStream_t on a CUDA device). The binding cannot check those by design.
 */
import * as fs from 'node:fs';
import type { DeviceBuffer } from '../../binding';
import { KvsiftError } from '../../lib/errors';
// lib/native.ts honours KVSIFT_ADDON_PATH (a sanitizer build, say)
import { native } from '../../lib/native';
import { Rng } from '../rng';

// ---------------------------------------------------------------------------------------------
// Setup

function argValue(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const SEED = Number(argValue('seed', '1')) >>> 0;
const ITERATIONS = Number(argValue('iterations', '6000'));
const LAST_CALL = argValue('last-call', '');

const HAS_CUDA = native.cudaDeviceCount() > 0;

/** The tests' generator (test/rng.ts, free of vitest) with the pick this fuzzer draws through. */
class FuzzRng extends Rng {
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)];
  }
}
const rng = new FuzzRng(SEED);

// ---------------------------------------------------------------------------------------------
// Values

const startStats = native.memoryStats(-1);

/** Real CPU buffers of assorted sizes, random bytes; live for the whole run. */
const SIZES = [0, 1, 4, 12, 16, 64, 96, 256, 1024];
const bufs: DeviceBuffer[] = SIZES.map((n) => {
  const b = native.alloc(-1, n);
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = rng.u32() & 0xff;
  native.copyFromHost(b, 0, bytes);
  return b;
});
// Unowned views of live memory: aliasing inputs and outputs is memory-safe, just meaningless.
const aliases: DeviceBuffer[] = [
  native.wrapPointer(bufs[7].ptr, 256, -1),
  native.wrapPointer(bufs[8].ptr + 64n, 512, -1),
  native.wrapPointer(bufs[8].ptr, 0, -1),
];
const realBuffers = [...bufs, ...aliases];
const freedBuf = native.alloc(-1, 64);
freedBuf.free();
const DB = native.DeviceBuffer as unknown as new (...a: unknown[]) => DeviceBuffer;
class SubBuffer extends (DB as unknown as new () => object) {}
const fakeBuffers: unknown[] = [freedBuf, new DB(), new SubBuffer(), Object.create(DB.prototype), Reflect.construct(DB, [], Object), { ptr: 1n, byteLength: 64 }];

const DTYPE_BYTES = [4, 2, 2, 4, 1];
const DTYPE_CODES: unknown[] = [0, 1, 2, 3, 4, 0, 3, -1, 5, 9, 0.5, 3.7, NaN, 2 ** 32, '0', undefined, null, 1n];

function shapeChaos(): unknown {
  const rank = rng.int(0, 5);
  const dims: unknown[] = [];
  for (let i = 0; i < rank; i++) dims.push(rng.pick([0, 1, 1, 2, 2, 3, 4, 5, 7, 8, 16, 64, 2 ** 31 - 1, 2 ** 31, -1, 1.5, NaN, Infinity, '2', 2n, null]));
  return rng.float() < 0.9 ? dims : rng.pick([new Int32Array([2, 2]), { length: 1, 0: 4 }, 'abc', 4, null, new Array(9).fill(1)]);
}

/** A tensor-like: real buffer (usually), any dtype code, a shape that may lie. */
function tensorChaos(): Record<string, unknown> {
  return {
    _buffer: rng.float() < 0.85 ? rng.pick(realBuffers) : rng.pick(fakeBuffers),
    _dtypeCode: rng.pick(DTYPE_CODES),
    shape: shapeChaos(),
  };
}

const safeBigints = [0n, -1n, 2n ** 64n, -(2n ** 70n), 2n ** 200n];
// On a CUDA host a random handle would reach the driver as a cudaStream_t: keep to the invalid ones.
const bigints = HAS_CUDA ? safeBigints : [...safeBigints, 1n, 7n, 2n ** 63n, 2n ** 64n - 1n, 0xdeadbeefn];

function chaos(): unknown {
  const u = rng.float();
  if (u < 0.25) return tensorChaos();
  if (u < 0.35) return rng.pick(realBuffers);
  if (u < 0.4) return rng.pick(fakeBuffers);
  return rng.pick(VALUES);
}

const VALUES: unknown[] = [
  undefined, null, true, false,
  0, -0, 1, -1, 2, 3, 4, 7, 16, 255, 256, 0.5, -2.5, NaN, Infinity, -Infinity,
  2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 52, 2 ** 52 + 1, 2 ** 53, 2 ** 60, -(2 ** 53), Number.MAX_VALUE, Number.MIN_VALUE,
  '', '0', '1', 'cpu', 'x'.repeat(100),
  ...bigints,
  Symbol('s'), () => 1, function named() {}, class Foo {},
  {}, Object.create(null), [], [1, 2], [0], new Array(9).fill(1), { window: 1 }, { k: 1, order: 0 },
  new Float32Array(4), new Float64Array(2), new Int16Array(3), new Uint32Array(2), new Int32Array([1, 2]), new Int32Array([-1]),
  new Int32Array([2 ** 31 - 1]), new Int32Array(0), new Uint8Array(1024), new Uint8Array(0), new BigInt64Array(2),
  new Uint16Array(8), new ArrayBuffer(16), new ArrayBuffer(2048), new DataView(new ArrayBuffer(8)),
  new Int32Array(new SharedArrayBuffer(8)), new SharedArrayBuffer(8), Buffer.from('abcdefgh'),
  new Date(0), new Map(), /x/, Promise.resolve(0),
];

/** A near-valid integer. */
function near(v: number): unknown {
  return rng.pick([v, v - 1, v + 1, 0, -1, v * 1024, 2 ** 31, 0.5, NaN]);
}

// ---------------------------------------------------------------------------------------------
// Structured calls: the shapes the TypeScript layer would pass, with fresh, exactly sized buffers

const freshBuffers: DeviceBuffer[] = [];
function fresh(shape: number[], code: number): Record<string, unknown> {
  const n = shape.reduce((a, b) => a * b, 1);
  const b = native.alloc(-1, n * DTYPE_BYTES[code]);
  const bytes = new Uint8Array(n * DTYPE_BYTES[code]);
  if (code === 0) {
    const f = new Float32Array(bytes.buffer);
    for (let i = 0; i < n; i++) f[i] = rng.float() * 4 - 2;
  } else if (code === 3) {
    const p = new Int32Array(bytes.buffer);
    for (let i = 0; i < n; i++) p[i] = rng.int(0, 8);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = rng.u32() & 0x3f; // small half values, no NaN
  }
  native.copyFromHost(b, 0, bytes);
  freshBuffers.push(b);
  return { _buffer: b, _dtypeCode: code, shape };
}

type Gen = () => unknown[];
const dims = () => ({ B: rng.int(1, 2), H: rng.int(1, 3), G: rng.int(1, 2), N: rng.int(1, 12), D: rng.int(1, 6), f: rng.pick([0, 1, 2]), layout: rng.pick([0, 1]) });
const l4 = (layout: number, B: number, H: number, S: number, D: number) => (layout === 0 ? [B, H, S, D] : [B, S, H, D]);
const lens = (B: number, lo: number, hi: number) => (rng.float() < 0.7 || lo > hi ? undefined : Int32Array.from({ length: B }, () => rng.int(lo, hi)));

const STRUCTURED: Record<string, Gen> = {
  buildInfo: () => [],
  cudaDeviceCount: () => [],
  cudaDeviceInfo: () => [0],
  alloc: () => [-1, rng.int(0, 300), undefined],
  wrapPointer: () => [rng.pick(bufs).ptr, rng.int(0, 16), -1],
  copyFromHost: () => [rng.pick(realBuffers), rng.int(0, 8), new Uint8Array(rng.int(0, 16)), undefined],
  copyToHost: () => [rng.pick(realBuffers), rng.int(0, 8), new Float32Array(rng.int(0, 4)), undefined],
  copyToHostAsync: () => [rng.pick(realBuffers), rng.int(0, 8), rng.int(0, 16), undefined],
  copyBuffer: () => [rng.pick(realBuffers), rng.int(0, 8), rng.pick(realBuffers), rng.int(0, 8), rng.int(0, 16), undefined],
  fill: () => [rng.pick(realBuffers), rng.int(0, 255), undefined],
  streamCreate: () => [-1],
  streamDestroy: () => [-1, 0n],
  streamSynchronize: () => [-1, undefined],
  deviceSynchronize: () => [-1],
  memoryStats: () => [-1, rng.float() < 0.5],
  snapkvScores: () => {
    const d = dims();
    const W = rng.int(1, d.N);
    const gr = rng.int(0, 3);
    const hout = gr === 3 ? d.H * d.G : d.H;
    const o: Record<string, unknown> = { window: W, groupReduce: gr, layout: d.layout, seqLens: lens(d.B, W, d.N) };
    if (rng.float() < 0.2) o.lse = fresh([d.B, d.H * d.G, W], 0);
    return [fresh(l4(d.layout, d.B, d.H * d.G, W, d.D), d.f), fresh(l4(d.layout, d.B, d.H, d.N, d.D), d.f), fresh([d.B, hout, d.N - W], 0), o, undefined];
  },
  pool1d: () => {
    const shape = rng.pick([[rng.int(1, 20)], [rng.int(1, 2), rng.int(1, 3), rng.int(1, 20)]]);
    const M = shape[shape.length - 1];
    return [fresh(shape, 0), fresh(shape, 0), { kernel: rng.pick([1, 3, 5, 21]), kind: rng.int(0, 1), lengths: lens(shape.length === 1 ? 1 : shape[0], 0, M) }, undefined];
  },
  topk: () => {
    const shape = rng.pick([[rng.int(1, 20)], [rng.int(1, 2), rng.int(1, 3), rng.int(1, 20)]]);
    const M = shape[shape.length - 1];
    const k = rng.int(1, M);
    const stride = k + rng.int(0, 2);
    const R = shape.reduce((a, b) => a * b, 1) / M;
    return [fresh(shape, 0), fresh([R * stride], 3), { k, order: rng.int(0, 1), outRowStride: stride, lengths: lens(shape.length === 1 ? 1 : shape[0], k, M) }, undefined];
  },
  gather: () => {
    const d = dims();
    const group = rng.int(1, 2);
    const Hp = rng.pick([1, d.H * group]);
    const K = rng.int(0, 5);
    const code = rng.int(0, 4);
    return [fresh(l4(d.layout, d.B, d.H, d.N, d.D), code), fresh([d.B, Hp, K], 3), fresh(l4(d.layout, d.B, d.H * group, K, d.D), code), { layout: d.layout, group }, undefined];
  },
  fillWindow: () => {
    const stride = rng.int(1, 8);
    const W = rng.int(0, stride);
    const R = rng.int(0, 4);
    const rpb = rng.int(1, 2);
    const N = W + rng.int(0, 8);
    return [fresh([R * stride], 3), { window: W, n: N, rowStride: stride, rowsPerBatch: rpb, seqLens: lens(Math.ceil(R / rpb), W, N) }, undefined];
  },
  l2Norms: () => {
    const d = dims();
    return [fresh(l4(d.layout, d.B, d.H, d.N, d.D), d.f), fresh([d.B, d.H, d.N], 0), { layout: d.layout, seqLens: lens(d.B, 0, d.N) }, undefined];
  },
  protectScores: () => {
    const shape = [rng.int(1, 2), rng.int(1, 3), rng.int(1, 12)];
    const s = fresh(shape, 0);
    return [s, rng.float() < 0.3 ? s : fresh(shape, 0), { sinks: rng.int(0, 3), recent: rng.int(0, 3), sign: rng.pick([1, -1]), seqLens: lens(shape[0], 0, shape[2]) }, undefined];
  },
  accumulate: () => {
    const d = dims();
    const T = rng.int(1, d.N);
    return [
      fresh(l4(d.layout, d.B, d.H * d.G, T, d.D), d.f),
      fresh(l4(d.layout, d.B, d.H, d.N, d.D), d.f),
      fresh([d.B, d.H, d.N], 0),
      { layout: d.layout, tau: rng.pick([0.5, 1, 2]), noise: rng.int(0, 1), seed: rng.pick([rng.u32(), BigInt(rng.u32()) << 30n]), step: rng.int(0, 9), seqLens: lens(d.B, T, d.N) },
      undefined,
    ];
  },
  gumbel: () => [fresh([rng.int(0, 2), rng.int(1, 2), rng.int(1, 2), rng.int(0, 8)], 0), { seed: rng.u32(), step: rng.int(0, 9) }, undefined],
  headReduce: () => {
    const [B, H, N] = [rng.int(1, 2), rng.int(0, 3), rng.int(1, 9)];
    return [fresh([B, H, N], 0), fresh([B, N], 0), { scale: rng.pick([1, 0.5, 1 / 3]) }, undefined];
  },
};

const FUNCTIONS = [...Object.keys(STRUCTURED), 'setErrorClass', 'DeviceBuffer.free', 'DeviceBuffer.accessors', 'new DeviceBuffer'];

/** 0-3 mutations of a structured argument list. */
function mutate(args: unknown[]): unknown[] {
  const out = args.map((a) => (a !== null && typeof a === 'object' && Object.getPrototypeOf(a) === Object.prototype ? { ...(a as object) } : a));
  const u = rng.float();
  const count = u < 0.3 ? 0 : u < 0.7 ? 1 : u < 0.9 ? 2 : 3;
  for (let m = 0; m < count && out.length > 0; m++) {
    const i = rng.int(0, out.length - 1);
    const a = out[i] as Record<string, unknown>;
    const kind = rng.int(0, 5);
    if (kind === 0) {
      out[i] = chaos();
    } else if (a !== null && typeof a === 'object' && '_buffer' in a) {
      // a lying tensor: another shape, dtype code or buffer over the same object
      const t = { ...a };
      if (kind === 1 && Array.isArray(t.shape) && t.shape.length > 0) {
        const s = [...(t.shape as unknown[])];
        const j = rng.int(0, s.length - 1);
        s[j] = typeof s[j] === 'number' ? near(s[j] as number) : chaos();
        t.shape = s;
      } else if (kind === 2) {
        t._dtypeCode = rng.pick(DTYPE_CODES);
      } else if (kind === 3) {
        t._buffer = rng.float() < 0.7 ? rng.pick(realBuffers) : rng.pick(fakeBuffers);
      } else {
        t.shape = shapeChaos();
      }
      out[i] = t;
    } else if (a !== null && typeof a === 'object' && Object.getPrototypeOf(a) === Object.prototype) {
      const keys = Object.keys(a);
      const key = keys.length > 0 && rng.float() < 0.8 ? rng.pick(keys) : rng.pick(['window', 'k', 'layout', 'group', 'seqLens', 'lengths', 'lse', 'tau', 'seed']);
      a[key] = typeof a[key] === 'number' && rng.float() < 0.5 ? near(a[key] as number) : chaos();
    } else if (typeof a === 'number') {
      out[i] = near(a);
    } else if (kind === 5) {
      out.length = rng.int(0, out.length - 1);
    } else {
      out[i] = chaos();
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Running

function describeValue(v: unknown, depth = 0): string {
  if (v === null || v === undefined) return String(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 12 ? `${v.slice(0, 12)}…` : v);
  if (typeof v === 'symbol' || typeof v === 'function') return typeof v;
  if (realBuffers.includes(v as DeviceBuffer)) return `buf${realBuffers.indexOf(v as DeviceBuffer)}(${(v as DeviceBuffer).byteLength}B)`;
  if (fakeBuffers.includes(v)) return `fakeBuffer${fakeBuffers.indexOf(v)}`;
  if (freshBuffers.includes(v as DeviceBuffer)) return `fresh(${(v as DeviceBuffer).byteLength}B)`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
  if (v instanceof ArrayBuffer || v instanceof SharedArrayBuffer) return `${v.constructor.name}(${v.byteLength})`;
  if (Array.isArray(v)) return depth > 2 ? '[…]' : `[${v.map((x) => describeValue(x, depth + 1)).join(', ')}]`;
  if (typeof v === 'object') {
    if (Object.getPrototypeOf(v) !== Object.prototype) return `a ${(v as object).constructor?.name ?? 'null-prototype object'}`;
    return depth > 2 ? '{…}' : `{ ${Object.entries(v).map(([k, x]) => `${k}: ${describeValue(x, depth + 1)}`).join(', ')} }`;
  }
  return String(v);
}

let lastCallFd = -1;
if (LAST_CALL) lastCallFd = fs.openSync(LAST_CALL, 'w');
function recordCall(text: string): void {
  if (lastCallFd < 0) return;
  const b = Buffer.from(`${text}\n`);
  fs.ftruncateSync(lastCallFd, 0);
  fs.writeSync(lastCallFd, b, 0, b.length, 0);
}

function snapshot(): Uint8Array[] {
  return bufs.map((b) => {
    const a = new Uint8Array(b.byteLength);
    native.copyToHost(b, 0, a);
    return a;
  });
}
function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function invoke(fn: string, args: unknown[]): unknown {
  const b = native as unknown as Record<string, (...a: unknown[]) => unknown>;
  switch (fn) {
    case 'setErrorClass': {
      // any class may be registered; afterwards kvsift's own must work again
      try {
        b.setErrorClass(...args);
        try {
          native.alloc(-2, 1);
        } catch {
          // whatever the registered class makes: it only has to be thrown, not crash
        }
      } finally {
        native.setErrorClass(KvsiftError);
      }
      return undefined;
    }
    case 'DeviceBuffer.free':
      // `this` from the chaos values, never a real pool buffer
      return (DB.prototype as unknown as { free: (...a: unknown[]) => unknown }).free.call(args[0] === undefined || realBuffers.includes(args[0] as DeviceBuffer) ? {} : args[0]);
    case 'DeviceBuffer.accessors': {
      const names = ['ptr', 'byteLength', 'device', 'owned', 'freed'];
      const desc = Object.getOwnPropertyDescriptor(DB.prototype, rng.pick(names));
      return desc?.get?.call(args[0]);
    }
    case 'new DeviceBuffer':
      return new DB(...args);
    default:
      return b[fn](...args);
  }
}

interface Tally {
  ok: number;
  threw: number;
}

async function main(): Promise<void> {
  const failures: string[] = [];
  const perFunction: Record<string, Tally> = {};
  const foreignErrors: Record<string, number> = {};
  let ok = 0;
  let threw = 0;
  for (let it = 0; it < ITERATIONS && failures.length < 10; it++) {
    const fn = rng.pick(FUNCTIONS);
    let args: unknown[];
    if (STRUCTURED[fn] && rng.float() < 0.5) {
      args = mutate(STRUCTURED[fn]());
    } else {
      args = Array.from({ length: rng.int(0, 6) }, chaos);
    }
    const text = `#${it} ${fn}(${args.map((a) => describeValue(a)).join(', ')})`;
    recordCall(text);
    const before = snapshot();
    const tally = (perFunction[fn] ??= { ok: 0, threw: 0 });
    let result: unknown;
    let error: unknown;
    let failed = false;
    try {
      result = invoke(fn, args);
      if (result instanceof Promise) result = await result;
    } catch (e) {
      failed = true;
      error = e;
    }
    if (failed) {
      threw++;
      tally.threw++;
      if (!(error instanceof Error)) {
        failures.push(`${text}: threw a non-Error ${typeof error}`);
      } else if (!(error instanceof KvsiftError)) {
        const key = `${fn}: ${error.constructor.name}: ${error.message}`;
        foreignErrors[key] = (foreignErrors[key] ?? 0) + 1;
      } else if (typeof error.code !== 'string' || !error.code.startsWith('ERR_') || error.message.length === 0) {
        failures.push(`${text}: KvsiftError without a code or a message`);
      }
      const after = snapshot();
      bufs.forEach((_, i) => {
        if (!same(before[i], after[i])) failures.push(`${text}: failed, yet changed buf${i}`);
      });
    } else {
      ok++;
      tally.ok++;
      // release what a call handed out (never the fuzzer's own buffers)
      if (fn === 'alloc' && result !== null && typeof result === 'object') (result as DeviceBuffer).free();
      if (fn === 'streamCreate' && typeof result === 'bigint' && result !== 0n) native.streamDestroy(args[0] as number, result);
    }
    for (const b of freshBuffers.splice(0)) b.free();
  }
  for (const b of bufs) b.free();
  const end = native.memoryStats(-1);
  if (end.liveBuffers !== startStats.liveBuffers || end.liveBytes !== startStats.liveBytes) {
    failures.push(`leak: memoryStats went from ${JSON.stringify(startStats)} to ${JSON.stringify(end)}`);
  }
  recordCall('done');
  process.stdout.write(`${JSON.stringify({ seed: SEED, calls: ok + threw, ok, threw, failures, perFunction, foreignErrors })}\n`);
}

main().catch((e) => {
  process.stdout.write(`${JSON.stringify({ seed: SEED, calls: 0, ok: 0, threw: 0, failures: [`fuzzer crashed: ${e instanceof Error ? e.stack : String(e)}`], perFunction: {}, foreignErrors: {} })}\n`);
  process.exitCode = 1;
});
