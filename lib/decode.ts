/**
 * Decode attention (ALGORITHMS.md "Decode attention"): the attention of a decode step's T query
 * tokens against the KV cache, split over the keys (flash-decoding) with a fixed-order merge, and
 * optionally fused with H2O / Keyformer score accumulation so that K is read once per step. The
 * same attention runs over a selection of the cache (positions, CSR ragged positions or blocks,
 * e.g. from {@link quest.select}).
 */
import { native } from './native';
import { check4d, checkLengths, checkQueriesMatchKeys, layoutCode, opStream, sameDevice, shape4, withScope, type AttentionDims, type Layout, type LayoutOptions, type OpOptions } from './common';
import { KvsiftError } from './errors';
import { checkTensor, type Tensor } from './tensor';
import { checkF32, checkInt, checkOneOf, checkOptions, invalid, invalidText, isArray } from './validate';

/** Largest head dim the kernels run. */
export const MAX_HEAD_DIM = 256;
/** Largest number of query tokens per row (e.g. a speculative draft). */
export const MAX_QUERY_TOKENS = 8;

/** Score accumulation fused into {@link attention}. */
export interface AccumulateSpec {
  /** f32 [B, Hkv, N], accumulated in place (as h2o.accumulate / keyformer.accumulate do). */
  scores: Tensor;
  /** 'h2o': plain softmax mass; 'keyformer': softmax((logit + Gumbel) / tau). */
  method: 'h2o' | 'keyformer';
  /** Keyformer's temperature (> 0); see keyformer.tau. */
  tau?: number;
  /** Keyformer's noise seed (integer or bigint < 2^64). */
  seed?: number | bigint;
  /** Keyformer's decode step (integer or bigint < 2^64). */
  step?: number | bigint;
  /** Keyformer: 'gumbel' (default) or 'none'. */
  noise?: 'gumbel' | 'none';
}

export interface AttentionOptions extends LayoutOptions, OpOptions {
  /** Real lengths of right-padded rows (T <= seqLens[b] <= N); the T queries are each row's last T tokens. */
  seqLens?: Int32Array | readonly number[];
  /** Logit scale; default 1/sqrt(D). */
  scale?: number;
  /** Also return the log-sum-exp of each query's scaled logits (default false). */
  returnLse?: boolean;
  /** Add each key's mass into a score tensor in the same pass. */
  accumulate?: AccumulateSpec;
}

/** Ragged (CSR) selection: the positions of pair p = b * Hkv + h are positions[indptr[p] .. indptr[p + 1]). */
export interface RaggedPositions {
  /** i32 [total] */
  positions: Tensor;
  /** i32 [B * Hkv + 1], non-decreasing from 0 to total (entries are clamped to [0, total]). */
  indptr: Tensor;
}

export interface SparseAttentionOptions extends LayoutOptions, OpOptions {
  /** i32 [B, Hkv, k] selected key positions per KV head (ascending), or the ragged CSR form. */
  positions?: Tensor | RaggedPositions;
  /** i32 [B, Hkv, nb] selected block ids: block c holds keys c*blockSize .. c*blockSize + blockSize - 1. */
  blocks?: Tensor;
  /** Tokens per block (with `blocks`). */
  blockSize?: number;
  seqLens?: Int32Array | readonly number[];
  scale?: number;
  returnLse?: boolean;
}

export interface AttentionResult {
  /** [B, Hq, T, D] ('bhsd') or [B, T, Hq, D] ('bshd'), in q's dtype. */
  out: Tensor;
  /** f32 [B, Hq, T] natural-log log-sum-exp (only with returnLse); -Infinity for a query that sees no key. */
  lse?: Tensor;
}

/** Reads an option only when it is the object's own property (never from a prototype). */
function own(o: Record<string, unknown>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined;
}

function checkU64(op: string, name: string, value: unknown): bigint | number {
  if (typeof value === 'bigint') {
    if (value < 0n || value >= 1n << 64n) throw invalid(op, name, 'an integer in [0, 2^64)', value);
    return value;
  }
  return checkInt(op, name, value, 0);
}

interface Common extends AttentionDims {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  layout: Layout;
  code: 0 | 1;
  device: number;
  seqLens?: Int32Array;
  scale: number;
  returnLse: boolean;
  stream?: bigint;
}

