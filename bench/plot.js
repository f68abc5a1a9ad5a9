#!/usr/bin/env node
/**
 * Draws achieved GB/s against N, one panel per op, one line per (shape, batch, window), from a
 * `kvsift bench --json FILE` results file. The dashed grey line of each panel is the same-size
 * device-to-device copy measured in the same run (its median over the panel's series). No
 * dependencies: writes SVG text.
 *
 *   node bench/plot.js results.json [out.svg]     (default out: results.svg beside the input)
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#393b79', '#637939'];
const PANEL_W = 300;
const PANEL_H = 210;
const MARGIN = { left: 52, right: 12, top: 26, bottom: 34 };
const COLS = 3;

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function formatN(n) {
  return n % 1024 === 0 ? `${n / 1024}k` : String(n);
}

/** A "nice" upper bound and tick step for 0..max. */
function niceAxis(max) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  return { top: Math.ceil(max / step) * step, step };
}

function seriesKey(r) {
  return `${r.model} B=${r.batch}${r.window === null || r.window === undefined ? '' : ` W=${r.window}`}`;
}

function plot(data) {
  const results = (data.results || []).filter((r) => !r.error);
  if (results.length === 0) throw new Error('no results in the file');
  const ops = [...new Set(results.map((r) => r.op))];
  const keys = [...new Set(results.map(seriesKey))];
  const color = new Map(keys.map((k, i) => [k, PALETTE[i % PALETTE.length]]));
  const rows = Math.ceil(ops.length / COLS);
  const legendRows = Math.ceil(keys.length / 3);
  const width = COLS * PANEL_W;
  const titleH = 44;
  const height = titleH + rows * PANEL_H + 24 + legendRows * 18 + 10;
  const m = data.meta || {};
  const dev = m.deviceInfo ? `${m.device} (${m.deviceInfo.model})` : m.device || '';
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">kvsift: achieved GB/s vs N (bytes floor / median time)</text>`);
  out.push(`<text x="${width / 2}" y="34" text-anchor="middle" fill="#555">${esc([dev, m.dtype, m.commit ? `commit ${m.commit}` : '', m.date ? m.date.slice(0, 10) : ''].filter(Boolean).join(' · '))}; dashed: same-size device copy</text>`);
  const allN = [...new Set(results.map((r) => r.n))].sort((a, b) => a - b);
  const lx = (n) => Math.log2(n);
  const xmin = lx(allN[0]);
  const xmax = lx(allN[allN.length - 1]);
  ops.forEach((op, idx) => {
    const ox = (idx % COLS) * PANEL_W;
    const oy = titleH + Math.floor(idx / COLS) * PANEL_H;
    const pw = PANEL_W - MARGIN.left - MARGIN.right;
    const ph = PANEL_H - MARGIN.top - MARGIN.bottom;
    const rs = results.filter((r) => r.op === op && !r.error);
    const ymax = Math.max(...rs.map((r) => Math.max(r.gbps, r.copyGbps || 0)));
    const { top, step } = niceAxis(ymax * 1.05);
    const X = (n) => ox + MARGIN.left + (xmax === xmin ? pw / 2 : ((lx(n) - xmin) / (xmax - xmin)) * pw);
    const Y = (g) => oy + MARGIN.top + ph - (g / top) * ph;
    out.push(`<g>`);
    out.push(`<text x="${ox + MARGIN.left + pw / 2}" y="${oy + 16}" text-anchor="middle" font-weight="bold">${esc(op)}</text>`);
    out.push(`<rect x="${ox + MARGIN.left}" y="${oy + MARGIN.top}" width="${pw}" height="${ph}" fill="none" stroke="#bbb"/>`);
    for (let g = 0; g <= top + 1e-9; g += step) {
      const y = Y(g);
      out.push(`<line x1="${ox + MARGIN.left}" x2="${ox + MARGIN.left + pw}" y1="${y}" y2="${y}" stroke="#eee"/>`);
      out.push(`<text x="${ox + MARGIN.left - 4}" y="${y + 3}" text-anchor="end" fill="#444">${+g.toPrecision(3)}</text>`);
    }
    for (const n of allN) {
      out.push(`<text x="${X(n)}" y="${oy + MARGIN.top + ph + 13}" text-anchor="middle" fill="#444">${formatN(n)}</text>`);
    }
    out.push(`<text x="${ox + MARGIN.left + pw / 2}" y="${oy + PANEL_H - 6}" text-anchor="middle" fill="#666">N (log scale)</text>`);
    out.push(`<text transform="translate(${ox + 12} ${oy + MARGIN.top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#666">GB/s</text>`);
    // the copy reference: per N, the median of the copies measured for this op's series
    const copyPts = [];
    for (const n of allN) {
      const c = rs.filter((r) => r.n === n && r.copyGbps).map((r) => r.copyGbps).sort((a, b) => a - b);
      if (c.length) copyPts.push([n, c[Math.floor(c.length / 2)]]);
    }
    if (copyPts.length) {
      out.push(`<polyline fill="none" stroke="#999" stroke-dasharray="4 3" stroke-width="1.2" points="${copyPts.map(([n, g]) => `${X(n).toFixed(1)},${Y(g).toFixed(1)}`).join(' ')}"/>`);
    }
    for (const key of keys) {
      const pts = rs.filter((r) => seriesKey(r) === key).sort((a, b) => a.n - b.n);
      if (!pts.length) continue;
      const col = color.get(key);
      const coords = pts.map((r) => `${X(r.n).toFixed(1)},${Y(r.gbps).toFixed(1)}`);
      if (pts.length > 1) out.push(`<polyline fill="none" stroke="${col}" stroke-width="1.6" points="${coords.join(' ')}"/>`);
      for (const r of pts) {
        out.push(`<circle cx="${X(r.n).toFixed(1)}" cy="${Y(r.gbps).toFixed(1)}" r="2.6" fill="${col}"><title>${esc(`${op} ${key} N=${formatN(r.n)}: ${r.gbps.toFixed(2)} GB/s, ${r.medianUs.toFixed(1)} us`)}</title></circle>`);
      }
    }
    out.push(`</g>`);
  });
  const ly = titleH + rows * PANEL_H + 16;
  keys.forEach((key, i) => {
    const x = 20 + (i % 3) * (width / 3);
    const y = ly + Math.floor(i / 3) * 18;
    out.push(`<line x1="${x}" x2="${x + 22}" y1="${y}" y2="${y}" stroke="${color.get(key)}" stroke-width="2"/>`);
    out.push(`<circle cx="${x + 11}" cy="${y}" r="2.6" fill="${color.get(key)}"/>`);
    out.push(`<text x="${x + 28}" y="${y + 4}">${esc(key)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function main(argv) {
  if (argv.length < 1 || argv[0] === '-h' || argv[0] === '--help') {
    process.stdout.write('usage: node bench/plot.js results.json [out.svg]\n');
    return argv.length < 1 ? 2 : 0;
  }
  const input = argv[0];
  const output = argv[1] || path.join(path.dirname(input), `${path.basename(input, path.extname(input))}.svg`);
  const svg = plot(JSON.parse(fs.readFileSync(input, 'utf8')));
  fs.writeFileSync(output, svg);
  process.stderr.write(`wrote ${output}\n`);
  return 0;
}

module.exports = { plot };

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`plot: ${e.message}\n`);
    process.exitCode = 1;
  }
}
