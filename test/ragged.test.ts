/**
 * The ragged per-head cache (docs/ALGORITHMS.md "Adaptive budgets"): compactRagged and its
 * memory, RaggedKvCache's append/retain against a host mirror, and the decode ops on the ragged
 * form (keyformer/h2o accumulate, l2.norms, tova.select) against the equivalent dense rows and
 * the float64 references; then CUDA against the CPU backend.
 */
import { describe, expect, it } from 'vitest';
import { adaptive, compactRagged, dtypeBytes, h2o, keyformer, l2, memoryStats, RaggedKvCache, Tensor, tova, type Device, type DType } from '../lib/index';
import { cudaDevices, describeCuda, expectClose, expectIdentical, expectKvsiftError, testRng, tolerance, type Rng } from './helpers';
import { adaptiveSelect, denseLayout, headOf, raggedAccumulate, type HostRagged } from '../reference/adaptive';
import { tovaScores } from '../reference/baselines';
import { fromLayout, shapeIn, toLayout, type Cache4, type Layout } from '../reference/layout';

const LAYOUTS: Layout[] = ['bhsd', 'bshd'];
const DTYPES: ('f32' | 'f16' | 'bf16')[] = ['f32', 'f16', 'bf16'];

function makeCache(rng: Rng, B: number, H: number, S: number, D: number, dtype: DType, layout: Layout, device: Device = 'cpu', std = 1): { t: Tensor; ref: Cache4 } {
  const data = rng.normalArray(B * H * S * D, 0, std);
  const t = Tensor.from(toLayout({ data, B, H, S, D }, layout), { shape: shapeIn(layout, B, H, S, D), dtype, device });
  return { t, ref: fromLayout(t.toArray(), layout, B, H, S, D) };
}

function row(c: Cache4, b: number, h: number, s: number): number[] {
  const o = ((b * c.H + h) * c.S + s) * c.D;
  return Array.from(c.data).slice(o, o + c.D);
}

/** Storage rows [rows, D] as arrays. */
function rowsOf(t: Tensor): number[][] {
  const [rows, D] = t.shape;
  const a = Array.from(t.toArray());
  return Array.from({ length: rows }, (_, r) => a.slice(r * D, r * D + D));
}

function hostLayout(B: number, H: number, indptr: Tensor, lens?: Tensor): HostRagged {
  return { B, H, indptr: indptr.toArray(), lens: lens?.toArray() };
}

describe('compactRagged', () => {
  it('keeps exactly the selected rows, in both layouts, and its new memory is the kept K and V alone', () => {
    const rng = testRng();
    for (const layout of LAYOUTS) {
      for (const dtype of DTYPES) {
        const [B, H, N, D] = [rng.int(1, 3), rng.int(1, 4), rng.int(5, 40), rng.int(1, 24)];
        const k = makeCache(rng, B, H, N, D, dtype, layout);
        const v = makeCache(rng, B, H, N, D, dtype, layout);
        const scores = Tensor.from(rng.normalArray(B * H * N), { shape: [B, H, N], device: 'cpu' });
        const budget = rng.int(H, H * N);
        const sel = adaptive.select(scores, { budget, window: 1 });
        const before = memoryStats('cpu').liveBytes;
        const small = compactRagged(k.t, v.t, sel, { layout });
        const grown = memoryStats('cpu').liveBytes - before;
        expect(grown, `${layout} ${dtype}`).toBe(B * budget * D * dtypeBytes(dtype) * 2);
        expect(small.positions).toBe(sel.positions);
        expect(small.indptr).toBe(sel.indptr);
        expect(small.keys.shape).toEqual([B * budget, D]);
        const pos = sel.positions.toArray();
        const ind = sel.indptr.toArray();
        const kr = rowsOf(small.keys);
        const vr = rowsOf(small.values);
        for (let bh = 0; bh < B * H; bh++) {
          for (let e = ind[bh]; e < ind[bh + 1]; e++) {
            expect(kr[e]).toEqual(row(k.ref, Math.floor(bh / H), bh % H, pos[e]));
            expect(vr[e]).toEqual(row(v.ref, Math.floor(bh / H), bh % H, pos[e]));
          }
        }
        // Everything the compacted cache holds: K + V + positions + indptr.
        const all = small.keys.byteLength + small.values.byteLength + small.positions.byteLength + small.indptr.byteLength;
        expect(all).toBe(B * budget * D * dtypeBytes(dtype) * 2 + B * budget * 4 + (B * H + 1) * 4);
        for (const t of [k.t, v.t, scores, small.keys, small.values, sel.positions, sel.indptr]) t.dispose();
      }
    }
  });

  it('rejects a selection that does not fit the cache', () => {
    const rng = testRng();
    const k = makeCache(rng, 1, 2, 8, 4, 'f32', 'bhsd');
    const sel = adaptive.select(Tensor.from(rng.normalArray(3 * 8), { shape: [1, 3, 8], device: 'cpu' }), { budget: 6 });
    expectKvsiftError(() => compactRagged(k.t, k.t, sel), 'ERR_INVALID_ARG',
      'compactRagged: expected an i32 tensor [3] (B * H + 1) for selection.indptr, but received i32 [4]');
  });
});

