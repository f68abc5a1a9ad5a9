/**
 * Argument validation: one message template everywhere,
 *   "<op>: expected <expected> for <name>, but received <received>",
 * with a stable code; TypeScript checks for users, and the native layer re-checks everything
 * memory safety depends on (tested here by calling the binding directly).
 */
import { describe, expect, it } from 'vitest';
import { evict, h2o, keyformer, KvsiftError, l2, memoryStats, snapkv, Stream, Tensor, topk, tova, type Device, type DType } from '../lib/index';
import { native } from '../lib/native';
import { catchKvsift, expectIdentical, expectKvsiftError, testRng } from './helpers';
import { describeChild, runChild } from './scripts/child';

const DTYPE_LIST = "one of 'f32', 'f16', 'bf16', 'i32', 'u8'";

describe('KvsiftError', () => {
  it('is an Error with a name, a code and a stack', () => {
    const e = catchKvsift(() => Tensor.empty([-1], 'f32', 'cpu'));
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(KvsiftError);
    expect(e.name).toBe('KvsiftError');
    expect(e.code).toBe('ERR_INVALID_ARG');
    expect(typeof e.stack).toBe('string');
  });

  it('errors raised by the native layer are KvsiftErrors too', () => {
    const e = catchKvsift(() => native.alloc(-1, -5));
    expect(e).toBeInstanceOf(KvsiftError);
    expect(e.code).toBe('ERR_INVALID_ARG');
    expect(e.message).toBe('alloc: expected an integer in [0, 9007199254740991] for bytes, but received -5');
  });
});

describe('shapes', () => {
  const shapeCases: [string, unknown, string][] = [
    ['negative', [2, -1], 'Tensor.empty: expected a non-negative integer below 2^31 for shape[1], but received -1'],
    ['non-integer', [1.5], 'Tensor.empty: expected a non-negative integer below 2^31 for shape[0], but received 1.5'],
    ['NaN', [3, NaN], 'Tensor.empty: expected a non-negative integer below 2^31 for shape[1], but received NaN'],
    ['Infinity', [Infinity], 'Tensor.empty: expected a non-negative integer below 2^31 for shape[0], but received Infinity'],
    ['a string dimension', ['4'], "Tensor.empty: expected a non-negative integer below 2^31 for shape[0], but received '4'"],
    ['2^31', [2 ** 31], 'Tensor.empty: expected a non-negative integer below 2^31 for shape[0], but received 2147483648'],
    ['a number', 4, 'Tensor.empty: expected an array of non-negative integers for shape, but received 4'],
    ['null', null, 'Tensor.empty: expected an array of non-negative integers for shape, but received null'],
    ['a string', '2,2', "Tensor.empty: expected an array of non-negative integers for shape, but received '2,2'"],
    ['9 dimensions', [1, 1, 1, 1, 1, 1, 1, 1, 1], 'Tensor.empty: expected at most 8 dimensions for shape, but received 9'],
    [
      'an overflowing byte size',
      [2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1],
      'Tensor.empty: expected a shape whose byte size fits in 2^53 for shape, but received [2147483647, 2147483647, 2147483647]',
    ],
  ];
  it.each(shapeCases)('rejects %s with the exact message', (_, shape, message) => {
    expectKvsiftError(() => Tensor.empty(shape as number[], 'f32', 'cpu'), 'ERR_INVALID_ARG', message);
  });

  it('8 dimensions are fine', () => {
    const t = Tensor.empty([1, 2, 1, 2, 1, 2, 1, 2], 'u8', 'cpu');
    expect(t.numel).toBe(16);
    t.dispose();
  });

  it('the same checks guard Tensor.from and Tensor.zeros', () => {
    expectKvsiftError(
      () => Tensor.from([1, 2], { shape: [2, -1], device: 'cpu' }),
      'ERR_INVALID_ARG',
      'Tensor.from: expected a non-negative integer below 2^31 for options.shape[1], but received -1',
    );
    expectKvsiftError(() => Tensor.zeros([0.5], 'f32', 'cpu'), 'ERR_INVALID_ARG', /^Tensor\.empty: expected a non-negative integer below 2\^31 for shape\[0\]/);
  });

  it('a shape too large to allocate fails cleanly and leaks nothing', () => {
    const before = memoryStats('cpu');
    for (const shape of [
      [2 ** 31 - 1, 2 ** 20, 2], // 2^52 bytes: no machine has it
      [2 ** 31 - 1, 2 ** 22], // between the TypeScript bound (2^53) and the native one (2^52)
    ]) {
      const e = catchKvsift(() => Tensor.empty(shape, 'u8', 'cpu'));
      expect(['ERR_OUT_OF_MEMORY', 'ERR_INVALID_ARG']).toContain(e.code);
    }
    expect(memoryStats('cpu')).toMatchObject({ liveTensors: before.liveTensors, liveBytes: before.liveBytes });
  });
});

