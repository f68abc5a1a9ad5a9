/**
 * The leak loops of test/leaks.test.ts, in a process of their own (run with --expose-gc so RSS is
 * measured after real collections, away from vitest's own allocations):
 *
 *   1. every op, on fresh small inputs, `--ops` times in total, everything disposed;
 *   2. `--failing` calls that throw (bad arguments, out-of-range positions found by the kernel
 *      after the output was allocated, disposed inputs), nothing to dispose.
 *
 * After a warm-up (V8's heap sizing, its compiled code, the allocator's arenas and the CPU thread
 * pool's scratch settle over the first few thousand ops: about 13 MB of RSS, all of it in the
 * first 6000), the RSS and memoryStats(device) are taken, then again after each loop. Prints one JSON line:
 *   { device, baseline, afterOps, afterFailing, rss: { warm, afterOps, afterFailing }, opCalls, failingCalls, errors }
 *
 *   node --expose-gc -r ./test/scripts/register-ts.cjs test/scripts/leak-loop.ts --device cpu --ops 10000 --failing 10000
 */
import { readFileSync } from 'node:fs';
import { evict, gather, h2o, keyformer, KvsiftError, l2, memoryStats, snapkv, Stream, streaming, Tensor, topk, tova, type Device } from '../../lib/index';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const device = arg('device', 'cpu') as Device;
const OPS = Number(arg('ops', '10000'));
const FAILING = Number(arg('failing', '10000'));
/** Under AddressSanitizer freed memory sits in a quarantine: RSS says nothing, and time is dear. */
const SANITIZED = /libasan|libclang_rt\.asan/.test(readFileSync('/proc/self/maps', 'utf8'));
const WARMUP = Number(arg('warmup', SANITIZED ? '200' : '6000'));

const gc = (globalThis as { gc?: () => void }).gc;
if (typeof gc !== 'function') throw new Error('run with --expose-gc');

/** A cheap deterministic generator: the data does not matter, only the allocations. */
let state = 12345;
function rand(): number {
  state = (Math.imul(state, 1103515245) + 12345) >>> 0;
  return state / 4294967296 - 0.5;
}
function f32(shape: number[], dtype: 'f32' | 'f16' | 'bf16' = 'f32'): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rand();
  return Tensor.from(data, { shape, dtype, device });
}

// B = 1, Hkv = 2, G = 2 (Hq = 4), N = 64, D = 16, window 8, capacity 24
const [B, Hkv, Hq, N, D, W, C] = [1, 2, 4, 64, 16, 8, 24];

let cycles = 0;

/** One cycle: every op once on fresh inputs; returns the number of op calls made. */
async function cycle(stream: Stream): Promise<number> {
  const live: Tensor[] = [];
  const keep = <T extends Tensor>(t: T): T => {
    live.push(t);
    return t;
  };
  const keepAll = (c: { keys: Tensor; values: Tensor; positions: Tensor }) => {
    live.push(c.keys, c.values, c.positions);
  };
  let calls = 0;
  try {
    const dtype = (['f32', 'f16', 'bf16'] as const)[cycles++ % 3];
    const q = keep(f32([B, Hq, W, D], dtype));
    const k = keep(f32([B, Hkv, N, D], dtype));
    const v = keep(f32([B, Hkv, N, D], dtype));
    const votes = keep(snapkv.scores(q, k, { window: W }));
    const pooled = keep(snapkv.pool(votes, { kernel: 7, kind: 'max' }));
    const pos = keep(topk(pooled, C - W));
    keep(gather(k, pos));
    keepAll(snapkv.compress(q, k, v, { window: W, capacity: C, stream }));
    keep(l2.norms(k));
    keepAll(l2.compress(k, v, { capacity: C, sinks: 2, recent: 4 }));
    const scores = keep(Tensor.zeros([B, Hkv, N], 'f32', device));
    const q1 = keep(f32([B, Hq, 1, D], dtype));
    keyformer.accumulate(q1, k, scores, { tau: 1.5, seed: 7, step: cycles });
    const kf = keep(keyformer.select(scores, { capacity: C, recent: 4 }));
    keepAll(evict(k, v, kf));
    h2o.accumulate(q1, k, scores);
    keep(h2o.select(scores, { capacity: C, recent: 4 }));
    keep(tova.select(q1, k, { capacity: C }));
    const sp = keep(streaming.select(N, { sinks: 4, recent: 12, device }));
    keepAll(evict(k, v, sp));
    keep(keyformer.gumbel([B, Hq, 1, N], { seed: 1, step: 2, device }));
    calls += 17;
    // the async paths (an AsyncWorker each) and a device round trip
    await pooled.toArrayAsync();
    await stream.synchronize();
    keep(pos.to(device)).toArray();
    const s = Stream.create(device);
    s.dispose();
    calls += 3;
  } finally {
    for (const t of live) t.dispose();
  }
  return calls;
}

