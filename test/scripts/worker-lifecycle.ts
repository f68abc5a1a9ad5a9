/**
 * Workers that load kvsift and exit (issue 11, class 1). The main thread never loads kvsift, so
 * each worker's exit unloads the addon: its CPU thread pool must be stopped and its cached host
 * blocks returned first. `--workers N` workers run one after another, each running a few CPU ops
 * (allocating about 64 MiB through the host cache) and then exiting (`--exit natural|process-exit|
 * terminate`). Prints one JSON line { ok, threads: [before, after], rssGrowthMb }: with the main
 * thread not using kvsift, both must come back to where they were before the first worker.
 */
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const argValue = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
};

function threadCount(): number {
  return readdirSync('/proc/self/task').length;
}

if (isMainThread) {
  const workers = Number(argValue('--workers', '10'));
  const exit = argValue('--exit', 'natural');
  const loadInMain = argValue('--main-loads', 'no') === 'yes';
  if (loadInMain) require('../../lib/index');
  const runOne = () =>
    new Promise<void>((resolve, reject) => {
      const w = new Worker(__filename, { execArgv: ['-r', path.join(__dirname, 'register-ts.cjs')], workerData: { exit } });
      w.on('message', (m: string) => {
        if (m === 'ready' && exit === 'terminate') void w.terminate();
      });
      w.on('error', reject);
      w.on('exit', () => resolve());
    });
  void (async () => {
    // the baseline: before any worker (with --main-loads yes, after one, since the main thread's
    // own use of kvsift keeps its pool and cache)
    if (loadInMain) await runOne();
    const threads0 = threadCount();
    const rss0 = process.memoryUsage().rss;
    for (let i = 0; i < workers; i++) await runOne();
    const threads1 = threadCount();
    const rss1 = process.memoryUsage().rss;
    const rssGrowthMb = Math.round((rss1 - rss0) / 2 ** 20);
    process.stdout.write(`${JSON.stringify({ ok: true, workers, threads: [threads0, threads1], rssGrowthMb })}\n`);
  })().catch((e) => {
    process.stdout.write(`${JSON.stringify({ ok: false, error: String(e) })}\n`);
    process.exitCode = 1;
  });
} else {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Tensor, topk, l2 } = require('../../lib/index') as typeof import('../../lib/index');
  const exit = (workerData as { exit: string }).exit;
  // 288 MiB through the host cache (blocks of 256 KiB and more are kept for reuse), then ops that
  // use the CPU thread pool
  const big = [16, 24, 32].map((m) => Tensor.zeros([m << 20], 'f32', 'cpu'));
  for (const t of big) t.dispose();
  const x = Tensor.from(Float32Array.from({ length: 64 * 4096 }, (_, i) => Math.sin(i)), { shape: [64, 4096], device: 'cpu' });
  const k = Tensor.from(Float32Array.from({ length: 2 * 256 * 64 }, (_, i) => Math.cos(i)), { shape: [1, 2, 256, 64], device: 'cpu' });
  topk(x, 16).dispose();
  l2.norms(k).dispose();
  if (exit === 'process-exit') process.exit(0);
  parentPort!.postMessage('ready');
  if (exit === 'terminate') setInterval(() => topk(x, 4).dispose(), 1);
}