describe('dtypes', () => {
  it.each([['f64'], ['float32'], ['F32'], [null], [0]] as [unknown][])('rejects %s', (dtype) => {
    const e = expectKvsiftError(() => Tensor.empty([1], dtype as DType, 'cpu'), 'ERR_INVALID_ARG');
    expect(e.message).toMatch(new RegExp(`^Tensor\\.empty: expected ${DTYPE_LIST} for dtype, but received `));
  });

  it('exact text for an unknown dtype name', () => {
    expectKvsiftError(() => Tensor.empty([1], 'f64' as DType, 'cpu'), 'ERR_INVALID_ARG', `Tensor.empty: expected ${DTYPE_LIST} for dtype, but received 'f64'`);
    expectKvsiftError(
      () => Tensor.from([1], { dtype: 'half' as DType, device: 'cpu' }),
      'ERR_INVALID_ARG',
      `Tensor.from: expected ${DTYPE_LIST} for options.dtype, but received 'half'`,
    );
  });
});

describe('devices', () => {
  it('rejects names that are not devices', () => {
    expectKvsiftError(() => Tensor.empty([1], 'f32', 'gpu' as Device), 'ERR_INVALID_ARG', "Tensor.empty: expected 'cpu' or 'cuda:N' for device, but received 'gpu'");
    for (const d of ['CPU', 'cuda:-1', 'cuda:1.5', 'cuda:', ' cpu', 0, null]) {
      expectKvsiftError(() => Tensor.empty([1], 'f32', d as Device), 'ERR_INVALID_ARG', /for device, but received/);
    }
    expectKvsiftError(() => Tensor.from([1], { device: 'tpu' as Device }), 'ERR_INVALID_ARG', "Tensor.from: expected 'cpu' or 'cuda:N' for options.device, but received 'tpu'");
  });

  it('cuda:99 is ERR_NO_DEVICE with the reason', () => {
    const e = expectKvsiftError(() => Tensor.empty([1], 'f32', 'cuda:99'), 'ERR_NO_DEVICE');
    expect(e.message).toMatch(/^Tensor\.empty: no such device 'cuda:99' \(.+\)$/);
    for (const use of [() => Tensor.from([1], { device: 'cuda:99' }), () => Tensor.empty([1], 'f32', 'cpu').to('cuda:99'), () => Stream.create('cuda:99')]) {
      expect(catchKvsift(use).code).toBe('ERR_NO_DEVICE');
    }
  });
});

