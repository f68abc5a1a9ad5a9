/**
 * Loads the native addon (build/Release/kvsift.node or a prebuild) and registers KvsiftError with
 * it, so errors thrown from C++ are KvsiftError instances too.
 */
import * as path from 'node:path';
import type { Binding } from '../binding';
import { KvsiftError } from './errors';

function load(): Binding {
  // lib/ (sources under vitest) and dist/ (the compiled package) both sit one level below the root
  const root = path.join(__dirname, '..');
  let binding: Binding;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    // KVSIFT_ADDON_PATH picks one build explicitly (CI tests its C++-only and sanitizer builds so)
    const explicit = process.env.KVSIFT_ADDON_PATH;
    if (explicit) {
      binding = require(path.resolve(explicit)) as Binding;
    } else {
      const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
      binding = nodeGypBuild(root) as Binding;
    }
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new KvsiftError(
      `kvsift: the native addon could not be loaded (${reason}). Build it with 'npm run build:native' ` +
        `(needs cmake and a C++17 compiler; nvcc for CUDA), or reinstall with 'npm install'.`,
      'ERR_NATIVE_LOAD',
    );
  }
  binding.setErrorClass(KvsiftError);
  return binding;
}

/** The raw native surface; see binding.d.ts. */
export const native: Binding = load();
