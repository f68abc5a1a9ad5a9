/**
 * Tensor primitives: view (zero copy, the disposal rule), copy along an axis at an offset,
 * Tensor.fromHostArray over engine-owned memory (writes both ways, detached and shrunk buffers
 * never read), memoryStats' cache and transfer counters with trimMemory, and toArray's types.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import { copy, l2, memoryStats, Tensor, transferStats, trimMemory, type Device } from '../lib/index';
import { cudaDevices, describeCuda, describeEachDevice, expectKvsiftError, testRng } from './helpers';

describe('Tensor.view', () => {
  it('reshapes without copying', () => {
    const t = Tensor.from(Float32Array.from({ length: 24 }, (_, i) => i), { shape: [2, 3, 4], device: 'cpu' });
    const v = t.view([6, 4]);
    expect(v.shape).toEqual([6, 4]);
    expect(v.devicePointer).toBe(t.devicePointer);
    expect(v.isView).toBe(true);
    expect(t.isView).toBe(false);
    expect(Array.from(v.toArray())).toEqual(Array.from(t.toArray()));
    // a write through the view is seen by the base
    copy(v, Tensor.from([100, 101, 102, 103], { shape: [1, 4], device: 'cpu' }), { axis: 0, offset: 5 });
    expect(Array.from(t.toArray().subarray(20))).toEqual([100, 101, 102, 103]);
    t.dispose();
  });

  it('disposing a view leaves the base; disposing the base ends every view (ERR_DISPOSED, never freed memory)', () => {
    const t = Tensor.zeros([4, 4], 'f32', 'cpu');
    const a = t.view([16]);
    const b = a.view([2, 8]);
    a.dispose();
    expect(a.disposed).toBe(true);
    expect(t.disposed).toBe(false);
    expect(b.toArray()).toHaveLength(16);
    const live = memoryStats('cpu').liveTensors;
    t.dispose();
    expect(memoryStats('cpu').liveTensors).toBe(live - 1);
    expect(b.disposed).toBe(true);
    expectKvsiftError(() => b.toArray(), 'ERR_DISPOSED', 'Tensor is disposed (toArray): its base tensor was disposed');
    expectKvsiftError(() => b.devicePointer, 'ERR_DISPOSED');
    expectKvsiftError(() => l2.norms(b.view([1, 1, 2, 8])), 'ERR_DISPOSED');
  });

  it('checks the element count', () => {
    const t = Tensor.zeros([2, 3], 'bf16', 'cpu');
    expectKvsiftError(() => t.view([4, 2]), 'ERR_INVALID_ARG', "Tensor.view: expected 6 elements (the tensor's [2, 3]) for shape, but received [4, 2] (8 elements)");
    expectKvsiftError(() => t.view([-1, 6] as never), 'ERR_INVALID_ARG', /shape\[0\]/);
    t.dispose();
  });
});

describeEachDevice('copy', (device) => {
  it('places src at an offset along any axis, every dtype', () => {
    const rng = testRng();
    for (const dtype of ['f32', 'f16', 'bf16', 'i32', 'u8'] as const) {
      for (let rep = 0; rep < 6; rep++) {
        const rank = rng.int(1, 5);
        const dshape = Array.from({ length: rank }, () => rng.int(1, 5));
        const axis = rng.int(0, rank - 1);
        const sshape = dshape.slice();
        sshape[axis] = rng.int(0, dshape[axis]);
        const offset = rng.int(0, dshape[axis] - sshape[axis]);
        const dn = dshape.reduce((a, b) => a * b, 1);
        const sn = sshape.reduce((a, b) => a * b, 1);
        const dd = dtype === 'f32' ? rng.normalArray(dn) : dtype === 'i32' ? rng.intArray(dn, -1000, 1000) : dtype === 'u8' ? rng.bytes(dn) : rng.bits16(dn);
        const sd = dtype === 'f32' ? rng.normalArray(sn) : dtype === 'i32' ? rng.intArray(sn, -1000, 1000) : dtype === 'u8' ? rng.bytes(sn) : rng.bits16(sn);
        const dst = Tensor.from(dd, { shape: dshape, dtype, device });
        const src = Tensor.from(sd, { shape: sshape, dtype, device });
        expect(copy(dst, src, { axis: axis - (rep % 2 === 0 ? 0 : rank), offset })).toBe(dst);
        // reference: walk dst's indices
        const want = dd.slice();
        const idx = new Array(rank).fill(0);
        for (let i = 0; i < sn; i++) {
          let rest = i;
          for (let a = rank - 1; a >= 0; a--) {
            idx[a] = rest % sshape[a];
            rest = Math.floor(rest / sshape[a]);
          }
          let flat = 0;
          for (let a = 0; a < rank; a++) flat = flat * dshape[a] + (a === axis ? idx[a] + offset : idx[a]);
          want[flat] = sd[i];
        }
        expect(Array.from(dst.toRawArray()), `${dtype} [${dshape}] <- [${sshape}] axis ${axis} offset ${offset}`).toEqual(Array.from(want));
        dst.dispose();
        src.dispose();
      }
    }
  });
});

describe('copy', () => {
  it('errors', () => {
    const d = Tensor.zeros([2, 5, 3], 'f32', 'cpu');
    const s = Tensor.zeros([2, 2, 3], 'f32', 'cpu');
    expectKvsiftError(() => copy(d, s, { axis: 1 } as never), 'ERR_INVALID_ARG', 'copy: expected an integer >= 0 for options.offset, but received undefined');
    expectKvsiftError(() => copy(d, s, { offset: 0 } as never), 'ERR_INVALID_ARG', 'copy: expected an integer in [-3, 2] for options.axis, but received undefined');
    expectKvsiftError(() => copy(d, s, { axis: 1, offset: 4 }), 'ERR_INVALID_ARG', 'copy: expected an integer in [0, 3] for options.offset, but received 4');
    expectKvsiftError(() => copy(d, s, { axis: 0, offset: 0 }), 'ERR_INVALID_ARG', "copy: expected dst's shape [2, 5, 3] on every axis but 0 for src, but received shape [2, 2, 3]");
    const h = Tensor.zeros([2, 2, 3], 'bf16', 'cpu');
    expectKvsiftError(() => copy(d, h, { axis: 1, offset: 0 }), 'ERR_INVALID_ARG', "copy: expected dst's dtype 'f32' for src.dtype, but received 'bf16'");
    expectKvsiftError(() => copy(d, d.view([2, 5, 3]), { axis: 1, offset: 0 }), 'ERR_INVALID_ARG', 'copy: expected a tensor that does not share storage with dst for src, but received a view of dst');
    for (const t of [d, s, h]) t.dispose();
  });
});

describe('Tensor.fromHostArray', () => {
  it('shares the engine-owned memory both ways, without copying', () => {
    const past = new Float32Array(2 * 3 * 4);
    const k = Tensor.fromHostArray(past, { shape: [2, 3, 4] });
    expect(k.device).toBe('cpu');
    expect(k.dtype).toBe('f32');
    past[5] = 7;
    expect(k.toArray()[5]).toBe(7);
    copy(k.view([6, 4]), Tensor.from([1, 2, 3, 4], { shape: [1, 4], device: 'cpu' }), { axis: 0, offset: 2 });
    expect(Array.from(past.subarray(8, 12))).toEqual([1, 2, 3, 4]);
    const fromHost = transferStats('cpu').fromHostBytes;
    const live = memoryStats('cpu').liveBytes;
    const n = l2.norms(Tensor.fromHostArray(past, { shape: [1, 2, 3, 4] }));
    expect(transferStats('cpu').fromHostBytes).toBe(fromHost); // no upload happened
    expect(n.toArray()[1]).toBe(7);
    expect(n.toArray()[2]).toBeCloseTo(Math.hypot(1, 2, 3, 4), 5);
    n.dispose();
    expect(memoryStats('cpu').liveBytes).toBe(live);
    // a sub-range of a larger buffer, raw half bits, and i32
    const big = new Uint16Array(10);
    const half = Tensor.fromHostArray(big.subarray(2, 6), { shape: [2, 2], dtype: 'f16' });
    big[2] = 0x3c00;
    expect(half.toArray()[0]).toBe(1);
    const ids = Tensor.fromHostArray(new Int32Array([4, 5, 6]));
    expectTypeOf(ids.toArray()).toEqualTypeOf<Int32Array>();
    expectTypeOf(k.toArray()).toEqualTypeOf<Float32Array>();
    expect(Array.from(ids.toArray())).toEqual([4, 5, 6]);
    const raw = Tensor.fromHostArray(new ArrayBuffer(8), { dtype: 'bf16' });
    expect(raw.shape).toEqual([4]);
  });

  it('a detached buffer is never read: every later use throws ERR_DISPOSED', async () => {
    const buf = new Float32Array(16).fill(3);
    const t = Tensor.fromHostArray(buf, { shape: [4, 4] });
    structuredClone(buf.buffer, { transfer: [buf.buffer] }); // detaches it
    expectKvsiftError(() => t.toArray(), 'ERR_DISPOSED', /ArrayBuffer \(Tensor\.fromHostArray\) was detached or resized below the tensor's 64 bytes; nothing was read/);
    await expect(t.toArrayAsync()).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    expectKvsiftError(() => l2.norms(t.view([1, 1, 4, 4])), 'ERR_DISPOSED');
    expect(t.devicePointer).toBe(0n);
    t.dispose();
  });

  it('a resizable buffer shrunk below the tensor is never read', () => {
    const ab = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer & { resize(n: number): void })(64, { maxByteLength: 128 });
    const t = Tensor.fromHostArray(ab, { shape: [16], dtype: 'f32' });
    expect(t.toArray()).toHaveLength(16);
    ab.resize(32);
    expectKvsiftError(() => t.toArray(), 'ERR_DISPOSED');
    ab.resize(96);
    expect(t.toArray()).toHaveLength(16); // covered again: usable again
    t.dispose();
  });

  it('errors', () => {
    expectKvsiftError(() => Tensor.fromHostArray(new Uint16Array(4)), 'ERR_INVALID_ARG', 'Tensor.fromHostArray: expected a dtype for a Uint16Array for options.dtype, but received undefined');
    expectKvsiftError(() => Tensor.fromHostArray(new Float32Array(4), { dtype: 'bf16' }), 'ERR_INVALID_ARG', "Tensor.fromHostArray: expected a dtype of 4-byte elements for Float32Array for options.dtype, but received 'bf16'");
    expectKvsiftError(() => Tensor.fromHostArray(new Float32Array(6), { shape: [2, 2] }), 'ERR_INVALID_ARG', 'Tensor.fromHostArray: expected 16 bytes for shape [2, 2] of f32 for array, but received 24 bytes');
    expectKvsiftError(() => Tensor.fromHostArray(new Float32Array(new SharedArrayBuffer(16))), 'ERR_INVALID_ARG', /not a SharedArrayBuffer/);
    expectKvsiftError(() => Tensor.fromHostArray([1, 2] as never), 'ERR_INVALID_ARG', /an ArrayBuffer, Float32Array/);
    expectKvsiftError(() => Tensor.fromHostArray(new Uint8Array(6).subarray(1, 5), { dtype: 'f32' }), 'ERR_INVALID_ARG', 'Tensor.fromHostArray: expected a byteOffset that is a multiple of 4 for array, but received 1');
  });
});

describe('memoryStats, trimMemory and transferStats', () => {
  it('reports the host caching allocator and releases it', () => {
    trimMemory('cpu');
    expect(memoryStats('cpu').cachedBytes).toBe(0);
    const big = Tensor.empty([1 << 20], 'f32', 'cpu'); // 4 MiB: kept by the cache when freed
    big.dispose();
    // Sanitizer builds have no host cache (ASan must see every free): nothing is kept there.
    const underAsan = /libasan/.test(process.env.LD_PRELOAD ?? '');
    expect(memoryStats('cpu').cachedBytes).toBeGreaterThanOrEqual(underAsan ? 0 : 4 << 20);
    trimMemory('cpu');
    expect(memoryStats('cpu').cachedBytes).toBe(0);
    const again = Tensor.zeros([1 << 20], 'f32', 'cpu');
    expect(again.toArray()[123]).toBe(0);
    again.dispose();
    expectKvsiftError(() => trimMemory('gpu' as Device), 'ERR_INVALID_ARG');
  });

  it('counts bytes crossing to and from JS memory', () => {
    const s0 = transferStats('cpu');
    const t = Tensor.from(new Float32Array(10), { device: 'cpu' });
    t.toArray();
    t.toRawArray();
    const s1 = transferStats('cpu');
    expect(s1.fromHostBytes - s0.fromHostBytes).toBe(40);
    expect(s1.toHostBytes - s0.toHostBytes).toBe(80);
    t.dispose();
  });
});

describe('toArray types', () => {
  it('are generic over the dtype', () => {
    const i = Tensor.zeros([2], 'i32', 'cpu');
    expectTypeOf(i.toArray()).toEqualTypeOf<Int32Array>();
    expectTypeOf(i.toArrayAsync()).resolves.toEqualTypeOf<Int32Array>();
    const h = Tensor.zeros([2], 'bf16', 'cpu');
    expectTypeOf(h.toArray()).toEqualTypeOf<Float32Array>();
    expectTypeOf(h.toRawArray()).toEqualTypeOf<Uint16Array>();
    const u = Tensor.from(new Uint8Array(2), { dtype: 'u8', device: 'cpu' });
    expectTypeOf(u.toArray()).toEqualTypeOf<Uint8Array>();
    const p = l2.compress(Tensor.zeros([1, 1, 4, 2], 'f32', 'cpu'), Tensor.zeros([1, 1, 4, 2], 'f32', 'cpu'), { capacity: 2 }).positions;
    expectTypeOf(p.toArray()).toEqualTypeOf<Int32Array>();
    expect(p.toArray()).toBeInstanceOf(Int32Array);
    for (const t of [i, h, u, p]) t.dispose();
  });
});

describeCuda('primitives cuda', () => {
  for (const device of cudaDevices()) {
    it(`${device}: views and copies match the CPU`, () => {
      const rng = testRng();
      const data = rng.normalArray(3 * 7 * 5);
      const src = rng.normalArray(3 * 2 * 5);
      const out: Float32Array[] = [];
      for (const dev of ['cpu', device] as const) {
        const d = Tensor.from(data, { shape: [3, 7, 5], dtype: 'bf16', device: dev });
        copy(d.view([3, 35]), Tensor.from(src, { shape: [3, 10], dtype: 'bf16', device: dev }), { axis: 1, offset: 20 });
        out.push(d.toArray());
        d.dispose();
      }
      expect(out[1]).toEqual(out[0]);
      const s0 = transferStats(device).toHostBytes;
      const t = Tensor.zeros([8], 'f32', device);
      t.toArray();
      expect(transferStats(device).toHostBytes - s0).toBe(32);
      t.dispose();
      trimMemory(device);
      expect(memoryStats(device).cachedBytes).toBeGreaterThanOrEqual(0);
    });
  }
});