describe('data', () => {
  it('wrong lengths', () => {
    expectKvsiftError(
      () => Tensor.from([1, 2, 3], { shape: [2, 2], device: 'cpu' }),
      'ERR_INVALID_ARG',
      'Tensor.from: expected 4 elements for shape [2, 2] for data, but received 3 elements',
    );
    expectKvsiftError(
      () => Tensor.from(new Float32Array(5), { shape: [2, 3], device: 'cpu' }),
      'ERR_INVALID_ARG',
      'Tensor.from: expected 6 elements for shape [2, 3] for data, but received 5 elements',
    );
    expectKvsiftError(
      () => Tensor.from(new Uint16Array(2), { shape: [], dtype: 'f16', device: 'cpu' }),
      'ERR_INVALID_ARG',
      'Tensor.from: expected 1 elements for shape [] for data, but received 2 elements',
    );
  });

  it('wrong container types', () => {
    const list = 'a Float32Array, Uint16Array, Int32Array, Uint8Array or number[]';
    expectKvsiftError(() => Tensor.from('abc' as never, { device: 'cpu' }), 'ERR_INVALID_ARG', `Tensor.from: expected ${list} for data, but received 'abc'`);
    expectKvsiftError(() => Tensor.from(new Float64Array(3) as never, { device: 'cpu' }), 'ERR_INVALID_ARG', `Tensor.from: expected ${list} for data, but received a Float64Array of length 3`);
    expectKvsiftError(() => Tensor.from(null as never, { device: 'cpu' }), 'ERR_INVALID_ARG', `Tensor.from: expected ${list} for data, but received null`);
    expectKvsiftError(() => Tensor.from({ length: 3 } as never, { device: 'cpu' }), 'ERR_INVALID_ARG', `Tensor.from: expected ${list} for data, but received a plain object`);
    expectKvsiftError(() => Tensor.from(new Int16Array(3) as never, { device: 'cpu' }), 'ERR_INVALID_ARG', /for data, but received an? Int16Array of length 3$/);
  });

  it('containers that do not fit the dtype', () => {
    expectKvsiftError(
      () => Tensor.from(new Int32Array(2), { dtype: 'f16', device: 'cpu' }),
      'ERR_INVALID_ARG',
      /^Tensor\.from: expected a Float32Array, Uint16Array or number\[\] for dtype 'f16' for data, but received an? Int32Array of length 2$/,
    );
    expectKvsiftError(
      () => Tensor.from(new Uint16Array(2), { dtype: 'f32', device: 'cpu' }),
      'ERR_INVALID_ARG',
      "Tensor.from: expected a Float32Array or number[] for dtype 'f32' for data, but received a Uint16Array of length 2",
    );
    expectKvsiftError(
      () => Tensor.from(new Float32Array(2), { dtype: 'i32', device: 'cpu' }),
      'ERR_INVALID_ARG',
      "Tensor.from: expected an Int32Array or number[] for dtype 'i32' for data, but received a Float32Array of length 2",
    );
    expectKvsiftError(() => Tensor.from(new Float32Array(2), { dtype: 'u8', device: 'cpu' }), 'ERR_INVALID_ARG', /for dtype 'u8' for data/);
    expectKvsiftError(() => Tensor.from(new Uint16Array(2), { device: 'cpu' }), 'ERR_INVALID_ARG', /^Tensor\.from: expected 'f16' or 'bf16' .*for options\.dtype, but received undefined$/);
  });

  it('number[] elements out of range for integer dtypes', () => {
    expectKvsiftError(() => Tensor.from([1, 1.5], { dtype: 'i32', device: 'cpu' }), 'ERR_INVALID_ARG', 'Tensor.from: expected a 32-bit integer for data[1], but received 1.5');
    expectKvsiftError(() => Tensor.from([2 ** 31], { dtype: 'i32', device: 'cpu' }), 'ERR_INVALID_ARG', 'Tensor.from: expected a 32-bit integer for data[0], but received 2147483648');
    expectKvsiftError(() => Tensor.from([0, 256], { dtype: 'u8', device: 'cpu' }), 'ERR_INVALID_ARG', 'Tensor.from: expected an integer in [0, 255] for data[1], but received 256');
    expectKvsiftError(() => Tensor.from([-1], { dtype: 'u8', device: 'cpu' }), 'ERR_INVALID_ARG', 'Tensor.from: expected an integer in [0, 255] for data[0], but received -1');
  });

  it('options must be an object', () => {
    expectKvsiftError(() => Tensor.from([1], 5 as never), 'ERR_INVALID_ARG', 'Tensor.from: expected an options object for options, but received 5');
    expectKvsiftError(() => Tensor.from([1], [] as never), 'ERR_INVALID_ARG', 'Tensor.from: expected an options object for options, but received an array of length 0');
    expectKvsiftError(() => Tensor.empty([1], 'f32', 'cpu', null as never), 'ERR_INVALID_ARG', 'Tensor.empty: expected an options object for options, but received null');
  });

  it('a stream option must be a Stream', () => {
    expectKvsiftError(() => Tensor.empty([1], 'f32', 'cpu', { stream: 5 as never }), 'ERR_INVALID_ARG', 'Tensor.empty: expected a Stream for stream, but received 5');
    expectKvsiftError(() => Tensor.from([1], { device: 'cpu', stream: {} as never }), 'ERR_INVALID_ARG', 'Tensor.from: expected a Stream for stream, but received a plain object');
  });

  it('a Node Buffer (a Uint8Array on a shared slab, at an offset) is copied from its own bytes', () => {
    const buf = Buffer.from([7, 8, 9]);
    const t = Tensor.from(buf, { device: 'cpu' });
    expect(t.dtype).toBe('u8');
    expect(Array.from(t.toArray())).toEqual([7, 8, 9]);
    t.dispose();
  });

  it('validation failures allocate nothing', () => {
    const before = memoryStats('cpu');
    const failing = [
      () => Tensor.from([1, 2, 3], { shape: [2, 2], device: 'cpu' }),
      () => Tensor.from([1, 300], { dtype: 'u8', device: 'cpu' }),
      () => Tensor.from(new Int32Array(2), { dtype: 'bf16', device: 'cpu' }),
      () => Tensor.empty([-1], 'f32', 'cpu'),
    ];
    for (const f of failing) catchKvsift(f);
    expect(memoryStats('cpu')).toMatchObject({ liveTensors: before.liveTensors, liveBytes: before.liveBytes });
  });
});

