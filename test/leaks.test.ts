/**
 * Leaks: tensors, op temporaries, failed ops and forgotten tensors.
 *
 * The long loops run in a child process (test/scripts/leak-loop.ts, started as
 * `node --expose-gc -r test/scripts/register-ts.cjs`, which transpiles lib/ on the fly with the
 * project's TypeScript: no build step, no stale dist/), so the RSS it measures is its own and not
 * vitest's. There, after a warm-up, every op runs 10,000 times in total on small shapes with
 * everything disposed, then 10,000 failing calls run; memoryStats must be back at the baseline
 * after each loop *before* any garbage collection (disposal and failed ops free at once), and the
 * RSS, measured after gc(), may grow by less than 20 MB.
 *
 * The finalizer tests run in this process (vitest.config.mts starts workers with --expose-gc).
 */
import { describe, expect, it } from 'vitest';
import { evict, keyformer, memoryStats, snapkv, Stream, Tensor, topk, type Device } from '../lib/index';
import { collectUntil, CUDA_EMULATED, cudaDevices, describeCuda, testRng } from './helpers';
import { describeChild, runChild } from './scripts/child';

const RSS_GROWTH_LIMIT = 20 * 2 ** 20;

interface LeakReport {
  device: Device;
  sanitized: boolean;
  baseline: { liveTensors: number; liveBytes: number };
  afterOps: { liveTensors: number; liveBytes: number };
  afterFailing: { liveTensors: number; liveBytes: number };
  rss: { warm: number; afterOps: number; afterFailing: number };
  opCalls: number;
  failingCalls: number;
  errors: Record<string, number>;
}

// The emulated device runs each kernel on the CPU, twice (its determinism check): fewer loops
// there still cover every op and every failure path many times over.
const LOOPS = (device: Device) => (device !== 'cpu' && CUDA_EMULATED ? 1000 : 10_000);

function runLeakLoop(device: Device): LeakReport {
  const n = String(LOOPS(device));
  const r = runChild('leak-loop.ts', { exposeGc: true, args: ['--device', device, '--ops', n, '--failing', n], timeoutMs: 120_000 });
  expect(r.signal, describeChild(r)).toBeNull();
  expect(r.status, describeChild(r)).toBe(0);
  const report = r.json as LeakReport;
  expect(report, describeChild(r)).toBeDefined();
  return report;
}

