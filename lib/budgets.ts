/**
 * Layer-wise cache budgets (docs/ALGORITHMS.md "Layer budgets"): how many tokens each layer
 * keeps, window included, for a total over all layers. PyramidKV (arXiv 2406.02069) gives lower
 * layers more; uniform splits evenly.
 */
import { checkInt, checkNumber, checkOptions, invalidText } from './validate';

export interface PyramidOptions {
  /** Number of layers (>= 1). */
  layers: number;
  /** Tokens over all layers, windows included. */
  total: number;
  /** Each layer's observation window, counted in its capacity. */
  window: number;
  /** The pyramid's steepness: the last layer's share above the window is 1/beta of the mean's. Default 20 (>= 1). */
  beta?: number;
}

export interface UniformOptions {
  layers: number;
  total: number;
}

/**
 * PyramidKV's linear schedule: with A = total / layers − window, min = A / beta and
 * max = 2A − min, layer l gets window + max − l · (max − min) / (layers − 1) (one layer gets
 * the whole total). Rounded by
 * largest remainder (ties to the lower layer), so the capacities sum exactly to `total`, never
 * increase with depth and stay within 1 of the real schedule.
 *
 * @returns per-layer capacities, window included
 * @example
 * ```ts
 * budgets.pyramid({ layers: 32, total: 32 * 2048, window: 32 }); // [4045, 3984, ..., 132]
 * ```
 */
export function pyramid(options: PyramidOptions): number[] {
  const op = 'budgets.pyramid';
  const opts = checkOptions(op, options) as unknown as PyramidOptions;
  const layers = checkInt(op, 'options.layers', opts.layers, 1, 0x7fffffff);
  const total = checkInt(op, 'options.total', opts.total, 0);
  const window = checkInt(op, 'options.window', opts.window, 0);
  const beta = opts.beta === undefined ? 20 : checkNumber(op, 'options.beta', opts.beta, { min: 1 });
  if (total < layers * window) {
    throw invalidText(op, 'options.total', `at least layers × window = ${layers} × ${window} = ${layers * window}`, `${total}`);
  }
  // One layer has no pyramid: it gets the whole total (the formula's max would overshoot it).
  if (layers === 1) return [total];
  const A = total / layers - window;
  const min = A / beta;
  const max = 2 * A - min;
  const step = (max - min) / (layers - 1);
  const real = Array.from({ length: layers }, (_, l) => window + max - l * step);
  return largestRemainder(real, total);
}

/**
 * floor(total / layers) for every layer, plus one for the first total mod layers layers.
 *
 * @example
 * ```ts
 * budgets.uniform({ layers: 3, total: 10 }); // [4, 3, 3]
 * ```
 */
export function uniform(options: UniformOptions): number[] {
  const op = 'budgets.uniform';
  const opts = checkOptions(op, options) as unknown as UniformOptions;
  const layers = checkInt(op, 'options.layers', opts.layers, 1, 0x7fffffff);
  const total = checkInt(op, 'options.total', opts.total, 0);
  const base = Math.floor(total / layers);
  const extra = total % layers;
  return Array.from({ length: layers }, (_, l) => base + (l < extra ? 1 : 0));
}

/** Integers within 1 of `real` summing to `total` (= the sum of `real`): floors, then +1 to the largest remainders, ties to the lower index. */
function largestRemainder(real: number[], total: number): number[] {
  // A value a rounding error away from an integer is that integer (1 - 2e-9 is not a remainder).
  const snap = real.map((x) => (Math.abs(x - Math.round(x)) < 1e-9 * Math.max(1, Math.abs(x)) ? Math.round(x) : x));
  const out = snap.map((x) => Math.max(0, Math.floor(x)));
  let left = total - out.reduce((a, b) => a + b, 0);
  const order = snap.map((x, l) => ({ l, r: x - Math.floor(x) })).sort((a, b) => b.r - a.r || a.l - b.l);
  for (let i = 0; left > 0 && i < order.length; i++, left--) out[order[i].l] += 1;
  return out;
}