describe('the native layer re-checks what memory safety depends on', () => {
  it('byte ranges must lie inside the buffer', () => {
    const t = Tensor.empty([4], 'f32', 'cpu');
    try {
      expectKvsiftError(
        () => native.copyToHost(t._buffer, 0, new Uint8Array(32)),
        'ERR_INVALID_ARG',
        'copyToHost: expected a byte range inside 16 bytes for src, but received [0, 32)',
      );
      expectKvsiftError(
        () => native.copyFromHost(t._buffer, 8, new Uint8Array(16)),
        'ERR_INVALID_ARG',
        'copyFromHost: expected a byte range inside 16 bytes for dst, but received [8, 24)',
      );
      const small = Tensor.empty([2], 'f32', 'cpu');
      expectKvsiftError(() => native.copyBuffer(small._buffer, 0, t._buffer, 0, 16), 'ERR_INVALID_ARG', 'copy: expected a byte range inside 8 bytes for dst, but received [0, 16)');
      expectKvsiftError(() => native.copyBuffer(t._buffer, 0, small._buffer, 4, 8), 'ERR_INVALID_ARG', 'copy: expected a byte range inside 8 bytes for src, but received [4, 12)');
      small.dispose();
      expectKvsiftError(() => native.copyToHostAsync(t._buffer, 8, 16), 'ERR_INVALID_ARG', 'copyToHostAsync: expected a byte range inside 16 bytes for src, but received [8, 24)');
      expectKvsiftError(() => native.copyToHostAsync(t._buffer, -1, 4), 'ERR_INVALID_ARG', /^copyToHostAsync: expected an integer in \[0, \d+\] for srcOffset, but received -1$/);
      expectKvsiftError(() => native.fill(t._buffer, 256), 'ERR_INVALID_ARG', 'fill: expected an integer in [0, 255] for value, but received 256');
    } finally {
      t.dispose();
    }
  });

  it('buffers must be live DeviceBuffers', () => {
    expectKvsiftError(() => native.copyToHost({} as never, 0, new Uint8Array(4)), 'ERR_INVALID_ARG', 'copyToHost: expected a DeviceBuffer for src, but received an object');
    // constructed from JS a DeviceBuffer holds no memory and counts as freed
    expectKvsiftError(() => native.copyToHost(new (native.DeviceBuffer as unknown as new () => never)(), 0, new Uint8Array(4)), 'ERR_DISPOSED', 'copyToHost: src is disposed');
    const t = Tensor.empty([4], 'f32', 'cpu');
    const buffer = t._buffer;
    t.dispose();
    expect(buffer.freed).toBe(true);
    expect(buffer.ptr).toBe(0n);
    for (const use of [
      () => native.copyToHost(buffer, 0, new Uint8Array(4)),
      () => native.copyFromHost(buffer, 0, new Uint8Array(4)),
      () => native.copyToHostAsync(buffer, 0, 4),
      () => native.fill(buffer, 0),
    ]) {
      expectKvsiftError(use, 'ERR_DISPOSED', /is disposed$/);
    }
    buffer.free(); // idempotent at this level too
  });

  it('host data must be a TypedArray or ArrayBuffer', () => {
    const t = Tensor.empty([2], 'f32', 'cpu');
    expectKvsiftError(() => native.copyToHost(t._buffer, 0, [1, 2] as never), 'ERR_INVALID_ARG', 'copyToHost: expected a TypedArray or ArrayBuffer for dst, but received an array');
    const ab = new ArrayBuffer(8);
    new Float32Array(ab).set([3, 4]);
    native.copyFromHost(t._buffer, 0, ab);
    expect(Array.from(t.toArray())).toEqual([3, 4]);
    t.dispose();
  });

  it('devices, sizes, pointers and streams are range-checked', () => {
    expectKvsiftError(() => native.alloc(-2, 4), 'ERR_INVALID_ARG', 'alloc: expected an integer in [-1, 1048576] for device, but received -2');
    expectKvsiftError(() => native.alloc(1000, 4), 'ERR_NO_DEVICE', /^alloc: no such device cuda:1000 \(\d+ CUDA devices usable\)$/);
    expectKvsiftError(() => native.alloc(-1, 1.5), 'ERR_INVALID_ARG', /for bytes, but received 1\.5/);
    expectKvsiftError(() => native.wrapPointer(0n, 4, -1), 'ERR_INVALID_ARG', 'fromDevicePointer: expected a non-null device pointer for ptr, but received 0n');
    expectKvsiftError(() => native.wrapPointer(-1n, 4, -1), 'ERR_INVALID_ARG', /for ptr/);
    expectKvsiftError(() => native.streamSynchronize(-1, 5 as never), 'ERR_INVALID_ARG', 'stream.synchronize: expected a stream handle (bigint) for stream, but received 5');
    expectKvsiftError(() => native.memoryStats(7.5), 'ERR_INVALID_ARG', /for device, but received 7\.5/);
  });
});

