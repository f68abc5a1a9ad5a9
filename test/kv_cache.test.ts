/**
 * KvCache: random append/retain sequences against a host model of the cache (every live token's
 * key, value and original position per (batch row, head)), both layouts, f32/f16/bf16; the
 * errors the issue lists, each leaving the cache and `also` tensors unchanged; CUDA against the
 * CPU backend on the same sequence.
 */
import { describe, expect, it } from 'vitest';
import { copy, KvCache, l2, snapkv, synchronize, Tensor, type Device, type Layout } from '../lib/index';
import { native } from '../lib/native';
import { cudaDevices, describeCuda, expectKvsiftError, rejectsKvsift, testRng, type Rng } from './helpers';

type CacheDType = 'f32' | 'f16' | 'bf16';

/** One row (b, h) of the model: live tokens in order. */
interface Token {
  pos: number;
  k: number[];
  v: number[];
}

class Model {
  rows: Token[][];
  appended: number[];
  constructor(readonly B: number, readonly H: number, readonly D: number, readonly cap: number, readonly layout: Layout) {
    this.rows = Array.from({ length: B * H }, () => []);
    this.appended = new Array(B).fill(0);
  }
  /** Index of element (b, h, s, d) in a [B, H, S, D] tensor stored in the layout. */
  idx(b: number, h: number, s: number, d: number, S: number): number {
    return this.layout === 'bhsd' ? ((b * this.H + h) * S + s) * this.D + d : ((b * S + s) * this.H + h) * this.D + d;
  }
  append(k: ArrayLike<number>, v: ArrayLike<number>, T: number, counts: number[]): void {
    for (let b = 0; b < this.B; b++) {
      for (let h = 0; h < this.H; h++) {
        for (let i = 0; i < counts[b]; i++) {
          const kk: number[] = [];
          const vv: number[] = [];
          for (let d = 0; d < this.D; d++) {
            kk.push(k[this.idx(b, h, i, d, T)]);
            vv.push(v[this.idx(b, h, i, d, T)]);
          }
          this.rows[b * this.H + h].push({ pos: this.appended[b] + i, k: kk, v: vv });
        }
      }
      this.appended[b] += counts[b];
    }
  }
  retain(keep: Int32Array, C: number, perHead: boolean): void {
    for (let b = 0; b < this.B; b++) {
      for (let h = 0; h < this.H; h++) {
        const sel = keep.subarray((b * (perHead ? this.H : 1) + (perHead ? h : 0)) * C, (b * (perHead ? this.H : 1) + (perHead ? h : 0) + 1) * C);
        this.rows[b * this.H + h] = Array.from(sel, (j) => this.rows[b * this.H + h][j]);
      }
    }
  }
  length(b: number): number {
    return this.rows[b * this.H].length;
  }
}

function rawData(rng: Rng, dtype: CacheDType, n: number): Float32Array | Uint16Array {
  if (dtype === 'f32') return rng.normalArray(n);
  // any finite half bit pattern: copies must move bits exactly
  const bits = rng.bits16(n);
  for (let i = 0; i < n; i++) bits[i] &= dtype === 'f16' ? 0xbbff : 0xbf7f;
  return bits;
}

/** Compares the cache's live contents with the model, bit for bit. */
function expectMatches(cache: KvCache, model: Model): void {
  const keys = cache.keys.toRawArray();
  const values = cache.values.toRawArray();
  const positions = cache.positions.toArray();
  for (let b = 0; b < model.B; b++) {
    expect(cache.lengths[b], `lengths[${b}]`).toBe(model.length(b));
    expect(cache.appended[b], `appended[${b}]`).toBe(model.appended[b]);
    for (let h = 0; h < model.H; h++) {
      const row = model.rows[b * model.H + h];
      const gotPos = Array.from(positions.subarray((b * model.H + h) * model.cap, (b * model.H + h) * model.cap + row.length));
      expect(gotPos, `positions[${b}, ${h}]`).toEqual(row.map((t) => t.pos));
      row.forEach((t, s) => {
        const k: number[] = [];
        const v: number[] = [];
        for (let d = 0; d < model.D; d++) {
          k.push(keys[model.idx(b, h, s, d, model.cap)]);
          v.push(values[model.idx(b, h, s, d, model.cap)]);
        }
        expect(k, `keys[${b}, ${h}, ${s}]`).toEqual(t.k);
        expect(v, `values[${b}, ${h}, ${s}]`).toEqual(t.v);
      });
    }
  }
}

