/**
 * Quest (Tang et al., ICML 2024, arXiv 2406.10774; ALGORITHMS.md "Quest"): query-aware block
 * selection for sparse decode attention. Each block of `blockSize` keys keeps its elementwise min
 * and max key; sum_d max(q_d·min_d, q_d·max_d) bounds every logit of the block from above, and the
 * blocks with the highest bounds are attended to (decode.sparseAttention).
 */
import { native } from './native';
import { check4d, checkLengths, layoutCode, opStream, sameDevice, withScope, type LayoutOptions, type OpOptions } from './common';
import { checkTensor, type Tensor } from './tensor';
import { checkInt, checkOneOf, checkOptions, invalid, invalidText, isArray } from './validate';

/** Per-block key bounds; keeps its block size. */
export interface QuestMetadata {
  /** f32 [B, Hkv, ceil(N / blockSize), D]: elementwise min over each block's valid tokens (+Infinity for an empty block). */
  min: Tensor;
  /** Same shape: elementwise max (-Infinity for an empty block). */
  max: Tensor;
  blockSize: number;
}

export interface MetadataOptions extends LayoutOptions, OpOptions {
  /** Tokens per block (>= 1). */
  blockSize: number;
  /** Real lengths of right-padded rows (0 <= seqLens[b] <= N): tokens past them count in no block. */
  seqLens?: Int32Array | readonly number[];
}

export interface UpdateOptions extends LayoutOptions, OpOptions {
  /** First token that changed: one for every row, or one per row. Blocks holding tokens >= from are recomputed. */
  from: number | Int32Array | readonly number[];
  seqLens?: Int32Array | readonly number[];
}

export interface SelectOptions extends LayoutOptions, OpOptions {
  /** Number of blocks to select per row (1 <= blocks <= number of blocks). */
  blocks: number;
  /** How the bounds of a group's G query heads combine: 'sum' (default), 'max', or 'none' (one selection per query head). */
  groupReduce?: 'sum' | 'max' | 'none';
}

function own(o: Record<string, unknown>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined;
}

/**
 * Builds the block metadata of a key cache: min and max of every block of `blockSize` tokens,
 * over the block's tokens below seqLens[b].
 *
 * @param keys [B, Hkv, N, D] ('bhsd') or [B, N, Hkv, D] ('bshd'), f32/f16/bf16
 * @example
 * ```ts
 * const keys = Tensor.zeros([1, 8, 4096, 128], 'bf16', 'cpu');
 * const meta = quest.metadata(keys, { blockSize: 16 }); // meta.min, meta.max: [1, 8, 256, 128]
 * ```
 */
export function metadata(keys: Tensor, options: MetadataOptions): QuestMetadata {
  const op = 'quest.metadata';
  const opts = checkOptions(op, options);
  const { layout, code } = layoutCode(op, own(opts, 'layout'));
  const { t: k, dims: kd } = check4d(op, 'keys', keys, layout);
  const blockSize = checkInt(op, 'options.blockSize', own(opts, 'blockSize'), 1, 0x7fffffff);
  const seqLens = checkLengths(op, 'options.seqLens', own(opts, 'seqLens'), kd.B, 0, kd.S);
  const stream = opStream(op, opts as { stream?: unknown }, k._deviceIndex);
  const nb = Math.ceil(kd.S / blockSize);
  return withScope(k._deviceIndex, stream, (scope) => {
    const min = scope.output([kd.B, kd.H, nb, kd.D], 'f32');
    const max = scope.output([kd.B, kd.H, nb, kd.D], 'f32');
    native.questMetadata(k, min, max, { layout: code, blockSize, seqLens }, stream);
    return { min, max, blockSize };
  });
}

/** What update and select both read first: the options, the metadata, the layout and a 4-D tensor on the metadata's device. */
function checkMetaCall(op: string, meta: unknown, name: string, tensor: unknown, options: unknown) {
  const opts = checkOptions(op, options);
  const m = checkMeta(op, meta);
  const { layout, code } = layoutCode(op, own(opts, 'layout'));
  const { t, dims } = check4d(op, name, tensor, layout);
  sameDevice(op, [t, m.min]);
  return { opts, m, layout, code, t, dims };
}

function checkMeta(op: string, meta: unknown): QuestMetadata {
  if (meta === null || typeof meta !== 'object' || isArray(meta)) throw invalid(op, 'meta', 'a Quest metadata object { min, max, blockSize }', meta);
  const m = meta as Record<string, unknown>;
  const min = checkTensor(op, 'meta.min', own(m, 'min'));
  const max = checkTensor(op, 'meta.max', own(m, 'max'));
  const blockSize = checkInt(op, 'meta.blockSize', own(m, 'blockSize'), 1, 0x7fffffff);
  sameDevice(op, [min, max]);
  if (min.dtype !== 'f32' || min.shape.length !== 4) throw invalidText(op, 'meta.min', 'an f32 tensor [B, Hkv, blocks, D]', `${min.dtype} [${min.shape.join(', ')}]`);
  if (max.dtype !== 'f32' || max.shape.length !== 4 || max.shape.some((d, i) => d !== min.shape[i])) {
    throw invalidText(op, 'meta.max', `an f32 tensor [${min.shape.join(', ')}]`, `${max.dtype} [${max.shape.join(', ')}]`);
  }
  return { min, max, blockSize };
}

