/**
 * BUG-2 in test/faults.test.ts: an op whose CPU workspace cannot be allocated must throw
 * ERR_OUT_OF_MEMORY, not abort the process. keyformer.accumulate with T = N = 2^23 queries and keys
 * (32 MiB each) needs per-(row, key tile) partials of about 2^23 x 2^15 x 8 bytes = 2 TiB, which no
 * host has. The inputs themselves are small enough to allocate anywhere.
 */
import { keyformer, KvsiftError, Tensor } from '../../lib/index';

const n = 2 ** 23;
const q = Tensor.zeros([1, 1, n, 1], 'f32', 'cpu');
const k = Tensor.zeros([1, 1, n, 1], 'f32', 'cpu');
const s = Tensor.zeros([1, 1, n], 'f32', 'cpu');
let result: string;
try {
  keyformer.accumulate(q, k, s, { tau: 1, seed: 1, step: 0 });
  result = 'returned';
} catch (e) {
  result = e instanceof KvsiftError ? e.code : `not a KvsiftError: ${String(e)}`;
}
// the process goes on: a small op still works
const t = Tensor.from([1, 2, 3], { device: 'cpu' });
const after = Array.from(t.toArray()).join(',');
for (const x of [q, k, s, t]) x.dispose();
process.stdout.write(`${JSON.stringify({ result, after })}\n`);
