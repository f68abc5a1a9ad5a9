/**
 * Decode attention (ALGORITHMS.md "Decode attention"): dense and sparse attention and the fused
 * H2O / Keyformer accumulation against the float64 reference (test/reference/decode.ts) on fresh
 * random inputs with odd sizes, every dtype and layout, GQA groups, T up to 8 and seqLens; the
 * fused scores against h2o.accumulate / keyformer.accumulate; bad input; then CUDA vs the CPU.
 */
import { describe, expect, it } from 'vitest';
import { decode, h2o, keyformer, Tensor, type Device, type DType } from '../lib/index';
import { native } from '../lib/native';
import { cudaDevices, describeCuda, makeCache, expectClose, expectKvsiftError, testRng, tolerance, type Rng, type AttentionDims } from './helpers';
import { attention as refAttention } from '../reference/decode';
import { fromLayout, shapeIn, type Cache4, type Layout } from '../reference/layout';

const LAYOUTS: Layout[] = ['bhsd', 'bshd'];
const DTYPES: ('f32' | 'f16' | 'bf16')[] = ['f32', 'f16', 'bf16'];
const CASES = LAYOUTS.flatMap((layout) => DTYPES.map((dtype) => ({ layout, dtype })));
/** The accuracy bar for f32: 1e-4 relative, 1e-6 absolute against float64. */
const F32_TOL = { rtol: 1e-4, atol: 1e-6 };
const LSE_TOL = { rtol: 1e-5, atol: 1e-5 };
const SCORE_TOL = { rtol: 1e-6, atol: 1e-6 };


interface Problem extends AttentionDims {
  layout: Layout;
  dtype: DType;
  q: { t: Tensor; ref: Cache4 };
  k: { t: Tensor; ref: Cache4 };
  v: { t: Tensor; ref: Cache4 };
  seqLens?: Int32Array;
}

interface ProblemShape {
  B?: number;
  G?: number;
  Hkv?: number;
  T?: number;
  N?: number;
  D?: number;
  seqLens?: boolean;
}

function problem(rng: Rng, dtype: DType, layout: Layout, s: ProblemShape = {}, device: Device = 'cpu'): Problem {
  const Hkv = s.Hkv ?? rng.int(1, 2);
  const G = s.G ?? [1, 4, 8][rng.int(0, 2)];
  const Hq = Hkv * G;
  const B = s.B ?? rng.int(1, 2);
  const N = s.N ?? rng.int(9, 300);
  const T = s.T ?? rng.int(1, Math.min(8, N));
  const D = s.D ?? [40, 64, 128, 256, 7][rng.int(0, 4)];
  // logits of order 1: a softmax that is neither flat nor one-hot
  const std = Math.pow(D, -0.25) * 1.5;
  const q = makeCache(rng.normalArray(B * Hq * T * D, 0, std), [B, Hq, T, D], dtype, layout, device);
  const k = makeCache(rng.normalArray(B * Hkv * N * D, 0, std), [B, Hkv, N, D], dtype, layout, device);
  const v = makeCache(rng.normalArray(B * Hkv * N * D, 0, 1), [B, Hkv, N, D], dtype, layout, device);
  let seqLens: Int32Array | undefined;
  if (s.seqLens ?? rng.int(0, 1) === 1) {
    seqLens = Int32Array.from({ length: B }, () => rng.int(T, N));
    seqLens[rng.int(0, B - 1)] = N;
  }
  return { B, Hq, Hkv, T, N, D, layout, dtype, q, k, v, seqLens };
}

/** The kernel's out in logical [B, Hq, T, D] order. */
function logicalOut(p: Problem, out: Tensor): Float32Array {
  return fromLayout(out.toArray(), p.layout, p.B, p.Hq, p.T, p.D).data as Float32Array;
}

function outTol(dtype: DType): { rtol: number; atol: number } {
  // out is rounded once to the dtype: a unit in its last place on values of order 0.1-1
  return dtype === 'f32' ? F32_TOL : { rtol: tolerance(dtype).rtol, atol: tolerance(dtype).atol * 4 };
}

