/**
 * Deterministic benchmark inputs, reproducible bit for bit in PyTorch (bench/torch_reference.py
 * implements the same formula), so both sides time the very same K, V and Q.
 *
 *   value(i, seed) = 2 * (lowbias32((i + seed * 0x9E3779B9) mod 2^32) >> 8) / 2^24 - 1
 *
 * is exact in f32 (a multiple of 2^-23 in [-1, 1)) and rounded to the tensor's dtype (round to
 * nearest even, as torch's .to(torch.bfloat16)). Element e of a tensor (row-major) is
 * value(e mod PERIOD, seed): a large tensor is filled by uploading one PERIOD-long chunk and
 * doubling it on the device, so a 4 GiB cache costs one 2 MiB upload. PERIOD is a prime, so with
 * D = 128 a token's row repeats only every PERIOD tokens: no two rows of one head are equal, and
 * votes and norms have no artificial ties.
 */
'use strict';

const PERIOD = 1048573; // the largest prime below 2^20

/** Chris Wellons' lowbias32 integer hash (public domain). */
function lowbias32(x) {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** value(i, seed) for i = 0 .. n-1 (n <= PERIOD), times `amplitude`, as a Float32Array. */
function values(n, seed, amplitude = 1) {
  const out = new Float32Array(n);
  const offset = Math.imul(seed, 0x9e3779b9) >>> 0;
  for (let i = 0; i < n; i++) {
    const h = lowbias32((i + offset) >>> 0);
    out[i] = ((h >>> 8) / 16777216) * 2 - 1;
  }
  if (amplitude !== 1) for (let i = 0; i < n; i++) out[i] *= amplitude;
  return out;
}

/** The full host array of a tensor with `numel` elements (for small tensors: the --check shapes). */
function hostValues(numel, seed, amplitude = 1) {
  const chunk = values(Math.min(numel, PERIOD), seed, amplitude);
  if (numel <= PERIOD) return chunk;
  const out = new Float32Array(numel);
  for (let off = 0; off < numel; off += PERIOD) out.set(chunk.subarray(0, Math.min(PERIOD, numel - off)), off);
  return out;
}

/**
 * A new tensor of `shape` on `device` filled with value(e mod PERIOD, seed): one chunk uploaded,
 * then doubled with device-to-device copies (each copy's length is a multiple of PERIOD, so the
 * pattern stays value(e mod PERIOD)).
 */
function filledTensor(kv, native, shape, dtype, device, seed) {
  const numel = shape.reduce((a, b) => a * b, 1);
  const n = Math.min(numel, PERIOD);
  const chunk = kv.Tensor.from(values(n, seed), { dtype, device, shape: [n] });
  try {
    const t = kv.Tensor.empty(shape, dtype, device);
    const esz = kv.dtypeBytes(dtype);
    const total = numel * esz;
    native.copyBuffer(t._buffer, 0, chunk._buffer, 0, n * esz);
    let filled = n * esz;
    while (filled < total) {
      const len = Math.min(filled, total - filled);
      native.copyBuffer(t._buffer, filled, t._buffer, 0, len);
      filled += len;
    }
    return t;
  } finally {
    chunk.dispose();
  }
}

/**
 * Per-row kept positions for the gather benchmark: `keep` distinct positions out of [0, n) per
 * row, ascending, drawn with the same hash (rows x keep int32).
 */
function randomPositions(rows, n, keep, seed) {
  const out = new Int32Array(rows * keep);
  const mark = new Uint8Array(n);
  let counter = 0;
  const offset = Math.imul(seed, 0x9e3779b9) >>> 0;
  for (let r = 0; r < rows; r++) {
    mark.fill(0);
    let got = 0;
    while (got < keep) {
      const j = lowbias32((counter++ + offset) >>> 0) % n;
      if (!mark[j]) {
        mark[j] = 1;
        got++;
      }
    }
    let w = r * keep;
    for (let j = 0; j < n; j++) if (mark[j]) out[w++] = j;
  }
  return out;
}

/** Seeds of each input (shared with torch_reference.py). */
const SEEDS = Object.freeze({ keys: 1, values: 2, queriesWindow: 3, queriesDecode: 4, positions: 5 });

module.exports = { PERIOD, SEEDS, lowbias32, values, hostValues, filledTensor, randomPositions };