/** Calls that must throw; each returns the number of calls made. */
function failing(): number {
  const k = f32([B, Hkv, N, D]);
  const v = f32([B, Hkv, N, D]);
  const q = f32([B, Hq, W, D]);
  const scores = f32([B, Hkv, N]);
  const bad = Tensor.from(new Int32Array([0, 1, N + 5, -1]), { shape: [B, 1, 4], device }); // out of range
  const gone = f32([4]);
  gone.dispose();
  const attempts: (() => unknown)[] = [
    // found by the CPU kernel after the output was allocated (CUDA reports it at synchronize(),
    // which test/faults.test.ts covers)
    ...(device === 'cpu' ? [() => gather(k, bad), () => evict(k, v, bad)] : []),
    () => topk(scores, N + 1),
    () => topk(gone, 1),
    () => snapkv.scores(q, k, { window: W + 1 }),
    () => snapkv.pool(scores, { kernel: 4, kind: 'max' }),
    () => snapkv.compress(q, k, v, { window: W, capacity: W - 1 }),
    () => l2.norms(scores),
    () => l2.compress(k, v, { capacity: C, sinks: C, recent: 1 }),
    () => keyformer.accumulate(q, k, scores, { tau: 0, seed: 1, step: 1 }),
    () => keyformer.select(scores, { capacity: 0, recent: 0 }),
    () => h2o.accumulate(k, k, scores, { layout: 'nope' as 'bhsd' }),
    () => tova.select(q, k, { capacity: C }), // T = W, not 1
    () => streaming.select(-1, { sinks: 1, recent: 1 }),
    () => keyformer.gumbel([1, 2, 3], { seed: 1, step: 1 }),
    () => Tensor.from(new Float32Array(3), { shape: [2, 2], device }),
    () => Tensor.empty([2 ** 31 - 1, 2 ** 20, 2], 'u8', device), // no host has 2^52 bytes
  ];
  let calls = 0;
  try {
    for (let i = 0; i < attempts.length; i++) {
      try {
        attempts[i]();
        throw new Error(`attempt ${i} did not throw`);
      } catch (e) {
        if (!(e instanceof KvsiftError)) throw e;
        errors[e.code] = (errors[e.code] ?? 0) + 1;
      }
      calls++;
    }
  } finally {
    for (const t of [k, v, q, scores, bad]) t.dispose();
  }
  return calls;
}
const errors: Record<string, number> = {};

async function settle(): Promise<number> {
  for (let i = 0; i < 4; i++) {
    gc!();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 5));
  }
  return process.memoryUsage.rss();
}

function stats() {
  const s = memoryStats(device);
  return { liveTensors: s.liveTensors, liveBytes: s.liveBytes };
}

async function main(): Promise<void> {
  const stream = Stream.create(device);
  // warm-up: both loops, so the allocator's and V8's steady state is reached before measuring
  for (let n = 0; n < WARMUP; ) n += await cycle(stream);
  for (let n = 0; n < WARMUP; ) n += failing();
  const warm = await settle();
  const baseline = stats();

  // memoryStats is read before any collection: disposal and failed ops' cleanup must free at once,
  // not through the garbage collector's finalizers
  let opCalls = 0;
  while (opCalls < OPS) opCalls += await cycle(stream);
  const afterOps = stats();
  const afterOpsRss = await settle();

  let failingCalls = 0;
  while (failingCalls < FAILING) failingCalls += failing();
  const afterFailing = stats();
  const afterFailingRss = await settle();

  stream.dispose();
  process.stdout.write(
    `${JSON.stringify({ device, sanitized: SANITIZED, baseline, afterOps, afterFailing, rss: { warm, afterOps: afterOpsRss, afterFailing: afterFailingRss }, opCalls, failingCalls, errors })}\n`,
  );
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});
