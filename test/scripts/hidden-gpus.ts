/**
 * Started by test/faults.test.ts with CUDA_VISIBLE_DEVICES='' (set before the addon loads): a CUDA
 * build must then behave as a CPU-only one. Prints one JSON line with what it saw, and the result
 * of a CPU op on fixed inputs for the parent to compare with its own.
 */
import { buildInfo, cudaDeviceCount, defaultDevice, devices, KvsiftError, snapkv, Stream, Tensor } from '../../lib/index';
import { fixedCompress } from './fixed-inputs';

function attempt(fn: () => unknown): { code: string; message: string } | 'ok' {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return e instanceof KvsiftError ? { code: e.code, message: e.message } : { code: 'not a KvsiftError', message: String(e) };
  }
}

const compressed = fixedCompress('cpu');
process.stdout.write(
  `${JSON.stringify({
    cudaVisibleDevices: process.env.CUDA_VISIBLE_DEVICES,
    buildCuda: buildInfo.cuda,
    reason: buildInfo.cudaUnavailableReason,
    count: cudaDeviceCount(),
    devices: devices().map((d) => d.name),
    defaultDevice: defaultDevice(),
    emptyOnCuda: attempt(() => Tensor.empty([4], 'f32', 'cuda:0')),
    streamOnCuda: attempt(() => Stream.create('cuda:0')),
    compressed,
    scores: Array.from(snapkv.scores(...fixedQK()).toArray()),
  })}\n`,
);

function fixedQK(): [Tensor, Tensor] {
  const q = Tensor.from(Float32Array.from({ length: 2 * 4 * 8 }, (_, i) => Math.sin(i)), { shape: [1, 2, 4, 8], device: 'cpu' });
  const k = Tensor.from(Float32Array.from({ length: 2 * 16 * 8 }, (_, i) => Math.cos(i * 0.7)), { shape: [1, 2, 16, 8], device: 'cpu' });
  return [q, k];
}
