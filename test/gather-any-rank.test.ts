/**
 * gather / evict along any axis of any rank, against a plain index reference: 3-D scores and
 * 2-D/3-D positions compact like K and V, size-1 leading axes of positions broadcast (every
 * pattern, including ones that need the device-side expansion), and the 4-D layout-aware calls
 * keep their meaning.
 */
import { describe, expect, it } from 'vitest';
import { evict, gather, Tensor, type Device } from '../lib/index';
import { cudaDevices, describeCuda, describeEachDevice, expectKvsiftError, testRng, type Rng } from './helpers';

/** out[lead..., i, trail...] = t[lead..., pos[lead (or 0 where broadcast)..., i], trail...] */
function reference(t: ArrayLike<number>, shape: number[], pos: Int32Array, pshape: number[], axis: number): number[] {
  const lead = shape.slice(0, axis);
  const N = shape[axis];
  const K = pshape[axis];
  const R = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const L = lead.reduce((a, b) => a * b, 1);
  const out: number[] = [];
  for (let l = 0; l < L; l++) {
    // leading multi-index of l, then positions' flat row (broadcast axes index 0)
    let rest = l;
    const idx = new Array(axis).fill(0);
    for (let a = axis - 1; a >= 0; a--) {
      idx[a] = rest % lead[a];
      rest = Math.floor(rest / lead[a]);
    }
    let prow = 0;
    for (let a = 0; a < axis; a++) prow = prow * pshape[a] + (pshape[a] === 1 ? 0 : idx[a]);
    for (let i = 0; i < K; i++) {
      const j = pos[prow * K + i];
      for (let r = 0; r < R; r++) out.push(t[(l * N + j) * R + r]);
    }
  }
  return out;
}

function randomCase(rng: Rng) {
  const rank = rng.int(1, 5);
  const shape = Array.from({ length: rank }, () => rng.int(1, 4));
  const axis = rng.int(0, rank - 1);
  shape[axis] = rng.int(1, 9);
  const pshape = shape.slice(0, axis).map((n) => (rng.float() < 0.4 ? 1 : n));
  const K = rng.int(1, 7);
  pshape.push(K);
  const prow = pshape.slice(0, axis).reduce((a, b) => a * b, 1);
  const pos = new Int32Array(prow * K);
  for (let i = 0; i < pos.length; i++) pos[i] = rng.int(0, shape[axis] - 1);
  return { shape, axis, pshape, pos };
}

function check(device: Device, rng: Rng, reps: number): void {
  for (let rep = 0; rep < reps; rep++) {
    const { shape, axis, pshape, pos } = randomCase(rng);
    const n = shape.reduce((a, b) => a * b, 1);
    const data = rng.normalArray(n);
    const t = Tensor.from(data, { shape, device });
    const p = Tensor.from(pos, { shape: pshape, device });
    const rank = shape.length;
    // the default axis is the last one except for 4-D tensors; pass it explicitly otherwise
    const explicit = rank === 4 || axis !== rank - 1 || rng.float() < 0.5;
    const out = gather(t, p, explicit ? { axis } : undefined);
    const want = shape.slice();
    want[axis] = pshape[axis];
    expect(out.shape).toEqual(want);
    expect(Array.from(out.toArray()), `[${shape}] axis ${axis} positions [${pshape}]`).toEqual(reference(data, shape, pos, pshape, axis));
    t.dispose();
    p.dispose();
    out.dispose();
  }
}

describeEachDevice('gather along any axis', (device) => {
  it('random ranks, axes and broadcast patterns match the reference', () => {
    check(device, testRng(), 120);
  });
});

