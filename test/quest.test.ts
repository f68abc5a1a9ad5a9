/**
 * Quest (arXiv 2406.10774; ALGORITHMS.md "Quest"): block metadata and its incremental update, the
 * query-aware bound and the selection against the float64 reference (test/reference/decode.ts),
 * the selection feeding decode.sparseAttention, bad input, then CUDA vs the CPU backend.
 */
import { describe, expect, it } from 'vitest';
import { decode, quest, Tensor, type Device, type DType } from '../lib/index';
import { cudaDevices, describeCuda, makeCache, expectClose, expectIdentical, expectKvsiftError, testRng, type Rng } from './helpers';
import { attention as refAttention, questBounds, questMetadata, questSelect } from '../reference/decode';
import { fromLayout, shapeIn, type Layout } from '../reference/layout';

const LAYOUTS: Layout[] = ['bhsd', 'bshd'];
const DTYPES: ('f32' | 'f16' | 'bf16')[] = ['f32', 'f16', 'bf16'];
const CASES = LAYOUTS.flatMap((layout) => DTYPES.map((dtype) => ({ layout, dtype })));


function shape(rng: Rng) {
  const Hkv = rng.int(1, 3);
  const G = [1, 4, 8][rng.int(0, 2)];
  return { B: rng.int(1, 3), Hkv, G, Hq: Hkv * G, N: rng.int(5, 400), D: [40, 64, 128, 7][rng.int(0, 3)], bs: rng.int(1, 33) };
}

