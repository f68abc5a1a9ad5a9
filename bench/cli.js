/**
 * The command line of kvsift bench: the flags, their parsing, and the usage text.
 */
'use strict';

const shapes = require('./shapes');
const { OPS } = require('./ops');

const USAGE = `usage: kvsift bench [options]

Times every op at named model shapes on the default device (CUDA when present, else the CPU).

  --quick            a short sweep (${shapes.QUICK.models.join(', ')}; N ${shapes.QUICK.n.map(shapes.formatN).join('/')}; batch ${shapes.QUICK.batch.join('/')}; W ${shapes.QUICK.windows.join('/')}; fewer runs)
  --check            only compare every selected op's output with a float64 reference (and, on
                     CUDA, with the CPU backend) on a small shape; nothing is timed; exit 1 on any FAIL
  --json FILE        also write the results as JSON (bench/plot.js draws them)
  --op LIST          ops to time, comma-separated; a prefix selects a family (--op snapkv)
                     ops: ${OPS.map((o) => o.name).join(', ')}
  --shape LIST       ${Object.keys(shapes.MODELS).join(', ')}
  --n LIST           sequence lengths, e.g. 4k,8k,32k,128k
  --batch LIST       batch sizes, e.g. 1,4
  --window LIST      SnapKV observation windows, e.g. 32,64
  --device NAME      cpu or cuda:N (default: cuda:0 when present, else cpu)
  --dtype NAME       K/V/Q dtype: f32, f16 or bf16 (default: bf16 on CUDA, f32 on the CPU)
  --reps N           timed runs per op (CPU) or timed batches per op (CUDA)
  --no-torch         skip the PyTorch comparison (CUDA only; needs python3 with torch)
  --python PATH      the python to run bench/torch_reference.py with (default: $KVSIFT_PYTHON or python3)
  -h, --help         this text
`;

class UsageError extends Error {}

function parseArgs(argv) {
  const o = { quick: false, check: false, json: null, op: [], shape: [], n: [], batch: [], window: [], device: null, dtype: null, reps: null, torch: true, python: null, help: false };
  const lists = new Set(['op', 'shape', 'n', 'batch', 'window']);
  const values = new Set(['json', 'device', 'dtype', 'reps', 'python', ...lists]);
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let value;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      value = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const name = a.replace(/^--?/, '');
    if (a === '-h' || a === '--help') o.help = true;
    else if (a === '--quick') o.quick = true;
    else if (a === '--check') o.check = true;
    else if (a === '--no-torch') o.torch = false;
    else if (a.startsWith('--') && values.has(name)) {
      if (value === undefined) {
        value = argv[++i];
        if (value === undefined) throw new UsageError(`${a} needs a value`);
      }
      if (lists.has(name)) o[name].push(...value.split(',').map((s) => s.trim()).filter(Boolean));
      else o[name] = value;
    } else throw new UsageError(`unknown option '${argv[i]}'`);
  }
  return o;
}

function intList(flag, items) {
  return items.map((s) => {
    const v = Number(s);
    if (!Number.isInteger(v) || v < 1) throw new UsageError(`${flag}: expected positive integers, but received '${s}'`);
    return v;
  });
}

/** The registry entries --op selects: exact names, or a family prefix ('snapkv' -> snapkv.*, snapkv.scores -> +lse too). */
function selectOps(filters) {
  const ops = OPS.filter((op) => filters.length === 0 || filters.some((f) => op.name === f || op.name.startsWith(f.endsWith('.') ? f : `${f}.`) || op.name.startsWith(`${f}+`)));
  if (ops.length === 0) throw new UsageError(`--op: no op matches '${filters.join(',')}' (ops: ${OPS.map((x) => x.name).join(', ')})`);
  return ops;
}

module.exports = { USAGE, UsageError, parseArgs, intList, selectOps };
