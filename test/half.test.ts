import { describe, expect, it } from 'vitest';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, Tensor } from '../lib/index';
import { f32ArrayToHalf, halfArrayToF32 } from '../lib/half';
import { allDevices, expectIdentical, expectSameBytes, testRng } from './helpers';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function fromBits(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0];
}

const isF16NaN = (b: number) => (b & 0x7c00) === 0x7c00 && (b & 0x03ff) !== 0;
const isBf16NaN = (b: number) => (b & 0x7f80) === 0x7f80 && (b & 0x007f) !== 0;

/**
 * An independent reference: rounds an f32 value to a binary format with `mantBits` stored
 * mantissa bits and exponent range [minExp, maxExp], by scaling with powers of two (exact in a
 * double) and rounding half to even; returns the bit pattern, or -1 for NaN.
 */
function referenceRound(x: number, mantBits: number, expBits: number): number {
  const bias = (1 << (expBits - 1)) - 1;
  const signBit = 1 << (mantBits + expBits);
  const infBits = ((1 << expBits) - 1) << mantBits;
  if (Number.isNaN(x)) return -1;
  const sign = x < 0 || Object.is(x, -0) ? signBit : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | infBits;
  if (a === 0) return sign;
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  e = Math.max(e, 1 - bias); // below the normal range the spacing stays that of the smallest binade
  const q = a / 2 ** (e - mantBits); // exact; q < 2^(mantBits+1)
  let m = Math.floor(q);
  const rest = q - m;
  if (rest > 0.5 || (rest === 0.5 && m % 2 === 1)) m += 1;
  if (m < 2 ** mantBits) return sign | m; // subnormal (or rounded up to the smallest normal below)
  const bits = ((e + bias) << mantBits) + (m - 2 ** mantBits); // m == 2^(mantBits+1) carries into the exponent
  if (bits >= infBits) return sign | infBits;
  return sign | bits;
}

/** Hand-picked roundings: a value, then the f16 and the bf16 bits it rounds to (null: that format's case list leaves it out). */
const ROUNDINGS: [string, number, number | null, number | null][] = [
  ['0', 0, 0x0000, 0x0000],
  ['-0', -0, 0x8000, 0x8000],
  ['1', 1, 0x3c00, 0x3f80],
  ['-2', -2, 0xc000, 0xc000],
  ['1/3', 1 / 3, 0x3555, null],
  ['65504 (max)', 65504, 0x7bff, null],
  ['65519.99 rounds down to 65504', 65519.99, 0x7bff, null],
  ['65520 (tie at the top) rounds to Inf', 65520, 0x7c00, null],
  ['-65520 rounds to -Inf', -65520, 0xfc00, null],
  ['3.4e38 overflows', 3.4028235e38, 0x7c00, null],
  ['max subnormal 1023 * 2^-24', 1023 * 2 ** -24, 0x03ff, null],
  ['min subnormal 2^-24', 2 ** -24, 0x0001, null],
  ['-2^-24', -(2 ** -24), 0x8001, null],
  ['min normal 2^-14', 2 ** -14, 0x0400, null],
  ['1023.5 * 2^-24 (tie) rounds up to the min normal', 1023.5 * 2 ** -24, 0x0400, null],
  ['2^-25 (tie) rounds to 0', 2 ** -25, 0x0000, null],
  ['-2^-25 (tie) rounds to -0', -(2 ** -25), 0x8000, null],
  ['3 * 2^-25 (tie) rounds to 2 * 2^-24', 3 * 2 ** -25, 0x0002, null],
  ['2^-25 + 2^-40 rounds up', 2 ** -25 + 2 ** -40, 0x0001, null],
  ['2^-26 underflows', 2 ** -26, 0x0000, null],
  ['f32 min subnormal underflows', 1.401298464324817e-45, 0x0000, null],
  ['1 + 2^-11 (tie) rounds to 1', 1 + 2 ** -11, 0x3c00, null],
  ['1 + 3 * 2^-11 (tie) rounds to 1 + 2^-9', 1 + 3 * 2 ** -11, 0x3c02, null],
  ['1 + 2^-11 + 2^-23 rounds up', 1 + 2 ** -11 + 2 ** -23, 0x3c01, null],
  ['2047.5 (tie) rounds to 2048', 2047.5, 0x6800, null],
  ['Infinity', Infinity, 0x7c00, 0x7f80],
  ['-Infinity', -Infinity, 0xfc00, 0xff80],
  ['1 + 2^-8 (tie) rounds to 1', 1 + 2 ** -8, null, 0x3f80],
  ['1 + 3 * 2^-8 (tie) rounds to 1 + 2^-6', 1 + 3 * 2 ** -8, null, 0x3f82],
  ['1 + 2^-8 + 2^-20 rounds up', 1 + 2 ** -8 + 2 ** -20, null, 0x3f81],
  ['max bf16 3.3895314e38 stays', fromBits(0x7f7f0000), null, 0x7f7f],
  ['3.4028235e38 (max f32) rounds to Inf', 3.4028235e38, null, 0x7f80],
  ['-3.4028235e38 rounds to -Inf', -3.4028235e38, null, 0xff80],
  ['just below the overflow tie stays finite', fromBits(0x7f7f7fff), null, 0x7f7f],
  ['the overflow tie rounds to Inf (odd mantissa)', fromBits(0x7f7f8000), null, 0x7f80],
  ['f32 min subnormal rounds to 0', fromBits(0x00000001), null, 0x0000],
  ['subnormal tie rounds to even 0', fromBits(0x00008000), null, 0x0000],
  ['subnormal tie rounds to even 2', fromBits(0x00018000), null, 0x0002],
  ['2^-133 is the min bf16 subnormal', 2 ** -133, null, 0x0001],
];

