/**
 * Fuzzing: thousands of seeded random argument combinations thrown at every public function of
 * lib/index.ts (valid lists from test/fuzz/specs.ts, mutated and checked by test/fuzz/engine.ts,
 * whose header states the contract), at every function of the raw native binding (in a child
 * process, test/scripts/fuzz-native.ts), and at workers terminated while they use kvsift
 * (test/scripts/fuzz-workers.ts). Bugs the fuzzer found are pinned in test/fuzz-regressions.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryStats, Stream, Tensor } from '../lib/index';
import { testRng } from './helpers';
import { describeChild, runChild } from './scripts/child';
import { asanEnv, asanReason, fuzzPublic, runNativeFuzz, SCALE } from './fuzz/engine';
import { ctx, SPECS } from './fuzz/specs';

/** Per family: how many calls each hostile mutation got (checked once all families ran). */
const hostileTotals: Record<string, number>[] = [];

let baseline: { liveTensors: number; liveBytes: number };

beforeAll(() => {
  const rng = testRng('fuzz pool');
  const stats = memoryStats('cpu');
  baseline = { liveTensors: stats.liveTensors, liveBytes: stats.liveBytes };
  ctx.pool = [
    Tensor.from(rng.normalArray(24), { shape: [2, 3, 4], device: 'cpu' }),
    Tensor.from(rng.normalArray(24), { shape: [1, 2, 3, 4], dtype: 'f16', device: 'cpu' }),
    Tensor.from(rng.normalArray(24), { shape: [2, 4, 1, 3], dtype: 'bf16', device: 'cpu' }),
    Tensor.from(rng.normalArray(6), { shape: [1, 1, 6], device: 'cpu' }),
    Tensor.from(rng.intArray(12, 0, 3), { shape: [2, 2, 3], device: 'cpu' }),
    Tensor.from(rng.intArray(4, -100, 100), { shape: [4], device: 'cpu' }),
    Tensor.from(rng.bytes(16), { shape: [1, 2, 2, 4], device: 'cpu' }),
    Tensor.from(new Float32Array([7]), { shape: [], device: 'cpu' }),
    Tensor.empty([0], 'f32', 'cpu'),
    Tensor.empty([2, 0, 3, 1], 'f32', 'cpu'),
    Tensor.from(rng.normalArray(16), { shape: [1, 1, 16, 1], device: 'cpu' }),
  ];
  ctx.disposedTensor = Tensor.from([1, 2, 3], { device: 'cpu' });
  ctx.disposedTensor.dispose();
  ctx.cpuStream = Stream.create('cpu');
  ctx.disposedStream = Stream.create('cpu');
  ctx.disposedStream.dispose();
});

afterAll(() => {
  for (const t of ctx.pool ?? []) t.dispose();
  ctx.cpuStream?.dispose();
  // everything the fuzzer made, failed ops' temporaries included, is gone
  expect(memoryStats('cpu')).toMatchObject(baseline);
});

/** Runs one family; its tally must show both outcomes, so the fuzzer is not vacuous. */
async function runFamily(names: string[], iterationsPerFn: number): Promise<void> {
  const rng = testRng();
  const specs = SPECS.filter((s) => names.includes(s.name));
  expect(specs.map((s) => s.name).sort()).toEqual([...names].sort());
  const before = memoryStats('cpu');
  const { tally, failures, hostile } = await fuzzPublic(rng, ctx, specs, Math.round(iterationsPerFn * SCALE) * specs.length);
  expect(failures, failures.join('\n\n')).toEqual([]);
  hostileTotals.push(hostile);
  for (const s of specs) {
    const t = tally.get(s.name);
    expect(t, `${s.name} was never called`).toBeDefined();
    if (!NEVER_FAIL.has(s.name)) expect(t!.errors, `${s.name}: no call failed (${JSON.stringify(t)})`).toBeGreaterThan(0);
    expect(t!.ok, `${s.name}: no call succeeded (${JSON.stringify(t)})`).toBeGreaterThan(0);
  }
  // failed calls leaked nothing (the pool is allocated before, and kept)
  expect(memoryStats('cpu')).toMatchObject({ liveTensors: before.liveTensors, liveBytes: before.liveBytes });
}

/** Functions that take no argument they could reject: exempt from "some call failed". */
const NEVER_FAIL = new Set(['tensor.toString', 'tensor.dispose', 'stream.dispose', 'devices', 'defaultDevice', 'cudaDeviceCount']);

