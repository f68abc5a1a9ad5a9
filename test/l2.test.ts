/**
 * L2-norm key ranking (docs/ALGORITHMS.md, "L2-norm key ranking"): one case table of l2.norms and
 * l2.compress (every layout x dtype, odd sizes, sinks/recent/seqLens) run on every backend: the
 * CPU backend against the float64 reference in reference/l2.js, a CUDA device against the CPU
 * backend on the same inputs; then hand-computed cases and argument validation.
 */
import { describe, expect, it } from 'vitest';
import { l2, Tensor, type Device } from '../lib/index';
import { describeEachDevice, expectClose, expectIdentical, expectKvsiftError, LAYOUT_DTYPES, LAYOUTS, FLOAT_DTYPES, makeCache, testRng, tolerance, type Rng } from './helpers';
import { l2Norms, l2Select } from '../reference/l2';
import { fromLayout, shapeIn, toLayout, type Layout } from '../reference/layout';
import { gatherRows } from '../reference/select';

/**
 * Keys whose norms are 1 + 0.02 * (a permutation of 0..N-1) in every row: after rounding to bf16
 * (relative error <= 2^-9 per component, so per norm) neighbouring norms stay >= 0.9% apart,
 * which makes the ranking exact whatever the accumulation order.
 */
function distinctNormKeys(rng: Rng, B: number, H: number, N: number, D: number): Float32Array {
  const out = new Float32Array(B * H * N * D);
  for (let r = 0; r < B * H; r++) {
    const perm = rng.shuffle(Array.from({ length: N }, (_, i) => i));
    for (let j = 0; j < N; j++) {
      const v = rng.normalArray(D);
      const n = Math.hypot(...v);
      const target = 1 + 0.02 * perm[j];
      for (let d = 0; d < D; d++) out[(r * N + j) * D + d] = (v[d] / n) * target;
    }
  }
  return out;
}

/** Guards the generator's promise: reference norms in each row differ by more than 1e-4 relative. */
function assertDistinct(norms: Float64Array, rows: number, N: number, lens: number[]): void {
  for (let r = 0; r < rows; r++) {
    const L = lens[Math.floor(r / (rows / lens.length))];
    const row = Array.from(norms.subarray(r * N, r * N + L)).sort((a, b) => a - b);
    for (let i = 1; i < row.length; i++) expect((row[i] - row[i - 1]) / row[i]).toBeGreaterThan(1e-4);
  }
}

function randomLens(rng: Rng, B: number, lo: number, hi: number): number[] {
  const lens = Array.from({ length: B }, () => rng.int(lo, hi));
  lens[rng.int(0, B - 1)] = hi; // one full row, so both paths run
  return lens;
}

/**
 * The shape of one case on a backend: small on the CPU (the float64 reference is slow), larger on
 * CUDA, where N spans several blocks and D takes the fast paths' 64 and 128 and an odd one.
 */
function caseSizes(rng: Rng, device: Device, op: 'norms' | 'compress') {
  if (device !== 'cpu') {
    const [B, H, N, D] = [rng.int(1, 3), rng.int(1, 5), rng.int(100, 700), [17, 64, 128][rng.int(0, 2)]];
    const capacity = rng.int(16, 64);
    return { B, H, N, D, capacity, sinks: rng.int(0, 4), recent: rng.int(0, 8) };
  }
  if (op === 'norms') return { B: rng.int(1, 3), H: rng.int(1, 4), N: rng.int(17, 67), D: rng.int(1, 41), capacity: 0, sinks: 0, recent: 0 };
  const [B, H, N, D] = [rng.int(1, 3), rng.int(1, 3), rng.int(33, 71), rng.int(3, 37)];
  const capacity = rng.int(8, 24);
  const sinks = rng.int(0, 4);
  return { B, H, N, D, capacity, sinks, recent: rng.int(0, capacity - sinks - 1) };
}

