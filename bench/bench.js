/**
 * kvsift bench: times every op at named model shapes on the default device (CUDA when present,
 * else the CPU backend) and reports the median, the spread, the bytes the op must move (its
 * floor), the achieved GB/s and the fraction of a same-size device-to-device copy measured in the
 * same run. See docs/BENCHMARKS.md. Plain CommonJS on ../dist, so it runs right after npm install.
 *
 *   node bin/kvsift.js bench [--quick] [--check] [--json FILE] [--op a,b] [--shape s] [--n 4k,8k]
 *                            [--batch 1,4] [--window 32] [--device cpu|cuda:N] [--dtype f32|bf16|f16]
 *                            [--reps N] [--no-torch] [--python PATH]
 */
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync, execFileSync } = require('node:child_process');
const shapes = require('./shapes');
const { filledTensor, randomPositions, SEEDS } = require('./inputs');

const ROOT = path.join(__dirname, '..');

const USAGE = `usage: kvsift bench [options]

Times every op at named model shapes on the default device (CUDA when present, else the CPU).

  --quick            a short sweep (${shapes.QUICK.models.join(', ')}; N ${shapes.QUICK.n.map(shapes.formatN).join('/')}; batch ${shapes.QUICK.batch.join('/')}; W ${shapes.QUICK.windows.join('/')}; fewer runs)
  --check            only compare every selected op's output with a float64 reference (and, on
                     CUDA, with the CPU backend) on a small shape, time nothing; exit 1 on any FAIL
                     (add --time to run the sweep after a passing check)
  --time             with --check: time the sweep too
  --json FILE        also write the results as JSON (bench/plot.js draws them)
  --op LIST          ops to time, comma-separated; a prefix selects a family (--op snapkv)
                     ops: ${shapes.OPS.map((o) => o.name).join(', ')}
                     decode-loop: an engine's per-step append + accumulate + amortized retain on
                     a KvCache at the model shape (N 4k and 32k by default) against the same loop
                     done with host copies, in the same run (bench/decode_loop.js)
  --shape LIST       ${Object.keys(shapes.MODELS).join(', ')}
  --n LIST           sequence lengths, e.g. 4k,8k,32k,128k
  --batch LIST       batch sizes, e.g. 1,4
  --window LIST      SnapKV observation windows, e.g. 32,64
  --device NAME      cpu or cuda:N (default: cuda:0 when present, else cpu)
  --dtype NAME       K/V/Q dtype: f32, f16 or bf16 (default: bf16 on CUDA, f32 on the CPU)
  --reps N           timed runs per op (CPU) or timed batches per op (CUDA)
  --no-torch         skip the PyTorch comparison (CUDA only; needs python3 with torch)
  --python PATH      the python to run bench/torch_reference.py with (default: $KVSIFT_PYTHON or python3)
  -h, --help         this text
`;

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  const o = { quick: false, check: false, time: false, json: null, op: [], shape: [], n: [], batch: [], window: [], device: null, dtype: null, reps: null, torch: true, python: null, help: false };
  const lists = new Set(['op', 'shape', 'n', 'batch', 'window']);
  const values = new Set(['json', 'device', 'dtype', 'reps', 'python', ...lists]);
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let value;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      value = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const name = a.replace(/^--?/, '');
    if (a === '-h' || a === '--help') o.help = true;
    else if (a === '--quick') o.quick = true;
    else if (a === '--check') o.check = true;
    else if (a === '--time') o.time = true;
    else if (a === '--no-torch') o.torch = false;
    else if (a.startsWith('--') && values.has(name)) {
      if (value === undefined) {
        value = argv[++i];
        if (value === undefined) throw new UsageError(`${a} needs a value`);
      }
      if (lists.has(name)) o[name].push(...value.split(',').map((s) => s.trim()).filter(Boolean));
      else o[name] = value;
    } else throw new UsageError(`unknown option '${argv[i]}'`);
  }
  return o;
}

class UsageError extends Error {}

