/**
 * The two cache layouts of kvsift: 'bhsd' = [B, H, S, D] (the logical order every reference
 * computes in) and 'bshd' = [B, S, H, D], and the conversions between them.
 */
'use strict';

/** @typedef {'bhsd' | 'bshd'} Layout */
/** @typedef {{ length: number, [i: number]: number }} NumArray */
/**
 * A logical [B, H, S, D] cache.
 * @typedef {{ data: ArrayLike<number>, B: number, H: number, S: number, D: number }} Cache4
 */

/**
 * Element (b, h, s, d) of a logical cache.
 * @param {Cache4} c
 * @param {number} b
 * @param {number} h
 * @param {number} s
 * @param {number} d
 * @returns {number}
 */
function at(c, b, h, s, d) {
  return c.data[((b * c.H + h) * c.S + s) * c.D + d];
}

/**
 * The stored shape of a logical [B, H, S, D] cache in a layout.
 * @param {Layout} layout
 * @param {number} B
 * @param {number} H
 * @param {number} S
 * @param {number} D
 * @returns {number[]}
 */
function shapeIn(layout, B, H, S, D) {
  return layout === 'bhsd' ? [B, H, S, D] : [B, S, H, D];
}

/**
 * Moves every element between the two orders; `toBshd` picks the direction. Any typed array
 * (raw f16/bf16 bits travel unchanged).
 * @template {NumArray} T
 * @param {T} a
 * @param {number} B
 * @param {number} H
 * @param {number} S
 * @param {number} D
 * @param {boolean} toBshd
 * @returns {T}
 */
function transpose(a, B, H, S, D, toBshd) {
  /** @type {T} */
  const out = new (/** @type {new (n: number) => T} */ (a.constructor))(a.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let s = 0; s < S; s++)
        for (let d = 0; d < D; d++) {
          const bhsd = ((b * H + h) * S + s) * D + d;
          const bshd = ((b * S + s) * H + h) * D + d;
          if (toBshd) out[bshd] = a[bhsd];
          else out[bhsd] = a[bshd];
        }
  return out;
}

/**
 * [B, H, S, D] -> [B, S, H, D].
 * @template {NumArray} T
 * @param {T} a
 * @param {number} B
 * @param {number} H
 * @param {number} S
 * @param {number} D
 * @returns {T}
 */
function bhsdToBshd(a, B, H, S, D) {
  return transpose(a, B, H, S, D, true);
}

/**
 * [B, S, H, D] -> [B, H, S, D].
 * @template {NumArray} T
 * @param {T} a
 * @param {number} B
 * @param {number} H
 * @param {number} S
 * @param {number} D
 * @returns {T}
 */
function bshdToBhsd(a, B, H, S, D) {
  return transpose(a, B, H, S, D, false);
}

/**
 * A logical cache's data in the layout's storage order, as f32.
 * @param {Cache4} c
 * @param {Layout} layout
 * @returns {Float32Array}
 */
function toLayout(c, layout) {
  const data = Float32Array.from(c.data);
  return layout === 'bhsd' ? data : bhsdToBshd(data, c.B, c.H, c.S, c.D);
}

/**
 * Storage-order data of a layout back to a logical [B, H, S, D] cache.
 * @param {ArrayLike<number>} data
 * @param {Layout} layout
 * @param {number} B
 * @param {number} H
 * @param {number} S
 * @param {number} D
 * @returns {Cache4}
 */
function fromLayout(data, layout, B, H, S, D) {
  const f = Float32Array.from(data);
  return { data: layout === 'bhsd' ? f : bshdToBhsd(f, B, H, S, D), B, H, S, D };
}

module.exports = { at, shapeIn, bhsdToBshd, bshdToBhsd, toLayout, fromLayout };