function tokens(rng: Rng, dtype: CacheDType, layout: Layout, B: number, H: number, T: number, D: number, device: Device) {
  const shape = layout === 'bhsd' ? [B, H, T, D] : [B, T, H, D];
  const kd = rawData(rng, dtype, B * H * T * D);
  const vd = rawData(rng, dtype, B * H * T * D);
  return {
    kd,
    vd,
    k: Tensor.from(kd, { shape, dtype, device }),
    v: Tensor.from(vd, { shape, dtype, device }),
  };
}

/** A random valid selection of C tokens per (b, h) (or per b when !perHead). */
function randomKeep(rng: Rng, lengths: Int32Array, Hp: number, C: number): Int32Array {
  const out = new Int32Array(lengths.length * Hp * C);
  for (let b = 0; b < lengths.length; b++) {
    for (let h = 0; h < Hp; h++) {
      const picked = rng.sample(lengths[b], C).sort((x, y) => x - y);
      out.set(picked, (b * Hp + h) * C);
    }
  }
  return out;
}

/** Runs one random sequence of appends and retains on `device`, checking against the model. */
function runSequence(rng: Rng, device: Device, dtype: CacheDType, layout: Layout): void {
  const B = rng.int(1, 3);
  const H = rng.int(1, 3);
  const D = [1, 3, 8, 16, 64][rng.int(0, 4)];
  const cap = rng.int(8, 40);
  const cache = new KvCache({ batch: B, kvHeads: H, headDim: D, capacity: cap, dtype, device, layout });
  const model = new Model(B, H, D, cap, layout);
  const scores = Tensor.zeros([B, H, cap], 'f32', device);
  try {
    for (let op = 0; op < 12; op++) {
      const room = Math.min(...Array.from(cache.lengths, (l) => cap - l));
      if (room > 0 && (op % 3 !== 2 || Math.min(...cache.lengths) === 0)) {
        const T = rng.int(1, Math.min(room, 6));
        const counts = Array.from({ length: B }, () => (rng.float() < 0.3 ? rng.int(0, T) : T));
        const { kd, vd, k, v } = tokens(rng, dtype, layout, B, H, T, D, device);
        cache.append(k, v, { lengths: counts });
        model.append(kd, vd, T, counts);
        k.dispose();
        v.dispose();
      } else {
        const minLen = Math.min(...cache.lengths);
        const C = rng.int(0, minLen);
        const perHead = rng.float() < 0.7;
        const keep = randomKeep(rng, cache.lengths, perHead ? H : 1, C);
        // fresh scores, written in place through copy(), compacted along with the cache
        const s = rng.normalArray(B * H * cap);
        const upload = Tensor.from(s, { shape: [B, H, cap], device });
        copy(scores, upload, { axis: 0, offset: 0 });
        upload.dispose();
        const keepT = Tensor.from(keep, { shape: [B, perHead ? H : 1, C], device });
        cache.retain(keepT, { also: [scores] });
        keepT.dispose();
        model.retain(keep, C, perHead);
        const want = new Float32Array(B * H * cap);
        for (let b = 0; b < B; b++) {
          for (let h = 0; h < H; h++) {
            for (let i = 0; i < C; i++) {
              const j = keep[(b * (perHead ? H : 1) + (perHead ? h : 0)) * C + i];
              want[(b * H + h) * cap + i] = s[(b * H + h) * cap + j];
            }
          }
        }
        expect(scores.toArray(), 'also[0] after retain').toEqual(want);
      }
      expectMatches(cache, model);
    }
  } finally {
    cache.dispose();
    scores.dispose();
  }
}