function intList(flag, items) {
  return items.map((s) => {
    const v = Number(s);
    if (!Number.isInteger(v) || v < 1) throw new UsageError(`${flag}: expected positive integers, but received '${s}'`);
    return v;
  });
}

// ---------------------------------------------------------------- statistics and formatting

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

function fmtTime(us) {
  if (!Number.isFinite(us)) return '-';
  if (us < 1000) return `${us.toPrecision(3)} us`;
  if (us < 1e6) return `${(us / 1000).toPrecision(3)} ms`;
  return `${(us / 1e6).toPrecision(3)} s`;
}

function fmtBytes(b) {
  if (b < 1e6) return `${(b / 1e3).toPrecision(3)} kB`;
  if (b < 1e9) return `${(b / 1e6).toPrecision(3)} MB`;
  return `${(b / 1e9).toPrecision(3)} GB`;
}

function fmtMiB(b) {
  if (b === null || b === undefined) return '-';
  return (b / 2 ** 20).toFixed(b < 10 * 2 ** 20 ? 2 : 1);
}

function table(headers, rows, alignRight) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => (alignRight[i] ? String(c).padStart(w[i]) : String(c).padEnd(w[i]))).join('  ').trimEnd();
  return [line(headers), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n');
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- progress (stderr)

class Progress {
  constructor(total) {
    this.total = total;
    this.done = 0;
    this.tty = process.stderr.isTTY === true;
    this.started = process.hrtime.bigint();
  }
  elapsed() {
    return Number(process.hrtime.bigint() - this.started) / 1e9;
  }
  show(text) {
    const line = `[${String(this.done).padStart(String(this.total).length)}/${this.total} ${this.elapsed().toFixed(0)}s] ${text}`;
    if (this.tty) process.stderr.write(`\r\x1b[2K${line}`);
    else process.stderr.write(`${line}\n`);
  }
  note(text) {
    if (this.tty) process.stderr.write('\r\x1b[2K');
    process.stderr.write(`${text}\n`);
  }
  end() {
    if (this.tty) process.stderr.write('\r\x1b[2K');
  }
}

// ---------------------------------------------------------------- timing

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

/** Disposes what an op returned: a Tensor, a Compacted, or an array of them. */
function release(out) {
  if (!out) return;
  if (Array.isArray(out)) out.forEach(release);
  else if (typeof out.dispose === 'function') out.dispose();
  else if (out.keys && out.values && out.positions) {
    out.keys.dispose();
    out.values.dispose();
    out.positions.dispose();
  }
}

// ---------------------------------------------------------------- the sweep

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
  const ops = shapes.OPS.filter((op) => o.op.length === 0 || o.op.some((f) => op.name === f || op.name.startsWith(f.endsWith('.') ? f : `${f}.`) || op.name.startsWith(`${f}+`)));
  if (ops.length === 0) throw new UsageError(`--op: no op matches '${o.op.join(',')}' (ops: ${shapes.OPS.map((x) => x.name).join(', ')})`);
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

/** Everything the ops of one (model, N, batch) need, made once. */
function makeInputs(kv, native, device, dtype, c, windows, opNames) {
  const live = [];
  const keep = (t) => (live.push(t), t);
  const { b: B, hq: Hq, hkv: Hkv, n: N, d: D } = c;
  const C = shapes.CAPACITY;
  const x = {
    k: keep(filledTensor(kv, native, [B, Hkv, N, D], dtype, device, SEEDS.keys)),
    v: keep(filledTensor(kv, native, [B, Hkv, N, D], dtype, device, SEEDS.values)),
    qd: keep(filledTensor(kv, native, [B, Hq, 1, D], dtype, device, SEEDS.queriesDecode)),
    acc: keep(kv.Tensor.zeros([B, Hkv, N], 'f32', device)),
    positions: opNames.has('gather') ? keep(kv.Tensor.from(randomPositions(B * Hkv, N, C, SEEDS.positions), { shape: [B, Hkv, C], device })) : null,
    perWindow: new Map(),
    dispose() {
      for (const t of live) t.dispose();
    },
  };
  for (const w of windows) {
    const qw = keep(filledTensor(kv, native, [B, Hq, w, D], dtype, device, SEEDS.queriesWindow));
    // The window rows' log-sum-exp an engine would hand over from its prefill attention. With
    // q, k uniform on [-1, 1) a logit is ~ N(0, 1/9), so a row over L keys has lse ~ ln L + 1/18;
    // the time does not depend on the exact value (check.js verifies the lse path with exact ones).
    const lseHost = new Float32Array(B * Hq * w);
    for (let i = 0; i < lseHost.length; i++) lseHost[i] = Math.log(N - w + (i % w) + 1) + 1 / 18;
    const lse = keep(kv.Tensor.from(lseHost, { shape: [B, Hq, w], device }));
    const wx = { qw, lse, votes: null, pooled: null };
    if (opNames.has('snapkv.pool') || opNames.has('topk')) {
      wx.votes = keep(kv.snapkv.scores(qw, x.k, { window: w }));
      wx.pooled = keep(kv.snapkv.pool(wx.votes, { kernel: shapes.KERNEL, kind: shapes.POOLING }));
    }
    x.perWindow.set(w, wx);
  }
  return x;
}

/** The closure that runs op `name` once on the inputs and returns what to dispose. */
function opRunner(kv, device, name, x, w) {
  const C = shapes.CAPACITY;
  const wx = w === null ? null : x.perWindow.get(w);
  switch (name) {
    case 'snapkv.scores':
      return () => kv.snapkv.scores(wx.qw, x.k, { window: w });
    case 'snapkv.scores+lse':
      return () => kv.snapkv.scores(wx.qw, x.k, { window: w, lse: wx.lse });
    case 'snapkv.pool':
      return () => kv.snapkv.pool(wx.votes, { kernel: shapes.KERNEL, kind: shapes.POOLING });
    case 'topk':
      return () => kv.topk(wx.pooled, C - w);
    case 'gather':
      return () => kv.gather(x.k, x.positions);
    case 'snapkv.compress':
      return () => kv.snapkv.compress(wx.qw, x.k, x.v, { window: w, capacity: C, kernel: shapes.KERNEL, pooling: shapes.POOLING });
    case 'l2.norms':
      return () => kv.l2.norms(x.k);
    case 'l2.compress':
      return () => kv.l2.compress(x.k, x.v, { capacity: C });
    case 'keyformer.accumulate': {
      // one decode step (T = 1) into the layer's running scores, in place: nothing to dispose
      let step = 0;
      return () => {
        kv.keyformer.accumulate(x.qd, x.k, x.acc, { tau: kv.keyformer.tau(step % 512, { maxNewTokens: 512 }), seed: 42, step: step++ });
        return null;
      };
    }
    case 'tova.select':
      return () => kv.tova.select(x.qd, x.k, { capacity: C });
    case 'copy':
      return () => x.k.to(device);
    default:
      throw new Error(`no runner for ${name}`);
  }
}

// ---------------------------------------------------------------- PyTorch

function pythonCommand(o) {
  return o.python || process.env.KVSIFT_PYTHON || 'python3';
}

/** { ok, reason, torch } : whether python with torch and a CUDA device is usable. */
function probeTorch(python) {
  const r = spawnSync(python, ['-c', 'import json, sys, torch; print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available()}))'], {
    encoding: 'utf8',
    timeout: 120000,
  });
  if (r.error) return { ok: false, reason: `${python} not found (${r.error.code || r.error.message})` };
  if (r.status !== 0) {
    const v = spawnSync(python, ['--version'], { encoding: 'utf8' });
    const version = (v.stdout || v.stderr || '').trim();
    const why = /No module named ['"]?torch/.test(r.stderr) ? 'torch is not installed' : `importing torch failed: ${(r.stderr || '').trim().split('\n').pop()}`;
    return { ok: false, reason: `${version || python} is present but ${why}` };
  }
  const info = JSON.parse(r.stdout.trim().split('\n').pop());
  if (!info.cuda) return { ok: false, reason: `torch ${info.torch} sees no CUDA device`, info };
  return { ok: true, info };
}

function torchSkipReason(o, onCuda, reasonNoCuda) {
  if (!o.torch) return { reason: '--no-torch' };
  const probe = probeTorch(pythonCommand(o));
  if (!onCuda) return { reason: `no GPU: the bench device is the CPU (${reasonNoCuda}); the PyTorch reference times CUDA only${probe.ok ? '' : `, and ${probe.reason}`}` };
  if (!probe.ok) return { reason: probe.reason };
  return { probe };
}

/** Runs bench/torch_reference.py on the comparable configs; its progress goes to our stderr. */
function runTorch(o, plan, timerOpts, l2Bytes, progress) {
  const ops = plan.ops.map((op) => op.name).filter((n) => shapes.TORCH_COUNTERPART[n]);
  if (ops.length === 0) return { results: [], skipped: 'no op with a PyTorch counterpart selected' };
  const spec = {
    ops: ops.map((n) => shapes.TORCH_COUNTERPART[n]),
    configs: plan.combos.map((c) => ({ model: c.model, hq: c.hq, hkv: c.hkv, d: c.d, n: c.n, b: c.b })),
    windows: plan.windows,
    capacity: shapes.CAPACITY,
    kernel: shapes.KERNEL,
    pooling: shapes.POOLING,
    seeds: SEEDS,
    reps: Math.max(20, timerOpts.minRuns),
    warmup: timerOpts.warmup,
    l2Bytes,
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvsift-bench-'));
  const specFile = path.join(dir, 'spec.json');
  fs.writeFileSync(specFile, JSON.stringify(spec));
  progress.note(`running the PyTorch reference (${pythonCommand(o)} bench/torch_reference.py) first, alone on the GPU ...`);
  try {
    const r = spawnSync(pythonCommand(o), [path.join(__dirname, 'torch_reference.py'), '--spec', specFile], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 64 * 2 ** 20,
    });
    if (r.error || r.status !== 0) return { results: [], skipped: `torch_reference.py failed (${r.error ? r.error.message : `exit ${r.status}`})` };
    return JSON.parse(r.stdout);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- main

async function main(argv) {
  let o;
  try {
    o = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`kvsift bench: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  if (o.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const kv = require(path.join(ROOT, 'dist', 'index.js'));
  const { native } = require(path.join(ROOT, 'dist', 'native.js'));

  const device = o.device || kv.defaultDevice();
  const onCuda = device !== 'cpu';
  const dtype = o.dtype || (onCuda ? 'bf16' : 'f32');
  if (!['f32', 'f16', 'bf16'].includes(dtype)) {
    process.stderr.write(`kvsift bench: --dtype: expected f32, f16 or bf16, but received '${dtype}'\n`);
    return 2;
  }
  if (o.op.includes('decode-loop')) {
    if (o.op.length > 1) {
      process.stderr.write("kvsift bench: --op decode-loop runs alone (it times a whole loop, not one op)\n");
      return 2;
    }
    return runDecodeLoop(kv, o, device, dtype);
  }
  let plan;
  try {
    plan = buildPlan(o, onCuda);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`kvsift bench: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const info = kv.devices().find((d) => d.name === device);
  if (!info) {
    process.stderr.write(`kvsift bench: no device '${device}' (devices: ${kv.devices().map((d) => d.name).join(', ')}; ${kv.buildInfo.cudaUnavailableReason || ''})\n`);
    return 2;
  }
  const reps = o.reps === null ? null : intList('--reps', [o.reps])[0];
  const timerOpts = onCuda
    ? { warmup: 3, batches: reps ?? (o.quick ? 5 : 10), minRuns: 20, batchTargetUs: o.quick ? 5000 : 20000, maxReps: 1000 }
    : { warmup: 2, cpuRuns: reps ?? (o.quick ? 10 : 20), minRuns: 20 };
  const esz = kv.dtypeBytes(dtype);
  const deviceText = onCuda ? `${device} (${info.model}, ${info.multiprocessors} SMs, L2 ${fmtMiB(info.l2CacheBytes)} MiB)` : `cpu (${info.model}, ${info.threads} threads)`;
  const progress = new Progress(plan.count);
  progress.note(`kvsift bench on ${deviceText}, ${dtype}; ${plan.count} measurements (${plan.combos.length} shape x N x batch, W ${plan.windows.join('/')}, C ${shapes.CAPACITY})`);

  // ---- correctness first
  let checkResults = null;
  if (o.check) {
    progress.note(`checking outputs on [B ${shapes.CHECK.b}, Hq ${shapes.CHECK.hq}, Hkv ${shapes.CHECK.hkv}, N ${shapes.CHECK.n}, D ${shapes.CHECK.d}], W ${shapes.CHECK.window}, C ${shapes.CHECK.capacity} against float64${onCuda ? ' and the CPU backend' : ''}:`);
    const { runCheck } = require('./check');
    checkResults = runCheck(kv, device, dtype, plan.ops.map((op) => op.name), (line) => process.stdout.write(`${line}\n`));
    const failed = checkResults.filter((r) => !r.ok);
    if (failed.length) {
      process.stdout.write(`check: ${failed.length} of ${checkResults.length} ops FAILED (${failed.map((r) => r.op).join(', ')}); nothing timed\n`);
      if (o.json) writeJson(o.json, { meta: meta(kv, device, info, dtype, o, timerOpts), check: checkResults, results: [] });
      return 1;
    }
    process.stdout.write(`check: all ${checkResults.length} ops PASS\n\n`);
    if (!o.time) {
      if (o.json) writeJson(o.json, { meta: meta(kv, device, info, dtype, o, timerOpts), check: checkResults, results: [] });
      return 0;
    }
  }

  // ---- PyTorch first, alone on the GPU (our memory pool keeps what it allocated)
  const t = torchSkipReason(o, onCuda, kv.buildInfo.cudaUnavailableReason || 'no CUDA device');
  let torch = { results: [], skipped: t.reason || null };
  if (t.probe) torch = runTorch(o, plan, timerOpts, info.l2CacheBytes || 0, progress);
  if (torch.skipped) progress.note(`skipped the PyTorch comparison: ${torch.skipped}`);

  // ---- the sweep
  const timer = new Timer(kv, native, device, timerOpts);
  const results = [];
  const opNames = new Set(plan.ops.map((op) => op.name));
  try {
    for (const c of plan.combos) {
      const label = `${c.model} N=${shapes.formatN(c.n)} B=${c.b}`;
      progress.show(`${label}: making inputs`);
      const x = makeInputs(kv, native, device, dtype, c, plan.windows, opNames);
      let scratch = null;
      try {
        for (const op of plan.ops) {
          for (const w of op.usesWindow ? plan.windows : [null]) {
            const cfg = { b: c.b, hq: c.hq, hkv: c.hkv, d: c.d, n: c.n, w: w ?? plan.windows[0], C: shapes.CAPACITY, esz };
            const bytes = op.floor(cfg);
            progress.show(`${label}${w === null ? '' : ` W=${w}`} ${op.name}`);
            const run = opRunner(kv, device, op.name, x, w);
            // the copy of the same traffic (floor / 2 bytes read and written), timed alongside
            const copyBytes = Math.ceil(bytes / 2 / 256) * 256;
            if (!scratch || scratch.bytes < copyBytes) {
              if (scratch) scratch.src.dispose(), scratch.dst.dispose();
              const need = Math.max(copyBytes, Math.ceil(Math.max(...plan.ops.map((p) => p.floor(cfg))) / 2 / 256) * 256);
              // 2-D: a dimension stays below 2^31 even for the multi-GiB copies of the largest shapes
              scratch = { bytes: need, src: kv.Tensor.empty([need / 256, 256], 'u8', device), dst: kv.Tensor.empty([need / 256, 256], 'u8', device) };
              native.fill(scratch.src._buffer, 1);
              native.fill(scratch.dst._buffer, 0);
            }
            const s = scratch;
            const copyRun = () => native.copyBuffer(s.dst._buffer, 0, s.src._buffer, 0, copyBytes);
            let stats;
            let copy;
            let peakBytes;
            try {
              [stats, copy] = await timer.measure(run, copyRun);
              peakBytes = await timer.peak(run);
            } catch (e) {
              // e.g. out of memory at the largest shapes: report it and go on
              const error = `${e && e.code ? `${e.code}: ` : ''}${e && e.message ? e.message : e}`;
              progress.note(`${label}${w === null ? '' : ` W=${w}`} ${op.name}: ${error}`);
              results.push({ op: op.name, model: c.model, hq: c.hq, hkv: c.hkv, d: c.d, n: c.n, batch: c.b, window: w, capacity: shapes.CAPACITY, dtype, device, bytes, error, graph: op.graph });
              progress.done++;
              await timer.sync().catch(() => {});
              continue;
            }
            const gbps = bytes / (stats.medianUs * 1e3);
            const copyGbps = (2 * copyBytes) / (copy.medianUs * 1e3);
            results.push({
              op: op.name,
              model: c.model,
              hq: c.hq,
              hkv: c.hkv,
              d: c.d,
              n: c.n,
              batch: c.b,
              window: w,
              capacity: shapes.CAPACITY,
              dtype,
              device,
              ...stats,
              bytes,
              gbps,
              copyBytes,
              copyUs: copy.medianUs,
              copyGbps,
              copyFraction: gbps / copyGbps,
              peakBytes,
              graph: op.graph,
            });
            progress.done++;
            progress.show(`${label}${w === null ? '' : ` W=${w}`} ${op.name}: ${fmtTime(stats.medianUs)}, ${gbps.toFixed(1)} GB/s`);
          }
        }
      } finally {
        x.dispose();
        if (scratch) scratch.src.dispose(), scratch.dst.dispose();
        await timer.sync();
      }
    }
  } finally {
    timer.dispose();
    progress.end();
  }
  const elapsedS = progress.elapsed();

  // ---- report
  const head = `kvsift bench: ${deviceText}, ${dtype}, C=${shapes.CAPACITY}, pooling ${shapes.POOLING} ${shapes.KERNEL}; ` +
    (onCuda
      ? `median of ${timerOpts.batches} L2-flushed batches of back-to-back runs (>= ${timerOpts.minRuns} runs)`
      : `median of ${timerOpts.cpuRuns} runs after ${timerOpts.warmup} warm-up`) + `; ${elapsedS.toFixed(1)} s`;
  process.stdout.write(`${head}\n\n${formatTable(results)}\n`);
  if (torch.results && torch.results.length) process.stdout.write(`\n${formatTorch(results, torch)}\n`);
  else process.stdout.write(`\nPyTorch comparison: skipped (${torch.skipped})\n`);
  if (o.json) {
    writeJson(o.json, { meta: { ...meta(kv, device, info, dtype, o, timerOpts), elapsedS }, check: checkResults, results, torch });
    process.stderr.write(`wrote ${o.json}\n`);
  }
  return 0;
}

/** --op decode-loop: bench/decode_loop.js at the first --shape (default llama3-8b), N 4k and 32k. */
async function runDecodeLoop(kv, o, device, dtype) {
  const { runDecodeLoopBench, formatDecodeLoop } = require('./decode_loop');
  const modelName = o.shape[0] || 'llama3-8b';
  const model = shapes.MODELS[modelName];
  if (!model) {
    process.stderr.write(`kvsift bench: --shape: unknown model '${modelName}' (${Object.keys(shapes.MODELS).join(', ')})\n`);
    return 2;
  }
  let n;
  try {
    n = o.n.length ? o.n.map((s) => shapes.parseN(s)) : o.quick ? [4096] : [4096, 32768];
  } catch (e) {
    process.stderr.write(`kvsift bench: --n: ${e.message}\n`);
    return 2;
  }
  const reps = o.reps === null ? (o.quick ? 1 : 2) : intList('--reps', [o.reps])[0];
  const opts = { device, dtype, n, hq: model.hq, hkv: model.hkv, d: model.d, retainEvery: 16, steps: 16 * reps };
  process.stdout.write(`kvsift bench --op decode-loop: ${modelName}, ${dtype} on ${device}; N ${n.map(shapes.formatN).join('/')}\n`);
  const rows = await runDecodeLoopBench(kv, { ...opts, log: (r) => process.stdout.write(`  N ${shapes.formatN(r.n)}: ${r.deviceMs.toFixed(3)} ms/step on device, ${r.hostMs.toFixed(3)} ms/step with host copies (${r.ratio.toFixed(1)}x)\n`) });
  process.stdout.write(`\n${formatDecodeLoop(rows, opts)}\n`);
  if (o.json) writeJson(o.json, { meta: { device, dtype, model: modelName, date: new Date().toISOString(), commit: gitCommit() }, decodeLoop: rows });
  return 0;
}

function meta(kv, device, info, dtype, o, timerOpts) {
  return {
    date: new Date().toISOString(),
    commit: gitCommit(),
    device,
    deviceInfo: info,
    buildInfo: kv.buildInfo,
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    dtype,
    capacity: shapes.CAPACITY,
    kernel: shapes.KERNEL,
    pooling: shapes.POOLING,
    quick: o.quick,
    timing: timerOpts,
  };
}

function writeJson(file, data) {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(data, null, 1)}\n`);
}

function formatTable(results) {
  const headers = ['op', 'shape', 'N', 'B', 'W', 'median', 'p10', 'p90', 'floor', 'GB/s', 'copy GB/s', 'of copy', 'peak MiB', 'CUDA graph'];
  const right = [false, false, true, true, true, true, true, true, true, true, true, true, true, false];
  const rows = results.map((r) => {
    const id = [r.op, r.model, shapes.formatN(r.n), r.batch, r.window ?? '-'];
    if (r.error) return [...id, 'failed', '', '', fmtBytes(r.bytes), '', '', '', '', r.error.slice(0, 60)];
    return [
      ...id,
      fmtTime(r.medianUs),
      fmtTime(r.p10Us),
      fmtTime(r.p90Us),
      fmtBytes(r.bytes),
      r.gbps.toFixed(r.gbps < 10 ? 2 : 1),
      r.copyGbps.toFixed(r.copyGbps < 10 ? 2 : 1),
      `${(100 * r.copyFraction).toFixed(0)}%`,
      fmtMiB(r.peakBytes),
      r.graph,
    ];
  });
  return table(headers, rows, right);
}

function formatTorch(results, torch) {
  const headers = ['kvsift op', 'PyTorch', 'shape', 'N', 'B', 'W', 'kvsift', 'PyTorch', 'speedup', 'kvsift peak MiB', 'PyTorch peak MiB'];
  const right = [false, false, false, true, true, true, true, true, true, true, true];
  const rows = [];
  for (const r of results) {
    const name = shapes.TORCH_COUNTERPART[r.op];
    if (!name || r.error) continue;
    const t = torch.results.find((x) => x.op === name && x.model === r.model && x.n === r.n && x.b === r.batch && (x.w ?? null) === (r.op === 'snapkv.compress' ? r.window : null));
    if (!t) continue;
    rows.push([r.op, name, r.model, shapes.formatN(r.n), r.batch, r.window ?? '-', fmtTime(r.medianUs), t.error ? t.error : fmtTime(t.medianUs), t.error ? '-' : `${(t.medianUs / r.medianUs).toFixed(1)}x`, fmtMiB(r.peakBytes), t.error ? '-' : fmtMiB(t.peakBytes)]);
  }
  const title = `PyTorch ${torch.torch || ''} (${torch.device || ''}), same inputs, torch.cuda.Event medians of ${torch.reps || '?'} L2-flushed runs:`;
  return `${title}\n${table(headers, rows, right)}`;
}

module.exports = { main, parseArgs, buildPlan, USAGE };

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`kvsift bench: ${e && e.stack ? e.stack : e}\n`);
      process.exitCode = 1;
    },
  );
}
