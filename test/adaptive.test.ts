/**
 * adaptive.select (AdaKV's safeguard + flattened top-k, docs/ALGORITHMS.md "Adaptive budgets"):
 * the CPU backend against the plain sort reference on fresh random inputs with many ties and
 * NaNs, dense and ragged inputs, exact error messages; then CUDA against the CPU backend.
 */
import { describe, expect, it } from 'vitest';
import { adaptive, Tensor, type Device } from '../lib/index';
import { cudaDevices, describeCuda, expectIdentical, expectKvsiftError, testRng, type Rng } from './helpers';
import { adaptiveSelect, denseLayout, type HostRagged } from '../reference/adaptive';

/** Scores with ties (a few distinct values), NaNs, infinities and signed zeros. */
function tiedScores(rng: Rng, n: number): Float32Array {
  const s = new Float32Array(n);
  const specials = [NaN, Infinity, -Infinity, 0, -0];
  for (let i = 0; i < n; i++) {
    const u = rng.float();
    s[i] = u < 0.08 ? specials[rng.int(0, specials.length - 1)] : u < 0.5 ? rng.int(-3, 3) : rng.normal();
  }
  return s;
}

interface DenseCase {
  B: number;
  H: number;
  N: number;
  scores: Float32Array;
  lengths?: Int32Array;
  budget: number;
  window: number;
  minPerHead: number;
}

function denseCase(rng: Rng, big = false): DenseCase {
  const B = rng.int(1, 3);
  const H = rng.int(1, 5);
  const N = big ? rng.int(500, 3000) : rng.int(3, 60);
  const window = rng.int(0, Math.min(4, N));
  const minPerHead = rng.int(0, Math.min(3, N - window));
  const safeguard = window + minPerHead;
  const lengths = rng.float() < 0.5 ? Int32Array.from({ length: B }, () => rng.int(Math.max(safeguard, 1), N)) : undefined;
  const minLen = lengths ? Math.min(...lengths) : N;
  const lo = Math.max(1, H * safeguard);
  const budget = rng.int(lo, Math.max(lo, H * minLen));
  return { B, H, N, scores: tiedScores(rng, B * H * N), lengths, budget, window, minPerHead };
}

function runDense(c: DenseCase, device: Device) {
  const s = Tensor.from(c.scores, { shape: [c.B, c.H, c.N], device });
  const sel = adaptive.select(s, { budget: c.budget, window: c.window, minPerHead: c.minPerHead, lengths: c.lengths });
  const out = { positions: sel.positions.toArray() as Int32Array, indptr: sel.indptr.toArray() as Int32Array };
  s.dispose();
  sel.positions.dispose();
  sel.indptr.dispose();
  return out;
}

/** A ragged layout with room after each head's live rows, and garbage scores in the room. */
function raggedCase(rng: Rng) {
  const B = rng.int(1, 3);
  const H = rng.int(1, 4);
  const window = rng.int(0, 3);
  const minPerHead = rng.int(0, 2);
  const safeguard = window + minPerHead;
  const lens: number[] = [];
  const indptr = [0];
  for (let bh = 0; bh < B * H; bh++) {
    const len = rng.int(Math.max(safeguard, 1), safeguard + 40);
    lens.push(len);
    indptr.push(indptr[bh] + len + rng.int(0, 5));
  }
  const rows = indptr[B * H];
  const rowTokens = Array.from({ length: B }, (_, b) => lens.slice(b * H, b * H + H).reduce((x, y) => x + y, 0));
  const lo = Math.max(1, H * safeguard);
  const budget = rng.int(lo, Math.max(lo, Math.min(...rowTokens)));
  return { B, H, lens, indptr, rows, rowTokens, budget, window, minPerHead, scores: tiedScores(rng, rows) };
}

