import { pbkdf2 } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { cudaDeviceCount, defaultDevice, h2o, memoryStats, snapkv, Stream, synchronize, Tensor, type Device } from '../lib/index';
import { allDevices, CUDA_EMULATED, cudaDevices, describeCuda, expectKvsiftError, expectSameBytes, nmse as nmseOf, rejectsKvsift, testRng } from './helpers';

describe('streams on the CPU', () => {
  it('Stream.create("cpu") makes a usable stream whose synchronize resolves', async () => {
    const s = Stream.create('cpu');
    expect(s.device).toBe('cpu');
    expect(typeof s.handle).toBe('bigint');
    expect(s.disposed).toBe(false);
    await expect(s.synchronize()).resolves.toBeUndefined();
    s.dispose();
  });

  it('Stream.create() defaults to defaultDevice()', () => {
    const s = Stream.create();
    expect(s.device).toBe(defaultDevice());
    s.dispose();
  });

  it('Stream.default is the 0n handle and may be disposed without effect', async () => {
    const s = Stream.default('cpu');
    expect(s.handle).toBe(0n);
    await s.synchronize();
    s.dispose();
  });

  it('ops and copies take a CPU stream', async () => {
    const s = Stream.create('cpu');
    const data = testRng().normalArray(513);
    const t = Tensor.from(data, { device: 'cpu', stream: s });
    expectSameBytes(t.toArray({ stream: s }), data);
    expectSameBytes(await t.toArrayAsync({ stream: s }), data);
    expectSameBytes(t.toRawArray({ stream: s }), data);
    const u = t.to('cpu', { stream: s });
    const z = Tensor.zeros([4], 'f32', 'cpu', { stream: s });
    const e = Tensor.empty([4], 'f32', 'cpu', { stream: s });
    await s.synchronize();
    expectSameBytes(u.toArray(), data);
    expect(Array.from(z.toArray())).toEqual([0, 0, 0, 0]);
    for (const x of [t, u, z, e]) x.dispose();
    s.dispose();
  });

  it('dispose is idempotent, and use after dispose throws ERR_DISPOSED', async () => {
    const s = Stream.create('cpu');
    s.dispose();
    s.dispose();
    expect(s.disposed).toBe(true);
    expectKvsiftError(() => s.handle, 'ERR_DISPOSED', 'Stream is disposed (handle)');
    const e = await rejectsKvsift(() => s.synchronize());
    expect(e.code).toBe('ERR_DISPOSED');
    expect(e.message).toBe('Stream is disposed (synchronize)');
    // a disposed stream passed to an op
    expectKvsiftError(() => Tensor.from([1], { device: 'cpu', stream: s }), 'ERR_DISPOSED', /disposed/);
    const t = Tensor.from([1], { device: 'cpu' });
    expectKvsiftError(() => t.toArray({ stream: s }), 'ERR_DISPOSED', /disposed/);
    t.dispose();
  });

  it('await synchronize("cpu") resolves, and synchronize() uses the default device', async () => {
    await expect(synchronize('cpu')).resolves.toBeUndefined();
    await expect(synchronize()).resolves.toBeUndefined();
  });

  it('synchronize rejects bad devices (as a rejected promise, not a throw)', async () => {
    const bad = synchronize('gpu' as Device);
    expect(bad).toBeInstanceOf(Promise);
    const e = await rejectsKvsift(bad);
    expect(e.code).toBe('ERR_INVALID_ARG');
    expect(e.message).toBe("synchronize: expected 'cpu' or 'cuda:N' for device, but received 'gpu'");
    expect((await rejectsKvsift(synchronize('cuda:99'))).code).toBe('ERR_NO_DEVICE');
  });

  it('Stream.create rejects bad devices', () => {
    expectKvsiftError(() => Stream.create('gpu' as Device), 'ERR_INVALID_ARG', "Stream.create: expected 'cpu' or 'cuda:N' for device, but received 'gpu'");
    expectKvsiftError(() => Stream.create('cuda:99'), 'ERR_NO_DEVICE', /^Stream\.create: no such device 'cuda:99'/);
  });
});

