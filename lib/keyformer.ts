/**
 * Keyformer (MLSys 2024, arXiv 2403.09054; docs/ALGORITHMS.md, "Keyformer"): during decode,
 * accumulate a Gumbel-perturbed, temperature-scaled softmax of every cached key, and keep the
 * recent window plus the top-scoring "key tokens". The noise is a counter-based Philox4x32-10 keyed
 * by (seed, step, batch, query head, query, key): CPU and CUDA draw identical bits and a run
 * replays.
 */
import { native } from './native';
import { arange, check4d, checkCapacity, checkQueriesMatchKeys, checkLengths, layoutCode, opStream, sameDevice, withLayoutHint, withScope, type Dims4, type Layout, type LayoutOptions, type OpOptions } from './common';
import { deviceIndex, defaultDevice, type Device } from './device';
import { checkRagged, type RaggedLayout } from './ragged_cache';
import { checkTensor, type Tensor } from './tensor';
import { checkF32, checkInt, checkNumber, checkOneOf, checkOptions, checkShape, invalid, invalidText, isArray } from './validate';

export interface AccumulateOptions extends LayoutOptions, OpOptions {
  /** Softmax temperature (> 0); see {@link tau}. */
  tau: number;
  /** Noise seed (integer or bigint < 2^64). */
  seed: number | bigint;
  /** Decode step (integer or bigint < 2^64): a fresh draw each step. */
  step: number | bigint;
  /** 'gumbel' (default) or 'none' (H2O's plain attention). */
  noise?: 'gumbel' | 'none';
  /** Real lengths of right-padded rows: the step's T queries are each row's last T tokens. */
  seqLens?: Int32Array | readonly number[];
  /**
   * A ragged per-head cache (a RaggedKvCache or compactRagged's result): keys are then its
   * [rows, D] storage and scores f32 [rows]. The step's T queries are each head's last T live
   * tokens; the noise of a token is drawn at its original position, as the dense op draws it.
   */
  ragged?: RaggedLayout;
}

function checkU64(op: string, name: string, value: unknown): bigint | number {
  if (typeof value === 'bigint') {
    if (value < 0n || value >= 1n << 64n) throw invalid(op, name, 'an integer in [0, 2^64)', value);
    return value;
  }
  return checkInt(op, name, value, 0);
}

/** @internal shared with h2o and tova */
export function runAccumulate(op: string, queries: unknown, keys: unknown, scoresT: unknown, options: Omit<AccumulateOptions, 'tau' | 'seed' | 'step'> & { tau: unknown; seed: unknown; step: unknown }): Tensor {
  // own properties only, whoever built the object (h2o spreads its own into a plain one)
  const opts = checkOptions(op, options) as typeof options;
  if (opts.ragged !== undefined) return runRaggedAccumulate(op, queries, keys, scoresT, opts);
  const { layout } = layoutCode(op, opts.layout);
  const explicit = opts.layout !== undefined;
  const shapes = (l: Layout) => {
    const { t: q, dims: qd } = check4d(op, 'queries', queries, l, undefined, explicit);
    const { t: k, dims: kd } = check4d(op, 'keys', keys, l, undefined, explicit);
    const s = checkTensor(op, 'scores', scoresT);
    checkAccumulateShapes(op, q, qd, k, kd, s);
    return { q, qd, k, kd, s };
  };
  const { q, qd, k, kd, s } = withLayoutHint(layout, shapes);
  const code = layout === 'bhsd' ? 0 : 1;
  const device = sameDevice(op, [q, k, s]);
  // the kernels divide by tau in f32: 1e-300 would be 0 there
  const tau = checkF32(op, 'options.tau', opts.tau, { positive: true });
  const seed = checkU64(op, 'options.seed', opts.seed);
  const step = checkU64(op, 'options.step', opts.step);
  const noise = opts.noise === undefined ? 'gumbel' : checkOneOf(op, 'options.noise', opts.noise, ['gumbel', 'none'] as const);
  const seqLens = checkLengths(op, 'options.seqLens', opts.seqLens, kd.B, qd.S, kd.S);
  const stream = opStream(op, opts, device);
  native.accumulate(q, k, s, { layout: code, tau, noise: noise === 'gumbel' ? 1 : 0, seed, step, seqLens }, stream);
  return s;
}