describeEachDevice('l2', (device) => {
  const onCpu = device === 'cpu';

  for (const { layout, dtype } of LAYOUT_DTYPES) {
    it(`norms ${layout} ${dtype}, odd sizes, seqLens`, () => {
      const rng = testRng();
      const { B, H, N, D } = caseSizes(rng, device, 'norms');
      const data = rng.normalArray(B * H * N * D, 0, 2);
      const { t, ref } = makeCache(data, [B, H, N, D], dtype, layout, device);
      const cpu = onCpu ? t : makeCache(data, [B, H, N, D], dtype, layout).t;
      const lens = randomLens(rng, B, 0, N);
      for (const seqLens of [undefined, lens]) {
        const out = l2.norms(t, { layout, seqLens });
        expect(out.shape).toEqual([B, H, N]);
        expect(out.dtype).toBe('f32');
        expect(out.device).toBe(device);
        const got = out.toArray();
        if (onCpu) {
          // the inputs are already rounded to the dtype and the sum runs in f32: f32 tolerance
          expectClose(got, l2Norms(ref, seqLens), { ...tolerance('f32'), shape: [B, H, N] });
          if (seqLens) {
            for (let b = 0; b < B; b++)
              for (let h = 0; h < H; h++) for (let j = lens[b]; j < N; j++) expect(got[(b * H + h) * N + j]).toBe(0);
          }
        } else {
          expectClose(got, l2.norms(cpu, { layout, seqLens }).toArray(), { ...tolerance(dtype), shape: [B, H, N] });
        }
        out.dispose();
      }
      t.dispose();
    });

    it(`compress ${layout} ${dtype}: the reference's positions and rows, sinks/recent/seqLens`, () => {
      const rng = testRng();
      const { B, H, N, D, capacity, sinks, recent } = caseSizes(rng, device, 'compress');
      const kData = distinctNormKeys(rng, B, H, N, D);
      const vData = rng.normalArray(B * H * N * D);
      const { t: k, ref: kr } = makeCache(kData, [B, H, N, D], dtype, layout, device);
      const { t: v, ref: vr } = makeCache(vData, [B, H, N, D], dtype, layout, device);
      const cpuK = onCpu ? k : makeCache(kData, [B, H, N, D], dtype, layout).t;
      const cpuV = onCpu ? v : makeCache(vData, [B, H, N, D], dtype, layout).t;
      const lens = randomLens(rng, B, capacity, N);
      if (onCpu) assertDistinct(l2Norms(kr, lens), B * H, N, lens);
      for (const seqLens of [undefined, lens]) {
        const out = l2.compress(k, v, { capacity, sinks, recent, seqLens, layout });
        expect(out.positions.device).toBe(device);
        const pos = out.positions.toArray() as Int32Array;
        expect(out.positions.shape).toEqual([B, H, capacity]);
        expect(out.positions.dtype).toBe('i32');
        // distinct norms: the selection is exact on every backend
        const want = onCpu ? l2Select(kr, { capacity, sinks, recent, seqLens }) : (l2.compress(cpuK, cpuV, { capacity, sinks, recent, seqLens, layout }).positions.toArray() as Int32Array);
        expectIdentical(pos, want, 'positions');
        for (let b = 0; b < B; b++) {
          const L = seqLens ? seqLens[b] : N;
          for (let h = 0; h < H; h++) {
            const row = Array.from(pos.subarray((b * H + h) * capacity, (b * H + h + 1) * capacity));
            for (let j = 0; j < sinks; j++) expect(row).toContain(j);
            for (let j = L - recent; j < L; j++) expect(row).toContain(j);
            expect(Math.max(...row)).toBeLessThan(L);
          }
        }
        // compaction: exactly the gathered rows, in the input's layout and dtype
        expect(out.keys.shape).toEqual(shapeIn(layout, B, H, capacity, D));
        expect(out.keys.dtype).toBe(dtype);
        expect(out.values.dtype).toBe(dtype);
        expectIdentical(fromLayout(out.keys.toArray(), layout, B, H, capacity, D).data, gatherRows(kr, want, H, capacity).data, 'keys');
        expectIdentical(fromLayout(out.values.toArray(), layout, B, H, capacity, D).data, gatherRows(vr, want, H, capacity).data, 'values');
        for (const x of [out.keys, out.values, out.positions]) x.dispose();
      }
      k.dispose();
      v.dispose();
    });
  }
});

