/**
 * IEEE binary16 and bfloat16 conversions, round to nearest even, exactly as the native backend
 * (cpp/cpu/half.h) does them. Half values travel as raw 16-bit patterns (numbers or Uint16Array).
 */
import { invalid } from './validate';

const f32 = new Float32Array(1);

function num(op: string, value: unknown): number {
  if (typeof value !== 'number') throw invalid(op, 'value', 'a number', value);
  return value;
}
const u32 = new Uint32Array(f32.buffer);

/**
 * Rounds a number to the nearest binary16 value and returns its bit pattern.
 *
 * @example
 * ```ts
 * f32ToF16(1) === 0x3c00; f32ToF16(65520) === 0x7c00 // rounds up to +Inf
 * ```
 */
export function f32ToF16(value: number): number {
  f32[0] = num('f32ToF16', value); // rounds a double to f32 first, as a Float32Array input would be
  const u = u32[0];
  const sign = (u >>> 16) & 0x8000;
  const abs = u & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00 | ((abs >>> 13) & 0x3ff); // NaN stays NaN, quiet
  if (abs >= 0x477ff000) return sign | 0x7c00; // overflows to Inf
  if (abs < 0x38800000) {
    // subnormal or zero: value / 2^-24 rounded to nearest even integer
    f32[0] = Math.abs(f32[0]);
    const scaled = f32[0] * 16777216; // exact in a double
    let m = Math.floor(scaled);
    const rest = scaled - m;
    if (rest > 0.5 || (rest === 0.5 && (m & 1) === 1)) m += 1;
    return sign | m;
  }
  const odd = (abs >>> 13) & 1;
  const rounded = (abs + 0xc8000fff + odd) >>> 0;
  return sign | ((rounded >>> 13) & 0x7fff);
}

/**
 * Widens a binary16 bit pattern to a number (exact).
 *
 * @example
 * ```ts
 * f16ToF32(0x3c00) === 1; f16ToF32(0x0001) === 2 ** -24
 * ```
 */
export function f16ToF32(bits: number): number {
  num('f16ToF32', bits);
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const man = bits & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man === 0 ? sign * Infinity : NaN;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/**
 * Rounds a number to the nearest bfloat16 value and returns its bit pattern.
 *
 * @example
 * ```ts
 * f32ToBf16(1) === 0x3f80
 * ```
 */
export function f32ToBf16(value: number): number {
  f32[0] = num('f32ToBf16', value);
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Widens a bfloat16 bit pattern to a number (exact).
 *
 * @example
 * ```ts
 * bf16ToF32(0x3f80) === 1
 * ```
 */
export function bf16ToF32(bits: number): number {
  num('bf16ToF32', bits);
  u32[0] = (bits & 0xffff) << 16;
  return f32[0];
}

/** Bulk f32 -> f16/bf16 bit patterns. */
export function f32ArrayToHalf(src: ArrayLike<number>, kind: 'f16' | 'bf16'): Uint16Array {
  const out = new Uint16Array(src.length);
  const conv = kind === 'f16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < src.length; i++) out[i] = conv(src[i]);
  return out;
}

/** Bulk f16/bf16 bit patterns -> Float32Array (exact). */
export function halfArrayToF32(src: Uint16Array, kind: 'f16' | 'bf16'): Float32Array {
  const out = new Float32Array(src.length);
  if (kind === 'bf16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
    return out;
  }
  for (let i = 0; i < src.length; i++) out[i] = f16ToF32(src[i]);
  return out;
}