/**
 * Refreshes the metadata after tokens were written at positions >= `from`: only the blocks that
 * hold such tokens are recomputed, so a decode loop never rescans the cache.
 *
 * @example
 * ```ts
 * // the cache grew from n to n + 1 tokens (keys preallocated for N)
 * quest.update(meta, keys, { from: n, seqLens: Int32Array.of(n + 1) });
 * ```
 */
export function update(meta: QuestMetadata, keys: Tensor, options: UpdateOptions): QuestMetadata {
  const op = 'quest.update';
  const { opts, m, code, t: k, dims: kd } = checkMetaCall(op, meta, 'keys', keys, options);
  const nb = Math.ceil(kd.S / m.blockSize);
  const want = [kd.B, kd.H, nb, kd.D];
  if (m.min.shape.some((d, i) => d !== want[i])) throw invalidText(op, 'meta.min', `shape [${want.join(', ')}] (the keys' blocks)`, `[${m.min.shape.join(', ')}]`);
  const fromIn = own(opts, 'from');
  let from: number | undefined;
  let fromRows: Int32Array | undefined;
  if (typeof fromIn === 'number') from = checkInt(op, 'options.from', fromIn, 0, kd.S);
  else if (fromIn instanceof Int32Array || isArray(fromIn)) fromRows = checkLengths(op, 'options.from', fromIn, kd.B, 0, kd.S);
  else throw invalid(op, 'options.from', `an integer in [0, ${kd.S}] or one per row`, fromIn);
  const seqLens = checkLengths(op, 'options.seqLens', own(opts, 'seqLens'), kd.B, 0, kd.S);
  const stream = opStream(op, opts as { stream?: unknown }, k._deviceIndex);
  native.questMetadata(k, m.min, m.max, { layout: code, blockSize: m.blockSize, seqLens, from: from ?? 0, fromRows }, stream);
  return meta;
}

/**
 * Selects the `blocks` blocks with the highest Quest bound for the step's query: bound =
 * sum_d max(q_d·min_d, q_d·max_d), combined over the G query heads of a KV head. Ties go to the
 * lower block; the ids come out ascending. A row with fewer non-empty blocks than `blocks` is
 * padded with -1 at its end (decode.sparseAttention skips them).
 *
 * @param q [B, Hq, 1, D] ('bhsd') or [B, 1, Hq, D] ('bshd')
 * @returns i32 [B, Hkv, blocks] ([B, Hq, blocks] with groupReduce 'none')
 * @example
 * ```ts
 * const blocks = quest.select(q, meta, { blocks: Math.ceil(meta.min.shape[2] / 8) });
 * const { out } = decode.sparseAttention(q, keys, values, { blocks, blockSize: meta.blockSize });
 * ```
 */
export function select(q: Tensor, meta: QuestMetadata, options: SelectOptions): Tensor {
  const op = 'quest.select';
  const { opts, m, code, t: qt, dims: qd } = checkMetaCall(op, meta, 'q', q, options);
  const [B, Hkv, nb, D] = m.min.shape;
  if (qd.B !== B) throw invalidText(op, 'q', `batch ${B} (the metadata's)`, `${qd.B}`);
  if (qd.D !== D) throw invalidText(op, 'q', `head dim ${D} (the metadata's)`, `${qd.D}`);
  if (Hkv === 0 || qd.H % Hkv !== 0) throw invalidText(op, 'q', `a head count that is a multiple of the metadata's ${Hkv}`, `${qd.H}`);
  if (qd.S !== 1) throw invalidText(op, 'q', 'one query token', `${qd.S}`);
  const k = checkInt(op, 'options.blocks', own(opts, 'blocks'), 1, Math.max(nb, 1));
  const grIn = own(opts, 'groupReduce');
  const gr = grIn === undefined ? 'sum' : checkOneOf(op, 'options.groupReduce', grIn, ['sum', 'max', 'none'] as const);
  const stream = opStream(op, opts as { stream?: unknown }, qt._deviceIndex);
  return withScope(qt._deviceIndex, stream, (scope) => {
    const out = scope.output([B, gr === 'none' ? qd.H : Hkv, k], 'i32');
    native.questSelect(qt, m.min, m.max, out, { layout: code, k, groupReduce: gr === 'sum' ? 1 : gr === 'max' ? 2 : 3 }, stream);
    return out;
  });
}