describe('fuzz: the public API', () => {
  it('Tensor constructors and methods', async () => {
    await runFamily(
      ['Tensor.from', 'Tensor.empty', 'Tensor.zeros', 'Tensor.fromDevicePointer', 'tensor.toArray', 'tensor.toRawArray', 'tensor.toArrayAsync', 'tensor.to', 'tensor.toString', 'tensor.dispose', 'tensor.devicePointer'],
      240,
    );
  });

  it('devices, memory stats and streams', async () => {
    await runFamily(['memoryStats', 'devices', 'defaultDevice', 'cudaDeviceCount', 'dtypeBytes', 'synchronize', 'Stream.create', 'Stream.default', 'Stream.fromHandle', 'stream.synchronize', 'stream.dispose', 'stream.handle'], 120);
  });

  it('f16/bf16 conversions', async () => {
    await runFamily(['f32ToF16', 'f32ToBf16', 'f16ToF32', 'bf16ToF32'], 150);
  });

  it('topk, gather and evict', async () => {
    await runFamily(['topk', 'gather', 'evict'], 500);
  });

  it('snapkv.scores, snapkv.pool and snapkv.compress', async () => {
    await runFamily(['snapkv.scores', 'snapkv.pool', 'snapkv.compress'], 500);
  });

  it('l2.norms and l2.compress', async () => {
    await runFamily(['l2.norms', 'l2.compress'], 500);
  });

  it('keyformer, h2o, tova and streaming', async () => {
    await runFamily(['keyformer.accumulate', 'keyformer.gumbel', 'keyformer.tau', 'keyformer.select', 'h2o.accumulate', 'h2o.select', 'tova.select', 'streaming.select'], 300);
  });
});


describe('fuzz: the raw native binding (child process)', () => {
  it('every native function with every JS type in every argument position: an Error or a result, never a crash', () => {
    const seed = testRng().seed;
    const iterations = Math.round(6000 * SCALE);
    const summary = runNativeFuzz(seed, iterations);
    // every function was reached, and the structured calls got past validation into the kernels
    for (const [fn, t] of Object.entries(summary.perFunction)) expect(t.ok + t.threw, fn).toBeGreaterThan(0);
    for (const fn of ['topk', 'gather', 'snapkvScores', 'pool1d', 'accumulate', 'l2Norms', 'protectScores', 'fillWindow', 'gumbel', 'headReduce', 'copyBuffer', 'copyToHostAsync']) {
      expect(summary.perFunction[fn]?.ok ?? 0, `${fn} never succeeded`).toBeGreaterThan(0);
      expect(summary.perFunction[fn]?.threw ?? 0, `${fn} never failed`).toBeGreaterThan(0);
    }
  });
});

describe('fuzz: hostile inputs', () => {
  it('every hostile mutation ran: detaching and resizing getters, lying lengths, prototype pollution', () => {
    const total: Record<string, number> = {};
    for (const h of hostileTotals) for (const [k, n] of Object.entries(h)) total[k] = (total[k] ?? 0) + n;
    for (const kind of ['detach', 'resize', 'lie', 'pollute']) expect(total[kind] ?? 0, `${kind} never applied (${JSON.stringify(total)})`).toBeGreaterThan(20);
    if (process.env.KVSIFT_FUZZ_REPORT === '1') process.stdout.write(`hostile mutations applied: ${JSON.stringify(total)}\n`);
  });

  it('workers terminated or exiting at random moments while they use kvsift never take the process down (child process)', () => {
    const seed = testRng().seed;
    const r = runChild('fuzz-workers.ts', { args: ['--seed', String(seed), '--rounds', String(Math.round(8 * SCALE))], timeoutMs: 240_000 });
    expect(r.signal, describeChild(r)).toBeNull();
    expect(r.status, describeChild(r)).toBe(0);
    const out = r.json as { ok: boolean; rounds: number; terminated: number; exited: number; mainChecks: number };
    expect(out.ok, describeChild(r)).toBe(true);
    expect(out.terminated + out.exited).toBe(out.rounds);
    expect(out.mainChecks).toBe(out.rounds - Math.floor(out.rounds / 2));
  });
});

(asanReason === '' ? describe : describe.skip)(`fuzz under AddressSanitizer${asanReason ? ` [skipped: ${asanReason}]` : ''}`, () => {
  it('the raw-binding fuzz finds no out-of-bounds or use-after-free access', () => {
    runNativeFuzz(testRng().seed, Math.round(6000 * SCALE), asanEnv());
  });

  // Why: a JS getter could free a buffer an op had already read (BUG-1); checked under the sanitizer.
  it('no native op touches a buffer that a JS getter freed during the call (BUG-1)', () => {
    const r = runChild('reentrancy.ts', { env: asanEnv() });
    expect(r.status, describeChild(r)).toBe(0);
  });
});
