/**
 * The baselines (docs/ALGORITHMS.md, "Baselines"): H2O (= Keyformer with no noise and tau 1),
 * TOVA (the last query's attention averaged over every query head, one selection per layer) and
 * StreamingLLM (sinks + recent window), plus evict's compaction. One case table of h2o and tova
 * (every layout x dtype, GQA, seqLens) runs on every backend: the CPU backend against the float64
 * references in reference/, a CUDA device against the CPU backend on the same inputs.
 */
import { describe, expect, it } from 'vitest';
import { evict, h2o, keyformer, streaming, tova, Tensor, type Device, type DType } from '../lib/index';
import { describeCuda, cudaDevices, describeEachDevice, expectClose, expectIdentical, expectKvsiftError, expectSameBytes, LAYOUT_DTYPES, LAYOUTS, makeCache, qkCaches, testRng, tolerance, type Rng } from './helpers';
import { streamingSelect, tovaScores } from '../reference/baselines';
import { accumulate as refAccumulate, selectRecent } from '../reference/keyformer';
import { fromLayout, shapeIn, toLayout, type Layout } from '../reference/layout';
import { gatherRows, topkPositions } from '../reference/select';

/** Queries and keys (helpers' qkCaches) of odd sizes, GQA; small on the CPU, larger on CUDA. */
function qk(rng: Rng, dtype: DType, layout: Layout, T: number, device: Device = 'cpu') {
  const big = device !== 'cpu';
  const Hkv = rng.int(1, 3);
  const Hq = Hkv * rng.int(1, 4);
  const B = rng.int(1, 3);
  const N = Math.max(T, big ? rng.int(300, 1200) : rng.int(9, 71));
  const D = big ? [64, 128, 96][rng.int(0, 2)] : rng.int(2, 40);
  const { q, k, cpu } = qkCaches(rng, { B, Hq, Hkv, T, N, D }, dtype, layout, device);
  return { B, Hq, Hkv, N, D, T, q, k, cpu };
}

/**
 * A top-k computed in f32 against float64 scores: the positions must be ascending, distinct and
 * inside the row; a position may differ from the reference's only where the two scores are
 * within rtol of the k-th best (a near-tie the f32 rounding may flip). With clear margins this is
 * exact equality.
 */
function expectTopkClose(got: ArrayLike<number>, scores: ArrayLike<number>, len: number, k: number, rtol: number, label: string): void {
  const g = Array.from(got);
  expect(g.length, label).toBe(k);
  for (let i = 1; i < k; i++) expect(g[i], `${label}: ascending`).toBeGreaterThan(g[i - 1]);
  expect(g[0], label).toBeGreaterThanOrEqual(0);
  expect(g[k - 1], label).toBeLessThan(len);
  const ref = topkPositions(scores, len, k);
  const threshold = Math.min(...ref.map((p) => scores[p]));
  const tol = rtol * Math.abs(threshold) + 1e-12;
  const refSet = new Set(ref);
  const gotSet = new Set(g);
  for (const p of g) if (!refSet.has(p)) expect(scores[p], `${label}: extra position ${p}`).toBeGreaterThanOrEqual(threshold - tol);
  for (const p of ref) if (!gotSet.has(p)) expect(scores[p], `${label}: missing position ${p}`).toBeLessThanOrEqual(threshold + tol);
}