function runRagged(c: ReturnType<typeof raggedCase>, device: Device) {
  const s = Tensor.from(c.scores, { device });
  const indptr = Tensor.from(Int32Array.from(c.indptr), { device });
  const lens = Tensor.from(Int32Array.from(c.lens), { device });
  const ragged = { batch: c.B, heads: c.H, indptr, lens, rowTokens: c.rowTokens, minHeadTokens: c.window + c.minPerHead };
  const sel = adaptive.select(s, { budget: c.budget, window: c.window, minPerHead: c.minPerHead, ragged });
  const out = { positions: sel.positions.toArray() as Int32Array, indptr: sel.indptr.toArray() as Int32Array };
  for (const t of [s, indptr, lens, sel.positions, sel.indptr]) t.dispose();
  return out;
}

describe('adaptive.select', () => {
  it('matches the reference on dense scores with ties, NaNs and padding', () => {
    const rng = testRng();
    for (let trial = 0; trial < 40; trial++) {
      const c = denseCase(rng, trial % 10 === 9);
      const got = runDense(c, 'cpu');
      const ref = adaptiveSelect(c.scores, denseLayout(c.B, c.H, c.N, c.lengths), c);
      expectIdentical(got.indptr, ref.indptr, `indptr, trial ${trial}`);
      expectIdentical(got.positions, ref.positions, `positions, trial ${trial}`);
    }
  });

  it('matches the reference on a ragged cache with append room', () => {
    const rng = testRng();
    for (let trial = 0; trial < 30; trial++) {
      const c = raggedCase(rng);
      const got = runRagged(c, 'cpu');
      const ref = adaptiveSelect(c.scores, { B: c.B, H: c.H, indptr: c.indptr, lens: c.lens } as HostRagged, c);
      expectIdentical(got.indptr, ref.indptr, `indptr, trial ${trial}`);
      expectIdentical(got.positions, ref.positions, `positions, trial ${trial}`);
    }
  });

  it('gives concentrated heads fewer tokens than diffuse ones', () => {
    // head 0: 4 strong keys and nothing else; head 1: flat. A shared budget of 12 takes head 0's
    // 4 and 8 of head 1's, while the safeguard keeps 2 per head at least.
    const N = 16;
    const s = new Float32Array(2 * N);
    for (let j = 0; j < N; j++) {
      s[j] = j % 4 === 0 ? 1 : 0.001;
      s[N + j] = 0.05;
    }
    const sel = adaptive.select(Tensor.from(s, { shape: [1, 2, N], device: 'cpu' }), { budget: 12, minPerHead: 2 });
    expect(Array.from(sel.indptr.toArray())).toEqual([0, 4, 12]);
    expect(Array.from(sel.positions.toArray()).slice(0, 4)).toEqual([0, 4, 8, 12]);
  });

  it('keeps the window and the safeguard even when other heads score higher', () => {
    const N = 10;
    const s = new Float32Array(2 * N);
    for (let j = 0; j < N; j++) {
      s[j] = 100 + j; // head 0 outranks head 1 everywhere
      s[N + j] = j === 3 ? 5 : 1;
    }
    const sel = adaptive.select(Tensor.from(s, { shape: [1, 2, N], device: 'cpu' }), { budget: 13, window: 2, minPerHead: 1 });
    const pos = Array.from(sel.positions.toArray());
    const ind = Array.from(sel.indptr.toArray());
    expect(ind).toEqual([0, 10, 13]);
    expect(pos.slice(10)).toEqual([3, 8, 9]);
  });

  it('rejects invalid budgets and inputs with clear messages', () => {
    const s = Tensor.from(new Float32Array(2 * 3 * 8), { shape: [2, 3, 8], device: 'cpu' });
    expectKvsiftError(() => adaptive.select(s, { budget: 5, window: 1, minPerHead: 1 }), 'ERR_INVALID_ARG',
      'adaptive.select: expected at least H × (window + minPerHead) = 3 × 2 = 6 for options.budget, but received 5');
    expectKvsiftError(() => adaptive.select(s, { budget: 25 }), 'ERR_INVALID_ARG',
      'adaptive.select: expected at most the valid tokens of batch row 0 over all heads (3 × 8 = 24) for options.budget, but received 25');
    expectKvsiftError(() => adaptive.select(s, { budget: 16, lengths: [8, 5] }), 'ERR_INVALID_ARG',
      'adaptive.select: expected at most the valid tokens of batch row 1 over all heads (3 × 5 = 15) for options.budget, but received 16');
    expectKvsiftError(() => adaptive.select(s, { budget: 12, window: 3, lengths: [8, 2] }), 'ERR_INVALID_ARG',
      'adaptive.select: expected an integer in [3, 8] for options.lengths[1], but received 2');
    expectKvsiftError(() => adaptive.select(s, { budget: 0 }), 'ERR_INVALID_ARG',
      'adaptive.select: expected an integer in [1, 2147483647] for options.budget, but received 0');
    const flat = Tensor.from(new Float32Array(8), { device: 'cpu' });
    expectKvsiftError(() => adaptive.select(flat, { budget: 2 }), 'ERR_INVALID_ARG',
      'adaptive.select: expected an f32 tensor [B, H, N] for scores, but received [8]');
    const i32 = Tensor.from(new Int32Array(8), { shape: [1, 1, 8], device: 'cpu' });
    expectKvsiftError(() => adaptive.select(i32, { budget: 2 }), 'ERR_INVALID_ARG',
      "adaptive.select: expected 'f32' for scores.dtype, but received 'i32'");
    const indptr = Tensor.from(new Int32Array([0, 4, 8]), { device: 'cpu' });
    expectKvsiftError(() => adaptive.select(flat, { budget: 9, ragged: { batch: 1, heads: 2, indptr, rowTokens: [8] } }), 'ERR_INVALID_ARG',
      'adaptive.select: expected at most the valid tokens of batch row 0 over all heads (8) for options.budget, but received 9');
    expectKvsiftError(() => adaptive.select(flat, { budget: 4, ragged: { batch: 1, heads: 3, indptr } }), 'ERR_INVALID_ARG',
      'adaptive.select: expected an i32 tensor [4] for options.ragged.indptr, but received i32 [3]');
    for (const t of [s, flat, i32, indptr]) t.dispose();
  });
});

