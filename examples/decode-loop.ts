/**
 * A Node engine's decode loop that never leaves the device: a 4-layer toy model with one
 * KvCache per layer.
 *
 *   prefill  -> append the (right-padded) prompt's K/V into each layer's KvCache
 *   compress -> SnapKV selection with the cache's own keys and lengths, then retain in place
 *   decode   -> 64 steps of append + h2o.accumulate into a per-layer scores tensor, and every 16
 *               steps an H2O selection retained in place, carrying the scores along
 *
 * Nothing in the loop reads K or V back to the host: transferStats() counts every byte that
 * crosses from a device's tensors into JS memory, and the loop must add none. Afterwards the
 * kept positions, keys, values and scores are checked against a plain host-side reference of
 * the same loop (float64, written for obviousness).
 *
 * Run it:  npx tsx examples/decode-loop.ts [device]      (the test suite runs it too)
 */
import assert from 'node:assert/strict';
import { defaultDevice, h2o, KvCache, snapkv, Tensor, transferStats, type Device, type Layout } from 'kvsift';

export interface DecodeLoopOptions {
  layers?: number;
  /** Decode steps. */
  steps?: number;
  /** Retain every this many steps. */
  retainEvery?: number;
  layout?: Layout;
  seed?: number;
}

export interface DecodeLoopReport {
  device: Device;
  layers: number;
  steps: number;
  /** Bytes read from the device's tensors into JS memory during the loop: 0. */
  toHostBytesInLoop: number;
  /** Wall time per decode step (all layers), in ms. */
  msPerStep: number;
  /** The kept original positions of layer 0, batch row 0, head 0 at the end. */
  keptPositions: number[];
}

// The toy model: GQA with 2 query heads per KV head, a right-padded batch of 2 prompts.
const B = 2;
const HQ = 4;
const HKV = 2;
const D = 16;
const PROMPT = [40, 33];
const WINDOW = 8;
const BUDGET = 24; // tokens kept by SnapKV and by every H2O retain
const RECENT = 8; // H2O's protected recent window
const CAPACITY = 48; // the cache: prompt (40) fits, and BUDGET + retainEvery decode tokens

/** mulberry32 + Box-Muller: reproducible inputs. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  const u = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

function randn(next: () => number, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = next();
  return a;
}

/** [B, H, T, D] data (bhsd order) as a tensor in the layout. */
function tokens(data: Float32Array, H: number, T: number, layout: Layout, device: Device): Tensor {
  if (layout === 'bhsd') return Tensor.from(data, { shape: [B, H, T, D], device });
  const t = new Float32Array(data.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let s = 0; s < T; s++)
        for (let d = 0; d < D; d++) t[((b * T + s) * H + h) * D + d] = data[((b * H + h) * T + s) * D + d];
  return Tensor.from(t, { shape: [B, T, H, D], device });
}

// ---------------------------------------------------------------------------------------------
// The host-side reference: per (layer, b, h) the live tokens with their K, V, position and score.

interface RefToken {
  pos: number;
  k: Float32Array;
  v: Float32Array;
  score: number;
}

function dot(a: ArrayLike<number>, aOff: number, b: ArrayLike<number>): number {
  let s = 0;
  for (let d = 0; d < D; d++) s += a[aOff + d] * b[d];
  return s;
}

/** The `count` best of `score(j)` for j < n (ties to the lower j), ascending. */
function topAscending(n: number, count: number, score: (j: number) => number): number[] {
  const order = Array.from({ length: n }, (_, j) => j).sort((x, y) => score(y) - score(x) || x - y);
  return order.slice(0, count).sort((x, y) => x - y);
}

class ReferenceLayer {
  rows: RefToken[][] = Array.from({ length: B * HKV }, () => []);
  appended = new Array(B).fill(0);

