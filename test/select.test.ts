/**
 * topk, gather and evict (lib/select.ts). One case table each of topk (the tie rule: lower
 * position, NaN last, infinities, both orders, lengths, odd sizes) and gather (every dtype,
 * byte-exact, both layouts, broadcast and per-query-head positions) runs on every backend: the
 * CPU backend against the reference in reference/select.js, a CUDA device against the CPU backend
 * (topk) or the reference (gather, exact everywhere); then eviction with [k], [B, 1, k] and
 * [B, H, k] positions, argument validation, and CUDA's stream-ordered error reporting.
 */
import { describe, expect, it } from 'vitest';
import { evict, gather, KvsiftError, memoryStats, Stream, Tensor, topk, type Device, type DType, type Layout } from '../lib/index';
import { CUDA_EMULATED, cudaDevices, describeCuda, describeEachDevice, expectIdentical, expectKvsiftError, expectSameBytes, LAYOUTS, rejectsKvsift, tensorScope, testRng, type Rng } from './helpers';
import { bhsdToBshd, bshdToBhsd } from '../reference/layout';
import { gatherRef, topkRef } from '../reference/select';

const { track } = tensorScope();

const INVALID = 'ERR_INVALID_ARG';

function f32(data: ArrayLike<number>, shape: number[], device: Device = 'cpu'): Tensor {
  return track(Tensor.from(Float32Array.from(data), { shape, device }));
}
function i32(data: ArrayLike<number>, shape: number[], device: Device = 'cpu'): Tensor {
  return track(Tensor.from(Int32Array.from(data), { shape, device }));
}