// ---- issue 11: the classes of the reliability review -------------------------------------------

describe('degenerate shapes (child process with KVSIFT_DEBUG_POISON=1)', () => {
  // Why: snapkv.scores with D = 0 or Hq = 0 returned uninitialized memory that compress then used.
  it('every op rejects a zero dimension with a clear KvsiftError or defines its result; nothing is left uninitialized', () => {
    const r = runChild('degenerate.ts', { env: { KVSIFT_DEBUG_POISON: '1' }, timeoutMs: 120_000 });
    expect(r.signal, describeChild(r)).toBeNull();
    const out = r.json as { poison: boolean; cases: number; rejected: number; defined: number; bad: string[] };
    expect(out.poison).toBe(true);
    expect(out.bad).toEqual([]);
    expect(out.cases).toBe(out.rejected + out.defined);
    expect(out.cases).toBeGreaterThanOrEqual(70);
  });

  it('the attention ops name the zero dimension', () => {
    const q = (h: number, d: number) => Tensor.zeros([1, h, 1, d], 'f32', 'cpu');
    const k = (d: number) => Tensor.zeros([1, 2, 6, d], 'f32', 'cpu');
    const s = Tensor.zeros([1, 2, 6], 'f32', 'cpu');
    for (const [op, run] of [
      ['snapkv.scores', (qq: Tensor, kk: Tensor) => snapkv.scores(qq, kk)],
      ['keyformer.accumulate', (qq: Tensor, kk: Tensor) => keyformer.accumulate(qq, kk, s, { tau: 1, seed: 1, step: 1 })],
      ['h2o.accumulate', (qq: Tensor, kk: Tensor) => h2o.accumulate(qq, kk, s)],
      ['tova.select', (qq: Tensor, kk: Tensor) => tova.select(qq, kk, { capacity: 2 })],
    ] as const) {
      expectKvsiftError(() => run(q(0, 4), k(4)), 'ERR_INVALID_ARG', `${op}: expected at least one query head (Hq >= 1) for queries, but received 0`);
      expectKvsiftError(() => run(q(2, 0), k(0)), 'ERR_INVALID_ARG', `${op}: expected a head dim D >= 1 for keys, but received 0`);
    }
    // the binding refuses them too
    const out = Tensor.zeros([1, 2, 5], 'f32', 'cpu');
    expectKvsiftError(() => native.snapkvScores(q(0, 4), k(4), out, { window: 1, groupReduce: 0, layout: 0 }), 'ERR_INVALID_ARG', /^snapkv\.scores: expected \[B, Hq, W, D\] matching keys with Hq a positive multiple of Hkv and D >= 1/);
    expectKvsiftError(() => native.accumulate(q(2, 0), k(0), s, { layout: 0, tau: 1, noise: 0, seed: 0, step: 0 }), 'ERR_INVALID_ARG', /D >= 1/);
  });
});

