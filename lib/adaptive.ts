/**
 * Head-adaptive budgets (AdaKV, arXiv 2407.11550, as kvpress's AdaKVPress; docs/ALGORITHMS.md
 * "Adaptive budgets"): one budget per batch row shared by all KV heads of the layer, so heads
 * whose attention is concentrated give tokens to heads whose attention is spread out.
 */
import { checkLengths, opStream, sameDevice, withScope, type OpOptions } from './common';
import { native } from './native';
import { checkRagged, type RaggedLayout, type RaggedSelection } from './ragged_cache';
import { checkTensor, type Tensor } from './tensor';
import { checkInt, checkOptions, invalidText } from './validate';

export interface AdaptiveSelectOptions extends OpOptions {
  /** Tokens kept per batch row, over all its heads together (window and minPerHead included). */
  budget: number;
  /** Each head's highest-scoring tokens kept before the shared top-k (the safeguard). Default 0. */
  minPerHead?: number;
  /** Each head's last `window` valid tokens, always kept. Default 0. */
  window?: number;
  /** Dense scores: valid tokens per batch row (right padding); tokens past them are never kept. */
  lengths?: Int32Array | readonly number[];
  /** Ragged scores ([rows], one per cache row): the cache's layout, e.g. a RaggedKvCache. */
  ragged?: RaggedLayout;
}

/**
 * Selects `budget` tokens per batch row over all its heads: each head first keeps its last
 * `window` valid tokens and its `minPerHead` highest-scoring others, then the rest of the budget
 * goes to the highest remaining scores of the row, whatever their head (ties to the lower head,
 * then the lower position; NaN ranks last). One fixed set of launches for all rows, no host
 * synchronization: indptr is computed on the device.
 *
 * The scores of different heads compete directly, so the scorer must make them comparable
 * across heads (softmax-normalized attention, as SnapKV's votes or Keyformer's accumulation;
 * negated L2 norms compare only where heads' norms share a scale).
 *
 * @param scores f32 [B, H, N], or f32 [rows] of a ragged cache with `options.ragged`
 * @returns `{ positions: i32 [B * budget], indptr: i32 [B * H + 1] }`, CSR: head b·H + h keeps
 *   positions[indptr[bh] .. indptr[bh + 1]), ascending. For a ragged input the positions index
 *   each head's live tokens.
 * @example
 * ```ts
 * const votes = snapkv.pool(snapkv.scores(window, keys, { window: 32 }), { kernel: 7 });
 * const sel = adaptive.select(votes, { budget: 8 * 1024, minPerHead: 64 }); // 8 heads, 1024 on average
 * const small = compactRagged(keys, values, sel);
 * ```
 */
export function select(scores: Tensor, options: AdaptiveSelectOptions): RaggedSelection {
  const op = 'adaptive.select';
  const s = checkTensor(op, 'scores', scores);
  const opts = checkOptions(op, options) as unknown as AdaptiveSelectOptions;
  if (s.dtype !== 'f32') throw invalidText(op, 'scores.dtype', "'f32'", `'${s.dtype}'`);
  const budget = checkInt(op, 'options.budget', opts.budget, 1, 0x7fffffff);
  const minPerHead = opts.minPerHead === undefined ? 0 : checkInt(op, 'options.minPerHead', opts.minPerHead, 0, 0x7fffffff);
  const window = opts.window === undefined ? 0 : checkInt(op, 'options.window', opts.window, 0, 0x7fffffff);
  const device = s._deviceIndex;
  let B: number, H: number, N: number | undefined;
  let lengths: Int32Array | undefined;
  let ragged: ReturnType<typeof checkRagged> | undefined;
  if (opts.ragged !== undefined) {
    if (s.shape.length !== 1) throw invalidText(op, 'scores', 'an f32 tensor [rows] (one score per cache row) with options.ragged', `[${s.shape.join(', ')}]`);
    if (opts.lengths !== undefined) throw invalidText(op, 'options.lengths', 'undefined with options.ragged (the cache holds its lengths)', 'lengths');
    ragged = checkRagged(op, opts.ragged, device, s.shape[0]);
    B = ragged.native.batch;
    H = ragged.native.heads;
  } else {
    if (s.shape.length !== 3) throw invalidText(op, 'scores', 'an f32 tensor [B, H, N]', `[${s.shape.join(', ')}]`);
    [B, H, N] = s.shape;
  }
  const safeguard = window + minPerHead;
  if (budget < H * safeguard) {
    throw invalidText(op, 'options.budget', `at least H × (window + minPerHead) = ${H} × ${safeguard} = ${H * safeguard}`, `${budget}`);
  }
  if (N !== undefined) {
    lengths = checkLengths(op, 'options.lengths', opts.lengths, B, safeguard, N);
    if (safeguard > N) throw invalidText(op, 'options.window + options.minPerHead', `at most N = ${N}`, `${safeguard}`);
    for (let b = 0; b < B; b++) {
      const valid = H * (lengths ? lengths[b] : N);
      if (budget > valid) throw invalidText(op, 'options.budget', `at most the valid tokens of batch row ${b} over all heads (${H} × ${valid / H} = ${valid})`, `${budget}`);
    }
  } else {
    const layout = ragged!.layout;
    if (layout.minHeadTokens !== undefined && safeguard > layout.minHeadTokens) {
      throw invalidText(op, 'options.window + options.minPerHead', `at most ${layout.minHeadTokens} (the fewest live tokens a head of the cache may hold)`, `${safeguard}`);
    }
    if (layout.rowTokens !== undefined) {
      layout.rowTokens.forEach((valid, b) => {
        if (budget > valid) throw invalidText(op, 'options.budget', `at most the valid tokens of batch row ${b} over all heads (${valid})`, `${budget}`);
      });
    }
  }
  if (B * budget > 0x7fffffff) throw invalidText(op, 'options.budget', 'a budget with B × budget below 2^31', `${budget}`);
  const stream = opStream(op, opts, device);
  if (ragged) sameDevice(op, [s, ragged.native.indptr as Tensor]);
  return withScope(device, stream, (scope) => {
    const positions = scope.output([B * budget], 'i32');
    const indptr = scope.output([B * H + 1], 'i32');
    native.adaptiveSelect(s, positions, indptr, { budget, minPerHead, window, lengths, ragged: ragged?.native }, stream);
    return {
      positions,
      indptr,
      batch: B,
      heads: H,
      budget,
      rowTokens: new Array<number>(B).fill(budget),
      minHeadTokens: safeguard,
      positionsEnd: N,
    };
  });
}