describe('f32ToF16', () => {
  it('agrees with the reference around every f16 rounding boundary', () => {
    // midpoints between consecutive f16 values, and the f32 neighbours on either side
    for (let b = 0; b < 0x7c00; b++) {
      const lo = f16ToF32(b);
      const hi = b + 1 === 0x7c00 ? 65536 : f16ToF32(b + 1);
      const mid = Math.fround((lo + hi) / 2);
      for (const x of [mid, nextF32(mid, 1), nextF32(mid, -1)]) {
        for (const s of [x, -x]) {
          const want = referenceRound(s, 10, 5);
          const got = f32ToF16(s);
          if (got !== want) throw new Error(`f32ToF16(${s}) = 0x${got.toString(16)}, reference 0x${want.toString(16)}`);
        }
      }
    }
  });
});

/** Widenings: each format's bit patterns and the exact f32 values they stand for; NaN patterns. */
const WIDENINGS = [
  {
    name: 'f16ToF32',
    widen: f16ToF32,
    nans: [0x7c01, 0x7e00, 0x7fff, 0xfc01, 0xfe00],
    cases: [
      [0x0000, 0],
      [0x8000, -0],
      [0x3c00, 1],
      [0xc000, -2],
      [0x3555, 0.333251953125],
      [0x7bff, 65504],
      [0x03ff, 1023 * 2 ** -24],
      [0x0001, 2 ** -24],
      [0x8001, -(2 ** -24)],
      [0x0400, 2 ** -14],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
    ] as [number, number][],
  },
  {
    name: 'bf16ToF32',
    widen: bf16ToF32,
    nans: [0x7f81, 0x7fc0, 0xffff],
    cases: [
      [0x0000, 0],
      [0x8000, -0],
      [0x3f80, 1],
      [0xc000, -2],
      [0x3f82, 1 + 2 ** -6],
      [0x0001, 2 ** -133],
      [0x7f7f, fromBits(0x7f7f0000)],
      [0x7f80, Infinity],
      [0xff80, -Infinity],
    ] as [number, number][],
  },
];

describe.each(WIDENINGS)('$name', (fmt) => {
  it.each(fmt.cases)('0x%s', (bits, value) => {
    expect(Object.is(fmt.widen(bits), value)).toBe(true);
  });

  it('NaN patterns widen to NaN', () => {
    for (const b of fmt.nans) expect(fmt.widen(b)).toBeNaN();
  });
});

/** What f32ToF16 and f32ToBf16 share: NaN stays NaN, and the reference on random bit patterns. */
const FORMATS = [
  { name: 'f32ToF16', column: 2 as const, round: f32ToF16, isNaN: isF16NaN, mantBits: 10, expBits: 5, nans: [NaN, fromBits(0x7f800001), fromBits(0xffc00000), fromBits(0x7fffffff)] },
  // bf16 also when only low mantissa bits are set (a truncation would make those infinities)
  { name: 'f32ToBf16', column: 3 as const, round: f32ToBf16, isNaN: isBf16NaN, mantBits: 7, expBits: 8, nans: [NaN, fromBits(0x7f800001), fromBits(0xff800001), fromBits(0x7fc00000), fromBits(0x7f80ffff)] },
];