describe('async reads are snapshots (issue 11)', () => {
  /** Occupies libuv's threads, so that anything an async read might leave to them runs late. */
  function busyThreadPool(): Promise<unknown> {
    return Promise.all(Array.from({ length: 8 }, () => new Promise((done) => pbkdf2('kvsift', 'salt', 40_000, 32, 'sha256', done))));
  }

  // Why: on the CPU a read copied on a worker thread, after in-place ops issued later (torn reads).
  it.each(allDevices())('on %s toArrayAsync sees the tensor as of the call, whatever in-place work and disposal follow', async (device) => {
    const rng = testRng();
    const H = 8;
    const N = 1024;
    const q = Tensor.from(rng.normalArray(H * 2), { shape: [1, H, 1, 2], device });
    const k = Tensor.from(rng.normalArray(H * N * 2), { shape: [1, H, N, 2], device });
    const s = Tensor.zeros([1, H, N], 'f32', device);
    for (let round = 0; round < 3; round++) {
      const busy = busyThreadPool();
      const before = s.toArray();
      const read = s.toArrayAsync();
      const rawRead = s.toArrayAsync();
      h2o.accumulate(q, k, s); // in place, issued after the reads
      expectSameBytes(await read, before, `round ${round}`);
      expectSameBytes(await rawRead, before, `round ${round} (second read)`);
      await busy;
    }
    // a read, then dispose and a new tensor that may reuse the memory
    const data = rng.normalArray(1 << 17);
    const t = Tensor.from(data, { device });
    const read = t.toArrayAsync();
    t.dispose();
    const other = Tensor.from(new Float32Array(1 << 17).fill(3), { device });
    expectSameBytes(await read, data);
    for (const x of [q, k, s, other]) x.dispose();
  });
});

describe('Stream.fromHandle', () => {
  it('rejects handles that are not 64-bit bigints', () => {
    const expected = 'a cudaStream_t as a bigint';
    expectKvsiftError(() => Stream.fromHandle(5 as unknown as bigint, 'cpu'), 'ERR_INVALID_ARG', `Stream.fromHandle: expected ${expected} for handle, but received 5`);
    expectKvsiftError(() => Stream.fromHandle('0x10' as unknown as bigint, 'cpu'), 'ERR_INVALID_ARG', `Stream.fromHandle: expected ${expected} for handle, but received '0x10'`);
    expectKvsiftError(() => Stream.fromHandle(undefined as unknown as bigint, 'cpu'), 'ERR_INVALID_ARG', `Stream.fromHandle: expected ${expected} for handle, but received undefined`);
    expectKvsiftError(() => Stream.fromHandle(-1n, 'cpu'), 'ERR_INVALID_ARG', `Stream.fromHandle: expected ${expected} for handle, but received -1n`);
    expectKvsiftError(() => Stream.fromHandle(1n << 64n, 'cpu'), 'ERR_INVALID_ARG', `Stream.fromHandle: expected ${expected} for handle, but received 18446744073709551616n`);
  });

  it('rejects bad devices', () => {
    expectKvsiftError(() => Stream.fromHandle(0n, 'gpu' as Device), 'ERR_INVALID_ARG', "Stream.fromHandle: expected 'cpu' or 'cuda:N' for device, but received 'gpu'");
    expectKvsiftError(() => Stream.fromHandle(0n, 'cuda:99'), 'ERR_NO_DEVICE');
  });

  it('wraps a handle without owning it', async () => {
    const s = Stream.fromHandle(0n, 'cpu');
    expect(s.handle).toBe(0n);
    expect(s.device).toBe('cpu');
    await s.synchronize();
    s.dispose();
    s.dispose();
    expect(s.disposed).toBe(true);
  });
});

