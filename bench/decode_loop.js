/**
 * kvsift bench --op decode-loop: the per-step cost of an engine's decode loop on one layer at a
 * model shape (default Llama-3-8B: Hq 32, Hkv 8, D 128), with N live tokens:
 *
 *   on device   KvCache.append of the step's K/V + h2o.accumulate of its query into the scores,
 *               and every `retainEvery` steps h2o.select + KvCache.retain back to N tokens
 *               carrying the scores (amortized over the steps);
 *   host copies the same loop as an engine without KvCache had to write it: every step reads the
 *               whole cache to the host, appends there, uploads it again (Tensor.from) and
 *               accumulates; the retain is an evict into new tensors plus a gather of the scores.
 *
 * Both loops run in the same process on the same device, so their ratio is measured in one run.
 * Plain CommonJS on ../dist, like bench.js, which calls run() when --op names decode-loop
 * (bench/cli.js LOOPS).
 */
'use strict';

const shapes = require('./shapes');
const { UsageError, intList } = require('./cli');
const { meta, writeJson } = require('./report');

/** Median of a list of numbers. */
function median(xs) {
  const s = xs.slice().sort((a, b) => a - b);
  return s[s.length >> 1];
}

/**
 * @param kv the kvsift module
 * @param o { device, dtype, n: number[], steps, retainEvery, hq, hkv, d, log(line) }
 * @returns rows { n, deviceMs, hostMs, ratio, toHostBytesPerStepDevice, toHostBytesPerStepHost }
 */
async function runDecodeLoopBench(kv, o) {
  const { device, dtype } = o;
  const hq = o.hq ?? 32;
  const hkv = o.hkv ?? 8;
  const d = o.d ?? 128;
  const retainEvery = o.retainEvery ?? 16;
  const steps = o.steps ?? retainEvery * 2;
  const recent = 64;
  const rows = [];
  const rand = (n) => {
    const a = new Float32Array(n);
    let s = 0x9e3779b9;
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      a[i] = s / 2147483648 - 1;
    }
    return a;
  };
  const stepK = kv.Tensor.from(rand(hkv * d), { shape: [1, hkv, 1, d], dtype, device });
  const stepV = kv.Tensor.from(rand(hkv * d).reverse(), { shape: [1, hkv, 1, d], dtype, device });
  const stepQ = kv.Tensor.from(rand(hq * d), { shape: [1, hq, 1, d], dtype, device });
  const sync = () => kv.synchronize(device);
  /**
   * One retain period of warm-up, then `periods` timed periods of `step`: the median-ready list of
   * per-step milliseconds and the bytes that went device -> host per step (0 when the loop stays on
   * the device).
   */
  const timeRetainPeriods = async (step, periods) => {
    for (let s = 0; s < retainEvery; s++) step(s);
    await sync();
    const before = kv.transferStats(device).toHostBytes;
    const perStepMs = [];
    for (let rep = 0; rep < periods; rep++) {
      const t0 = performance.now();
      for (let s = 0; s < retainEvery; s++) step(s);
      await sync();
      perStepMs.push((performance.now() - t0) / retainEvery);
    }
    return { perStepMs, toHostBytesPerStep: (kv.transferStats(device).toHostBytes - before) / (periods * retainEvery) };
  };
  try {
    for (const N of o.n) {
      const prompt = kv.Tensor.from(rand(hkv * N * d), { shape: [1, hkv, N, d], dtype, device });

      // ---- on device: KvCache
      const cache = new kv.KvCache({ batch: 1, kvHeads: hkv, headDim: d, capacity: N + retainEvery, dtype, device });
      const scores = kv.Tensor.zeros([1, hkv, N + retainEvery], 'f32', device);
      cache.append(prompt, prompt);
      const deviceStep = (step) => {
        cache.append(stepK, stepV);
        kv.h2o.accumulate(stepQ, cache.keys, scores, { seqLens: cache.lengths });
        if (step % retainEvery === retainEvery - 1) {
          const keep = kv.h2o.select(scores, { capacity: N, recent, seqLens: cache.lengths });
          cache.retain(keep, { also: [scores] });
          keep.dispose();
        }
      };
      const { perStepMs: dev, toHostBytesPerStep: devToHost } = await timeRetainPeriods(deviceStep, Math.max(1, Math.round(steps / retainEvery)));
      cache.dispose();
      scores.dispose();

      // ---- host copies: the cache travels through JS memory every step
      let keys = prompt.to(device);
      let values = prompt.to(device);
      let hScores = kv.Tensor.zeros([1, hkv, N], 'f32', device);
      const hostStep = (step) => {
        const n = keys.shape[2];
        const kHost = keys.toRawArray();
        const vHost = values.toRawArray();
        const sHost = hScores.toArray();
        const kNew = new kHost.constructor((n + 1) * hkv * d);
        const vNew = new vHost.constructor((n + 1) * hkv * d);
        const sNew = new Float32Array(hkv * (n + 1));
        const kStep = stepK.toRawArray();
        const vStep = stepV.toRawArray();
        for (let h = 0; h < hkv; h++) {
          kNew.set(kHost.subarray(h * n * d, (h + 1) * n * d), h * (n + 1) * d);
          kNew.set(kStep.subarray(h * d, (h + 1) * d), (h * (n + 1) + n) * d);
          vNew.set(vHost.subarray(h * n * d, (h + 1) * n * d), h * (n + 1) * d);
          vNew.set(vStep.subarray(h * d, (h + 1) * d), (h * (n + 1) + n) * d);
          sNew.set(sHost.subarray(h * n, (h + 1) * n), h * (n + 1));
        }
        keys.dispose();
        values.dispose();
        hScores.dispose();
        const half = dtype === 'f32' ? {} : { dtype };
        keys = kv.Tensor.from(kNew, { shape: [1, hkv, n + 1, d], ...half, device });
        values = kv.Tensor.from(vNew, { shape: [1, hkv, n + 1, d], ...half, device });
        hScores = kv.Tensor.from(sNew, { shape: [1, hkv, n + 1], device });
        kv.h2o.accumulate(stepQ, keys, hScores);
        if (step % retainEvery === retainEvery - 1) {
          const keep = kv.h2o.select(hScores, { capacity: N, recent });
          const small = kv.evict(keys, values, keep);
          const s2 = kv.gather(hScores, keep);
          keys.dispose();
          values.dispose();
          hScores.dispose();
          small.positions.dispose();
          keep.dispose();
          keys = small.keys;
          values = small.values;
          hScores = s2;
        }
      };
      const { perStepMs: host, toHostBytesPerStep: hostToHost } = await timeRetainPeriods(hostStep, Math.max(1, Math.round(steps / retainEvery / 2)));
      keys.dispose();
      values.dispose();
      hScores.dispose();
      prompt.dispose();

      const row = { n: N, deviceMs: median(dev), hostMs: median(host), toHostBytesPerStepDevice: devToHost, toHostBytesPerStepHost: hostToHost };
      row.ratio = row.hostMs / row.deviceMs;
      rows.push(row);
      if (o.log) o.log(row);
    }
  } finally {
    stepK.dispose();
    stepV.dispose();
    stepQ.dispose();
  }
  return rows;
}

