/**
 * Re-entrancy into the native binding while it reads its arguments: JS getters on a tensor-like
 * (`shape`, `_dtypeCode`) or on the options object (`window`, `k`, `seqLens`, ...) that free a
 * buffer the call already looked at, and then allocate fresh buffers of the same size so freed
 * memory is handed out again. A call must then throw (ERR_DISPOSED) or finish on memory that is
 * still its own; it must never read or write a freed buffer. Without a sanitizer a violation shows
 * up, at best, as heap corruption later on; under AddressSanitizer (test/fuzz.test.ts runs this
 * script with the sanitizer build when there is one) as a heap-use-after-free report.
 *
 *   node -r ./test/scripts/register-ts.cjs test/scripts/reentrancy.ts
 *
 * Prints one JSON line: { cases, threw: { code: count }, returned }.
 */
import type { DeviceBuffer } from '../../binding';
import { KvsiftError } from '../../lib/errors';
// lib/native.ts honours KVSIFT_ADDON_PATH (a sanitizer build, say)
import { native } from '../../lib/native';


interface T {
  _buffer: DeviceBuffer;
  _dtypeCode: number;
  shape: number[];
}
const BYTES = [4, 2, 2, 4, 1];
const made: DeviceBuffer[] = [];
function tensor(shape: number[], code = 0): T {
  const n = shape.reduce((a, b) => a * b, 1);
  const b = native.alloc(-1, n * BYTES[code]);
  native.fill(b, code === 3 ? 0 : 0x3c);
  made.push(b);
  return { _buffer: b, _dtypeCode: code, shape };
}

/** Frees `victim` and hands its memory out again (same-size allocations, filled). */
function freeAndReuse(victim: DeviceBuffer): void {
  const bytes = victim.byteLength;
  victim.free();
  for (let i = 0; i < 4; i++) {
    const b = native.alloc(-1, bytes);
    native.fill(b, 0xab);
    made.push(b);
  }
}

/** `obj[key]` becomes a getter that runs `effect` once, then returns the original value. */
function trap<O extends object>(obj: O, key: string, effect: () => void): O {
  const value = (obj as Record<string, unknown>)[key];
  let fired = false;
  Object.defineProperty(obj, key, {
    enumerable: true,
    configurable: true,
    get() {
      if (!fired) {
        fired = true;
        effect();
      }
      return value;
    },
  });
  return obj;
}

type Case = [string, () => unknown];
const cases: Case[] = [];

// Each op with valid arguments; the option `key` (read after the tensors) or the `shape` of a later
// tensor frees an input, an output, or the tensor itself.
function opCases(name: string, make: () => { args: unknown[]; tensors: T[]; optionKeys: string[]; optionsIndex: number }): void {
  const { tensors, optionKeys } = make();
  for (let victim = 0; victim < tensors.length; victim++) {
    for (const key of optionKeys) {
      cases.push([`${name}: options.${key} frees tensor ${victim}`, () => {
        const m = make();
        const o = m.args[m.optionsIndex] as Record<string, unknown>;
        trap(o, key, () => freeAndReuse(m.tensors[victim]._buffer));
        return (native as unknown as Record<string, (...a: unknown[]) => unknown>)[name](...m.args);
      }]);
    }
    for (let reader = 0; reader < tensors.length; reader++) {
      cases.push([`${name}: tensor ${reader}.shape frees tensor ${victim}`, () => {
        const m = make();
        trap(m.tensors[reader], 'shape', () => freeAndReuse(m.tensors[victim]._buffer));
        return (native as unknown as Record<string, (...a: unknown[]) => unknown>)[name](...m.args);
      }]);
    }
  }
}

