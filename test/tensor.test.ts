import { describe, expect, it } from 'vitest';
import { defaultDevice, dtypeBytes, memoryStats, Tensor, type Device, type DType } from '../lib/index';
import { f32ArrayToHalf, halfArrayToF32 } from '../lib/half';
import { native } from '../lib/native';
import {
  allDevices,
  collectUntil,
  expectIdentical,
  expectKvsiftError,
  expectSameBytes,
  rejectsKvsift,
  testRng,
  type Rng,
} from './helpers';

const DTYPES: DType[] = ['f32', 'f16', 'bf16', 'i32', 'u8'];
const DEVICES = allDevices();
// odd sizes on purpose: none is a multiple of a warp, a vector width or the 256-byte rounding
const SIZES = [0, 1, 7, 257, 4099];

/** Raw storage for a dtype: every bit pattern is fair game (NaN payloads, -0, subnormals). */
function randomRaw(rng: Rng, dtype: DType, n: number): Float32Array | Uint16Array | Int32Array | Uint8Array {
  switch (dtype) {
    case 'f32': {
      const a = rng.bits32AsF32(n);
      // make sure the specials are there even for small n
      const specials = [0, -0, Infinity, -Infinity, NaN, 1.401298464324817e-45, 3.4028234663852886e38];
      for (let i = 0; i < Math.min(n, specials.length); i++) a[i] = specials[i];
      return a;
    }
    case 'f16':
    case 'bf16':
      return rng.bits16(n);
    case 'i32': {
      const a = new Int32Array(n);
      for (let i = 0; i < n; i++) a[i] = rng.u32() | 0;
      if (n > 1) [a[0], a[1]] = [-0x80000000, 0x7fffffff];
      return a;
    }
    case 'u8':
      return rng.bytes(n);
  }
}

/** What toArray() should return for raw storage. */
function widened(raw: Float32Array | Uint16Array | Int32Array | Uint8Array, dtype: DType): Float32Array | Int32Array | Uint8Array {
  if (dtype === 'f16' || dtype === 'bf16') return halfArrayToF32(raw as Uint16Array, dtype);
  return raw as Float32Array | Int32Array | Uint8Array;
}

/** toArray() compared bitwise for f32 (NaN payloads kept), by value (NaN == NaN) for widened halves. */
function expectWidened(actual: Float32Array | Int32Array | Uint8Array, raw: Float32Array | Uint16Array | Int32Array | Uint8Array, dtype: DType, label: string): void {
  if (dtype === 'f16' || dtype === 'bf16') expectIdentical(actual, widened(raw, dtype), label);
  else expectSameBytes(actual, raw, label);
}