describe('gather along any axis', () => {
  it('3-D scores and 2-D/3-D positions compact like K and V', () => {
    const scores = Tensor.from([0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23], { shape: [1, 3, 4], device: 'cpu' });
    const keep = Tensor.from(new Int32Array([1, 3, 0, 2, 2, 3]), { shape: [1, 3, 2], device: 'cpu' });
    expect(Array.from(gather(scores, keep).toArray())).toEqual([1, 3, 10, 12, 22, 23]);
    const ids = Tensor.from(new Int32Array([5, 6, 7, 8, 9, 10]), { shape: [2, 3], device: 'cpu' });
    const rows = Tensor.from(new Int32Array([2, 0]), { shape: [1, 2], device: 'cpu' }); // one selection for both rows
    const g = gather(ids, rows);
    expect(g.dtype).toBe('i32');
    expect(Array.from(g.toArray())).toEqual([7, 5, 10, 8]);
    // a mixed pattern that needs the expansion: [B=2 broadcast, H=3 per head, k]
    const t = Tensor.from(Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i), { shape: [2, 3, 4], device: 'cpu' });
    const mixed = Tensor.from(new Int32Array([0, 1, 2, 3, 3, 0]), { shape: [1, 3, 2], device: 'cpu' });
    expect(Array.from(gather(t, mixed).toArray())).toEqual([0, 1, 6, 7, 11, 8, 12, 13, 18, 19, 23, 20]);
  });

  it('4-D caches keep their layout-aware meaning', () => {
    const rng = testRng();
    const data = rng.normalArray(2 * 5 * 3 * 4);
    const cache = Tensor.from(data, { shape: [2, 5, 3, 4], device: 'cpu' }); // bshd: N = 5, H = 3
    const p = Tensor.from(new Int32Array([4, 0, 1, 2, 3, 3, 0, 1, 2, 2, 4, 0]), { shape: [2, 3, 2], device: 'cpu' });
    const out = gather(cache, p, { layout: 'bshd' });
    expect(out.shape).toEqual([2, 2, 3, 4]);
    const got = out.toArray();
    for (let b = 0; b < 2; b++) {
      for (let h = 0; h < 3; h++) {
        for (let i = 0; i < 2; i++) {
          const j = p.toArray()[(b * 3 + h) * 2 + i];
          for (let d = 0; d < 4; d++) expect(got[((b * 2 + i) * 3 + h) * 4 + d]).toBe(data[((b * 5 + j) * 3 + h) * 4 + d]);
        }
      }
    }
    // the same selection through axis 1 with the generic rule: positions [B, k] per batch row
    const rows = Tensor.from(new Int32Array([4, 0, 2, 2]), { shape: [2, 2], device: 'cpu' });
    const alongAxis = gather(cache, rows, { axis: 1 });
    expect(alongAxis.shape).toEqual([2, 2, 3, 4]);
    expect(Array.from(alongAxis.toArray())).toEqual(reference(data, [2, 5, 3, 4], rows.toArray(), [2, 2], 1));
  });

  it('evict compacts two tensors of any rank along an axis', () => {
    const k = Tensor.from(Float32Array.from({ length: 12 }, (_, i) => i), { shape: [3, 4], device: 'cpu' });
    const v = Tensor.from(Float32Array.from({ length: 24 }, (_, i) => 100 + i), { shape: [3, 4, 2], device: 'cpu' });
    const p = Tensor.from(new Int32Array([0, 3, 1, 2, 2, 3]), { shape: [3, 2], device: 'cpu' });
    const out = evict(k, v, p, { axis: 1 });
    expect(Array.from(out.keys.toArray())).toEqual([0, 3, 5, 6, 10, 11]);
    expect(Array.from(out.values.toArray())).toEqual([100, 101, 106, 107, 110, 111, 112, 113, 120, 121, 122, 123]);
    expect(Array.from(out.positions.toArray())).toEqual([0, 3, 1, 2, 2, 3]);
    expect(out.positions.devicePointer).not.toBe(p.devicePointer);
  });

  it('errors name the argument', () => {
    const t = Tensor.zeros([2, 3, 5], 'f32', 'cpu');
    const p = Tensor.zeros([3, 3, 2], 'i32', 'cpu');
    expectKvsiftError(() => gather(t, p), 'ERR_INVALID_ARG', 'gather: expected an i32 tensor [2 or 1, 3 or 1, k] for positions, but received shape [3, 3, 2]');
    expectKvsiftError(() => gather(t, p, { axis: 3 }), 'ERR_INVALID_ARG', 'gather: expected an integer in [-3, 2] for options.axis, but received 3');
    const f = Tensor.zeros([2, 3, 2], 'f32', 'cpu');
    expectKvsiftError(() => gather(t, f), 'ERR_INVALID_ARG', "gather: expected 'i32' for positions.dtype, but received 'f32'");
    const bad = Tensor.from(new Int32Array([0, 5, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]), { shape: [2, 3, 2], device: 'cpu' });
    expectKvsiftError(() => gather(t, bad), 'ERR_INDEX_OUT_OF_RANGE', 'gather: 1 positions fall outside [0, 5)');
  });
});

describeCuda('gather along any axis cuda', () => {
  for (const device of cudaDevices()) {
    it(`${device}: matches the CPU backend`, () => {
      const rng = testRng();
      for (let rep = 0; rep < 40; rep++) {
        const { shape, axis, pshape, pos } = randomCase(rng);
        const data = rng.normalArray(shape.reduce((a, b) => a * b, 1));
        const results = (['cpu', device] as const).map((dev) => {
          const t = Tensor.from(data, { shape, dtype: 'bf16', device: dev });
          const p = Tensor.from(pos, { shape: pshape, device: dev });
          const out = gather(t, p, { axis });
          const raw = out.toRawArray();
          for (const x of [t, p, out]) x.dispose();
          return Array.from(raw);
        });
        expect(results[1]).toEqual(results[0]);
      }
    });
  }
});