describe('KvCache', () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    for (const layout of ['bhsd', 'bshd'] as const) {
      it(`append and retain match a host model (${dtype}, ${layout})`, () => {
        const rng = testRng();
        for (let rep = 0; rep < 3; rep++) runSequence(rng, 'cpu', dtype, layout);
      });
    }
  }

  it('exposes its storage, lengths and positions as the issue describes', () => {
    const cache = new KvCache({ batch: 2, kvHeads: 3, headDim: 4, capacity: 10, dtype: 'bf16', device: 'cpu', layout: 'bshd' });
    expect(cache.keys.shape).toEqual([2, 10, 3, 4]);
    expect(cache.values.shape).toEqual([2, 10, 3, 4]);
    expect(cache.positions.shape).toEqual([2, 3, 10]);
    expect(cache.positions.dtype).toBe('i32');
    expect(cache.lengths).toBeInstanceOf(Int32Array);
    expect(Array.from(cache.lengths)).toEqual([0, 0]);
    expect(cache.device).toBe('cpu');
    cache.dispose();
    cache.dispose();
    expect(cache.keys.disposed).toBe(true);
    expectKvsiftError(() => cache.append(cache.keys, cache.values), 'ERR_DISPOSED', 'KvCache is disposed (append)');
  });

  it('positions continue the absolute token count across evictions', () => {
    const cache = new KvCache({ batch: 1, kvHeads: 1, headDim: 2, capacity: 6, dtype: 'f32', device: 'cpu' });
    const four = Tensor.from(new Float32Array(8), { shape: [1, 1, 4, 2], device: 'cpu' });
    const one = Tensor.from(new Float32Array(2), { shape: [1, 1, 1, 2], device: 'cpu' });
    cache.append(four, four);
    cache.retain(Tensor.from(new Int32Array([1, 3]), { shape: [1, 1, 2], device: 'cpu' }));
    cache.append(one, one);
    expect(Array.from(cache.positions.toArray().subarray(0, 3))).toEqual([1, 3, 4]);
    expect(Array.from(cache.lengths)).toEqual([3]);
    cache.dispose();
    four.dispose();
    one.dispose();
  });

  for (const layout of ['bhsd', 'bshd'] as const) {
    it(`retaining snapkv.select / l2.select keeps what compress keeps (${layout})`, () => {
      const rng = testRng();
      const [B, Hq, H, N, D, W, C] = [2, 4, 2, 37, 8, 4, 12];
      const shape = layout === 'bhsd' ? [B, H, N, D] : [B, N, H, D];
      const k = Tensor.from(rng.normalArray(B * H * N * D), { shape, dtype: 'bf16', device: 'cpu' });
      const v = Tensor.from(rng.normalArray(B * H * N * D), { shape, dtype: 'bf16', device: 'cpu' });
      const q = Tensor.from(rng.normalArray(B * Hq * W * D), { shape: layout === 'bhsd' ? [B, Hq, W, D] : [B, W, Hq, D], dtype: 'bf16', device: 'cpu' });
      const runs: [string, () => Tensor<'i32'>, () => { keys: Tensor; positions: Tensor }][] = [
        ['snapkv', () => snapkv.select(q, cacheRef.keys, { window: W, capacity: C, seqLens: cacheRef.lengths, layout }), () => snapkv.compress(q, k, v, { window: W, capacity: C, layout })],
        ['l2', () => l2.select(cacheRef.keys, { capacity: C, sinks: 1, recent: 2, seqLens: cacheRef.lengths, layout }), () => l2.compress(k, v, { capacity: C, sinks: 1, recent: 2, layout })],
      ];
      let cacheRef!: KvCache;
      for (const [name, select, compress] of runs) {
        cacheRef = new KvCache({ batch: B, kvHeads: H, headDim: D, capacity: N + 5, dtype: 'bf16', device: 'cpu', layout });
        cacheRef.append(k, v);
        const keep = select();
        cacheRef.retain(keep);
        const want = compress();
        expect(Array.from(keep.toArray()), name).toEqual(Array.from(want.positions.toArray()));
        const got = cacheRef.keys.toRawArray();
        const wk = want.keys.toRawArray();
        for (let b = 0; b < B; b++)
          for (let h = 0; h < H; h++)
            for (let i = 0; i < C; i++)
              for (let d = 0; d < D; d++) {
                const at = (S: number) => (layout === 'bhsd' ? ((b * H + h) * S + i) * D + d : ((b * S + i) * H + h) * D + d);
                expect(got[at(N + 5)], `${name} key [${b}, ${h}, ${i}, ${d}]`).toBe(wk[at(C)]);
              }
        cacheRef.dispose();
      }
    });
  }

  describe('errors leave the cache and also tensors unchanged', () => {
    function setup() {
      const cache = new KvCache({ batch: 2, kvHeads: 2, headDim: 4, capacity: 8, dtype: 'f32', device: 'cpu' });
      const data = Float32Array.from({ length: 2 * 2 * 5 * 4 }, (_, i) => i + 1);
      const k = Tensor.from(data, { shape: [2, 2, 5, 4], device: 'cpu' });
      cache.append(k, k, { lengths: [5, 4] });
      const scores = Tensor.from(Float32Array.from({ length: 2 * 2 * 8 }, (_, i) => i * 0.5), { shape: [2, 2, 8], device: 'cpu' });
      const snapshot = () => ({
        k: cache.keys.toArray(),
        v: cache.values.toArray(),
        p: cache.positions.toArray(),
        l: Array.from(cache.lengths),
        s: scores.toArray(),
      });
      return { cache, k, scores, snapshot, before: snapshot() };
    }

    it('appending past capacity names the capacity', () => {
      const { cache, k, snapshot, before } = setup();
      expectKvsiftError(
        () => cache.append(k, k),
        'ERR_INVALID_ARG',
        "KvCache.append: expected at most the cache's capacity of 8 tokens per row for keys, but received 10 in row 0 (5 live + 5 appended)",
      );
      expect(snapshot()).toEqual(before);
      cache.dispose();
    });

    const bad: [string, number[], string, RegExp][] = [
      ['out of range', [0, 5, 1, 2, 0, 3, 1, 3], 'ERR_INDEX_OUT_OF_RANGE', /positions\[0, 0, 1\] = 5 is outside row 0's \[0, 5\)/],
      ['past a shorter row', [0, 1, 1, 2, 0, 4, 1, 3], 'ERR_INDEX_OUT_OF_RANGE', /positions\[1, 0, 1\] = 4 is outside row 1's \[0, 4\)/],
      ['duplicated', [0, 1, 2, 2, 0, 1, 1, 3], 'ERR_INVALID_ARG', /positions\[0, 1, 1\] = 2 is not above the previous 2/],
      ['unsorted', [0, 1, 1, 2, 3, 1, 1, 3], 'ERR_INVALID_ARG', /positions\[1, 0, 1\] = 1 is not above the previous 3/],
      ['negative', [-1, 1, 1, 2, 0, 1, 1, 3], 'ERR_INDEX_OUT_OF_RANGE', /positions\[0, 0, 0\] = -1 is outside/],
    ];
    for (const [what, keep, code, message] of bad) {
      it(`retain refuses positions that are ${what}`, () => {
        const { cache, scores, snapshot, before } = setup();
        const p = Tensor.from(new Int32Array(keep), { shape: [2, 2, 2], device: 'cpu' });
        const e = expectKvsiftError(() => cache.retain(p, { also: [scores] }), code, message);
        expect(e.message).toMatch(/^KvCache\.retain: \d+ invalid positions: .*; the cache is unchanged$/);
        expect(snapshot()).toEqual(before);
        cache.dispose();
      });
    }

    it('argument errors', () => {
      const { cache, k, scores, snapshot, before } = setup();
      const f16 = Tensor.zeros([2, 2, 1, 4], 'f16', 'cpu');
      expectKvsiftError(() => cache.append(f16, f16), 'ERR_INVALID_ARG', "KvCache.append: expected the cache's 'f32' for keys.dtype, but received 'f16'");
      const swapped = Tensor.zeros([2, 1, 2, 4], 'f32', 'cpu'); // [B, T, H, D] given to a 'bhsd' cache with H = 2
      const three = Tensor.zeros([2, 3, 1, 4], 'f32', 'cpu');
      expectKvsiftError(
        () => cache.append(three, three),
        'ERR_INVALID_ARG',
        "KvCache.append: expected a tensor [2, 2, T, 4] (the cache's layout 'bhsd') for keys, but received shape [2, 3, 1, 4]",
      );
      const wide = Tensor.zeros([2, 5, 2, 4], 'f32', 'cpu');
      expectKvsiftError(() => cache.append(wide, wide), 'ERR_INVALID_ARG', /did you mean|these look like 'bshd' tokens/);
      expectKvsiftError(() => cache.append(k, k, { lengths: [6, 0] }), 'ERR_INVALID_ARG', 'KvCache.append: expected an integer in [0, 5] (the tokens given) for options.lengths[0], but received 6');
      // a hole is no count (it would read as 0 and append nothing to that row)
      // eslint-disable-next-line no-sparse-arrays
      expectKvsiftError(() => cache.append(k, k, { lengths: [, 1] as number[] }), 'ERR_INVALID_ARG', 'KvCache.append: expected an element (holes are not allowed) for options.lengths[0], but received a hole');
      // eslint-disable-next-line no-sparse-arrays
      expectKvsiftError(() => cache.setLengths([, 1] as number[]), 'ERR_INVALID_ARG', 'KvCache.setLengths: expected an element (holes are not allowed) for lengths[0], but received a hole');
      let reads = 0;
      const lying = [3, 0];
      // checked and stored from one read: 99 is refused, the 0 a second read would give is never seen
      Object.defineProperty(lying, 1, { get: () => (reads++ === 0 ? 99 : 0), enumerable: true });
      expectKvsiftError(() => cache.setLengths(lying), 'ERR_INVALID_ARG', 'KvCache.setLengths: expected an integer in [0, 4] for lengths[1], but received 99');
      expect(reads).toBe(1);
      const pos3 = Tensor.zeros([2, 3, 2], 'i32', 'cpu');
      expectKvsiftError(() => cache.retain(pos3), 'ERR_INVALID_ARG', 'KvCache.retain: expected an i32 tensor [2, 2 (or 1), C <= 8] for positions, but received shape [2, 3, 2]');
      const long = Tensor.zeros([2, 2, 5], 'i32', 'cpu');
      expectKvsiftError(() => cache.retain(long), 'ERR_INVALID_ARG', 'KvCache.retain: expected at most 4 kept tokens in row 1 (its length) for positions, but received 5');
      expectKvsiftError(() => cache.retain(cache.positions), 'ERR_INVALID_ARG', /positions/);
      const ok = Tensor.from(new Int32Array([0, 1, 0, 1, 0, 1, 0, 1]), { shape: [2, 2, 2], device: 'cpu' });
      const small = Tensor.zeros([2, 2, 7], 'f32', 'cpu');
      expectKvsiftError(() => cache.retain(ok, { also: [small] }), 'ERR_INVALID_ARG', 'KvCache.retain: expected a tensor [2, 2, 8] (per token of the cache) for options.also[0], but received shape [2, 2, 7]');
      expectKvsiftError(() => cache.retain(ok, { also: [scores, scores] }), 'ERR_INVALID_ARG', /options\.also\[1\]/);
      expectKvsiftError(() => new KvCache({ batch: 1, kvHeads: 1, headDim: 1, capacity: 1 } as never), 'ERR_INVALID_ARG', "KvCache: expected one of 'f32', 'f16', 'bf16' for options.dtype, but received undefined");
      expect(snapshot()).toEqual(before);
      for (const t of [f16, swapped, three, wide, pos3, long, ok, small]) t.dispose();
      cache.dispose();
    });
  });
});