describe('l2.norms: hand-computed and validation', () => {
  it('is ||k||_2 of a hand-computed row (3-4-5), and 0 for a zero key', () => {
    const k = Tensor.from([3, 4, 0, 0, 1, 2, 2, 0], { shape: [1, 1, 2, 4], device: 'cpu' });
    // rows: [3, 4, 0, 0] -> 5, [1, 2, 2, 0] -> 3
    expectIdentical(l2.norms(k).toArray(), [5, 3]);
    const z = Tensor.zeros([1, 1, 3, 5], 'bf16', 'cpu');
    expectIdentical(l2.norms(z).toArray(), [0, 0, 0]);
  });

  it('rejects bad input naming the argument', () => {
    const k = Tensor.zeros([1, 2, 5, 4], 'f32', 'cpu');
    expectKvsiftError(() => l2.norms({} as Tensor), 'ERR_INVALID_ARG', 'l2.norms: expected a Tensor for keys, but received a plain object');
    expectKvsiftError(() => l2.norms(Tensor.zeros([2, 5, 4], 'f32', 'cpu')), 'ERR_INVALID_ARG', 'l2.norms: expected a 4-D tensor [B, H, N, D] for keys, but received shape [2, 5, 4]');
    expectKvsiftError(() => l2.norms(Tensor.zeros([1, 2, 5, 4], 'i32', 'cpu')), 'ERR_INVALID_ARG', "l2.norms: expected 'f32' | 'f16' | 'bf16' for keys.dtype, but received 'i32'");
    expectKvsiftError(() => l2.norms(k, { layout: 'bsdh' as Layout }), 'ERR_INVALID_ARG', "l2.norms: expected one of 'bhsd', 'bshd' for options.layout, but received 'bsdh'");
    expectKvsiftError(() => l2.norms(k, { seqLens: [6] }), 'ERR_INVALID_ARG', 'l2.norms: expected an integer in [0, 5] for options.seqLens[0], but received 6');
    expectKvsiftError(() => l2.norms(k, { seqLens: [1, 2] }), 'ERR_INVALID_ARG', 'l2.norms: expected 1 lengths (one per batch row) for options.seqLens, but received 2');
    expectKvsiftError(() => l2.norms(k, { seqLens: [1.5] }), 'ERR_INVALID_ARG', /options\.seqLens/);
    const gone = Tensor.zeros([1, 2, 5, 4], 'f32', 'cpu');
    gone.dispose();
    expectKvsiftError(() => l2.norms(gone), 'ERR_DISPOSED', 'l2.norms: keys is disposed');
  });
});