describe.each(DEVICES)('round trips on %s', (device: Device) => {
  describe.each(DTYPES)('%s', (dtype) => {
    it.each(SIZES)('n = %i: from -> toRawArray / toArray / toArrayAsync are exact', async (n) => {
      const rng = testRng();
      const raw = randomRaw(rng, dtype, n);
      const t = Tensor.from(raw, { dtype, device });
      try {
        expect(t.device).toBe(device);
        expect(t.dtype).toBe(dtype);
        expect(t.shape).toEqual([n]);
        expect(t.numel).toBe(n);
        expect(t.byteLength).toBe(n * dtypeBytes(dtype));
        const back = t.toRawArray();
        expect(back.constructor).toBe(raw.constructor);
        expectSameBytes(back, raw, 'toRawArray');
        expectWidened(t.toArray(), raw, dtype, 'toArray');
        expectWidened(await t.toArrayAsync(), raw, dtype, 'toArrayAsync');
      } finally {
        t.dispose();
      }
    });

    it('to(device) both ways with every device, and to the same device, copies exactly', () => {
      const rng = testRng();
      const raw = randomRaw(rng, dtype, 1031);
      const src = Tensor.from(raw, { dtype, device, shape: [1031] });
      try {
        for (const other of DEVICES) {
          const there = src.to(other);
          expect(there.device).toBe(other);
          expect(there.dtype).toBe(dtype);
          expect(there.shape).toEqual(src.shape);
          expect(there.devicePointer).not.toBe(src.devicePointer);
          const back = there.to(device);
          there.dispose();
          expectSameBytes(back.toRawArray(), raw, `${device} -> ${other} -> ${device}`);
          back.dispose();
        }
        // the source is untouched by all of it
        expectSameBytes(src.toRawArray(), raw, 'source after copies');
      } finally {
        src.dispose();
      }
    });
  });

  it('a copy outlives its disposed source', () => {
    const data = testRng().normalArray(100);
    const a = Tensor.from(data, { device });
    const b = a.to(device);
    a.dispose();
    expectSameBytes(b.toArray(), data);
    b.dispose();
  });

  it('toArrayAsync finishes correctly when the tensor is disposed while it runs', async () => {
    const data = testRng().normalArray(1 << 16);
    const t = Tensor.from(data, { device });
    const pending = t.toArrayAsync();
    t.dispose();
    expectSameBytes(await pending, data);
  });

  it('multi-dimensional shapes keep row-major order', () => {
    const data = Float32Array.from({ length: 2 * 3 * 5 }, (_, i) => i);
    const t = Tensor.from(data, { shape: [2, 3, 5], device });
    expect(t.shape).toEqual([2, 3, 5]);
    expect(t.numel).toBe(30);
    expectSameBytes(t.toArray(), data);
    t.dispose();
  });

  it('Tensor.zeros is zero for every dtype (all bits clear)', () => {
    for (const dtype of DTYPES) {
      const t = Tensor.zeros([3, 333], dtype, device);
      const raw = t.toRawArray();
      expect(raw.length).toBe(999);
      expect(raw.every((v) => Object.is(v, 0))).toBe(true);
      t.dispose();
    }
  });

  it('Tensor.empty has the requested shape, dtype, device and byte length', () => {
    for (const dtype of DTYPES) {
      const t = Tensor.empty([4, 1, 9], dtype, device);
      expect(t.shape).toEqual([4, 1, 9]);
      expect(t.dtype).toBe(dtype);
      expect(t.device).toBe(device);
      expect(t.numel).toBe(36);
      expect(t.byteLength).toBe(36 * dtypeBytes(dtype));
      expect(t.toRawArray().length).toBe(36);
      t.dispose();
    }
  });

  it('zero-size tensors work everywhere', async () => {
    for (const shape of [[0], [3, 0, 2], [0, 0]]) {
      const t = Tensor.empty(shape, 'f32', device);
      expect(t.numel).toBe(0);
      expect(t.byteLength).toBe(0);
      expect(t.toArray().length).toBe(0);
      expect((await t.toArrayAsync()).length).toBe(0);
      const u = t.to('cpu');
      expect(u.toArray().length).toBe(0);
      u.dispose();
      t.dispose();
    }
  });

  it('a scalar (shape []) holds one element', () => {
    const t = Tensor.from([2.5], { shape: [], device });
    expect(t.shape).toEqual([]);
    expect(t.numel).toBe(1);
    expect(Array.from(t.toArray())).toEqual([2.5]);
    t.dispose();
  });
});