describe('the raw binding re-checks what memory safety depends on', () => {
  it('kvAppend, kvRetain and copyAxis refuse shapes and values that would reach outside a buffer', () => {
    const keys = Tensor.zeros([1, 2, 4, 3], 'f32', 'cpu');
    const values = Tensor.zeros([1, 2, 4, 3], 'f32', 'cpu');
    const positions = Tensor.zeros([1, 2, 4], 'i32', 'cpu');
    const step = Tensor.zeros([1, 2, 2, 3], 'f32', 'cpu');
    const i32 = (...v: number[]) => new Int32Array(v);
    const append = (o: object) => native.kvAppend(keys, values, positions, step, step, { lengths: i32(0), counts: i32(2), starts: i32(0), ...o });
    expectKvsiftError(() => append({ lengths: i32(3) }), 'ERR_INVALID_ARG', /KvCache\.append: expected at most the capacity 4 tokens per row for keys, but received 5 in row 0/);
    expectKvsiftError(() => append({ counts: i32(3) }), 'ERR_INVALID_ARG', /counts\[0\]/);
    expectKvsiftError(() => append({ lengths: i32(0, 0) }), 'ERR_INVALID_ARG', /lengths/);
    expectKvsiftError(() => append({ starts: [0] }), 'ERR_INVALID_ARG', /starts/);
    const wide = Tensor.zeros([1, 2, 2, 4], 'f32', 'cpu');
    expectKvsiftError(() => native.kvAppend(keys, values, positions, wide, wide, { lengths: i32(0), counts: i32(2), starts: i32(0) }), 'ERR_INVALID_ARG', /keys\.shape/);
    const keep = Tensor.from(new Int32Array([0, 1, 0, 1]), { shape: [1, 2, 2], device: 'cpu' });
    const items = [{ tensor: keys, zeroTail: false }, { tensor: positions, zeroTail: false }];
    expectKvsiftError(() => native.kvRetain(keep, { lengths: i32(1) }, items), 'ERR_INDEX_OUT_OF_RANGE', /positions\[0, 0, 1\] = 1 is outside/);
    expectKvsiftError(() => native.kvRetain(keep, { lengths: i32(5) }, items), 'ERR_INVALID_ARG', /lengths\[0\]/);
    const fake = { _buffer: keep._buffer, _dtypeCode: 3, shape: [1, 2, 64] };
    expectKvsiftError(() => native.kvRetain(fake, { lengths: i32(4) }, items), 'ERR_INVALID_ARG', /positions/);
    const short = Tensor.zeros([1, 2, 3], 'f32', 'cpu');
    expectKvsiftError(() => native.kvRetain(keep, { lengths: i32(4) }, [...items, { tensor: short, zeroTail: true }]), 'ERR_INVALID_ARG', /items\[2\]\.tensor/);
    expectKvsiftError(() => native.kvRetain(keep, { lengths: i32(4) }, [items[0], items[0]]), 'ERR_INVALID_ARG', /repeated/);
    expectKvsiftError(() => native.copyAxis(keys, step, { axis: 2, offset: 3 }), 'ERR_INVALID_ARG', /offset/);
    expectKvsiftError(() => native.copyAxis(keys, wide, { axis: 2, offset: 0 }), 'ERR_INVALID_ARG', /src\.shape/);
    expect(Array.from(keys.toArray()).every((x) => x === 0)).toBe(true);
    for (const t of [keys, values, positions, step, wide, keep, short]) t.dispose();
  });
});

