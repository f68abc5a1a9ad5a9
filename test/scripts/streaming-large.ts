/**
 * streaming.select with a large, valid n (BUG-3 in test/fuzz-regressions.test.ts): must end in a tensor or a
 * KvsiftError, not a V8 abort. Run with a small JS heap (--max-old-space-size=128): the positions
 * belong in native memory, not in a JS array.
 */
import { KvsiftError, streaming } from '../../lib/index';

const n = 2 ** 26;
try {
  const t = streaming.select(n, { sinks: n, recent: 0, device: 'cpu' });
  const ok = t.shape.length === 1 && t.shape[0] === n;
  t.dispose();
  process.stdout.write(`${JSON.stringify({ result: ok ? 'tensor' : 'wrong shape' })}\n`);
  process.exitCode = ok ? 0 : 1;
} catch (e) {
  process.stdout.write(`${JSON.stringify({ result: e instanceof KvsiftError ? e.code : String(e) })}\n`);
  process.exitCode = e instanceof KvsiftError ? 0 : 1;
}
