/**
 * Tensor primitives an engine builds its own cache logic from (KvCache uses them too): copying
 * one tensor into another at an offset along an axis. Views (`t.view(shape)`) and host arrays
 * shared without a copy (`Tensor.fromHostArray`) are Tensor methods; any-rank `gather` and
 * `evict` live in select.ts.
 */
import { native } from './native';
import { opStream, sameDevice, type OpOptions } from './common';
import { checkTensor, type Tensor } from './tensor';
import { checkInt, checkOptions, invalid, invalidText } from './validate';

export interface CopyOptions extends OpOptions {
  /** The axis along which src is placed into dst (negative counts from the end). Required. */
  axis: number;
  /** Where src's first index along `axis` lands in dst. Required. */
  offset: number;
}

/**
 * Copies src into dst at `offset` along `axis`: dst[..., offset + i, ...] = src[..., i, ...]. Every
 * other axis must be equal, and the dtypes too. Stream-ordered on CUDA (no host
 * synchronization); one kernel launch whatever the rank. src and dst must not share storage
 * (a view of dst as src is refused).
 *
 * @example
 * ```ts
 * // write this step's key [B, Hkv, 1, D] at token n of a preallocated [B, Hkv, capacity, D] cache
 * copy(cacheKeys, stepKey, { axis: 2, offset: n });
 * ```
 */
export function copy(dst: Tensor, src: Tensor, options: CopyOptions): Tensor {
  const op = 'copy';
  const d = checkTensor(op, 'dst', dst);
  const s = checkTensor(op, 'src', src);
  const opts = checkOptions(op, options) as unknown as CopyOptions;
  const device = sameDevice(op, [d, s]);
  if (d.dtype !== s.dtype) throw invalidText(op, 'src.dtype', `dst's dtype '${d.dtype}'`, `'${s.dtype}'`);
  const rank = d.shape.length;
  if (rank === 0) throw invalidText(op, 'dst', 'a tensor of rank >= 1', 'a scalar');
  if (s.shape.length !== rank) throw invalidText(op, 'src', `a ${rank}-D tensor (dst's rank)`, `shape [${s.shape.join(', ')}]`);
  if (!Object.prototype.hasOwnProperty.call(opts, 'axis')) throw invalid(op, 'options.axis', `an integer in [${-rank}, ${rank - 1}]`, undefined);
  if (!Object.prototype.hasOwnProperty.call(opts, 'offset')) throw invalid(op, 'options.offset', 'an integer >= 0', undefined);
  const rawAxis = checkInt(op, 'options.axis', opts.axis, -rank, rank - 1);
  const axis = rawAxis < 0 ? rawAxis + rank : rawAxis;
  for (let a = 0; a < rank; a++) {
    if (a !== axis && s.shape[a] !== d.shape[a]) {
      throw invalidText(op, 'src', `dst's shape [${d.shape.join(', ')}] on every axis but ${axis}`, `shape [${s.shape.join(', ')}]`);
    }
  }
  const room = d.shape[axis] - s.shape[axis];
  if (room < 0) throw invalidText(op, 'src', `at most ${d.shape[axis]} entries along axis ${axis} (dst's)`, `${s.shape[axis]}`);
  const offset = checkInt(op, 'options.offset', opts.offset, 0, Math.max(0, room));
  if (d._buffer === s._buffer) throw invalidText(op, 'src', 'a tensor that does not share storage with dst', 'a view of dst');
  const stream = opStream(op, opts, device);
  native.copyAxis(d, s, { axis, offset }, stream);
  return d;
}