describeEachDevice('baselines', (device) => {
  const onCpu = device === 'cpu';

  for (const { layout, dtype } of LAYOUT_DTYPES) {
    it(`h2o.accumulate is keyformer.accumulate with noise 'none' and tau 1, ${layout} ${dtype}, seqLens`, () => {
      const rng = testRng();
      const T = rng.int(1, 4);
      const p = qk(rng, dtype, layout, T, device);
      const init = rng.uniformArray(p.B * p.Hkv * p.N, 0, 2);
      const seqLens = Array.from({ length: p.B }, () => rng.int(T, p.N));
      const shape = [p.B, p.Hkv, p.N];
      for (const lens of [undefined, seqLens]) {
        const a = Tensor.from(init, { shape, device });
        const b = Tensor.from(init, { shape, device });
        expect(h2o.accumulate(p.q.t, p.k.t, a, { layout, seqLens: lens })).toBe(a);
        keyformer.accumulate(p.q.t, p.k.t, b, { tau: 1, seed: rng.u32(), step: rng.u32(), noise: 'none', layout, seqLens: lens });
        expectSameBytes(a.toArray() as Float32Array, b.toArray() as Float32Array, 'h2o vs keyformer');
        if (onCpu) {
          expectClose(a.toArray(), refAccumulate(p.q.ref, p.k.ref, init, { tau: 1, noise: 'none', seqLens: lens }), { rtol: 1e-6, atol: 1e-6, shape });
        } else {
          const c = Tensor.from(init, { shape, device: 'cpu' });
          h2o.accumulate(p.cpu.q, p.cpu.k, c, { layout, seqLens: lens });
          expectClose(a.toArray(), c.toArray(), { ...tolerance(dtype), shape });
        }
      }
    });

    it(`tova.select is the reference's (last query, mean over all Hq heads, [B, 1, C]), ${layout} ${dtype}`, () => {
      const rng = testRng();
      const p = qk(rng, dtype, layout, 1, device);
      const capacity = onCpu ? rng.int(1, p.N) : rng.int(Math.min(16, p.N), Math.min(256, p.N));
      const seqLens = Array.from({ length: p.B }, () => rng.int(capacity, p.N));
      for (const lens of [undefined, seqLens]) {
        const pos = tova.select(p.q.t, p.k.t, { capacity, layout, seqLens: lens });
        expect(pos.device).toBe(device);
        expect(pos.shape).toEqual([p.B, 1, capacity]);
        expect(pos.dtype).toBe('i32');
        const got = pos.toArray() as Int32Array;
        const scores = tovaScores(p.q.ref, p.k.ref, lens);
        for (let b = 0; b < p.B; b++) {
          const L = lens ? lens[b] : p.N;
          expectTopkClose(got.subarray(b * capacity, (b + 1) * capacity), scores.subarray(b * p.N, (b + 1) * p.N), L, capacity, onCpu ? 1e-5 : 1e-4, `batch ${b}`);
        }
        // one selection for every head: evict gathers the same rows from each
        const out = evict(p.k.t, p.k.t, pos, { layout });
        expect(out.keys.shape).toEqual(shapeIn(layout, p.B, p.Hkv, capacity, p.D));
        expectIdentical(out.positions.toArray(), got);
        expectIdentical(fromLayout(out.keys.toArray(), layout, p.B, p.Hkv, capacity, p.D).data, gatherRows(p.k.ref, got, 1, capacity).data, 'keys');
      }
    });
  }

  it('h2o.select is the reference (CUDA: the CPU backend) and keyformer.select, recent always kept', () => {
    const rng = testRng();
    for (let rep = 0; rep < (onCpu ? 5 : 1); rep++) {
      const [B, H, N] = onCpu ? [rng.int(1, 3), rng.int(1, 5), rng.int(4, 80)] : [2, 4, rng.int(500, 3000)];
      const capacity = onCpu ? rng.int(1, N) : rng.int(64, 400);
      const recent = onCpu ? rng.int(0, capacity) : rng.int(0, 32);
      const scores = Float32Array.from({ length: B * H * N }, () => rng.int(0, onCpu ? 15 : 99) / (onCpu ? 8 : 4));
      const seqLens = Array.from({ length: B }, () => rng.int(capacity, N));
      const t = Tensor.from(scores, { shape: [B, H, N], device });
      const cpu = onCpu ? t : Tensor.from(scores, { shape: [B, H, N], device: 'cpu' });
      for (const lens of [undefined, seqLens]) {
        const got = h2o.select(t, { capacity, recent, seqLens: lens }).toArray() as Int32Array;
        expectIdentical(got, onCpu ? selectRecent(scores, B, H, N, { capacity, recent, seqLens: lens }) : h2o.select(cpu, { capacity, recent, seqLens: lens }).toArray());
        expectIdentical(got, keyformer.select(t, { capacity, recent, seqLens: lens }).toArray());
        for (let r = 0; r < B * H; r++) {
          const L = lens ? lens[Math.floor(r / H)] : N;
          const row = Array.from(got.subarray(r * capacity, (r + 1) * capacity));
          for (let j = L - recent; j < L; j++) expect(row).toContain(j);
        }
      }
    }
  });
});