function runRaggedAccumulate(op: string, queries: unknown, keys: unknown, scoresT: unknown, opts: Omit<AccumulateOptions, 'tau' | 'seed' | 'step'> & { tau: unknown; seed: unknown; step: unknown }): Tensor {
  const { layout, code } = layoutCode(op, opts.layout);
  const { t: q, dims: qd } = check4d(op, 'queries', queries, layout);
  const k = checkTensor(op, 'keys', keys);
  const s = checkTensor(op, 'scores', scoresT);
  if (k.shape.length !== 2 || !['f32', 'f16', 'bf16'].includes(k.dtype)) {
    throw invalidText(op, 'keys', 'a ragged cache\'s keys [rows, D] (f32, f16 or bf16) with options.ragged', `${k.dtype} [${k.shape.join(', ')}]`);
  }
  const device = sameDevice(op, [q, k, s]);
  const [rows, D] = k.shape;
  const r = checkRagged(op, opts.ragged, device, rows);
  const { batch: B, heads: Hkv } = r.native;
  if (q.dtype !== k.dtype) throw invalidText(op, 'queries.dtype', `the keys' dtype '${k.dtype}'`, `'${q.dtype}'`);
  if (qd.B !== B) throw invalidText(op, 'queries', `batch ${B} (the cache's)`, `${qd.B}`);
  if (qd.D !== D) throw invalidText(op, 'queries', `head dim ${D} (the keys')`, `${qd.D}`);
  if (qd.H === 0) throw invalidText(op, 'queries', 'at least one query head (Hq >= 1)', '0');
  if (qd.H % Hkv !== 0) throw invalidText(op, 'queries', `a head count that is a multiple of the cache's ${Hkv}`, `${qd.H}`);
  if (D === 0) throw invalidText(op, 'keys', 'a head dim D >= 1', '0');
  const minHead = r.layout.minHeadTokens;
  if (qd.S < 1) throw invalidText(op, 'queries', 'at least 1 query row', `${qd.S}`);
  if (minHead !== undefined && qd.S > minHead) {
    throw invalidText(op, 'queries', `at most ${minHead} query rows (the fewest live tokens a head of the cache may hold; append the step's tokens first)`, `${qd.S}`);
  }
  if (s.dtype !== 'f32' || s.shape.length !== 1 || s.shape[0] !== rows) {
    throw invalidText(op, 'scores', `an f32 tensor [${rows}] (one per cache row)`, `${s.dtype} [${s.shape.join(', ')}]`);
  }
  if (opts.seqLens !== undefined) throw invalidText(op, 'options.seqLens', 'undefined with options.ragged (the cache holds its lengths)', 'seqLens');
  // the kernels divide by tau in f32: 1e-300 would be 0 there
  const tau = checkF32(op, 'options.tau', opts.tau, { positive: true });
  const seed = checkU64(op, 'options.seed', opts.seed);
  const step = checkU64(op, 'options.step', opts.step);
  const noise = opts.noise === undefined ? 'gumbel' : checkOneOf(op, 'options.noise', opts.noise, ['gumbel', 'none'] as const);
  const stream = opStream(op, opts, device);
  native.raggedAccumulate(q, k, s, { layout: code, tau, noise: noise === 'gumbel' ? 1 : 0, seed, step, ragged: r.native, positions: r.positions }, stream);
  return s;
}

