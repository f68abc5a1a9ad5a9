/**
 * Devices: the CPU backend is always there; CUDA devices are listed when kvsift was built with
 * CUDA and a driver and GPU are present. A device is named 'cpu' or 'cuda:N'.
 */
import * as os from 'node:os';
import { KvsiftError } from './errors';
import type { NativeBuildInfo, NativeDeviceInfo } from '../binding';
import { native } from './native';
import { invalid } from './validate';

export type Device = 'cpu' | `cuda:${number}`;

export interface CpuDeviceInfo {
  name: 'cpu';
  model: string;
  threads: number;
  totalMemory: number;
  freeMemory: number;
}

export interface CudaDeviceInfo extends NativeDeviceInfo {
  name: `cuda:${number}`;
}

export type DeviceInfo = CpuDeviceInfo | CudaDeviceInfo;

/** What this build contains: CUDA or not, its architectures and runtime, the CPU backend's threads. */
export type BuildInfo = NativeBuildInfo;

/**
 * What this build of kvsift contains.
 *
 * @example
 * ```ts
 * import { buildInfo } from 'kvsift';
 * if (!buildInfo.cuda) console.log('CPU-only build');
 * ```
 */
export const buildInfo: Readonly<BuildInfo> = Object.freeze(native.buildInfo());

/**
 * Lists the CPU and every usable CUDA device. Never throws for a missing GPU or driver: the CUDA
 * part is then empty.
 *
 * @example
 * ```ts
 * for (const d of devices()) console.log(d.name, d.model);
 * ```
 */
export function devices(): DeviceInfo[] {
  const cpus = os.cpus();
  const list: DeviceInfo[] = [
    {
      name: 'cpu',
      model: cpus[0]?.model ?? 'unknown',
      threads: buildInfo.cpuThreads,
      totalMemory: os.totalmem(),
      freeMemory: os.freemem(),
    },
  ];
  const n = native.cudaDeviceCount();
  for (let i = 0; i < n; i++) {
    const info = native.cudaDeviceInfo(i);
    list.push({ name: `cuda:${i}`, ...info });
  }
  return list;
}

/** Number of usable CUDA devices. */
export function cudaDeviceCount(): number {
  return native.cudaDeviceCount();
}

/**
 * 'cuda:0' when a CUDA device is usable, else 'cpu'.
 *
 * @example
 * ```ts
 * const t = Tensor.empty([4, 4], 'f32', defaultDevice());
 * ```
 */
export function defaultDevice(): Device {
  return native.cudaDeviceCount() > 0 ? 'cuda:0' : 'cpu';
}

/** Parses 'cpu' | 'cuda' | 'cuda:N' into the native index (-1 for the CPU). */
export function deviceIndex(op: string, name: string, device: unknown): number {
  if (device === 'cpu') return -1;
  if (typeof device === 'string') {
    const m = /^cuda(?::(\d+))?$/.exec(device);
    if (m) {
      const index = m[1] === undefined ? 0 : Number(m[1]);
      const count = native.cudaDeviceCount();
      if (index >= count) {
        const why = count === 0 ? ` (${buildInfo.cudaUnavailableReason || 'no CUDA device'})` : ` (${count} CUDA devices)`;
        throw new KvsiftError(`${op}: no such device '${device}'${why}`, 'ERR_NO_DEVICE');
      }
      return index;
    }
  }
  throw invalid(op, name, "'cpu' or 'cuda:N'", device);
}

export function deviceName(index: number): Device {
  return index < 0 ? 'cpu' : `cuda:${index}`;
}