describeCuda('adaptive.select cuda', () => {
  it('splits long rows over several blocks with the same result (ties across chunks, budgets up to the row)', () => {
    const rng = testRng();
    for (const device of cudaDevices()) {
      for (const flavor of ['ties', 'flat', 'full'] as const) {
        const [B, H, N] = [2, 4, rng.int(4500, 6000)];
        const scores = flavor === 'flat' ? new Float32Array(B * H * N).fill(0.5) : tiedScores(rng, B * H * N);
        const budget = flavor === 'full' ? H * N - rng.int(0, 3) : rng.int(H * 8, H * N / 2);
        const c: DenseCase = { B, H, N, scores, budget, window: 3, minPerHead: 5 };
        const got = runDense(c, device);
        const cpu = runDense(c, 'cpu');
        expectIdentical(got.indptr, cpu.indptr, `${flavor} indptr`);
        expectIdentical(got.positions, cpu.positions, `${flavor} positions`);
      }
    }
  });

  it('equals the CPU backend on dense and ragged inputs', () => {
    const rng = testRng();
    for (const device of cudaDevices()) {
      for (let trial = 0; trial < 12; trial++) {
        const c = denseCase(rng, trial % 4 === 3);
        const got = runDense(c, device);
        const cpu = runDense(c, 'cpu');
        expectIdentical(got.indptr, cpu.indptr, `indptr, trial ${trial}`);
        expectIdentical(got.positions, cpu.positions, `positions, trial ${trial}`);
        const r = raggedCase(rng);
        const rg = runRagged(r, device);
        const rc = runRagged(r, 'cpu');
        expectIdentical(rg.indptr, rc.indptr, `ragged indptr, trial ${trial}`);
        expectIdentical(rg.positions, rc.positions, `ragged positions, trial ${trial}`);
      }
    }
  });
});