/** A host mirror of a ragged cache: per head, the live tokens' (position, key row, value row). */
type Mirror = { pos: number; k: number[]; v: number[] }[][];

function expectCacheEquals(cache: RaggedKvCache, mirror: Mirror, label: string): void {
  const ind = cache.indptr.toArray();
  const lens = cache.lens.toArray();
  const kr = rowsOf(cache.keys);
  const vr = rowsOf(cache.values);
  const pos = cache.positions.toArray();
  for (let bh = 0; bh < mirror.length; bh++) {
    expect(lens[bh], `${label}: head ${bh} length`).toBe(mirror[bh].length);
    mirror[bh].forEach((tok, i) => {
      expect(pos[ind[bh] + i], `${label}: head ${bh} row ${i} position`).toBe(tok.pos);
      expect(kr[ind[bh] + i], `${label}: head ${bh} row ${i} key`).toEqual(tok.k);
      expect(vr[ind[bh] + i], `${label}: head ${bh} row ${i} value`).toEqual(tok.v);
    });
  }
}

describe('RaggedKvCache', () => {
  it('appends and retains after an adaptive compression, carrying per-row scores along', () => {
    const rng = testRng();
    for (const layout of LAYOUTS) {
      const [B, H, N, D] = [rng.int(1, 3), rng.int(1, 4), rng.int(8, 30), rng.int(1, 12)];
      const dtype = DTYPES[rng.int(0, 2)];
      const k = makeCache(rng, B, H, N, D, dtype, layout);
      const v = makeCache(rng, B, H, N, D, dtype, layout);
      const votes = rng.normalArray(B * H * N);
      const budget = rng.int(2 * H, H * N);
      const sel = adaptive.select(Tensor.from(votes, { shape: [B, H, N], device: 'cpu' }), { budget, window: 2 });
      const reserve = rng.int(3, 6);
      const cache = RaggedKvCache.fromSelection(k.t, v.t, sel, { layout, reserve });
      expect(cache.rows).toBe(B * budget + B * H * reserve);
      const ref = adaptiveSelect(votes, denseLayout(B, H, N), { budget, window: 2 });
      const mirror: Mirror = [];
      for (let bh = 0; bh < B * H; bh++) {
        const [b, h] = [Math.floor(bh / H), bh % H];
        mirror.push(Array.from(ref.positions.slice(ref.indptr[bh], ref.indptr[bh + 1])).map((p) => ({ pos: p, k: row(k.ref, b, h, p), v: row(v.ref, b, h, p) })));
      }
      expectCacheEquals(cache, mirror, `${layout}: compacted`);
      // Two appends fill some of the room.
      let next = N;
      for (const T of [1, 2]) {
        const nk = makeCache(rng, B, H, T, D, dtype, layout);
        const nv = makeCache(rng, B, H, T, D, dtype, layout);
        cache.append(nk.t, nv.t);
        for (let bh = 0; bh < B * H; bh++) {
          for (let t = 0; t < T; t++) mirror[bh].push({ pos: next + t, k: row(nk.ref, Math.floor(bh / H), bh % H, t), v: row(nv.ref, Math.floor(bh / H), bh % H, t) });
        }
        next += T;
        nk.t.dispose();
        nv.t.dispose();
      }
      expectCacheEquals(cache, mirror, `${layout}: appended`);
      expect(cache.room).toBe(reserve - 3);
      // Room rows stay out of every op: their scores are garbage here and must not matter.
      const scores = rng.normalArray(cache.rows);
      const st = Tensor.from(scores, { device: 'cpu' });
      const hostR = hostLayout(B, H, cache.indptr, cache.lens);
      const budget2 = rng.int(H * 3, cache.rowTokens[0] - 1);
      const sel2 = adaptive.select(st, { budget: budget2, window: 3, ragged: cache });
      const ref2 = adaptiveSelect(scores, hostR, { budget: budget2, window: 3 });
      expectIdentical(sel2.positions.toArray(), ref2.positions, `${layout}: ragged selection`);
      const also = [st];
      cache.retain(sel2, { also, reserve: 2 });
      expect(st.disposed).toBe(true);
      const kept: Mirror = [];
      const keptScores: number[][] = [];
      for (let bh = 0; bh < B * H; bh++) {
        const idx = Array.from(ref2.positions.slice(ref2.indptr[bh], ref2.indptr[bh + 1]));
        kept.push(idx.map((i) => mirror[bh][i]));
        keptScores.push(idx.map((i) => Math.fround(scores[headOf(hostR, bh).start + i])));
      }
      expectCacheEquals(cache, kept, `${layout}: retained`);
      const newScores = also[0].toArray();
      const ind = cache.indptr.toArray();
      for (let bh = 0; bh < B * H; bh++) {
        expect(Array.from(newScores.slice(ind[bh], ind[bh + 1])), `${layout}: scores of head ${bh}`).toEqual([...keptScores[bh], 0, 0]);
      }
      // A selection that is not of this cache's live tokens: an error, and the cache is unchanged.
      const badPos = Tensor.from(new Int32Array(B * H).fill(1000), { device: 'cpu' });
      const badInd = Tensor.from(Int32Array.from({ length: B * H + 1 }, (_, i) => i), { device: 'cpu' });
      expectKvsiftError(() => cache.retain({ positions: badPos, indptr: badInd, batch: B, heads: H, budget: H }), 'ERR_INDEX_OUT_OF_RANGE',
        `RaggedKvCache.retain: ${B * H} selected positions fall outside their heads`);
      expectCacheEquals(cache, kept, `${layout}: after a failed retain`);
      badPos.dispose();
      badInd.dispose();
      expectKvsiftError(() => cache.append(...twoSteps(rng, B, H, 3, D, dtype, layout)), 'ERR_INVALID_ARG',
        'RaggedKvCache.append: expected at most 2 new tokens (the room left in each head; make the cache with a larger reserve or retain first) for keys, but received 3');
      cache.dispose();
      cache.dispose();
      expectKvsiftError(() => cache.keys, 'ERR_DISPOSED', 'RaggedKvCache is disposed (keys)');
      for (const t of [k.t, v.t, sel.positions, sel.indptr, sel2.positions, sel2.indptr, also[0]]) t.dispose();
    }
  });
});