describe('quest', () => {
  for (const { layout, dtype } of CASES) {
    it(`metadata holds each block's min and max over valid tokens, ${layout} ${dtype}`, () => {
      const rng = testRng();
      for (let rep = 0; rep < 3; rep++) {
        const s = shape(rng);
        const k = makeCache(rng.normalArray(s.B * s.Hkv * s.N * s.D), [s.B, s.Hkv, s.N, s.D], dtype, layout);
        const seqLens = Int32Array.from({ length: s.B }, () => rng.int(0, s.N));
        const meta = quest.metadata(k.t, { blockSize: s.bs, seqLens, layout });
        const ref = questMetadata(k.ref, s.bs, seqLens);
        expect(meta.blockSize).toBe(s.bs);
        expect(meta.min.shape).toEqual([s.B, s.Hkv, ref.nb, s.D]);
        expectIdentical(meta.min.toArray(), Float32Array.from(ref.min), 'min');
        expectIdentical(meta.max.toArray(), Float32Array.from(ref.max), 'max');
      }
    });
  }

  it('update refreshes only the blocks holding tokens >= from (a number or one per row)', () => {
    const rng = testRng();
    const s = { B: 3, Hkv: 2, N: 100, D: 24, bs: 8 };
    const data = rng.normalArray(s.B * s.Hkv * s.N * s.D);
    const k = makeCache(data, [s.B, s.Hkv, s.N, s.D], 'f32', 'bhsd');
    const lens = Int32Array.of(40, 61, 77);
    const meta = quest.metadata(k.t, { blockSize: s.bs, seqLens: lens });
    // rows grow by a few tokens, whose keys change; earlier tokens change too, but behind `from`
    const grown = Int32Array.of(45, 64, 100);
    const data2 = Float32Array.from(data, (x) => x + 10);
    const k2 = makeCache(data2, [s.B, s.Hkv, s.N, s.D], 'f32', 'bhsd');
    const same = quest.update(meta, k2.t, { from: lens, seqLens: grown });
    expect(same).toBe(meta);
    // expected: blocks before floor(from / bs) as in the old metadata, later ones from the new keys
    const oldRef = questMetadata(k.ref, s.bs, lens);
    const newRef = questMetadata(k2.ref, s.bs, grown);
    const nb = oldRef.nb;
    const wantMin = new Float32Array(oldRef.min.length);
    const wantMax = new Float32Array(oldRef.max.length);
    for (let b = 0; b < s.B; b++)
      for (let h = 0; h < s.Hkv; h++)
        for (let c = 0; c < nb; c++)
          for (let d = 0; d < s.D; d++) {
            const i = ((b * s.Hkv + h) * nb + c) * s.D + d;
            const src = c < Math.floor(lens[b] / s.bs) ? oldRef : newRef;
            wantMin[i] = src.min[i];
            wantMax[i] = src.max[i];
          }
    expectIdentical(meta.min.toArray(), wantMin, 'min');
    expectIdentical(meta.max.toArray(), wantMax, 'max');
    // a single `from` for all rows, from 0: a full rebuild
    quest.update(meta, k2.t, { from: 0, seqLens: grown });
    expectIdentical(meta.min.toArray(), Float32Array.from(newRef.min), 'rebuilt min');
  });

  for (const reduce of ['sum', 'max', 'none'] as const) {
    it(`select returns the highest-bound blocks ascending, ties low, -1 padded, groupReduce ${reduce}`, () => {
      const rng = testRng();
      for (let rep = 0; rep < 4; rep++) {
        const s = shape(rng);
        const layout = LAYOUTS[rep % 2];
        const dtype = DTYPES[rep % 3];
        const k = makeCache(rng.normalArray(s.B * s.Hkv * s.N * s.D), [s.B, s.Hkv, s.N, s.D], dtype, layout);
        const q = makeCache(rng.normalArray(s.B * s.Hq * s.D), [s.B, s.Hq, 1, s.D], dtype, layout);
        const seqLens = Int32Array.from({ length: s.B }, () => rng.int(1, s.N));
        const meta = quest.metadata(k.t, { blockSize: s.bs, seqLens, layout });
        const nb = meta.min.shape[2];
        const blocks = rng.int(1, nb);
        const sel = quest.select(q.t, meta, { blocks, groupReduce: reduce, layout });
        const rows = s.B * (reduce === 'none' ? s.Hq : s.Hkv);
        expect(sel.shape).toEqual([s.B, reduce === 'none' ? s.Hq : s.Hkv, blocks]);
        const ref = questMetadata(k.ref, s.bs, seqLens);
        const bounds = questBounds(q.ref, ref.min, ref.max, s.Hkv, nb, reduce);
        const got = sel.toArray() as Int32Array;
        const want = questSelect(bounds, rows, nb, blocks);
        // exact ids, unless two bounds are within f32 rounding of each other at the cut
        for (let r = 0; r < rows; r++) {
          const g = Array.from(got.subarray(r * blocks, (r + 1) * blocks));
          const w = Array.from(want.subarray(r * blocks, (r + 1) * blocks));
          if (g.join() === w.join()) continue;
          const gs = g.filter((c) => c >= 0).map((c) => bounds[r * nb + c]).sort((a, b) => b - a);
          const ws = w.filter((c) => c >= 0).map((c) => bounds[r * nb + c]).sort((a, b) => b - a);
          expectClose(gs, ws, { rtol: 1e-5, atol: 1e-5, label: `row ${r}` });
        }
      }
    });
  }

  it('breaks ties toward the lower block', () => {
    // identical keys in every block: every bound ties
    const k = Tensor.from(new Float32Array(1 * 1 * 32 * 4).fill(0.5), { shape: [1, 1, 32, 4], dtype: 'f32', device: 'cpu' });
    const q = Tensor.from(Float32Array.of(1, -1, 2, 0.5), { shape: [1, 1, 1, 4], dtype: 'f32', device: 'cpu' });
    const meta = quest.metadata(k, { blockSize: 4 });
    expect(Array.from(quest.select(q, meta, { blocks: 3 }).toArray())).toEqual([0, 1, 2]);
  });

  it('never selects an empty block: rows with fewer valid blocks are padded with -1', () => {
    const rng = testRng();
    const k = makeCache(rng.normalArray(2 * 1 * 40 * 8), [2, 1, 40, 8], 'f32', 'bhsd');
    const q = makeCache(rng.normalArray(2 * 2 * 8), [2, 2, 1, 8], 'f32', 'bhsd');
    const meta = quest.metadata(k.t, { blockSize: 8, seqLens: Int32Array.of(9, 40) });
    const sel = Array.from(quest.select(q.t, meta, { blocks: 4 }).toArray());
    expect(sel.slice(0, 4)).toEqual([0, 1, -1, -1]);
    expect(sel.slice(4).every((c) => c >= 0)).toBe(true);
  });

  it('feeds decode.sparseAttention, which recovers most of the attention mass at 1/8 of the blocks', () => {
    const rng = testRng();
    const [B, Hkv, G, N, D, bs] = [1, 2, 1, 2048, 64, 16];
    // a cache with a few "heavy" regions the query aligns with, as attention sinks and retrieval heads give
    const q = rng.normalArray(B * Hkv * G * D, 0, 1);
    const kdata = rng.normalArray(B * Hkv * N * D, 0, 0.3);
    // each heavy key leans toward the group's summed query: about +6 on every head's logit
    for (let h = 0; h < Hkv; h++)
      for (const c0 of [3, 40, 77, 100])
        for (let j = c0 * bs; j < c0 * bs + bs; j++)
          for (let d = 0; d < D; d++) for (let g = 0; g < G; g++) kdata[(h * N + j) * D + d] += 0.8 * q[(h * G + g) * D + d];
    const qt = makeCache(q, [B, Hkv * G, 1, D], 'f32', 'bhsd');
    const kt = makeCache(kdata, [B, Hkv, N, D], 'f32', 'bhsd');
    const vt = makeCache(rng.normalArray(B * Hkv * N * D), [B, Hkv, N, D], 'f32', 'bhsd');
    const meta = quest.metadata(kt.t, { blockSize: bs });
    const blocks = quest.select(qt.t, meta, { blocks: N / bs / 8 });
    const sparse = decode.sparseAttention(qt.t, kt.t, vt.t, { blocks, blockSize: bs, returnLse: true });
    const dense = decode.attention(qt.t, kt.t, vt.t, { returnLse: true });
    // the fraction of each head's softmax mass inside the selection is exp(lse_sparse - lse_dense)
    const ls = sparse.lse!.toArray();
    const ld = dense.lse!.toArray();
    for (let i = 0; i < ls.length; i++) expect(Math.exp(ls[i] - ld[i])).toBeGreaterThan(0.6);
    const ids = Array.from(blocks.toArray());
    const ref = refAttention(qt.ref, kt.ref, vt.ref, {
      selection: (b, h) => ids.slice(h * 16, h * 16 + 16).flatMap((c) => Array.from({ length: bs }, (_, x) => c * bs + x)),
    });
    expectClose(sparse.out.toArray(), ref.out, { rtol: 1e-4, atol: 1e-6 });
  });

  it('rejects bad input naming the argument', () => {
    const k = Tensor.zeros([1, 2, 20, 8], 'f32', 'cpu');
    const q = Tensor.zeros([1, 4, 1, 8], 'f32', 'cpu');
    const E = 'ERR_INVALID_ARG';
    expectKvsiftError(() => quest.metadata(k, { blockSize: 0 }), E, 'quest.metadata: expected an integer in [1, 2147483647] for options.blockSize, but received 0');
    expectKvsiftError(() => quest.metadata(k, { blockSize: 4, seqLens: [21] }), E, 'quest.metadata: expected an integer in [0, 20] for options.seqLens[0], but received 21');
    const meta = quest.metadata(k, { blockSize: 4 });
    expectKvsiftError(() => quest.select(q, meta, { blocks: 6 }), E, 'quest.select: expected an integer in [1, 5] for options.blocks, but received 6');
    expectKvsiftError(() => quest.select(q, meta, { blocks: 2, groupReduce: 'mean' as 'sum' }), E,
      "quest.select: expected one of 'sum', 'max', 'none' for options.groupReduce, but received 'mean'");
    expectKvsiftError(() => quest.select(Tensor.zeros([1, 4, 2, 8], 'f32', 'cpu'), meta, { blocks: 2 }), E, 'quest.select: expected one query token for q, but received 2');
    expectKvsiftError(() => quest.select(Tensor.zeros([1, 3, 1, 8], 'f32', 'cpu'), meta, { blocks: 2 }), E,
      "quest.select: expected a head count that is a multiple of the metadata's 2 for q, but received 3");
    expectKvsiftError(() => quest.select(q, { min: meta.min, max: meta.min, blockSize: 0 }, { blocks: 2 }), E,
      'quest.select: expected an integer in [1, 2147483647] for meta.blockSize, but received 0');
    expectKvsiftError(() => quest.update(meta, k, { from: 21 }), E, 'quest.update: expected an integer in [0, 20] for options.from, but received 21');
    expectKvsiftError(() => quest.update(meta, k, {} as { from: number }), E, 'quest.update: expected an integer in [0, 20] or one per row for options.from, but received undefined');
    expectKvsiftError(() => quest.update(meta, Tensor.zeros([1, 2, 24, 8], 'f32', 'cpu'), { from: 0 }), E,
      "quest.update: expected shape [1, 2, 6, 8] (the keys' blocks) for meta.min, but received [1, 2, 5, 8]");
  });
});

