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
import { types } from 'node:util';
import { checkOptions, checkShape, invalid, invalidText, isArray, snapshotArray, typedArrayLength } from './validate';

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
/** What {@link Tensor.toRawArray} returns for each dtype (f16/bf16 as their stored bits). */
export type RawArrayFor<D extends DType> = D extends 'f16' | 'bf16' ? Uint16Array : ArrayFor<D>;

/** Host memory {@link Tensor.fromHostArray} can share. */
export type HostArray = ArrayBuffer | Float32Array | Uint16Array | Int32Array | Uint8Array;

export interface TensorHostArrayOptions<D extends DType = DType> {
  /** Default: [number of elements]. */
  shape?: readonly number[];
  /** Default: from the array (Float32Array 'f32', Int32Array 'i32', Uint8Array 'u8'); required for Uint16Array and ArrayBuffer. */
  dtype?: D;
}

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
export class Tensor<D extends DType = DType> {
  readonly shape: readonly number[];
  readonly dtype: D;
  readonly device: Device;
  /** @internal the native buffer; read by the binding */
  readonly _buffer: DeviceBuffer;
  /** @internal the dtype as the binding's code */
  readonly _dtypeCode: number;
  /** @internal */
  readonly _deviceIndex: number;
  private _disposed = false;
  /** @internal a view shares its base's buffer and never frees it (see {@link Tensor.view}) */
  readonly _isView: boolean = false;