function twoSteps(rng: Rng, B: number, H: number, T: number, D: number, dtype: DType, layout: Layout): [Tensor, Tensor] {
  return [makeCache(rng, B, H, T, D, dtype, layout).t, makeCache(rng, B, H, T, D, dtype, layout).t];
}

/** A ragged cache with room and eviction history: compacted from a dense one, then appended to. */
function decodeCache(rng: Rng, dtype: DType, device: Device) {
  const Hkv = rng.int(1, 3);
  const Hq = Hkv * rng.int(1, 3);
  const [B, N, D] = [rng.int(1, 2), rng.int(12, 40), rng.int(2, 20)];
  const std = Math.pow(D, -0.25) * 1.5;
  const k = makeCache(rng, B, Hkv, N, D, dtype, 'bhsd', device, std);
  const v = makeCache(rng, B, Hkv, N, D, dtype, 'bhsd', device, std);
  const votes = Tensor.from(rng.normalArray(B * Hkv * N), { shape: [B, Hkv, N], device });
  const sel = adaptive.select(votes, { budget: rng.int(4 * Hkv, Hkv * N), window: 2, minPerHead: 1 });
  const cache = RaggedKvCache.fromSelection(k.t, v.t, sel, { reserve: 4 });
  const step = makeCache(rng, B, Hkv, 2, D, dtype, 'bhsd', device, std);
  cache.append(step.t, step.t);
  for (const t of [k.t, v.t, votes, sel.positions, sel.indptr, step.t]) t.dispose();
  return { B, Hq, Hkv, D, std, cache };
}