function checkCommon(op: string, queries: unknown, keys: unknown, values: unknown, opts: Record<string, unknown>): Common {
  const { layout, code } = layoutCode(op, own(opts, 'layout'));
  const { t: q, dims: qd } = check4d(op, 'q', queries, layout);
  const { t: k, dims: kd } = check4d(op, 'keys', keys, layout);
  const { t: v } = check4d(op, 'values', values, layout);
  const device = sameDevice(op, [q, k, v]);
  if (k.dtype !== q.dtype) throw invalidText(op, 'keys.dtype', `q's dtype '${q.dtype}'`, `'${k.dtype}'`);
  if (v.dtype !== q.dtype) throw invalidText(op, 'values.dtype', `q's dtype '${q.dtype}'`, `'${v.dtype}'`);
  if (v.shape.length !== k.shape.length || v.shape.some((d, i) => d !== k.shape[i])) {
    throw invalidText(op, 'values', `the keys' shape [${k.shape.join(', ')}]`, `[${v.shape.join(', ')}]`);
  }
  checkQueriesMatchKeys(op, 'q', qd, kd);
  if (qd.S < 1 || qd.S > MAX_QUERY_TOKENS || qd.S > kd.S) {
    throw invalidText(op, 'q', `between 1 and ${Math.min(MAX_QUERY_TOKENS, kd.S)} query tokens`, `${qd.S}`);
  }
  if (kd.D > MAX_HEAD_DIM) throw new KvsiftError(`${op}: head dim ${kd.D} is not supported (at most ${MAX_HEAD_DIM})`, 'ERR_UNSUPPORTED');
  const seqLens = checkLengths(op, 'options.seqLens', own(opts, 'seqLens'), kd.B, qd.S, kd.S);
  const scaleIn = own(opts, 'scale');
  const scale = scaleIn === undefined ? 1 / Math.sqrt(kd.D) : checkF32(op, 'options.scale', scaleIn); // the kernels scale in f32
  const rl = own(opts, 'returnLse');
  if (rl !== undefined && typeof rl !== 'boolean') throw invalid(op, 'options.returnLse', 'a boolean', rl);
  return {
    q, k, v, layout, code, B: kd.B, Hq: qd.H, Hkv: kd.H, T: qd.S, N: kd.S, D: kd.D, device, seqLens, scale,
    returnLse: rl === true, stream: opStream(op, opts as { stream?: unknown }, device),
  };
}

/**
 * Decode attention: out = softmax(q·Kᵀ · scale) V for the T new query tokens of every row, in
 * fp32, with GQA (each KV head's K and V are read once for its G query heads). Query t of row b
 * sits at position L - T + t (L = seqLens[b], default N) and sees keys j <= L - T + t.
 * With `accumulate`, the same pass adds each key's mass into `scores` — the plain softmax for
 * 'h2o', the noisy tempered softmax((logit + g) / tau) for 'keyformer' (Philox noise identical to
 * keyformer.accumulate's) — so an engine no longer reads K twice per step.
 *
 * @param q [B, Hq, T, D] ('bhsd') or [B, T, Hq, D] ('bshd'), f32/f16/bf16, 1 <= T <= 8
 * @param keys [B, Hkv, N, D] (or [B, N, Hkv, D]), q's dtype
 * @param values same shape and dtype as keys
 * @example
 * ```ts
 * const q = Tensor.from(new Float32Array(32 * 128), { shape: [1, 32, 1, 128], dtype: 'f32', device: 'cpu' });
 * const keys = Tensor.zeros([1, 8, 4096, 128], 'f32', 'cpu');
 * const values = Tensor.zeros([1, 8, 4096, 128], 'f32', 'cpu');
 * const scores = Tensor.zeros([1, 8, 4096], 'f32', 'cpu');
 * const { out, lse } = decode.attention(q, keys, values, {
 *   returnLse: true,
 *   accumulate: { scores, method: 'keyformer', tau: keyformer.tau(7, { maxNewTokens: 512 }), seed: 42, step: 7 },
 * });
 * ```
 */
export function attention(q: Tensor, keys: Tensor, values: Tensor, options?: AttentionOptions): AttentionResult {
  const op = 'decode.attention';
  const opts = checkOptions(op, options);
  const c = checkCommon(op, q, keys, values, opts);
  const acc = own(opts, 'accumulate');
  const native_opts: Record<string, unknown> = { layout: c.code, scale: c.scale, seqLens: c.seqLens, selection: 0 };
  if (acc !== undefined) {
    if (acc === null || typeof acc !== 'object' || isArray(acc)) throw invalid(op, 'options.accumulate', 'an object { scores, method }', acc);
    const a = acc as Record<string, unknown>;
    const s = checkTensor(op, 'options.accumulate.scores', own(a, 'scores'));
    sameDevice(op, [c.q, s]);
    if (s.dtype !== 'f32' || s.shape.length !== 3 || s.shape[0] !== c.B || s.shape[1] !== c.Hkv || s.shape[2] !== c.N) {
      throw invalidText(op, 'options.accumulate.scores', `an f32 tensor [${c.B}, ${c.Hkv}, ${c.N}]`, `${s.dtype} [${s.shape.join(', ')}]`);
    }
    const method = checkOneOf(op, 'options.accumulate.method', own(a, 'method'), ['h2o', 'keyformer'] as const);
    native_opts.scores = s;
    if (method === 'h2o') {
      for (const key of ['tau', 'seed', 'step', 'noise']) {
        if (own(a, key) !== undefined) throw invalid(op, `options.accumulate.${key}`, "undefined (h2o has no noise and tau 1)", own(a, key));
      }
      Object.assign(native_opts, { tau: 1, noise: 0, seed: 0, step: 0 });
    } else {
      // the kernels divide by tau in f32: 1e-300 would be 0 there
      const tau = checkF32(op, 'options.accumulate.tau', own(a, 'tau'), { positive: true });
      const seed = checkU64(op, 'options.accumulate.seed', own(a, 'seed'));
      const step = checkU64(op, 'options.accumulate.step', own(a, 'step'));
      const noiseIn = own(a, 'noise');
      const noise = noiseIn === undefined ? 'gumbel' : checkOneOf(op, 'options.accumulate.noise', noiseIn, ['gumbel', 'none'] as const);
      Object.assign(native_opts, { tau, noise: noise === 'gumbel' ? 1 : 0, seed, step });
    }
  }
  return run(c, native_opts);
}

