/**
 * The examples are tests: each runs as a user would run it (importing 'kvsift') on the CPU, and
 * on every CUDA device present. examples/decode-loop.ts asserts its own results against a
 * host-side reference and that no byte reaches the host inside its loop.
 */
import { expect, it } from 'vitest';
import { runDecodeLoop } from '../examples/decode-loop';
import { describeEachDevice } from './helpers';

describeEachDevice('examples/decode-loop.ts', (device) => {
  for (const layout of ['bhsd', 'bshd'] as const) {
    it(`${layout}: matches the host reference with zero host copies inside the loop`, () => {
      const report = runDecodeLoop(device, { layout });
      expect(report.toHostBytesInLoop).toBe(0);
      expect(report.steps).toBe(64);
      expect(report.layers).toBe(4);
      expect(report.keptPositions).toHaveLength(24 + (64 % 16));
    });
  }
});