describe('number arrays of lengths', () => {
  const keys = Tensor.zeros([2, 2, 8, 4], 'f32', 'cpu');
  const q = Tensor.zeros([2, 2, 2, 4], 'f32', 'cpu');
  const scores = Tensor.zeros([2, 2, 8], 'f32', 'cpu');
  const rows = Tensor.zeros([2, 8], 'f32', 'cpu');
  const takers: [string, string, (lens: unknown) => unknown][] = [
    ['topk', 'options.lengths', (l) => topk(rows, 2, { lengths: l as number[] })],
    ['snapkv.pool', 'options.lengths', (l) => snapkv.pool(rows, { kernel: 3, kind: 'max', lengths: l as number[] })],
    ['snapkv.scores', 'options.seqLens', (l) => snapkv.scores(q, keys, { seqLens: l as number[] })],
    ['snapkv.compress', 'options.seqLens', (l) => snapkv.compress(q, keys, keys, { window: 2, capacity: 4, seqLens: l as number[] })],
    ['l2.norms', 'options.seqLens', (l) => l2.norms(keys, { seqLens: l as number[] })],
    ['l2.compress', 'options.seqLens', (l) => l2.compress(keys, keys, { capacity: 4, seqLens: l as number[] })],
    ['keyformer.accumulate', 'options.seqLens', (l) => keyformer.accumulate(q, keys, scores, { tau: 1, seed: 1, step: 1, seqLens: l as number[] })],
    ['keyformer.select', 'options.seqLens', (l) => keyformer.select(scores, { capacity: 4, recent: 1, seqLens: l as number[] })],
    ['h2o.accumulate', 'options.seqLens', (l) => h2o.accumulate(q, keys, scores, { seqLens: l as number[] })],
    ['h2o.select', 'options.seqLens', (l) => h2o.select(scores, { capacity: 4, recent: 1, seqLens: l as number[] })],
    ['tova.select', 'options.seqLens', (l) => tova.select(Tensor.zeros([2, 2, 1, 4], 'f32', 'cpu'), keys, { capacity: 4, seqLens: l as number[] })],
  ];
  // Why: number[] lengths wrapped modulo 2^32 (2^32 + 4 acted as 4) and holes became 0.
  it.each(takers)('%s checks every element of a number[] %s as a number: no wrap, no holes, no non-integers', (op, name, run) => {
    const before = scores.toArray();
    for (const [bad, index, received] of [
      [[2 ** 32 + 6, 6], 0, String(2 ** 32 + 6)],
      [[6, -(2 ** 32) + 6], 1, String(-(2 ** 32) + 6)],
      [[6.5, 6], 0, '6.5'],
      [[6, '6'], 1, "'6'"],
      [[6, NaN], 1, 'NaN'],
      [[6, 6n], 1, '6n'],
    ] as [unknown[], number, string][]) {
      const e = expectKvsiftError(() => run(bad), 'ERR_INVALID_ARG');
      expect(e.message).toMatch(new RegExp(`^${op.replace('.', '\\.')}: expected an integer in \\[\\d+, 8\\] for ${name.replace('.', '\\.')}\\[${index}\\], but received ${received.replace('.', '\\.')}$`));
    }
    expectKvsiftError(() => run([6]), 'ERR_INVALID_ARG', `${op}: expected 2 lengths (one per batch row) for ${name}, but received 1`);
    const holey = [6, 6];
    delete holey[1];
    expectKvsiftError(() => run(holey), 'ERR_INVALID_ARG', `${op}: expected an element (holes are not allowed) for ${name}[1], but received a hole`);
    // a failed call left its in-place input alone
    expectIdentical(scores.toArray(), before);
  });
});