describe('h2o: validation', () => {
  it('rejects bad input naming the argument, leaving scores unchanged', () => {
    const q = Tensor.zeros([1, 2, 1, 4], 'f32', 'cpu');
    const k = Tensor.zeros([1, 2, 6, 4], 'f32', 'cpu');
    const init = Float32Array.from({ length: 12 }, (_, i) => i / 3);
    const s = Tensor.from(init, { shape: [1, 2, 6], device: 'cpu' });
    const check = (fn: () => unknown, code: string, message: string | RegExp) => {
      expectKvsiftError(fn, code, message);
      expectIdentical(s.toArray(), init, 'scores after a failed op');
    };
    check(() => h2o.accumulate(q, k, Tensor.zeros([1, 2, 5], 'f32', 'cpu')), 'ERR_INVALID_ARG', 'h2o.accumulate: expected an f32 tensor [1, 2, 6] for scores, but received f32 [1, 2, 5]');
    check(() => h2o.accumulate(Tensor.zeros([1, 3, 1, 4], 'f32', 'cpu'), k, s), 'ERR_INVALID_ARG', "h2o.accumulate: expected a head count that is a multiple of the keys' 2 for queries, but received 3");
    check(() => h2o.accumulate(Tensor.zeros([1, 2, 7, 4], 'f32', 'cpu'), k, s), 'ERR_INVALID_ARG', 'h2o.accumulate: expected between 1 and N = 6 query rows for queries, but received 7');
    check(() => h2o.accumulate(Tensor.zeros([1, 2, 1, 4], 'bf16', 'cpu'), k, s), 'ERR_INVALID_ARG', "h2o.accumulate: expected the keys' dtype 'f32' for queries.dtype, but received 'bf16'");
    check(() => h2o.accumulate(q, k, s, { seqLens: [0] }), 'ERR_INVALID_ARG', 'h2o.accumulate: expected an integer in [1, 6] for options.seqLens[0], but received 0');
    check(() => h2o.accumulate(q, k, s, 'bshd' as never), 'ERR_INVALID_ARG', "h2o.accumulate: expected an options object for options, but received 'bshd'");
    const gone = Tensor.zeros([1, 2, 1, 4], 'f32', 'cpu');
    gone.dispose();
    check(() => h2o.accumulate(gone, k, s), 'ERR_DISPOSED', 'h2o.accumulate: queries is disposed');
    expectKvsiftError(() => h2o.select(s, { capacity: 7, recent: 0 }), 'ERR_INVALID_ARG', 'h2o.select: expected at most N = 6 for options.capacity, but received 7');
    expectKvsiftError(() => h2o.select(s, { capacity: 3, recent: 4 }), 'ERR_INVALID_ARG', 'h2o.select: expected an integer in [0, 3] for options.recent, but received 4');
  });
});