function checkAgainstRef(p: Problem, res: { out: Tensor; lse?: Tensor }, ref: { out: Float64Array; lse: Float64Array }, label: string): void {
  expect(res.out.dtype).toBe(p.dtype);
  expect(res.out.shape).toEqual(shapeIn(p.layout, p.B, p.Hq, p.T, p.D));
  expectClose(logicalOut(p, res.out), ref.out, { ...outTol(p.dtype), label: `${label} out`, shape: [p.B, p.Hq, p.T, p.D] });
  if (res.lse) expectClose(res.lse.toArray(), ref.lse, { ...LSE_TOL, label: `${label} lse`, shape: [p.B, p.Hq, p.T] });
}

describe('decode.attention', () => {
  for (const { layout, dtype } of CASES) {
    it(`equals the float64 reference, ${layout} ${dtype}: odd N, D 40/64/128/256/7, T 1..8, G 1/4/8, seqLens`, () => {
      const rng = testRng();
      for (let rep = 0; rep < 4; rep++) {
        const p = problem(rng, dtype, layout);
        const res = decode.attention(p.q.t, p.k.t, p.v.t, { layout, seqLens: p.seqLens, returnLse: true });
        const ref = refAttention(p.q.ref, p.k.ref, p.v.ref, { seqLens: p.seqLens });
        checkAgainstRef(p, res, ref, `rep ${rep} ${JSON.stringify({ B: p.B, Hq: p.Hq, Hkv: p.Hkv, T: p.T, N: p.N, D: p.D })}`);
      }
    });
  }

  it('covers long rows that span many tiles, with a custom scale', () => {
    const rng = testRng();
    for (const D of [64, 128]) {
      const p = problem(rng, 'f32', 'bhsd', { N: 1337, D, G: 4, Hkv: 1, B: 1, T: 3 });
      const scale = 0.37;
      const res = decode.attention(p.q.t, p.k.t, p.v.t, { scale, returnLse: true, seqLens: p.seqLens });
      checkAgainstRef(p, res, refAttention(p.q.ref, p.k.ref, p.v.ref, { scale, seqLens: p.seqLens }), `D ${D}`);
    }
  });

  it('returns lse only when asked', () => {
    const p = problem(testRng(), 'f32', 'bhsd', { N: 20, T: 1 });
    const res = decode.attention(p.q.t, p.k.t, p.v.t);
    expect(res.lse).toBeUndefined();
    expect(Object.keys(res)).toEqual(['out']);
  });

  for (const { layout, dtype } of CASES) {
    it(`fuses accumulation equal to h2o.accumulate / keyformer.accumulate and the reference, ${layout} ${dtype}`, () => {
      const rng = testRng();
      for (let rep = 0; rep < 2; rep++) {
        const p = problem(rng, dtype, layout, { D: [40, 64, 128][rep + (rng.int(0, 1))] });
        const init = rng.uniformArray(p.B * p.Hkv * p.N, 0, 3);
        // H2O
        const fused = Tensor.from(init, { shape: [p.B, p.Hkv, p.N], dtype: 'f32', device: 'cpu' });
        const separate = Tensor.from(init, { shape: [p.B, p.Hkv, p.N], dtype: 'f32', device: 'cpu' });
        const res = decode.attention(p.q.t, p.k.t, p.v.t, { layout, seqLens: p.seqLens, returnLse: true, accumulate: { scores: fused, method: 'h2o' } });
        h2o.accumulate(p.q.t, p.k.t, separate, { layout, seqLens: p.seqLens });
        const ref = refAttention(p.q.ref, p.k.ref, p.v.ref, { seqLens: p.seqLens, accumulate: { scores: init, tau: 1, noise: 'none' } });
        checkAgainstRef(p, res, ref, 'h2o');
        expectClose(fused.toArray(), separate.toArray(), { ...SCORE_TOL, label: 'h2o fused vs h2o.accumulate' });
        expectClose(fused.toArray(), ref.scores!, { ...SCORE_TOL, label: 'h2o fused vs reference' });
        // Keyformer, 64-bit seed and step
        const seed = (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
        const step = rng.int(0, 1000);
        const tau = 1 + rng.float();
        const kf = Tensor.from(init, { shape: [p.B, p.Hkv, p.N], dtype: 'f32', device: 'cpu' });
        const kfSep = Tensor.from(init, { shape: [p.B, p.Hkv, p.N], dtype: 'f32', device: 'cpu' });
        const res2 = decode.attention(p.q.t, p.k.t, p.v.t, { layout, seqLens: p.seqLens, returnLse: true, accumulate: { scores: kf, method: 'keyformer', tau, seed, step } });
        keyformer.accumulate(p.q.t, p.k.t, kfSep, { layout, seqLens: p.seqLens, tau, seed, step });
        const ref2 = refAttention(p.q.ref, p.k.ref, p.v.ref, { seqLens: p.seqLens, accumulate: { scores: init, tau, noise: 'gumbel', seed, step } });
        // out is the plain softmax, untouched by the noise
        checkAgainstRef(p, res2, ref2, 'keyformer');
        expectClose(kf.toArray(), kfSep.toArray(), { ...SCORE_TOL, label: 'keyformer fused vs keyformer.accumulate' });
        expectClose(kf.toArray(), ref2.scores!, { ...SCORE_TOL, label: 'keyformer fused vs reference' });
      }
    });
  }

  it('accumulates with a custom scale into the masses too', () => {
    const rng = testRng();
    const p = problem(rng, 'f32', 'bhsd', { N: 150, D: 64, G: 4, T: 2 });
    const scores = Tensor.zeros([p.B, p.Hkv, p.N], 'f32', 'cpu');
    decode.attention(p.q.t, p.k.t, p.v.t, { scale: 0.2, seqLens: p.seqLens, accumulate: { scores, method: 'keyformer', tau: 1.5, seed: 9, step: 3, noise: 'none' } });
    const ref = refAttention(p.q.ref, p.k.ref, p.v.ref, { scale: 0.2, seqLens: p.seqLens, accumulate: { scores: new Float64Array(p.B * p.Hkv * p.N), tau: 1.5, noise: 'none' } });
    expectClose(scores.toArray(), ref.scores!, SCORE_TOL);
  });

  it('rejects bad input naming the argument, leaving scores untouched', () => {
    const rng = testRng();
    const p = problem(rng, 'f32', 'bhsd', { B: 1, Hkv: 2, G: 4, N: 16, T: 1, D: 8, seqLens: false });
    const init = rng.uniformArray(2 * 16);
    const scores = Tensor.from(init, { shape: [1, 2, 16], dtype: 'f32', device: 'cpu' });
    const op = 'decode.attention';
    const E = 'ERR_INVALID_ARG';
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { accumulate: { scores, method: 'keyformer', tau: 0, seed: 1, step: 1 } }), E,
      `${op}: expected a number > 0 for options.accumulate.tau, but received 0`);
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { accumulate: { scores, method: 'tova' as 'h2o' } }), E,
      `${op}: expected one of 'h2o', 'keyformer' for options.accumulate.method, but received 'tova'`);
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { accumulate: { scores, method: 'h2o', tau: 2 } }), E,
      `${op}: expected undefined (h2o has no noise and tau 1) for options.accumulate.tau, but received 2`);
    const wrong = Tensor.zeros([1, 8, 16], 'f32', 'cpu');
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { accumulate: { scores: wrong, method: 'h2o' } }), E,
      `${op}: expected an f32 tensor [1, 2, 16] for options.accumulate.scores, but received f32 [1, 8, 16]`);
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { seqLens: [17], accumulate: { scores, method: 'h2o' } }), E,
      `${op}: expected an integer in [1, 16] for options.seqLens[0], but received 17`);
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { scale: Number.NaN }), E, `${op}: expected a finite number for options.scale, but received NaN`);
    // doubles the f32 kernels cannot hold (1e-300 is 0 in f32, 1e39 is Infinity)
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { accumulate: { scores, method: 'keyformer', tau: 1e-300, seed: 1, step: 1 } }), E,
      `${op}: expected a positive number representable in f32 (between 1.1754943508222875e-38 and 3.4028234663852886e+38) for options.accumulate.tau, but received 1e-300`);
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { scale: 1e39 }), E,
      `${op}: expected a number representable in f32 (at most 3.4028234663852886e+38 in magnitude) for options.scale, but received 1e+39`);
    expectKvsiftError(() => native.decodeAttention(p.q.t, p.k.t, p.v.t, Tensor.zeros([1, 8, 1, 8], 'f32', 'cpu'),
      { layout: 0, scale: 1, selection: 0, scores, tau: 1e-300, noise: 1, seed: 1, step: 1 }), E, /^decode\.attention: expected a positive number representable in f32 for tau/);
    const q0 = Tensor.zeros([1, 0, 1, 8], 'f32', 'cpu');
    expectKvsiftError(() => decode.attention(q0, p.k.t, p.v.t), E, `${op}: expected at least one query head (Hq >= 1) for q, but received 0`);
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { returnLse: 1 as unknown as boolean }), E, `${op}: expected a boolean for options.returnLse, but received 1`);
    expect(scores.toArray()).toEqual(init);

    const q9 = Tensor.zeros([1, 8, 9, 8], 'f32', 'cpu');
    expectKvsiftError(() => decode.attention(q9, p.k.t, p.v.t), E, `${op}: expected between 1 and 8 query tokens for q, but received 9`);
    const q3 = Tensor.zeros([1, 3, 1, 8], 'f32', 'cpu');
    expectKvsiftError(() => decode.attention(q3, p.k.t, p.v.t), E, `${op}: expected a head count that is a multiple of the keys' 2 for q, but received 3`);
    const vBf = Tensor.zeros([1, 2, 16, 8], 'bf16', 'cpu');
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, vBf), E, `${op}: expected q's dtype 'f32' for values.dtype, but received 'bf16'`);
    const vShort = Tensor.zeros([1, 2, 15, 8], 'f32', 'cpu');
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, vShort), E, `${op}: expected the keys' shape [1, 2, 16, 8] for values, but received [1, 2, 15, 8]`);
    expectKvsiftError(() => decode.attention(p.q.t, p.k.t, p.v.t, { layout: 'nhd' as Layout }), E, `${op}: expected one of 'bhsd', 'bshd' for options.layout, but received 'nhd'`);
    const qBig = Tensor.zeros([1, 2, 1, 264], 'f32', 'cpu');
    const kBig = Tensor.zeros([1, 2, 4, 264], 'f32', 'cpu');
    const bigScores = Tensor.from(Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8), { shape: [1, 2, 4], dtype: 'f32', device: 'cpu' });
    expectKvsiftError(() => decode.attention(qBig, kBig, kBig, { accumulate: { scores: bigScores, method: 'h2o' } }), 'ERR_UNSUPPORTED',
      `${op}: head dim 264 is not supported (at most 256)`);
    expect(Array.from(bigScores.toArray())).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('reads options as own properties only', () => {
    const p = problem(testRng(), 'f32', 'bhsd', { N: 12, T: 1, seqLens: false });
    const proto = { returnLse: true, scale: 100 };
    const res = decode.attention(p.q.t, p.k.t, p.v.t, Object.create(proto));
    expect(res.lse).toBeUndefined();
    checkAgainstRef(p, res, refAttention(p.q.ref, p.k.ref, p.v.ref), 'proto');
  });
});