describe('Tensor.from conversions', () => {
  it('number[] defaults to f32 and rounds doubles to f32', () => {
    const t = Tensor.from([0.1, -1e-50, 1e40, 3], { device: 'cpu' });
    expect(t.dtype).toBe('f32');
    expectIdentical(t.toArray(), [Math.fround(0.1), -0, Infinity, 3]);
    t.dispose();
  });

  it('the dtype follows the typed array when not given', () => {
    const cases: [ArrayLike<number> & ArrayBufferView, DType][] = [
      [new Float32Array([1, 2]), 'f32'],
      [new Int32Array([1, 2]), 'i32'],
      [new Uint8Array([1, 2]), 'u8'],
    ];
    for (const [data, dtype] of cases) {
      const t = Tensor.from(data as Float32Array, { device: 'cpu' });
      expect(t.dtype).toBe(dtype);
      t.dispose();
    }
  });

  it('number[] to i32 and u8 is exact', () => {
    const i = Tensor.from([-2147483648, -1, 0, 2147483647], { dtype: 'i32', device: 'cpu' });
    expect(Array.from(i.toArray())).toEqual([-2147483648, -1, 0, 2147483647]);
    i.dispose();
    const u = Tensor.from([0, 1, 128, 255], { dtype: 'u8', device: 'cpu' });
    expect(Array.from(u.toArray())).toEqual([0, 1, 128, 255]);
    u.dispose();
  });

  it.each(DEVICES)('Float32Array to f16/bf16 rounds to nearest even, as lib/half does (%s)', (device) => {
    const rng = testRng();
    const specials = [
      0, -0, 1, -2, 65504, 65519.99, 65520, -65520, 2 ** -24, 2 ** -25, 3 * 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11,
      1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4028235e38, -3.4028235e38, Infinity, -Infinity, NaN, 1e-45, 2 ** -14,
    ];
    const data = new Float32Array(specials.length + 3000);
    data.set(specials);
    data.set(rng.normalArray(1000, 0, 4), specials.length);
    data.set(rng.normalArray(1000, 0, 1e4), specials.length + 1000);
    data.set(rng.bits32AsF32(1000), specials.length + 2000);
    for (const dtype of ['f16', 'bf16'] as const) {
      const t = Tensor.from(data, { dtype, device });
      const expectedBits = f32ArrayToHalf(data, dtype);
      expectSameBytes(t.toRawArray(), expectedBits, `${dtype} bits`);
      expectIdentical(t.toArray(), halfArrayToF32(expectedBits, dtype), `${dtype} widened`);
      t.dispose();
    }
  });

  it('hand-picked f16/bf16 roundings through a tensor', () => {
    const f16 = Tensor.from(new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 2 ** -25, 3 * 2 ** -25]), { dtype: 'f16', device: 'cpu' });
    expect(Array.from(f16.toRawArray())).toEqual([0x3c00, 0x3c02, 0x7c00, 0x0000, 0x0002]);
    expectIdentical(f16.toArray(), [1, 1 + 2 ** -9, Infinity, 0, 2 ** -23]);
    f16.dispose();
    const bf16 = Tensor.from([1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4028235e38], { dtype: 'bf16', device: 'cpu' });
    expect(Array.from(bf16.toRawArray())).toEqual([0x3f80, 0x3f82, 0x7f80]);
    expectIdentical(bf16.toArray(), [1, 1 + 2 ** -6, Infinity]);
    bf16.dispose();
  });

  it('a Uint16Array is taken as raw bits, NaN payloads included', () => {
    const bits = new Uint16Array([0x3c00, 0x7c01, 0xfe00, 0x7fff, 0x8000, 0x0001, 0x7c00]);
    for (const dtype of ['f16', 'bf16'] as const) {
      const t = Tensor.from(bits, { dtype, device: 'cpu' });
      expectSameBytes(t.toRawArray(), bits);
      t.dispose();
    }
  });

  it('typed-array views with a byte offset copy only the view', () => {
    const whole = Float32Array.from({ length: 16 }, (_, i) => i);
    const view = whole.subarray(5, 12);
    const t = Tensor.from(view, { device: 'cpu' });
    expect(Array.from(t.toArray())).toEqual([5, 6, 7, 8, 9, 10, 11]);
    t.dispose();
  });

  it('the data is copied: later changes to the source array do not show', () => {
    const data = new Float32Array([1, 2, 3]);
    const t = Tensor.from(data, { device: 'cpu' });
    data[0] = 42;
    expect(Array.from(t.toArray())).toEqual([1, 2, 3]);
    t.dispose();
  });

  it('the default device is defaultDevice()', () => {
    const a = Tensor.from([1]);
    const b = Tensor.empty([1]);
    const c = Tensor.zeros([1]);
    for (const t of [a, b, c]) {
      expect(t.device).toBe(defaultDevice());
      t.dispose();
    }
    expect(b.dtype).toBe('f32');
  });
});

describe('tensor properties', () => {
  it('shape is a frozen copy', () => {
    const shape = [2, 3];
    const t = Tensor.empty(shape, 'f32', 'cpu');
    shape[0] = 99;
    expect(t.shape).toEqual([2, 3]);
    expect(Object.isFrozen(t.shape)).toBe(true);
    t.dispose();
  });

  it('devicePointer is a distinct non-zero bigint per tensor', () => {
    const ts = [Tensor.empty([10], 'f32', 'cpu'), Tensor.empty([10], 'f32', 'cpu'), Tensor.empty([0], 'u8', 'cpu')];
    const ptrs = ts.map((t) => t.devicePointer);
    for (const p of ptrs) {
      expect(typeof p).toBe('bigint');
      expect(p).not.toBe(0n);
    }
    expect(new Set(ptrs).size).toBe(ptrs.length);
    ts.forEach((t) => t.dispose());
  });

  it('toString names dtype, shape, device and disposal', () => {
    const t = Tensor.empty([2, 3], 'bf16', 'cpu');
    expect(String(t)).toBe('Tensor(bf16, [2, 3], cpu)');
    t.dispose();
    expect(String(t)).toBe('Tensor(bf16, [2, 3], cpu, disposed)');
  });
});