function checkAccumulateShapes(op: string, q: Tensor, qd: Dims4, k: Tensor, kd: Dims4, s: Tensor): void {
  if (q.dtype !== k.dtype) throw invalidText(op, 'queries.dtype', `the keys' dtype '${k.dtype}'`, `'${q.dtype}'`);
  checkQueriesMatchKeys(op, 'queries', qd, kd);
  if (qd.S < 1 || qd.S > kd.S) throw invalidText(op, 'queries', `between 1 and N = ${kd.S} query rows`, `${qd.S}`);
  if (s.dtype !== 'f32' || s.shape.length !== 3 || s.shape[0] !== kd.B || s.shape[1] !== kd.H || s.shape[2] !== kd.S) {
    throw invalidText(op, 'scores', `an f32 tensor [${kd.B}, ${kd.H}, ${kd.S}]`, `${s.dtype} [${s.shape.join(', ')}]`);
  }
}

/**
 * Adds this step's scores in place: scores[b, h, j] += Σ softmax_j((q·k_j/√D + g_j)/τ) over the
 * step's queries (causal among them) and the G query heads of KV head h. Q·K, noise, softmax and
 * the += are fused; the two softmax passes regenerate the same Philox noise instead of storing it.
 *
 * With `options.ragged` the cache is a ragged per-head one (keys [rows, D], scores f32 [rows]):
 * each head's live rows give the same result as the equivalent dense rows.
 *
 * @param queries [B, Hq, T, D] (T = 1 in decode; the prompt phase passes all prompt queries)
 * @param keys [B, Hkv, N, D], same dtype (or [rows, D] with options.ragged)
 * @param scores f32 [B, Hkv, N] (or [rows]), accumulated in place and returned
 * @example
 * ```ts
 * const scores = Tensor.zeros([1, 8, n], 'f32', 'cuda:0');
 * keyformer.accumulate(q, keys, scores, { tau: keyformer.tau(step, { maxNewTokens: 512 }), seed: 42, step });
 * // a ragged cache (RaggedKvCache): one score per storage row
 * const rs = Tensor.zeros([cache.rows], 'f32', 'cuda:0');
 * keyformer.accumulate(q, cache.keys, rs, { tau: 1, seed: 42, step, ragged: cache });
 * ```
 */
export function accumulate(queries: Tensor, keys: Tensor, scores: Tensor, options: AccumulateOptions): Tensor {
  const op = 'keyformer.accumulate';
  return runAccumulate(op, queries, keys, scores, checkOptions(op, options) as unknown as AccumulateOptions);
}

export interface GumbelOptions extends OpOptions {
  seed: number | bigint;
  step: number | bigint;
  device?: Device;
}

/**
 * The very Gumbel(0, 1) noise `accumulate` adds at (seed, step), on a [B, Hq, T, N] grid.
 *
 * @example
 * ```ts
 * const g = keyformer.gumbel([1, 32, 1, 4096], { seed: 42, step: 7, device: 'cpu' });
 * ```
 */
export function gumbel(shape: readonly number[], options: GumbelOptions): Tensor {
  const op = 'keyformer.gumbel';
  const opts = checkOptions(op, options) as unknown as GumbelOptions;
  if (!isArray(shape) || shape.length !== 4) throw invalid(op, 'shape', 'a 4-D shape [B, H, T, N]', shape);
  // the checked snapshot is the shape used: a Proxy is read once
  const dims = checkShape(op, 'shape', shape, 4);
  if (dims.length !== 4) throw invalid(op, 'shape', 'a 4-D shape [B, H, T, N]', dims);
  const seed = checkU64(op, 'options.seed', opts.seed);
  const step = checkU64(op, 'options.step', opts.step);
  const device = deviceIndex(op, 'options.device', opts.device ?? defaultDevice());
  const stream = opStream(op, opts, device);
  return withScope(device, stream, (scope) => {
    const out = scope.output(dims, 'f32');
    native.gumbel(out, { seed, step }, stream);
    return out;
  });
}

export interface TauOptions {
  /** Default 1. */
  tauInit?: number;
  /** Default 2. */
  tauEnd?: number;
  /** Decode steps planned (> 0). */
  maxNewTokens: number;
}

