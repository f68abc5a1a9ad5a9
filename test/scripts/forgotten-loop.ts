/**
 * Forgotten tensors in a synchronous loop (issue 11, class 10): finalizers only run when the event
 * loop turns, so a loop that never disposes holds every tensor it made. With
 * KVSIFT_CPU_MEMORY_LIMIT set (the test sets 192 MiB), the loop must end in a clean
 * ERR_OUT_OF_MEMORY near the limit instead of growing without bound, and once the event loop has
 * turned (finalizers ran) allocation works again. `--iterations N` tensors of 1 MiB, written (so
 * they count in RSS). Prints { made, error, rssGrowthMb, recovered }.
 */
import { KvsiftError, memoryStats, Tensor } from '../../lib/index';

const i = process.argv.indexOf('--iterations');
const iterations = i >= 0 ? Number(process.argv[i + 1]) : 1024;
const gc = (globalThis as { gc?: () => void }).gc;

void (async () => {
  const rss0 = process.memoryUsage().rss;
  let made = 0;
  let error = 'none';
  (() => {
    for (let n = 0; n < iterations; n++) {
      try {
        Tensor.zeros([1 << 18], 'f32', 'cpu'); // 1 MiB, never disposed
        made++;
      } catch (e) {
        error = e instanceof KvsiftError ? `${e.code}: ${e.message}` : `not a KvsiftError: ${String(e)}`;
        return;
      }
    }
  })();
  const rssGrowthMb = Math.round((process.memoryUsage().rss - rss0) / 2 ** 20);
  // let the finalizers run
  let recovered = false;
  for (let round = 0; round < 50 && !recovered; round++) {
    gc?.();
    await new Promise((r) => setImmediate(r));
    recovered = memoryStats('cpu').liveBytes < 32 << 20;
  }
  const t = Tensor.zeros([1 << 18], 'f32', 'cpu');
  t.dispose();
  process.stdout.write(`${JSON.stringify({ made, error, rssGrowthMb, recovered })}\n`);
})();
