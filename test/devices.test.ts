import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as kvsift from '../lib/index';
import { buildInfo, cudaDeviceCount, defaultDevice, devices, Tensor } from '../lib/index';
import { cudaDevices, cudaSkipReason, describeCuda } from './helpers';

const ROOT = path.resolve(__dirname, '..');

describe('devices()', () => {
  it('lists the CPU first, with its fields', () => {
    const list = devices();
    expect(list.length).toBe(1 + cudaDeviceCount());
    const cpu = list[0];
    expect(cpu.name).toBe('cpu');
    expect(typeof cpu.model).toBe('string');
    expect(cpu.totalMemory).toBeGreaterThan(0);
    expect(cpu.freeMemory).toBeGreaterThan(0);
    expect(cpu.freeMemory).toBeLessThanOrEqual(cpu.totalMemory);
    expect((cpu as kvsift.CpuDeviceInfo).threads).toBe(buildInfo.cpuThreads);
  });

  it('names CUDA devices cuda:0 .. cuda:N-1, in order', () => {
    expect(cudaDevices()).toEqual(Array.from({ length: cudaDeviceCount() }, (_, i) => `cuda:${i}`));
  });

  it('defaultDevice() is cuda:0 when a CUDA device is usable, else cpu', () => {
    expect(defaultDevice()).toBe(cudaDeviceCount() > 0 ? 'cuda:0' : 'cpu');
  });

  it('never throws without a GPU, and cudaDeviceCount() is a non-negative integer', () => {
    expect(Number.isInteger(cudaDeviceCount())).toBe(true);
    expect(cudaDeviceCount()).toBeGreaterThanOrEqual(0);
    if (!buildInfo.cuda) expect(cudaDeviceCount()).toBe(0);
  });
});

describeCuda('CUDA device entries', () => {
  it('carry the documented fields', () => {
    for (const d of devices().slice(1) as kvsift.CudaDeviceInfo[]) {
      expect(d.name).toMatch(/^cuda:\d+$/);
      expect(typeof d.model).toBe('string');
      expect(d.model.length).toBeGreaterThan(0);
      expect(d.computeCapability).toMatch(/^\d+\.\d+$/);
      expect(Number(d.computeCapability)).toBeGreaterThanOrEqual(7.5);
      expect(d.totalMemory).toBeGreaterThan(0);
      expect(d.freeMemory).toBeGreaterThan(0);
      expect(d.freeMemory).toBeLessThanOrEqual(d.totalMemory);
      expect(Number.isInteger(d.multiprocessors) && d.multiprocessors > 0).toBe(true);
      expect(d.l2CacheBytes).toBeGreaterThan(0);
    }
  });
});

describe('buildInfo', () => {
  it('is frozen and has every documented field with the right type', () => {
    expect(Object.isFrozen(buildInfo)).toBe(true);
    expect(typeof buildInfo.cuda).toBe('boolean');
    expect(Array.isArray(buildInfo.cudaArchitectures)).toBe(true);
    // CMake architectures, or 'emulated' for the emulated device's build (docs/GPU.md)
    for (const a of buildInfo.cudaArchitectures) expect(a).toMatch(buildInfo.cudaEmulated ? /^emulated$/ : /^\d+(-real|-virtual)?$/);
    expect(typeof buildInfo.cudaEmulated).toBe('boolean');
    expect(typeof buildInfo.cudaUnavailableReason).toBe('string');
    expect(buildInfo.napiVersion).toBeGreaterThanOrEqual(8);
    expect(Number.isInteger(buildInfo.cpuThreads) && buildInfo.cpuThreads >= 1).toBe(true);
  });

  it('is consistent with the CUDA build flag', () => {
    if (buildInfo.cuda) {
      expect(buildInfo.cudaArchitectures.length).toBeGreaterThan(0);
      expect(buildInfo.cudaRuntimeVersion).toMatch(/^\d+\.\d+$/);
      if (buildInfo.cudaDriverVersion !== null) expect(buildInfo.cudaDriverVersion).toMatch(/^\d+\.\d+$/);
    } else {
      expect(buildInfo.cudaArchitectures).toEqual([]);
      expect(buildInfo.cudaRuntimeVersion).toBeNull();
      expect(buildInfo.cudaDriverVersion).toBeNull();
      expect(buildInfo.cudaUnavailableReason).toBe('kvsift was built without CUDA');
    }
  });

  it('gives a reason exactly when no CUDA device is usable', () => {
    if (cudaDeviceCount() > 0) expect(buildInfo.cudaUnavailableReason).toBe('');
    else expect(buildInfo.cudaUnavailableReason.length).toBeGreaterThan(0);
    expect(cudaSkipReason()).toBe(cudaDeviceCount() > 0 ? '' : buildInfo.cudaUnavailableReason);
  });

  it('the loaded addon is KVSIFT_ADDON_PATH when that is set (CI runs other builds this way)', () => {
    const wanted = process.env.KVSIFT_ADDON_PATH;
    if (!wanted || process.platform !== 'linux') return;
    const maps = fs.readFileSync('/proc/self/maps', 'utf8');
    const real = fs.realpathSync(path.resolve(ROOT, wanted));
    const loaded = [...new Set(maps.split('\n').filter((l) => l.endsWith('.node')).map((l) => l.slice(l.indexOf('/'))))];
    expect(loaded, 'lib/native.ts did not load KVSIFT_ADDON_PATH').toContain(real);
  });
});

// -------------------------------------------------------------------------------------------
// The published entry points: dist/index.js (require) and dist/index.mjs (import), built by
// `npm run build:ts`. They load the same addon as the sources do.

