/**
 * What kvsift bench prints and writes: progress on stderr, the results table, the PyTorch table
 * and the JSON file.
 */
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const shapes = require('./shapes');
const { OPS } = require('./ops');

const ROOT = path.join(__dirname, '..');

function fmtTime(us) {
  if (!Number.isFinite(us)) return '-';
  if (us < 1000) return `${us.toPrecision(3)} us`;
  if (us < 1e6) return `${(us / 1000).toPrecision(3)} ms`;
  return `${(us / 1e6).toPrecision(3)} s`;
}

function fmtBytes(b) {
  if (b < 1e6) return `${(b / 1e3).toPrecision(3)} kB`;
  if (b < 1e9) return `${(b / 1e6).toPrecision(3)} MB`;
  return `${(b / 1e9).toPrecision(3)} GB`;
}

function fmtMiB(b) {
  if (b === null || b === undefined) return '-';
  return (b / 2 ** 20).toFixed(b < 10 * 2 ** 20 ? 2 : 1);
}

function table(headers, rows, alignRight) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => (alignRight[i] ? String(c).padStart(w[i]) : String(c).padEnd(w[i]))).join('  ').trimEnd();
  return [line(headers), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n');
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return null;
  }
}

class Progress {
  constructor(total) {
    this.total = total;
    this.done = 0;
    this.tty = process.stderr.isTTY === true;
    this.started = process.hrtime.bigint();
  }
  elapsed() {
    return Number(process.hrtime.bigint() - this.started) / 1e9;
  }
  show(text) {
    const line = `[${String(this.done).padStart(String(this.total).length)}/${this.total} ${this.elapsed().toFixed(0)}s] ${text}`;
    if (this.tty) process.stderr.write(`\r\x1b[2K${line}`);
    else process.stderr.write(`${line}\n`);
  }
  note(text) {
    if (this.tty) process.stderr.write('\r\x1b[2K');
    process.stderr.write(`${text}\n`);
  }
  end() {
    if (this.tty) process.stderr.write('\r\x1b[2K');
  }
}

function meta(kv, device, info, dtype, o, timerOpts) {
  return {
    date: new Date().toISOString(),
    commit: gitCommit(),
    device,
    deviceInfo: info,
    buildInfo: kv.buildInfo,
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    dtype,
    capacity: shapes.CAPACITY,
    kernel: shapes.KERNEL,
    pooling: shapes.POOLING,
    quick: o.quick,
    timing: timerOpts,
  };
}

function writeJson(file, data) {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(data, null, 1)}\n`);
}

function formatTable(results) {
  const headers = ['op', 'shape', 'N', 'B', 'W', 'median', 'p10', 'p90', 'floor', 'GB/s', 'copy GB/s', 'of copy', 'peak MiB', 'CUDA graph'];
  const right = [false, false, true, true, true, true, true, true, true, true, true, true, true, false];
  const rows = results.map((r) => {
    const id = [r.op, r.model, shapes.formatN(r.n), r.batch, r.window ?? '-'];
    if (r.error) return [...id, 'failed', '', '', fmtBytes(r.bytes), '', '', '', '', r.error.slice(0, 60)];
    return [
      ...id,
      fmtTime(r.medianUs),
      fmtTime(r.p10Us),
      fmtTime(r.p90Us),
      fmtBytes(r.bytes),
      r.gbps.toFixed(r.gbps < 10 ? 2 : 1),
      r.copyGbps.toFixed(r.copyGbps < 10 ? 2 : 1),
      `${(100 * r.copyFraction).toFixed(0)}%`,
      fmtMiB(r.peakBytes),
      r.graph,
    ];
  });
  return table(headers, rows, right);
}

function formatTorch(results, torch) {
  const headers = ['kvsift op', 'PyTorch', 'shape', 'N', 'B', 'W', 'kvsift', 'PyTorch', 'speedup', 'kvsift peak MiB', 'PyTorch peak MiB'];
  const right = [false, false, false, true, true, true, true, true, true, true, true];
  const rows = [];
  for (const r of results) {
    const op = OPS.find((x) => x.name === r.op);
    const name = op && op.torch;
    if (!name || r.error) continue;
    const t = torch.results.find((x) => x.op === name && x.model === r.model && x.n === r.n && x.b === r.batch && (x.w ?? null) === (r.window ?? null));
    if (!t) continue;
    rows.push([r.op, name, r.model, shapes.formatN(r.n), r.batch, r.window ?? '-', fmtTime(r.medianUs), t.error ? t.error : fmtTime(t.medianUs), t.error ? '-' : `${(t.medianUs / r.medianUs).toFixed(1)}x`, fmtMiB(r.peakBytes), t.error ? '-' : fmtMiB(t.peakBytes)]);
  }
  const title = `PyTorch ${torch.torch || ''} (${torch.device || ''}), same inputs, torch.cuda.Event medians of ${torch.reps || '?'} L2-flushed runs:`;
  return `${title}\n${table(headers, rows, right)}`;
}

module.exports = { Progress, fmtTime, fmtMiB, meta, writeJson, formatTable, formatTorch };
