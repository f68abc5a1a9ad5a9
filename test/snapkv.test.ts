/**
 * SnapKV (docs/ALGORITHMS.md, "SnapKV"): one case table each of snapkv.scores (every dtype x
 * groupReduce, GQA, odd sizes, both layouts, seqLens, lse), snapkv.pool and snapkv.compress run on
 * every backend, on fresh random inputs each run (the seed is printed on failure): the CPU backend
 * against the float64 reference in reference/snapkv.js, a CUDA device against the CPU backend on
 * the same inputs; then hand-computed cases and argument validation.
 */
import { describe, expect, it } from 'vitest';
import { KvsiftError, memoryStats, snapkv, Stream, Tensor, type Device, type Layout } from '../lib/index';
import type { GroupReduce, PoolKind } from '../lib/snapkv';
import {
  CUDA_EMULATED,
  cudaDevices,
  describeCuda,
  describeEachDevice,
  expectClose,
  expectIdentical,
  expectKvsiftError,
  expectSameBytes,
  LAYOUTS,
  makeCache,
  rawBhsd,
  rounded,
  tensorScope,
  testRng,
  type FloatDType,
  type Rng,
} from './helpers';
import { gatherRef, selectionViolation } from '../reference/select';
import { poolRef, snapkvCompressRef, snapkvScoresRef, type Dims } from '../reference/snapkv';

// Votes are fp32 math over inputs already rounded to their dtype, so every dtype gets the same
// relative bound against the float64 reference; the absolute floor covers near-zero votes.
const VOTE_TOL = { rtol: 1e-4, atol: 1e-7 };

const { track, trackAll } = tensorScope();

/** A bhsd f32 array as a tensor in `layout` and `dtype` on `device`, disposed after the test. */
function upload(data: Float32Array, B: number, H: number, S: number, D: number, dtype: FloatDType, layout: Layout, device: Device): Tensor {
  return track(makeCache(data, [B, H, S, D], dtype, layout, device).t);
}

interface Inputs {
  dims: Dims;
  dtype: FloatDType;
  /** bhsd f32 data before rounding */
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  /** rounded to dtype (what the reference uses) */
  qr: Float32Array;
  kr: Float32Array;
}

function randomInputs(rng: Rng, dims: Dims, dtype: FloatDType, Dv = dims.D): Inputs {
  const { B, Hq, Hkv, N, W, D } = dims;
  const q = rng.normalArray(B * Hq * W * D);
  const k = rng.normalArray(B * Hkv * N * D);
  const v = rng.normalArray(B * Hkv * N * Dv);
  return { dims, dtype, q, k, v, qr: rounded(q, dtype), kr: rounded(k, dtype) };
}

function tensors(inp: Inputs, layout: Layout, device: Device, Dv = inp.dims.D): { q: Tensor; k: Tensor; v: Tensor } {
  const { B, Hq, Hkv, N, W, D } = inp.dims;
  return {
    q: upload(inp.q, B, Hq, W, D, inp.dtype, layout, device),
    k: upload(inp.k, B, Hkv, N, D, inp.dtype, layout, device),
    v: upload(inp.v, B, Hkv, N, Dv, inp.dtype, layout, device),
  };
}

function lseTensor(lse: Float64Array, dims: Dims, device: Device): Tensor {
  return track(Tensor.from(Float32Array.from(lse), { shape: [dims.B, dims.Hq, dims.W], device }));
}

/** An odd N with a window that does not divide it. */
function oddSizes(rng: Rng, nLo: number, nHi: number, wLo: number, wHi: number): { N: number; W: number } {
  for (;;) {
    const N = rng.int(nLo, nHi) | 1;
    const W = rng.int(wLo, wHi);
    if (W > 1 && N % W === 0) continue;
    return { N, W };
  }
}

function describeCase(c: object): string {
  return JSON.stringify(c);
}

// ---------------------------------------------------------------------------------------------

interface SnapkvCase {
  B: number;
  Hkv: number;
  G: number;
  D: number;
  dtype: FloatDType;
  groupReduce: GroupReduce;
  seqLens: boolean;
  lse: boolean;
}

const GROUPS = [1, 4, 8];
const HEAD_DIMS = [64, 128, 40];

/** One row per dtype x groupReduce; `row(i, ...)` rotates the other parameters with i. */
function caseTable<T>(row: (i: number, dtype: FloatDType, groupReduce: GroupReduce) => T): T[] {
  const out: T[] = [];
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    for (const groupReduce of ['mean', 'sum', 'max', 'none'] as const) out.push(row(out.length, dtype, groupReduce));
  }
  return out;
}

/** snapkv.scores: every dtype x groupReduce, with G, D, seqLens and lse rotating through their values. */
const SCORES_CASES: SnapkvCase[] = caseTable((i, dtype, groupReduce) => ({
  B: 1 + (i % 3),
  Hkv: 1 + ((i >> 1) % 2),
  G: GROUPS[i % 3],
  D: HEAD_DIMS[(i + (i >> 2)) % 3],
  dtype,
  groupReduce,
  seqLens: i % 2 === 1,
  lse: (i >> 1) % 2 === 0,
}));

/** snapkv.compress: the same, with the pooling kind and kernel rotating too. */
const COMPRESS_CASES: Array<SnapkvCase & { pooling: PoolKind; kernel: number }> = caseTable((i, dtype, groupReduce) => ({
  B: 1 + ((i + 1) % 2),
  Hkv: 1 + (i % 2),
  G: GROUPS[(i + 1) % 3],
  D: HEAD_DIMS[i % 3],
  dtype,
  groupReduce,
  pooling: i % 2 === 0 ? 'max' : 'avg',
  kernel: [7, 5, 1, 3][i % 4],
  seqLens: (i >> 1) % 2 === 1,
  lse: i % 3 === 0,
}));

function makeSeqLens(rng: Rng, B: number, N: number, W: number): number[] {
  // with several rows the first is full length; the others (or a lone row) random in [W, N)
  return Array.from({ length: B }, (_, b) => (b === 0 && B > 1 ? N : rng.int(W, N - 1)));
}

interface CheckedCompress {
  positions: Int32Array;
  keys: Float32Array | Uint16Array;
  values: Float32Array | Uint16Array;
}

/**
 * Checks one compress result against the reference: shapes; every row's prefix ascending and
 * chosen correctly (sets, robust to near-ties of the pooled votes), then the window positions;
 * and the gathered K/V rows byte-exact at the positions it chose.
 */