describe('tova: a hand-built case and validation', () => {
  it('averages over every query head: a token one head attends to is kept', () => {
    // head 1 (of 4, GQA groups of 2) looks only at token 5; the others attend uniformly
    const [N, D] = [12, 4];
    const k = new Float32Array(2 * N * D);
    for (let h = 0; h < 2; h++) k[(h * N + 5) * D + 1] = 1; // token 5 has a distinct key
    const q = new Float32Array(4 * D);
    q[1 * D + 1] = 60; // head 1: logit 30 on token 5, 0 elsewhere
    const pos = tova.select(Tensor.from(q, { shape: [1, 4, 1, D], device: 'cpu' }), Tensor.from(k, { shape: [1, 2, N, D], device: 'cpu' }), { capacity: 1 });
    expectIdentical(pos.toArray(), [5]);
    // and the query sees its own row: a short row never selects padding
    const pos2 = tova.select(Tensor.from(q, { shape: [1, 4, 1, D], device: 'cpu' }), Tensor.from(k, { shape: [1, 2, N, D], device: 'cpu' }), { capacity: 4, seqLens: [5] });
    expectIdentical(pos2.toArray(), [0, 1, 2, 3]); // token 5 is past the row: uniform attention, ties to the lower positions
  });

  it('rejects bad input naming the argument', () => {
    const op = 'tova.select';
    const q = Tensor.zeros([1, 4, 1, 4], 'f32', 'cpu');
    const k = Tensor.zeros([1, 2, 8, 4], 'f32', 'cpu');
    expectKvsiftError(() => tova.select(Tensor.zeros([1, 4, 2, 4], 'f32', 'cpu'), k, { capacity: 2 }), 'ERR_INVALID_ARG', `${op}: expected the last query only (T = 1) for queries, but received 2 rows`);
    expectKvsiftError(() => tova.select(q, k, { capacity: 9 }), 'ERR_INVALID_ARG', `${op}: expected at most N = 8 for options.capacity, but received 9`);
    expectKvsiftError(() => tova.select(q, k, { capacity: 0 }), 'ERR_INVALID_ARG', `${op}: expected an integer in [1, 2147483647] for options.capacity, but received 0`);
    expectKvsiftError(() => tova.select(Tensor.zeros([1, 3, 1, 4], 'f32', 'cpu'), k, { capacity: 2 }), 'ERR_INVALID_ARG', `${op}: expected [1, a multiple of 2, 1, 4] for queries, but received [1, 3, 1, 4]`);
    expectKvsiftError(() => tova.select(Tensor.zeros([1, 4, 1, 4], 'f16', 'cpu'), k, { capacity: 2 }), 'ERR_INVALID_ARG', `${op}: expected the keys' dtype 'f32' for queries.dtype, but received 'f16'`);
    expectKvsiftError(() => tova.select(q, k, { capacity: 4, seqLens: [3] }), 'ERR_INVALID_ARG', `${op}: expected an integer in [4, 8] for options.seqLens[0], but received 3`);
    expectKvsiftError(() => tova.select(q, {} as Tensor, { capacity: 2 }), 'ERR_INVALID_ARG', `${op}: expected a Tensor for keys, but received a plain object`);
    const gone = Tensor.zeros([1, 2, 8, 4], 'f32', 'cpu');
    gone.dispose();
    expectKvsiftError(() => tova.select(q, gone, { capacity: 2 }), 'ERR_DISPOSED', `${op}: keys is disposed`);
  });
});