describe('Tensor.fromDevicePointer on the CPU', () => {
  it('wraps another tensor memory without copying or owning it', () => {
    const data = testRng().normalArray(64);
    const base = Tensor.from(data, { device: 'cpu' });
    const before = memoryStats('cpu');
    const view = Tensor.fromDevicePointer(base.devicePointer, { shape: [8, 8], dtype: 'f32', device: 'cpu' });
    expect(view.devicePointer).toBe(base.devicePointer);
    expect(view.shape).toEqual([8, 8]);
    expect(memoryStats('cpu')).toEqual(before);
    expectSameBytes(view.toArray(), data);
    view.dispose();
    view.dispose();
    expect(memoryStats('cpu')).toEqual(before);
    // the original is still alive and intact
    expectSameBytes(base.toArray(), data);
    base.dispose();
  });

  it('an offset pointer and another dtype reinterpret the same bytes', () => {
    const data = Float32Array.from({ length: 10 }, (_, i) => i + 0.5);
    const base = Tensor.from(data, { device: 'cpu' });
    const tail = Tensor.fromDevicePointer(base.devicePointer + 8n, { shape: [8], dtype: 'f32', device: 'cpu' });
    expect(Array.from(tail.toArray())).toEqual(Array.from(data.subarray(2)));
    const bytes = Tensor.fromDevicePointer(base.devicePointer, { shape: [40], dtype: 'u8', device: 'cpu' });
    expectSameBytes(bytes.toArray(), new Uint8Array(data.buffer));
    // a copy of a wrapper is an ordinary owned tensor
    const copy = tail.to('cpu');
    tail.dispose();
    bytes.dispose();
    base.dispose();
    expect(Array.from(copy.toArray())).toEqual(Array.from(data.subarray(2)));
    copy.dispose();
  });

  it('rejects null, non-bigint and out-of-range pointers', () => {
    const opts = { shape: [1], dtype: 'f32', device: 'cpu' } as const;
    expectKvsiftError(
      () => Tensor.fromDevicePointer(0n, opts),
      'ERR_INVALID_ARG',
      'Tensor.fromDevicePointer: expected a non-null device pointer for ptr, but received 0n',
    );
    expectKvsiftError(
      () => Tensor.fromDevicePointer(4096 as unknown as bigint, opts),
      'ERR_INVALID_ARG',
      'Tensor.fromDevicePointer: expected a device pointer as a bigint for ptr, but received 4096',
    );
    expectKvsiftError(() => Tensor.fromDevicePointer(-16n, opts), 'ERR_INVALID_ARG', /expected a 64-bit address for ptr/);
    expectKvsiftError(() => Tensor.fromDevicePointer(1n << 64n, opts), 'ERR_INVALID_ARG', /expected a 64-bit address for ptr/);
  });

  // Why: any address was accepted; the contract (docs/ERRORS.md) keeps the cheap guards.
  it('rejects pointers not aligned to the dtype, and ranges past 2^64, in TypeScript and in the binding', () => {
    const base = Tensor.from(new Float32Array(8), { device: 'cpu' });
    for (const [dtype, size] of [['f32', 4], ['i32', 4], ['f16', 2], ['bf16', 2]] as const) {
      for (let off = 1n; off < BigInt(size); off++) {
        const ptr = base.devicePointer + off;
        expectKvsiftError(
          () => Tensor.fromDevicePointer(ptr, { shape: [2], dtype, device: 'cpu' }),
          'ERR_INVALID_ARG',
          `Tensor.fromDevicePointer: expected an address aligned to ${size} bytes (the size of ${dtype}) for ptr, but received ${ptr}n`,
        );
        expectKvsiftError(() => native.wrapPointer(ptr, 8, -1, size), 'ERR_INVALID_ARG', /^fromDevicePointer: expected an address aligned to \d bytes \(the dtype's size\) for ptr/);
      }
    }
    // u8 takes any address; an aligned offset pointer works
    Tensor.fromDevicePointer(base.devicePointer + 3n, { shape: [4], dtype: 'u8', device: 'cpu' }).dispose();
    Tensor.fromDevicePointer(base.devicePointer + 4n, { shape: [7], dtype: 'f32', device: 'cpu' }).dispose();
    const top = (1n << 64n) - 16n;
    expectKvsiftError(() => Tensor.fromDevicePointer(top, { shape: [8], dtype: 'f32', device: 'cpu' }), 'ERR_INVALID_ARG', /expected an address with 32 bytes below 2\^64 for ptr/);
    expectKvsiftError(() => native.wrapPointer(top, 32, -1, 4), 'ERR_INVALID_ARG', /expected a range that fits in the address space for ptr/);
    base.dispose();
  });

  it('rejects bad options', () => {
    expectKvsiftError(
      () => Tensor.fromDevicePointer(4096n, undefined as never),
      'ERR_INVALID_ARG',
      "Tensor.fromDevicePointer: expected one of 'f32', 'f16', 'bf16', 'i32', 'u8' for options.dtype, but received undefined",
    );
    expectKvsiftError(
      () => Tensor.fromDevicePointer(4096n, { shape: [-1], dtype: 'f32', device: 'cpu' }),
      'ERR_INVALID_ARG',
      'Tensor.fromDevicePointer: expected a non-negative integer below 2^31 for options.shape[0], but received -1',
    );
    expectKvsiftError(() => Tensor.fromDevicePointer(4096n, { shape: [1], dtype: 'f32', device: 'cuda:99' }), 'ERR_NO_DEVICE');
  });
});

describe('memory read through objects user code can change (issue 11)', () => {
  const n = 1 << 17; // 512 KiB of f32: blocks this big come back from the host cache
  /** Leaves a recognizable pattern in a freed host block that the next tensor of this size reuses. */
  function leaveStaleBlock(): void {
    Tensor.from(new Float32Array(n).fill(7), { device: 'cpu' }).dispose();
  }

  // Why: a getter that detached the data after its length was read gave a tensor of stale memory.
  it('a getter in the options that detaches the data: the data is read after it, never stale memory', () => {
    for (const key of ['shape', 'dtype', 'device', 'stream'] as const) {
      leaveStaleBlock();
      const data = new Float32Array(n).fill(1);
      const opts: Record<string, unknown> = { device: 'cpu', shape: [n] };
      Object.defineProperty(opts, key, {
        enumerable: true,
        get() {
          structuredClone(data.buffer, { transfer: [data.buffer] });
          return { shape: [n], dtype: 'f32', device: 'cpu', stream: undefined }[key];
        },
      });
      expectKvsiftError(() => Tensor.from(data, opts), 'ERR_INVALID_ARG', `Tensor.from: expected ${n} elements for shape [${n}] for data, but received 0 elements`);
    }
    // without a shape the tensor is the data as it is when read: empty
    const data = new Float32Array(n).fill(1);
    const t = Tensor.from(data, { get device() { structuredClone(data.buffer, { transfer: [data.buffer] }); return 'cpu' as const; } });
    expect(t.shape).toEqual([0]);
    t.dispose();
  });

  it('a getter that shrinks a resizable ArrayBuffer: the tensor holds what is there when read', () => {
    leaveStaleBlock();
    const ab = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer & { resize(n: number): void })(n * 4, { maxByteLength: n * 4 });
    const data = new Float32Array(ab).fill(2); // length-tracking
    expectKvsiftError(
      () => Tensor.from(data, { shape: [n], get device() { ab.resize(12); return 'cpu' as const; } }),
      'ERR_INVALID_ARG',
      `Tensor.from: expected ${n} elements for shape [${n}] for data, but received 3 elements`,
    );
    ab.resize(n * 4);
    const t = Tensor.from(data, { get device() { ab.resize(8); return 'cpu' as const; } });
    expectIdentical(t.toArray(), [2, 2]);
    t.dispose();
  });

  // Why: a TypedArray subclass claiming a longer length made a tensor of partly stale memory.
  it('a typed array that lies about its length is taken at its real length', () => {
    leaveStaleBlock();
    class Liar extends Float32Array {
      override get length(): number {
        return n;
      }
    }
    const liar = new Liar([1, 2, 3, 4]);
    expectKvsiftError(() => Tensor.from(liar, { shape: [n], device: 'cpu' }), 'ERR_INVALID_ARG', `Tensor.from: expected ${n} elements for shape [${n}] for data, but received 4 elements`);
    const t = Tensor.from(liar, { device: 'cpu', dtype: 'bf16' });
    expectIdentical(t.toArray(), [1, 2, 3, 4]);
    t.dispose();
    // a Proxy is not a typed array, whatever instanceof says
    const proxy = new Proxy(new Float32Array(4), {});
    expectKvsiftError(() => Tensor.from(proxy, { device: 'cpu' }), 'ERR_INVALID_ARG', /^Tensor\.from: expected a Float32Array, Uint16Array, Int32Array, Uint8Array or number\[\] for data, but received a Proxy$/);
  });

  it('the binding checks a source against the length the caller read, after all user code ran', () => {
    const t = Tensor.empty([4], 'f32', 'cpu');
    const data = new Float32Array(4);
    structuredClone(data.buffer, { transfer: [data.buffer] });
    expectKvsiftError(() => native.copyFromHost(t._buffer, 0, data, undefined, 16), 'ERR_INVALID_ARG', /^copyFromHost: expected a source of 16 bytes for src, but received 0 bytes/);
    expectKvsiftError(() => native.copyFromHost(t._buffer, 0, new Float32Array(3), undefined, 16), 'ERR_INVALID_ARG', /received 12 bytes/);
    t.dispose();
  });

  it('number[] data with getters is read once: what was checked is what is copied', () => {
    let reads = 0;
    const data = [1, 2, 3];
    Object.defineProperty(data, 1, { get: () => (++reads === 1 ? 5 : 'not a number'), enumerable: true });
    const t = Tensor.from(data, { device: 'cpu' });
    expectIdentical(t.toArray(), [1, 5, 3]);
    expect(reads).toBe(1);
    t.dispose();
    // a hole is not a 0
    // eslint-disable-next-line no-sparse-arrays
    expectKvsiftError(() => Tensor.from([1, , 3] as number[], { device: 'cpu' }), 'ERR_INVALID_ARG', 'Tensor.from: expected an element (holes are not allowed) for data[1], but received a hole');
  });

  // Why: a Proxy shape answering differently on each read produced tensors with shape [-2, -2].
  it('a Proxy shape is read once; a tensor with an invalid shape can never be made', () => {
    const reads = new Map<PropertyKey, number>();
    const shape = new Proxy([2, 2], {
      get(target, key, receiver) {
        const count = (reads.get(key) ?? 0) + 1;
        reads.set(key, count);
        if (typeof key === 'string' && /^\d+$/.test(key) && count > 1) return -2;
        return Reflect.get(target, key, receiver);
      },
    });
    for (const make of [() => Tensor.empty(shape, 'f32', 'cpu'), () => Tensor.zeros(shape, 'f32', 'cpu'), () => Tensor.from([1, 2, 3, 4], { shape, device: 'cpu' })]) {
      reads.clear();
      const t = make();
      expect(t.shape).toEqual([2, 2]);
      t.dispose();
    }
    const buf = native.alloc(-1, 16);
    const Ctor = Tensor as unknown as new (b: unknown, s: number[], d: string) => Tensor;
    expectKvsiftError(() => new Ctor(buf, [-2, -2], 'f32'), 'ERR_INVALID_ARG', 'Tensor: invalid f32 shape [-2, -2]');
    expectKvsiftError(() => new Ctor(buf, [1.5], 'f32'), 'ERR_INVALID_ARG');
    expectKvsiftError(() => new Ctor(buf, [8], 'f32'), 'ERR_INVALID_ARG', 'Tensor: shape [8] needs 32 bytes, but its buffer holds 16');
    buf.free();
  });
});

describe('dispose', () => {
  it('is idempotent and every later use throws ERR_DISPOSED', async () => {
    const t = Tensor.from([1, 2, 3], { device: 'cpu' });
    expect(t.disposed).toBe(false);
    t.dispose();
    expect(t.disposed).toBe(true);
    t.dispose();
    expect(t.disposed).toBe(true);
    const uses: [string, () => unknown][] = [
      ['toArray', () => t.toArray()],
      ['toRawArray', () => t.toRawArray()],
      ['to', () => t.to('cpu')],
      ['devicePointer', () => t.devicePointer],
    ];
    for (const [what, use] of uses) {
      expectKvsiftError(use, 'ERR_DISPOSED', `Tensor is disposed (${what})`);
    }
    const e = await rejectsKvsift(() => t.toArrayAsync());
    expect(e.code).toBe('ERR_DISPOSED');
    expect(e.message).toContain('disposed');
    // the metadata stays readable
    expect(t.shape).toEqual([3]);
    expect(t.byteLength).toBe(12);
  });
});

describe('memoryStats', () => {
  it('counts live tensors and bytes, and returns to the baseline after dispose', () => {
    const base = memoryStats('cpu');
    const made: Tensor[] = [];
    let bytes = 0;
    for (const dtype of DTYPES) {
      for (const shape of [[3, 5], [0], [1031]]) {
        made.push(Tensor.empty(shape, dtype, 'cpu'));
        bytes += shape.reduce((a, b) => a * b, 1) * dtypeBytes(dtype);
      }
    }
    const during = memoryStats('cpu');
    expect(during.liveTensors).toBe(base.liveTensors + made.length);
    expect(during.liveBytes).toBe(base.liveBytes + bytes);
    expect(during.peakBytes).toBeGreaterThanOrEqual(during.liveBytes);
    made.forEach((t) => t.dispose());
    made.forEach((t) => t.dispose());
    const after = memoryStats('cpu');
    expect(after.liveTensors).toBe(base.liveTensors);
    expect(after.liveBytes).toBe(base.liveBytes);
    expect(after.peakBytes).toBeGreaterThanOrEqual(base.liveBytes + bytes);
  });

  it('resetPeak brings the peak down to the live bytes', () => {
    const t = Tensor.empty([1 << 20], 'u8', 'cpu');
    t.dispose();
    expect(memoryStats('cpu').peakBytes).toBeGreaterThanOrEqual(1 << 20);
    memoryStats('cpu', { resetPeak: true });
    const s = memoryStats('cpu');
    expect(s.peakBytes).toBe(s.liveBytes);
  });

  it.each(DEVICES)('copies and failures leave nothing behind on %s', (device) => {
    const base = memoryStats(device);
    const a = Tensor.from(new Float32Array(100), { device });
    const b = a.to(device);
    expect(() => Tensor.from([1, 2, 3], { shape: [2, 2], device })).toThrow();
    expect(() => Tensor.from(new Int32Array(2), { dtype: 'f16', device })).toThrow();
    a.dispose();
    b.dispose();
    expect(memoryStats(device)).toMatchObject({ liveTensors: base.liveTensors, liveBytes: base.liveBytes });
  });

  it('rejects unknown devices', () => {
    expectKvsiftError(() => memoryStats('gpu' as Device), 'ERR_INVALID_ARG', "memoryStats: expected 'cpu' or 'cuda:N' for device, but received 'gpu'");
    expectKvsiftError(() => memoryStats('cuda:99'), 'ERR_NO_DEVICE');
  });
});

describe('finalizer', () => {
  it('frees tensors that were never disposed once they are garbage collected', async () => {
    const base = memoryStats('cpu');
    const n = 300;
    (() => {
      for (let i = 0; i < n; i++) Tensor.from(new Float32Array(256), { device: 'cpu' });
    })();
    // some may already be collected (the buffers report external memory to V8), not all
    expect(memoryStats('cpu').liveTensors).toBeGreaterThan(base.liveTensors);
    const collected = await collectUntil(() => memoryStats('cpu').liveTensors <= base.liveTensors);
    expect(collected, `liveTensors still ${memoryStats('cpu').liveTensors}, baseline ${base.liveTensors}`).toBe(true);
    expect(memoryStats('cpu').liveBytes).toBe(base.liveBytes);
  });

  it('a collected wrapper never frees the memory it wraps', async () => {
    const data = testRng().normalArray(32);
    const base = Tensor.from(data, { device: 'cpu' });
    const stats = memoryStats('cpu');
    (() => {
      for (let i = 0; i < 100; i++) Tensor.fromDevicePointer(base.devicePointer, { shape: [32], dtype: 'f32', device: 'cpu' });
    })();
    await collectUntil(() => false, 5);
    expect(memoryStats('cpu')).toMatchObject({ liveTensors: stats.liveTensors, liveBytes: stats.liveBytes });
    expectSameBytes(base.toArray(), data);
    base.dispose();
  });
});