describe('decode.sparseAttention', () => {
  for (const { layout, dtype } of CASES) {
    it(`attends to positions, ragged positions and blocks like the reference, ${layout} ${dtype}`, () => {
      const rng = testRng();
      for (let rep = 0; rep < 2; rep++) {
        const p = problem(rng, dtype, layout, { D: [40, 64, 128][rng.int(0, 2)], N: rng.int(40, 260) });
        const pairs = p.B * p.Hkv;
        // dense positions [B, Hkv, k], ascending, some past the causal limit or the row's end
        const k = rng.int(1, Math.min(40, p.N));
        const pos = new Int32Array(pairs * k);
        const lists: number[][] = [];
        for (let i = 0; i < pairs; i++) {
          const l = rng.sample(p.N, k).sort((a, b) => a - b);
          lists.push(l);
          pos.set(l, i * k);
        }
        const posT = Tensor.from(pos, { shape: [p.B, p.Hkv, k], dtype: 'i32', device: 'cpu' });
        const sel = (b: number, h: number) => lists[b * p.Hkv + h];
        const ref = refAttention(p.q.ref, p.k.ref, p.v.ref, { seqLens: p.seqLens, selection: sel });
        const res = decode.sparseAttention(p.q.t, p.k.t, p.v.t, { layout, seqLens: p.seqLens, positions: posT, returnLse: true });
        checkAgainstRef(p, res, ref, 'positions');

        // ragged: a different count per (b, h), including an empty one
        const counts = Array.from({ length: pairs }, () => rng.int(0, Math.min(30, p.N)));
        counts[rng.int(0, pairs - 1)] = 0;
        const indptr = new Int32Array(pairs + 1);
        const rlists: number[][] = [];
        for (let i = 0; i < pairs; i++) {
          indptr[i + 1] = indptr[i] + counts[i];
          rlists.push(rng.sample(p.N, counts[i]).sort((a, b) => a - b));
        }
        const flat = Int32Array.from(rlists.flat());
        const ragged = {
          positions: Tensor.from(flat.length ? flat : new Int32Array(0), { shape: [flat.length], dtype: 'i32', device: 'cpu' }),
          indptr: Tensor.from(indptr, { shape: [pairs + 1], dtype: 'i32', device: 'cpu' }),
        };
        const rref = refAttention(p.q.ref, p.k.ref, p.v.ref, { seqLens: p.seqLens, selection: (b, h) => rlists[b * p.Hkv + h] });
        const rres = decode.sparseAttention(p.q.t, p.k.t, p.v.t, { layout, seqLens: p.seqLens, positions: ragged, returnLse: true });
        checkAgainstRef(p, rres, rref, 'ragged');

        // blocks of an odd size, the last one partial, -1 padding
        const bs = rng.int(3, 17);
        const nbAll = Math.ceil(p.N / bs);
        const nb = rng.int(1, nbAll);
        const blocks = new Int32Array(pairs * nb);
        const blists: number[][] = [];
        for (let i = 0; i < pairs; i++) {
          const ids = rng.sample(nbAll, nb).sort((a, b) => a - b);
          if (nb > 1 && rng.int(0, 1) === 1) ids[nb - 1] = -1;
          blocks.set(ids, i * nb);
          blists.push(ids.flatMap((c) => (c < 0 ? [] : Array.from({ length: bs }, (_, x) => c * bs + x).filter((j) => j < p.N))));
        }
        const bref = refAttention(p.q.ref, p.k.ref, p.v.ref, { seqLens: p.seqLens, selection: (b, h) => blists[b * p.Hkv + h] });
        const bres = decode.sparseAttention(p.q.t, p.k.t, p.v.t, {
          layout, seqLens: p.seqLens, blocks: Tensor.from(blocks, { shape: [p.B, p.Hkv, nb], dtype: 'i32', device: 'cpu' }), blockSize: bs, returnLse: true,
        });
        checkAgainstRef(p, bres, bref, `blocks bs ${bs}`);
      }
    });
  }

  it('over every position equals dense attention', () => {
    const rng = testRng();
    const p = problem(rng, 'f32', 'bshd', { N: 333, D: 64, G: 8, T: 4 });
    const pos = new Int32Array(p.B * p.Hkv * p.N).map((_, i) => i % p.N);
    const sparse = decode.sparseAttention(p.q.t, p.k.t, p.v.t, { layout: 'bshd', seqLens: p.seqLens, positions: Tensor.from(pos, { shape: [p.B, p.Hkv, p.N], dtype: 'i32', device: 'cpu' }), returnLse: true });
    const dense = decode.attention(p.q.t, p.k.t, p.v.t, { layout: 'bshd', seqLens: p.seqLens, returnLse: true });
    expectClose(sparse.out.toArray(), dense.out.toArray(), { rtol: 1e-5, atol: 1e-7 });
    expectClose(sparse.lse!.toArray(), dense.lse!.toArray(), { rtol: 1e-6, atol: 1e-6 });
  });

  it('gives out 0 and lse -Infinity to a query that sees no selected key', () => {
    const rng = testRng();
    const p = problem(rng, 'f32', 'bhsd', { B: 1, Hkv: 1, G: 4, N: 20, T: 2, D: 8, seqLens: false });
    // key 19 is visible to the last query only; -5 and 40 name no key
    const pos = Tensor.from(Int32Array.of(-5, 19, 40), { shape: [1, 1, 3], dtype: 'i32', device: 'cpu' });
    const res = decode.sparseAttention(p.q.t, p.k.t, p.v.t, { positions: pos, returnLse: true });
    const out = res.out.toArray();
    const lse = res.lse!.toArray();
    for (let h = 0; h < 4; h++) {
      expect(lse[h * 2]).toBe(-Infinity);
      expect(Array.from(out.subarray(h * 16, h * 16 + 8))).toEqual(new Array(8).fill(0));
      expect(Number.isFinite(lse[h * 2 + 1])).toBe(true);
    }
    checkAgainstRef(p, res, refAttention(p.q.ref, p.k.ref, p.v.ref, { selection: () => [-5, 19, 40] }), 'empty');
  });

  it('rejects bad selections naming the argument', () => {
    const p = problem(testRng(), 'f32', 'bhsd', { B: 1, Hkv: 2, G: 1, N: 16, T: 1, D: 8 });
    const op = 'decode.sparseAttention';
    const E = 'ERR_INVALID_ARG';
    const pos = Tensor.zeros([1, 2, 4], 'i32', 'cpu');
    expectKvsiftError(() => decode.sparseAttention(p.q.t, p.k.t, p.v.t, {}), E, `${op}: expected exactly one of positions and blocks for options, but received neither`);
    expectKvsiftError(() => decode.sparseAttention(p.q.t, p.k.t, p.v.t, { positions: pos, blocks: pos, blockSize: 2 }), E,
      `${op}: expected exactly one of positions and blocks for options, but received both`);
    expectKvsiftError(() => decode.sparseAttention(p.q.t, p.k.t, p.v.t, { positions: Tensor.zeros([1, 3, 4], 'i32', 'cpu') }), E,
      `${op}: expected an i32 tensor [1, 2, k] for options.positions, but received i32 [1, 3, 4]`);
    expectKvsiftError(() => decode.sparseAttention(p.q.t, p.k.t, p.v.t, { positions: Tensor.zeros([1, 2, 4], 'f32', 'cpu') }), E,
      `${op}: expected an i32 tensor [1, 2, k] for options.positions, but received f32 [1, 2, 4]`);
    expectKvsiftError(() => decode.sparseAttention(p.q.t, p.k.t, p.v.t, { blocks: pos }), E,
      `${op}: expected an integer in [1, 2147483647] for options.blockSize, but received undefined`);
    expectKvsiftError(() => decode.sparseAttention(p.q.t, p.k.t, p.v.t, { positions: { positions: Tensor.zeros([5], 'i32', 'cpu'), indptr: Tensor.zeros([2], 'i32', 'cpu') } }), E,
      `${op}: expected an i32 tensor [3] for options.positions.indptr, but received i32 [2]`);
  });
});

