/**
 * Tensor: a typed, shaped view of one buffer on one device (the CPU backend's host memory or a
 * CUDA device's memory). Ops take and return Tensors; data crosses to JS only through
 * toArray()/toArrayAsync().
 */
import type { DeviceBuffer } from '../binding';
import { defaultDevice, deviceIndex, deviceName, type Device } from './device';
import { KvsiftError } from './errors';
import { f32ArrayToHalf, halfArrayToF32 } from './half';
import { native } from './native';
import { streamHandle, type Stream } from './stream';
import { checkOptions, checkShape, invalid, invalidText } from './validate';

export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'u8';
export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'u8'];
const DTYPE_CODE: Record<DType, number> = { f32: 0, f16: 1, bf16: 2, i32: 3, u8: 4 };
const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, i32: 4, u8: 1 };

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: DType): number {
  return DTYPE_BYTES[checkDType('dtypeBytes', 'dtype', dtype)];
}

/** What {@link Tensor.toArray} returns for each dtype (f16/bf16 are widened, exactly). */
export type ArrayFor<D extends DType> = D extends 'i32' ? Int32Array : D extends 'u8' ? Uint8Array : Float32Array;

export type TensorData = Float32Array | Uint16Array | Int32Array | Uint8Array | readonly number[];

export interface TensorFromOptions {
  /** Default: [data.length]. */
  shape?: readonly number[];
  /** Default: from the data (Float32Array and number[] -> 'f32', Int32Array -> 'i32', Uint8Array -> 'u8'); Uint16Array needs 'f16' or 'bf16'. */
  dtype?: DType;
  /** Default: {@link defaultDevice}. */
  device?: Device;
  stream?: Stream;
}

export interface TensorPointerOptions {
  shape: readonly number[];
  dtype: DType;
  device?: Device;
}

export function checkDType(op: string, name: string, dtype: unknown): DType {
  if (typeof dtype !== 'string' || !(DTYPES as readonly string[]).includes(dtype)) {
    throw invalid(op, name, "one of 'f32', 'f16', 'bf16', 'i32', 'u8'", dtype);
  }
  return dtype as DType;
}

/**
 * A typed wrapper over a device buffer.
 *
 * @example
 * ```ts
 * const t = Tensor.from(new Float32Array([1, 2, 3, 4]), { shape: [2, 2], dtype: 'bf16', device: 'cpu' });
 * t.toArray(); // Float32Array [1, 2, 3, 4]
 * t.dispose();
 * ```
 */
