/**
 * Layer budgets (docs/ALGORITHMS.md "Layer budgets"): PyramidKV's linear schedule rounded by
 * largest remainder, and the uniform split, against the real schedule on random arguments.
 */
import { describe, expect, it } from 'vitest';
import { budgets } from '../lib/index';
import { expectKvsiftError, testRng } from './helpers';
import { pyramidReal } from '../reference/adaptive';

const sum = (a: number[]): number => a.reduce((x, y) => x + y, 0);

describe('budgets.pyramid', () => {
  it('sums to total, never increases with depth and stays within 1 of the real schedule', () => {
    const rng = testRng();
    for (let trial = 0; trial < 300; trial++) {
      const layers = rng.int(1, 80);
      const window = rng.int(0, 64);
      const total = layers * window + rng.int(0, 200000);
      const beta = rng.float() < 0.3 ? 20 : rng.uniform(1, 50);
      const got = budgets.pyramid({ layers, total, window, beta });
      const real = pyramidReal(layers, total, window, beta);
      expect(got.length).toBe(layers);
      expect(sum(got), `trial ${trial}`).toBe(total);
      for (let l = 0; l < layers; l++) {
        expect(Number.isInteger(got[l])).toBe(true);
        expect(Math.abs(got[l] - real[l]), `layer ${l} of trial ${trial}`).toBeLessThan(1);
        if (l > 0) expect(got[l], `layer ${l} of trial ${trial}`).toBeLessThanOrEqual(got[l - 1]);
        expect(got[l]).toBeGreaterThanOrEqual(window);
      }
    }
  });

  it('follows the formula on a worked example', () => {
    // A = 100 - 10 = 90, min = 4.5, max = 175.5, step = 171 / 3 = 57:
    // real = [185.5, 128.5, 71.5, 14.5]; the two remainders tie, so the lower layers round up.
    expect(budgets.pyramid({ layers: 4, total: 400, window: 10 })).toEqual([186, 129, 71, 14]);
    expect(budgets.pyramid({ layers: 1, total: 77, window: 5 })).toEqual([77]);
    // beta = 1: min = max = A, a flat schedule
    expect(budgets.pyramid({ layers: 3, total: 30, window: 2, beta: 1 })).toEqual([10, 10, 10]);
  });

  it('rejects bad arguments', () => {
    expectKvsiftError(() => budgets.pyramid({ layers: 4, total: 30, window: 10 }), 'ERR_INVALID_ARG',
      'budgets.pyramid: expected at least layers × window = 4 × 10 = 40 for options.total, but received 30');
    expectKvsiftError(() => budgets.pyramid({ layers: 0, total: 30, window: 1 }), 'ERR_INVALID_ARG',
      'budgets.pyramid: expected an integer in [1, 2147483647] for options.layers, but received 0');
    expectKvsiftError(() => budgets.pyramid({ layers: 2, total: 30, window: 1, beta: 0.5 }), 'ERR_INVALID_ARG',
      'budgets.pyramid: expected a number >= 1 for options.beta, but received 0.5');
  });
});

describe('budgets.uniform', () => {
  it('gives floor(total / layers), plus one to the first total mod layers layers', () => {
    const rng = testRng();
    expect(budgets.uniform({ layers: 3, total: 10 })).toEqual([4, 3, 3]);
    for (let trial = 0; trial < 100; trial++) {
      const layers = rng.int(1, 100);
      const total = rng.int(0, 100000);
      const got = budgets.uniform({ layers, total });
      expect(sum(got)).toBe(total);
      got.forEach((c, l) => expect(c).toBe(Math.floor(total / layers) + (l < total % layers ? 1 : 0)));
    }
    expectKvsiftError(() => budgets.uniform({ layers: 2, total: -1 }), 'ERR_INVALID_ARG',
      'budgets.uniform: expected an integer >= 0 for options.total, but received -1');
  });
});
