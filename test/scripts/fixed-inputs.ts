/** Fixed, deterministic inputs shared by a child script and its parent test, to compare results. */
import { snapkv, Tensor, type Device } from '../../lib/index';

/** snapkv.compress on fixed [1, 2, 4, 8] queries and [1, 2, 24, 8] keys/values: its positions and kept keys. */
export function fixedCompress(device: Device): { positions: number[]; keys: number[] } {
  const q = Tensor.from(Float32Array.from({ length: 2 * 4 * 8 }, (_, i) => Math.sin(i * 1.3)), { shape: [1, 2, 4, 8], device });
  const k = Tensor.from(Float32Array.from({ length: 2 * 24 * 8 }, (_, i) => Math.cos(i * 0.37)), { shape: [1, 2, 24, 8], device });
  const v = Tensor.from(Float32Array.from({ length: 2 * 24 * 8 }, (_, i) => Math.sin(i * 0.11)), { shape: [1, 2, 24, 8], device });
  const out = snapkv.compress(q, k, v, { window: 4, capacity: 10, kernel: 3 });
  const result = { positions: Array.from(out.positions.toArray()), keys: Array.from(out.keys.toArray()) };
  for (const t of [q, k, v, out.keys, out.values, out.positions]) t.dispose();
  return result;
}
