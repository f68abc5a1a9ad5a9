/**
 * kvsift decode bench: decode.attention at Llama-3-8B shapes (Hq 32, Hkv 8, D 128) against its
 * bandwidth floor (K and V read once) and a same-run copy of the same bytes; the fused
 * attention + Keyformer accumulation against attention followed by keyformer.accumulate; and
 * Quest: the attention mass that 1/8 of the blocks recover on synthetic caches, and the time of
 * select + sparse attention against dense attention. Plain CommonJS on ../dist, like bench.js;
 * the numbers go to docs/BENCHMARKS.md ("Decode attention and Quest").
 *
 *   node bench/decode.js [--device cpu|cuda:N] [--dtype bf16] [--n 4k,32k] [--batch 1,8] [--runs 5]
 *                        [--peak-gbs X] [--quest-n 32k]
 */
'use strict';

const os = require('node:os');
const { execFileSync } = require('node:child_process');
const path = require('node:path');
const { filledTensor, values } = require('./inputs');

const ROOT = path.join(__dirname, '..');
const kv = require(path.join(ROOT, 'dist'));
const native = require(path.join(ROOT, 'dist', 'native.js')).native;

function parseN(s) {
  const m = /^(\d+)(k?)$/i.exec(s.trim());
  if (!m) throw new Error(`bad length '${s}'`);
  return Number(m[1]) * (m[2] ? 1024 : 1);
}

function parseArgs(argv) {
  const o = { device: null, dtype: 'bf16', n: null, batch: [1, 8], runs: 5, peakGbs: null, questN: 32768 };
  for (let i = 0; i < argv.length; i++) {
    const [k, inline] = argv[i].split('=');
    const val = () => (inline !== undefined ? inline : argv[++i]);
    if (k === '--device') o.device = val();
    else if (k === '--dtype') o.dtype = val();
    else if (k === '--n') o.n = val().split(',').map(parseN);
    else if (k === '--batch') o.batch = val().split(',').map(Number);
    else if (k === '--runs') o.runs = Number(val());
    else if (k === '--peak-gbs') o.peakGbs = Number(val());
    else if (k === '--quest-n') o.questN = parseN(val());
    else throw new Error(`unknown option '${argv[i]}'`);
  }
  o.device = o.device ?? kv.defaultDevice();
  o.n = o.n ?? (o.device === 'cpu' ? [4096, 32768] : [4096, 32768, 131072]);
  return o;
}

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s[s.length >> 1];
};

/** Median microseconds of each run, interleaved run by run so a shared host's noise hits all. */
async function measure(device, runs, reps) {
  const cuda = device !== 'cpu';
  const sync = async () => {
    if (cuda) await kv.synchronize(device);
  };
  for (const r of runs) r();
  await sync();
  const samples = runs.map(() => []);
  for (let i = 0; i < reps; i++) {
    for (let j = 0; j < runs.length; j++) {
      await sync();
      const t0 = process.hrtime.bigint();
      runs[j]();
      await sync();
      samples[j].push(Number(process.hrtime.bigint() - t0) / 1e3);
    }
  }
  return samples.map(median);
}

const dispose = (r) => {
  if (r && r.out) r.out.dispose();
  if (r && r.lse) r.lse.dispose();
};

async function attentionSweep(o) {
  const [Hq, Hkv, D] = [32, 8, 128];
  const esz = kv.dtypeBytes(o.dtype);
  const rows = [];
  for (const N of o.n) {
    for (const B of o.batch) {
      const k = filledTensor(kv, native, [B, Hkv, N, D], o.dtype, o.device, 1);
      const v = filledTensor(kv, native, [B, Hkv, N, D], o.dtype, o.device, 2);
      const q = filledTensor(kv, native, [B, Hq, 1, D], o.dtype, o.device, 4);
      const scores = kv.Tensor.zeros([B, Hkv, N], 'f32', o.device);
      const copyDst = kv.Tensor.empty([2 * B * Hkv * N * D], o.dtype, o.device);
      const bytes = 2 * B * Hkv * N * D * esz; // K and V, read once
      const kf = { scores, method: 'keyformer', tau: 1.5, seed: 7, step: 3 };
      const [tAttn, tCopy, tFused, tSep] = await measure(o.device, [
        () => dispose(kv.decode.attention(q, k, v)),
        () => {
          native.copyBuffer(copyDst._buffer, 0, k._buffer, 0, bytes / 2);
          native.copyBuffer(copyDst._buffer, bytes / 2, v._buffer, 0, bytes / 2);
        },
        () => dispose(kv.decode.attention(q, k, v, { accumulate: kf })),
        () => {
          dispose(kv.decode.attention(q, k, v));
          kv.keyformer.accumulate(q, k, scores, { tau: 1.5, seed: 7, step: 3 });
        },
      ], o.runs);
      const gbs = bytes / tAttn / 1e3;
      rows.push({
        N, B, bytes,
        attnUs: tAttn, gbs,
        floorFraction: o.peakGbs ? gbs / o.peakGbs : null,
        // a copy of the same bytes reads them and writes them: its time is a practical floor
        copyUs: tCopy, copyFraction: tCopy / tAttn,
        fusedUs: tFused, separateUs: tSep, fusedSpeedup: tSep / tFused,
      });
      for (const t of [k, v, q, scores, copyDst]) t.dispose();
      process.stderr.write('.');
    }
  }
  process.stderr.write('\n');
  return rows;
}