const DIST_CJS = path.join(ROOT, 'dist', 'index.js');
const DIST_ESM = path.join(ROOT, 'dist', 'index.mjs');
const distMissing = !fs.existsSync(DIST_CJS) || !fs.existsSync(DIST_ESM);
const describeDist = distMissing ? describe.skip : describe;
const distTitle = distMissing ? 'package entry points [skipped: dist/ is missing; run npm run build:ts]' : 'package entry points';

/** Runs node with args in the package root and returns stdout (throws with stderr on failure). */
function node(args: string[], env: Record<string, string> = {}): string {
  try {
    return execFileSync(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, ...env },
      encoding: 'utf8',
      timeout: 60_000,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`node ${args.join(' ')} failed: ${err.stderr || err.message}`);
  }
}

const CORE_EXPORTS = [
  'Tensor',
  'Stream',
  'KvsiftError',
  'buildInfo',
  'devices',
  'defaultDevice',
  'cudaDeviceCount',
  'memoryStats',
  'dtypeBytes',
  'synchronize',
  'f32ToF16',
  'f16ToF32',
  'f32ToBf16',
  'bf16ToF32',
];

describeDist(distTitle, () => {
  it('require() of dist/index.js works and round-trips a tensor', () => {
    const script = `
      const k = require(${JSON.stringify(DIST_CJS)});
      const t = k.Tensor.from([1, 2.5, -3], { dtype: 'bf16', device: 'cpu' });
      const out = { arr: Array.from(t.toArray()), names: Object.keys(k), cuda: k.buildInfo.cuda };
      t.dispose();
      process.stdout.write(JSON.stringify(out));`;
    const out = JSON.parse(node(['-e', script]));
    expect(out.arr).toEqual([1, 2.5, -3]);
    expect(out.cuda).toBe(buildInfo.cuda);
    for (const n of CORE_EXPORTS) expect(out.names).toContain(n);
  });

  it("require('kvsift') resolves through package.json exports", () => {
    const out = node(['-e', "const k = require('kvsift'); process.stdout.write(typeof k.Tensor.from)"]);
    expect(out).toBe('function');
  });

  it('import from dist/index.mjs works, with the same names and classes as require()', () => {
    const script = `
      import * as m from ${JSON.stringify(DIST_ESM)};
      import { createRequire } from 'node:module';
      const c = createRequire(import.meta.url)(${JSON.stringify(DIST_CJS)});
      const t = m.Tensor.zeros([2, 2], 'i32', 'cpu');
      const sameClass = t instanceof c.Tensor;
      let code = null;
      try { m.Tensor.empty([-1], 'f32', 'cpu'); } catch (e) { code = e instanceof c.KvsiftError ? e.code : 'wrong class'; }
      process.stdout.write(JSON.stringify({ arr: Array.from(t.toArray()), names: Object.keys(m), cjs: Object.keys(c), sameClass, code }));
      t.dispose();`;
    const out = JSON.parse(node(['--input-type=module', '-e', script]));
    expect(out.arr).toEqual([0, 0, 0, 0]);
    expect(out.sameClass).toBe(true);
    expect(out.code).toBe('ERR_INVALID_ARG');
    for (const n of out.cjs) if (n !== '__esModule') expect(out.names).toContain(n);
    for (const n of CORE_EXPORTS) expect(out.names).toContain(n);
  });

  it("import { Tensor } from 'kvsift' resolves through package.json exports", () => {
    const out = node(['--input-type=module', '-e', "import { Tensor, buildInfo } from 'kvsift'; process.stdout.write(typeof Tensor.from + ' ' + typeof buildInfo.cuda)"]);
    expect(out).toBe('function boolean');
  });

  it('dist exports at least what lib/index.ts exports (else dist/ is stale: npm run build:ts)', () => {
    const names = JSON.parse(node(['-e', `process.stdout.write(JSON.stringify(Object.keys(require(${JSON.stringify(DIST_CJS)}))))`]));
    const missing = Object.keys(kvsift).filter((n) => !names.includes(n));
    expect(missing, 'dist/ is older than lib/: run npm run build:ts').toEqual([]);
  });

  it('KVSIFT_NUM_THREADS sets the CPU backend threads', () => {
    const out = node(['-e', `process.stdout.write(String(require(${JSON.stringify(DIST_CJS)}).buildInfo.cpuThreads))`], { KVSIFT_NUM_THREADS: '3' });
    expect(out).toBe('3');
  });

  it('a plain node process frees forgotten tensors on GC (--expose-gc)', () => {
    const script = `
      const k = require(${JSON.stringify(DIST_CJS)});
      const base = k.memoryStats('cpu').liveTensors;
      (() => { for (let i = 0; i < 500; i++) k.Tensor.from(new Float32Array(1000), { device: 'cpu' }); })();
      const peak = k.memoryStats('cpu').liveTensors;
      let rounds = 0;
      (function loop() {
        global.gc();
        if (k.memoryStats('cpu').liveTensors > base && ++rounds < 50) return setTimeout(loop, 5);
        process.stdout.write(JSON.stringify({ base, peak, after: k.memoryStats('cpu') }));
      })();`;
    const out = JSON.parse(node(['--expose-gc', '-e', script]));
    expect(out.peak).toBeGreaterThan(out.base);
    expect(out.after.liveTensors).toBe(out.base);
    expect(out.after.liveBytes).toBe(0);
  });
});

describe('a tensor on every listed device', () => {
  it('can be made on each device devices() lists', () => {
    for (const d of devices()) {
      const t = Tensor.from([1, 2, 3], { device: d.name });
      expect(t.device).toBe(d.name);
      expect(Array.from(t.toArray())).toEqual([1, 2, 3]);
      t.dispose();
    }
  });
});
