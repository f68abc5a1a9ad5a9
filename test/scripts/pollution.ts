/**
 * Options read through the prototype chain (issue 11, class 8). Every op runs once on clean
 * inputs; then every option name any op reads (in TypeScript or in the binding) is set on
 * Object.prototype, and on Array.prototype at the index of a hole, with a value that would change
 * the result if it were read; every op runs again and must give the same bytes. Prints
 * { ops, keys, changed: [...], errors: [...] }.
 */
import { evict, gather, h2o, keyformer, l2, memoryStats, snapkv, streaming, Tensor, topk, tova } from '../../lib/index';

const device = 'cpu';
const f32 = (shape: number[], seed: number) =>
  Tensor.from(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.7 + seed)), { shape, device });
const q = f32([1, 4, 3, 8], 1);
const k = f32([1, 2, 24, 8], 2);
const v = f32([1, 2, 24, 8], 3);
const s = f32([2, 24], 4);
const pos = Tensor.from(Int32Array.of(1, 5, 7, 2, 3, 9), { shape: [1, 2, 3], device });

const ops: Record<string, () => Tensor | Tensor[]> = {
  topk: () => topk(s, 5),
  'topk lengths': () => topk(s, 3, { lengths: [20, 10] }),
  gather: () => gather(k, pos),
  evict: () => Object.values(evict(k, v, pos)),
  'snapkv.scores': () => snapkv.scores(q, k, { window: 3 }),
  'snapkv.pool': () => snapkv.pool(s, { kernel: 3, kind: 'max' }),
  'snapkv.compress': () => Object.values(snapkv.compress(q, k, v, { window: 3, capacity: 10 })),
  'l2.norms': () => l2.norms(k),
  'l2.compress': () => Object.values(l2.compress(k, v, { capacity: 10 })),
  'keyformer.accumulate': () => keyformer.accumulate(q, k, Tensor.zeros([1, 2, 24], 'f32', device), { tau: 1.5, seed: 7, step: 3 }),
  'keyformer.gumbel': () => keyformer.gumbel([1, 2, 1, 8], { seed: 1, step: 2, device }),
  'keyformer.select': () => keyformer.select(f32([1, 2, 24], 5), { capacity: 8, recent: 2 }),
  'h2o.accumulate': () => h2o.accumulate(q, k, Tensor.zeros([1, 2, 24], 'f32', device)),
  'h2o.select': () => h2o.select(f32([1, 2, 24], 6), { capacity: 8, recent: 2 }),
  'tova.select': () => tova.select(f32([1, 4, 1, 8], 7), k, { capacity: 9 }),
  'streaming.select': () => streaming.select(30, { sinks: 2, recent: 5, device }),
  'Tensor.from': () => Tensor.from([1, 2, 3, 4], { device }),
  'Tensor.zeros': () => Tensor.zeros([2, 3], 'f32', device),
  'toArray via to': () => k.to(device),
};

// values that change a result when read: the opposite order, no noise, another layout, short
// lengths, other windows and capacities...
const POLLUTION: Record<string, unknown> = {
  order: 'score',
  noise: 'none',
  layout: 'bshd',
  seqLens: [3],
  lengths: [4, 4],
  window: 2,
  groupReduce: 'max',
  capacity: 4,
  kernel: 5,
  pooling: 'avg',
  kind: 'avg',
  sinks: 1,
  recent: 3,
  tau: 0.25,
  seed: 99,
  step: 12,
  dtype: 'bf16',
  shape: [4, 1],
  device: 'cuda:7',
  resetPeak: true,
  group: 2,
  k: 1,
  outRowStride: 9,
  scale: 3,
  sign: -1,
  n: 3,
  rowStride: 3,
  rowsPerBatch: 2,
  lse: 1,
  _buffer: 1,
  _dtypeCode: 1,
};

function bytes(r: Tensor | Tensor[]): string {
  const list = Array.isArray(r) ? r : [r];
  const out = list.map((t) => `${t.dtype}[${t.shape.join(',')}]:${Buffer.from((t.toRawArray() as Uint8Array).buffer).toString('base64')}`).join('|');
  for (const t of list) t.dispose();
  return out;
}

const clean: Record<string, string> = {};
for (const [name, run] of Object.entries(ops)) clean[name] = bytes(run());
// a peak above the live bytes, which a read `resetPeak` would drop
Tensor.zeros([1 << 16], 'f32', device).dispose();

const proto = Object.prototype as Record<string, unknown>;
for (const [key, value] of Object.entries(POLLUTION)) proto[key] = value;
(Array.prototype as unknown as Record<number, unknown>)[1] = 12;
const changed: string[] = [];
const errors: string[] = [];
try {
  for (const [name, run] of Object.entries(ops)) {
    try {
      if (bytes(run()) !== clean[name]) changed.push(name);
    } catch (e) {
      errors.push(`${name}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const peak = memoryStats(device).peakBytes;
  if (memoryStats(device).peakBytes !== peak) changed.push('memoryStats');
} finally {
  for (const key of Object.keys(POLLUTION)) delete proto[key];
  delete (Array.prototype as unknown as Record<number, unknown>)[1];
}
process.stdout.write(`${JSON.stringify({ ops: Object.keys(ops).length, keys: Object.keys(POLLUTION).length, changed, errors })}\n`);