/**
 * Synthetic caches for Quest. 'uniform': hash noise in [-1, 1) (no structure: a selection can
 * only find chance outliers). 'clustered': the same noise, plus 1/32 of the blocks, at hashed
 * places, whose keys lean toward the group's summed query (each such logit about +5), as retrieval
 * heads meet the tokens they look for.
 */
function questCache(kind, B, Hkv, G, N, D, bs, qdata) {
  const k = values(B * Hkv * N * D, 11);
  if (kind === 'clustered') {
    const nb = Math.ceil(N / bs);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < Hkv; h++) {
        const dir = new Float32Array(D);
        for (let g = 0; g < G; g++) for (let d = 0; d < D; d++) dir[d] += qdata[((b * Hkv + h) * G + g) * D + d];
        let n2 = 0;
        for (let d = 0; d < D; d++) n2 += dir[d] * dir[d];
        const gain = (5 * Math.sqrt(D) * G) / n2; // q_g . (gain dir) ~ gain |q|^2 ~ 5 sqrt(D)
        for (let c = 0; c < nb; c++) {
          if (((c * 2654435761 + h * 97 + b * 13) >>> 0) % 32 !== 0) continue;
          for (let j = c * bs; j < Math.min(N, c * bs + bs); j++)
            for (let d = 0; d < D; d++) k[((b * Hkv + h) * N + j) * D + d] += gain * dir[d];
        }
      }
  }
  return k;
}

async function questSweep(o) {
  const [B, Hq, Hkv, D, bs] = [1, 32, 8, 128, 16];
  const G = Hq / Hkv;
  const N = o.questN;
  const qdata = values(B * Hq * D, 4);
  const q = kv.Tensor.from(qdata, { shape: [B, Hq, 1, D], dtype: o.dtype, device: o.device });
  const v = filledTensor(kv, native, [B, Hkv, N, D], o.dtype, o.device, 2);
  const rows = [];
  for (const kind of ['uniform', 'clustered']) {
    const k = kv.Tensor.from(questCache(kind, B, Hkv, G, N, D, bs, qdata), { shape: [B, Hkv, N, D], dtype: o.dtype, device: o.device });
    const meta = kv.quest.metadata(k, { blockSize: bs });
    const nb = Math.ceil(N / bs);
    const budget = Math.ceil(nb / 8);
    const blocks = kv.quest.select(q, meta, { blocks: budget });
    const dense = kv.decode.attention(q, k, v, { returnLse: true });
    const sparse = kv.decode.sparseAttention(q, k, v, { blocks, blockSize: bs, returnLse: true });
    const ld = await dense.lse.toArrayAsync();
    const ls = await sparse.lse.toArrayAsync();
    let mass = 0;
    for (let i = 0; i < ld.length; i++) mass += Math.exp(ls[i] - ld[i]);
    mass /= ld.length;
    const [tDense, tQuest] = await measure(o.device, [
      () => dispose(kv.decode.attention(q, k, v)),
      () => {
        const sel = kv.quest.select(q, meta, { blocks: budget });
        dispose(kv.decode.sparseAttention(q, k, v, { blocks: sel, blockSize: bs }));
        sel.dispose();
      },
    ], o.runs);
    rows.push({ kind, N, blockSize: bs, budget: `${budget}/${nb}`, mass, denseUs: tDense, questUs: tQuest, speedup: tDense / tQuest });
    for (const t of [k, meta.min, meta.max, blocks]) t.dispose();
    dispose(dense);
    dispose(sparse);
    process.stderr.write('.');
  }
  process.stderr.write('\n');
  for (const t of [q, v]) t.dispose();
  return rows;
}

function commit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

const fmt = (x, d = 2) => (x === null || x === undefined ? '-' : x.toFixed(d));
const us = (x) => (x >= 1000 ? `${(x / 1000).toFixed(2)} ms` : `${x.toFixed(1)} us`);

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const cpu = os.cpus();
  console.log(`device ${o.device}${o.device === 'cpu' ? ` (${cpu[0].model}, ${kv.buildInfo.cpuThreads} threads)` : ''}, dtype ${o.dtype}, ` +
    `${new Date().toISOString().slice(0, 10)}, commit ${commit()}, median of ${o.runs}`);
  const a = await attentionSweep(o);
  console.log('\n| N | B | K+V bytes | attention | GB/s | of floor | of copy | fused attn+keyformer | attn, then keyformer.accumulate | separate / fused |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of a) {
    console.log(`| ${r.N / 1024}k | ${r.B} | ${(r.bytes / 2 ** 20).toFixed(0)} MiB | ${us(r.attnUs)} | ${fmt(r.gbs, 1)} | ${fmt(r.floorFraction)} | ` +
      `${fmt(r.copyFraction)} | ${us(r.fusedUs)} | ${us(r.separateUs)} | ${fmt(r.fusedSpeedup)} |`);
  }
  const qr = await questSweep(o);
  console.log('\n| cache | N | blocks kept | attention mass recovered | dense attention | quest.select + sparseAttention | speedup |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of qr) {
    console.log(`| ${r.kind} | ${r.N / 1024}k | ${r.budget} of ${r.blockSize} | ${fmt(r.mass, 3)} | ${us(r.denseUs)} | ${us(r.questUs)} | ${fmt(r.speedup)} |`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