export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;
  /** @internal the native buffer; read by the binding */
  readonly _buffer: DeviceBuffer;
  /** @internal the dtype as the binding's code */
  readonly _dtypeCode: number;
  /** @internal */
  readonly _deviceIndex: number;
  private _disposed = false;

  /** @internal use Tensor.from / Tensor.empty / Tensor.fromDevicePointer */
  constructor(buffer: DeviceBuffer, shape: readonly number[], dtype: DType) {
    this._buffer = buffer;
    this.shape = Object.freeze(shape.slice());
    this.dtype = dtype;
    this._dtypeCode = DTYPE_CODE[dtype];
    this._deviceIndex = buffer.device;
    this.device = deviceName(buffer.device);
  }

  /**
   * Copies host data into a new tensor. f32 input is rounded to nearest even when dtype is f16 or
   * bf16; a Uint16Array is taken as raw f16/bf16 bits.
   *
   * @example
   * ```ts
   * const k = Tensor.from(keysF32, { shape: [1, 8, n, 128], dtype: 'bf16', device: 'cuda:0' });
   * ```
   */
  static from(data: TensorData, options?: TensorFromOptions): Tensor {
    const op = 'Tensor.from';
    const opts = checkOptions(op, options) as TensorFromOptions;
    const isArray = Array.isArray(data);
    if (!isArray && !(data instanceof Float32Array || data instanceof Uint16Array || data instanceof Int32Array || data instanceof Uint8Array)) {
      throw invalid(op, 'data', 'a Float32Array, Uint16Array, Int32Array, Uint8Array or number[]', data);
    }
    const length = (data as ArrayLike<number>).length;
    let dtype: DType;
    if (opts.dtype !== undefined) dtype = checkDType(op, 'options.dtype', opts.dtype);
    else if (data instanceof Int32Array) dtype = 'i32';
    else if (data instanceof Uint8Array) dtype = 'u8';
    else if (data instanceof Uint16Array) throw invalid(op, 'options.dtype', "'f16' or 'bf16' for Uint16Array data", undefined);
    else dtype = 'f32';
    const shape = opts.shape === undefined ? [length] : checkShape(op, 'options.shape', opts.shape, DTYPE_BYTES[dtype]);
    const numel = shape.reduce((a, b) => a * b, 1);
    if (numel !== length) {
      throw invalidText(op, 'data', `${numel} elements for shape [${shape.join(', ')}]`, `${length} elements`);
    }
    const host = toHost(op, data, dtype);
    const device = deviceIndex(op, 'options.device', opts.device ?? defaultDevice());
    const stream = streamHandle(op, opts.stream, device);
    const t = Tensor._alloc(shape, dtype, device, stream);
    try {
      native.copyFromHost(t._buffer, 0, host, stream);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  /**
   * A new tensor with uninitialized contents.
   *
   * @example
   * ```ts
   * const out = Tensor.empty([1, 8, 2048, 128], 'bf16', 'cuda:0');
   * ```
   */
  static empty(shape: readonly number[], dtype: DType = 'f32', device: Device = defaultDevice(), options?: { stream?: Stream }): Tensor {
    const op = 'Tensor.empty';
    const dt = checkDType(op, 'dtype', dtype);
    const s = checkShape(op, 'shape', shape, DTYPE_BYTES[dt]);
    const index = deviceIndex(op, 'device', device);
    const opts = checkOptions(op, options) as { stream?: Stream };
    return Tensor._alloc(s, dt, index, streamHandle(op, opts.stream, index));
  }

  /**
   * A new tensor filled with zeros.
   *
   * @example
   * ```ts
   * const scores = Tensor.zeros([1, 8, 4096], 'f32', 'cuda:0'); // for keyformer.accumulate
   * ```
   */
  static zeros(shape: readonly number[], dtype: DType = 'f32', device: Device = defaultDevice(), options?: { stream?: Stream }): Tensor {
    const t = Tensor.empty(shape, dtype, device, options);
    try {
      native.fill(t._buffer, 0, options?.stream?.handle);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  /**
   * Wraps memory another engine owns (a CUDA device pointer, or a host pointer for 'cpu'),
   * without copying. kvsift never frees it; the caller keeps it alive while the tensor is used.
   *
   * @example
   * ```ts
   * const k = Tensor.fromDevicePointer(kCachePtr, { shape: [1, 8, n, 128], dtype: 'bf16', device: 'cuda:0' });
   * ```
   */
  static fromDevicePointer(ptr: bigint, options: TensorPointerOptions): Tensor {
    const op = 'Tensor.fromDevicePointer';
    if (typeof ptr !== 'bigint') throw invalid(op, 'ptr', 'a device pointer as a bigint', ptr);
    if (ptr === 0n) throw invalid(op, 'ptr', 'a non-null device pointer', ptr);
    if (ptr < 0n || ptr >= 1n << 64n) throw invalid(op, 'ptr', 'a 64-bit address', ptr);
    const opts = checkOptions(op, options) as unknown as TensorPointerOptions;
    const dtype = checkDType(op, 'options.dtype', opts.dtype);
    const shape = checkShape(op, 'options.shape', opts.shape, DTYPE_BYTES[dtype]);
    const device = deviceIndex(op, 'options.device', opts.device ?? defaultDevice());
    const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    return new Tensor(native.wrapPointer(ptr, bytes, device), shape, dtype);
  }

  /** @internal allocation for ops: stream-ordered on CUDA, from the device's caching pool. */
  static _alloc(shape: readonly number[], dtype: DType, device: number, stream?: bigint): Tensor {
    const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    return new Tensor(native.alloc(device, bytes, stream), shape, dtype);
  }

  /** Number of elements. */
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Bytes of data (numel x element size). */
  get byteLength(): number {
    return this.numel * DTYPE_BYTES[this.dtype];
  }

  /** The buffer's address on its device, as a bigint, for engines that take raw pointers. */
  get devicePointer(): bigint {
    this._check('devicePointer');
    return this._buffer.ptr;
  }

  get disposed(): boolean {
    return this._disposed;
  }

  /**
   * Copies the data to the host, synchronously (the device's pending work on the stream
   * completes first). f16/bf16 are widened to Float32Array exactly.
   *
   * @example
   * ```ts
   * const positions = kept.positions.toArray(); // Int32Array
   * ```
   */
  toArray(options?: { stream?: Stream }): Float32Array | Int32Array | Uint8Array {
    this._check('toArray');
    const stream = streamHandle('toArray', options?.stream, this._deviceIndex);
    const raw = rawArrayFor(this.dtype, this.numel);
    native.copyToHost(this._buffer, 0, raw, stream);
    return widen(raw, this.dtype);
  }

  /**
   * Like {@link toArray}, without blocking the event loop while the device finishes.
   *
   * @example
   * ```ts
   * const votes = await scores.toArrayAsync();
   * ```
   */
  async toArrayAsync(options?: { stream?: Stream }): Promise<Float32Array | Int32Array | Uint8Array> {
    this._check('toArrayAsync');
    const stream = streamHandle('toArrayAsync', options?.stream, this._deviceIndex);
    const ab = await native.copyToHostAsync(this._buffer, 0, this.byteLength, stream);
    return widen(rawView(this.dtype, ab), this.dtype);
  }

  /**
   * The stored bits: Uint16Array for f16/bf16, else as {@link toArray}.
   *
   * @example
   * ```ts
   * const bits = Tensor.from(new Uint16Array([0x3c00]), { dtype: 'f16', device: 'cpu' }).toRawArray();
   * ```
   */
  toRawArray(options?: { stream?: Stream }): Float32Array | Uint16Array | Int32Array | Uint8Array {
    this._check('toRawArray');
    const stream = streamHandle('toRawArray', options?.stream, this._deviceIndex);
    const raw = rawArrayFor(this.dtype, this.numel);
    native.copyToHost(this._buffer, 0, raw, stream);
    return raw;
  }

  /**
   * A copy on another device (or on the same one).
   *
   * @example
   * ```ts
   * const onGpu = cpuTensor.to('cuda:0');
   * ```
   */
  to(device: Device, options?: { stream?: Stream }): Tensor {
    this._check('to');
    const target = deviceIndex('Tensor.to', 'device', device);
    const streamDevice = target >= 0 ? target : this._deviceIndex;
    const stream = streamHandle('Tensor.to', options?.stream, streamDevice);
    const out = Tensor._alloc(this.shape, this.dtype, target, stream);
    try {
      native.copyBuffer(out._buffer, 0, this._buffer, 0, this.byteLength, stream);
    } catch (e) {
      out.dispose();
      throw e;
    }
    return out;
  }

  /**
   * Frees the memory now (stream-ordered on CUDA). Idempotent; any later use throws
   * ERR_DISPOSED. Forgotten tensors are freed by the garbage collector's finalizer.
   */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    this._buffer.free();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this._disposed ? ', disposed' : ''})`;
  }

  /** @internal */
  _check(what: string): void {
    if (this._disposed) throw new KvsiftError(`Tensor is disposed (${what})`, 'ERR_DISPOSED');
  }
}

function toHost(op: string, data: TensorData, dtype: DType): ArrayBufferView {
  if (dtype === 'f16' || dtype === 'bf16') {
    if (data instanceof Uint16Array) return data;
    if (data instanceof Int32Array || data instanceof Uint8Array) {
      throw invalid(op, 'data', `a Float32Array, Uint16Array or number[] for dtype '${dtype}'`, data);
    }
    if (Array.isArray(data)) checkNumbers(op, data);
    return f32ArrayToHalf(data, dtype);
  }
  if (dtype === 'f32') {
    if (data instanceof Float32Array) return data;
    if (Array.isArray(data)) return Float32Array.from(checkNumbers(op, data));
    throw invalid(op, 'data', "a Float32Array or number[] for dtype 'f32'", data);
  }
  if (dtype === 'i32') {
    if (data instanceof Int32Array) return data;
    if (Array.isArray(data)) {
      const out = new Int32Array(data.length);
      for (let i = 0; i < data.length; i++) {
        const v = data[i];
        if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw invalid(op, `data[${i}]`, 'a 32-bit integer', v);
        out[i] = v;
      }
      return out;
    }
    throw invalid(op, 'data', "an Int32Array or number[] for dtype 'i32'", data);
  }
  if (data instanceof Uint8Array) return data;
  if (Array.isArray(data)) {
    const out = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (!Number.isInteger(v) || v < 0 || v > 255) throw invalid(op, `data[${i}]`, 'an integer in [0, 255]', v);
      out[i] = v;
    }
    return out;
  }
  throw invalid(op, 'data', "a Uint8Array or number[] for dtype 'u8'", data);
}

function checkNumbers(op: string, data: readonly unknown[]): readonly number[] {
  for (let i = 0; i < data.length; i++) {
    if (typeof data[i] !== 'number') throw invalid(op, `data[${i}]`, 'a number', data[i]);
  }
  return data as readonly number[];
}

/** The typed array that holds a dtype's raw bits (f16/bf16: their 16-bit patterns). */
const RAW_ARRAY = { f32: Float32Array, f16: Uint16Array, bf16: Uint16Array, i32: Int32Array, u8: Uint8Array } as const;

function rawArrayFor(dtype: DType, n: number): Float32Array | Uint16Array | Int32Array | Uint8Array {
  return new RAW_ARRAY[dtype](n);
}

function rawView(dtype: DType, ab: ArrayBuffer): Float32Array | Uint16Array | Int32Array | Uint8Array {
  return new RAW_ARRAY[dtype](ab);
}

function widen(raw: Float32Array | Uint16Array | Int32Array | Uint8Array, dtype: DType): Float32Array | Int32Array | Uint8Array {
  if (dtype === 'f16' || dtype === 'bf16') return halfArrayToF32(raw as Uint16Array, dtype);
  return raw as Float32Array | Int32Array | Uint8Array;
}

/** Checks an op's tensor argument: a live Tensor. */
export function checkTensor(op: string, name: string, value: unknown): Tensor {
  if (!(value instanceof Tensor)) throw invalid(op, name, 'a Tensor', value);
  if (value.disposed) throw new KvsiftError(`${op}: ${name} is disposed`, 'ERR_DISPOSED');
  return value;
}

export interface MemoryStats {
  /** Live tensors kvsift allocated on the device (wrapped pointers are not counted). */
  liveTensors: number;
  liveBytes: number;
  /** Highest liveBytes since start or the last reset. */
  peakBytes: number;
}

/**
 * Live tensors and bytes kvsift holds on a device.
 *
 * @example
 * ```ts
 * const before = memoryStats('cuda:0').liveBytes;
 * ```
 */
export function memoryStats(device: Device = defaultDevice(), options?: { resetPeak?: boolean }): MemoryStats {
  const s = native.memoryStats(deviceIndex('memoryStats', 'device', device), options?.resetPeak === true);
  return { liveTensors: s.liveBuffers, liveBytes: s.liveBytes, peakBytes: s.peakBytes };
}