describeCuda('KvCache cuda', () => {
  for (const device of cudaDevices()) {
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      for (const layout of ['bhsd', 'bshd'] as const) {
        it(`${device}: append and retain match the host model (${dtype}, ${layout})`, () => {
          const rng = testRng();
          for (let rep = 0; rep < 2; rep++) runSequence(rng, device, dtype, layout);
        });
      }
    }

    it(`${device}: a bad selection is reported at synchronize and writes nothing`, async () => {
      const cache = new KvCache({ batch: 1, kvHeads: 2, headDim: 8, capacity: 16, dtype: 'bf16', device });
      const k = Tensor.from(new Float32Array(2 * 6 * 8).map((_, i) => i), { shape: [1, 2, 6, 8], dtype: 'bf16', device });
      cache.append(k, k);
      const scores = Tensor.from(new Float32Array(2 * 16).map((_, i) => i), { shape: [1, 2, 16], device });
      const before = [cache.keys.toRawArray(), cache.values.toRawArray(), cache.positions.toArray(), scores.toArray()];
      const lengths = cache.lengths.slice();
      const p = Tensor.from(new Int32Array([0, 3, 3, 5, 0, 2, 1, 7]).subarray(0, 8), { shape: [1, 2, 4], device });
      cache.retain(p, { also: [scores] });
      const e = await rejectsKvsift(synchronize(device));
      expect(e.code).toBe('ERR_INDEX_OUT_OF_RANGE');
      expect(e.message).toMatch(/KvCache\.retain on cuda:\d+ met positions that were out of range, repeated or unsorted; it wrote nothing/);
      cache.setLengths(lengths);
      expect([cache.keys.toRawArray(), cache.values.toRawArray(), cache.positions.toArray(), scores.toArray()]).toEqual(before);
      await synchronize(device); // the flag was cleared
      for (const t of [k, scores, p]) t.dispose();
      cache.dispose();
    });
  }
});
