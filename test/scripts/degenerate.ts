/**
 * Degenerate shapes in every op (issue 11, class 5), run with KVSIFT_DEBUG_POISON=1 so every new
 * CPU allocation starts as 0xFF bytes (NaN as f32, -1 as i32): an output an op forgot to write
 * shows. For each op and each dimension set to 0 in turn, the call must throw a KvsiftError or
 * return outputs free of the poison pattern (and, the inputs being finite, of NaN). Prints { cases, rejected, defined, bad: [...] }.
 */
import { evict, gather, h2o, keyformer, KvsiftError, l2, snapkv, Tensor, topk, tova, type DType } from '../../lib/index';

const device = 'cpu';
function filled(shape: number[], dtype: DType = 'f32'): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (dtype === 'i32') return Tensor.from(new Int32Array(n), { shape, device });
  return Tensor.from(Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1)), { shape, dtype, device });
}

/** true when any 4-byte word of an f32/i32 tensor is the poison 0xFFFFFFFF */
function poisoned(t: Tensor): boolean {
  if (t.dtype === 'f32' || t.dtype === 'i32') {
    const words = new Uint32Array((t.toRawArray() as Float32Array | Int32Array).buffer);
    return words.some((w) => w === 0xffffffff);
  }
  const raw = t.toRawArray() as Uint16Array;
  return raw.some((w) => w === 0xffff);
}

function outputs(r: unknown): Tensor[] {
  if (r instanceof Tensor) return [r];
  if (r && typeof r === 'object') return Object.values(r).filter((v): v is Tensor => v instanceof Tensor);
  return [];
}

interface Case {
  name: string;
  run: (d: Record<string, number>) => unknown;
  dims: Record<string, number>;
}

const cases: Case[] = [
  { name: 'snapkv.scores', dims: { B: 1, Hq: 4, Hkv: 2, N: 12, W: 3, D: 4 }, run: (d) => snapkv.scores(filled([d.B, d.Hq, d.W, d.D]), filled([d.B, d.Hkv, d.N, d.D]), { window: d.W }) },
  { name: 'snapkv.scores none', dims: { B: 1, Hq: 4, Hkv: 2, N: 12, W: 3, D: 4 }, run: (d) => snapkv.scores(filled([d.B, d.Hq, d.W, d.D]), filled([d.B, d.Hkv, d.N, d.D]), { window: d.W, groupReduce: 'none' }) },
  { name: 'snapkv.compress', dims: { B: 1, Hq: 4, Hkv: 2, N: 12, W: 3, D: 4, C: 6 }, run: (d) => snapkv.compress(filled([d.B, d.Hq, d.W, d.D]), filled([d.B, d.Hkv, d.N, d.D]), filled([d.B, d.Hkv, d.N, d.D]), { window: d.W, capacity: d.C }) },
  { name: 'snapkv.pool', dims: { R: 2, M: 9, K: 3 }, run: (d) => snapkv.pool(filled([d.R, d.M]), { kernel: d.K, kind: 'avg' }) },
  { name: 'topk', dims: { R: 3, M: 9, K: 2 }, run: (d) => topk(filled([d.R, d.M]), d.K) },
  { name: 'gather', dims: { B: 1, H: 2, N: 8, D: 4, K: 3 }, run: (d) => gather(filled([d.B, d.H, d.N, d.D]), filled([d.B, d.H, d.K], 'i32')) },
  { name: 'evict', dims: { B: 1, H: 2, N: 8, D: 4, K: 3 }, run: (d) => evict(filled([d.B, d.H, d.N, d.D]), filled([d.B, d.H, d.N, d.D]), filled([d.B, d.H, d.K], 'i32')) },
  { name: 'l2.norms', dims: { B: 1, H: 2, N: 8, D: 4 }, run: (d) => l2.norms(filled([d.B, d.H, d.N, d.D])) },
  { name: 'l2.compress', dims: { B: 1, H: 2, N: 8, D: 4, C: 5 }, run: (d) => l2.compress(filled([d.B, d.H, d.N, d.D]), filled([d.B, d.H, d.N, d.D]), { capacity: d.C }) },
  {
    name: 'keyformer.accumulate',
    dims: { B: 1, Hq: 4, Hkv: 2, N: 8, T: 1, D: 4 },
    run: (d) => keyformer.accumulate(filled([d.B, d.Hq, d.T, d.D]), filled([d.B, d.Hkv, d.N, d.D]), Tensor.zeros([d.B, d.Hkv, d.N], 'f32', device), { tau: 1, seed: 1, step: 0 }),
  },
  { name: 'h2o.accumulate', dims: { B: 1, Hq: 4, Hkv: 2, N: 8, T: 2, D: 4 }, run: (d) => h2o.accumulate(filled([d.B, d.Hq, d.T, d.D]), filled([d.B, d.Hkv, d.N, d.D]), Tensor.zeros([d.B, d.Hkv, d.N], 'f32', device)) },
  { name: 'keyformer.select', dims: { B: 1, H: 2, N: 8, C: 4, R: 1 }, run: (d) => keyformer.select(filled([d.B, d.H, d.N]), { capacity: d.C, recent: d.R }) },
  { name: 'keyformer.gumbel', dims: { B: 1, H: 2, T: 2, N: 5 }, run: (d) => keyformer.gumbel([d.B, d.H, d.T, d.N], { seed: 1, step: 1, device }) },
  { name: 'tova.select', dims: { B: 1, Hq: 4, Hkv: 2, N: 8, D: 4, C: 3 }, run: (d) => tova.select(filled([d.B, d.Hq, 1, d.D]), filled([d.B, d.Hkv, d.N, d.D]), { capacity: d.C }) },
];

const bad: string[] = [];
let total = 0;
let rejected = 0;
let defined = 0;
for (const c of cases) {
  for (const key of Object.keys(c.dims)) {
    const dims = { ...c.dims, [key]: 0 };
    total++;
    const label = `${c.name} with ${key} = 0`;
    try {
      const outs = outputs(c.run(dims));
      if (outs.some(poisoned)) bad.push(`${label}: output left uninitialized`);
      else if (outs.some((t) => t.dtype !== 'i32' && Array.from(t.toArray()).some((v) => !Number.isFinite(v)))) bad.push(`${label}: NaN or infinite output from finite inputs`);
      else defined++;
    } catch (e) {
      if (e instanceof KvsiftError) {
        rejected++;
        if (/Infinity|NaN/.test(e.message)) bad.push(`${label}: unclear message: ${e.message}`);
      } else bad.push(`${label}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    }
  }
}
process.stdout.write(`${JSON.stringify({ poison: process.env.KVSIFT_DEBUG_POISON === '1', cases: total, rejected, defined, bad })}\n`);
