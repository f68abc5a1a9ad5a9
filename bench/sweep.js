/**
 * The sweep of kvsift bench: which (model, N, batch, W, op) are timed, the inputs they share, and
 * the loop that times each op beside a device-to-device copy of the same traffic.
 */
'use strict';

const shapes = require('./shapes');
const { filledTensor, randomPositions, SEEDS } = require('./inputs');
const { UsageError, intList, selectOps } = require('./cli');
const { fmtTime } = require('./report');

function buildPlan(o, onCuda) {
  const q = o.quick ? shapes.QUICK : null;
  const models = o.shape.length ? o.shape : q ? q.models : Object.keys(shapes.MODELS);
  for (const m of models) if (!shapes.MODELS[m]) throw new UsageError(`--shape: unknown shape '${m}' (known: ${Object.keys(shapes.MODELS).join(', ')})`);
  let ns;
  try {
    ns = o.n.length ? o.n.map(shapes.parseN) : q ? q.n : onCuda ? shapes.N_GPU : shapes.N_CPU;
  } catch (e) {
    throw new UsageError(e.message);
  }
  const batches = o.batch.length ? intList('--batch', o.batch) : q ? q.batch : shapes.BATCHES;
  const windows = o.window.length ? intList('--window', o.window) : q ? q.windows : shapes.WINDOWS;
  const ops = selectOps(o.op);
  for (const n of ns) {
    for (const w of windows) {
      if (n <= shapes.CAPACITY || w >= shapes.CAPACITY) throw new UsageError(`--n ${n} / --window ${w}: the sweep needs W < C = ${shapes.CAPACITY} < N`);
    }
  }
  const combos = [];
  for (const model of models) for (const n of ns) for (const b of batches) combos.push({ model, ...shapes.MODELS[model], n, b });
  let count = 0;
  for (const c of combos) for (const op of ops) count += op.usesWindow ? windows.length : 1;
  return { models, ns, batches, windows, ops, combos, count };
}

/**
 * The inputs of one (model, N, batch), made on first use by an op's runner (outside the timed
 * runs) and shared by every op of the combination.
 */
function makeInputs(kv, native, device, dtype, c) {
  const live = [];
  const memo = new Map();
  const once = (key, make) => {
    if (!memo.has(key)) {
      const t = make();
      live.push(t);
      memo.set(key, t);
    }
    return memo.get(key);
  };
  const { b: B, hq: Hq, hkv: Hkv, n: N, d: D } = c;
  const C = shapes.CAPACITY;
  const x = {
    keys: () => once('keys', () => filledTensor(kv, native, [B, Hkv, N, D], dtype, device, SEEDS.keys)),
    values: () => once('values', () => filledTensor(kv, native, [B, Hkv, N, D], dtype, device, SEEDS.values)),
    decodeQuery: () => once('qd', () => filledTensor(kv, native, [B, Hq, 1, D], dtype, device, SEEDS.queriesDecode)),
    /** f32 [B, Hkv, N]: a layer's running Keyformer/H2O scores */
    scores: () => once('scores', () => kv.Tensor.zeros([B, Hkv, N], 'f32', device)),
    /** i32 [B, Hkv, C]: C distinct ascending positions per row */
    positions: () => once('positions', () => kv.Tensor.from(randomPositions(B * Hkv, N, C, SEEDS.positions), { shape: [B, Hkv, C], device })),
    windowQueries: (w) => once(`qw${w}`, () => filledTensor(kv, native, [B, Hq, w, D], dtype, device, SEEDS.queriesWindow)),
    /**
     * The window rows' log-sum-exp an engine would hand over from its prefill attention. With
     * q, k uniform on [-1, 1) a logit is ~ N(0, 1/9), so a row over L keys has lse ~ ln L + 1/18;
     * the time does not depend on the exact value (--check verifies the lse path with exact ones).
     */
    lse: (w) =>
      once(`lse${w}`, () => {
        const host = new Float32Array(B * Hq * w);
        for (let i = 0; i < host.length; i++) host[i] = Math.log(N - w + (i % w) + 1) + 1 / 18;
        return kv.Tensor.from(host, { shape: [B, Hq, w], device });
      }),
    votes: (w) => once(`votes${w}`, () => kv.snapkv.scores(x.windowQueries(w), x.keys(), { window: w })),
    pooled: (w) => once(`pooled${w}`, () => kv.snapkv.pool(x.votes(w), { kernel: shapes.KERNEL, kind: shapes.POOLING })),
    dispose() {
      for (const t of live) t.dispose();
    },
  };
  return x;
}

