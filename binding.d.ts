/**
 * The native surface of kvsift (cpp/addon.cc): the one declaration of everything the addon
 * exports. The TypeScript layer (lib/) is the public API; these functions assume it already
 * validated their arguments, but still re-check everything memory safety depends on.
 *
 * Conventions: a device index is -1 for the CPU or N for cuda:N; a stream is a cudaStream_t as a
 * bigint (undefined or 0n: the legacy default stream); sizes are in bytes unless named otherwise.
 */

/** A byte range on one device: owned (freed by free() or the finalizer) or wrapped. */
export declare class DeviceBuffer {
  private constructor();
  /** Frees owned memory (stream-ordered on the stream that last used it); idempotent. */
  free(): void;
  /** The address, 0n once freed. */
  readonly ptr: bigint;
  readonly byteLength: number;
  readonly device: number;
  readonly owned: boolean;
  readonly freed: boolean;
}

/** What the native ops read off a Tensor. */
export interface NativeTensor {
  readonly _buffer: DeviceBuffer;
  /** 0 f32, 1 f16, 2 bf16, 3 i32, 4 u8 */
  readonly _dtypeCode: number;
  readonly shape: readonly number[];
}

/** What the build contains (lib/device.ts exports it as BuildInfo). */
export interface NativeBuildInfo {
  /** Whether the CUDA kernels were compiled into this build. */
  cuda: boolean;
  /** CMake CUDA architectures compiled in, e.g. ['75-real', ..., '90']. */
  cudaArchitectures: string[];
  cudaRuntimeVersion: string | null;
  cudaDriverVersion: string | null;
  /** Why no CUDA device is usable ('' when one is). */
  cudaUnavailableReason: string;
  napiVersion: number;
  /** Threads of the CPU backend (KVSIFT_NUM_THREADS overrides). */
  cpuThreads: number;
  /** How the CPU backend widens f16 inputs: 'f16c' (the hardware conversion, picked at load time) or 'scalar'. */
  cpuF16Conversion: 'f16c' | 'scalar';
  /** `cuda:0` is the emulated device of an emulated build (npm run build:emu; docs/GPU.md). */
  cudaEmulated: boolean;
}

/** A CUDA device (lib/device.ts adds its name: CudaDeviceInfo). */
export interface NativeDeviceInfo {
  model: string;
  /** e.g. '9.0' for an H100 */
  computeCapability: string;
  totalMemory: number;
  freeMemory: number;
  multiprocessors: number;
  l2CacheBytes: number;
}

export interface NativeMemoryStats {
  liveBuffers: number;
  liveBytes: number;
  peakBytes: number;
  cachedBytes: number;
  toHostBytes: number;
  fromHostBytes: number;
}

/** Layout code: 0 bhsd, 1 bshd. */
export type LayoutCode = 0 | 1;

export interface Binding {
  DeviceBuffer: typeof DeviceBuffer;
  setErrorClass(cls: new (message: string, code: string) => Error): void;
  buildInfo(): NativeBuildInfo;
  cudaDeviceCount(): number;
  cudaDeviceInfo(device: number): NativeDeviceInfo;
  alloc(device: number, bytes: number, stream?: bigint): DeviceBuffer;
  /** alignment: the dtype's size; ptr must be a multiple of it. */
  wrapPointer(ptr: bigint, bytes: number, device: number, alignment?: number): DeviceBuffer;
  /** CPU memory of an ArrayBuffer (or a TypedArray's range of one), shared with JS, re-checked before every use. */
  wrapHost(array: ArrayBufferView | ArrayBuffer, bytes: number): DeviceBuffer;
  /** bytes: when given, src must hold exactly that many bytes now (re-checked after user code ran). */
  copyFromHost(dst: DeviceBuffer, dstOffset: number, src: ArrayBufferView | ArrayBuffer, stream?: bigint, bytes?: number): void;
  copyToHost(src: DeviceBuffer, srcOffset: number, dst: ArrayBufferView | ArrayBuffer, stream?: bigint): void;
  copyToHostAsync(src: DeviceBuffer, srcOffset: number, bytes: number, stream?: bigint): Promise<ArrayBuffer>;
  copyBuffer(dst: DeviceBuffer, dstOffset: number, src: DeviceBuffer, srcOffset: number, bytes: number, stream?: bigint): void;
  fill(dst: DeviceBuffer, byteValue: number, stream?: bigint): void;
  streamCreate(device: number): bigint;
  streamDestroy(device: number, stream: bigint): void;
  streamSynchronize(device: number, stream?: bigint): Promise<void>;
  deviceSynchronize(device: number): Promise<void>;
  memoryStats(device: number, resetPeak?: boolean): NativeMemoryStats;
  /** Releases the allocator's cached free blocks on a device. */
  trimMemory(device: number): void;