  /** @internal use Tensor.from / Tensor.empty / Tensor.fromDevicePointer */
  constructor(buffer: DeviceBuffer, shape: readonly number[], dtype: D, isView = false) {
    // Cheap, and catches any path that would hand out a tensor no op could use (a shape with
    // negative or fractional dimensions, or one larger than its buffer).
    const dims = Array.from(shape);
    let bytes = DTYPE_BYTES[dtype];
    if (bytes === undefined || dims.length > 8 || !dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new KvsiftError(`Tensor: invalid ${String(dtype)} shape [${dims.map(String).join(', ')}]`, 'ERR_INVALID_ARG');
    }
    for (const d of dims) bytes *= d;
    if (bytes > buffer.byteLength) {
      throw new KvsiftError(`Tensor: shape [${dims.join(', ')}] needs ${bytes} bytes, but its buffer holds ${buffer.byteLength}`, 'ERR_INVALID_ARG');
    }
    this._buffer = buffer;
    this.shape = Object.freeze(dims);
    this._isView = isView;
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
  static from(data: Int32Array, options?: TensorFromOptions & { dtype?: 'i32' }): Tensor<'i32'>;
  static from(data: Uint8Array, options?: TensorFromOptions & { dtype?: 'u8' }): Tensor<'u8'>;
  static from<D extends 'f16' | 'bf16'>(data: Uint16Array, options: TensorFromOptions & { dtype: D }): Tensor<D>;
  static from<D extends DType = 'f32'>(data: Float32Array | readonly number[], options?: TensorFromOptions & { dtype?: D }): Tensor<D>;
  static from<D extends DType = DType>(data: TensorData, options?: TensorFromOptions & { dtype?: D }): Tensor<D>;
  static from<D extends DType = DType>(data: TensorData, options?: TensorFromOptions & { dtype?: D }): Tensor<D> {
    const op = 'Tensor.from';
    // Every piece of user code (option getters, a Proxy's traps) runs first, once; the data is
    // read after it, and its real length (not what an object claims) is checked again natively.
    const opts = checkOptions(op, options) as TensorFromOptions;
    const kind = dataKind(data);
    if (kind === undefined) throw invalid(op, 'data', 'a Float32Array, Uint16Array, Int32Array, Uint8Array or number[]', data);
    let dtype: DType;
    if (opts.dtype !== undefined) dtype = checkDType(op, 'options.dtype', opts.dtype);
    else if (kind === 'u16') throw invalid(op, 'options.dtype', "'f16' or 'bf16' for Uint16Array data", undefined);
    else dtype = kind === 'array' ? 'f32' : kind;
    const shapeOpt = opts.shape === undefined ? undefined : checkShape(op, 'options.shape', opts.shape, DTYPE_BYTES[dtype]);
    const device = deviceIndex(op, 'options.device', opts.device ?? defaultDevice());
    const stream = streamHandle(op, opts.stream, device);
    const items = kind === 'array' ? snapshotArray(op, 'data', data, 'a Float32Array, Uint16Array, Int32Array, Uint8Array or number[]') : undefined;
    const length = items !== undefined ? items.length : typedArrayLength(data as ArrayBufferView);
    const shape = shapeOpt ?? [length];
    const numel = shape.reduce((a, b) => a * b, 1);
    if (numel !== length) {
      throw invalidText(op, 'data', `${numel} elements for shape [${shape.join(', ')}]`, `${length} elements`);
    }
    let host: ArrayBufferView;
    try {
      host = toHost(op, items ?? (data as ArrayBufferView), kind, dtype);
    } catch (e) {
      // no user code runs in toHost: a RangeError is V8 refusing a host array's memory
      if (!(e instanceof RangeError)) throw e;
      throw new KvsiftError(`${op}: out of host memory converting ${length} elements (${e.message})`, 'ERR_OUT_OF_MEMORY');
    }
    const bytes = numel * DTYPE_BYTES[dtype];
    const t = Tensor._alloc(shape, dtype as D, device, stream);
    try {
      native.copyFromHost(t._buffer, 0, host, stream, bytes);
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
  static empty<D extends DType = 'f32'>(shape: readonly number[], dtype: D = 'f32' as D, device: Device = defaultDevice(), options?: { stream?: Stream }): Tensor<D> {
    const op = 'Tensor.empty';
    const dt = checkDType(op, 'dtype', dtype);
    const s = checkShape(op, 'shape', shape, DTYPE_BYTES[dt]);
    const index = deviceIndex(op, 'device', device);
    const opts = checkOptions(op, options) as { stream?: Stream };
    return Tensor._alloc(s, dt as D, index, streamHandle(op, opts.stream, index));
  }

  /**
   * A new tensor filled with zeros.
   *
   * @example
   * ```ts
   * const scores = Tensor.zeros([1, 8, 4096], 'f32', 'cuda:0'); // for keyformer.accumulate
   * ```
   */
  static zeros<D extends DType = 'f32'>(shape: readonly number[], dtype: D = 'f32' as D, device: Device = defaultDevice(), options?: { stream?: Stream }): Tensor<D> {
    const opts = checkOptions('Tensor.zeros', options) as { stream?: Stream };
    const t = Tensor.empty(shape, dtype, device, opts);
    try {
      native.fill(t._buffer, 0, opts.stream?.handle);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  /**
   * Wraps memory another engine owns (a CUDA device pointer, or a host pointer for 'cpu'),
   * without copying. The contract (docs/ERRORS.md): the memory belongs to the engine, kvsift
   * never frees it and cannot check it; `ptr` must point to at least shape x dtype bytes on
   * `device` that stay allocated while the tensor (and any op or read still using it) is alive.
   * The cheap guards: a non-null pointer aligned to the dtype's size, a range inside the 64-bit
   * address space. A wrong pointer is undefined behaviour (on the CPU: a crash or corrupted
   * memory), as it would be in C.
   *
   * @example
   * ```ts
   * const k = Tensor.fromDevicePointer(kCachePtr, { shape: [1, 8, n, 128], dtype: 'bf16', device: 'cuda:0' });
   * ```
   */
  static fromDevicePointer<D extends DType = DType>(ptr: bigint, options: TensorPointerOptions & { dtype: D }): Tensor<D> {
    const op = 'Tensor.fromDevicePointer';
    if (typeof ptr !== 'bigint') throw invalid(op, 'ptr', 'a device pointer as a bigint', ptr);
    if (ptr === 0n) throw invalid(op, 'ptr', 'a non-null device pointer', ptr);
    if (ptr < 0n || ptr >= 1n << 64n) throw invalid(op, 'ptr', 'a 64-bit address', ptr);
    const opts = checkOptions(op, options) as unknown as TensorPointerOptions;
    const dtype = checkDType(op, 'options.dtype', opts.dtype);
    const shape = checkShape(op, 'options.shape', opts.shape, DTYPE_BYTES[dtype]);
    const device = deviceIndex(op, 'options.device', opts.device ?? defaultDevice());
    const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (ptr % BigInt(DTYPE_BYTES[dtype]) !== 0n) {
      throw invalid(op, 'ptr', `an address aligned to ${DTYPE_BYTES[dtype]} bytes (the size of ${dtype})`, ptr);
    }
    if (ptr + BigInt(bytes) > 1n << 64n) throw invalid(op, 'ptr', `an address with ${bytes} bytes below 2^64`, ptr);
    return new Tensor(native.wrapPointer(ptr, bytes, device, DTYPE_BYTES[dtype]), shape, dtype as D);
  }

  /**
   * A CPU tensor over host memory the engine owns (a TypedArray or ArrayBuffer, as
   * transformers.js and onnxruntime hand over past_key_values), without copying: writes through
   * either side are seen by the other.
   *
   * Lifetime: the tensor holds the ArrayBuffer alive until it is disposed (or collected). Its
   * address is re-read before every use, so if the engine detaches the buffer (transfers it,
   * `structuredClone(..., { transfer })`) or resizes it below the tensor's bytes, every later use
   * throws ERR_DISPOSED and nothing is read. The array must be backed by an ArrayBuffer (not a
   * SharedArrayBuffer) and sized exactly for the shape.
   *
   * @example
   * ```ts
   * const past = new Float32Array(1 * 8 * 128 * 64);           // the engine's buffer
   * const k = Tensor.fromHostArray(past, { shape: [1, 8, 128, 64] });
   * past[0] = 1;                                               // k sees it
   * const norms = l2.norms(k);                                 // runs on the engine's memory
   * ```
   */
  static fromHostArray(array: Int32Array, options?: TensorHostArrayOptions<'i32'>): Tensor<'i32'>;
  static fromHostArray<D extends DType = 'f32'>(array: Float32Array, options?: TensorHostArrayOptions<D>): Tensor<D>;
  static fromHostArray<D extends 'f16' | 'bf16'>(array: Uint16Array, options: TensorHostArrayOptions<D> & { dtype: D }): Tensor<D>;
  static fromHostArray<D extends DType = 'u8'>(array: Uint8Array, options?: TensorHostArrayOptions<D>): Tensor<D>;
  static fromHostArray<D extends DType>(array: ArrayBuffer, options: TensorHostArrayOptions<D> & { dtype: D }): Tensor<D>;
  static fromHostArray<D extends DType = DType>(array: HostArray, options?: TensorHostArrayOptions<D>): Tensor<D>;
  static fromHostArray<D extends DType = DType>(array: HostArray, options?: TensorHostArrayOptions<D>): Tensor<D> {
    const op = 'Tensor.fromHostArray';
    const opts = checkOptions(op, options) as TensorHostArrayOptions<D>;
    const isBuffer = array instanceof ArrayBuffer;
    if (!isBuffer && !(array instanceof Float32Array || array instanceof Uint16Array || array instanceof Int32Array || array instanceof Uint8Array)) {
      throw invalid(op, 'array', 'an ArrayBuffer, Float32Array, Uint16Array, Int32Array or Uint8Array', array);
    }
    if (!isBuffer && !(array.buffer instanceof ArrayBuffer)) {
      throw invalid(op, 'array', 'a TypedArray over an ArrayBuffer (not a SharedArrayBuffer)', array);
    }
    let dtype: DType;
    if (opts.dtype !== undefined) dtype = checkDType(op, 'options.dtype', opts.dtype);
    else if (array instanceof Float32Array) dtype = 'f32';
    else if (array instanceof Int32Array) dtype = 'i32';
    else if (array instanceof Uint8Array) dtype = 'u8';
    else throw invalid(op, 'options.dtype', `a dtype for ${isBuffer ? 'an ArrayBuffer' : 'a Uint16Array'}`, undefined);
    const es = DTYPE_BYTES[dtype];
    const byteLength = array.byteLength;
    const natural: Record<string, number> = { Float32Array: 4, Int32Array: 4, Uint16Array: 2, Uint8Array: 1 };
    if (!isBuffer && array.constructor.name !== 'Uint8Array' && natural[array.constructor.name] !== es) {
      throw invalid(op, 'options.dtype', `a dtype of ${natural[array.constructor.name]}-byte elements for ${array.constructor.name}`, dtype);
    }
    if (!isBuffer && array.byteOffset % es !== 0) throw invalidText(op, 'array', `a byteOffset that is a multiple of ${es}`, `${array.byteOffset}`);
    if (byteLength % es !== 0) throw invalidText(op, 'array', `a byte length that is a multiple of ${es}`, `${byteLength}`);
    const shape = opts.shape === undefined ? [byteLength / es] : checkShape(op, 'options.shape', opts.shape, es);
    const bytes = shape.reduce((a, b) => a * b, 1) * es;
    if (bytes !== byteLength) throw invalidText(op, 'array', `${bytes} bytes for shape [${shape.join(', ')}] of ${dtype}`, `${byteLength} bytes`);
    return new Tensor(native.wrapHost(array, bytes), shape, dtype as D);
  }

  /** @internal allocation for ops: stream-ordered on CUDA, from the device's caching pool. */
  static _alloc<D extends DType>(shape: readonly number[], dtype: D, device: number, stream?: bigint): Tensor<D> {
    const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    return new Tensor(native.alloc(device, bytes, stream), shape, dtype);
  }

  /**
   * The same memory under another shape of the same element count (no copy; `devicePointer` is
   * the base's). Views share their base's storage without owning it: disposing a view only ends
   * that view, and disposing the base frees the memory, after which every view throws
   * ERR_DISPOSED (a view never reads freed memory). A forgotten base is not collected while a
   * view of it is alive.
   *
   * @example
   * ```ts
   * const flat = Tensor.zeros([2, 3, 4], 'f32', 'cpu');
   * const rows = flat.view([6, 4]);   // same bytes
   * flat.dispose();                   // rows.toArray() now throws ERR_DISPOSED
   * ```
   */
  view(shape: readonly number[]): Tensor<D> {
    const op = 'Tensor.view';
    this._check('view');
    const s = checkShape(op, 'shape', shape, DTYPE_BYTES[this.dtype]);
    const numel = s.reduce((a, b) => a * b, 1);
    if (numel !== this.numel) {
      throw invalidText(op, 'shape', `${this.numel} elements (the tensor's [${this.shape.join(', ')}])`, `[${s.join(', ')}] (${numel} elements)`);
    }
    return new Tensor(this._buffer, s, this.dtype, true);
  }

  /** True for a tensor made by {@link Tensor.view}. */
  get isView(): boolean {
    return this._isView;
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

  /** True once this tensor (or, for a view, its base) was disposed. */
  get disposed(): boolean {
    return this._disposed || this._buffer.freed;
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
  toArray(options?: { stream?: Stream }): ArrayFor<D> {
    this._check('toArray');
    const stream = streamHandle('toArray', checkOptions('toArray', options).stream, this._deviceIndex);
    const raw = rawArrayFor('toArray', this.dtype, this.numel);
    native.copyToHost(this._buffer, 0, raw, stream);
    return widen('toArray', raw, this.dtype) as ArrayFor<D>;
  }

  /**
   * Like {@link toArray}, without blocking the event loop while the device finishes. The result
   * is the tensor as of the call: work issued after it (an in-place op such as
   * keyformer.accumulate, a dispose) never shows in it, on any device. CUDA orders the read on
   * the stream (a snapshot into a temporary device buffer); the CPU copies at once. Failures,
   * out of memory included, reject the promise.
   *
   * @example
   * ```ts
   * const votes = await scores.toArrayAsync();
   * ```
   */
  async toArrayAsync(options?: { stream?: Stream }): Promise<ArrayFor<D>> {
    this._check('toArrayAsync');
    const stream = streamHandle('toArrayAsync', checkOptions('toArrayAsync', options).stream, this._deviceIndex);
    const ab = await native.copyToHostAsync(this._buffer, 0, this.byteLength, stream);
    return widen('toArrayAsync', rawView(this.dtype, ab), this.dtype) as ArrayFor<D>;
  }

  /**
   * The stored bits: Uint16Array for f16/bf16, else as {@link toArray}.
   *
   * @example
   * ```ts
   * const bits = Tensor.from(new Uint16Array([0x3c00]), { dtype: 'f16', device: 'cpu' }).toRawArray();
   * ```
   */
  toRawArray(options?: { stream?: Stream }): RawArrayFor<D> {
    this._check('toRawArray');
    const stream = streamHandle('toRawArray', checkOptions('toRawArray', options).stream, this._deviceIndex);
    const raw = rawArrayFor('toRawArray', this.dtype, this.numel);
    native.copyToHost(this._buffer, 0, raw, stream);
    return raw as RawArrayFor<D>;
  }

  /**
   * A copy on another device (or on the same one).
   *
   * @example
   * ```ts
   * const onGpu = cpuTensor.to('cuda:0');
   * ```
   */
  to(device: Device, options?: { stream?: Stream }): Tensor<D> {
    this._check('to');
    const target = deviceIndex('Tensor.to', 'device', device);
    const streamDevice = target >= 0 ? target : this._deviceIndex;
    const stream = streamHandle('Tensor.to', checkOptions('Tensor.to', options).stream, streamDevice);
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
    if (!this._isView) this._buffer.free();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this._disposed ? ', disposed' : ''})`;
  }

  /** @internal */
  _check(what: string): void {
    if (this._disposed) throw new KvsiftError(`Tensor is disposed (${what})`, 'ERR_DISPOSED');
    if (this._buffer.freed) throw new KvsiftError(`Tensor is disposed (${what}): its base tensor was disposed`, 'ERR_DISPOSED');
  }
}

type DataKind = 'f32' | 'u16' | 'i32' | 'u8' | 'array';

/** What `data` really is, from V8's internal slots: a Proxy or a look-alike is none of them. */
function dataKind(data: unknown): DataKind | undefined {
  if (types.isFloat32Array(data)) return 'f32';
  if (types.isUint16Array(data)) return 'u16';
  if (types.isInt32Array(data)) return 'i32';
  if (types.isUint8Array(data)) return 'u8';
  if (!types.isProxy(data) && isArray(data)) return 'array';
  return undefined;
}

/**
 * The host bytes of `data` in `dtype`. A typed array of the dtype itself goes to the binding as it
 * is (its length re-checked there); conversions read it through a copy made from its internal
 * slots (`new Float32Array(view)` runs no user code), and number[] data is the snapshot `items`.
 */
function toHost(op: string, data: readonly unknown[] | ArrayBufferView, kind: DataKind, dtype: DType): ArrayBufferView {
  const array = kind === 'array' ? (data as readonly unknown[]) : undefined;
  if (dtype === 'f16' || dtype === 'bf16') {
    if (kind === 'u16') return data as ArrayBufferView;
    if (kind === 'f32') return f32ArrayToHalf(typedArrayLength(data as ArrayBufferView) === 0 ? new Float32Array(0) : new Float32Array(data as Float32Array), dtype);
    if (array) return f32ArrayToHalf(hostArray(op, Float32Array, checkNumbers(op, array)), dtype);
    throw invalid(op, 'data', `a Float32Array, Uint16Array or number[] for dtype '${dtype}'`, data);
  }
  if (dtype === 'f32') {
    if (kind === 'f32') return data as ArrayBufferView;
    if (array) return hostArray(op, Float32Array, checkNumbers(op, array));
    throw invalid(op, 'data', "a Float32Array or number[] for dtype 'f32'", data);
  }
  if (dtype === 'i32') {
    if (kind === 'i32') return data as ArrayBufferView;
    if (array) {
      for (let i = 0; i < array.length; i++) {
        const v = array[i];
        if (typeof v !== 'number' || !Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw invalid(op, `data[${i}]`, 'a 32-bit integer', v);
      }
      return hostArray(op, Int32Array, array as readonly number[]);
    }
    throw invalid(op, 'data', "an Int32Array or number[] for dtype 'i32'", data);
  }
  if (kind === 'u8') return data as ArrayBufferView;
  if (array) {
    for (let i = 0; i < array.length; i++) {
      const v = array[i];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 255) throw invalid(op, `data[${i}]`, 'an integer in [0, 255]', v);
    }
    return hostArray(op, Uint8Array, array as readonly number[]);
  }
  throw invalid(op, 'data', "a Uint8Array or number[] for dtype 'u8'", data);
}

function checkNumbers(op: string, data: readonly unknown[]): number[] {
  for (let i = 0; i < data.length; i++) {
    if (typeof data[i] !== 'number') throw invalid(op, `data[${i}]`, 'a number', data[i]);
  }
  return data as number[];
}

type HostArrayCtor = Float32ArrayConstructor | Uint16ArrayConstructor | Int32ArrayConstructor | Uint8ArrayConstructor;

/**
 * A new host array (of `from`'s elements, or of `length` zeros). V8 throws a RangeError when it
 * cannot have the memory or the length is beyond its limit: that is ERR_OUT_OF_MEMORY here.
 */
function hostArray<C extends HostArrayCtor>(op: string, ctor: C, from: readonly number[] | number): InstanceType<C> {
  try {
    return (typeof from === 'number' ? new ctor(from) : ctor.from(from)) as InstanceType<C>;
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    const n = typeof from === 'number' ? from : from.length;
    throw new KvsiftError(`${op}: out of host memory for a ${ctor.name} of ${n} elements (${e.message})`, 'ERR_OUT_OF_MEMORY');
  }
}

/** The typed array that holds a dtype's raw bits (f16/bf16: their 16-bit patterns). */
const RAW_ARRAY = { f32: Float32Array, f16: Uint16Array, bf16: Uint16Array, i32: Int32Array, u8: Uint8Array } as const;

function rawArrayFor(op: string, dtype: DType, n: number): Float32Array | Uint16Array | Int32Array | Uint8Array {
  return hostArray(op, RAW_ARRAY[dtype], n);
}

function rawView(dtype: DType, ab: ArrayBuffer): Float32Array | Uint16Array | Int32Array | Uint8Array {
  return new RAW_ARRAY[dtype](ab);
}

function widen(op: string, raw: Float32Array | Uint16Array | Int32Array | Uint8Array, dtype: DType): Float32Array | Int32Array | Uint8Array {
  if (dtype !== 'f16' && dtype !== 'bf16') return raw as Float32Array | Int32Array | Uint8Array;
  try {
    return halfArrayToF32(raw as Uint16Array, dtype);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new KvsiftError(`${op}: out of host memory for a Float32Array of ${raw.length} elements (${e.message})`, 'ERR_OUT_OF_MEMORY');
  }
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
  /**
   * Freed memory the allocator keeps for reuse (not counted in liveBytes): the host caching
   * allocator's blocks on the CPU, the stream-ordered pool's reserved but unused bytes on CUDA.
   * {@link trimMemory} releases it.
   */
  cachedBytes: number;
}

export interface TransferStats {
  /** Bytes copied from this device's tensors into JS memory so far (toArray, toArrayAsync, toRawArray; for CUDA also copies to CPU tensors). */
  toHostBytes: number;
  /** Bytes copied from JS memory into this device's tensors so far (Tensor.from and the small uploads some ops make, such as seqLens). */
  fromHostBytes: number;
}

/**
 * Bytes that crossed between JS memory and a device's tensors since the process started: an
 * engine can check that a decode loop keeps its cache on the device (take the difference of two
 * readings around the loop).
 *
 * @example
 * ```ts
 * const before = transferStats('cuda:0').toHostBytes;
 * // ... the decode loop ...
 * console.assert(transferStats('cuda:0').toHostBytes === before); // nothing came back to the host
 * ```
 */
export function transferStats(device: Device = defaultDevice()): TransferStats {
  const s = native.memoryStats(deviceIndex('transferStats', 'device', device), false);
  return { toHostBytes: s.toHostBytes, fromHostBytes: s.fromHostBytes };
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
  const s = native.memoryStats(deviceIndex('memoryStats', 'device', device), checkOptions('memoryStats', options).resetPeak === true);
  return {
    liveTensors: s.liveBuffers,
    liveBytes: s.liveBytes,
    peakBytes: s.peakBytes,
    cachedBytes: s.cachedBytes,
  };
}

/**
 * Gives the allocator's cached free blocks back to the system (CPU) or the driver (CUDA): after
 * disposing a large working set, RSS / device usage drops to what live tensors hold. Live
 * tensors are untouched; later allocations simply miss the cache once.
 *
 * @example
 * ```ts
 * cache.dispose();
 * trimMemory('cpu');
 * memoryStats('cpu').cachedBytes; // 0
 * ```
 */
export function trimMemory(device: Device = defaultDevice()): void {
  native.trimMemory(deviceIndex('trimMemory', 'device', device));
}