function hostKeys(cache: RaggedKvCache): Float32Array {
  return cache.keys.to('cpu').toArray() as Float32Array;
}

describe('decode ops on a ragged cache', () => {
  it('keyformer.accumulate on CSR rows equals the dense op on the same rows', () => {
    const rng = testRng();
    for (const dtype of DTYPES) {
      const [B, Hkv, N, D, G, T] = [rng.int(1, 2), rng.int(1, 3), rng.int(5, 50), rng.int(2, 33), rng.int(1, 3), rng.int(1, 3)];
      const std = Math.pow(D, -0.25) * 1.5;
      const q = makeCache(rng, B, Hkv * G, T, D, dtype, 'bhsd', 'cpu', std);
      const k = makeCache(rng, B, Hkv, N, D, dtype, 'bhsd', 'cpu', std);
      const rk = Tensor.from(k.t.toRawArray() as Float32Array | Uint16Array, { shape: [B * Hkv * N, D], dtype, device: 'cpu' });
      const indptr = Tensor.from(Int32Array.from({ length: B * Hkv + 1 }, (_, i) => i * N), { device: 'cpu' });
      const init = rng.uniformArray(B * Hkv * N);
      const dense = Tensor.from(init, { shape: [B, Hkv, N], device: 'cpu' });
      const ragged = Tensor.from(init, { device: 'cpu' });
      const o = { tau: 1.3, seed: 77, step: 5 };
      keyformer.accumulate(q.t, k.t, dense, o);
      keyformer.accumulate(q.t, rk, ragged, { ...o, ragged: { batch: B, heads: Hkv, indptr } });
      expectClose(ragged.toArray(), dense.toArray(), { ...tolerance('f32'), label: `keyformer ${dtype}` });
      h2o.accumulate(q.t, k.t, dense);
      h2o.accumulate(q.t, rk, ragged, { ragged: { batch: B, heads: Hkv, indptr } });
      expectClose(ragged.toArray(), dense.toArray(), { ...tolerance('f32'), label: `h2o ${dtype}` });
      for (const t of [q.t, k.t, rk, indptr, dense, ragged]) t.dispose();
    }
  });

  it('keyformer and h2o accumulate over evicted heads match the reference, noise at the original positions', () => {
    const rng = testRng();
    for (const dtype of DTYPES) {
      const { B, Hq, Hkv, D, std, cache } = decodeCache(rng, dtype, 'cpu');
      const T = rng.int(1, 2);
      const q = makeCache(rng, B, Hq, T, D, dtype, 'bhsd', 'cpu', std);
      const init = rng.uniformArray(cache.rows);
      const scores = Tensor.from(init, { device: 'cpu' });
      const hostR = hostLayout(B, Hkv, cache.indptr, cache.lens);
      const positions = cache.positions.toArray();
      const qd = { data: q.ref.data, B, H: Hq, T, D };
      keyformer.accumulate(q.t, cache.keys, scores, { tau: 0.8, seed: 3, step: 11, ragged: cache });
      let ref = raggedAccumulate(qd, hostKeys(cache), hostR, init, { tau: 0.8, noise: 'gumbel', seed: 3, step: 11, positions });
      expectClose(scores.toArray(), ref, { ...tolerance('f32'), label: `keyformer ${dtype}` });
      h2o.accumulate(q.t, cache.keys, scores, { ragged: cache });
      ref = raggedAccumulate(qd, hostKeys(cache), hostR, ref, { tau: 1, noise: 'none' });
      expectClose(scores.toArray(), ref, { ...tolerance('f32'), label: `h2o ${dtype}` });
      // the room rows were never touched
      const ind = hostR.indptr;
      const got = scores.toArray();
      for (let bh = 0; bh < B * Hkv; bh++) {
        const { start, len, cap } = headOf(hostR, bh);
        for (let i = len; i < cap; i++) expect(got[start + i]).toBe(Math.fround(init[start + i]));
      }
      expect(ind.length).toBe(B * Hkv + 1);
      for (const t of [q.t, scores]) t.dispose();
      cache.dispose();
    }
  });

  it('l2.norms on a ragged cache are the rows\' norms, 0 on the room', () => {
    const rng = testRng();
    const { B, Hkv, D, cache } = decodeCache(rng, 'bf16', 'cpu');
    const n = l2.norms(cache.keys, { ragged: cache }).toArray();
    const keys = hostKeys(cache);
    const hostR = hostLayout(B, Hkv, cache.indptr, cache.lens);
    for (let bh = 0; bh < B * Hkv; bh++) {
      const { start, len, cap } = headOf(hostR, bh);
      for (let i = 0; i < cap; i++) {
        let ss = 0;
        for (let d = 0; d < D; d++) ss += keys[(start + i) * D + d] ** 2;
        if (i < len) expect(Math.abs(n[start + i] - Math.sqrt(ss))).toBeLessThan(1e-5 * (1 + Math.sqrt(ss)));
        else expect(n[start + i]).toBe(0);
      }
    }
    cache.dispose();
  });

  it('tova.select on CSR rows equals the dense op; on evicted heads it ranks original positions', () => {
    const rng = testRng();
    // CSR rows without positions: the dense op's answer.
    const [B, Hkv, N, D, G] = [2, 2, 37, 16, 2];
    const std = Math.pow(D, -0.25) * 1.5;
    const q = makeCache(rng, B, Hkv * G, 1, D, 'f32', 'bhsd', 'cpu', std);
    const k = makeCache(rng, B, Hkv, N, D, 'f32', 'bhsd', 'cpu', std);
    const rk = Tensor.from(k.t.toArray(), { shape: [B * Hkv * N, D], device: 'cpu' });
    const indptr = Tensor.from(Int32Array.from({ length: B * Hkv + 1 }, (_, i) => i * N), { device: 'cpu' });
    const dense = tova.select(q.t, k.t, { capacity: 11 }).toArray();
    const ragged = tova.select(q.t, rk, { capacity: 11, ragged: { batch: B, heads: Hkv, indptr, positionsEnd: N } }).toArray();
    const refScores = tovaScores(q.ref, k.ref);
    for (let b = 0; b < B; b++) {
      expectTopkNear(Array.from(ragged.slice(b * 11, b * 11 + 11)), Array.from(refScores.slice(b * N, b * N + N)), 11, `csr row ${b}`);
      expectTopkNear(Array.from(dense.slice(b * 11, b * 11 + 11)), Array.from(refScores.slice(b * N, b * N + N)), 11, `dense row ${b}`);
    }
    // Evicted heads: the score of position p sums the heads that still hold it.
    const c = decodeCache(rng, 'f32', 'cpu');
    const q2 = makeCache(rng, c.B, c.Hq, 1, c.D, 'f32', 'bhsd', 'cpu', c.std);
    const hostR = hostLayout(c.B, c.Hkv, c.cache.indptr, c.cache.lens);
    const per = raggedAccumulate({ data: q2.ref.data, B: c.B, H: c.Hq, T: 1, D: c.D }, hostKeys(c.cache), hostR, new Float64Array(c.cache.rows), { tau: 1, noise: 'none' });
    const pos = c.cache.positions.toArray();
    const n = c.cache.positionsEnd;
    const cap = Math.min(n, 6);
    const got = tova.select(q2.t, c.cache.keys, { capacity: cap, ragged: c.cache }).toArray();
    for (let b = 0; b < c.B; b++) {
      const layer = new Float64Array(n).fill(-Infinity);
      for (let h = 0; h < c.Hkv; h++) {
        const { start, len } = headOf(hostR, b * c.Hkv + h);
        for (let i = 0; i < len; i++) layer[pos[start + i]] = (layer[pos[start + i]] === -Infinity ? 0 : layer[pos[start + i]]) + per[start + i] / c.Hq;
      }
      expectTopkNear(Array.from(got.slice(b * cap, b * cap + cap)), Array.from(layer), cap, `evicted row ${b}`);
    }
    for (const t of [q.t, k.t, rk, indptr, q2.t]) t.dispose();
    c.cache.dispose();
  });
});