function checkCompress(
  got: { keys: Tensor; values: Tensor; positions: Tensor },
  ref: ReturnType<typeof snapkvCompressRef>,
  inp: Inputs,
  raw: { k: Float32Array | Uint16Array; v: Float32Array | Uint16Array },
  layout: Layout,
  opts: { window: number; seqLens?: number[] },
  label: string,
): CheckedCompress {
  const { B, Hkv, N, D } = inp.dims;
  const { Hout, C } = ref;
  const W = opts.window;
  expect(got.positions.shape).toEqual([B, Hout, C]);
  expect(got.positions.dtype).toBe('i32');
  expect(got.keys.dtype).toBe(inp.dtype);
  expect(got.keys.shape).toEqual(layout === 'bhsd' ? [B, Hout, C, D] : [B, C, Hout, D]);
  const pos = got.positions.toArray() as Int32Array;
  if (N <= C) {
    expectIdentical(pos, ref.positions, `positions 0..N-1 (${label})`);
  } else {
    const select = C - W;
    const M = N - W;
    let exactRows = 0;
    for (let r = 0; r < B * Hout; r++) {
      const L = opts.seqLens ? opts.seqLens[Math.floor(r / Hout)] : N;
      const row = pos.subarray(r * C, (r + 1) * C);
      for (let i = 1; i < select; i++) {
        if (!(row[i] > row[i - 1])) throw new Error(`row ${r}: prefix positions not strictly ascending at ${i}: ${row[i - 1]}, ${row[i]} (${label})`);
      }
      if (select > 0) {
        const v = selectionViolation(ref.pooled.subarray(r * M, (r + 1) * M), L - W, row.subarray(0, select));
        if (v !== '') throw new Error(`row ${r}: ${v} (${label})`);
      }
      for (let i = 0; i < W; i++) expect(row[select + i]).toBe(L - W + i);
      if (expectRowEqual(row, ref.positions.subarray(r * C, (r + 1) * C))) exactRows++;
    }
    // near-ties are rare on random normals: nearly every row matches the reference exactly
    expect(exactRows).toBeGreaterThanOrEqual(Math.ceil(B * Hout * 0.5));
  }
  const group = Hout / Hkv;
  const keys = rawBhsd(got.keys, layout);
  const values = rawBhsd(got.values, layout);
  expectSameBytes(keys, gatherRef(raw.k, B, Hkv, N, D, pos, Hout, C, group), `keys gathered at the chosen positions (${label})`);
  expectSameBytes(values, gatherRef(raw.v, B, Hkv, N, D, pos, Hout, C, group), `values gathered at the chosen positions (${label})`);
  return { positions: pos, keys, values };
}