describe('doubles that are not valid f32', () => {
  // Why: tau = 1e-300 passed '> 0' but is 0 in f32, and filled the scores with NaN in place.
  it('keyformer.accumulate validates tau against f32, and a failed call leaves the scores untouched', () => {
    const q = Tensor.from(testRng().normalArray(2 * 4), { shape: [1, 2, 1, 4], device: 'cpu' });
    const k = Tensor.from(testRng().normalArray(2 * 6 * 4), { shape: [1, 2, 6, 4], device: 'cpu' });
    const s = Tensor.from(testRng().normalArray(12), { shape: [1, 2, 6], device: 'cpu' });
    const before = s.toArray();
    for (const tau of [1e-300, 1e-39, 1e-45, 5e-324, 1e39, 1e300]) {
      expectKvsiftError(
        () => keyformer.accumulate(q, k, s, { tau, seed: 1, step: 1 }),
        'ERR_INVALID_ARG',
        `keyformer.accumulate: expected a positive number representable in f32 (between 1.1754943508222875e-38 and 3.4028234663852886e+38) for options.tau, but received ${tau}`,
      );
      // the binding checks it on its own
      expectKvsiftError(() => native.accumulate(q, k, s, { layout: 0, tau, noise: 1, seed: 1, step: 1 }), 'ERR_INVALID_ARG', /^keyformer\.accumulate: expected a positive number representable in f32 for tau/);
      expectIdentical(s.toArray(), before);
    }
    // the smallest normal f32 is fine, and the result is finite
    keyformer.accumulate(q, k, s, { tau: 1.1754943508222875e-38 * 2, seed: 1, step: 1 });
    expect(Array.from(s.toArray()).every(Number.isFinite)).toBe(true);
    for (const t of [q, k, s]) t.dispose();
  });

  it('the binding refuses scales that overflow f32', () => {
    const a = Tensor.zeros([1, 2, 3], 'f32', 'cpu');
    const out = Tensor.zeros([1, 3], 'f32', 'cpu');
    expectKvsiftError(() => native.headReduce(a, out, { scale: 1e300 }), 'ERR_INVALID_ARG', 'headReduce: expected a number representable in f32 for scale, but received 1.0000000000000001e+300');
  });
});

