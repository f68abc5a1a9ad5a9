/**
 * The first hour of a new user (issue 12): the README's quick example runs as written and is
 * the file the README shows; the install line; `kvsift --version`; what the package ships;
 * capacity >= N means "keep everything" for every op; layout mistakes are hinted or refused.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { h2o, keyformer, l2, snapkv, streaming, Tensor, tova } from '../lib/index';
import { expectKvsiftError, testRng } from './helpers';

const root = path.join(__dirname, '..');

describe('the README quick example', () => {
  it('runs as written', async () => {
    const { quick } = await import('../examples/quick');
    expect(quick.kept.keys.shape).toEqual([1, 8, 1024, 128]);
    expect(quick.positions).toBeInstanceOf(Int32Array);
    for (let h = 0; h < 8; h++) {
      const row = Array.from(quick.positions.subarray(h * 1024, (h + 1) * 1024));
      for (let i = 1; i < row.length; i++) expect(row[i]).toBeGreaterThan(row[i - 1]);
      expect(row.slice(-quick.W)).toEqual(Array.from({ length: quick.W }, (_, i) => quick.N - quick.W + i));
    }
    quick.kept.keys.dispose();
    quick.kept.values.dispose();
    quick.kept.positions.dispose();
  });

  it('is what the README shows, character for character', () => {
    const source = fs.readFileSync(path.join(root, 'examples', 'quick.ts'), 'utf8');
    const region = /\/\/ #region quick\n([\s\S]*?)\/\/ #endregion quick/.exec(source)?.[1];
    expect(region).toBeDefined();
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    expect(readme).toContain('```ts\n' + region + '```');
  });
});

describe('install and package', () => {
  it('install says in one line what it builds and how to skip CUDA', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { buildLine } = require('../scripts/install.js') as { buildLine(env: NodeJS.ProcessEnv): string };
    expect(buildLine({ PATH: '/nonexistent' })).toBe(
      'kvsift: building the native addon, CPU backend only (no nvcc found; for CUDA install the toolkit, then run npm run rebuild:native)',
    );
    expect(buildLine({ KVSIFT_CUDA: 'OFF', PATH: '' })).toBe('kvsift: building the native addon, CPU backend only (KVSIFT_CUDA=OFF)');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvsift-nvcc-'));
    fs.writeFileSync(path.join(dir, 'nvcc'), '');
    expect(buildLine({ PATH: dir })).toBe(`kvsift: building the native addon with CUDA (nvcc: ${path.join(dir, 'nvcc')}); set KVSIFT_CUDA=OFF to build the CPU backend only (faster)`);
    fs.rmSync(dir, { recursive: true });
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    expect(pkg.scripts.install).toBe('node scripts/install.js');
  });

  it('kvsift --version prints the package version', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    expect(execFileSync(process.execPath, [path.join(root, 'bin', 'kvsift.js'), '--version'], { encoding: 'utf8' })).toBe(`${pkg.version}\n`);
  });

  it('ships docs/, examples/ and an MIT LICENSE, and every relative README link resolves inside the package', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    for (const f of ['docs/', 'examples/', 'LICENSE', 'README.md', 'scripts/install.js']) expect(pkg.files).toContain(f);
    // everything the source build needs (the install builds from source when no prebuild fits)
    for (const f of ['cpp/', 'cuda/', 'common/', 'CMakeLists.txt', 'binding.d.ts']) expect(pkg.files).toContain(f);
    expect(fs.readFileSync(path.join(root, 'LICENSE'), 'utf8')).toMatch(/^MIT License/);
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    const links = [...readme.matchAll(/\]\(([^)#]+)(#[^)]*)?\)/g)].map((m) => m[1]).filter((l) => !/^[a-z]+:/.test(l));
    expect(links.length).toBeGreaterThan(2);
    for (const link of links) {
      expect(fs.existsSync(path.join(root, link)), link).toBe(true);
      const shipped = pkg.files.some((f: string) => link === f || link.startsWith(f.endsWith('/') ? f : `${f}/`));
      expect(shipped, `${link} is in package.json "files"`).toBe(true);
    }
  });
});

describe.skipIf(!fs.existsSync(path.join(root, 'dist', 'index.js')))('bench', () => {
  const bench = (...args: string[]) =>
    execFileSync(process.execPath, [path.join(root, 'bin', 'kvsift.js'), 'bench', ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, KVSIFT_NUM_THREADS: '2' } });

  it('--check runs only the checks', () => {
    const out = bench('--check', '--op', 'topk', '--device', 'cpu');
    expect(out).toMatch(/check: all 1 ops PASS/);
    expect(out).not.toMatch(/GB\/s|median/i);
  });

  it('--op decode-loop reports the on-device loop against the host-copy loop in one run', () => {
    const out = bench('--op', 'decode-loop', '--n', '300', '--reps', '1', '--device', 'cpu');
    const row = /^\s+300\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+(\d+) \| (\d+)$/m.exec(out);
    expect(row, out).not.toBeNull();
    expect(Number(row![4])).toBe(0); // the KvCache loop reads nothing back
    expect(Number(row![5])).toBeGreaterThan(2 * 8 * 300 * 128 * 4); // the host loop reads K and V every step
  });
});

describe('capacity >= N keeps every token, for every op', () => {
  const B = 2;
  const H = 2;
  const N = 6;
  const all = (rows: number) => Array.from({ length: rows }, () => [0, 1, 2, 3, 4, 5]).flat();
  it('selections return positions 0..N-1 (never more than N)', () => {
    const rng = testRng();
    const scores = Tensor.from(rng.normalArray(B * H * N), { shape: [B, H, N], device: 'cpu' });
    const k = Tensor.from(rng.normalArray(B * H * N * 4), { shape: [B, H, N, 4], device: 'cpu' });
    const q = Tensor.from(rng.normalArray(B * 4 * 1 * 4), { shape: [B, 4, 1, 4], device: 'cpu' });
    for (const capacity of [N, N + 1, 1000]) {
      expect(Array.from(h2o.select(scores, { capacity, recent: 2 }).toArray())).toEqual(all(B * H));
      expect(Array.from(keyformer.select(scores, { capacity, recent: 2 }).toArray())).toEqual(all(B * H));
      const t = tova.select(q, k, { capacity });
      expect(t.shape).toEqual([B, 1, N]);
      expect(Array.from(t.toArray())).toEqual(all(B));
      expect(Array.from(snapkv.select(Tensor.from(rng.normalArray(B * 4 * 2 * 4), { shape: [B, 4, 2, 4], device: 'cpu' }), k, { window: 2, capacity }).toArray())).toEqual(all(B * H));
      expect(Array.from(l2.compress(k, k, { capacity }).positions.toArray())).toEqual(all(B * H));
      expect(Array.from(streaming.select(N, { sinks: capacity, recent: 0, device: 'cpu' }).toArray())).toEqual(all(1));
    }
  });
});

describe('layout mistakes', () => {
  it('a shape error hints at the layout when the other one would be valid', () => {
    const q = Tensor.zeros([1, 3, 32, 16], 'f32', 'cpu'); // bshd queries: W = 3 tokens, Hq = 32 heads
    const k = Tensor.zeros([1, 64, 8, 16], 'f32', 'cpu'); // bshd keys: N = 64, Hkv = 8
    expectKvsiftError(() => snapkv.scores(q, k), 'ERR_INVALID_ARG', / \(did you mean layout: 'bshd'\?\)$/);
    expect(snapkv.scores(q, k, { layout: 'bshd' }).shape).toEqual([1, 8, 61]);
    const s = Tensor.zeros([1, 8, 64], 'f32', 'cpu');
    const q1 = Tensor.zeros([1, 1, 32, 16], 'f32', 'cpu');
    expectKvsiftError(() => h2o.accumulate(q1, k, s), 'ERR_INVALID_ARG', / \(did you mean layout: 'bshd'\?\)$/);
    h2o.accumulate(q1, k, s, { layout: 'bshd' });
  });

  it("l2.compress given a 'bshd' cache without layout does not silently keep heads", () => {
    const k = Tensor.zeros([1, 4096, 8, 4], 'f32', 'cpu'); // bshd: 4096 tokens, 8 heads
    expectKvsiftError(
      () => l2.compress(k, k, { capacity: 4 }),
      'ERR_INVALID_ARG',
      "l2.compress: expected [B, H, N, D] with at most 256 heads (layout 'bhsd', the default) for keys, but received shape [1, 4096, 8, 4]: 4096 heads of 8 tokens (did you mean layout: 'bshd'?)",
    );
    expect(l2.compress(k, k, { capacity: 4, layout: 'bshd' }).keys.shape).toEqual([1, 4, 8, 4]);
    // stated explicitly, a many-head 'bhsd' tensor is taken as given
    expect(l2.compress(k, k, { capacity: 4, layout: 'bhsd' }).keys.shape).toEqual([1, 4096, 4, 4]);
  });
});
