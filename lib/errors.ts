/**
 * Every error kvsift raises, from TypeScript or from the native addon, is a {@link KvsiftError}
 * with a stable `code`. docs/ERRORS.md lists the codes, their causes and what to do.
 */
export type KvsiftErrorCode =
  | 'ERR_INVALID_ARG'
  | 'ERR_DISPOSED'
  | 'ERR_DEVICE_MISMATCH'
  | 'ERR_NO_DEVICE'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_CUDA'
  | 'ERR_INDEX_OUT_OF_RANGE'
  | 'ERR_UNSUPPORTED'
  | 'ERR_NATIVE_LOAD';

/**
 * The one error class of kvsift.
 *
 * @example
 * ```ts
 * try { Tensor.empty([2, -1], 'f32'); }
 * catch (e) { if (e instanceof KvsiftError && e.code === 'ERR_INVALID_ARG') console.error(e.message); }
 * ```
 */
export class KvsiftError extends Error {
  /** Stable machine-readable code. */
  readonly code: KvsiftErrorCode;
  /** For CUDA failures: the op that failed. */
  op?: string;
  /** For CUDA failures: the CUDA error's name, e.g. 'cudaErrorIllegalAddress'. */
  cudaError?: string;

  constructor(message: string, code: KvsiftErrorCode | string) {
    super(message);
    this.name = 'KvsiftError';
    this.code = code as KvsiftErrorCode;
  }
}
