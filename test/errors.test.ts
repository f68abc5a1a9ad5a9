/**
 * Argument validation: one message template everywhere,
 *   "<op>: expected <expected> for <name>, but received <received>",
 * with a stable code; TypeScript checks for users, and the native layer re-checks everything
 * memory safety depends on (tested here by calling the binding directly).
 */
import { describe, expect, it } from 'vitest';
import { KvsiftError, memoryStats, Stream, Tensor, type Device, type DType } from '../lib/index';
import { native } from '../lib/native';
import { catchKvsift, expectKvsiftError } from './helpers';

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