/** Source and destination of the copy timed beside each op, grown as the floors need. */
class CopyScratch {
  constructor(kv, native, device) {
    Object.assign(this, { kv, native, device, bytes: 0, src: null, dst: null });
  }
  /** A run copying `bytes` bytes (a multiple of 256), reallocating to `need` >= bytes if short. */
  runner(bytes, need) {
    if (this.bytes < bytes) {
      this.dispose();
      // 2-D: a dimension stays below 2^31 even for the multi-GiB copies of the largest shapes
      this.bytes = need;
      this.src = this.kv.Tensor.empty([need / 256, 256], 'u8', this.device);
      this.dst = this.kv.Tensor.empty([need / 256, 256], 'u8', this.device);
      this.native.fill(this.src._buffer, 1);
      this.native.fill(this.dst._buffer, 0);
    }
    const { src, dst, native } = this;
    return () => native.copyBuffer(dst._buffer, 0, src._buffer, 0, bytes);
  }
  dispose() {
    if (this.src) this.src.dispose(), this.dst.dispose();
    this.src = this.dst = null;
    this.bytes = 0;
  }
}

/** Times every op of the plan; returns one result per (combination, op, W). */
async function runSweep(kv, native, device, dtype, plan, timer, progress) {
  const esz = kv.dtypeBytes(dtype);
  const results = [];
  for (const c of plan.combos) {
    const label = `${c.model} N=${shapes.formatN(c.n)} B=${c.b}`;
    progress.show(`${label}: making inputs`);
    const x = makeInputs(kv, native, device, dtype, c);
    const scratch = new CopyScratch(kv, native, device);
    try {
      for (const op of plan.ops) {
        for (const w of op.usesWindow ? plan.windows : [null]) {
          const cfg = { b: c.b, hq: c.hq, hkv: c.hkv, d: c.d, n: c.n, w: w ?? plan.windows[0], C: shapes.CAPACITY, esz };
          const bytes = op.floor(cfg);
          const where = `${label}${w === null ? '' : ` W=${w}`} ${op.name}`;
          const id = { op: op.name, model: c.model, hq: c.hq, hkv: c.hkv, d: c.d, n: c.n, batch: c.b, window: w, capacity: shapes.CAPACITY, dtype, device };
          progress.show(where);
          let stats;
          let copy;
          let peakBytes;
          // the copy of the same traffic (floor / 2 bytes read and written), timed alongside
          const copyBytes = Math.ceil(bytes / 2 / 256) * 256;
          try {
            const run = op.runner(kv, x, w, device);
            const copyRun = scratch.runner(copyBytes, Math.max(copyBytes, Math.ceil(Math.max(...plan.ops.map((p) => p.floor(cfg))) / 2 / 256) * 256));
            [stats, copy] = await timer.measure(run, copyRun);
            peakBytes = await timer.peak(run);
          } catch (e) {
            // e.g. out of memory at the largest shapes: report it and go on
            const error = `${e && e.code ? `${e.code}: ` : ''}${e && e.message ? e.message : e}`;
            progress.note(`${where}: ${error}`);
            results.push({ ...id, bytes, error, graph: op.graph });
            progress.done++;
            await timer.sync().catch(() => {});
            continue;
          }
          const gbps = bytes / (stats.medianUs * 1e3);
          const copyGbps = (2 * copyBytes) / (copy.medianUs * 1e3);
          results.push({ ...id, ...stats, bytes, gbps, copyBytes, copyUs: copy.medianUs, copyGbps, copyFraction: gbps / copyGbps, peakBytes, graph: op.graph });
          progress.done++;
          progress.show(`${where}: ${fmtTime(stats.medianUs)}, ${gbps.toFixed(1)} GB/s`);
        }
      }
    } finally {
      x.dispose();
      scratch.dispose();
      await timer.sync();
    }
  }
  return results;
}

module.exports = { buildPlan, makeInputs, runSweep };
