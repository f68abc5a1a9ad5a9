/**
 * kvsift bench: times every op at named model shapes on the default device (CUDA when present,
 * else the CPU backend) and reports the median, the spread, the bytes the op must move (its
 * floor), the achieved GB/s and the fraction of a same-size device-to-device copy measured in the
 * same run. See docs/BENCHMARKS.md. Plain CommonJS on ../dist, so it runs right after npm install.
 *
 *   node bin/kvsift.js bench [--quick] [--check] [--json FILE] [--op a,b] [--shape s] [--n 4k,8k]
 *                            [--batch 1,4] [--window 32] [--device cpu|cuda:N] [--dtype f32|bf16|f16]
 *                            [--reps N] [--no-torch] [--python PATH]
 *
 * The parts: cli.js (flags), ops/ (the op registry: runner, check, floor), sweep.js (the plan,
 * the inputs and the timed loop), timer.js, check.js (--check), torch.js (the PyTorch
 * comparison), report.js (tables and JSON).
 */
'use strict';

const path = require('node:path');
const shapes = require('./shapes');
const { USAGE, UsageError, parseArgs, intList, selectOps } = require('./cli');
const { buildPlan, runSweep } = require('./sweep');
const { Timer } = require('./timer');
const { runCheck } = require('./check');
const { torchSkipReason, runTorch } = require('./torch');
const { Progress, fmtMiB, meta, writeJson, formatTable, formatTorch } = require('./report');

const ROOT = path.join(__dirname, '..');

function usageError(e, withUsage) {
  if (!(e instanceof UsageError)) throw e;
  process.stderr.write(`kvsift bench: ${e.message}\n${withUsage ? `\n${USAGE}` : ''}`);
  return 2;
}

/** --check: the selected ops' outputs against float64 (and the CPU backend); nothing is timed. */
function check(kv, device, info, dtype, o, ops) {
  const { CHECK } = shapes;
  const onCuda = device !== 'cpu';
  process.stderr.write(`checking outputs on [B ${CHECK.b}, Hq ${CHECK.hq}, Hkv ${CHECK.hkv}, N ${CHECK.n}, D ${CHECK.d}], W ${CHECK.window}, C ${CHECK.capacity} against float64${onCuda ? ' and the CPU backend' : ''}:\n`);
  const results = runCheck(kv, device, dtype, ops, (line) => process.stdout.write(`${line}\n`));
  const failed = results.filter((r) => !r.ok);
  if (failed.length) process.stdout.write(`check: ${failed.length} of ${results.length} ops FAILED (${failed.map((r) => r.op).join(', ')})\n`);
  else process.stdout.write(`check: all ${results.length} ops PASS\n`);
  if (o.json) writeJson(o.json, { meta: meta(kv, device, info, dtype, o, null), check: results, results: [] });
  return failed.length ? 1 : 0;
}

async function main(argv) {
  let o;
  try {
    o = parseArgs(argv);
  } catch (e) {
    return usageError(e, true);
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
  let plan;
  try {
    plan = o.check ? { ops: selectOps(o.op) } : buildPlan(o, onCuda);
  } catch (e) {
    return usageError(e, false);
  }
  const info = kv.devices().find((d) => d.name === device);
  if (!info) {
    process.stderr.write(`kvsift bench: no device '${device}' (devices: ${kv.devices().map((d) => d.name).join(', ')}; ${kv.buildInfo.cudaUnavailableReason || ''})\n`);
    return 2;
  }
  if (o.check) return check(kv, device, info, dtype, o, plan.ops);

  const reps = o.reps === null ? null : intList('--reps', [o.reps])[0];
  const timerOpts = onCuda
    ? { warmup: 3, batches: reps ?? (o.quick ? 5 : 10), minRuns: 20, batchTargetUs: o.quick ? 5000 : 20000, maxReps: 1000 }
    : { warmup: 2, cpuRuns: reps ?? (o.quick ? 10 : 20), minRuns: 20 };
  const deviceText = onCuda ? `${device} (${info.model}, ${info.multiprocessors} SMs, L2 ${fmtMiB(info.l2CacheBytes)} MiB)` : `cpu (${info.model}, ${info.threads} threads)`;
  const progress = new Progress(plan.count);
  progress.note(`kvsift bench on ${deviceText}, ${dtype}; ${plan.count} measurements (${plan.combos.length} shape x N x batch, W ${plan.windows.join('/')}, C ${shapes.CAPACITY})`);

  // PyTorch first, alone on the GPU (our memory pool keeps what it allocated)
  const t = torchSkipReason(o, onCuda, kv.buildInfo.cudaUnavailableReason || 'no CUDA device');
  let torch = { results: [], skipped: t.reason || null };
  if (t.probe) torch = runTorch(o, plan, timerOpts, info.l2CacheBytes || 0, progress);
  if (torch.skipped) progress.note(`skipped the PyTorch comparison: ${torch.skipped}`);

  const timer = new Timer(kv, native, device, timerOpts);
  let results;
  try {
    results = await runSweep(kv, native, device, dtype, plan, timer, progress);
  } finally {
    timer.dispose();
    progress.end();
  }
  const elapsedS = progress.elapsed();

  const head = `kvsift bench: ${deviceText}, ${dtype}, C=${shapes.CAPACITY}, pooling ${shapes.POOLING} ${shapes.KERNEL}; ` +
    (onCuda
      ? `median of ${timerOpts.batches} L2-flushed batches of back-to-back runs (>= ${timerOpts.minRuns} runs)`
      : `median of ${timerOpts.cpuRuns} runs after ${timerOpts.warmup} warm-up`) + `; ${elapsedS.toFixed(1)} s`;
  process.stdout.write(`${head}\n\n${formatTable(results)}\n`);
  if (torch.results && torch.results.length) process.stdout.write(`\n${formatTorch(results, torch)}\n`);
  else process.stdout.write(`\nPyTorch comparison: skipped (${torch.skipped})\n`);
  if (o.json) {
    writeJson(o.json, { meta: { ...meta(kv, device, info, dtype, o, timerOpts), elapsedS }, check: null, results, torch });
    process.stderr.write(`wrote ${o.json}\n`);
  }
  return 0;
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