opCases('topk', () => {
  const s = tensor([2, 64]);
  const o = tensor([2, 8], 3);
  return { args: [s, o, { k: 8, order: 0, outRowStride: 8 }], tensors: [s, o], optionKeys: ['k', 'order', 'outRowStride', 'lengths'], optionsIndex: 2 };
});
opCases('pool1d', () => {
  const s = tensor([2, 64]);
  const o = tensor([2, 64]);
  return { args: [s, o, { kernel: 5, kind: 1 }], tensors: [s, o], optionKeys: ['kernel', 'kind', 'lengths'], optionsIndex: 2 };
});
opCases('gather', () => {
  const c = tensor([1, 2, 16, 8]);
  const p = tensor([1, 2, 4], 3);
  const o = tensor([1, 2, 4, 8]);
  return { args: [c, p, o, { layout: 0, group: 1 }], tensors: [c, p, o], optionKeys: ['group'], optionsIndex: 3 };
});
opCases('snapkvScores', () => {
  const q = tensor([1, 2, 4, 8]);
  const k = tensor([1, 2, 32, 8]);
  const o = tensor([1, 2, 28]);
  return { args: [q, k, o, { window: 4, groupReduce: 0, layout: 0 }], tensors: [q, k, o], optionKeys: ['window', 'groupReduce', 'seqLens', 'lse'], optionsIndex: 3 };
});
opCases('accumulate', () => {
  const q = tensor([1, 2, 1, 8]);
  const k = tensor([1, 2, 32, 8]);
  const s = tensor([1, 2, 32]);
  return { args: [q, k, s, { layout: 0, tau: 1, noise: 1, seed: 1, step: 0 }], tensors: [q, k, s], optionKeys: ['tau', 'noise', 'seed', 'step', 'seqLens'], optionsIndex: 3 };
});
opCases('l2Norms', () => {
  const k = tensor([1, 2, 32, 8]);
  const o = tensor([1, 2, 32]);
  return { args: [k, o, { layout: 0 }], tensors: [k, o], optionKeys: ['seqLens'], optionsIndex: 2 };
});
opCases('protectScores', () => {
  const s = tensor([1, 2, 32]);
  const o = tensor([1, 2, 32]);
  return { args: [s, o, { sinks: 1, recent: 2, sign: -1 }], tensors: [s, o], optionKeys: ['sinks', 'recent', 'sign', 'seqLens'], optionsIndex: 2 };
});
opCases('fillWindow', () => {
  const p = tensor([4, 8], 3);
  return { args: [p, { window: 2, n: 16, rowStride: 8, rowsPerBatch: 4 }], tensors: [p], optionKeys: ['window', 'n', 'rowStride', 'rowsPerBatch', 'seqLens'], optionsIndex: 1 };
});
opCases('gumbel', () => {
  const o = tensor([1, 2, 1, 64]);
  return { args: [o, { seed: 1, step: 2 }], tensors: [o], optionKeys: ['seed', 'step'], optionsIndex: 1 };
});
opCases('headReduce', () => {
  const s = tensor([1, 4, 64]);
  const o = tensor([1, 64]);
  return { args: [s, o, { scale: 0.25 }], tensors: [s, o], optionKeys: ['scale'], optionsIndex: 2 };
});

// the probe calls of opCases allocated too
for (const b of made.splice(0)) b.free();

// --list prints the case names; --case N runs case N alone (to pin one down under a sanitizer)
if (process.argv.includes('--list')) {
  cases.forEach(([name], i) => process.stdout.write(`${i}\t${name}\n`));
  process.exit(0);
}
const only = process.argv.indexOf('--case');
const selected = only >= 0 ? [cases[Number(process.argv[only + 1])]] : cases;

const threw: Record<string, number> = {};
let returned = 0;
const start = native.memoryStats(-1);
for (const [, run] of selected) {
  try {
    run();
    returned++;
  } catch (e) {
    const code = e instanceof KvsiftError ? e.code : e instanceof Error ? `${e.constructor.name}: ${e.message}` : typeof e;
    threw[code] = (threw[code] ?? 0) + 1;
  }
  for (const b of made.splice(0)) b.free();
}
const end = native.memoryStats(-1);
const leak = end.liveBuffers !== start.liveBuffers ? `liveBuffers ${start.liveBuffers} -> ${end.liveBuffers}` : '';
process.stdout.write(`${JSON.stringify({ cases: selected.length, threw, returned, leak })}\n`);
