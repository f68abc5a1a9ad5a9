/**
 * Host allocation failure on the read paths (issue 11, class 3), run under `ulimit -v` (see
 * ulimitVirtualKb in child.ts) so that a 768 MiB tensor fits but a host copy of it does not. toArrayAsync must reject with ERR_OUT_OF_MEMORY (it aborted with std::bad_alloc),
 * toArray must throw it (it threw a RangeError), and the process goes on. Prints
 * { async, sync, after }.
 */
import { KvsiftError, Tensor } from '../../lib/index';

const code = (e: unknown): string => (e instanceof KvsiftError ? e.code : `not a KvsiftError: ${String(e)}`);

void (async () => {
  const big = Tensor.empty([3 << 28], 'u8', 'cpu'); // 768 MiB
  let asyncResult = 'resolved';
  try {
    await big.toArrayAsync();
  } catch (e) {
    asyncResult = code(e);
  }
  let syncResult = 'returned';
  try {
    big.toArray();
  } catch (e) {
    syncResult = code(e);
  }
  big.dispose();
  const t = Tensor.from([1, 2, 3], { device: 'cpu' });
  const after = Array.from(await t.toArrayAsync()).join(',');
  t.dispose();
  process.stdout.write(`${JSON.stringify({ async: asyncResult, sync: syncResult, after })}\n`);
})();