describe('streaming (cpu)', () => {
  it('selects the sinks and the recent window, all tokens when they overlap', () => {
    expectIdentical(streaming.select(10, { sinks: 2, recent: 3, device: 'cpu' }).toArray(), [0, 1, 7, 8, 9]);
    expectIdentical(streaming.select(10, { sinks: 0, recent: 3, device: 'cpu' }).toArray(), [7, 8, 9]);
    expectIdentical(streaming.select(10, { sinks: 4, recent: 0, device: 'cpu' }).toArray(), [0, 1, 2, 3]);
    expectIdentical(streaming.select(5, { sinks: 3, recent: 3, device: 'cpu' }).toArray(), [0, 1, 2, 3, 4]); // overlap
    expectIdentical(streaming.select(6, { sinks: 3, recent: 3, device: 'cpu' }).toArray(), [0, 1, 2, 3, 4, 5]); // touching
    const rng = testRng();
    for (let i = 0; i < 50; i++) {
      const n = rng.int(1, 300);
      const sinks = rng.int(0, 20);
      const recent = rng.int(0, 200);
      const t = streaming.select(n, { sinks, recent, device: 'cpu' });
      expect(t.dtype).toBe('i32');
      expect(t.device).toBe('cpu');
      expectIdentical(t.toArray(), streamingSelect(n, sinks, recent), `n=${n} sinks=${sinks} recent=${recent}`);
    }
  });

  for (const layout of LAYOUTS) {
    it(`evict with its positions keeps exactly those rows for every batch row and head, ${layout}`, () => {
      const rng = testRng();
      const [B, H, N, D] = [rng.int(1, 3), rng.int(1, 4), rng.int(20, 60), rng.int(1, 17)];
      const { t: k, ref: kr } = makeCache(rng.normalArray(B * H * N * D), [B, H, N, D], 'bf16', layout);
      const { t: v, ref: vr } = makeCache(rng.normalArray(B * H * N * D), [B, H, N, D], 'bf16', layout);
      for (const [sinks, recent] of [
        [rng.int(0, 4), rng.int(1, 10)],
        [N, 5], // overlap: everything
      ]) {
        const pos = streaming.select(N, { sinks, recent, device: 'cpu' });
        const want = streamingSelect(N, sinks, recent);
        const out = evict(k, v, pos, { layout });
        const C = want.length;
        expect(out.positions.shape).toEqual([B, 1, C]);
        const tiled = Array.from({ length: B }, () => want).flat();
        expectIdentical(out.positions.toArray(), tiled);
        expectIdentical(fromLayout(out.keys.toArray(), layout, B, H, C, D).data, gatherRows(kr, tiled, 1, C).data, 'keys');
        expectIdentical(fromLayout(out.values.toArray(), layout, B, H, C, D).data, gatherRows(vr, tiled, 1, C).data, 'values');
      }
    });
  }

  it('rejects bad input naming the argument', () => {
    const op = 'streaming.select';
    expectKvsiftError(() => streaming.select(10, { sinks: -1, recent: 2 }), 'ERR_INVALID_ARG', `${op}: expected an integer in [0, 2147483647] for options.sinks, but received -1`);
    expectKvsiftError(() => streaming.select(10, { sinks: 1, recent: 2.5 }), 'ERR_INVALID_ARG', `${op}: expected an integer in [0, 2147483647] for options.recent, but received 2.5`);
    expectKvsiftError(() => streaming.select(10, { sinks: 1 } as never), 'ERR_INVALID_ARG', `${op}: expected an integer in [0, 2147483647] for options.recent, but received undefined`);
    expectKvsiftError(() => streaming.select(2.5, { sinks: 1, recent: 1 }), 'ERR_INVALID_ARG', `${op}: expected an integer in [0, 2147483647] for n, but received 2.5`);
    expectKvsiftError(() => streaming.select(-1, { sinks: 1, recent: 1 }), 'ERR_INVALID_ARG', `${op}: expected an integer in [0, 2147483647] for n, but received -1`);
    expectKvsiftError(() => streaming.select(10, { sinks: 1, recent: 1, device: 'gpu' as Device }), 'ERR_INVALID_ARG', /options\.device/);
  });
});

