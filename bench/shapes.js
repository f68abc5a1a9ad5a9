/**
 * Where the benchmark runs: the named model shapes, the sweep (N, batch, window), the --quick and
 * --check shapes, and the tensor sizes the ops' floors are made of. The ops themselves (runner,
 * check, floor) are the registry in bench/ops/.
 */
'use strict';

/** One layer's attention geometry of the models the sweep is named after. */
const MODELS = Object.freeze({
  'llama3-8b': { hq: 32, hkv: 8, d: 128 },
  'qwen2.5-7b': { hq: 28, hkv: 4, d: 128 },
  'mha-7b': { hq: 32, hkv: 32, d: 128 },
});

const K = 1024;
/** Sequence lengths: up to 128k on a GPU; the CPU backend stops at 32k (minutes per op beyond). */
const N_GPU = Object.freeze([4 * K, 8 * K, 32 * K, 128 * K]);
const N_CPU = Object.freeze([4 * K, 8 * K, 32 * K]);
const BATCHES = Object.freeze([1, 4]);
const WINDOWS = Object.freeze([32, 64]);
/** Tokens kept per head (SnapKV's LongBench middle setting). */
const CAPACITY = 2048;
/** SnapKV pooling: the paper's LongBench setting, and snapkv.compress's default. */
const KERNEL = 7;
const POOLING = 'max';

/** --quick: the two GQA shapes, short prompts, one batch size and window. */
const QUICK = Object.freeze({
  models: ['llama3-8b', 'qwen2.5-7b'],
  n: [4 * K, 8 * K],
  batch: [1],
  windows: [32],
});

/** The --check shape: small and odd-sized, G = 4, so wrong masks or edges show. */
const CHECK = Object.freeze({ b: 2, hq: 8, hkv: 2, d: 128, n: 301, window: 32, capacity: 96 });

/**
 * Bytes of the tensors the ops' floors are made of (docs/ALGORITHMS.md, "Cost model"). c is one
 * bench config { b, hq, hkv, d, n, w, C, esz } (esz: bytes per K/V/Q element).
 */
const bytes = Object.freeze({
  keys: (c) => c.b * c.hkv * c.n * c.d * c.esz,
  qWindow: (c) => c.b * c.hq * c.w * c.d * c.esz,
  qDecode: (c) => c.b * c.hq * c.d * c.esz,
  /** f32 [B, Hkv, N - W] */
  votes: (c) => c.b * c.hkv * (c.n - c.w) * 4,
  /** f32 [B, Hkv, N] */
  rowScores: (c) => c.b * c.hkv * c.n * 4,
  /** i32 [B, Hkv, k] */
  positions: (c, k) => c.b * c.hkv * k * 4,
});

/** '4k' -> 4096, '128K' -> 131072, '300' -> 300. */
function parseN(text) {
  const m = /^(\d+)([kK])?$/.exec(String(text).trim());
  if (!m) throw new Error(`--n: expected a length such as 4k or 8192, but received '${text}'`);
  return Number(m[1]) * (m[2] ? K : 1);
}

/** 4096 -> '4k', 300 -> '300'. */
function formatN(n) {
  return n % K === 0 ? `${n / K}k` : String(n);
}

module.exports = { MODELS, N_GPU, N_CPU, BATCHES, WINDOWS, CAPACITY, KERNEL, POOLING, QUICK, CHECK, bytes, parseN, formatN };