  // ---- ops (cpp/ops/<family>.cc). Outputs are allocated by the caller; lengths arrays are host Int32Arrays
  // checked and uploaded by the binding. Every op runs on its tensors' device.
  /** votes: out f32 [B, Hout, N - W]; groupReduce 0 mean, 1 sum, 2 max, 3 none. */
  snapkvScores(queries: NativeTensor, keys: NativeTensor, out: NativeTensor,
    options: { window: number; groupReduce: number; layout?: LayoutCode; seqLens?: Int32Array; lse?: NativeTensor }, stream?: bigint): void;
  /** kind 0 avg, 1 max; lengths per batch (first dim). */
  pool1d(input: NativeTensor, out: NativeTensor, options: { kernel: number; kind: number; lengths?: Int32Array }, stream?: bigint): void;
  /** order 0 position, 1 score; out holds rows of outRowStride (>= k). */
  topk(input: NativeTensor, out: NativeTensor, options: { k: number; order: number; outRowStride?: number; lengths?: Int32Array }, stream?: bigint): void;
  /** positions i32 [B, Hc * group or 1, K]; out in the cache's layout. */
  gather(cache: NativeTensor, positions: NativeTensor, out: NativeTensor, options: { layout?: LayoutCode; group: number }, stream?: bigint): void;
  /** The last `window` slots of each row of positions = L - W .. L - 1. */
  fillWindow(positions: NativeTensor, options: { window: number; n: number; rowStride: number; rowsPerBatch: number; seqLens?: Int32Array }, stream?: bigint): void;
  l2Norms(keys: NativeTensor, out: NativeTensor, options: { layout?: LayoutCode; seqLens?: Int32Array }, stream?: bigint): void;
  /** out = +inf at protected positions, sign * in elsewhere; may alias. */
  protectScores(input: NativeTensor, out: NativeTensor, options: { sinks: number; recent: number; sign: number; seqLens?: Int32Array }, stream?: bigint): void;
  /** scores += softmax((q.k/sqrt(D) + noise)/tau) summed over queries and group heads; noise 0 none, 1 gumbel. */
  accumulate(queries: NativeTensor, keys: NativeTensor, scores: NativeTensor,
    options: { layout?: LayoutCode; tau: number; noise: number; seed: number | bigint; step: number | bigint; seqLens?: Int32Array }, stream?: bigint): void;
  gumbel(out: NativeTensor, options: { seed: number | bigint; step: number | bigint }, stream?: bigint): void;
  /** out[b, j] = scale * sum_h in[b, h, j] */
  headReduce(input: NativeTensor, out: NativeTensor, options: { scale: number }, stream?: bigint): void;

