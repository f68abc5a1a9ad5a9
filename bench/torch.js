/**
 * The PyTorch comparison of kvsift bench: bench/torch_reference.py times the published eager
 * PyTorch code of the ops whose registry entry names a `torch` counterpart, on the same inputs,
 * alone on the GPU before kvsift runs.
 */
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const shapes = require('./shapes');
const { SEEDS } = require('./inputs');

function pythonCommand(o) {
  return o.python || process.env.KVSIFT_PYTHON || 'python3';
}

/** { ok, reason, torch } : whether python with torch and a CUDA device is usable. */
function probeTorch(python) {
  const r = spawnSync(python, ['-c', 'import json, sys, torch; print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available()}))'], {
    encoding: 'utf8',
    timeout: 120000,
  });
  if (r.error) return { ok: false, reason: `${python} not found (${r.error.code || r.error.message})` };
  if (r.status !== 0) {
    const v = spawnSync(python, ['--version'], { encoding: 'utf8' });
    const version = (v.stdout || v.stderr || '').trim();
    const why = /No module named ['"]?torch/.test(r.stderr) ? 'torch is not installed' : `importing torch failed: ${(r.stderr || '').trim().split('\n').pop()}`;
    return { ok: false, reason: `${version || python} is present but ${why}` };
  }
  const info = JSON.parse(r.stdout.trim().split('\n').pop());
  if (!info.cuda) return { ok: false, reason: `torch ${info.torch} sees no CUDA device`, info };
  return { ok: true, info };
}

function torchSkipReason(o, onCuda, reasonNoCuda) {
  if (!o.torch) return { reason: '--no-torch' };
  const probe = probeTorch(pythonCommand(o));
  if (!onCuda) return { reason: `no GPU: the bench device is the CPU (${reasonNoCuda}); the PyTorch reference times CUDA only${probe.ok ? '' : `, and ${probe.reason}`}` };
  if (!probe.ok) return { reason: probe.reason };
  return { probe };
}

/** Runs bench/torch_reference.py on the comparable configs; its progress goes to our stderr. */
function runTorch(o, plan, timerOpts, l2Bytes, progress) {
  const ops = plan.ops.filter((op) => op.torch);
  if (ops.length === 0) return { results: [], skipped: 'no op with a PyTorch counterpart selected' };
  const spec = {
    ops: ops.map((op) => op.torch),
    configs: plan.combos.map((c) => ({ model: c.model, hq: c.hq, hkv: c.hkv, d: c.d, n: c.n, b: c.b })),
    windows: plan.windows,
    capacity: shapes.CAPACITY,
    kernel: shapes.KERNEL,
    pooling: shapes.POOLING,
    seeds: SEEDS,
    reps: Math.max(20, timerOpts.minRuns),
    warmup: timerOpts.warmup,
    l2Bytes,
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvsift-bench-'));
  const specFile = path.join(dir, 'spec.json');
  fs.writeFileSync(specFile, JSON.stringify(spec));
  progress.note(`running the PyTorch reference (${pythonCommand(o)} bench/torch_reference.py) first, alone on the GPU ...`);
  try {
    const r = spawnSync(pythonCommand(o), [path.join(__dirname, 'torch_reference.py'), '--spec', specFile], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 64 * 2 ** 20,
    });
    if (r.error || r.status !== 0) return { results: [], skipped: `torch_reference.py failed (${r.error ? r.error.message : `exit ${r.status}`})` };
    return JSON.parse(r.stdout);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { torchSkipReason, runTorch };