function run(c: Common, nativeOpts: Record<string, unknown>): AttentionResult {
  return withScope(c.device, c.stream, (scope) => {
    const out = scope.output(shape4(c.layout, c.B, c.Hq, c.T, c.D), c.q.dtype);
    let lse: Tensor | undefined;
    if (c.returnLse) {
      lse = scope.output([c.B, c.Hq, c.T], 'f32');
      nativeOpts.lse = lse;
    }
    native.decodeAttention(c.q, c.k, c.v, out, nativeOpts as never, c.stream);
    return lse === undefined ? { out } : { out, lse };
  });
}

/**
 * Decode attention over a selection of the cache: the same computation as {@link attention},
 * restricted per KV head to the given key positions (dense [B, Hkv, k] or ragged CSR) or to
 * blocks of `blockSize` consecutive tokens (the last block may be partial). Selected keys past a
 * query's causal limit, and entries outside [0, L) (such as quest.select's -1 padding), are
 * skipped.
 *
 * @example
 * ```ts
 * const meta = quest.metadata(keys, { blockSize: 16 });
 * const blocks = quest.select(q, meta, { blocks: 32 });
 * const { out } = decode.sparseAttention(q, keys, values, { blocks, blockSize: 16 });
 * ```
 */
export function sparseAttention(q: Tensor, keys: Tensor, values: Tensor, options: SparseAttentionOptions): AttentionResult {
  const op = 'decode.sparseAttention';
  const opts = checkOptions(op, options);
  const c = checkCommon(op, q, keys, values, opts);
  const positions = own(opts, 'positions');
  const blocks = own(opts, 'blocks');
  const native_opts: Record<string, unknown> = { layout: c.code, scale: c.scale, seqLens: c.seqLens };
  if ((positions === undefined) === (blocks === undefined)) {
    throw invalidText(op, 'options', 'exactly one of positions and blocks', positions === undefined ? 'neither' : 'both');
  }
  const checkSel = (name: string, value: unknown): Tensor => {
    const t = checkTensor(op, name, value);
    sameDevice(op, [c.q, t]);
    if (t.dtype !== 'i32' || t.shape.length !== 3 || t.shape[0] !== c.B || t.shape[1] !== c.Hkv) {
      throw invalidText(op, name, `an i32 tensor [${c.B}, ${c.Hkv}, k]`, `${t.dtype} [${t.shape.join(', ')}]`);
    }
    return t;
  };
  if (blocks !== undefined) {
    const b = checkSel('options.blocks', blocks);
    const blockSize = checkInt(op, 'options.blockSize', own(opts, 'blockSize'), 1, 0x7fffffff);
    if (b.shape[2] * blockSize > 0x7fffffff) throw invalidText(op, 'options.blocks', 'fewer than 2^31 selected tokens per row', `${b.shape[2] * blockSize}`);
    Object.assign(native_opts, { selection: 3, sel: b, blockSize });
  } else if (positions !== null && typeof positions === 'object' && !isArray(positions) && Object.prototype.hasOwnProperty.call(positions, 'indptr')) {
    const r = positions as Record<string, unknown>;
    const pos = checkTensor(op, 'options.positions.positions', own(r, 'positions'));
    const indptr = checkTensor(op, 'options.positions.indptr', own(r, 'indptr'));
    sameDevice(op, [c.q, pos, indptr]);
    if (pos.dtype !== 'i32' || pos.shape.length !== 1) throw invalidText(op, 'options.positions.positions', 'an i32 tensor [total]', `${pos.dtype} [${pos.shape.join(', ')}]`);
    const pairs = c.B * c.Hkv;
    if (indptr.dtype !== 'i32' || indptr.shape.length !== 1 || indptr.shape[0] !== pairs + 1) {
      throw invalidText(op, 'options.positions.indptr', `an i32 tensor [${pairs + 1}]`, `${indptr.dtype} [${indptr.shape.join(', ')}]`);
    }
    Object.assign(native_opts, { selection: 2, sel: pos, indptr });
  } else {
    Object.assign(native_opts, { selection: 1, sel: checkSel('options.positions', positions) });
  }
  return run(c, native_opts);
}
