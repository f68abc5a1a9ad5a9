/**
 * CUDA streams. Every op takes an optional `stream`; without one it runs on the device's legacy
 * default stream. On the CPU streams exist so code runs unchanged, and ops complete on return.
 */
import { deviceIndex, deviceName, defaultDevice, type Device } from './device';
import { KvsiftError } from './errors';
import { native } from './native';
import { invalid } from './validate';

/**
 * An ordered queue of device work: kvsift's own or an engine's `cudaStream_t`.
 *
 * @example
 * ```ts
 * const stream = Stream.create('cuda:0');
 * const kept = snapkv.compress(q, k, v, { window: 32, capacity: 2048, stream });
 * await stream.synchronize();
 * stream.dispose();
 * ```
 */
// Streams made by Stream.create and never disposed are destroyed when collected.
const forgotten = new FinalizationRegistry<{ device: number; handle: bigint }>((s) => {
  try {
    native.streamDestroy(s.device, s.handle);
  } catch {
    // the process may be shutting down; nothing to report to
  }
});

export class Stream {
  /** The device the stream belongs to. */
  readonly device: Device;
  /** @internal */ readonly _deviceIndex: number;
  private _handle: bigint;
  private readonly _owned: boolean;
  private _disposed = false;

  private constructor(deviceIndex: number, handle: bigint, owned: boolean) {
    this._deviceIndex = deviceIndex;
    this.device = deviceName(deviceIndex);
    this._handle = handle;
    this._owned = owned;
  }

  /**
   * Creates a new non-blocking stream on `device` (default: {@link defaultDevice}).
   *
   * @example
   * ```ts
   * const s = Stream.create(); // ... use it ..., then s.dispose()
   * ```
   */
  static create(device: Device = defaultDevice()): Stream {
    const index = deviceIndex('Stream.create', 'device', device);
    const stream = new Stream(index, native.streamCreate(index), true);
    if (index >= 0) forgotten.register(stream, { device: index, handle: stream._handle }, stream);
    return stream;
  }

  /**
   * Wraps an engine's own `cudaStream_t` (as a bigint). kvsift never destroys it.
   *
   * @example
   * ```ts
   * const s = Stream.fromHandle(engineStreamPtr, 'cuda:0');
   * ```
   */
  static fromHandle(handle: bigint, device: Device = defaultDevice()): Stream {
    if (typeof handle !== 'bigint' || handle < 0n || handle >= 1n << 64n) {
      throw invalid('Stream.fromHandle', 'handle', 'a cudaStream_t as a bigint', handle);
    }
    const index = deviceIndex('Stream.fromHandle', 'device', device);
    return new Stream(index, handle, false);
  }

  /** The device's legacy default stream (handle 0n). */
  static default(device: Device = defaultDevice()): Stream {
    return new Stream(deviceIndex('Stream.default', 'device', device), 0n, false);
  }

  /** The raw `cudaStream_t` (0n for the default stream). */
  get handle(): bigint {
    this._check('handle');
    return this._handle;
  }

  get disposed(): boolean {
    return this._disposed;
  }

  /**
   * Resolves when all work queued so far has finished, without blocking the event loop.
   * Rejects with ERR_INDEX_OUT_OF_RANGE if a gather on this stream met bad positions.
   *
   * @example
   * ```ts
   * await stream.synchronize();
   * ```
   */
  async synchronize(): Promise<void> {
    this._check('synchronize');
    await native.streamSynchronize(this._deviceIndex, this._handle);
  }

  /** Destroys a stream made by {@link Stream.create}; idempotent; never destroys wrapped handles. */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    forgotten.unregister(this);
    if (this._owned) native.streamDestroy(this._deviceIndex, this._handle);
    this._handle = 0n;
  }

  /** @internal */
  _check(what: string): void {
    if (this._disposed) throw new KvsiftError(`Stream is disposed (${what})`, 'ERR_DISPOSED');
  }
}

/**
 * Waits for all work on `device` (every stream), without blocking the event loop.
 *
 * @example
 * ```ts
 * await synchronize('cuda:0');
 * ```
 */
export async function synchronize(device: Device = defaultDevice()): Promise<void> {
  await native.deviceSynchronize(deviceIndex('synchronize', 'device', device));
}

/** Reads an op's `stream` option: its handle, checked against the op's device. */
export function streamHandle(op: string, stream: unknown, device: number): bigint | undefined {
  if (stream === undefined) return undefined;
  if (!(stream instanceof Stream)) throw invalid(op, 'stream', 'a Stream', stream);
  stream._check(op);
  if (stream._deviceIndex !== device) {
    throw new KvsiftError(
      `${op}: stream is on ${stream.device} but the tensors are on ${deviceName(device)}`,
      'ERR_DEVICE_MISMATCH',
    );
  }
  return stream.handle;
}
