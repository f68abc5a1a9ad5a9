/**
 * Keyformer (docs/ALGORITHMS.md, "Keyformer"): the Philox4x32-10 reference against the Random123
 * known answers; then one case table each of keyformer.gumbel, keyformer.accumulate (plain softmax
 * and Gumbel-perturbed, every layout x dtype, GQA, causal T, seqLens) and keyformer.select, run on
 * every backend: the CPU backend against the float64 references in reference/, a CUDA device
 * against the CPU backend on the same inputs; the noise's statistics, the tau schedule and
 * argument validation.
 */
import { describe, expect, it } from 'vitest';
import { keyformer, Tensor, type Device, type DType } from '../lib/index';
import {
  describeEachDevice,
  expectClose,
  expectIdentical,
  expectKvsiftError,
  expectSameBytes,
  LAYOUT_DTYPES,
  qkCaches,
  testRng,
  tolerance,
  type AttentionDims,
  type Rng,
} from './helpers';
import { accumulate as refAccumulate, selectRecent, tau as refTau } from '../reference/keyformer';
import { type Cache4, type Layout } from '../reference/layout';
import { gumbelFromBits, gumbelGrid, mulhilo32, mulhilo32BigInt, philox4x32_10, philoxBits, uniformFromBits } from '../reference/philox';

const U64_MAX = (1n << 64n) - 1n;

/**
 * Accumulate vs. a direct float64 softmax sum: the kernel works in f32 on inputs already rounded
 * to the dtype, so the only error is f32 arithmetic (a few 1e-7 on logits of order 1 and on
 * scores of order 1-10).
 */
const ACC_TOL = { rtol: 1e-6, atol: 1e-6 };