  append(k: Float32Array, v: Float32Array, T: number, counts: number[]): void {
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < HKV; h++) {
        for (let i = 0; i < counts[b]; i++) {
          const at = ((b * HKV + h) * T + i) * D;
          this.rows[b * HKV + h].push({ pos: this.appended[b] + i, k: k.slice(at, at + D), v: v.slice(at, at + D), score: 0 });
        }
      }
      this.appended[b] += counts[b];
    }
  }

  /** SnapKV: window votes (mean over the group), max-pool 7, top BUDGET - W of the prefix + window. */
  snapkv(q: Float32Array): void {
    const G = HQ / HKV;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < HKV; h++) {
        const row = this.rows[b * HKV + h];
        const L = row.length;
        const P = L - WINDOW;
        const votes = new Float64Array(P);
        for (let g = 0; g < G; g++) {
          for (let r = 0; r < WINDOW; r++) {
            const qOff = ((b * HQ + h * G + g) * WINDOW + r) * D;
            const logits = row.slice(0, P + r + 1).map((t) => dot(q, qOff, t.k) / Math.sqrt(D));
            const max = Math.max(...logits);
            const sum = logits.reduce((s, x) => s + Math.exp(x - max), 0);
            for (let j = 0; j < P; j++) votes[j] += Math.exp(logits[j] - max) / sum / G;
          }
        }
        const pooled = Array.from({ length: P }, (_, j) => Math.max(...votes.slice(Math.max(0, j - 3), Math.min(P, j + 4))));
        const keep = [...topAscending(P, BUDGET - WINDOW, (j) => pooled[j]), ...Array.from({ length: WINDOW }, (_, i) => P + i)];
        this.rows[b * HKV + h] = keep.map((j) => row[j]);
      }
    }
  }

  /** H2O accumulation of one step's queries [B, HQ, 1, D] over every live key. */
  accumulate(q: Float32Array): void {
    const G = HQ / HKV;
    for (let b = 0; b < B; b++) {
      for (let hq = 0; hq < HQ; hq++) {
        const row = this.rows[b * HKV + Math.floor(hq / G)];
        const logits = row.map((t) => dot(q, (b * HQ + hq) * D, t.k) / Math.sqrt(D));
        const max = Math.max(...logits);
        const sum = logits.reduce((s, x) => s + Math.exp(x - max), 0);
        row.forEach((t, j) => (t.score += Math.exp(logits[j] - max) / sum));
      }
    }
  }

  /** H2O selection: the last RECENT tokens plus the heaviest hitters, BUDGET in all. */
  h2oRetain(): void {
    for (let r = 0; r < B * HKV; r++) {
      const row = this.rows[r];
      const keep = topAscending(row.length, BUDGET, (j) => (j >= row.length - RECENT ? Infinity : row[j].score));
      this.rows[r] = keep.map((j) => row[j]);
      // the retained scores travel with their tokens; new tokens start from 0 (RefToken.score)
    }
  }
}

// ---------------------------------------------------------------------------------------------