describeCuda('decode cuda', () => {
  const dev = cudaDevices()[0];
  // Small shapes: the suite also runs on the emulated device. Every head-dim path is met across
  // the cases (D 40 and 256 generic, 64 and 128 the fast ones), with several splits per row.
  CASES.forEach(({ layout, dtype }, ci) => {
    const D = [40, 64, 128, 256, 128, 64][ci];
    it(`attention, accumulation and sparse attention match the CPU backend, ${layout} ${dtype}, D ${D}`, () => {
      const rng = testRng();
      {
        const p = problem(rng, dtype, layout, { D, N: rng.int(300, 900), B: rng.int(1, 2), Hkv: rng.int(1, 2) });
        const onDev = (t: Tensor) => t.to(dev);
        const init = rng.uniformArray(p.B * p.Hkv * p.N, 0, 2);
        const seed = rng.u32();
        const acc = (device: Device) => Tensor.from(init, { shape: [p.B, p.Hkv, p.N], dtype: 'f32', device });
        for (const method of ['h2o', 'keyformer'] as const) {
          const sc = acc('cpu');
          const sg = acc(dev);
          const spec = method === 'h2o' ? { method } : { method, tau: 1.7, seed, step: 5 };
          const c = decode.attention(p.q.t, p.k.t, p.v.t, { layout, seqLens: p.seqLens, returnLse: true, accumulate: { scores: sc, ...spec } });
          const g = decode.attention(onDev(p.q.t), onDev(p.k.t), onDev(p.v.t), { layout, seqLens: p.seqLens, returnLse: true, accumulate: { scores: sg, ...spec } });
          expectClose(g.out.toArray(), c.out.toArray(), { ...outTol(dtype), label: `${method} D ${D} out` });
          expectClose(g.lse!.toArray(), c.lse!.toArray(), { ...LSE_TOL, label: `${method} D ${D} lse` });
          expectClose(sg.toArray(), sc.toArray(), { rtol: 1e-5, atol: 1e-6, label: `${method} D ${D} scores` });
        }
        const bs = 16;
        const nbAll = Math.ceil(p.N / bs);
        const nb = Math.min(nbAll, 5);
        const blocks = new Int32Array(p.B * p.Hkv * nb);
        for (let i = 0; i < p.B * p.Hkv; i++) blocks.set(rng.sample(nbAll, nb).sort((a, b) => a - b), i * nb);
        const bt = Tensor.from(blocks, { shape: [p.B, p.Hkv, nb], dtype: 'i32', device: 'cpu' });
        const c = decode.sparseAttention(p.q.t, p.k.t, p.v.t, { layout, seqLens: p.seqLens, blocks: bt, blockSize: bs, returnLse: true });
        const g = decode.sparseAttention(onDev(p.q.t), onDev(p.k.t), onDev(p.v.t), { layout, seqLens: p.seqLens, blocks: bt.to(dev), blockSize: bs, returnLse: true });
        expectClose(g.out.toArray(), c.out.toArray(), { ...outTol(dtype), label: `sparse D ${D} out` });
        expectClose(g.lse!.toArray(), c.lse!.toArray(), { ...LSE_TOL, label: `sparse D ${D} lse` });
        // ragged positions (CSR), one pair empty, a few past the causal limit
        const pairs = p.B * p.Hkv;
        const indptr = new Int32Array(pairs + 1);
        const lists: number[][] = [];
        for (let i = 0; i < pairs; i++) {
          const n = i === 0 ? 0 : rng.int(1, 40);
          lists.push(rng.sample(p.N, n).sort((x, y) => x - y));
          indptr[i + 1] = indptr[i] + n;
        }
        const flat = Int32Array.from(lists.flat());
        const mk = (device: Device) => ({
          positions: Tensor.from(flat, { shape: [flat.length], dtype: 'i32', device }),
          indptr: Tensor.from(indptr, { shape: [pairs + 1], dtype: 'i32', device }),
        });
        const rc = decode.sparseAttention(p.q.t, p.k.t, p.v.t, { layout, seqLens: p.seqLens, positions: mk('cpu'), returnLse: true });
        const rg = decode.sparseAttention(onDev(p.q.t), onDev(p.k.t), onDev(p.v.t), { layout, seqLens: p.seqLens, positions: mk(dev), returnLse: true });
        expectClose(rg.out.toArray(), rc.out.toArray(), { ...outTol(dtype), label: `ragged D ${D} out` });
        expectClose(rg.lse!.toArray(), rc.lse!.toArray(), { ...LSE_TOL, label: `ragged D ${D} lse` });
      }
    });
  });
});
