/**
 * The timer of kvsift bench: median, spread and peak memory of one op on one device.
 */
'use strict';

function quantile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const x = (sorted.length - 1) * p;
  const lo = Math.floor(x);
  const hi = Math.ceil(x);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo);
}

function summarize(samplesUs) {
  const s = samplesUs.slice().sort((a, b) => a - b);
  return { medianUs: quantile(s, 0.5), p10Us: quantile(s, 0.1), p90Us: quantile(s, 0.9), minUs: s[0], maxUs: s[s.length - 1] };
}

const nowNs = () => process.hrtime.bigint();

/**
 * The timing harness of one device.
 * CPU: the ops complete on return, so every run is timed alone with the monotonic clock.
 * CUDA: a launch is far shorter than a round trip to the host, so runs go back to back in
 * batches bracketed by `await synchronize(device)`; a batch's per-run time is its total / reps,
 * the L2 is flushed before every batch by copying a buffer larger than it, and the statistics
 * are over the batches (median of batches, p10/p90 of batches).
 */
class Timer {
  constructor(kv, native, device, opts) {
    this.kv = kv;
    this.native = native;
    this.device = device;
    this.cuda = device !== 'cpu';
    this.opts = opts;
    this.flush = null;
    if (this.cuda) {
      const info = kv.devices().find((d) => d.name === device);
      const l2 = info && info.l2CacheBytes ? info.l2CacheBytes : 64 * 2 ** 20;
      const bytes = Math.max(2 * l2, 8 * 2 ** 20);
      this.flush = { src: kv.Tensor.empty([bytes], 'u8', device), dst: kv.Tensor.empty([bytes], 'u8', device), bytes };
      native.fill(this.flush.src._buffer, 1);
    }
  }

  async sync() {
    if (this.cuda) await this.kv.synchronize(this.device);
  }

  flushL2() {
    if (this.flush) this.native.copyBuffer(this.flush.dst._buffer, 0, this.flush.src._buffer, 0, this.flush.bytes);
  }

  /**
   * Times each of `runs` (each enqueues (CUDA) or performs (CPU) one op and returns what to
   * dispose), interleaved: CPU runs alternate one by one, CUDA batches alternate, so an op and
   * the copy it is compared with see the same machine (a shared host's noise hits both).
   */
  async measure(...runs) {
    const { warmup } = this.opts;
    for (const run of runs) for (let i = 0; i < warmup; i++) release(run());
    await this.sync();
    if (!this.cuda) {
      const samples = runs.map(() => []);
      for (let i = 0; i < this.opts.cpuRuns; i++) {
        runs.forEach((run, j) => {
          const t0 = nowNs();
          const out = run();
          const t1 = nowNs();
          release(out);
          samples[j].push(Number(t1 - t0) / 1e3);
        });
      }
      return samples.map((s) => ({ ...summarize(s), runs: s.length, reps: 1, batches: s.length }));
    }
    // calibrate each run's batch length on one synchronized run
    const { batches, batchTargetUs, maxReps } = this.opts;
    const minReps = Math.ceil(this.opts.minRuns / batches);
    const reps = [];
    for (const run of runs) {
      this.flushL2();
      await this.sync();
      const t0 = nowNs();
      release(run());
      await this.sync();
      const oneUs = Math.max(Number(nowNs() - t0) / 1e3, 1);
      reps.push(Math.min(maxReps, Math.max(minReps, Math.ceil(batchTargetUs / oneUs))));
    }
    const perRun = runs.map(() => []);
    for (let b = 0; b < batches; b++) {
      for (let j = 0; j < runs.length; j++) {
        this.flushL2();
        await this.sync();
        const t0 = nowNs();
        for (let r = 0; r < reps[j]; r++) release(runs[j]());
        await this.sync();
        perRun[j].push(Number(nowNs() - t0) / 1e3 / reps[j]);
      }
    }
    return perRun.map((s, j) => ({ ...summarize(s), runs: reps[j] * batches, reps: reps[j], batches }));
  }

  /** The live bytes one more run adds at its peak: memoryStats with resetPeak around it. */
  async peak(run) {
    await this.sync();
    const before = this.kv.memoryStats(this.device, { resetPeak: true });
    const out = run();
    const after = this.kv.memoryStats(this.device);
    release(out);
    await this.sync();
    return Math.max(0, after.peakBytes - before.liveBytes);
  }

  dispose() {
    if (this.flush) {
      this.flush.src.dispose();
      this.flush.dst.dispose();
    }
  }
}

/** The tensors an op returned: a Tensor, a Compacted ({ keys, values, positions }), or an array of them. */
function tensorsOf(out) {
  if (!out) return [];
  if (Array.isArray(out)) return out.flatMap(tensorsOf);
  if (out.keys && out.values && out.positions) return [out.keys, out.values, out.positions];
  return [out];
}

/**
 * A run of op `fn` on `args`, which are evaluated now: the inputs an op reads are made (or looked
 * up) before the timing starts, never inside a timed run.
 */
function bind(fn, ...args) {
  return () => fn(...args);
}

/** Disposes what an op returned. */
function release(out) {
  for (const t of tensorsOf(out)) t.dispose();
}

module.exports = { Timer, bind, release, tensorsOf, summarize };
