/**
 * kvsift: fused kernels for LLM KV-cache compression, on CUDA and on a multi-threaded CPU
 * backend, behind typed tensors.
 */
export { KvsiftError, type KvsiftErrorCode } from './errors';
export { buildInfo, devices, defaultDevice, cudaDeviceCount, type Device, type DeviceInfo, type CpuDeviceInfo, type CudaDeviceInfo, type BuildInfo } from './device';
export {
  Tensor,
  memoryStats,
  trimMemory,
  transferStats,
  dtypeBytes,
  type DType,
  type ArrayFor,
  type RawArrayFor,
  type HostArray,
  type TensorData,
  type TensorFromOptions,
  type TensorHostArrayOptions,
  type TensorPointerOptions,
  type MemoryStats,
  type TransferStats,
} from './tensor';
export { KvCache, type KvCacheOptions, type AppendOptions, type RetainOptions, type CacheDType } from './kv_cache';
export { copy, type CopyOptions } from './primitives';
export { Stream, synchronize } from './stream';
export { f32ToF16, f16ToF32, f32ToBf16, bf16ToF32 } from './half';
export { topk, gather, evict, type TopkOptions, type GatherOptions, type Compacted } from './select';
export type { Layout, OpOptions, LayoutOptions } from './common';
export * as snapkv from './snapkv';
export * as l2 from './l2';
export * as keyformer from './keyformer';
export { h2o, tova, streaming, type TovaOptions, type StreamingOptions, type H2OAccumulateOptions } from './baselines';
export * as adaptive from './adaptive';
export * as budgets from './budgets';
export { compactRagged, RaggedKvCache, type RaggedLayout, type RaggedSelection, type RaggedCompacted, type CompactRaggedOptions, type RaggedKvCacheOptions, type RaggedAppendOptions, type RaggedRetainOptions } from './ragged_cache';
export * as decode from './decode';
export * as quest from './quest';
export type { AttentionOptions, AttentionResult, AccumulateSpec, SparseAttentionOptions, RaggedPositions } from './decode';
export type { QuestMetadata } from './quest';