function mb(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

function checkReport(report: LeakReport): void {
  expect(report.opCalls).toBeGreaterThanOrEqual(LOOPS(report.device));
  expect(report.failingCalls).toBeGreaterThanOrEqual(LOOPS(report.device));
  // each loop hands back every tensor and byte, without help from the garbage collector
  expect(report.afterOps, 'after 10,000 op calls').toEqual(report.baseline);
  expect(report.afterFailing, 'after 10,000 failing calls').toEqual(report.baseline);
  // the failures were the intended ones: validation, kernel-found bad positions, disposed inputs, OOM
  const codes = ['ERR_DISPOSED', ...(report.device === 'cpu' ? ['ERR_INDEX_OUT_OF_RANGE'] : []), 'ERR_INVALID_ARG', 'ERR_OUT_OF_MEMORY'];
  expect(Object.keys(report.errors).sort()).toEqual(codes);
  // under AddressSanitizer (the CI's sanitizer suite) freed memory is quarantined: RSS means nothing
  if (report.sanitized) return;
  const opsGrowth = report.rss.afterOps - report.rss.warm;
  const failingGrowth = report.rss.afterFailing - report.rss.afterOps;
  expect(opsGrowth, `RSS grew ${mb(opsGrowth)} over 10,000 op calls (warm: ${mb(report.rss.warm)})`).toBeLessThan(RSS_GROWTH_LIMIT);
  expect(failingGrowth, `RSS grew ${mb(failingGrowth)} over 10,000 failing calls`).toBeLessThan(RSS_GROWTH_LIMIT);
}

describe('leak loops (child process)', () => {
  it('10,000 op calls on the CPU, then 10,000 failing calls: memoryStats back at the baseline, RSS flat', () => {
    checkReport(runLeakLoop('cpu'));
  });
});

describeCuda('leak loops on CUDA (child process)', () => {
  // one listed (skipped) entry without CUDA, so the suite shows up in the report
  it.each(cudaDevices().length > 0 ? cudaDevices() : (['cuda:0'] as Device[]))('%s: the same loops leave device memory and host RSS where they were', (device) => {
    checkReport(runLeakLoop(device));
  });
});

describe('forgotten tensors in a synchronous loop (child process)', () => {
  // Why: finalizers run only when the event loop turns, so such a loop grew without bound.
  it('with KVSIFT_CPU_MEMORY_LIMIT the loop ends in a clean ERR_OUT_OF_MEMORY near the limit, and memory comes back after', () => {
    const r = runChild('forgotten-loop.ts', { exposeGc: true, args: ['--iterations', '1024'], env: { KVSIFT_CPU_MEMORY_LIMIT: String(192 << 20) }, timeoutMs: 120_000 });
    expect(r.signal, describeChild(r)).toBeNull();
    expect(r.status, describeChild(r)).toBe(0);
    const out = r.json as { made: number; error: string; rssGrowthMb: number; recovered: boolean };
    expect(out.error, describeChild(r)).toMatch(/^ERR_OUT_OF_MEMORY: alloc: out of memory on cpu allocating 1048576 bytes \(\d+ bytes held by live tensors; dispose\(\) the ones you no longer need\)$/);
    expect(out.made).toBeGreaterThan(100);
    expect(out.made).toBeLessThanOrEqual(192);
    expect(out.rssGrowthMb).toBeLessThan(192 + 64);
    expect(out.recovered).toBe(true);
  });
});

describe('forgotten tensors', () => {
  it('tensors never disposed, op outputs among them, are freed by the finalizer once collected', async () => {
    const rng = testRng();
    const base = memoryStats('cpu');
    let made = 0;
    (() => {
      for (let i = 0; i < 200; i++) {
        // inputs of every dtype, and the outputs of ops (each from its own native allocation)
        for (const dtype of ['f32', 'f16', 'bf16'] as const) Tensor.from(rng.normalArray(64), { shape: [1, 2, 8, 4], dtype, device: 'cpu' });
        Tensor.from(rng.intArray(16, 0, 7), { shape: [1, 2, 8], device: 'cpu' });
        Tensor.zeros([3, 5], 'u8', 'cpu');
        const q = Tensor.from(rng.normalArray(32), { shape: [1, 2, 4, 4], device: 'cpu' });
        const k = Tensor.from(rng.normalArray(128), { shape: [1, 2, 16, 4], device: 'cpu' });
        const votes = snapkv.scores(q, k, { window: 4 });
        topk(votes, 3);
        snapkv.compress(q, k, k, { window: 4, capacity: 8 });
        const s = Tensor.zeros([1, 2, 16], 'f32', 'cpu');
        keyformer.accumulate(q, k, s, { tau: 1, seed: 1, step: i });
        evict(k, k, keyformer.select(s, { capacity: 6, recent: 2 }));
        made += 16;
      }
    })();
    // some may already be gone (the buffers report external memory to V8), not most
    expect(memoryStats('cpu').liveTensors).toBeGreaterThan(base.liveTensors + made / 4);
    const collected = await collectUntil(() => memoryStats('cpu').liveTensors <= base.liveTensors, 100);
    const now = memoryStats('cpu');
    expect(collected, `liveTensors still ${now.liveTensors}, baseline ${base.liveTensors}`).toBe(true);
    expect(now.liveBytes).toBe(base.liveBytes);
  });

  it('a tensor disposed by hand is not freed again by its finalizer', async () => {
    const base = memoryStats('cpu');
    (() => {
      for (let i = 0; i < 500; i++) Tensor.from(new Float32Array(32), { device: 'cpu' }).dispose();
    })();
    expect(memoryStats('cpu')).toMatchObject({ liveTensors: base.liveTensors, liveBytes: base.liveBytes });
    await collectUntil(() => false, 5);
    // a double free would drive the counters below the baseline (or crash)
    expect(memoryStats('cpu')).toMatchObject({ liveTensors: base.liveTensors, liveBytes: base.liveBytes });
  });

  it('a tensor read asynchronously while it is forgotten stays alive until the read is done', async () => {
    const base = memoryStats('cpu');
    const data = testRng().normalArray(1024);
    const reads = (() => {
      const out: Promise<Float32Array | Int32Array | Uint8Array>[] = [];
      for (let i = 0; i < 50; i++) out.push(Tensor.from(data, { device: 'cpu' }).toArrayAsync());
      return out;
    })();
    (globalThis as { gc?: () => void }).gc?.();
    for (const r of await Promise.all(reads)) expect(r).toEqual(data);
    expect(await collectUntil(() => memoryStats('cpu').liveTensors <= base.liveTensors, 100)).toBe(true);
  });

  it('forgotten streams and failed ops in between do not disturb the count', async () => {
    const base = memoryStats('cpu');
    (() => {
      for (let i = 0; i < 300; i++) {
        Stream.create('cpu'); // never disposed
        const t = Tensor.from(new Float32Array(8), { device: 'cpu' });
        try {
          topk(t, 9);
        } catch {
          // expected: k > N
        }
      }
    })();
    expect(await collectUntil(() => memoryStats('cpu').liveTensors <= base.liveTensors, 100)).toBe(true);
    expect(memoryStats('cpu').liveBytes).toBe(base.liveBytes);
  });
});