describe('a decode loop on a ragged cache', () => {
  it('prefill, adaptive compression, then append + accumulate with a retain every 3 steps, against a host mirror', () => {
    const rng = testRng();
    const [B, Hkv, G, N, D] = [2, 3, 2, 40, 8];
    const Hq = Hkv * G;
    const std = Math.pow(D, -0.25) * 1.5;
    const k = makeCache(rng, B, Hkv, N, D, 'f32', 'bhsd', 'cpu', std);
    const v = makeCache(rng, B, Hkv, N, D, 'f32', 'bhsd', 'cpu', std);
    const votes = rng.normalArray(B * Hkv * N);
    const budget = Hkv * 12;
    const sel = adaptive.select(Tensor.from(votes, { shape: [B, Hkv, N], device: 'cpu' }), { budget, window: 4, minPerHead: 2 });
    const cache = RaggedKvCache.fromSelection(k.t, v.t, sel, { reserve: 3 });
    const ref = adaptiveSelect(votes, denseLayout(B, Hkv, N), { budget, window: 4, minPerHead: 2 });
    // mirror[bh]: live tokens (position, key, value); scores: one per live token
    let mirror: Mirror = [];
    for (let bh = 0; bh < B * Hkv; bh++) {
      const [b, h] = [Math.floor(bh / Hkv), bh % Hkv];
      mirror.push(Array.from(ref.positions.slice(ref.indptr[bh], ref.indptr[bh + 1])).map((p) => ({ pos: p, k: row(k.ref, b, h, p), v: row(v.ref, b, h, p) })));
    }
    let hostScores: number[][] = mirror.map((m) => m.map(() => 0));
    const also = [Tensor.zeros([cache.rows], 'f32', 'cpu')];
    for (let step = 0; step < 7; step++) {
      const nk = makeCache(rng, B, Hkv, 1, D, 'f32', 'bhsd', 'cpu', std);
      const nv = makeCache(rng, B, Hkv, 1, D, 'f32', 'bhsd', 'cpu', std);
      cache.append(nk.t, nv.t);
      mirror.forEach((m, bh) => m.push({ pos: N + step, k: row(nk.ref, Math.floor(bh / Hkv), bh % Hkv, 0), v: row(nv.ref, Math.floor(bh / Hkv), bh % Hkv, 0) }));
      hostScores.forEach((s) => s.push(0));
      const q = makeCache(rng, B, Hq, 1, D, 'f32', 'bhsd', 'cpu', std);
      keyformer.accumulate(q.t, cache.keys, also[0], { tau: 1.2, seed: 5, step, ragged: cache });
      // the reference over the mirror, as a packed layout
      const indptr = [0];
      mirror.forEach((m) => indptr.push(indptr[indptr.length - 1] + m.length));
      const keys = mirror.flatMap((m) => m.flatMap((t) => t.k));
      const positions = mirror.flatMap((m) => m.map((t) => t.pos));
      const acc = raggedAccumulate({ data: q.ref.data, B, H: Hq, T: 1, D }, keys, { B, H: Hkv, indptr }, hostScores.flat(), { tau: 1.2, noise: 'gumbel', seed: 5, step, positions });
      hostScores = mirror.map((_, bh) => Array.from(acc.slice(indptr[bh], indptr[bh + 1])));
      expectCacheEquals(cache, mirror, `step ${step}`);
      const got = also[0].toArray();
      const ind = cache.indptr.toArray();
      mirror.forEach((m, bh) => expectClose(got.slice(ind[bh], ind[bh] + m.length), hostScores[bh], { ...tolerance('f32'), label: `scores of head ${bh}, step ${step}` }));
      if (step % 3 === 2) {
        const s2 = adaptive.select(also[0], { budget: Hkv * 10, window: 2, ragged: cache });
        const p2 = s2.positions.toArray();
        const i2 = s2.indptr.toArray();
        cache.retain(s2, { also });
        mirror = mirror.map((m, bh) => Array.from(p2.slice(i2[bh], i2[bh + 1])).map((i) => m[i]));
        hostScores = hostScores.map((sc, bh) => Array.from(p2.slice(i2[bh], i2[bh + 1])).map((i) => sc[i]));
        expect(cache.room).toBe(3);
        s2.positions.dispose();
        s2.indptr.dispose();
      }
      for (const t of [nk.t, nv.t, q.t]) t.dispose();
    }
    for (const t of [k.t, v.t, sel.positions, sel.indptr, also[0]]) t.dispose();
    cache.dispose();
  });
});