function expectRowEqual(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

describeEachDevice('snapkv.scores', (device) => {
  const onCpu = device === 'cpu';
  for (const c of SCORES_CASES) {
    it(`${c.dtype} G=${c.G} D=${c.D} B=${c.B} ${c.groupReduce}${c.seqLens ? ' seqLens' : ''}${c.lse ? ' lse' : ''}, both layouts`, () => {
      const rng = testRng();
      // CUDA: longer rows, so N spans several key tiles
      const { N, W } = onCpu ? oddSizes(rng, 60, 700, 1, 40) : oddSizes(rng, 300, 2001, 1, 48);
      const dims: Dims = { B: c.B, Hq: c.Hkv * c.G, Hkv: c.Hkv, N, W, D: c.D };
      const seqLens = c.seqLens ? makeSeqLens(rng, c.B, N, W) : undefined;
      const inp = randomInputs(rng, dims, c.dtype);
      const ref = onCpu || c.lse ? snapkvScoresRef(inp.qr, inp.kr, dims, { groupReduce: c.groupReduce, seqLens }) : undefined;
      const label = describeCase({ ...c, ...dims, seqLens });
      let bhsdVotes: Float32Array | undefined;
      for (const layout of LAYOUTS) {
        const { q, k } = tensors(inp, layout, device);
        // the true lse from the reference (f64), as an engine's prefill would hand it over
        const lse = c.lse ? lseTensor(ref!.lse, dims, device) : undefined;
        const votes = track(snapkv.scores(q, k, { window: W, groupReduce: c.groupReduce, layout, seqLens, lse }));
        const got = votes.toArray() as Float32Array;
        if (!onCpu) {
          const cpu = tensors(inp, layout, 'cpu');
          const cpuVotes = track(snapkv.scores(cpu.q, cpu.k, { groupReduce: c.groupReduce, layout, seqLens })).toArray();
          expectClose(got, cpuVotes, { ...VOTE_TOL, label: `${layout} ${label}` });
          continue;
        }
        expect(votes.shape).toEqual([c.B, ref!.Hout, N - W]);
        expectClose(got, ref!.votes, { ...VOTE_TOL, shape: votes.shape, label: `${layout} ${label}` });
        // a short row's entries past its prefix are exactly 0
        if (seqLens) {
          for (let b = 0; b < c.B; b++)
            for (let h = 0; h < ref!.Hout; h++)
              for (let j = seqLens[b] - W; j < N - W; j++) expect(got[(b * ref!.Hout + h) * (N - W) + j]).toBe(0);
        }
        if (layout === 'bhsd') bhsdVotes = got;
        else expectIdentical(got, bhsdVotes!, `bshd votes equal the bhsd run (${label})`);
      }
      // with the true lse the result matches the run without it
      if (onCpu && c.lse) {
        const { q, k } = tensors(inp, 'bhsd', 'cpu');
        const plain = track(snapkv.scores(q, k, { groupReduce: c.groupReduce, seqLens }));
        expectClose(plain.toArray(), ref!.votes, { ...VOTE_TOL, label: `without lse ${label}` });
      }
    });
  }
});

describeEachDevice('snapkv.pool', (device) => {
  const onCpu = device === 'cpu';
  for (const kind of ['avg', 'max'] as const) {
    it(`${kind}: random rows, odd lengths, narrow and wide kernels, lengths per batch`, () => {
      const rng = testRng();
      for (const kernel of onCpu ? [1, 3, 5, 7, 9, 15, 17, 31, 63] : [1, 3, 7, 31]) {
        // CUDA: long rows over several blocks; the CPU backend is its reference
        const [B, H, M] = onCpu ? [rng.int(1, 3), rng.int(1, 5), rng.int(1, 400) | 1] : [3, 4, 2999];
        const data = kind === 'max' && onCpu ? rng.normalArray(B * H * M) : rng.uniformArray(B * H * M, 0, 1);
        const lengths = onCpu ? (rng.float() < 0.5 ? undefined : Array.from({ length: B }, () => rng.int(0, M))) : [M, rng.int(0, M), rng.int(0, M)];
        const v = track(Tensor.from(data, { shape: [B, H, M], device }));
        const got = track(snapkv.pool(v, { kernel, kind, lengths })).toArray();
        const want = onCpu ? poolRef(data, B * H, M, kernel, kind, lengths, H) : track(snapkv.pool(track(Tensor.from(data, { shape: [B, H, M], device: 'cpu' })), { kernel, kind, lengths })).toArray();
        const label = describeCase({ kind, kernel, B, H, M, lengths });
        if (kind === 'max') expectIdentical(got, Float32Array.from(want), label);
        else expectClose(got, want, { rtol: 2e-6, atol: 1e-7, label });
      }
    });
  }
});

describeEachDevice('snapkv.compress', (device) => {
  const onCpu = device === 'cpu';
  for (const c of COMPRESS_CASES) {
    it(`${c.dtype} G=${c.G} D=${c.D} B=${c.B} ${c.groupReduce} ${c.pooling}${c.kernel}${c.seqLens ? ' seqLens' : ''}${c.lse ? ' lse' : ''}`, async () => {
      const rng = testRng();
      const { N, W } = onCpu ? oddSizes(rng, 120, 900, 1, 40) : oddSizes(rng, 500, 3001, 1, 64);
      const capacity = W + rng.int(1, Math.floor((N - W) / (onCpu ? 3 : 4)));
      const dims: Dims = { B: c.B, Hq: c.Hkv * c.G, Hkv: c.Hkv, N, W, D: c.D };
      const seqLens = c.seqLens ? Array.from({ length: c.B }, (_, b) => (b === 0 && c.B > 1 ? N : rng.int(capacity, N - 1))) : undefined;
      const inp = randomInputs(rng, dims, c.dtype);
      const opts = { window: W, capacity, kernel: c.kernel, pooling: c.pooling, groupReduce: c.groupReduce, seqLens };
      const label = describeCase({ ...dims, ...opts });
      if (onCpu) {
        // both layouts against the float64 reference, and against each other
        const ref = snapkvCompressRef(inp.qr, inp.kr, dims, opts);
        const lse = c.lse ? snapkvScoresRef(inp.qr, inp.kr, dims, { seqLens }).lse : undefined;
        let first: CheckedCompress | undefined;
        for (const layout of LAYOUTS) {
          const t = tensors(inp, layout, 'cpu');
          const raw = { k: rawBhsd(t.k, layout), v: rawBhsd(t.v, layout) };
          const got = trackAll(snapkv.compress(t.q, t.k, t.v, { ...opts, layout, lse: lse ? lseTensor(lse, dims, 'cpu') : undefined }));
          const checked = checkCompress(got, ref, inp, raw, layout, opts, `${layout} ${label}`);
          if (!first) first = checked;
          else {
            expectIdentical(checked.positions, first.positions, `bshd positions equal the bhsd run (${label})`);
            expectSameBytes(checked.keys, first.keys, `bshd keys equal the bhsd run (${label})`);
            expectSameBytes(checked.values, first.values, `bshd values equal the bhsd run (${label})`);
          }
        }
        return;
      }
      // CUDA: one layout per case, on a stream; the CPU backend's pooled votes judge the selection
      const layout: Layout = c.B % 2 === 0 ? 'bshd' : 'bhsd';
      const cpu = tensors(inp, layout, 'cpu');
      const votes = track(snapkv.scores(cpu.q, cpu.k, { groupReduce: c.groupReduce, layout, seqLens }));
      const prefixLens = seqLens?.map((l) => l - W);
      const pooled = track(snapkv.pool(votes, { kernel: c.kernel, kind: c.pooling, lengths: prefixLens })).toArray();
      const gpu = tensors(inp, layout, device);
      const stream = Stream.create(device);
      try {
        // no host synchronization inside compress: everything is queued on the stream
        const got = trackAll(snapkv.compress(gpu.q, gpu.k, gpu.v, { ...opts, layout, stream }));
        await stream.synchronize();
        const Hout = votes.shape[1];
        const M = N - W;
        const pos = (await got.positions.toArrayAsync({ stream })) as Int32Array;
        expect(got.positions.shape).toEqual([c.B, Hout, capacity]);
        for (let r = 0; r < c.B * Hout; r++) {
          const L = seqLens ? seqLens[Math.floor(r / Hout)] : N;
          const row = pos.subarray(r * capacity, (r + 1) * capacity);
          const select = capacity - W;
          for (let i = 1; i < select; i++) expect(row[i]).toBeGreaterThan(row[i - 1]);
          const v = selectionViolation(pooled.subarray(r * M, (r + 1) * M), L - W, row.subarray(0, select), 1e-4, 1e-7);
          if (v !== '') throw new Error(`row ${r}: ${v} (${label})`);
          for (let i = 0; i < W; i++) expect(row[select + i]).toBe(L - W + i);
        }
        const group = Hout / c.Hkv;
        expectSameBytes(rawBhsd(got.keys, layout), gatherRef(rawBhsd(cpu.k, layout), c.B, c.Hkv, N, c.D, pos, Hout, capacity, group), `keys (${label})`);
        expectSameBytes(rawBhsd(got.values, layout), gatherRef(rawBhsd(cpu.v, layout), c.B, c.Hkv, N, c.D, pos, Hout, capacity, group), `values (${label})`);
      } finally {
        stream.dispose();
      }
    });
  }

  it('planted needles survive at 10% capacity, and their key rows are gathered exactly', () => {
    const rng = testRng();
    // CUDA: bf16 and a longer prompt (shorter on the emulated device)
    const { dtype, N, count, capacity, layouts } = onCpu
      ? { dtype: 'f16' as const, N: 3001, count: 6, capacity: 300, layouts: LAYOUTS }
      : { dtype: 'bf16' as const, N: CUDA_EMULATED ? 3001 : 8191, count: 8, capacity: CUDA_EMULATED ? 300 : 819, layouts: ['bhsd' as const] };
    const [B, Hkv, G, W, D] = [1, 2, 4, 32, 128];
    const Hq = Hkv * G;
    const q = new Float32Array(B * Hq * W * D);
    const k = rng.normalArray(B * Hkv * N * D);
    const v = rng.normalArray(B * Hkv * N * D);
    const needles: number[][] = [];
    for (let hk = 0; hk < Hkv; hk++) {
      // a unit direction per KV head; its window queries lean along it, its needles lie on it
      const u = rng.normalArray(D);
      const norm = Math.hypot(...u);
      for (let d = 0; d < D; d++) u[d] /= norm;
      const amp = Math.sqrt(8 * Math.sqrt(D)); // q.k / sqrt(D) ~ 8 for a needle
      for (let g = 0; g < G; g++)
        for (let r = 0; r < W; r++)
          for (let d = 0; d < D; d++) q[((hk * G + g) * W + r) * D + d] = 0.3 * rng.normal() + amp * u[d];
      const pos = rng.sample(N - W, count).sort((a, b) => a - b);
      needles.push(pos);
      for (const p of pos) for (let d = 0; d < D; d++) k[(hk * N + p) * D + d] = amp * u[d] + 0.1 * rng.normal();
    }
    for (const layout of layouts) {
      const qt = upload(q, B, Hq, W, D, dtype, layout, device);
      const kt = upload(k, B, Hkv, N, D, dtype, layout, device);
      const vt = upload(v, B, Hkv, N, D, dtype, layout, device);
      const got = trackAll(snapkv.compress(qt, kt, vt, { window: W, capacity, layout }));
      const pos = got.positions.toArray();
      const rawK = rawBhsd(kt, layout);
      const keys = rawBhsd(got.keys, layout);
      for (let hk = 0; hk < Hkv; hk++) {
        const row = Array.from(pos.subarray(hk * capacity, (hk + 1) * capacity));
        for (const p of needles[hk]) {
          const i = row.indexOf(p);
          expect(i, `needle ${p} of head ${hk} kept (${layout})`).toBeGreaterThanOrEqual(0);
          // and its key row is the needle's, exactly
          expectSameBytes(keys.subarray((hk * capacity + i) * D, (hk * capacity + i + 1) * D), rawK.subarray((hk * N + p) * D, (hk * N + p + 1) * D), `needle ${p} key row`);
        }
      }
    }
  });
});

describe('snapkv.scores: hand-computed', () => {
  it('N=4, W=1, D=1: the one window query votes softmax weights of the prefix', () => {
    // logits = q * k = [0, ln2, ln3, ln4]: p = [1, 2, 3, 4] / 10; the prefix is j < 3
    const q = track(Tensor.from([1], { shape: [1, 1, 1, 1], device: 'cpu' }));
    const k = track(Tensor.from([0, Math.log(2), Math.log(3), Math.log(4)], { shape: [1, 1, 4, 1], device: 'cpu' }));
    const votes = track(snapkv.scores(q, k));
    expect(votes.shape).toEqual([1, 1, 3]);
    expectClose(votes.toArray(), [0.1, 0.2, 0.3], { rtol: 1e-6, atol: 1e-7 });
  });

  it('N=4, W=2, D=1: the causal mask hides the last key from the first window query', () => {
    // query 0 (position 2) sees keys 0..2: p = [1, 2, 3] / 6; query 1 sees all: [1, 2, 3, 4] / 10
    const q = track(Tensor.from([1, 1], { shape: [1, 1, 2, 1], device: 'cpu' }));
    const k = track(Tensor.from([0, Math.log(2), Math.log(3), Math.log(4)], { shape: [1, 1, 4, 1], device: 'cpu' }));
    const votes = track(snapkv.scores(q, k, { window: 2 }));
    expectClose(votes.toArray(), [1 / 6 + 1 / 10, 2 / 6 + 2 / 10], { rtol: 1e-6, atol: 1e-7 });
  });

  it('GQA, Hq=2, Hkv=1: mean, sum, max and none of two heads', () => {
    // head 0: q = 0, uniform p = [1/3, 1/3, 1/3]; head 1: q = 1, logits [0, ln3, 0], p = [1, 3, 1] / 5
    const q = track(Tensor.from([0, 1], { shape: [1, 2, 1, 1], device: 'cpu' }));
    const k = track(Tensor.from([0, Math.log(3), 0], { shape: [1, 1, 3, 1], device: 'cpu' }));
    const expected: Record<GroupReduce, number[]> = {
      mean: [(1 / 3 + 0.2) / 2, (1 / 3 + 0.6) / 2],
      sum: [1 / 3 + 0.2, 1 / 3 + 0.6],
      max: [1 / 3, 0.6],
      none: [1 / 3, 1 / 3, 0.2, 0.6],
    };
    for (const groupReduce of ['mean', 'sum', 'max', 'none'] as const) {
      const votes = track(snapkv.scores(q, k, { groupReduce }));
      expect(votes.shape).toEqual(groupReduce === 'none' ? [1, 2, 2] : [1, 1, 2]);
      expectClose(votes.toArray(), expected[groupReduce], { rtol: 1e-6, atol: 1e-7, label: groupReduce });
    }
  });

  it('seqLens: a short row votes over its own prefix and writes zeros past it', () => {
    // row 1 has L = 3 real tokens of N = 5: its window query sits at position 2
    const q = track(Tensor.from([1, 1], { shape: [2, 1, 1, 1], device: 'cpu' }));
    const k = track(Tensor.from([0, Math.log(2), Math.log(3), 7, 7, 0, Math.log(2), Math.log(5), 9, 9], { shape: [2, 1, 5, 1], device: 'cpu' }));
    const votes = track(snapkv.scores(q, k, { seqLens: [5, 3] }));
    const e1 = Math.exp(7);
    const s0 = 1 + 2 + 3 + 2 * e1;
    expectClose(votes.toArray(), [1 / s0, 2 / s0, 3 / s0, e1 / s0, 1 / 8, 2 / 8, 0, 0], { rtol: 1e-5, atol: 1e-8 });
  });

  it('W = N: the prefix is empty', () => {
    const rng = testRng();
    const q = track(Tensor.from(rng.normalArray(5 * 8), { shape: [1, 1, 5, 8], device: 'cpu' }));
    const k = track(Tensor.from(rng.normalArray(5 * 8), { shape: [1, 1, 5, 8], device: 'cpu' }));
    const votes = track(snapkv.scores(q, k));
    expect(votes.shape).toEqual([1, 1, 0]);
  });
});

describe('snapkv.scores: defaults and invariants', () => {
  it('default options: window = the queries\' length, groupReduce mean, bhsd', () => {
    const rng = testRng();
    const dims: Dims = { B: 1, Hq: 4, Hkv: 2, N: 77, W: 9, D: 64 };
    const inp = randomInputs(rng, dims, 'f32');
    const { q, k } = tensors(inp, 'bhsd', 'cpu');
    const ref = snapkvScoresRef(inp.qr, inp.kr, dims);
    expectClose(track(snapkv.scores(q, k)).toArray(), ref.votes, VOTE_TOL);
  });

  it('votes of each query head sum to the probability mass on the prefix (<= W)', () => {
    const rng = testRng();
    const dims: Dims = { B: 2, Hq: 4, Hkv: 4, N: 151, W: 16, D: 64 };
    const inp = randomInputs(rng, dims, 'bf16');
    const { q, k } = tensors(inp, 'bhsd', 'cpu');
    const got = track(snapkv.scores(q, k, { groupReduce: 'none' })).toArray();
    const M = dims.N - dims.W;
    for (let r = 0; r < dims.B * dims.Hq; r++) {
      let s = 0;
      for (let j = 0; j < M; j++) {
        expect(got[r * M + j]).toBeGreaterThanOrEqual(0);
        s += got[r * M + j];
      }
      expect(s).toBeLessThanOrEqual(dims.W * (1 + 1e-5));
      expect(s).toBeGreaterThan(0);
    }
  });
});

describe('snapkv.pool: hand-computed and 1-D rows', () => {
  it('hand-computed: avg divides by the kernel at the edges too; max padding never wins', () => {
    const v = track(Tensor.from([1, 2, 3, 4, 5], { device: 'cpu' }));
    expectClose(track(snapkv.pool(v, { kernel: 3, kind: 'avg' })).toArray(), [1, 2, 3, 4, 3], { rtol: 1e-7, atol: 0 });
    expectClose(track(snapkv.pool(v, { kernel: 5, kind: 'avg' })).toArray(), [6 / 5, 10 / 5, 15 / 5, 14 / 5, 12 / 5], { rtol: 1e-7, atol: 0 });
    const neg = track(Tensor.from([-1, -2, -3, -5, -4], { device: 'cpu' }));
    expectIdentical(track(snapkv.pool(neg, { kernel: 3, kind: 'max' })).toArray(), [-1, -1, -2, -3, -4]);
    // kernel 1 is the identity
    expectIdentical(track(snapkv.pool(neg, { kernel: 1, kind: 'avg' })).toArray(), [-1, -2, -3, -5, -4]);
    expectIdentical(track(snapkv.pool(neg, { kernel: 1, kind: 'max' })).toArray(), [-1, -2, -3, -5, -4]);
    // a kernel wider than the row
    expectIdentical(track(snapkv.pool(neg, { kernel: 11, kind: 'max' })).toArray(), [-1, -1, -1, -1, -1]);
  });

  it('hand-computed lengths: entries past a row\'s length are padding and come out 0', () => {
    const v = track(Tensor.from([1, 2, 3, 4, -1, -2, -3, -4], { shape: [2, 4], device: 'cpu' }));
    const avg = track(snapkv.pool(v, { kernel: 3, kind: 'avg', lengths: [2, 3] })).toArray();
    expectClose(avg, [1, 1, 0, 0, -1, -2, -5 / 3, 0], { rtol: 1e-7, atol: 0 });
    const max = track(snapkv.pool(v, { kernel: 3, kind: 'max', lengths: [2, 3] })).toArray();
    expectIdentical(max, [2, 2, 0, 0, -1, -1, -2, 0]);
  });

  it('a 1-D row', () => {
    const rng = testRng();
    const data = rng.normalArray(1001);
    const v = track(Tensor.from(data, { device: 'cpu' }));
    expectIdentical(track(snapkv.pool(v, { kernel: 7, kind: 'max' })).toArray(), Float32Array.from(poolRef(data, 1, 1001, 7, 'max')));
    expectClose(track(snapkv.pool(v, { kernel: 5, kind: 'avg' })).toArray(), poolRef(data, 1, 1001, 5, 'avg'), { rtol: 1e-5, atol: 1e-6 });
  });

  it('a 1-D row with lengths (one entry, as for topk)', () => {
    const rng = testRng();
    const data = rng.normalArray(101);
    const v = track(Tensor.from(data, { device: 'cpu' }));
    const got = track(snapkv.pool(v, { kernel: 3, kind: 'max', lengths: [60] })).toArray();
    expectIdentical(got, Float32Array.from(poolRef(data, 1, 101, 3, 'max', [60])));
  });
});

describe('snapkv.compress: hand-computed', () => {
  // N=6, W=1, D=1, q=[1]: the window query (position 5) sees every key, p ∝ exp(k) =
  // [1, 5, 2, 4, 3, 1], so the prefix votes are ∝ [1, 5, 2, 4, 3]; capacity 3 keeps 2 of them.
  const kData = [0, Math.log(5), Math.log(2), Math.log(4), Math.log(3), 0];
  const cases: Array<{ kernel: number; pooling: PoolKind; kept: number[]; why: string }> = [
    { kernel: 1, pooling: 'max', kept: [1, 3, 5], why: 'no pooling: the two largest votes' },
    // max pool 3: [5, 5, 5, 4, 4]: three-way tie, the lower positions win
    { kernel: 3, pooling: 'max', kept: [0, 1, 5], why: 'max pooling ties go to the lower position' },
    // avg pool 3, count_include_pad: [6, 8, 11, 9, 7] / 3 (the last is (4 + 3 + pad 0) / 3, not 3.5)
    { kernel: 3, pooling: 'avg', kept: [2, 3, 5], why: 'avg pooling divides by the kernel at the edge' },
  ];
  for (const c of cases) {
    it(`kernel ${c.kernel} ${c.pooling}: ${c.why}`, () => {
      const q = track(Tensor.from([1], { shape: [1, 1, 1, 1], device: 'cpu' }));
      const k = track(Tensor.from(kData, { shape: [1, 1, 6, 1], device: 'cpu' }));
      const v = track(Tensor.from([10, 11, 12, 13, 14, 15], { shape: [1, 1, 6, 1], device: 'cpu' }));
      const got = trackAll(snapkv.compress(q, k, v, { window: 1, capacity: 3, kernel: c.kernel, pooling: c.pooling }));
      expectIdentical(got.positions.toArray(), c.kept);
      expectIdentical(got.values.toArray(), c.kept.map((p) => 10 + p));
      expectIdentical(got.keys.toArray(), Float32Array.from(c.kept.map((p) => kData[p])));
    });
  }
});

describe('snapkv.compress: edge cases', () => {
  it('capacity = window keeps only the window', () => {
    const rng = testRng();
    const dims: Dims = { B: 2, Hq: 4, Hkv: 2, N: 99, W: 10, D: 64 };
    const inp = randomInputs(rng, dims, 'f16');
    const t = tensors(inp, 'bhsd', 'cpu');
    const got = trackAll(snapkv.compress(t.q, t.k, t.v, { window: 10, capacity: 10, seqLens: [99, 50] }));
    const pos = got.positions.toArray();
    expect(got.positions.shape).toEqual([2, 2, 10]);
    for (let r = 0; r < 4; r++) for (let i = 0; i < 10; i++) expect(pos[r * 10 + i]).toBe((r < 2 ? 99 : 50) - 10 + i);
  });

  it('a values head dim different from the keys\'', () => {
    const rng = testRng();
    const dims: Dims = { B: 1, Hq: 4, Hkv: 1, N: 201, W: 8, D: 64 };
    const Dv = 40;
    const inp = randomInputs(rng, dims, 'f32', Dv);
    const t = tensors(inp, 'bhsd', 'cpu', Dv);
    const got = trackAll(snapkv.compress(t.q, t.k, t.v, { window: 8, capacity: 50 }));
    expect(got.values.shape).toEqual([1, 1, 50, Dv]);
    const pos = got.positions.toArray();
    expectSameBytes(got.values.toRawArray(), gatherRef(inp.v, 1, 1, 201, Dv, pos, 1, 50, 1), 'values');
  });
});

describe('snapkv.compress: N <= capacity drops nothing', () => {
  for (const groupReduce of ['mean', 'none'] as const) {
    for (const layout of ['bhsd', 'bshd'] as const) {
      it(`${groupReduce}, ${layout}: a copy, positions 0..N-1`, () => {
        const rng = testRng();
        const dims: Dims = { B: 2, Hq: 4, Hkv: 2, N: 37, W: 5, D: 40 };
        const inp = randomInputs(rng, dims, 'bf16');
        const t = tensors(inp, layout, 'cpu');
        for (const capacity of [37, 100]) {
          const got = trackAll(snapkv.compress(t.q, t.k, t.v, { window: 5, capacity, groupReduce, layout, seqLens: [37, 20] }));
          const Hout = groupReduce === 'none' ? 4 : 2;
          expect(got.positions.shape).toEqual([2, Hout, 37]);
          const pos = got.positions.toArray();
          for (let r = 0; r < 2 * Hout; r++) for (let j = 0; j < 37; j++) expect(pos[r * 37 + j]).toBe(j);
          const rawK = rawBhsd(t.k, layout);
          const rawV = rawBhsd(t.v, layout);
          const keys = rawBhsd(got.keys, layout);
          if (groupReduce === 'mean') {
            expectSameBytes(keys, rawK, 'keys copied');
            expectSameBytes(rawBhsd(got.values, layout), rawV, 'values copied');
            // a copy, not the same memory
            expect(got.keys._buffer.ptr).not.toBe(t.k._buffer.ptr);
          } else {
            expectSameBytes(keys, gatherRef(rawK, 2, 2, 37, 40, pos, 4, 37, 2), 'keys per query head');
          }
        }
      });
    }
  }
});

describe('snapkv: argument validation', () => {
  function small(dtype: FloatDType = 'f32', Hq = 4, Hkv = 2, N = 21, W = 4, D = 8) {
    const rng = testRng();
    return {
      q: track(Tensor.from(rng.normalArray(2 * Hq * W * D), { shape: [2, Hq, W, D], dtype, device: 'cpu' })),
      k: track(Tensor.from(rng.normalArray(2 * Hkv * N * D), { shape: [2, Hkv, N, D], dtype, device: 'cpu' })),
      v: track(Tensor.from(rng.normalArray(2 * Hkv * N * D), { shape: [2, Hkv, N, D], dtype, device: 'cpu' })),
    };
  }
  const INVALID = 'ERR_INVALID_ARG';

  it('window larger than N', () => {
    const { q, k, v } = small();
    expectKvsiftError(() => snapkv.scores(q, k, { window: 22 }), INVALID, 'snapkv.scores: expected at most N = 21 for options.window, but received 22');
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 22, capacity: 30 }), INVALID, 'snapkv.compress: expected at most N = 21 for options.window, but received 22');
  });

  it('window that is not the queries\' length, or not a positive integer', () => {
    const { q, k, v } = small();
    expectKvsiftError(() => snapkv.scores(q, k, { window: 3 }), INVALID, 'snapkv.scores: expected 3 window rows (options.window) for queries, but received 4');
    expectKvsiftError(() => snapkv.scores(q, k, { window: 0 }), INVALID, 'snapkv.scores: expected an integer >= 1 for options.window, but received 0');
    expectKvsiftError(() => snapkv.scores(q, k, { window: 2.5 }), INVALID, /options\.window/);
    expectKvsiftError(() => snapkv.compress(q, k, v, { capacity: 10 } as never), INVALID, 'snapkv.compress: expected an integer >= 1 for options.window, but received undefined');
  });

  it('capacity below the window, or not a positive integer', () => {
    const { q, k, v } = small();
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 3 }), INVALID, 'snapkv.compress: expected at least the window (4) for options.capacity, but received 3');
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 0 }), INVALID, /options\.capacity/);
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 'x' as never }), INVALID, /options\.capacity.*'x'/);
  });

  it('even or non-positive kernels', () => {
    const { q, k, v } = small();
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 10, kernel: 4 }), INVALID, 'snapkv.compress: expected an odd integer for options.kernel, but received 4');
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 10, kernel: 0 }), INVALID, /options\.kernel/);
    const votes = track(Tensor.zeros([2, 9], 'f32', 'cpu'));
    expectKvsiftError(() => snapkv.pool(votes, { kernel: 6, kind: 'max' }), INVALID, 'snapkv.pool: expected an odd integer for options.kernel, but received 6');
    expectKvsiftError(() => snapkv.pool(votes, { kernel: -1, kind: 'max' }), INVALID, /options\.kernel/);
  });

  it('unknown pooling, groupReduce, layout, kind', () => {
    const { q, k, v } = small();
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 10, pooling: 'mean' as never }), INVALID, "snapkv.compress: expected one of 'avg', 'max' for options.pooling, but received 'mean'");
    expectKvsiftError(() => snapkv.scores(q, k, { groupReduce: 'min' as never }), INVALID, "snapkv.scores: expected one of 'mean', 'sum', 'max', 'none' for options.groupReduce, but received 'min'");
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 10, groupReduce: 'avg' as never }), INVALID, /options\.groupReduce/);
    expectKvsiftError(() => snapkv.scores(q, k, { layout: 'bnhd' as never }), INVALID, "snapkv.scores: expected one of 'bhsd', 'bshd' for options.layout, but received 'bnhd'");
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 10, layout: 'BHSD' as never }), INVALID, /options\.layout/);
    const votes = track(Tensor.zeros([9], 'f32', 'cpu'));
    expectKvsiftError(() => snapkv.pool(votes, { kernel: 3, kind: 'min' as never }), INVALID, "snapkv.pool: expected one of 'avg', 'max' for options.kind, but received 'min'");
  });

  it('seqLens of the wrong length or out of range', () => {
    const { q, k, v } = small();
    expectKvsiftError(() => snapkv.scores(q, k, { seqLens: [21] }), INVALID, 'snapkv.scores: expected 2 lengths (one per batch row) for options.seqLens, but received 1');
    expectKvsiftError(() => snapkv.scores(q, k, { seqLens: [21, 3] }), INVALID, 'snapkv.scores: expected an integer in [4, 21] for options.seqLens[1], but received 3');
    expectKvsiftError(() => snapkv.scores(q, k, { seqLens: new Int32Array([22, 21]) }), INVALID, 'snapkv.scores: expected an integer in [4, 21] for options.seqLens[0], but received 22');
    expectKvsiftError(() => snapkv.scores(q, k, { seqLens: [21.5, 4] }), INVALID, /options\.seqLens/);
    expectKvsiftError(() => snapkv.scores(q, k, { seqLens: 'abc' as never }), INVALID, /options\.seqLens/);
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 10, seqLens: [21, 3] }), INVALID, /options\.seqLens\[1\]/);
    // compress drops tokens only from rows at least `capacity` long
    expectKvsiftError(
      () => snapkv.compress(q, k, v, { window: 4, capacity: 10, seqLens: [21, 9] }),
      INVALID,
      'snapkv.compress: expected at least capacity (10); compress shorter rows separately for options.seqLens[1], but received 9',
    );
    const votes = track(Tensor.zeros([2, 3, 9], 'f32', 'cpu'));
    expectKvsiftError(() => snapkv.pool(votes, { kernel: 3, kind: 'max', lengths: [9] }), INVALID, 'snapkv.pool: expected 2 lengths (one per batch row) for options.lengths, but received 1');
    expectKvsiftError(() => snapkv.pool(votes, { kernel: 3, kind: 'max', lengths: [9, 10] }), INVALID, 'snapkv.pool: expected an integer in [0, 9] for options.lengths[1], but received 10');
  });

  it('non-tensor arguments', () => {
    const { q, k, v } = small();
    expectKvsiftError(() => snapkv.scores('q' as never, k), INVALID, "snapkv.scores: expected a Tensor for queries, but received 'q'");
    expectKvsiftError(() => snapkv.scores(q, null as never), INVALID, 'snapkv.scores: expected a Tensor for keys, but received null');
    expectKvsiftError(() => snapkv.scores(q, { shape: [1, 1, 1, 1] } as never), INVALID, 'snapkv.scores: expected a Tensor for keys, but received a plain object');
    expectKvsiftError(() => snapkv.compress(q, k, 'v' as never, { window: 4, capacity: 10 }), INVALID, "snapkv.compress: expected a Tensor for values, but received 'v'");
    expectKvsiftError(() => snapkv.compress(q, k, v, null as never), INVALID, 'snapkv.compress: expected an options object for options, but received null');
    expectKvsiftError(() => snapkv.scores(q, k, { lse: {} as never }), INVALID, 'snapkv.scores: expected a Tensor for options.lse, but received a plain object');
    expectKvsiftError(() => snapkv.pool(null as never, { kernel: 3, kind: 'avg' }), INVALID, 'snapkv.pool: expected a Tensor for votes, but received null');
    expectKvsiftError(() => snapkv.pool([1, 2, 3] as never, { kernel: 3, kind: 'avg' }), INVALID, 'snapkv.pool: expected a Tensor for votes, but received an array of length 3');
    expectKvsiftError(() => snapkv.scores(q, k, 'fast' as never), INVALID, "snapkv.scores: expected an options object for options, but received 'fast'");
  });

  it('wrong ranks, shapes and dtypes', () => {
    const { q, k, v } = small();
    const flat = track(Tensor.zeros([2, 21, 8], 'f32', 'cpu'));
    expectKvsiftError(() => snapkv.scores(q, flat), INVALID, 'snapkv.scores: expected a 4-D tensor [B, H, N, D] for keys, but received shape [2, 21, 8]');
    expectKvsiftError(() => snapkv.scores(q, flat, { layout: 'bshd' }), INVALID, 'snapkv.scores: expected a 4-D tensor [B, N, H, D] for keys, but received shape [2, 21, 8]');
    const ints = track(Tensor.zeros([2, 2, 21, 8], 'i32', 'cpu'));
    expectKvsiftError(() => snapkv.scores(q, ints), INVALID, "snapkv.scores: expected 'f32' | 'f16' | 'bf16' for keys.dtype, but received 'i32'");
    const k16 = track(Tensor.zeros([2, 2, 21, 8], 'f16', 'cpu'));
    expectKvsiftError(() => snapkv.scores(q, k16), INVALID, "snapkv.scores: expected the keys' dtype 'f16' for queries.dtype, but received 'f32'");
    const otherD = track(Tensor.zeros([2, 2, 21, 16], 'f32', 'cpu'));
    expectKvsiftError(() => snapkv.scores(q, otherD), INVALID, "snapkv.scores: expected head dim 16 (the keys') for queries, but received 8");
    const otherB = track(Tensor.zeros([3, 2, 21, 8], 'f32', 'cpu'));
    expectKvsiftError(() => snapkv.scores(q, otherB), INVALID, "snapkv.scores: expected batch 3 (the keys') for queries, but received 2");
    const votes16 = track(Tensor.zeros([9], 'f16', 'cpu'));
    expectKvsiftError(() => snapkv.pool(votes16, { kernel: 3, kind: 'avg' }), INVALID, "snapkv.pool: expected 'f32' for votes.dtype, but received 'f16'");
    const badV = track(Tensor.zeros([2, 2, 20, 8], 'f32', 'cpu'));
    expectKvsiftError(() => snapkv.compress(q, k, badV, { window: 4, capacity: 10 }), INVALID, "snapkv.compress: expected a cache with the keys' [B, H, N] = [2, 2, 21] for values, but received [2, 2, 20]");
    void v;
  });

  it('Hq not a multiple of Hkv', () => {
    const rng = testRng();
    const q = track(Tensor.from(rng.normalArray(2 * 4 * 4 * 8), { shape: [2, 4, 4, 8], device: 'cpu' }));
    const k = track(Tensor.from(rng.normalArray(2 * 3 * 21 * 8), { shape: [2, 3, 21, 8], device: 'cpu' }));
    const v = track(Tensor.from(rng.normalArray(2 * 3 * 21 * 8), { shape: [2, 3, 21, 8], device: 'cpu' }));
    expectKvsiftError(() => snapkv.scores(q, k), INVALID, "snapkv.scores: expected a head count that is a multiple of the keys' 3 for queries, but received 4");
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 10 }), INVALID, /multiple of the keys' 3 for queries/);
  });

  it('lse of the wrong shape or dtype', () => {
    const { q, k } = small();
    const bad = track(Tensor.zeros([2, 4, 3], 'f32', 'cpu'));
    expectKvsiftError(() => snapkv.scores(q, k, { lse: bad }), INVALID, 'snapkv.scores: expected an f32 tensor [2, 4, 4] for options.lse, but received f32 [2, 4, 3]');
    const bad16 = track(Tensor.zeros([2, 4, 4], 'f16', 'cpu'));
    expectKvsiftError(() => snapkv.scores(q, k, { lse: bad16 }), INVALID, 'snapkv.scores: expected an f32 tensor [2, 4, 4] for options.lse, but received f16 [2, 4, 4]');
  });

  it('disposed tensors', () => {
    const { q, k, v } = small();
    k.dispose();
    expectKvsiftError(() => snapkv.scores(q, k), 'ERR_DISPOSED', 'snapkv.scores: keys is disposed');
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 10 }), 'ERR_DISPOSED', 'snapkv.compress: keys is disposed');
    const { q: q2, k: k2, v: v2 } = small();
    v2.dispose();
    expectKvsiftError(() => snapkv.compress(q2, k2, v2, { window: 4, capacity: 10 }), 'ERR_DISPOSED', 'snapkv.compress: values is disposed');
    const votes = Tensor.zeros([9], 'f32', 'cpu');
    votes.dispose();
    expectKvsiftError(() => snapkv.pool(votes, { kernel: 3, kind: 'avg' }), 'ERR_DISPOSED', 'snapkv.pool: votes is disposed');
    const lse = Tensor.zeros([2, 4, 4], 'f32', 'cpu');
    lse.dispose();
    expectKvsiftError(() => snapkv.scores(q2, k2, { lse }), 'ERR_DISPOSED', 'snapkv.scores: options.lse is disposed');
  });

  it('a failed op leaves its inputs unchanged and leaks nothing', () => {
    const { q, k, v } = small('bf16');
    const before = [q.toRawArray(), k.toRawArray(), v.toRawArray()];
    const live0 = memoryStats('cpu').liveTensors;
    const attempts: Array<() => unknown> = [
      () => snapkv.compress(q, k, v, { window: 4, capacity: 3 }),
      () => snapkv.compress(q, k, v, { window: 4, capacity: 10, seqLens: [21, 9] }),
      () => snapkv.compress(q, k, v, { window: 4, capacity: 10, kernel: 2 }),
      () => snapkv.scores(q, k, { groupReduce: 'x' as never }),
    ];
    for (const f of attempts) expect(f).toThrow(KvsiftError);
    // finalizers of earlier garbage may only lower the count
    expect(memoryStats('cpu').liveTensors).toBeLessThanOrEqual(live0);
    const after = [q.toRawArray(), k.toRawArray(), v.toRawArray()];
    for (let i = 0; i < 3; i++) expectSameBytes(after[i], before[i], `input ${i}`);
    // and the inputs still work
    const ok = trackAll(snapkv.compress(q, k, v, { window: 4, capacity: 10 }));
    expect(ok.positions.shape).toEqual([2, 2, 10]);
  });

  it('compress and scores leave their inputs unchanged when they succeed', () => {
    const { q, k, v } = small('f16');
    const before = [q.toRawArray(), k.toRawArray(), v.toRawArray()];
    trackAll(snapkv.compress(q, k, v, { window: 4, capacity: 9, pooling: 'avg', kernel: 5 }));
    track(snapkv.scores(q, k, { groupReduce: 'none' }));
    const after = [q.toRawArray(), k.toRawArray(), v.toRawArray()];
    for (let i = 0; i < 3; i++) expectSameBytes(after[i], before[i], `input ${i}`);
  });
});

