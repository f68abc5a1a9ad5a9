import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // examples/ import 'kvsift' as a user would; in the repository that is lib/
  resolve: { alias: { kvsift: fileURLToPath(new URL('./lib/index.ts', import.meta.url)) } },
  test: {
    include: ['test/**/*.test.ts'],
    // Child processes, not worker threads: a native addon is loaded once per process, and a
    // crash in one test file (a CUDA fault, a sanitizer report) then takes down only that file.
    pool: 'forks',
    // --expose-gc lets the finalizer tests collect forgotten tensors on demand.
    execArgv: ['--expose-gc'],
    // CUDA suites on a cold GPU (context creation, first-use JIT of PTX) and the sanitizer
    // build are slow; 120 s is far above any healthy test.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: process.env.CI ? ['verbose'] : ['default'],
  },
});