describe('ragged arguments', () => {
  it('are checked with clear messages', () => {
    const rng = testRng();
    const keys = Tensor.from(rng.normalArray(12 * 4), { shape: [12, 4], device: 'cpu' });
    const indptr = Tensor.from(new Int32Array([0, 5, 12]), { device: 'cpu' });
    const ragged = { batch: 1, heads: 2, indptr, minHeadTokens: 2 };
    const q = Tensor.from(rng.normalArray(4 * 3 * 4), { shape: [1, 4, 3, 4], device: 'cpu' });
    const scores = Tensor.zeros([12], 'f32', 'cpu');
    expectKvsiftError(() => keyformer.accumulate(q, keys, scores, { tau: 1, seed: 1, step: 1, ragged }), 'ERR_INVALID_ARG',
      "keyformer.accumulate: expected at most 2 query rows (the fewest live tokens a head of the cache may hold; append the step's tokens first) for queries, but received 3");
    const q1 = Tensor.from(rng.normalArray(4 * 4), { shape: [1, 4, 1, 4], device: 'cpu' });
    expectKvsiftError(() => h2o.accumulate(q1, keys, Tensor.zeros([11], 'f32', 'cpu'), { ragged }), 'ERR_INVALID_ARG',
      'h2o.accumulate: expected an f32 tensor [12] (one per cache row) for scores, but received f32 [11]');
    expectKvsiftError(() => h2o.accumulate(q1, keys, scores, { ragged: { ...ragged, heads: 3 } }), 'ERR_INVALID_ARG',
      'h2o.accumulate: expected an i32 tensor [4] for options.ragged.indptr, but received i32 [3]');
    const k4 = Tensor.from(rng.normalArray(12 * 4), { shape: [1, 2, 6, 4], device: 'cpu' });
    expectKvsiftError(() => l2.norms(k4, { ragged }), 'ERR_INVALID_ARG',
      "l2.norms: expected a ragged cache's keys [rows, D] (f32, f16 or bf16) with options.ragged for keys, but received f32 [1, 2, 6, 4]");
    expectKvsiftError(() => tova.select(q1, keys, { capacity: 3, ragged }), 'ERR_INVALID_ARG',
      'tova.select: expected one past the largest original position for options.ragged.positionsEnd, but received undefined');
    expectKvsiftError(() => tova.select(q1, keys, { capacity: 9, ragged: { ...ragged, positionsEnd: 8 } }), 'ERR_INVALID_ARG',
      'tova.select: expected at most positionsEnd = 8 for options.capacity, but received 9');
    for (const t of [keys, indptr, q, q1, scores, k4]) t.dispose();
  });
});