  // ---- KvCache and tensor primitives (cpp/ops/kv_cache.cc)
  /** dst[..., offset + i, ...] = src[..., i, ...] along axis; src and dst must not share storage. */
  copyAxis(dst: NativeTensor, src: NativeTensor, options: { axis: number; offset: number }, stream?: bigint): void;
  /** Appends counts[b] of newKeys/newValues' T tokens after lengths[b]; positions continue from starts[b]. */
  kvAppend(keys: NativeTensor, values: NativeTensor, positions: NativeTensor, newKeys: NativeTensor, newValues: NativeTensor,
    options: { layout?: LayoutCode; lengths: Int32Array; counts: Int32Array; starts: Int32Array }, stream?: bigint): void;
  /** Checked in-place compaction of every item to its kept rows (keep i32 [B, H or 1, C]); zeroTail zeroes rows C.. */
  kvRetain(keep: NativeTensor, options: { lengths: Int32Array },
    items: Array<{ tensor: NativeTensor; layout?: LayoutCode; zeroTail?: boolean }>, stream?: bigint): void;
  // ---- head-adaptive selection and the ragged per-head cache (common/adaptive.h, common/ragged.h).
  // A ragged layout: head bh = b * heads + h owns storage rows [indptr[bh], indptr[bh + 1]), of
  // which the first lens[bh] are live (all of them without lens).
  /** positions i32 [B * budget], indptr i32 [B * H + 1] (outputs); scores f32 [B, H, N], or [rows] with ragged. */
  adaptiveSelect(scores: NativeTensor, positions: NativeTensor, indptr: NativeTensor,
    options: { budget: number; minPerHead: number; window: number; lengths?: Int32Array; ragged?: NativeRagged }, stream?: bigint): void;
  /** Kept rows of a dense 4-D cache (or of a ragged [rows, D] / [rows] source) into out [total + B*H*reserve, D]. */
  raggedGather(src: NativeTensor, selPositions: NativeTensor, selIndptr: NativeTensor, out: NativeTensor,
    options: { batch: number; heads: number; reserve: number; layout?: LayoutCode; srcRagged?: NativeRagged; outIndptr?: NativeTensor; outLens?: NativeTensor; identity?: boolean; op?: string }, stream?: bigint): void;
  /** src [B, H, T, D] appended after each head's live rows of dst [rows, D]; lens grows by T when updateLens. */
  raggedAppend(src: NativeTensor, dst: NativeTensor,
    options: { layout?: LayoutCode; ragged: NativeRagged; updateLens: boolean; positions?: NativeTensor; posBase?: Int32Array }, stream?: bigint): void;
  /** scores f32 [rows] += the step's softmax over each head's live keys [rows, D]; noise keyed by positions (or the index in the head). */
  raggedAccumulate(queries: NativeTensor, keys: NativeTensor, scores: NativeTensor,
    options: { layout?: LayoutCode; tau: number; noise: number; seed: number | bigint; step: number | bigint; ragged: NativeRagged; positions?: NativeTensor }, stream?: bigint): void;
  /** out f32 [B, n]: scale * sum over heads of perHead at each original position; -inf where no head holds it. */
  raggedLayerScores(perHead: NativeTensor, out: NativeTensor, options: { ragged: NativeRagged; positions?: NativeTensor; scale: number }, stream?: bigint): void;
  /** Zeroes x f32 [rows] outside every head's live rows. */
  raggedZeroGaps(x: NativeTensor, options: { ragged: NativeRagged }, stream?: bigint): void;
  /**
   * Decode attention (cpp/ops/decode.cc): out [B, Hq, T, D] in q's layout and dtype. selection 0 dense,
   * 1 positions sel [B, Hkv, k], 2 ragged sel [total] + indptr [B*Hkv + 1], 3 blocks sel [B, Hkv, nb]
   * of blockSize tokens. lse: f32 [B, Hq, T]. scores (dense only): f32 [B, Hkv, N] += the masses
   * softmax((logit + noise) / tau); noise 0 none, 1 gumbel.
   */
  decodeAttention(q: NativeTensor, keys: NativeTensor, values: NativeTensor, out: NativeTensor,
    options: { layout?: LayoutCode; scale: number; seqLens?: Int32Array; lse?: NativeTensor; selection?: number; sel?: NativeTensor;
      indptr?: NativeTensor; blockSize?: number; scores?: NativeTensor; tau?: number; noise?: number; seed?: number | bigint; step?: number | bigint },
    stream?: bigint): void;
  /** Quest metadata (cpp/ops/quest.cc): min/max f32 [B, Hkv, ceil(N / blockSize), D]; with from/fromRows only blocks holding tokens >= from are rewritten. */
  questMetadata(keys: NativeTensor, min: NativeTensor, max: NativeTensor,
    options: { layout?: LayoutCode; blockSize: number; seqLens?: Int32Array; from?: number; fromRows?: Int32Array }, stream?: bigint): void;
  /** Quest selection: out i32 [B, Hkv (Hq for groupReduce 3), k] ascending, -1 padded; groupReduce 1 sum, 2 max, 3 none. */
  questSelect(q: NativeTensor, min: NativeTensor, max: NativeTensor, out: NativeTensor,
    options: { layout?: LayoutCode; k: number; groupReduce: number }, stream?: bigint): void;
}

/** A ragged per-head layout as the binding reads it. */
export interface NativeRagged {
  batch: number;
  heads: number;
  indptr: NativeTensor;
  lens?: NativeTensor;
}