/**
 * Keyformer's linear temperature schedule: tauInit + step (tauEnd - tauInit) / maxNewTokens,
 * held at tauEnd after maxNewTokens steps.
 *
 * @example
 * ```ts
 * keyformer.tau(0, { maxNewTokens: 100 }) === 1; keyformer.tau(50, { maxNewTokens: 100 }) === 1.5
 * ```
 */
export function tau(step: number, options: TauOptions): number {
  const op = 'keyformer.tau';
  const opts = checkOptions(op, options) as unknown as TauOptions;
  checkNumber(op, 'step', step, { min: 0 });
  const tauInit = opts.tauInit === undefined ? 1 : checkNumber(op, 'options.tauInit', opts.tauInit, { exclusiveMin: 0 });
  const tauEnd = opts.tauEnd === undefined ? 2 : checkNumber(op, 'options.tauEnd', opts.tauEnd, { exclusiveMin: 0 });
  const maxNew = checkNumber(op, 'options.maxNewTokens', opts.maxNewTokens, { exclusiveMin: 0 });
  // past maxNewTokens the temperature stays at tauEnd; dividing first keeps huge inputs finite
  return tauInit + Math.min(step / maxNew, 1) * (tauEnd - tauInit);
}

export interface SelectOptions extends OpOptions {
  /** Tokens kept per head. */
  capacity: number;
  /** The last `recent` real tokens are always kept (they count toward capacity). */
  recent: number;
  /** Real lengths of right-padded rows. */
  seqLens?: Int32Array | readonly number[];
}

/**
 * Keeps the last `recent` tokens plus the top capacity - recent others by accumulated score;
 * positions ascending, ties to the lower position, NaN ranks last.
 *
 * @param scores f32 [B, H, N]
 * @returns i32 [B, H, capacity]
 * @example
 * ```ts
 * const pos = keyformer.select(scores, { capacity: 1024, recent: 256 });
 * const small = evict(keys, values, pos);
 * ```
 */
export function select(scores: Tensor, options: SelectOptions): Tensor<'i32'> {
  return runSelect('keyformer.select', scores, options);
}

/** @internal shared with h2o */
export function runSelect(op: string, scoresT: unknown, options: unknown): Tensor<'i32'> {
  const s = checkTensor(op, 'scores', scoresT);
  const opts = checkOptions(op, options) as unknown as SelectOptions;
  if (s.dtype !== 'f32' || s.shape.length !== 3) throw invalidText(op, 'scores', 'an f32 tensor [B, H, N]', `${s.dtype} [${s.shape.join(', ')}]`);
  const [B, H, N] = s.shape;
  const capacity = checkCapacity(op, opts.capacity);
  const recent = checkInt(op, 'options.recent', opts.recent, 0, capacity);
  const stream = opStream(op, opts, s._deviceIndex);
  if (capacity >= N) {
    // capacity >= N keeps every token (the meaning every op shares): positions 0..N-1
    checkLengths(op, 'options.seqLens', opts.seqLens, B, 0, N);
    return allPositions(s._deviceIndex, stream, B * H, N, [B, H, N]);
  }
  const seqLens = checkLengths(op, 'options.seqLens', opts.seqLens, B, capacity, N);
  return withScope(s._deviceIndex, stream, (scope) => {
    const lifted = scope.alloc([B, H, N], 'f32');
    native.protectScores(s, lifted, { sinks: 0, recent, sign: 1, seqLens }, stream);
    const out = scope.output([B, H, capacity], 'i32');
    native.topk(lifted, out, { k: capacity, order: 0, outRowStride: capacity, lengths: seqLens }, stream);
    return out;
  });
}

/** @internal i32 positions 0..n-1 for each of `rows` rows, shaped `shape` (capacity >= N). */
export function allPositions(device: number, stream: bigint | undefined, rows: number, n: number, shape: number[]): Tensor<'i32'> {
  return withScope(device, stream, (scope) => {
    const out = scope.output(shape, 'i32');
    const host = new Int32Array(rows * n);
    const one = arange(n);
    for (let r = 0; r < rows; r++) host.set(one, r * n);
    native.copyFromHost(out._buffer, 0, host, stream);
    return out;
  });
}
