/**
 * Worker termination as a fuzz mutation (issue 11): each round starts a worker that runs a seeded
 * random mix of kvsift calls (async reads, synchronize on streams and devices, in-place and
 * compressing ops, tensors made and dropped) and ends it at a random moment: the parent calls
 * worker.terminate() after a random delay, or the worker calls process.exit() from inside its
 * loop. The first half of the rounds run with kvsift loaded only in the workers (each exit
 * unloads it); then the main thread loads it too and checks after each round that it still
 * computes the same result. Prints { ok, rounds, terminated, exited, mainChecks, errors }.
 */
import * as path from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const argValue = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
};

/** A small seeded generator (mulberry32): the same seed gives the same rounds. */
function rngOf(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

if (isMainThread) {
  const seed = Number(argValue('--seed', '1'));
  const rounds = Number(argValue('--rounds', '8'));
  const rng = rngOf(seed);
  let terminated = 0;
  let exited = 0;
  let mainChecks = 0;
  const errors: string[] = [];
  let reference: number[] | undefined;
  const mainCheck = () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { snapkv, Tensor } = require('../../lib/index') as typeof import('../../lib/index');
    const q = Tensor.from(Float32Array.from({ length: 64 }, (_, i) => Math.sin(i)), { shape: [1, 4, 2, 8], device: 'cpu' });
    const k = Tensor.from(Float32Array.from({ length: 256 }, (_, i) => Math.cos(i)), { shape: [1, 2, 16, 8], device: 'cpu' });
    const v = snapkv.scores(q, k);
    const got = Array.from(v.toArray());
    for (const t of [q, k, v]) t.dispose();
    if (reference === undefined) reference = got;
    else if (got.some((x, i) => !Object.is(x, reference![i]))) errors.push('the main thread computed something else after a worker ended');
    mainChecks++;
  };
  void (async () => {
    for (let r = 0; r < rounds; r++) {
      const byExit = rng() < 0.5;
      const delay = Math.floor(rng() * 30);
      await new Promise<void>((resolve) => {
        const w = new Worker(__filename, { execArgv: ['-r', path.join(__dirname, 'register-ts.cjs')], workerData: { seed: seed + r, exitAfter: byExit ? 1 + Math.floor(rng() * 40) : -1 } });
        w.on('message', () => {
          if (!byExit) setTimeout(() => void w.terminate(), delay);
        });
        w.on('error', (e) => errors.push(`round ${r}: ${String(e)}`));
        w.on('exit', () => resolve());
      });
      if (byExit) exited++;
      else terminated++;
      if (r >= Math.floor(rounds / 2)) mainCheck();
    }
    process.stdout.write(`${JSON.stringify({ ok: errors.length === 0, rounds, terminated, exited, mainChecks, errors })}\n`);
  })();
} else {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { h2o, keyformer, snapkv, Stream, synchronize, Tensor } = require('../../lib/index') as typeof import('../../lib/index');
  const { seed, exitAfter } = workerData as { seed: number; exitAfter: number };
  const rng = rngOf(seed);
  const f32 = (shape: number[]) => Tensor.from(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng() * 2 - 1), { shape, device: 'cpu' });
  const q = f32([1, 4, 4, 16]);
  const k = f32([1, 2, 256, 16]);
  const v = f32([1, 2, 256, 16]);
  const scores = Tensor.zeros([1, 2, 256], 'f32', 'cpu');
  const stream = Stream.create('cpu');
  const pending: Promise<unknown>[] = [];
  let steps = 0;
  parentPort!.postMessage('started');
  const step = () => {
    const u = rng();
    if (u < 0.25) pending.push(scores.toArrayAsync(), k.toArrayAsync({ stream }));
    else if (u < 0.4) pending.push(stream.synchronize(), synchronize('cpu'));
    else if (u < 0.55) keyformer.accumulate(q, k, scores, { tau: 1.5, seed: 3, step: steps });
    else if (u < 0.7) h2o.accumulate(q, k, scores);
    else if (u < 0.85) {
      const c = snapkv.compress(q, k, v, { window: 4, capacity: 64 });
      if (rng() < 0.5) for (const t of [c.keys, c.values, c.positions]) t.dispose();
    } else {
      const t = f32([rng() < 0.5 ? 1 << 16 : 64]); // sometimes through the host cache
      if (rng() < 0.5) t.dispose();
      else pending.push(t.toArrayAsync());
    }
    for (const p of pending.splice(0)) p.catch(() => undefined);
    if (++steps === exitAfter) process.exit(0);
  };
  const loop = () => {
    for (let i = 0; i < 4; i++) step();
    setImmediate(loop);
  };
  loop();
}
