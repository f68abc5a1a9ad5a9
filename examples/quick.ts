/**
 * The README's quick example, runnable as written (the test suite runs it and checks that the
 * README shows exactly the region between the markers). Run it: npx tsx examples/quick.ts
 */
// #region quick
import { Tensor, snapkv, defaultDevice } from 'kvsift';

const device = defaultDevice();                      // 'cuda:0' when a GPU is usable, else 'cpu'
const [B, Hq, Hkv, N, D, W] = [1, 32, 8, 4096, 128, 32];
// Stand-ins for a model's prefill: the prompt's keys and values, and its last W queries.
const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const kData = random(B * Hkv * N * D);
const vData = random(B * Hkv * N * D);
const qData = random(B * Hq * W * D);

const keys = Tensor.from(kData, { shape: [B, Hkv, N, D], dtype: 'bf16', device });
const values = Tensor.from(vData, { shape: [B, Hkv, N, D], dtype: 'bf16', device });
const window = Tensor.from(qData, { shape: [B, Hq, W, D], dtype: 'bf16', device }); // last W queries

const kept = snapkv.compress(window, keys, values, { window: W, capacity: 1024 });
// kept.keys, kept.values: [1, 8, 1024, 128] bf16; kept.positions: i32 [1, 8, 1024], ascending
keys.dispose(); values.dispose(); window.dispose();  // the old cache's memory is freed now
const positions = kept.positions.toArray();          // Int32Array: RoPE position ids of the kept tokens
console.log(`kept ${kept.keys.shape[2]} of ${N} tokens per head on ${device}; head 0 keeps ${positions.slice(0, 8).join(', ')}, ...`);
// #endregion quick

export const quick = { kept, positions, N, W };
