/**
 * Worker termination with async work pending (issue 11, class 2): a worker starts many
 * toArrayAsync reads and synchronize calls and is then ended (`--how terminate`: the parent calls
 * worker.terminate(); `--how exit`: the worker calls process.exit() itself) while they are in
 * flight. The process must survive every round: prints { ok: true, rounds }.
 */
import * as path from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const argValue = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
};

if (isMainThread) {
  const how = argValue('--how', 'terminate');
  const rounds = Number(argValue('--rounds', '12'));
  void (async () => {
    for (let r = 0; r < rounds; r++) {
      await new Promise<void>((resolve, reject) => {
        const w = new Worker(__filename, { execArgv: ['-r', path.join(__dirname, 'register-ts.cjs')], workerData: { how, round: r } });
        w.on('message', () => {
          // vary the moment: at once, or after the reads had a little time
          if (how === 'terminate') setTimeout(() => void w.terminate(), r % 3);
        });
        w.on('error', reject);
        w.on('exit', () => resolve());
      });
    }
    process.stdout.write(`${JSON.stringify({ ok: true, rounds })}\n`);
  })().catch((e) => {
    process.stdout.write(`${JSON.stringify({ ok: false, error: String(e) })}\n`);
    process.exitCode = 1;
  });
} else {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Tensor, Stream, synchronize } = require('../../lib/index') as typeof import('../../lib/index');
  const { how, round } = workerData as { how: string; round: number };
  const t = Tensor.from(new Float32Array(1 << 18).fill(1), { device: 'cpu' });
  const stream = Stream.create('cpu');
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < 64; i++) {
    pending.push(t.toArrayAsync(), stream.synchronize(), synchronize('cpu'));
  }
  for (const p of pending) p.catch(() => undefined);
  if (how === 'exit') {
    if (round % 2 === 0) process.exit(0);
    setImmediate(() => process.exit(0));
  }
  parentPort!.postMessage('started');
  // keep issuing work until terminated
  setInterval(() => {
    t.toArrayAsync().catch(() => undefined);
    synchronize('cpu').catch(() => undefined);
  }, 0);
}