describe('options are read as own properties only', () => {
  // Why: a key on Object.prototype flipped topk's order and turned keyformer into h2o.
  it('every op gives the same bytes with every option name set on Object.prototype (child process)', () => {
    const r = runChild('pollution.ts', { timeoutMs: 120_000 });
    expect(r.signal, describeChild(r)).toBeNull();
    expect(r.status, describeChild(r)).toBe(0);
    const out = r.json as { ops: number; keys: number; changed: string[]; errors: string[] };
    expect(out.ops).toBeGreaterThanOrEqual(19);
    expect(out).toMatchObject({ changed: [], errors: [] });
  });

  it('an options object is read once: each getter runs once, before anything is checked', () => {
    const t = Tensor.from([3, 1, 2], { device: 'cpu' });
    let reads = 0;
    const top = topk(t, 2, { get order() { reads++; return reads === 1 ? 'score' : 'position'; } });
    expectIdentical(top.toArray(), [0, 2]);
    expect(reads).toBe(1);
    top.dispose();
    t.dispose();
  });
});

describe('smaller items', () => {
  // Why: evict reported its failures under the name of the gather it calls.
  it('evict errors name evict, not gather', () => {
    const k = Tensor.zeros([1, 2, 4, 2], 'f32', 'cpu');
    const bad = Tensor.from(Int32Array.of(0, 9), { shape: [1, 1, 2], device: 'cpu' });
    expectKvsiftError(() => evict(k, k, bad), 'ERR_INDEX_OUT_OF_RANGE', 'evict: 1 positions fall outside [0, 4)');
    const wrongHeads = Tensor.from(Int32Array.of(0, 1, 2), { shape: [1, 3, 1], device: 'cpu' });
    const e = expectKvsiftError(() => evict(k, k, wrongHeads), 'ERR_INVALID_ARG');
    expect(e.message.startsWith('evict: ')).toBe(true);
    for (const t of [k, bad, wrongHeads]) t.dispose();
  });

  it('revoked proxies, symbol lengths and odd constructors come back as KvsiftErrors', () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    const odd = Object.assign(new Float32Array(2), { constructor: 5 });
    const symbolLength = Object.assign([1, 2], {});
    Object.defineProperty(symbolLength, 'length', { value: 2 });
    for (const fn of [
      () => Tensor.from(proxy as never, { device: 'cpu' }),
      () => Tensor.empty(proxy as never, 'f32', 'cpu'),
      () => topk(odd as never, 1),
      () => Tensor.from([1, 2], { shape: odd as never, device: 'cpu' }),
      () => Tensor.from([Symbol('x')] as never, { device: 'cpu' }),
    ]) {
      expect(catchKvsift(fn)).toBeInstanceOf(KvsiftError);
    }
  });

  it('a host array too large for V8 is ERR_OUT_OF_MEMORY, not a RangeError', () => {
    // 2^33 bytes of u8: more elements than a typed array may have here (the tensor itself is
    // never touched, so it costs address space only)
    let t: Tensor | undefined;
    try {
      t = Tensor.empty([4, 2 ** 31 - 1], 'u8', 'cpu');
    } catch (e) {
      expect((e as KvsiftError).code).toBe('ERR_OUT_OF_MEMORY'); // the host memory guard refused it
      return;
    }
    const e = expectKvsiftError(() => t!.toArray(), 'ERR_OUT_OF_MEMORY');
    expect(e.message).toMatch(/^toArray: out of host memory for a Uint8Array of 8589934588 elements/);
    t.dispose();
  });
});
