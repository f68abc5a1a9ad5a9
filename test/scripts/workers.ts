/**
 * Two worker_threads using the CPU backend at the same time (BUG-10 in test/faults.test.ts). The
 * addon is context-aware, so every worker loads it; they share one CPU thread pool. Each worker
 * runs ops in a loop and checks every result against its first; the main thread prints one JSON
 * line { ok, mismatches, ms } when both finish. A watchdog kills the process when no worker has
 * made progress for 10 s once they all started (process.exit cannot end workers blocked in native
 * code; loading lib/ through the TypeScript loader can take seconds on a busy machine), so a deadlock
 * shows as SIGKILL after printing { deadlock: true }. `--workers N` runs N workers (1: the
 * healthy baseline).
 */
import * as path from 'node:path';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';

const arg = process.argv.indexOf('--workers');
const WORKERS = arg >= 0 ? Number(process.argv[arg + 1]) : 2;
const ITERATIONS = 300;

if (isMainThread) {
  const started = Date.now();
  const progress = new Array<number>(WORKERS).fill(0);
  let mismatches = 0;
  let done = 0;
  let lastProgress = Date.now();
  const watchdog = setInterval(() => {
    // A deadlock never progresses again; loading lib/ through the TS loader alone can take several
    // seconds on a loaded 2-core machine, so only a long silence counts, and a longer one while
    // some worker has not reported its first progress yet.
    if (progress.some((p) => p === 0) && Date.now() - started < 60_000) return;
    if (Date.now() - lastProgress < 30_000) return;
    process.stdout.write(`${JSON.stringify({ ok: false, deadlock: true, progress })}\n`);
    process.kill(process.pid, 'SIGKILL');
  }, 250);
  for (let i = 0; i < WORKERS; i++) {
    const w = new Worker(__filename, { execArgv: ['-r', path.join(__dirname, 'register-ts.cjs')] });
    w.on('message', (m: { tick?: boolean; mismatches?: number }) => {
      lastProgress = Date.now();
      if (m.tick) {
        progress[i]++;
        return;
      }
      mismatches += m.mismatches ?? 0;
      if (++done === WORKERS) {
        clearInterval(watchdog);
        process.stdout.write(`${JSON.stringify({ ok: mismatches === 0, mismatches, ms: Date.now() - started })}\n`);
      }
    });
    w.on('error', (e) => {
      process.stdout.write(`${JSON.stringify({ ok: false, error: String(e) })}\n`);
      process.exit(1);
    });
  }
} else {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { snapkv, Tensor, topk } = require('../../lib/index') as typeof import('../../lib/index');
  const x = Tensor.from(Float32Array.from({ length: 100 * 2000 }, (_, i) => Math.sin(i * 0.37)), { shape: [100, 2000], device: 'cpu' });
  const q = Tensor.from(Float32Array.from({ length: 4 * 8 * 32 }, (_, i) => Math.cos(i)), { shape: [1, 4, 8, 32], device: 'cpu' });
  const k = Tensor.from(Float32Array.from({ length: 2 * 512 * 32 }, (_, i) => Math.sin(i * 0.11)), { shape: [1, 2, 512, 32], device: 'cpu' });
  const run = () => {
    const a = topk(x, 10);
    const b = snapkv.scores(q, k, { window: 8 });
    const r = [...a.toArray(), ...b.toArray()];
    a.dispose();
    b.dispose();
    return r;
  };
  const first = run();
  let mismatches = 0;
  for (let it = 0; it < ITERATIONS; it++) {
    const r = run();
    if (r.some((v, j) => !Object.is(v, first[j]))) mismatches++;
    parentPort!.postMessage({ tick: true });
  }
  parentPort!.postMessage({ mismatches });
}
