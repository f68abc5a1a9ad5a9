/**
 * What the benchmark runs: the named model shapes, the sweep (N, batch, window), the ops, the
 * bytes each op must move (its floor, ALGORITHMS.md §5) and whether it can be captured in a CUDA
 * graph.
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
 * Bytes an op must move at the least: the floors of ALGORITHMS.md §5. c is one bench config
 * { b, hq, hkv, d, n, w, C, esz } (esz: bytes per K/V/Q element).
 */
const floors = {
  keys: (c) => c.b * c.hkv * c.n * c.d * c.esz,
  qWindow: (c) => c.b * c.hq * c.w * c.d * c.esz,
  qDecode: (c) => c.b * c.hq * c.d * c.esz,
  votes: (c) => c.b * c.hkv * (c.n - c.w) * 4,
  /** one read of K + the window queries + the f32 votes written */
  scores: (c) => floors.keys(c) + floors.qWindow(c) + floors.votes(c),
  scoresLse: (c) => floors.scores(c) + c.b * c.hq * c.w * 4,
  pool: (c) => 2 * floors.votes(c),
  /** the layer's rows of votes read, C - W positions per row written */
  topk: (c) => floors.votes(c) + c.b * c.hkv * (c.C - c.w) * 4,
  /** the kept rows of one cache read and written, plus the positions */
  gather: (c) => 2 * c.b * c.hkv * c.C * c.d * c.esz + c.b * c.hkv * c.C * 4,
  /** the sum of its parts: scores + pool + topk + gathers of K and V */
  snapkvCompress: (c) => floors.scores(c) + floors.pool(c) + floors.topk(c) + 2 * floors.gather(c),
  /** one read of K + the f32 norms written */
  norms: (c) => floors.keys(c) + c.b * c.hkv * c.n * 4,
  /** norms + top C of N + gathers of K and V */
  l2Compress: (c) => floors.norms(c) + c.b * c.hkv * c.n * 4 + c.b * c.hkv * c.C * 4 + 2 * floors.gather(c),
  /** one read of K + the decode query + the f32 scores read and written in place */
  accumulate: (c) => floors.keys(c) + floors.qDecode(c) + 2 * c.b * c.hkv * c.n * 4,
  /** one read of K + the decode query + C positions per batch row */
  tova: (c) => floors.keys(c) + floors.qDecode(c) + c.b * c.C * 4,
  /** K read and written */
  copy: (c) => 2 * floors.keys(c),
};

/**
 * The timed ops, in table order. usesWindow: timed once per W (else once per shape, N, batch).
 * graph: whether a CUDA graph can capture the op, read off the implementation: every op below
 * launches kernels and stream-ordered allocations only; the optional seqLens/lengths arrays are
 * uploaded with a pageable cudaMemcpyAsync, which a capture rejects. (evict with rank-1
 * positions reads them back to the host: not capturable; it is not timed here.)
 */
const OPS = Object.freeze([
  { name: 'snapkv.scores', usesWindow: true, floor: floors.scores, graph: 'yes (no seqLens)' },
  { name: 'snapkv.scores+lse', usesWindow: true, floor: floors.scoresLse, graph: 'yes (no seqLens)' },
  { name: 'snapkv.pool', usesWindow: true, floor: floors.pool, graph: 'yes (no lengths)' },
  { name: 'topk', usesWindow: true, floor: floors.topk, graph: 'yes (no lengths)' },
  { name: 'gather', usesWindow: false, floor: floors.gather, graph: 'yes' },
  { name: 'snapkv.compress', usesWindow: true, floor: floors.snapkvCompress, graph: 'yes (no seqLens)' },
  { name: 'l2.norms', usesWindow: false, floor: floors.norms, graph: 'yes (no seqLens)' },
  { name: 'l2.compress', usesWindow: false, floor: floors.l2Compress, graph: 'yes (no seqLens)' },
  { name: 'keyformer.accumulate', usesWindow: false, floor: floors.accumulate, graph: 'yes (no seqLens)' },
  { name: 'tova.select', usesWindow: false, floor: floors.tova, graph: 'yes (no seqLens)' },
  { name: 'copy', usesWindow: false, floor: floors.copy, graph: 'yes' },
]);

/** Ops with a PyTorch counterpart in torch_reference.py. */
const TORCH_COUNTERPART = Object.freeze({
  'snapkv.compress': 'snapkv.update_kv',
  'l2.compress': 'knorm',
  'keyformer.accumulate': 'keyformer.step',
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

module.exports = { MODELS, N_GPU, N_CPU, BATCHES, WINDOWS, CAPACITY, KERNEL, POOLING, QUICK, CHECK, OPS, TORCH_COUNTERPART, floors, parseN, formatN };
