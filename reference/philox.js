/**
 * An independent Philox4x32-10 (Salmon et al., SC'11), written from the paper's definition rather
 * than from common/philox.h, plus the counter/key packing and the uniform and Gumbel mappings
 * kvsift documents there. The tests check it against the Random123 known-answer vectors first,
 * then use it as the reference for keyformer.gumbel and keyformer.accumulate.
 */
'use strict';

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO32 = 4294967296;

/**
 * The 64-bit product of two uint32 as [lo, hi]. lo comes from Math.imul; hi from 16-bit halves,
 * whose partial sums stay below 2^53 and are therefore exact in a double.
 * @param {number} a
 * @param {number} b
 * @returns {[number, number]}
 */
function mulhilo32(a, b) {
  a >>>= 0;
  b >>>= 0;
  const lo = Math.imul(a, b) >>> 0;
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const low = a0 * b0; // < 2^32
  const mid = a1 * b0 + a0 * b1; // < 2^33
  const carry = Math.floor((mid * 65536 + low) / TWO32); // mid * 2^16 + low < 2^50: exact
  const hi = (a1 * b1 + carry) >>> 0;
  return [lo, hi];
}

/**
 * The same product through BigInt, to cross-check {@link mulhilo32}.
 * @param {number} a
 * @param {number} b
 * @returns {[number, number]}
 */
function mulhilo32BigInt(a, b) {
  const p = BigInt(a >>> 0) * BigInt(b >>> 0);
  return [Number(p & 0xffffffffn), Number(p >> 32n)];
}

/**
 * Ten rounds of Philox4x32 on a 4-word counter with a 2-word key; all words uint32.
 * @param {readonly number[]} ctr
 * @param {readonly number[]} key
 * @returns {[number, number, number, number]}
 */
function philox4x32_10(ctr, key) {
  let c0 = ctr[0] >>> 0;
  let c1 = ctr[1] >>> 0;
  let c2 = ctr[2] >>> 0;
  let c3 = ctr[3] >>> 0;
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let round = 0; round < 10; round++) {
    const [lo0, hi0] = mulhilo32(M0, c0);
    const [lo1, hi1] = mulhilo32(M1, c2);
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
    // the key is bumped after every round (the last bump is unused)
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  return [c0, c1, c2, c3];
}

const U64 = (1n << 64n) - 1n;

/**
 * @param {number | bigint} x
 * @returns {bigint}
 */
function toU64(x) {
  const v = typeof x === 'bigint' ? x : BigInt(x);
  if (v < 0n || v > U64) throw new RangeError(`not a uint64: ${v}`);
  return v;
}

/**
 * kvsift's key (common/philox.h): {low 32 bits of seed, high 32 bits of seed XOR high 32 bits of
 * step}, and the counter's last word, the low 32 bits of step.
 * @param {number | bigint} seed
 * @param {number | bigint} step
 * @returns {{ key: number[], stepLow: number }}
 */
function keyOf(seed, step) {
  const s = toU64(seed);
  const st = toU64(step);
  return { key: [Number(s & 0xffffffffn), Number((s >> 32n) ^ (st >> 32n))], stepLow: Number(st & 0xffffffffn) };
}

/**
 * kvsift's packing: counter = {j, t, b * H + h, low 32 bits of step}, key as {@link keyOf}.
 * Returns word 0 of the Philox output.
 * @param {number | bigint} seed
 * @param {number | bigint} step
 * @param {number} bh
 * @param {number} t
 * @param {number} j
 * @returns {number}
 */
function philoxBits(seed, step, bh, t, j) {
  const { key, stepLow } = keyOf(seed, step);
  return philox4x32_10([j >>> 0, t >>> 0, bh >>> 0, stepLow], key)[0];
}

/**
 * Uniform on (0, 1): (top 23 bits + 0.5) * 2^-23, an odd multiple of 2^-24. Every step is exact
 * in float32, so this double equals the C++ float.
 * @param {number} bits
 * @returns {number}
 */
function uniformFromBits(bits) {
  return ((bits >>> 9) + 0.5) / 8388608;
}

/**
 * Gumbel(0, 1) = -log(-log U), evaluated in double and rounded once to float32 (Math.fround).
 * @param {number} bits
 * @returns {number}
 */
function gumbelFromBits(bits) {
  const u = uniformFromBits(bits);
  return Math.fround(-Math.log(-Math.log(u)));
}

/**
 * The noise element (b, h, t, j) of a grid with H heads, at (seed, step).
 * @param {number | bigint} seed
 * @param {number | bigint} step
 * @param {number} b
 * @param {number} H
 * @param {number} h
 * @param {number} t
 * @param {number} j
 * @returns {number}
 */
function philoxGumbel(seed, step, b, H, h, t, j) {
  return gumbelFromBits(philoxBits(seed, step, b * H + h, t, j));
}

/**
 * The whole [B, H, T, N] grid keyformer.gumbel returns. The BigInt packing is hoisted out of the
 * loop: only j, t and bh vary inside.
 * @param {readonly [number, number, number, number]} shape
 * @param {number | bigint} seed
 * @param {number | bigint} step
 * @returns {Float32Array}
 */
function gumbelGrid(shape, seed, step) {
  const [B, H, T, N] = shape;
  const { key, stepLow } = keyOf(seed, step);
  const out = new Float32Array(B * H * T * N);
  let i = 0;
  for (let bh = 0; bh < B * H; bh++) {
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < N; j++) out[i++] = gumbelFromBits(philox4x32_10([j, t, bh, stepLow], key)[0]);
    }
  }
  return out;
}

module.exports = { mulhilo32, mulhilo32BigInt, philox4x32_10, philoxBits, uniformFromBits, gumbelFromBits, philoxGumbel, gumbelGrid };
