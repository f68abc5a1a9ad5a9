// The emulated CUDA device (docs/GPU.md): what it reports, its planted-bug checks, and the
// launchers' "unsupported" path, which runs on any CUDA device.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildInfo, devices, snapkv, keyformer, Tensor } from '../lib/index';
import { expectKvsiftError, itCuda, testRng } from './helpers';

const emulated = buildInfo.cudaEmulated === true;
const describeEmu = emulated ? describe : describe.skip;
const label = emulated ? 'the emulated CUDA device' : 'the emulated CUDA device [skipped: not an emulated build (npm run test:emu)]';

describeEmu(label, () => {
  it('is cuda:0, says it is emulated and reports a real target\'s limits', () => {
    const cuda = devices().find((d) => d.name === 'cuda:0');
    expect(cuda).toBeDefined();
    const info = cuda as Extract<ReturnType<typeof devices>[number], { computeCapability: string }>;
    expect(info.model).toMatch(/^kvsift emulated CUDA device \(sm_\d+, .+ limits\)$/);
    expect(['7.5', '8.0', '8.6', '8.9', '9.0']).toContain(info.computeCapability);
    expect(info.model).toContain(`sm_${info.computeCapability.replace('.', '')}`);
    expect(info.multiprocessors).toBeGreaterThanOrEqual(40);
    expect(info.l2CacheBytes).toBeGreaterThanOrEqual(4 << 20);
    expect(buildInfo.cuda).toBe(true);
    expect(buildInfo.cudaArchitectures).toEqual(['emulated']);
  });

  it('catches each planted bug (test/emu/planted.cu) and passes the clean kernels', () => {
    const addon = process.env.KVSIFT_ADDON_PATH ?? '';
    const exe = join(dirname(addon), 'emu_planted');
    expect(existsSync(exe), `${exe} (built by npm run build:emu)`).toBe(true);
    const r = spawnSync(exe, { encoding: 'utf8', env: { ...process.env, KVSIFT_EMU_QUIET: '1' }, timeout: 120_000 });
    const out = `${r.stdout}\n${r.stderr}`;
    expect(out, out).toMatch(/^(\d+) passed, 0 failed$/m);
    expect(r.status, out).toBe(0);
    // Every check has its case: out of bounds (global, shared), uninitialized shared, races,
    // barrier and warp divergence, misalignment, determinism.
    for (const c of ['(a)', '(b)', '(c)', '(d)', '(e)', '(f)']) expect(out).toMatch(new RegExp(`^ok +\\${c.slice(0, 2)}\\)`, 'm'));
  });
});

describe('unsupported CUDA configurations', () => {
  itCuda('a head dim above the kernels\' limit is ERR_UNSUPPORTED naming the limit', () => {
    const rng = testRng('unsupported');
    const D = 264;
    const q = Tensor.from(rng.normalArray(1 * 2 * 4 * D), { shape: [1, 2, 4, D], dtype: 'f32', device: 'cuda:0' });
    const k = Tensor.from(rng.normalArray(1 * 2 * 37 * D), { shape: [1, 2, 37, D], dtype: 'f32', device: 'cuda:0' });
    expectKvsiftError(() => snapkv.scores(q, k, { window: 4 }), 'ERR_UNSUPPORTED',
      'snapkv.scores: snapkv.scores supports head dims up to 256 on CUDA, but D is 264');
    const scores = Tensor.zeros([1, 2, 37], 'f32', 'cuda:0');
    const q1 = Tensor.from(rng.normalArray(2 * D), { shape: [1, 2, 1, D], dtype: 'f32', device: 'cuda:0' });
    expectKvsiftError(() => keyformer.accumulate(q1, k, scores, { tau: 1, seed: 1, step: 0 }), 'ERR_UNSUPPORTED', /up to 256 on CUDA, but D is 264/);
    // A failed op leaves its inputs untouched.
    expect(Array.from(scores.toArray() as Float32Array).every((v) => v === 0)).toBe(true);
    for (const t of [q, k, scores, q1]) t.dispose();
  });
});