describeCuda('quest cuda', () => {
  const dev = cudaDevices()[0];
  for (const { layout, dtype } of CASES) {
    it(`metadata, update and select match the CPU backend, ${layout} ${dtype}`, () => {
      const rng = testRng();
      for (let rep = 0; rep < 2; rep++) {
        const s = shape(rng);
        const k = makeCache(rng.normalArray(s.B * s.Hkv * s.N * s.D), [s.B, s.Hkv, s.N, s.D], dtype, layout);
        const q = makeCache(rng.normalArray(s.B * s.Hq * s.D), [s.B, s.Hq, 1, s.D], dtype, layout);
        const seqLens = Int32Array.from({ length: s.B }, () => rng.int(1, s.N));
        const mc = quest.metadata(k.t, { blockSize: s.bs, seqLens, layout });
        const mg = quest.metadata(k.t.to(dev), { blockSize: s.bs, seqLens, layout });
        expectIdentical(mg.min.toArray(), mc.min.toArray(), 'min');
        expectIdentical(mg.max.toArray(), mc.max.toArray(), 'max');
        const from = Int32Array.from(seqLens, (L) => Math.max(0, L - rng.int(0, 20)));
        quest.update(mc, k.t, { from, layout });
        quest.update(mg, k.t.to(dev), { from, layout });
        expectIdentical(mg.max.toArray(), mc.max.toArray(), 'updated max');
        const nb = mc.min.shape[2];
        for (const groupReduce of ['sum', 'max', 'none'] as const) {
          const blocks = rng.int(1, nb);
          const sc = quest.select(q.t, mc, { blocks, groupReduce, layout });
          const sg = quest.select(q.t.to(dev), mg, { blocks, groupReduce, layout });
          expectIdentical(sg.toArray(), sc.toArray(), `select ${groupReduce}`);
        }
      }
    });
  }
});
