// The package's install step: use a prebuilt addon when one fits this platform, else build one
// with cmake-js. It says in one line what it builds (CUDA found or not) and how to change that,
// instead of letting a prebuild probe print a stack trace on every first install.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');

/** A prebuilt or already-built addon node-gyp-build would load, or null. */
function existingAddon() {
  try {
    // node-gyp-build's resolver throws "No native build was found ..." when none fits
    return require('node-gyp-build').path(root);
  } catch {
    return null;
  }
}

/** The nvcc CMake would find: CUDACXX, CMAKE_CUDA_COMPILER, or nvcc on the PATH. */
function findNvcc(env = process.env) {
  for (const v of [env.CUDACXX, env.CMAKE_CUDA_COMPILER]) if (v && fs.existsSync(v)) return v;
  const exe = process.platform === 'win32' ? 'nvcc.exe' : 'nvcc';
  for (const dir of (env.PATH || '').split(path.delimiter)) {
    if (dir && fs.existsSync(path.join(dir, exe))) return path.join(dir, exe);
  }
  return null;
}

/** The one line install prints before building: what is built, and how to change it. */
function buildLine(env = process.env) {
  const off = /^(off|0|false|no)$/i.test(env.KVSIFT_CUDA || '');
  if (off) return 'kvsift: building the native addon, CPU backend only (KVSIFT_CUDA=OFF)';
  const nvcc = findNvcc(env);
  if (nvcc) return `kvsift: building the native addon with CUDA (nvcc: ${nvcc}); set KVSIFT_CUDA=OFF to build the CPU backend only (faster)`;
  return 'kvsift: building the native addon, CPU backend only (no nvcc found; for CUDA install the toolkit, then run npm run rebuild:native)';
}

function main() {
  if (process.env.KVSIFT_SKIP_BUILD === '1') {
    console.log('kvsift: KVSIFT_SKIP_BUILD=1: not building the native addon (build it later with npm run build:native)');
    return 0;
  }
  const existing = existingAddon();
  if (existing) {
    console.log(`kvsift: using the native addon at ${path.relative(root, existing)} (npm run rebuild:native rebuilds it)`);
    return 0;
  }
  console.log(buildLine());
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const r = spawnSync(process.execPath, [cmakeJs, 'compile'], { cwd: root, stdio: 'inherit', env: process.env });
  if (r.status !== 0) {
    console.error('kvsift: the native build failed (see above); it needs cmake >= 3.18 and a C++17 compiler (and nvcc for CUDA)');
    return r.status === null ? 1 : r.status;
  }
  return 0;
}

module.exports = { buildLine };
if (require.main === module) process.exitCode = main();