describe('l2.compress: hand-computed and validation', () => {
  it('breaks norm ties toward the lower position', () => {
    // norms 5, 1, 3, 1, 1, 4 (0.6/0.8 rows): the three norm-1 keys tie; capacity 2 keeps 1 and 3
    const rows = [
      [3, 4],
      [0.6, 0.8],
      [3, 0],
      [0.8, 0.6],
      [1, 0],
      [0, 4],
    ];
    // 0.6^2 + 0.8^2 is not exactly 1 in f32: use exact duplicates for the tie instead
    rows[3] = rows[1];
    rows[4] = rows[1];
    const k = Tensor.from(rows.flat(), { shape: [1, 1, 6, 2], device: 'cpu' });
    expectIdentical(l2.compress(k, k, { capacity: 2 }).positions.toArray(), [1, 3]);
    expectIdentical(l2.compress(k, k, { capacity: 4 }).positions.toArray(), [1, 2, 3, 4]);
    // all equal: the first positions win, the protected ones come on top
    const same = Tensor.from(new Float32Array(2 * 9 * 3).fill(0.5), { shape: [1, 9, 2, 3], device: 'cpu' });
    expectIdentical(l2.compress(same, same, { capacity: 4, layout: 'bshd' }).positions.toArray(), [0, 1, 2, 3, 0, 1, 2, 3]);
    expectIdentical(l2.compress(same, same, { capacity: 4, recent: 2, layout: 'bshd' }).positions.toArray(), [0, 1, 7, 8, 0, 1, 7, 8]);
    expectIdentical(l2.compress(same, same, { capacity: 4, sinks: 1, recent: 1, layout: 'bshd' }).positions.toArray(), [0, 1, 2, 8, 0, 1, 2, 8]);
  });

  for (const dtype of FLOAT_DTYPES) {
    it(`keeps a small-norm key planted among large ones, ${dtype}`, () => {
      const rng = testRng();
      const [B, H, N, D] = [2, 3, rng.int(40, 90), rng.int(8, 64)];
      const sinks = rng.int(0, 3);
      const recent = rng.int(0, 5);
      const data = new Float32Array(B * H * N * D);
      const planted: number[] = [];
      for (let r = 0; r < B * H; r++) {
        const p = rng.int(sinks, N - recent - 1);
        planted.push(p);
        for (let j = 0; j < N; j++) {
          const v = rng.normalArray(D);
          const n = Math.hypot(...v);
          const norm = j === p ? 0.05 : rng.uniform(8, 12);
          for (let d = 0; d < D; d++) data[(r * N + j) * D + d] = (v[d] / n) * norm;
        }
      }
      const { t: k } = makeCache(data, [B, H, N, D], dtype, 'bhsd');
      const capacity = sinks + recent + 1;
      const pos = l2.compress(k, k, { capacity, sinks, recent }).positions.toArray() as Int32Array;
      for (let r = 0; r < B * H; r++) {
        const want = [...Array.from({ length: sinks }, (_, i) => i), planted[r], ...Array.from({ length: recent }, (_, i) => N - recent + i)];
        expectIdentical(pos.subarray(r * capacity, (r + 1) * capacity), want, `row ${r}`);
      }
    });
  }

  for (const layout of LAYOUTS) {
    it(`keeps everything when N <= capacity, ${layout}`, () => {
      const rng = testRng();
      const [B, H, N, D] = [2, 3, rng.int(1, 20), rng.int(1, 9)];
      const { t: k, ref: kr } = makeCache(rng.normalArray(B * H * N * D), [B, H, N, D], 'bf16', layout);
      const { t: v, ref: vr } = makeCache(rng.normalArray(B * H * N * D), [B, H, N, D], 'bf16', layout);
      for (const capacity of [N, N + rng.int(1, 10)]) {
        const out = l2.compress(k, v, { capacity, sinks: 0, recent: 0, layout });
        expect(out.positions.shape).toEqual([B, H, N]);
        expectIdentical(out.positions.toArray(), l2Select(kr, { capacity }));
        expectIdentical(out.keys.toArray(), toLayout(kr, layout));
        expectIdentical(out.values.toArray(), toLayout(vr, layout));
      }
    });
  }

  it('rejects bad input naming the argument', () => {
    const k = Tensor.zeros([1, 2, 8, 4], 'f32', 'cpu');
    const v = Tensor.zeros([1, 2, 8, 4], 'f32', 'cpu');
    const op = 'l2.compress';
    expectKvsiftError(() => l2.compress(k, v, { capacity: 4, sinks: 3, recent: 2 }), 'ERR_INVALID_ARG', `${op}: expected at most capacity (4) for options.sinks + options.recent, but received 5`);
    expectKvsiftError(() => l2.compress(k, v, { capacity: 0 }), 'ERR_INVALID_ARG', `${op}: expected an integer in [1, 2147483647] for options.capacity, but received 0`);
    expectKvsiftError(() => l2.compress(k, v, { capacity: 2.5 }), 'ERR_INVALID_ARG', /options\.capacity, but received 2\.5$/);
    expectKvsiftError(() => l2.compress(k, v, undefined as unknown as { capacity: number }), 'ERR_INVALID_ARG', /options\.capacity, but received undefined$/);
    expectKvsiftError(() => l2.compress(k, v, { capacity: 4, sinks: -1 }), 'ERR_INVALID_ARG', /options\.sinks, but received -1$/);
    expectKvsiftError(() => l2.compress(k, v, { capacity: 4, recent: 1.5 }), 'ERR_INVALID_ARG', /options\.recent, but received 1\.5$/);
    expectKvsiftError(() => l2.compress(k, v, { capacity: 4, seqLens: [3] }), 'ERR_INVALID_ARG', `${op}: expected at least capacity (4); compress shorter rows separately for options.seqLens[0], but received 3`);
    expectKvsiftError(() => l2.compress(k, Tensor.zeros([1, 2, 7, 4], 'f32', 'cpu'), { capacity: 4 }), 'ERR_INVALID_ARG', `${op}: expected a cache with the keys' [B, H, N] = [1, 2, 8] for values, but received [1, 2, 7]`);
    expectKvsiftError(() => l2.compress(k, 'v' as unknown as Tensor, { capacity: 4 }), 'ERR_INVALID_ARG', `${op}: expected a Tensor for values, but received 'v'`);
    expectKvsiftError(() => l2.compress(null as unknown as Tensor, v, { capacity: 4 }), 'ERR_INVALID_ARG', `${op}: expected a Tensor for keys, but received null`);
    const gone = Tensor.zeros([1, 2, 8, 4], 'f32', 'cpu');
    gone.dispose();
    expectKvsiftError(() => l2.compress(k, gone, { capacity: 4 }), 'ERR_DISPOSED', `${op}: values is disposed`);
  });
});
