/**
 * f16 on the CPU backend: inputs are widened with the CPU's hardware conversion (F16C) where it
 * has one, picked at load time. The conversion is exact, so every result is bit-identical to the
 * portable path (forced in a child process with KVSIFT_HALF_SCALAR=1). The speed itself is a
 * benchmark, not a test: `npm run bench -- --op l2.norms` reports f16 next to bf16.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildInfo } from '../lib/index';

const root = path.join(__dirname, '..');

// A child process (the path is picked once per process) computes f16 results and prints their bits.
function runChild(env: NodeJS.ProcessEnv): { path: string; l2: number[]; scores: number[]; acc: number[] } {
  const code = `
    const kv = require('./dist/index.js');
    let s = 12345;
    const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 4294967296) * 4 - 2;
    const k = kv.Tensor.from(Float32Array.from({ length: 2 * 2 * 77 * 40 }, rnd), { shape: [2, 2, 77, 40], dtype: 'f16', device: 'cpu' });
    const q = kv.Tensor.from(Float32Array.from({ length: 2 * 4 * 5 * 40 }, rnd), { shape: [2, 4, 5, 40], dtype: 'f16', device: 'cpu' });
    // subnormals, infinities and NaN in one row
    const odd = kv.Tensor.from(new Uint16Array([0x0001, 0x03ff, 0x8200, 0x7c00, 0x7e00, 0x3c00, 0xfbff, 0x0400, 0x0002]), { shape: [1, 1, 1, 9], dtype: 'f16', device: 'cpu' });
    const sc = kv.Tensor.zeros([2, 2, 77], 'f32', 'cpu');
    kv.h2o.accumulate(q.view([2, 4, 5, 40]), k, sc);
    const out = {
      path: kv.buildInfo.cpuF16Conversion,
      l2: [...new Uint32Array(kv.l2.norms(k).toArray().buffer), ...new Uint32Array(kv.l2.norms(odd).toArray().buffer)],
      scores: [...new Uint32Array(kv.snapkv.scores(q, k, { window: 5 }).toArray().buffer)],
      acc: [...new Uint32Array(sc.toArray().buffer)],
    };
    process.stdout.write(JSON.stringify(out));
  `;
  return JSON.parse(execFileSync(process.execPath, ['-e', code], { cwd: root, env: { ...process.env, ...env }, encoding: 'utf8' }));
}

describe('f16 on the CPU', () => {
  it('uses the hardware conversion where the CPU has F16C', () => {
    const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
    if (process.arch === 'x64' && process.platform === 'linux' && /\bf16c\b/.test(cpuinfo)) expect(buildInfo.cpuF16Conversion).toBe('f16c');
    else expect(['f16c', 'scalar']).toContain(buildInfo.cpuF16Conversion);
  });

  it.skipIf(!fs.existsSync(path.join(root, 'dist', 'index.js')))('gives bit-identical results on the hardware and the portable path', () => {
    const hw = runChild({});
    const portable = runChild({ KVSIFT_HALF_SCALAR: '1' });
    expect(portable.path).toBe('scalar');
    expect(hw.l2).toEqual(portable.l2);
    expect(hw.scores).toEqual(portable.scores);
    expect(hw.acc).toEqual(portable.acc);
  });
});