describeCuda('streams on CUDA', () => {
  const device = (cudaDevices()[0] ?? 'cuda:0') as Device;

  it('Stream.create makes a non-default stream; synchronize resolves', async () => {
    const s = Stream.create(device);
    expect(s.device).toBe(device);
    expect(s.handle).not.toBe(0n);
    await s.synchronize();
    s.dispose();
    s.dispose();
    expectKvsiftError(() => s.handle, 'ERR_DISPOSED', /disposed/);
  });

  it('tensors made, copied and read back on a stream are exact (toArrayAsync on the stream)', async () => {
    const s = Stream.create(device);
    const rng = testRng();
    const data = rng.normalArray(1 << 20);
    const t = Tensor.from(data, { device, stream: s });
    const u = t.to(device, { stream: s });
    const h = u.to('cpu', { stream: s });
    expectSameBytes(await u.toArrayAsync({ stream: s }), data, 'toArrayAsync');
    expectSameBytes(u.toArray({ stream: s }), data, 'toArray');
    expectSameBytes(h.toArray(), data, 'to(cpu)');
    const z = Tensor.zeros([1000], 'bf16', device, { stream: s });
    expect((await z.toArrayAsync({ stream: s })).every((v) => v === 0)).toBe(true);
    for (const x of [t, u, h, z]) x.dispose();
    await s.synchronize();
    s.dispose();
  });

  it('work on several streams at once completes independently', async () => {
    const rng = testRng();
    const streams = Array.from({ length: 4 }, () => Stream.create(device));
    const inputs = streams.map(() => rng.normalArray(100_003));
    const tensors = streams.map((s, i) => Tensor.from(inputs[i], { device, stream: s }));
    const outs = await Promise.all(tensors.map((t, i) => t.toArrayAsync({ stream: streams[i] })));
    outs.forEach((o, i) => expectSameBytes(o, inputs[i], `stream ${i}`));
    tensors.forEach((t) => t.dispose());
    await Promise.all(streams.map((s) => s.synchronize()));
    streams.forEach((s) => s.dispose());
  });

  // Why: a buffer used on two streams was freed in the order of the last one only.
  it('a buffer used on several streams is reused only after all of them reached its free (record-stream)', async () => {
    const rng = testRng();
    const a = Stream.create(device);
    const b = Stream.create(device);
    // The emulated device runs streams in host order (it cannot show the race) and runs kernels
    // on the CPU: a smaller cache and queue keep the same calls affordable there.
    const N = CUDA_EMULATED ? 512 : 4096;
    const queue = CUDA_EMULATED ? 4 : 16;
    const shape = [1, 8, N, 64];
    const qData = rng.normalArray(8 * 4 * 64);
    const kData = rng.normalArray(8 * N * 64);
    const q = Tensor.from(qData, { shape: [1, 8, 4, 64], device });
    const expected = (() => {
      const qc = Tensor.from(qData, { shape: [1, 8, 4, 64], device: 'cpu' });
      const kc = Tensor.from(kData, { shape, device: 'cpu' });
      const out = snapkv.scores(qc, kc, { window: 4 });
      const r = out.toArray();
      for (const t of [qc, kc, out]) t.dispose();
      return r;
    })();
    for (let round = 0; round < 3; round++) {
      const k = Tensor.from(kData, { shape, device, stream: b });
      await b.synchronize();
      // a long queue on a reads k...
      const outs = Array.from({ length: queue }, () => snapkv.scores(q, k, { window: 4, stream: a }));
      // ...its last use is on b, so its free is issued on b: b must first wait for a
      const copy = k.to(device, { stream: b });
      k.dispose();
      // same size on b: the pool hands back k's block at once, in b's order
      const clobber = Tensor.zeros(shape, 'f32', device, { stream: b });
      for (const [i, o] of outs.entries()) {
        expect(nmseOf(await o.toArrayAsync({ stream: a }), expected), `round ${round}, op ${i}`).toBeLessThan(1e-6);
        o.dispose();
      }
      for (const t of [copy, clobber]) t.dispose();
    }
    await synchronize(device);
    for (const x of [a, b, q]) x.dispose();
  });

  it('a tensor disposed right after toArrayAsync still reads correctly', async () => {
    const s = Stream.create(device);
    const data = testRng().normalArray(1 << 18);
    const t = Tensor.from(data, { device, stream: s });
    const p = t.toArrayAsync({ stream: s });
    t.dispose();
    expectSameBytes(await p, data);
    await s.synchronize();
    s.dispose();
  });

  it('Stream.fromHandle wraps a live cudaStream_t without destroying it', async () => {
    const owner = Stream.create(device);
    const wrapped = Stream.fromHandle(owner.handle, device);
    const t = Tensor.from([1, 2, 3], { device, stream: wrapped });
    await wrapped.synchronize();
    wrapped.dispose();
    // the owner's stream still works
    expect(Array.from(await t.toArrayAsync({ stream: owner }))).toEqual([1, 2, 3]);
    t.dispose();
    await owner.synchronize();
    owner.dispose();
  });

  it('await synchronize(device) waits for the whole device', async () => {
    const s = Stream.create(device);
    const t = Tensor.zeros([1 << 22], 'f32', device, { stream: s });
    await synchronize(device);
    t.dispose();
    await synchronize(device);
    s.dispose();
  });

  it('a stream on another device is ERR_DEVICE_MISMATCH', () => {
    const s = Stream.create(device);
    const cpuStream = Stream.create('cpu');
    const onCpu = Tensor.from([1, 2], { device: 'cpu' });
    const onGpu = Tensor.from([1, 2], { device });
    try {
      expectKvsiftError(() => onCpu.toArray({ stream: s }), 'ERR_DEVICE_MISMATCH', `toArray: stream is on ${device} but the tensors are on cpu`);
      expectKvsiftError(() => onGpu.toArray({ stream: cpuStream }), 'ERR_DEVICE_MISMATCH', `toArray: stream is on cpu but the tensors are on ${device}`);
      expectKvsiftError(() => Tensor.from([1], { device: 'cpu', stream: s }), 'ERR_DEVICE_MISMATCH', `Tensor.from: stream is on ${device} but the tensors are on cpu`);
      expectKvsiftError(() => Tensor.empty([1], 'f32', 'cpu', { stream: s }), 'ERR_DEVICE_MISMATCH', /^Tensor\.empty: stream is on/);
      expectKvsiftError(() => onGpu.toRawArray({ stream: cpuStream }), 'ERR_DEVICE_MISMATCH', /^toRawArray: stream is on cpu/);
      // to(): the stream belongs to the CUDA side of the copy
      expectKvsiftError(() => onCpu.to(device, { stream: cpuStream }), 'ERR_DEVICE_MISMATCH', /^Tensor\.to: stream is on cpu/);
      const back = onGpu.to('cpu', { stream: s });
      expect(Array.from(back.toArray())).toEqual([1, 2]);
      back.dispose();
    } finally {
      onCpu.dispose();
      onGpu.dispose();
      s.dispose();
      cpuStream.dispose();
    }
  });

  it('a stream on cuda:1 with tensors on cuda:0 is ERR_DEVICE_MISMATCH (two GPUs only)', () => {
    if (cudaDeviceCount() < 2) return;
    const s = Stream.create('cuda:1');
    const t = Tensor.from([1], { device: 'cuda:0' });
    expectKvsiftError(() => t.toArray({ stream: s }), 'ERR_DEVICE_MISMATCH', 'toArray: stream is on cuda:1 but the tensors are on cuda:0');
    t.dispose();
    s.dispose();
  });

  it('memoryStats on the device returns to its baseline', async () => {
    const base = memoryStats(device);
    const s = Stream.create(device);
    const ts = [Tensor.empty([1000], 'f32', device, { stream: s }), Tensor.zeros([333], 'bf16', device), Tensor.from(new Int32Array(7), { device })];
    const during = memoryStats(device);
    expect(during.liveTensors).toBe(base.liveTensors + 3);
    expect(during.liveBytes).toBe(base.liveBytes + 4000 + 666 + 28);
    ts.forEach((t) => t.dispose());
    await s.synchronize();
    s.dispose();
    expect(memoryStats(device)).toMatchObject({ liveTensors: base.liveTensors, liveBytes: base.liveBytes });
  });

  it('fromDevicePointer wraps device memory without owning it', () => {
    const data = testRng().normalArray(64);
    const base = Tensor.from(data, { device });
    const stats = memoryStats(device);
    const view = Tensor.fromDevicePointer(base.devicePointer + 16n, { shape: [60], dtype: 'f32', device });
    expectSameBytes(view.toArray(), data.subarray(4));
    view.dispose();
    expect(memoryStats(device)).toEqual(stats);
    expectSameBytes(base.toArray(), data);
    base.dispose();
  });
});