describe('failed calls', () => {
  it('throw KvsiftErrors and leak nothing', () => {
    const rng = testRng();
    const [B, H, N, D] = [2, 3, 12, 4];
    const k = makeCache(rng, B, H, N, D, 'f32', 'bhsd');
    const scores = Tensor.from(rng.normalArray(B * H * N), { shape: [B, H, N], device: 'cpu' });
    const sel = adaptive.select(scores, { budget: 9, window: 1 });
    const cache = RaggedKvCache.fromSelection(k.t, k.t, sel, { reserve: 1 });
    const junk: unknown[] = [undefined, null, 0, -1, 1.5, NaN, 'x', {}, [], 2 ** 31, Tensor.zeros([3], 'i32', 'cpu')];
    const rs = Tensor.zeros([cache.rows], 'f32', 'cpu');
    const mirrorBefore = cacheMirrorOf(cache);
    const before = memoryStats('cpu');
    let failures = 0;
    for (let i = 0; i < 400; i++) {
      const v = junk[rng.int(0, junk.length - 1)];
      const which = rng.int(0, 5);
      try {
        if (which === 0) {
          const r = adaptive.select(scores, { budget: 9, window: 1, [['budget', 'window', 'minPerHead', 'lengths', 'ragged'][rng.int(0, 4)]]: v } as never);
          r.positions.dispose();
          r.indptr.dispose();
        } else if (which === 1) {
          const r = compactRagged(k.t, k.t, { ...sel, [['positions', 'indptr'][rng.int(0, 1)]]: v } as never);
          r.keys.dispose(); // positions and indptr are the selection's
          r.values.dispose();
        } else if (which === 2) {
          RaggedKvCache.fromSelection(k.t, k.t, sel, { [['reserve', 'layout', 'nextPosition'][rng.int(0, 2)]]: v } as never).dispose();
        } else if (which === 3) {
          cache.retain({ ...sel, [['positions', 'indptr'][rng.int(0, 1)]]: v } as never, { also: [] });
          throw new Error('retain with a foreign selection succeeded');
        } else if (which === 4) {
          cache.append(v as never, v as never);
        } else {
          keyformer.accumulate(v as never, cache.keys, rs, { tau: 1, seed: 1, step: 1, ragged: cache });
        }
      } catch (e) {
        expect((e as Error).name, String(e)).toBe('KvsiftError');
        failures++;
      }
    }
    expect(failures).toBeGreaterThan(250);
    const after = memoryStats('cpu');
    expect(after.liveBytes).toBe(before.liveBytes);
    expect(after.liveTensors).toBe(before.liveTensors);
    expectCacheEquals(cache, mirrorBefore, 'cache after failed calls');
    expect(Array.from(rs.toArray()).every((x) => x === 0)).toBe(true);
    for (const t of [k.t, scores, sel.positions, sel.indptr, rs, junk[junk.length - 1] as Tensor]) t.dispose();
    cache.dispose();
  });
});

