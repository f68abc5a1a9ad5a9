#!/usr/bin/env node
/**
 * The kvsift command line:
 *   kvsift info            what this build contains and which devices it sees
 *   kvsift --version       the package version
 *   kvsift bench [flags]   the benchmark (bench/bench.js; `kvsift bench --help`)
 */
'use strict';

const path = require('node:path');

const USAGE = `usage: kvsift <command> [options]

commands:
  --version, -v  print the package version
  info           print the build (CUDA compiled in? architectures, runtime) and the devices
  bench [flags]  time every op at named model shapes; 'kvsift bench --help' for the flags
`;

function loadKvsift() {
  try {
    return require(path.join(__dirname, '..', 'dist', 'index.js'));
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes(path.join('dist', 'index.js'))) {
      process.stderr.write("kvsift: dist/ is missing: run 'npm run build:ts' (or 'npm install') first\n");
      process.exit(1);
    }
    throw e;
  }
}

function gib(bytes) {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

function info() {
  const kv = loadKvsift();
  const b = kv.buildInfo;
  const pkg = require(path.join(__dirname, '..', 'package.json'));
  const lines = [
    `kvsift ${pkg.version} (node ${process.version}, N-API ${b.napiVersion}, ${process.platform} ${process.arch})`,
    `build: CUDA ${b.cuda ? `compiled in (architectures ${b.cudaArchitectures.join(', ') || '-'}; runtime ${b.cudaRuntimeVersion ?? '-'}, driver ${b.cudaDriverVersion ?? 'none'})` : 'not compiled in (CPU backend only)'}`,
    `CPU backend threads: ${b.cpuThreads} (KVSIFT_NUM_THREADS overrides)`,
  ];
  if (b.cudaUnavailableReason) lines.push(`no CUDA device usable: ${b.cudaUnavailableReason}`);
  lines.push('devices:');
  for (const d of kv.devices()) {
    if (d.name === 'cpu') lines.push(`  cpu      ${d.model}, ${d.threads} threads, ${gib(d.totalMemory)} memory (${gib(d.freeMemory)} free)`);
    else lines.push(`  ${d.name.padEnd(8)} ${d.model}, compute ${d.computeCapability}, ${d.multiprocessors} SMs, ${gib(d.totalMemory)} (${gib(d.freeMemory)} free), L2 ${(d.l2CacheBytes / 2 ** 20).toFixed(0)} MiB`);
  }
  lines.push(`default device: ${kv.defaultDevice()}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

async function main(argv) {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'info':
      return info();
    case '--version':
    case '-v':
    case 'version':
      // no native load: works even when the addon is not built
      process.stdout.write(`${require(path.join(__dirname, '..', 'package.json')).version}\n`);
      return 0;
    case 'bench':
      loadKvsift();
      return require(path.join(__dirname, '..', 'bench', 'bench.js')).main(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return cmd === undefined ? 1 : 0;
    default:
      process.stderr.write(`kvsift: unknown command '${cmd}'\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`kvsift: ${e && e.stack ? e.stack : e}\n`);
    process.exitCode = 1;
  },
);