/** Rows with many exact ties, NaN (both signs, odd payloads), ±inf and ±0 sprinkled in. */
function nastyRow(rng: Rng, n: number): Float32Array {
  const out = new Float32Array(n);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) {
    const u = rng.float();
    if (u < 0.03) bits[i] = rng.float() < 0.5 ? 0x7fc00000 : 0xffc00001 + rng.int(0, 1000); // NaNs
    else if (u < 0.05) out[i] = rng.float() < 0.5 ? Infinity : -Infinity;
    else if (u < 0.08) out[i] = rng.float() < 0.5 ? 0 : -0;
    else if (u < 0.5) out[i] = rng.int(-5, 5); // exact ties
    else out[i] = rng.normal();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// topk

describe('topk: hand-computed', () => {
  // position:  0    1  2  3  4    5          6         7  8
  const row = [0.5, 3, 3, 2, NaN, -Infinity, Infinity, 0, -0];

  it('ties go to the lower position, +inf first, NaN last, -inf just above NaN', () => {
    const s = f32(row, [9]);
    expectIdentical(track(topk(s, 3)).toArray(), [1, 2, 6]);
    expectIdentical(track(topk(s, 3, { order: 'score' })).toArray(), [6, 1, 2]);
    expectIdentical(track(topk(s, 2, { order: 'score' })).toArray(), [6, 1]);
    // 0 and -0 tie: the lower position (7) wins
    expectIdentical(track(topk(s, 6, { order: 'score' })).toArray(), [6, 1, 2, 3, 0, 7]);
    expectIdentical(track(topk(s, 8, { order: 'score' })).toArray(), [6, 1, 2, 3, 0, 7, 8, 5]);
    expectIdentical(track(topk(s, 9, { order: 'score' })).toArray(), [6, 1, 2, 3, 0, 7, 8, 5, 4]);
    expectIdentical(track(topk(s, 8)).toArray(), [0, 1, 2, 3, 5, 6, 7, 8]);
    // k = M: every position
    expectIdentical(track(topk(s, 9)).toArray(), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('all-equal, all-NaN and -0/+0 rows', () => {
    expectIdentical(track(topk(f32([7, 7, 7, 7, 7], [5]), 3)).toArray(), [0, 1, 2]);
    expectIdentical(track(topk(f32([7, 7, 7, 7, 7], [5]), 3, { order: 'score' })).toArray(), [0, 1, 2]);
    expectIdentical(track(topk(f32([NaN, NaN, NaN, NaN], [4]), 2)).toArray(), [0, 1]);
    expectIdentical(track(topk(f32([NaN, 1, NaN, -Infinity], [4]), 3, { order: 'score' })).toArray(), [1, 3, 0]);
    expectIdentical(track(topk(f32([-0, 0], [2]), 1)).toArray(), [0]);
    expectIdentical(track(topk(f32([0, -0], [2]), 1)).toArray(), [0]);
    expectIdentical(track(topk(f32([-1, -0, -2], [3]), 1)).toArray(), [1]);
  });

  it('k = 1 and several rows; lengths limit each batch row', () => {
    const s = f32([1, 9, 3, 9, /**/ 4, 2, 8, 8, /**/ 5, 5, 5, 0], [3, 4]);
    expectIdentical(track(topk(s, 1)).toArray(), [1, 2, 0]);
    expectIdentical(track(topk(s, 2)).toArray(), [1, 3, 2, 3, 0, 1]);
    // row 0 sees only [1, 9, 3]; row 1 [4, 2]; row 2 [5, 5, 5, 0]
    expectIdentical(track(topk(s, 2, { lengths: [3, 2, 4], order: 'score' })).toArray(), [1, 2, 0, 1, 0, 1]);
    // lengths are per batch row (the first dim): [2, 2, 3] with lengths [2, 3]
    const s3 = f32([1, 2, 3, /**/ 3, 2, 1, /**/ 0, 5, 9, /**/ 9, 0, 5], [2, 2, 3]);
    expectIdentical(track(topk(s3, 1, { lengths: [2, 3] })).toArray(), [1, 0, 2, 0]);
  });

  it('output shape: the last axis becomes k', () => {
    const s = f32(new Float32Array(2 * 3 * 11), [2, 3, 11]);
    const out = track(topk(s, 4));
    expect(out.shape).toEqual([2, 3, 4]);
    expect(out.dtype).toBe('i32');
  });
});

describe('topk: special rows against the reference', () => {
  it('random f32 bit patterns (every class of value)', () => {
    const rng = testRng();
    const M = 3001;
    const data = rng.bits32AsF32(5 * M);
    for (const order of ['position', 'score'] as const) {
      const got = track(topk(f32(data, [5, M]), 257, { order })).toArray();
      expectIdentical(got, topkRef(data, 5, M, 257, order), order);
    }
  });

  it('many short rows in one launch', () => {
    const rng = testRng();
    const R = 3000;
    const M = 37;
    const data = new Float32Array(R * M);
    for (let i = 0; i < data.length; i++) data[i] = rng.int(0, 20) / 4;
    for (const order of ['position', 'score'] as const) {
      const got = track(topk(f32(data, [R, M]), 5, { order })).toArray();
      expectIdentical(got, topkRef(data, R, M, 5, order), order);
    }
  });

  it('a long row (radix digits beyond the first)', () => {
    const rng = testRng();
    const M = 100_003;
    const data = rng.normalArray(M);
    // values differing only in their low bits, so the last radix digit decides
    for (let i = 0; i < 500; i++) data[rng.int(0, M - 1)] = 3 + i * 2 ** -21;
    const k = 1001;
    for (const order of ['position', 'score'] as const) {
      const got = track(topk(f32(data, [M]), k, { order })).toArray();
      expectIdentical(got, topkRef(data, 1, M, k, order), order);
    }
  });

  it('1-D scores: lengths take one entry', () => {
    const got = track(topk(f32([5, 4, 3, 9, 9], [5]), 2, { lengths: [3] })).toArray();
    expectIdentical(got, [0, 1]);
  });
});

describe('topk: argument validation', () => {
  it('k out of range or not an integer', () => {
    const s = f32([1, 2, 3, 4, 5], [5]);
    expectKvsiftError(() => topk(s, 6), INVALID, 'topk: expected an integer in [1, 5] for k, but received 6');
    expectKvsiftError(() => topk(s, 0), INVALID, 'topk: expected an integer in [1, 5] for k, but received 0');
    expectKvsiftError(() => topk(s, -2), INVALID, 'topk: expected an integer in [1, 5] for k, but received -2');
    expectKvsiftError(() => topk(s, 1.5), INVALID, 'topk: expected an integer in [1, 5] for k, but received 1.5');
    expectKvsiftError(() => topk(s, '2' as never), INVALID, "topk: expected an integer in [1, 5] for k, but received '2'");
    expectKvsiftError(() => topk(s, NaN), INVALID, 'topk: expected an integer in [1, 5] for k, but received NaN');
  });

  it('unknown order, bad lengths', () => {
    const s = f32(new Float32Array(2 * 5), [2, 5]);
    expectKvsiftError(() => topk(s, 2, { order: 'value' as never }), INVALID, "topk: expected one of 'position', 'score' for options.order, but received 'value'");
    expectKvsiftError(() => topk(s, 2, { lengths: [5, 5, 5] }), INVALID, 'topk: expected 2 lengths (one per batch row) for options.lengths, but received 3');
    expectKvsiftError(() => topk(s, 3, { lengths: [5, 2] }), INVALID, 'topk: expected an integer in [3, 5] for options.lengths[1], but received 2');
    expectKvsiftError(() => topk(s, 3, { lengths: [6, 5] }), INVALID, 'topk: expected an integer in [3, 5] for options.lengths[0], but received 6');
    expectKvsiftError(() => topk(s, 3, { lengths: new Float32Array([5, 5]) as never }), INVALID, /options\.lengths/);
    expectKvsiftError(() => topk(s, 3, 7 as never), INVALID, 'topk: expected an options object for options, but received 7');
  });

  it('non-tensor, wrong dtype, scalar and disposed scores', () => {
    expectKvsiftError(() => topk(null as never, 1), INVALID, 'topk: expected a Tensor for scores, but received null');
    expectKvsiftError(() => topk('scores' as never, 1), INVALID, "topk: expected a Tensor for scores, but received 'scores'");
    expectKvsiftError(() => topk({ shape: [3], dtype: 'f32' } as never, 1), INVALID, 'topk: expected a Tensor for scores, but received a plain object');
    const ints = i32([1, 2, 3], [3]);
    expectKvsiftError(() => topk(ints, 1), INVALID, "topk: expected 'f32' for scores.dtype, but received 'i32'");
    const half = track(Tensor.from([1, 2, 3], { dtype: 'bf16', device: 'cpu' }));
    expectKvsiftError(() => topk(half, 1), INVALID, "topk: expected 'f32' for scores.dtype, but received 'bf16'");
    const scalar = f32([4], []);
    expectKvsiftError(() => topk(scalar, 1), INVALID, 'topk: expected a tensor of rank >= 1 for scores, but received a scalar');
    const gone = Tensor.from([1, 2, 3], { device: 'cpu' });
    gone.dispose();
    expectKvsiftError(() => topk(gone, 1), 'ERR_DISPOSED', 'topk: scores is disposed');
  });

  it('a failed topk leaves its input unchanged', () => {
    const s = f32([3, 1, 2], [3]);
    expect(() => topk(s, 4)).toThrow(KvsiftError);
    expectIdentical(s.toArray(), [3, 1, 2]);
  });
});

// ---------------------------------------------------------------------------------------------
// gather

const ALL_DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'u8'];

/** The integer view of each dtype's raw bits (f32 as its uint32 patterns). */
const RAW_INTS = { f32: Uint32Array, f16: Uint16Array, bf16: Uint16Array, i32: Int32Array, u8: Uint8Array } as const;

/** A random cache of any dtype from random bits (NaN payloads included), bhsd, as raw integers. */
function randomRaw(rng: Rng, dtype: DType, n: number): Uint32Array | Uint16Array | Int32Array | Uint8Array {
  const Ints = RAW_INTS[dtype];
  const out = new Ints(n);
  for (let i = 0; i < n; i++) out[i] = rng.u32(); // typed arrays keep the low bits
  return out;
}

/** A tensor holding raw bits (bhsd data stored in `layout`). */
function rawTensor(raw: Uint32Array | Uint16Array | Int32Array | Uint8Array, dtype: DType, dims: [number, number, number, number], layout: Layout, device: Device): Tensor {
  const [B, H, S, D] = dims;
  const host = layout === 'bhsd' ? raw : bhsdToBshd(raw, B, H, S, D);
  const shape = layout === 'bhsd' ? [B, H, S, D] : [B, S, H, D];
  // f32 bits travel through a Float32Array view of the same bytes (no value round trip)
  const data = dtype === 'f32' ? new Float32Array(host.buffer, host.byteOffset, host.length) : host;
  return track(Tensor.from(data as Float32Array | Uint16Array | Int32Array | Uint8Array, { shape, dtype, device }));
}

/** A tensor's stored bytes as bhsd raw integers. */
function rawOut(t: Tensor, layout: Layout): Uint32Array | Uint16Array | Int32Array | Uint8Array {
  const r = t.toRawArray();
  const ints = r instanceof Float32Array ? new Uint32Array(r.buffer, r.byteOffset, r.length) : r;
  if (layout === 'bhsd') return ints;
  const [B, S, H, D] = t.shape;
  return bshdToBhsd(ints, B, H, S, D);
}


/**
 * The topk case table: [B, H, M, k] rows with ties, NaN, infinities, ±0 and lengths. The CPU
 * backend is checked against the reference on random small shapes, a CUDA device against the CPU
 * backend on these shapes, whose last rows reach the multi-block and radix paths (left out on the
 * emulated device).
 */
const TOPK_SHAPES: ReadonlyArray<[number, number, number, number]> = [
  [1, 1, 9, 3],
  [2, 3, 601, 1],
  [3, 2, 999, 999],
  [1, 1000, 37, 5],
  [2, 4, 4097, 257],
  [1, 8, 32767, 2016],
  [1, 2, 131071, 4064],
];

describeEachDevice('topk', (device) => {
  const onCpu = device === 'cpu';
  for (const order of ['position', 'score'] as const) {
    it(`${order}: ties, NaN, infinities, odd lengths, k from 1 to M`, () => {
      const rng = testRng();
      const shapes = onCpu
        ? Array.from({ length: 25 }, (_, trial): [number, number, number, number] => {
            const M = rng.int(1, 600);
            return [rng.int(1, 3), rng.int(1, 4), M, [1, M, rng.int(1, M)][trial % 3]];
          })
        : TOPK_SHAPES.filter(([, , M]) => !CUDA_EMULATED || M <= 4097);
      shapes.forEach(([B, H, M, k], trial) => {
        const data = new Float32Array(B * H * M);
        for (let r = 0; r < B * H; r++) data.set(nastyRow(rng, M), r * M);
        const withLengths = onCpu ? trial % 2 === 1 : B > 1;
        const lengths = withLengths ? Array.from({ length: B }, () => rng.int(k, M)) : undefined;
        const got = track(topk(f32(data, [B, H, M], device), k, { order, lengths })).toArray();
        const want = onCpu ? topkRef(data, B * H, M, k, order, lengths, H) : track(topk(f32(data, [B, H, M]), k, { order, lengths })).toArray();
        expectIdentical(got, want, JSON.stringify({ B, H, M, k, lengths, order }));
      });
    });
  }
});

/** The gather case table: every dtype x layout, per-head, broadcast [B, 1, k] and per-query-head positions. */
describeEachDevice('gather', (device) => {
  const onCpu = device === 'cpu';
  for (const dtype of ALL_DTYPES) {
    for (const layout of LAYOUTS) {
      it(`${dtype} ${layout}: byte-exact rows at per-head, broadcast and per-query-head positions`, () => {
        const rng = testRng();
        const B = onCpu ? rng.int(1, 3) : 2;
        const H = onCpu ? rng.int(1, 3) : 3;
        const N = onCpu ? rng.int(1, 200) | 1 : 1001;
        const D = onCpu ? [1, 40, 64, 128, 7][rng.int(0, 4)] : [40, 64, 128][rng.int(0, 2)];
        const raw = randomRaw(rng, dtype, B * H * N * D);
        const cache = rawTensor(raw, dtype, [B, H, N, D], layout, device);
        for (const Hp of onCpu ? [H, 1, H * 4, H * 8] : [H, 1, H * 4]) {
          const K = onCpu ? rng.int(0, 2 * N) : 257; // repeats and any order are fine
          const pos = rng.intArray(B * Hp * K, 0, N - 1);
          const out = track(gather(cache, i32(pos, [B, Hp, K], device), { layout }));
          const Hout = Hp === 1 ? H : Hp;
          expect(out.shape).toEqual(layout === 'bhsd' ? [B, Hout, K, D] : [B, K, Hout, D]);
          expect(out.dtype).toBe(dtype);
          const group = Hp === 1 ? 1 : Hp / H;
          // a gather is exact on every backend: the reference is the CPU's and the CUDA device's
          expectSameBytes(rawOut(out, layout), gatherRef(raw, B, H, N, D, pos, Hp, K, group), `${dtype} ${layout} Hp=${Hp} ${JSON.stringify({ B, H, N, D, K })}`);
        }
      });
    }
  }
});

describe('gather: out-of-range positions and k = 0 on the CPU', () => {
  it('positions out of range throw ERR_INDEX_OUT_OF_RANGE on the CPU, leak nothing, change nothing', () => {
    const rng = testRng();
    const raw = randomRaw(rng, 'bf16', 2 * 2 * 9 * 8);
    const cache = rawTensor(raw, 'bf16', [2, 2, 9, 8], 'bhsd', 'cpu');
    for (const bad of [9, -1, 1 << 30, -2147483648]) {
      const pos = rng.intArray(2 * 2 * 5, 0, 8);
      pos[rng.int(0, pos.length - 1)] = bad;
      const p = i32(pos, [2, 2, 5]);
      const live0 = memoryStats('cpu').liveTensors;
      const e = expectKvsiftError(() => gather(cache, p), 'ERR_INDEX_OUT_OF_RANGE');
      expect(e.message).toBe('gather: 1 positions fall outside [0, 9)');
      expect(memoryStats('cpu').liveTensors).toBeLessThanOrEqual(live0);
      expectIdentical(p.toArray(), pos);
    }
    expectSameBytes(cache.toRawArray(), raw, 'cache unchanged');
  });

  it('k = 0 gives an empty result', () => {
    const cache = track(Tensor.zeros([1, 2, 5, 4], 'f16', 'cpu'));
    const out = track(gather(cache, i32([], [1, 2, 0])));
    expect(out.shape).toEqual([1, 2, 0, 4]);
  });
});

describe('gather: argument validation', () => {
  it('bad positions and caches', () => {
    const cache = track(Tensor.zeros([2, 2, 9, 4], 'f32', 'cpu'));
    const posF = f32(new Float32Array(2 * 2 * 3), [2, 2, 3]);
    expectKvsiftError(() => gather(cache, posF), INVALID, "gather: expected 'i32' for positions.dtype, but received 'f32'");
    expectKvsiftError(() => gather(cache, i32(new Int32Array(2 * 3 * 3), [2, 3, 3])), INVALID, 'gather: expected an i32 tensor [2, 2 (or 1, or a multiple of 2), k] for positions, but received shape [2, 3, 3]');
    expectKvsiftError(() => gather(cache, i32(new Int32Array(3 * 2 * 3), [3, 2, 3])), INVALID, 'gather: expected an i32 tensor [2, 2 (or 1, or a multiple of 2), k] for positions, but received shape [3, 2, 3]');
    expectKvsiftError(() => gather(cache, i32(new Int32Array(2 * 3), [2, 3])), INVALID, 'gather: expected an i32 tensor [2, 2 (or 1, or a multiple of 2), k] for positions, but received shape [2, 3]');
    expectKvsiftError(() => gather(cache, i32(new Int32Array(0), [2, 0, 3])), INVALID, /for positions, but received shape \[2, 0, 3\]/);
    const flat = track(Tensor.zeros([2, 9, 4], 'f32', 'cpu'));
    expectKvsiftError(() => gather(flat, i32(new Int32Array(6), [2, 1, 3])), INVALID, 'gather: expected a 4-D tensor [B, H, N, D] for cache, but received shape [2, 9, 4]');
    expectKvsiftError(() => gather('cache' as never, i32(new Int32Array(6), [2, 1, 3])), INVALID, "gather: expected a Tensor for cache, but received 'cache'");
    expectKvsiftError(() => gather(cache, null as never), INVALID, 'gather: expected a Tensor for positions, but received null');
    expectKvsiftError(() => gather(cache, {} as never), INVALID, 'gather: expected a Tensor for positions, but received a plain object');
    expectKvsiftError(() => gather(cache, i32(new Int32Array(12), [2, 2, 3]), { layout: 'hbsd' as never }), INVALID, "gather: expected one of 'bhsd', 'bshd' for options.layout, but received 'hbsd'");
    const gone = Tensor.from(new Int32Array(12), { shape: [2, 2, 3], device: 'cpu' });
    gone.dispose();
    expectKvsiftError(() => gather(cache, gone), 'ERR_DISPOSED', 'gather: positions is disposed');
    const goneCache = Tensor.zeros([2, 2, 9, 4], 'f32', 'cpu');
    goneCache.dispose();
    expectKvsiftError(() => gather(goneCache, i32(new Int32Array(12), [2, 2, 3])), 'ERR_DISPOSED', 'gather: cache is disposed');
  });
});

// ---------------------------------------------------------------------------------------------
// evict

describe('evict', () => {
  for (const layout of LAYOUTS) {
    for (const dtype of ['bf16', 'f32', 'f16'] as const) {
      it(`${dtype} ${layout}: positions [k], [B, 1, k] and [B, H, k]`, () => {
        const rng = testRng();
        const B = 2;
        const H = 3;
        const N = 41;
        const D = 40;
        const rk = randomRaw(rng, dtype, B * H * N * D);
        const rv = randomRaw(rng, dtype, B * H * N * D);
        const keys = rawTensor(rk, dtype, [B, H, N, D], layout, 'cpu');
        const values = rawTensor(rv, dtype, [B, H, N, D], layout, 'cpu');
        const K = 13;
        const sel = () => rng.sample(N, K).sort((a, b) => a - b);
        const shared = sel();
        const perBatch = [...sel(), ...sel()];
        const perHead = Array.from({ length: B * H }, sel).flat();
        const cases: Array<{ pos: number[]; shape: number[]; expandHp: number; tiled: number[] }> = [
          { pos: shared, shape: [K], expandHp: 1, tiled: [...shared, ...shared] },
          { pos: perBatch, shape: [B, 1, K], expandHp: 1, tiled: perBatch },
          { pos: perHead, shape: [B, H, K], expandHp: H, tiled: perHead },
        ];
        for (const c of cases) {
          const p = i32(c.pos, c.shape);
          const out = evict(keys, values, p, { layout });
          track(out.keys);
          track(out.values);
          track(out.positions);
          expect(out.keys.shape).toEqual(layout === 'bhsd' ? [B, H, K, D] : [B, K, H, D]);
          expectSameBytes(rawOut(out.keys, layout), gatherRef(rk, B, H, N, D, c.tiled, c.expandHp, K), `keys ${JSON.stringify(c.shape)}`);
          expectSameBytes(rawOut(out.values, layout), gatherRef(rv, B, H, N, D, c.tiled, c.expandHp, K), `values ${JSON.stringify(c.shape)}`);
          expect(out.positions.shape).toEqual(c.shape.length === 1 ? [B, 1, K] : c.shape);
          expectIdentical(out.positions.toArray(), c.tiled);
          // the result owns its positions: disposing the caller's leaves it intact
          expect(out.positions).not.toBe(p);
          p.dispose();
          expectIdentical(out.positions.toArray(), c.tiled);
        }
        expectSameBytes(rawOut(keys, layout), rk, 'keys unchanged');
      });
    }
  }

  it('validation: mismatched caches, bad positions', () => {
    const keys = track(Tensor.zeros([2, 2, 9, 4], 'f16', 'cpu'));
    const values = track(Tensor.zeros([2, 2, 8, 4], 'f16', 'cpu'));
    const p = i32(new Int32Array(2 * 2 * 3), [2, 2, 3]);
    expectKvsiftError(() => evict(keys, values, p), INVALID, "evict: expected a cache with the keys' [B, H, N] = [2, 2, 9] for values, but received [2, 2, 8]");
    expectKvsiftError(() => evict(keys, 'v' as never, p), INVALID, "evict: expected a Tensor for values, but received 'v'");
    expectKvsiftError(() => evict(keys, keys, null as never), INVALID, 'evict: expected a Tensor for positions, but received null');
    expectKvsiftError(() => evict(keys, keys, p, { layout: 'x' as never }), INVALID, "evict: expected one of 'bhsd', 'bshd' for options.layout, but received 'x'");
    const pf = f32(new Float32Array(12), [2, 2, 3]);
    expectKvsiftError(() => evict(keys, keys, pf), INVALID, /expected 'i32' for positions\.dtype, but received 'f32'/);
    const outside = i32([0, 9], [2]);
    const live0 = memoryStats('cpu').liveTensors;
    expectKvsiftError(() => evict(keys, keys, outside), 'ERR_INDEX_OUT_OF_RANGE', /outside \[0, 9\)/);
    expect(memoryStats('cpu').liveTensors).toBeLessThanOrEqual(live0);
    const gone = Tensor.zeros([2, 2, 9, 4], 'f16', 'cpu');
    gone.dispose();
    expectKvsiftError(() => evict(keys, gone, p), 'ERR_DISPOSED', 'evict: values is disposed');
  });

  it('1-D positions are checked as i32 too (they are tiled on the host, not truncated)', () => {
    const keys = track(Tensor.zeros([1, 2, 9, 4], 'f16', 'cpu'));
    const pf1 = f32([0.5, 1.5], [2]);
    expectKvsiftError(() => evict(keys, keys, pf1), INVALID, /expected 'i32' for positions\.dtype, but received 'f32'/);
    const p2 = i32([0, 1, 2, 3], [2, 2]);
    expectKvsiftError(() => evict(keys, keys, p2), INVALID, /for positions/);
  });
});

// ---------------------------------------------------------------------------------------------
describeCuda('gather and evict on a CUDA stream', () => {
  const device = (cudaDevices()[0] ?? 'cuda:0') as Device;

  it('gather: out-of-range positions reject the stream synchronize with ERR_INDEX_OUT_OF_RANGE and write zero rows', async () => {
    const rng = testRng();
    const raw = randomRaw(rng, 'f16', 1 * 2 * 9 * 8);
    const cache = rawTensor(raw, 'f16', [1, 2, 9, 8], 'bhsd', device);
    const stream = Stream.create(device);
    try {
      const out = track(gather(cache, i32([0, 9, 2, -1, 3, 4], [1, 2, 3], device), { stream }));
      const e = await rejectsKvsift(stream.synchronize());
      expect(e.code).toBe('ERR_INDEX_OUT_OF_RANGE');
      const bits = out.toRawArray() as Uint16Array;
      for (const row of [1, 3]) for (let d = 0; d < 8; d++) expect(bits[row * 8 + d]).toBe(0);
      // the flag is cleared: the next synchronize resolves
      await stream.synchronize();
    } finally {
      stream.dispose();
    }
  });

  it('evict on a stream, no host sync until the end', async () => {
    const rng = testRng();
    const raw = randomRaw(rng, 'bf16', 2 * 4 * 513 * 128);
    const keys = rawTensor(raw, 'bf16', [2, 4, 513, 128], 'bshd', device);
    const sel = rng.sample(513, 100).sort((a, b) => a - b);
    const stream = Stream.create(device);
    try {
      const p = i32(sel, [100], device);
      const out = evict(keys, keys, p, { layout: 'bshd', stream });
      track(out.keys);
      track(out.values);
      track(out.positions);
      await stream.synchronize();
      const tiled = [...sel, ...sel];
      expectSameBytes(rawOut(out.keys, 'bshd'), gatherRef(raw, 2, 4, 513, 128, tiled, 1, 100), 'keys');
      expectIdentical((await out.positions.toArrayAsync({ stream })) as Int32Array, tiled);
    } finally {
      stream.dispose();
    }
  });
});