/** The table bench prints. */
function formatDecodeLoop(rows, o) {
  const head = `decode loop, one layer, ${o.dtype} on ${o.device}, Hq ${o.hq ?? 32} / Hkv ${o.hkv ?? 8} / D ${o.d ?? 128}, retain every ${o.retainEvery ?? 16} steps (amortized)`;
  const lines = [head, '      N   on device (ms/step)   host copies (ms/step)   host / device   K/V bytes to host per step (device | host loop)'];
  for (const r of rows) {
    lines.push(
      `${String(r.n).padStart(7)}   ${r.deviceMs.toFixed(3).padStart(19)}   ${r.hostMs.toFixed(3).padStart(21)}   ${r.ratio.toFixed(1).padStart(12)}x   ${String(Math.round(r.toHostBytesPerStepDevice)).padStart(10)} | ${Math.round(r.toHostBytesPerStepHost)}`,
    );
  }
  return lines.join('\n');
}

/**
 * --op decode-loop: the first --shape (default llama3-8b), --n (default 4k and 32k; 4k with
 * --quick), --reps retain periods timed per N. Returns the exit code; throws UsageError on bad flags.
 */
async function run(kv, o, device, dtype, info) {
  const modelName = o.shape[0] || 'llama3-8b';
  const model = shapes.MODELS[modelName];
  if (!model) throw new UsageError(`--shape: unknown model '${modelName}' (${Object.keys(shapes.MODELS).join(', ')})`);
  let n;
  try {
    n = o.n.length ? o.n.map((s) => shapes.parseN(s)) : o.quick ? [4096] : [4096, 32768];
  } catch (e) {
    throw new UsageError(`--n: ${e.message}`);
  }
  const reps = o.reps === null ? (o.quick ? 1 : 2) : intList('--reps', [o.reps])[0];
  const opts = { device, dtype, n, hq: model.hq, hkv: model.hkv, d: model.d, retainEvery: 16, steps: 16 * reps };
  process.stdout.write(`kvsift bench --op decode-loop: ${modelName}, ${dtype} on ${device}; N ${n.map(shapes.formatN).join('/')}\n`);
  const log = (r) => process.stdout.write(`  N ${shapes.formatN(r.n)}: ${r.deviceMs.toFixed(3)} ms/step on device, ${r.hostMs.toFixed(3)} ms/step with host copies (${r.ratio.toFixed(1)}x)\n`);
  const rows = await runDecodeLoopBench(kv, { ...opts, log });
  process.stdout.write(`\n${formatDecodeLoop(rows, opts)}\n`);
  if (o.json) writeJson(o.json, { meta: { ...meta(kv, device, info, dtype, o, null), model: modelName, decodeLoop: opts }, decodeLoop: rows });
  return 0;
}

module.exports = { run, runDecodeLoopBench, formatDecodeLoop };