/** The cache's current contents as a mirror (to check it did not change). */
function cacheMirrorOf(cache: RaggedKvCache): Mirror {
  const ind = cache.indptr.toArray();
  const lens = cache.lens.toArray();
  const kr = rowsOf(cache.keys);
  const vr = rowsOf(cache.values);
  const pos = cache.positions.toArray();
  return Array.from(lens, (len, bh) => Array.from({ length: len }, (_, i) => ({ pos: pos[ind[bh] + i], k: kr[ind[bh] + i], v: vr[ind[bh] + i] })));
}

/** Ascending distinct positions whose reference scores are the k best, up to near-ties (1e-5). */
function expectTopkNear(got: number[], scores: number[], k: number, label: string): void {
  expect(got.length, label).toBe(k);
  for (let i = 1; i < k; i++) expect(got[i], label).toBeGreaterThan(got[i - 1]);
  const sorted = scores.map((s, i) => ({ s, i })).sort((a, b) => b.s - a.s || a.i - b.i);
  const kth = sorted[k - 1].s;
  for (const p of got) expect(scores[p], `${label}: position ${p}`).toBeGreaterThanOrEqual(kth - 1e-5 * (1 + Math.abs(kth)));
}

describeCuda('ragged cache cuda', () => {
  it('compaction, append, retain and the decode ops equal the CPU backend', () => {
    const rng = testRng();
    for (const device of cudaDevices()) {
      for (const dtype of DTYPES) {
        const seed = rng.u32();
        const runs = (['cpu', device] as Device[]).map((dev) => {
          const r = testRng(`ragged-cuda-${seed}`);
          const { B, Hq, D, std, cache } = decodeCache(r, dtype, dev);
          const q = makeCache(r, B, Hq, 1, D, dtype, 'bhsd', dev, std);
          const scores = Tensor.zeros([cache.rows], 'f32', dev);
          keyformer.accumulate(q.t, cache.keys, scores, { tau: 1.5, seed: 9, step: 2, ragged: cache });
          const norms = l2.norms(cache.keys, { ragged: cache });
          const tv = tova.select(q.t, cache.keys, { capacity: Math.min(5, cache.positionsEnd), ragged: cache });
          // The selection from the same scores on both backends (accumulated ones may differ in an ulp).
          const common = Tensor.from(testRng(`ragged-cuda-scores-${seed}`).normalArray(cache.rows), { device: dev });
          const sel = adaptive.select(common, { budget: cache.rowTokens[0] - 1, window: 1, ragged: cache });
          common.dispose();
          const also = [scores];
          cache.retain(sel, { also });
          const out = {
            scores: also[0].toArray(),
            norms: norms.toArray(),
            tova: tv.toArray(),
            keys: cache.keys.toArray(),
            positions: cache.positions.toArray(),
            indptr: cache.indptr.toArray(),
            lens: cache.lens.toArray(),
          };
          for (const t of [q.t, norms, tv, sel.positions, sel.indptr, also[0]]) t.dispose();
          cache.dispose();
          return out;
        });
        const [c, g] = runs;
        expectIdentical(g.indptr, c.indptr, `${dtype} indptr`);
        expectIdentical(g.lens, c.lens, `${dtype} lens`);
        expectIdentical(g.positions, c.positions, `${dtype} positions`);
        expectIdentical(g.keys, c.keys, `${dtype} keys`);
        expectClose(g.scores, c.scores, { ...tolerance('f32'), label: `${dtype} scores` });
        expectClose(g.norms, c.norms, { ...tolerance('f32'), label: `${dtype} norms` });
        expectIdentical(g.tova, c.tova, `${dtype} tova`);
      }
    }
  });
});