describe('evict (cpu)', () => {
  for (const { layout, dtype } of [...LAYOUT_DTYPES, { layout: 'bshd' as Layout, dtype: 'i32' as const }]) {
    it(`compacts to exactly the gathered rows of a per-head selection, ${layout} ${dtype}`, () => {
      const rng = testRng();
      const [B, H, N, D] = [rng.int(1, 3), rng.int(1, 4), rng.int(10, 50), rng.int(1, 20)];
      const capacity = rng.int(1, N);
      const gen = (n: number) => (dtype === 'i32' ? Float32Array.from(rng.intArray(n, -1000, 1000)) : rng.normalArray(n));
      const make = (data: Float32Array) => {
        const stored = toLayout({ data, B, H, S: N, D }, layout);
        const t = dtype === 'i32' ? Tensor.from(Int32Array.from(stored), { shape: shapeIn(layout, B, H, N, D), device: 'cpu' }) : Tensor.from(stored, { shape: shapeIn(layout, B, H, N, D), dtype, device: 'cpu' });
        return { t, ref: fromLayout(t.toArray(), layout, B, H, N, D) };
      };
      const k = make(gen(B * H * N * D));
      const v = make(gen(B * H * N * D));
      const scores = Tensor.from(rng.normalArray(B * H * N), { shape: [B, H, N], device: 'cpu' });
      const pos = keyformer.select(scores, { capacity, recent: rng.int(0, capacity) });
      const out = evict(k.t, v.t, pos, { layout });
      const p = pos.toArray() as Int32Array;
      expect(out.keys.dtype).toBe(dtype);
      expect(out.keys.shape).toEqual(shapeIn(layout, B, H, capacity, D));
      expect(out.values.shape).toEqual(shapeIn(layout, B, H, capacity, D));
      expect(out.positions).not.toBe(pos); // a copy the caller owns
      expectIdentical(out.positions.toArray(), p);
      expectIdentical(fromLayout(out.keys.toArray(), layout, B, H, capacity, D).data, gatherRows(k.ref, p, H, capacity).data, 'keys');
      expectIdentical(fromLayout(out.values.toArray(), layout, B, H, capacity, D).data, gatherRows(v.ref, p, H, capacity).data, 'values');
      // the inputs survive (the caller disposes them), and so do the outputs after it
      k.t.dispose();
      v.t.dispose();
      pos.dispose();
      expect(out.keys.toArray().length).toBe(B * H * capacity * D);
      expect(out.positions.toArray().length).toBe(B * H * capacity);
    });
  }

  it('rejects positions outside the cache', () => {
    const k = Tensor.zeros([1, 1, 4, 2], 'f32', 'cpu');
    const e = expectKvsiftError(() => evict(k, k, Tensor.from(Int32Array.from([0, 4]), { shape: [1, 1, 2], device: 'cpu' })), 'ERR_INDEX_OUT_OF_RANGE');
    expect(e.message).toMatch(/outside \[0, 4\)/);
  });
});

describeCuda('evict and streaming.select on CUDA against the CPU backend', () => {
  const dev = (cudaDevices()[0] ?? 'cuda:0') as Device;

  it('per-head and broadcast positions evict exactly the CPU backend\'s rows', () => {
    const rng = testRng();
    const [B, H, N, D] = [2, 4, rng.int(500, 3000), 128];
    const scores = Float32Array.from({ length: B * H * N }, () => rng.int(0, 99) / 4);
    const capacity = rng.int(64, 400);
    const recent = rng.int(0, 32);
    const sc = Tensor.from(scores, { shape: [B, H, N], device: 'cpu' });
    const pc = h2o.select(sc, { capacity, recent });
    const pg = h2o.select(sc.to(dev), { capacity, recent });
    expectIdentical(pg.toArray(), pc.toArray());
    const k = Tensor.from(rng.normalArray(B * H * N * D), { shape: [B, H, N, D], dtype: 'bf16', device: 'cpu' });
    const kg = k.to(dev);
    expectSameBytes(evict(kg, kg, pg).keys.toRawArray(), evict(k, k, pc).keys.toRawArray(), 'per-head evict');
    const sg = streaming.select(N, { sinks: 4, recent: 60, device: dev });
    expect(sg.device).toBe(dev);
    expectIdentical(sg.toArray(), streamingSelect(N, 4, 60));
    expectSameBytes(evict(kg, kg, sg).values.toRawArray(), evict(k, k, streaming.select(N, { sinks: 4, recent: 60, device: 'cpu' })).values.toRawArray(), 'streaming evict');
  });
});