/** Runs the loop on `device`, checks it against the reference, and reports. Throws on mismatch. */
export function runDecodeLoop(device: Device = defaultDevice(), options: DecodeLoopOptions = {}): DecodeLoopReport {
  const layers = options.layers ?? 4;
  const steps = options.steps ?? 64;
  const retainEvery = options.retainEvery ?? 16;
  const layout = options.layout ?? 'bhsd';
  const next = rng(options.seed ?? 2024);
  const T0 = Math.max(...PROMPT);

  const caches: KvCache[] = [];
  const scores: Tensor[] = [];
  const refs: ReferenceLayer[] = [];
  try {
    // ---- prefill + SnapKV, per layer (outside the measured loop: it reads nothing back either)
    for (let l = 0; l < layers; l++) {
      const cache = new KvCache({ batch: B, kvHeads: HKV, headDim: D, capacity: CAPACITY, dtype: 'f32', device, layout });
      caches.push(cache);
      scores.push(Tensor.zeros([B, HKV, CAPACITY], 'f32', device));
      const ref = new ReferenceLayer();
      refs.push(ref);
      const k = randn(next, B * HKV * T0 * D);
      const v = randn(next, B * HKV * T0 * D);
      const kt = tokens(k, HKV, T0, layout, device);
      const vt = tokens(v, HKV, T0, layout, device);
      cache.append(kt, vt, { lengths: PROMPT });
      ref.append(k, v, T0, PROMPT);
      kt.dispose();
      vt.dispose();
      // the window queries: each row's last WINDOW real prompt tokens
      const q = randn(next, B * HQ * WINDOW * D);
      const qt = tokens(q, HQ, WINDOW, layout, device);
      const keep = snapkv.select(qt, cache.keys, { window: WINDOW, capacity: BUDGET, seqLens: cache.lengths, layout });
      cache.retain(keep);
      ref.snapkv(q);
      qt.dispose();
      keep.dispose();
    }

    // ---- the decode loop: everything stays on the device
    const before = transferStats(device).toHostBytes;
    const started = performance.now();
    for (let step = 0; step < steps; step++) {
      for (let l = 0; l < layers; l++) {
        const cache = caches[l];
        const k = randn(next, B * HKV * D);
        const v = randn(next, B * HKV * D);
        const q = randn(next, B * HQ * D);
        const kt = tokens(k, HKV, 1, layout, device);
        const vt = tokens(v, HKV, 1, layout, device);
        const qt = tokens(q, HQ, 1, layout, device);
        cache.append(kt, vt);
        h2o.accumulate(qt, cache.keys, scores[l], { seqLens: cache.lengths, layout });
        refs[l].append(k, v, 1, [1, 1]);
        refs[l].accumulate(q);
        if (step % retainEvery === retainEvery - 1) {
          const keep = h2o.select(scores[l], { capacity: BUDGET, recent: RECENT, seqLens: cache.lengths });
          cache.retain(keep, { also: [scores[l]] });
          keep.dispose();
          refs[l].h2oRetain();
        }
        kt.dispose();
        vt.dispose();
        qt.dispose();
      }
    }
    const msPerStep = (performance.now() - started) / steps;
    const toHostBytesInLoop = transferStats(device).toHostBytes - before;
    assert.equal(toHostBytesInLoop, 0, 'no byte of K or V (or anything else) may reach the host inside the loop');

    // ---- check against the reference (reading back is fine now)
    for (let l = 0; l < layers; l++) {
      const cache = caches[l];
      const keys = cache.keys.toArray();
      const values = cache.values.toArray();
      const positions = cache.positions.toArray();
      const s = scores[l].toArray();
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < HKV; h++) {
          const row = refs[l].rows[b * HKV + h];
          assert.equal(cache.lengths[b], row.length, `layer ${l} row ${b}: length`);
          const base = (b * HKV + h) * CAPACITY;
          assert.deepEqual(Array.from(positions.subarray(base, base + row.length)), row.map((t) => t.pos), `layer ${l} [${b}, ${h}]: kept positions`);
          row.forEach((t, j) => {
            const at = (d: number): number => (layout === 'bhsd' ? ((b * HKV + h) * CAPACITY + j) * D + d : ((b * CAPACITY + j) * HKV + h) * D + d);
            for (let d = 0; d < D; d++) {
              assert.equal(keys[at(d)], t.k[d], `layer ${l} [${b}, ${h}, ${j}, ${d}]: key`);
              assert.equal(values[at(d)], t.v[d], `layer ${l} [${b}, ${h}, ${j}, ${d}]: value`);
            }
            assert.ok(Math.abs(s[base + j] - t.score) <= 1e-4 * (1 + Math.abs(t.score)), `layer ${l} [${b}, ${h}, ${j}]: score ${s[base + j]} vs ${t.score}`);
          });
          for (let j = row.length; j < CAPACITY; j++) assert.equal(s[base + j], 0, `layer ${l} [${b}, ${h}, ${j}]: score past the length`);
        }
      }
    }
    return {
      device,
      layers,
      steps,
      toHostBytesInLoop,
      msPerStep,
      keptPositions: refs[0].rows[0].map((t) => t.pos),
    };
  } finally {
    for (const c of caches) c.dispose();
    for (const t of scores) t.dispose();
  }
}

// run as a script (not when the test suite imports it)
if (typeof require !== 'undefined' && typeof module !== 'undefined' && require.main === module) {
  const device = (process.argv[2] as Device | undefined) ?? defaultDevice();
  const r = runDecodeLoop(device);
  console.log(`decode loop on ${r.device}: ${r.layers} layers x ${r.steps} steps, ${r.msPerStep.toFixed(2)} ms/step, ` +
    `${r.toHostBytesInLoop} bytes to the host inside the loop; matches the host reference`);
  console.log(`layer 0, row 0, head 0 keeps positions ${r.keptPositions.join(' ')}`);
}