function f32Bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** A random uint64 as a bigint, with the high word populated. */
function randomU64(rng: Rng): bigint {
  return (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
}

interface AccProblem extends AttentionDims {
  q: { t: Tensor; ref: Cache4 };
  k: { t: Tensor; ref: Cache4 };
  /** q and k on the CPU backend (the same tensors when the device is the CPU) */
  cpu: { q: Tensor; k: Tensor };
  init: Float32Array;
  seqLens: number[];
}

/**
 * Odd sizes, GQA groups of 1-3, T >= 1 queries, random initial scores and short rows; small on the
 * CPU (the float64 reference), larger on CUDA (several blocks, the fast paths' head dims).
 */
function accProblem(rng: Rng, dtype: DType, layout: Layout, device: Device = 'cpu'): AccProblem {
  const big = device !== 'cpu';
  const Hkv = rng.int(1, 3);
  const Hq = Hkv * rng.int(1, 3);
  const B = rng.int(1, 3);
  const N = big ? rng.int(200, 900) : rng.int(7, 61);
  const T = rng.int(1, Math.min(5, N));
  const D = big ? [64, 128, 80][rng.int(0, 2)] : rng.int(1, 33);
  const { q, k, cpu } = qkCaches(rng, { B, Hq, Hkv, T, N, D }, dtype, layout, device);
  const init = rng.uniformArray(B * Hkv * N, 0, 3);
  const seqLens = Array.from({ length: B }, () => rng.int(T, N));
  seqLens[rng.int(0, B - 1)] = N;
  return { B, Hq, Hkv, T, N, D, q, k, cpu, init, seqLens };
}

describe('the Philox4x32-10 reference (reference/philox.js)', () => {
  it('reproduces the Random123 known-answer vectors', () => {
    expect(philox4x32_10([0, 0, 0, 0], [0, 0])).toEqual([0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    expect(philox4x32_10([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])).toEqual([
      0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd,
    ]);
    expect(philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])).toEqual([
      0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1,
    ]);
  });

  it('multiplies 32x32 -> 64 exactly (against BigInt)', () => {
    const rng = testRng();
    const edge = [0, 1, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0xd2511f53, 0xcd9e8d57];
    for (const a of edge) for (const b of edge) expect(mulhilo32(a, b)).toEqual(mulhilo32BigInt(a, b));
    const bad: string[] = [];
    for (let i = 0; i < 20000; i++) {
      const a = rng.u32();
      const b = rng.u32();
      const [lo, hi] = mulhilo32(a, b);
      const [lo2, hi2] = mulhilo32BigInt(a, b);
      if (lo !== lo2 || hi !== hi2) bad.push(`${a} * ${b}`);
    }
    expect(bad).toEqual([]);
  });

  it("packs (seed, step, b*H+h, t, j) as common/philox.h does", () => {
    const seed = 0x0123456789abcdefn;
    const step = 0xfedcba9876543210n;
    // counter {j, t, bh, step lo}, key {seed lo, seed hi ^ step hi}
    const want = philox4x32_10([7, 3, 11, 0x76543210], [0x89abcdef, (0x01234567 ^ 0xfedcba98) >>> 0])[0];
    expect(philoxBits(seed, step, 11, 3, 7)).toBe(want);
    expect(philoxBits(5, 9, 0, 0, 0)).toBe(philox4x32_10([0, 0, 0, 9], [5, 0])[0]);
    expect(philoxBits(5n, 9n, 0, 0, 0)).toBe(philoxBits(5, 9, 0, 0, 0));
  });

  it('maps bits to an open-interval uniform and to Gumbel noise rounded once to f32', () => {
    expect(uniformFromBits(0)).toBe(2 ** -24);
    expect(uniformFromBits(0xffffffff)).toBe(1 - 2 ** -24);
    expect(uniformFromBits(0x1ff)).toBe(2 ** -24); // the low 9 bits are dropped
    expect(uniformFromBits(0x80000000)).toBe(0.5 + 2 ** -24);
    expect(gumbelFromBits(0)).toBe(Math.fround(-Math.log(-Math.log(2 ** -24))));
    expect(gumbelFromBits(0xffffffff)).toBe(Math.fround(-Math.log(-Math.log(1 - 2 ** -24))));
    for (const b of [0, 0x12345678, 0xffffffff]) expect(Math.fround(gumbelFromBits(b))).toBe(gumbelFromBits(b));
  });
});

describeEachDevice('keyformer', (device) => {
  const onCpu = device === 'cpu';

  it('gumbel: the TS Philox reference bit for bit (CUDA: the CPU backend), odd shapes, 64-bit seeds and steps', () => {
    const rng = testRng();
    const shape: [number, number, number, number] = onCpu ? [rng.int(1, 3), rng.int(1, 5), rng.int(1, 4), rng.int(101, 1999)] : [2, rng.int(1, 9), rng.int(1, 3), rng.int(1000, 3000)];
    const cases: [number | bigint, number | bigint][] = [
      [0, 0],
      [rng.u32(), rng.int(0, 10000)],
      [randomU64(rng), randomU64(rng)],
      [U64_MAX, U64_MAX],
      [U64_MAX, 0n],
      [Number.MAX_SAFE_INTEGER, 2 ** 32 + 1],
    ];
    for (const [seed, step] of cases) {
      const g = keyformer.gumbel(shape, { seed, step, device });
      expect(g.shape).toEqual(shape);
      expect(g.dtype).toBe('f32');
      expect(g.device).toBe(device);
      const want = onCpu ? gumbelGrid(shape, seed, step) : (keyformer.gumbel(shape, { seed, step, device: 'cpu' }).toArray() as Float32Array);
      expectSameBytes(g.toArray() as Float32Array, want, `seed ${seed}, step ${step}`);
      g.dispose();
    }
    expectSameBytes(keyformer.gumbel([1, 2, 1, 777], { seed: 9, step: 4, device }).toArray() as Float32Array, gumbelGrid([1, 2, 1, 777], 9, 4));
  });

  for (const { layout, dtype } of LAYOUT_DTYPES) {
    for (const noise of ['none', 'gumbel'] as const) {
      it(`accumulate, noise '${noise}', ${layout} ${dtype}: in place, GQA, causal T, seqLens`, () => {
        const rng = testRng();
        const p = accProblem(rng, dtype, layout, device);
        const seed = rng.int(0, 1) ? randomU64(rng) : rng.u32();
        const step = rng.int(0, 1) ? randomU64(rng) : rng.int(0, 1000);
        const tau = noise === 'gumbel' ? keyformer.tau(rng.int(0, 64), { maxNewTokens: 64 }) : rng.uniform(0.5, 2);
        // gumbel is the default: it goes without the option
        const opts = { tau, seed, step, layout, ...(noise === 'none' ? { noise } : {}) };
        const shape = [p.B, p.Hkv, p.N];
        for (const seqLens of [undefined, p.seqLens]) {
          const scores = Tensor.from(p.init, { shape, device });
          const ret = keyformer.accumulate(p.q.t, p.k.t, scores, { ...opts, seqLens });
          expect(ret).toBe(scores);
          const got = scores.toArray() as Float32Array;
          if (onCpu) {
            const want = refAccumulate(p.q.ref, p.k.ref, p.init, { tau, noise, seed, step, seqLens });
            expectClose(got, want, { ...ACC_TOL, shape });
            if (noise === 'none') {
              // the increments alone: each (b, hq, t) row of softmax sums to 1, so the row total is G*T
              const G = p.Hq / p.Hkv;
              for (let b = 0; b < p.B; b++) {
                let total = 0;
                for (let i = b * p.Hkv * p.N; i < (b + 1) * p.Hkv * p.N; i++) total += got[i] - p.init[i];
                expect(Math.abs(total - p.Hkv * G * p.T)).toBeLessThan(1e-4 * p.Hkv * G * p.T);
              }
            } else {
              // and not the noiseless result
              const plain = refAccumulate(p.q.ref, p.k.ref, p.init, { tau, noise: 'none', seqLens });
              expect(got.some((v, i) => Math.abs(v - plain[i]) > 1e-3)).toBe(true);
            }
          } else {
            const cpu = Tensor.from(p.init, { shape, device: 'cpu' });
            keyformer.accumulate(p.cpu.q, p.cpu.k, cpu, { ...opts, seqLens });
            expectClose(got, cpu.toArray(), { ...tolerance(dtype), shape, label: `${noise}${seqLens ? ' seqLens' : ''}` });
            cpu.dispose();
          }
          if (seqLens) {
            // padding past each row's length is never touched
            for (let b = 0; b < p.B; b++)
              for (let h = 0; h < p.Hkv; h++)
                for (let j = seqLens[b]; j < p.N; j++) {
                  const i = (b * p.Hkv + h) * p.N + j;
                  expect(Object.is(got[i], p.init[i])).toBe(true);
                }
          }
          scores.dispose();
        }
      });
    }
  }

  it('select: the recent window plus the top scores, ties to the lower position, NaN last, seqLens', () => {
    const rng = testRng();
    for (let rep = 0; rep < (onCpu ? 6 : 1); rep++) {
      const [B, H, N] = onCpu ? [rng.int(1, 3), rng.int(1, 4), rng.int(5, 97)] : [2, 8, rng.int(1500, 3000)];
      const capacity = onCpu ? rng.int(1, N) : rng.int(100, Math.min(2048, N));
      const recent = onCpu ? rng.int(0, capacity) : rng.int(0, 128);
      // few distinct values, so ties are common; a few NaNs rank last
      const scores = Float32Array.from({ length: B * H * N }, () => (rng.float() < (onCpu ? 0.03 : 0.001) ? NaN : rng.int(0, onCpu ? 9 : 999) / (onCpu ? 4 : 8)));
      const lens = Array.from({ length: B }, (_, b) => (b === 0 && !onCpu ? N : rng.int(capacity, N)));
      const t = Tensor.from(scores, { shape: [B, H, N], device });
      const cpu = onCpu ? t : Tensor.from(scores, { shape: [B, H, N], device: 'cpu' });
      for (const seqLens of [undefined, lens]) {
        const pos = keyformer.select(t, { capacity, recent, seqLens });
        expect(pos.shape).toEqual([B, H, capacity]);
        expect(pos.dtype).toBe('i32');
        const got = pos.toArray() as Int32Array;
        const want = onCpu ? selectRecent(scores, B, H, N, { capacity, recent, seqLens }) : keyformer.select(cpu, { capacity, recent, seqLens }).toArray();
        expectIdentical(got, want, `B=${B} H=${H} N=${N} C=${capacity} R=${recent}`);
        for (let b = 0; b < B; b++) {
          const L = seqLens ? seqLens[b] : N;
          for (let h = 0; h < H; h++) {
            const row = Array.from(got.subarray((b * H + h) * capacity, (b * H + h + 1) * capacity));
            for (let j = L - recent; j < L; j++) expect(row).toContain(j);
          }
        }
      }
      // select never writes its input
      expectIdentical(t.toArray(), scores);
    }
  });
});

describe('keyformer.gumbel: statistics, replay and validation', () => {
  it('has the Gumbel(0, 1) mean (0.5772) and variance (pi^2/6) over 10^6 draws', () => {
    const rng = testRng();
    const n = 1_000_000;
    const g = keyformer.gumbel([2, 4, 1, n / 8], { seed: randomU64(rng), step: rng.int(0, 1 << 20), device: 'cpu' }).toArray();
    let sum = 0;
    for (let i = 0; i < n; i++) sum += g[i];
    const mean = sum / n;
    let m2 = 0;
    for (let i = 0; i < n; i++) m2 += (g[i] - mean) ** 2;
    const variance = m2 / (n - 1);
    const euler = 0.5772156649015329;
    const var0 = Math.PI ** 2 / 6;
    // standard errors: sqrt(var / n) for the mean; sqrt((mu4 - var^2) / n) with Gumbel's
    // excess kurtosis 12/5 (mu4 = 5.4 var^2) for the variance. Five of each.
    expect(Math.abs(mean - euler)).toBeLessThan(5 * Math.sqrt(var0 / n));
    expect(Math.abs(variance - var0)).toBeLessThan(5 * Math.sqrt((4.4 * var0 * var0) / n));
    for (let i = 0; i < n; i++) if (!Number.isFinite(g[i])) throw new Error(`non-finite draw ${g[i]} at ${i}`);
  });

  it('is identical for an identical (seed, step) and different for another seed or step', () => {
    const rng = testRng();
    const shape = [2, 3, 2, 257];
    const seed = randomU64(rng);
    const step = randomU64(rng);
    const draw = (s: number | bigint, t: number | bigint) => f32Bits(keyformer.gumbel(shape, { seed: s, step: t, device: 'cpu' }).toArray() as Float32Array);
    const base = draw(seed, step);
    expectIdentical(draw(seed, step), base);
    const differs = (other: Uint32Array) => other.some((v, i) => v !== base[i]);
    expect(differs(draw(seed ^ 1n, step))).toBe(true); // low seed word: key 0
    expect(differs(draw(seed ^ (1n << 40n), step))).toBe(true); // high seed word: key 1
    expect(differs(draw(seed, step ^ 1n))).toBe(true); // low step word: counter 3
    expect(differs(draw(seed, step ^ (1n << 50n)))).toBe(true); // high step word: key 1
    // a number and a bigint of the same value draw the same noise
    expectIdentical(draw(123456789, 42), draw(123456789n, 42n));
    expectIdentical(draw(2 ** 40 + 3, 2 ** 33), draw(2n ** 40n + 3n, 2n ** 33n));
  });

  it('rejects bad seeds, steps and shapes naming the argument', () => {
    const op = 'keyformer.gumbel';
    const g = (shape: number[], seed: unknown, step: unknown) => () => keyformer.gumbel(shape, { seed, step, device: 'cpu' } as never);
    expectKvsiftError(g([1, 1, 1, 4], -1, 0), 'ERR_INVALID_ARG', `${op}: expected an integer >= 0 for options.seed, but received -1`);
    expectKvsiftError(g([1, 1, 1, 4], 1.5, 0), 'ERR_INVALID_ARG', `${op}: expected an integer >= 0 for options.seed, but received 1.5`);
    expectKvsiftError(g([1, 1, 1, 4], 1n << 64n, 0), 'ERR_INVALID_ARG', `${op}: expected an integer in [0, 2^64) for options.seed, but received 18446744073709551616n`);
    expectKvsiftError(g([1, 1, 1, 4], -1n, 0), 'ERR_INVALID_ARG', `${op}: expected an integer in [0, 2^64) for options.seed, but received -1n`);
    expectKvsiftError(g([1, 1, 1, 4], 0, NaN), 'ERR_INVALID_ARG', `${op}: expected an integer >= 0 for options.step, but received NaN`);
    expectKvsiftError(g([1, 1, 1, 4], 0, '3'), 'ERR_INVALID_ARG', `${op}: expected an integer >= 0 for options.step, but received '3'`);
    expectKvsiftError(g([1, 1, 1, 4], 0, undefined), 'ERR_INVALID_ARG', `${op}: expected an integer >= 0 for options.step, but received undefined`);
    expectKvsiftError(g([1, 1, 4], 0, 0), 'ERR_INVALID_ARG', `${op}: expected a 4-D shape [B, H, T, N] for shape, but received an array of length 3`);
    expectKvsiftError(g([1, 1, -1, 4], 0, 0), 'ERR_INVALID_ARG', `${op}: expected a non-negative integer below 2^31 for shape[2], but received -1`);
  });
});

describe('keyformer.tau', () => {
  it('rises linearly from tauInit at step 0 to tauEnd at maxNewTokens', () => {
    expect(keyformer.tau(0, { maxNewTokens: 100 })).toBe(1);
    expect(keyformer.tau(100, { maxNewTokens: 100 })).toBe(2);
    expect(keyformer.tau(50, { maxNewTokens: 100 })).toBe(1.5);
    const rng = testRng();
    for (let i = 0; i < 50; i++) {
      const o = { tauInit: rng.uniform(0.1, 3), tauEnd: rng.uniform(0.1, 3), maxNewTokens: rng.int(1, 4096) };
      expect(keyformer.tau(0, o)).toBe(o.tauInit);
      expect(keyformer.tau(o.maxNewTokens, o)).toBeCloseTo(o.tauEnd, 12);
      const s = rng.int(0, o.maxNewTokens - 1);
      expect(keyformer.tau(s, o)).toBeCloseTo(refTau(s, o), 12);
      // linear: equal steps give equal increments, up to maxNewTokens
      const a = keyformer.tau(s + 1, o) - keyformer.tau(s, o);
      expect(a).toBeCloseTo((o.tauEnd - o.tauInit) / o.maxNewTokens, 12);
      // held at tauEnd afterwards
      expect(keyformer.tau(o.maxNewTokens + 1 + s, o)).toBeCloseTo(o.tauEnd, 12);
    }
  });

  it('rejects bad schedules naming the argument', () => {
    const op = 'keyformer.tau';
    expectKvsiftError(() => keyformer.tau(0, { maxNewTokens: 0 }), 'ERR_INVALID_ARG', `${op}: expected a number > 0 for options.maxNewTokens, but received 0`);
    expectKvsiftError(() => keyformer.tau(0, { maxNewTokens: 10, tauInit: 0 }), 'ERR_INVALID_ARG', `${op}: expected a number > 0 for options.tauInit, but received 0`);
    expectKvsiftError(() => keyformer.tau(0, { maxNewTokens: 10, tauEnd: -2 }), 'ERR_INVALID_ARG', `${op}: expected a number > 0 for options.tauEnd, but received -2`);
    expectKvsiftError(() => keyformer.tau(-1, { maxNewTokens: 10 }), 'ERR_INVALID_ARG', `${op}: expected a number >= 0 for step, but received -1`);
    expectKvsiftError(() => keyformer.tau(NaN, { maxNewTokens: 10 }), 'ERR_INVALID_ARG', `${op}: expected a finite number for step, but received NaN`);
  });
});

describe('keyformer.accumulate: causality, replay and validation', () => {
  it('keeps per-key attention causal: the step\'s first query sees none of the later tokens', () => {
    // T = N: query t sees keys 0..t, so key N-1 is seen by the last query only
    const rng = testRng();
    const [N, D] = [9, 4];
    const q = Tensor.from(rng.normalArray(N * D), { shape: [1, 1, N, D], device: 'cpu' });
    const k = Tensor.from(rng.normalArray(N * D), { shape: [1, 1, N, D], device: 'cpu' });
    const s = Tensor.zeros([1, 1, N], 'f32', 'cpu');
    keyformer.accumulate(q, k, s, { tau: 1, seed: 0, step: 0, noise: 'none' });
    const got = s.toArray();
    // key 0 gets the whole of query 0's attention plus a share of every other query's
    expect(got[0]).toBeGreaterThanOrEqual(1 - 1e-6);
    expect(got[N - 1]).toBeLessThanOrEqual(1 + 1e-6);
    let total = 0;
    for (const v of got) total += v;
    expect(total).toBeCloseTo(N, 4);
  });

  it('replays: the same (seed, step) adds the same bits, another seed or step does not', () => {
    const rng = testRng();
    const p = accProblem(rng, 'f32', 'bhsd');
    const run = (seed: number | bigint, step: number | bigint) => {
      const s = Tensor.zeros([p.B, p.Hkv, p.N], 'f32', 'cpu');
      keyformer.accumulate(p.q.t, p.k.t, s, { tau: 1.3, seed, step });
      return f32Bits(s.toArray() as Float32Array);
    };
    const seed = randomU64(rng);
    const base = run(seed, 17);
    expectIdentical(run(seed, 17), base);
    expectIdentical(run(seed, 17n), base);
    expect(run(seed ^ 2n, 17).some((v, i) => v !== base[i])).toBe(true);
    expect(run(seed, 18).some((v, i) => v !== base[i])).toBe(true);
  });

  it('rejects bad input naming the argument, leaving scores unchanged', () => {
    const op = 'keyformer.accumulate';
    const q = Tensor.zeros([1, 4, 2, 8], 'f32', 'cpu');
    const k = Tensor.zeros([1, 2, 5, 8], 'f32', 'cpu');
    const init = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const scores = Tensor.from(init, { shape: [1, 2, 5], device: 'cpu' });
    const ok = { tau: 1, seed: 1, step: 1 };
    const check = (fn: () => unknown, code: string, message: string | RegExp) => {
      expectKvsiftError(fn, code, message);
      expectIdentical(scores.toArray(), init, 'scores after a failed op');
    };
    const acc = (qq: unknown, kk: unknown, ss: unknown, o: unknown) => () => keyformer.accumulate(qq as Tensor, kk as Tensor, ss as Tensor, o as never);
    check(acc(q, k, scores, { ...ok, tau: 0 }), 'ERR_INVALID_ARG', `${op}: expected a number > 0 for options.tau, but received 0`);
    check(acc(q, k, scores, { ...ok, tau: -0.5 }), 'ERR_INVALID_ARG', `${op}: expected a number > 0 for options.tau, but received -0.5`);
    check(acc(q, k, scores, { ...ok, tau: Infinity }), 'ERR_INVALID_ARG', `${op}: expected a finite number for options.tau, but received Infinity`);
    check(acc(q, k, scores, { ...ok, seed: -3 }), 'ERR_INVALID_ARG', `${op}: expected an integer >= 0 for options.seed, but received -3`);
    check(acc(q, k, scores, { ...ok, seed: 0.5 }), 'ERR_INVALID_ARG', `${op}: expected an integer >= 0 for options.seed, but received 0.5`);
    check(acc(q, k, scores, { ...ok, seed: 1n << 64n }), 'ERR_INVALID_ARG', /options\.seed, but received 18446744073709551616n$/);
    check(acc(q, k, scores, { ...ok, step: -1 }), 'ERR_INVALID_ARG', `${op}: expected an integer >= 0 for options.step, but received -1`);
    check(acc(q, k, scores, { ...ok, noise: 'uniform' }), 'ERR_INVALID_ARG', `${op}: expected one of 'gumbel', 'none' for options.noise, but received 'uniform'`);
    check(acc(q, k, scores, { ...ok, layout: 'bhds' }), 'ERR_INVALID_ARG', `${op}: expected one of 'bhsd', 'bshd' for options.layout, but received 'bhds'`);
    check(acc(q, k, scores, { ...ok, seqLens: [1] }), 'ERR_INVALID_ARG', `${op}: expected an integer in [2, 5] for options.seqLens[0], but received 1`);
    check(acc(q, k, scores, null), 'ERR_INVALID_ARG', `${op}: expected an options object for options, but received null`);
    check(acc(q, k, Tensor.zeros([1, 2, 4], 'f32', 'cpu'), ok), 'ERR_INVALID_ARG', `${op}: expected an f32 tensor [1, 2, 5] for scores, but received f32 [1, 2, 4]`);
    check(acc(q, k, Tensor.zeros([1, 2, 5], 'f16', 'cpu'), ok), 'ERR_INVALID_ARG', `${op}: expected an f32 tensor [1, 2, 5] for scores, but received f16 [1, 2, 5]`);
    check(acc(q, k, Tensor.zeros([2, 5], 'f32', 'cpu'), ok), 'ERR_INVALID_ARG', `${op}: expected an f32 tensor [1, 2, 5] for scores, but received f32 [2, 5]`);
    check(acc(Tensor.zeros([1, 3, 2, 8], 'f32', 'cpu'), k, scores, ok), 'ERR_INVALID_ARG', `${op}: expected a head count that is a multiple of the keys' 2 for queries, but received 3`);
    check(acc(Tensor.zeros([1, 4, 6, 8], 'f32', 'cpu'), k, scores, ok), 'ERR_INVALID_ARG', `${op}: expected between 1 and N = 5 query rows for queries, but received 6`);
    check(acc(Tensor.zeros([1, 4, 2, 8], 'f16', 'cpu'), k, scores, ok), 'ERR_INVALID_ARG', `${op}: expected the keys' dtype 'f32' for queries.dtype, but received 'f16'`);
    check(acc(Tensor.zeros([1, 4, 2, 7], 'f32', 'cpu'), k, scores, ok), 'ERR_INVALID_ARG', `${op}: expected head dim 8 (the keys') for queries, but received 7`);
    check(acc(Tensor.zeros([2, 4, 2, 8], 'f32', 'cpu'), k, scores, ok), 'ERR_INVALID_ARG', `${op}: expected batch 1 (the keys') for queries, but received 2`);
    check(acc(q, [1, 2], scores, ok), 'ERR_INVALID_ARG', `${op}: expected a Tensor for keys, but received an array of length 2`);
    check(acc(q, k, init, ok), 'ERR_INVALID_ARG', `${op}: expected a Tensor for scores, but received a Float32Array of length 10`);
    check(acc(undefined, k, scores, ok), 'ERR_INVALID_ARG', `${op}: expected a Tensor for queries, but received undefined`);
    const gone = Tensor.zeros([1, 2, 5, 8], 'f32', 'cpu');
    gone.dispose();
    check(acc(q, gone, scores, ok), 'ERR_DISPOSED', `${op}: keys is disposed`);
    const goneScores = Tensor.zeros([1, 2, 5], 'f32', 'cpu');
    goneScores.dispose();
    check(acc(q, k, goneScores, ok), 'ERR_DISPOSED', `${op}: scores is disposed`);
  });
});

describe('keyformer.select: edge cases and validation', () => {
  it('keeps everything when capacity = N', () => {
    const t = Tensor.from(new Float32Array([3, 1, 2, 5, 4]), { shape: [1, 1, 5], device: 'cpu' });
    expectIdentical(keyformer.select(t, { capacity: 5, recent: 2 }).toArray(), [0, 1, 2, 3, 4]);
    expectIdentical(keyformer.select(t, { capacity: 2, recent: 1 }).toArray(), [3, 4]);
    expectIdentical(keyformer.select(t, { capacity: 2, recent: 0 }).toArray(), [3, 4]);
    expectIdentical(keyformer.select(t, { capacity: 3, recent: 2 }).toArray(), [0, 3, 4]);
  });

  it('rejects bad input naming the argument', () => {
    const op = 'keyformer.select';
    const s = Tensor.zeros([1, 2, 10], 'f32', 'cpu');
    // capacity >= N keeps every token (issue 12: one meaning for every op; test/first-hour.test.ts)
    expect(keyformer.select(s, { capacity: 11, recent: 0 }).shape.at(-1)).toBe(10);
    expectKvsiftError(() => keyformer.select(s, { capacity: 4, recent: 5 }), 'ERR_INVALID_ARG', `${op}: expected an integer in [0, 4] for options.recent, but received 5`);
    expectKvsiftError(() => keyformer.select(s, { capacity: 4 } as never), 'ERR_INVALID_ARG', `${op}: expected an integer in [0, 4] for options.recent, but received undefined`);
    expectKvsiftError(() => keyformer.select(s, { capacity: 0, recent: 0 }), 'ERR_INVALID_ARG', `${op}: expected an integer in [1, 2147483647] for options.capacity, but received 0`);
    expectKvsiftError(() => keyformer.select(s, { capacity: 4, recent: 0, seqLens: [3] }), 'ERR_INVALID_ARG', `${op}: expected an integer in [4, 10] for options.seqLens[0], but received 3`);
    expectKvsiftError(() => keyformer.select(Tensor.zeros([1, 2, 10], 'i32', 'cpu'), { capacity: 4, recent: 0 }), 'ERR_INVALID_ARG', `${op}: expected an f32 tensor [B, H, N] for scores, but received i32 [1, 2, 10]`);
    expectKvsiftError(() => keyformer.select(Tensor.zeros([2, 10], 'f32', 'cpu'), { capacity: 4, recent: 0 }), 'ERR_INVALID_ARG', `${op}: expected an f32 tensor [B, H, N] for scores, but received f32 [2, 10]`);
    expectKvsiftError(() => keyformer.select(42 as unknown as Tensor, { capacity: 4, recent: 0 }), 'ERR_INVALID_ARG', `${op}: expected a Tensor for scores, but received 42`);
    const gone = Tensor.zeros([1, 2, 10], 'f32', 'cpu');
    gone.dispose();
    expectKvsiftError(() => keyformer.select(gone, { capacity: 4, recent: 0 }), 'ERR_DISPOSED', `${op}: scores is disposed`);
  });
});