describe.each(FORMATS)('$name on every class of f32', (fmt) => {
  it.each(ROUNDINGS.filter((c) => c[fmt.column] !== null))('%s', (_, value, ...bits) => {
    expect(fmt.round(value)).toBe(bits[fmt.column - 2]);
  });

  it('NaN stays NaN', () => {
    for (const nan of fmt.nans) {
      const b = fmt.round(nan);
      expect(fmt.isNaN(b), `0x${b.toString(16)}`).toBe(true);
      expect(b).toBeLessThanOrEqual(0xffff);
    }
  });

  it('agrees with an independent reference on random f32 bit patterns', () => {
    const rng = testRng();
    const xs = rng.bits32AsF32(200_000);
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i];
      const want = referenceRound(x, fmt.mantBits, fmt.expBits);
      const got = fmt.round(x);
      if (want < 0) {
        if (!fmt.isNaN(got)) throw new Error(`${fmt.name}(NaN bits 0x${u32Of(x)}) = 0x${got.toString(16)}`);
      } else if (got !== want) {
        throw new Error(`${fmt.name}(${x}) = 0x${got.toString(16)}, reference 0x${want.toString(16)}`);
      }
    }
  });
});

describe('exhaustive round trips', () => {
  it('every f16 pattern: f16ToF32 is exact in f32 and f32ToF16 gives the pattern back (NaNs stay NaN)', () => {
    for (let b = 0; b < 0x10000; b++) {
      const v = f16ToF32(b);
      if (isF16NaN(b)) {
        expect(v).toBeNaN();
        if (!isF16NaN(f32ToF16(v))) throw new Error(`NaN 0x${b.toString(16)} came back as 0x${f32ToF16(v).toString(16)}`);
        continue;
      }
      if (!Object.is(Math.fround(v), v)) throw new Error(`f16ToF32(0x${b.toString(16)}) = ${v} is not an f32`);
      const back = f32ToF16(v);
      if (back !== b) throw new Error(`0x${b.toString(16)} -> ${v} -> 0x${back.toString(16)}`);
    }
  });

  it('every bf16 pattern: bf16ToF32 then f32ToBf16 gives the pattern back (NaNs stay NaN)', () => {
    for (let b = 0; b < 0x10000; b++) {
      const v = bf16ToF32(b);
      const back = f32ToBf16(v);
      if (isBf16NaN(b)) {
        expect(v).toBeNaN();
        if (!isBf16NaN(back)) throw new Error(`NaN 0x${b.toString(16)} came back as 0x${back.toString(16)}`);
        continue;
      }
      if (back !== b) throw new Error(`0x${b.toString(16)} -> ${v} -> 0x${back.toString(16)}`);
    }
  });

  it('the bulk helpers match the scalar ones on every pattern', () => {
    const all = Uint16Array.from({ length: 0x10000 }, (_, i) => i);
    for (const [kind, widen, narrow] of [
      ['f16', f16ToF32, f32ToF16],
      ['bf16', bf16ToF32, f32ToBf16],
    ] as const) {
      const wide = halfArrayToF32(all, kind);
      expectIdentical(wide, Array.from(all, (b) => Math.fround(widen(b))), `${kind} widen`);
      const narrowed = f32ArrayToHalf(wide, kind);
      expectIdentical(narrowed, Array.from(wide, (v) => narrow(v)), `${kind} narrow`);
    }
  });
});

describe.each(allDevices())('native storage on %s agrees with lib/half', (device) => {
  it.each(['f16', 'bf16'] as const)('%s: stored bits and widened values', (dtype) => {
    const rng = testRng();
    const specials = [0, -0, 1, -2, 65504, 65519.99, 65520, 2 ** -24, 2 ** -25, 3 * 2 ** -25, Infinity, -Infinity, NaN, 3.4028235e38];
    const data = new Float32Array(specials.length + 20_000);
    data.set(specials);
    data.set(rng.normalArray(10_000, 0, 100), specials.length);
    data.set(rng.bits32AsF32(10_000), specials.length + 10_000);
    const t = Tensor.from(data, { dtype, device });
    const bits = f32ArrayToHalf(data, dtype);
    expectSameBytes(t.toRawArray(), bits, 'bits');
    expectIdentical(t.toArray(), halfArrayToF32(bits, dtype), 'widened');
    t.dispose();
    // and every pattern stored raw comes back widened exactly
    const all = Uint16Array.from({ length: 0x10000 }, (_, i) => i);
    const r = Tensor.from(all, { dtype, device });
    expectIdentical(r.toArray(), halfArrayToF32(all, dtype), 'all patterns');
    r.dispose();
  });
});

function nextF32(x: number, dir: 1 | -1): number {
  f32[0] = x;
  if (x === 0) {
    u32[0] = 1;
    return dir * f32[0];
  }
  u32[0] += x > 0 === dir > 0 ? 1 : -1;
  return f32[0];
}

function u32Of(x: number): string {
  f32[0] = x;
  return u32[0].toString(16);
}
