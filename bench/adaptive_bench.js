/**
 * Times adaptive.select and compactRagged at the Llama-3-8B layer shape (Hkv 8, D 128) on the
 * default device, with bench.js's conventions: the median of runs after warm-up, the bytes each op
 * must move (its floor), GB/s, and the fraction of a device-to-device copy of the same traffic
 * measured in the same run, interleaved with the op so both see the same machine.
 *
 *   npm run build:ts && node bench/adaptive_bench.js [--n 4k,8k,32k] [--batch 1] [--capacity 2048]
 *                                                    [--device cpu|cuda:0] [--dtype bf16] [--runs 15]
 *
 * Floors: adaptive.select reads the f32 scores [B, H, N] and writes B * budget positions and the
 * indptr; compactRagged reads the kept rows of K and V and writes them (plus the positions read).
 */
'use strict';

const path = require('node:path');
const kv = require(path.join(__dirname, '..', 'dist'));
const { native } = require(path.join(__dirname, '..', 'dist', 'native.js'));
const { filledTensor } = require('./inputs');
const shapes = require('./shapes');

const args = process.argv.slice(2);
function opt(name, fallback) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
}
const model = shapes.MODELS['llama3-8b'];
const device = opt('device', kv.defaultDevice());
const dtype = opt('dtype', device === 'cpu' ? 'f32' : 'bf16');
const ns = opt('n', device === 'cpu' ? '4k,8k,32k' : '4k,8k,32k,128k').split(',').map(shapes.parseN);
const batches = opt('batch', '1').split(',').map(Number);
const C = Number(opt('capacity', String(shapes.CAPACITY)));
const W = 32;
const runs = Number(opt('runs', device === 'cpu' ? '15' : '50'));
const esz = kv.dtypeBytes(dtype);

const now = () => Number(process.hrtime.bigint()) / 1e3; // µs
async function sync() {
  if (device !== 'cpu') await kv.synchronize(device);
}
async function timeIt(fn) {
  for (let i = 0; i < 3; i++) fn();
  await sync();
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const t0 = now();
    fn();
    await sync();
    samples.push(now() - t0);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

function fmt(us) {
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`;
}

async function main() {
  const rows = [];
  for (const B of batches) {
    for (const N of ns) {
      const H = model.hkv;
      const D = model.d;
      const budget = H * C;
      const keys = filledTensor(kv, native, [B, H, N, D], dtype, device, 1);
      const values = filledTensor(kv, native, [B, H, N, D], dtype, device, 2);
      const scores = filledTensor(kv, native, [B, H, N], 'f32', device, 3);
      const opts = { budget, window: W, minPerHead: Math.floor(0.2 * C) };
      const sel = kv.adaptive.select(scores, opts);
      const floors = {
        'adaptive.select': B * H * N * 4 + B * budget * 4 + (B * H + 1) * 4,
        compactRagged: 2 * 2 * B * budget * D * esz + B * budget * 4,
      };
      const ops = {
        'adaptive.select': () => {
          const s = kv.adaptive.select(scores, opts);
          s.positions.dispose();
          s.indptr.dispose();
        },
        compactRagged: () => {
          const c = kv.compactRagged(keys, values, sel);
          c.keys.dispose();
          c.values.dispose();
        },
      };
      for (const [name, run] of Object.entries(ops)) {
        const bytes = floors[name];
        const copyBytes = Math.ceil(bytes / 2 / 256) * 256;
        const src = kv.Tensor.empty([copyBytes], 'u8', device);
        const dst = kv.Tensor.empty([copyBytes], 'u8', device);
        const copy = () => native.copyBuffer(dst._buffer, 0, src._buffer, 0, copyBytes);
        const opUs = await timeIt(run);
        const copyUs = await timeIt(copy);
        const gbps = bytes / (opUs * 1e3);
        const copyGbps = (2 * copyBytes) / (copyUs * 1e3);
        rows.push({ op: name, N: shapes.formatN(N), B, median: fmt(opUs), floorMiB: (bytes / 2 ** 20).toFixed(1), gbps: gbps.toFixed(1), copyGbps: copyGbps.toFixed(1), ofCopy: `${((100 * gbps) / copyGbps).toFixed(0)}%` });
        process.stderr.write(`${name} N=${shapes.formatN(N)} B=${B}: ${fmt(opUs)}\n`);
        src.dispose();
        dst.dispose();
      }
      for (const t of [keys, values, scores, sel.positions, sel.indptr]) t.dispose();
    }
  }
  console.log(`llama3-8b layer (Hkv ${model.hkv}, D ${model.d}), ${dtype} on ${device}, budget ${model.hkv} x ${C}, window ${W}, minPerHead ${Math.floor(0.2 * C)}; median of ${runs} runs after 3 warm-up`);
  console.log('| op | N | B | median | floor MiB | GB/s | copy GB/s | of copy |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.op} | ${r.N} | ${r.B} | ${r.median} | ${r.floorMiB} | ${r.gbps} | ${r.copyGbps} | ${r.ofCopy} |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