describeCuda('snapkv validation on CUDA', () => {
  const device = (cudaDevices()[0] ?? 'cuda:0') as Device;

  it('validation is the same on CUDA; a disposed CUDA tensor throws ERR_DISPOSED', () => {
    const rng = testRng();
    const q = track(Tensor.from(rng.normalArray(4 * 4 * 8), { shape: [1, 4, 4, 8], device }));
    const k = track(Tensor.from(rng.normalArray(2 * 21 * 8), { shape: [1, 2, 21, 8], device }));
    const v = track(Tensor.from(rng.normalArray(2 * 21 * 8), { shape: [1, 2, 21, 8], device }));
    expectKvsiftError(() => snapkv.compress(q, k, v, { window: 4, capacity: 3 }), 'ERR_INVALID_ARG', 'snapkv.compress: expected at least the window (4) for options.capacity, but received 3');
    const kc = track(Tensor.from(rng.normalArray(2 * 21 * 8), { shape: [1, 2, 21, 8], device: 'cpu' }));
    expectKvsiftError(() => snapkv.scores(q, kc), 'ERR_DEVICE_MISMATCH', /different devices/);
    k.dispose();
    expectKvsiftError(() => snapkv.scores(q, k), 'ERR_DISPOSED', 'snapkv.scores: keys is disposed');
  });
});

