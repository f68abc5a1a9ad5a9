/**
 * Head-adaptive vs uniform budgets on a synthetic layer (docs/ALGORITHMS.md "Adaptive budgets:
 * quality"). No model weights are reachable here, so the cache is made up: 8 KV heads whose
 * attention differs in concentration, from a handful of strong keys to none at all.
 *
 * Each head h has a direction u_h. Keys are N(0, 1/D) noise; head h's m_h "strong" keys get
 * + beta_h u_h, and its queries (a SnapKV observation window of W and Q held-out queries after
 * it) are gamma_h u_h + noise. Both selections score with SnapKV's votes (softmax rows summed
 * over the window: comparable across heads) and keep the window:
 *   uniform   every head keeps C tokens (the top C - W votes plus the window);
 *   adaptive  adaptive.select with budget H * C, window W, minPerHead = 20% of C (kvpress's
 *             alpha_safeguard).
 * Reported: per head, the fraction of each held-out query's softmax mass (over all N keys) that
 * falls on the kept keys, averaged over the Q queries; and the mean over heads.
 *
 *   npm run build:ts && node bench/adaptive_quality.js [--seed 1] [--markdown]
 */
'use strict';

const path = require('node:path');
const { Tensor, snapkv, adaptive } = require(path.join(__dirname, '..', 'dist'));

const args = process.argv.slice(2);
const seedArg = args.indexOf('--seed');
let state = seedArg >= 0 ? Number(args[seedArg + 1]) >>> 0 : 1;
const markdown = args.includes('--markdown');

// mulberry32 + Box-Muller: reproducible inputs.
function uniform() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function normal() {
  let u = 0;
  while (u === 0) u = uniform();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
}

const N = 4096; // cached tokens, window included
const D = 64;
const W = 32; // observation window (the last W tokens; their queries score the rest)
const Q = 64; // held-out queries
// [strong keys m_h, key boost beta_h, query strength gamma_h]: 2 heads with a handful of strong
// keys, 2 with a few dozen, 4 diffuse ones.
const HEADS = [
  [6, 3.0, 3.0],
  [10, 3.0, 3.0],
  [48, 2.0, 2.5],
  [96, 2.0, 2.5],
  [0, 0, 0.8],
  [0, 0, 0.8],
  [0, 0, 0.5],
  [0, 0, 0.5],
];
const H = HEADS.length;
const LEVELS = [64, 128, 256]; // average tokens per head (1.6%, 3.1%, 6.3% of N)

function unit() {
  const v = Float64Array.from({ length: D }, normal);
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

// keys [1, H, N, D], window queries [1, H, W, D], held-out queries [H][Q][D]
const keys = new Float32Array(H * N * D);
const window = new Float32Array(H * W * D);
const heldOut = [];
for (let h = 0; h < H; h++) {
  const [m, beta, gamma] = HEADS[h];
  const u = unit();
  const strong = new Set();
  while (strong.size < m) strong.add(Math.floor(uniform() * (N - W)));
  for (let j = 0; j < N; j++) {
    for (let d = 0; d < D; d++) keys[(h * N + j) * D + d] = normal() / Math.sqrt(D) * 4 + (strong.has(j) ? beta * u[d] * Math.sqrt(D) / 4 : 0);
  }
  const query = () => Float64Array.from({ length: D }, (_, d) => gamma * u[d] * Math.sqrt(D) / 2 + normal() * 0.5);
  for (let r = 0; r < W; r++) window.set(query(), (h * W + r) * D);
  heldOut.push(Array.from({ length: Q }, query));
}

// Each held-out query's softmax over all N keys, per head.
const probs = heldOut.map((qs, h) =>
  qs.map((q) => {
    const l = new Float64Array(N);
    let max = -Infinity;
    for (let j = 0; j < N; j++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[d] * keys[(h * N + j) * D + d];
      l[j] = dot / Math.sqrt(D);
      max = Math.max(max, l[j]);
    }
    let s = 0;
    for (let j = 0; j < N; j++) s += (l[j] = Math.exp(l[j] - max));
    return l.map((x) => x / s);
  }),
);

const kT = Tensor.from(keys, { shape: [1, H, N, D], device: 'cpu' });
const qT = Tensor.from(window, { shape: [1, H, W, D], device: 'cpu' });
const votes = snapkv.scores(qT, kT, { window: W }).toArray(); // [1, H, N - W]
// Scores over all N (the window's entries are lifted by the window rule anyway).
const scores = new Float32Array(H * N);
for (let h = 0; h < H; h++) scores.set(votes.subarray(h * (N - W), (h + 1) * (N - W)), h * N);
const sT = Tensor.from(scores, { shape: [1, H, N], device: 'cpu' });

function keptMass(kept) {
  return kept.map((set, h) => probs[h].reduce((acc, p) => acc + [...set].reduce((a, j) => a + p[j], 0), 0) / Q);
}

function uniformKept(C) {
  return Array.from({ length: H }, (_, h) => {
    const order = Array.from({ length: N - W }, (_, j) => j).sort((a, b) => scores[h * N + b] - scores[h * N + a] || a - b);
    return new Set([...order.slice(0, C - W), ...Array.from({ length: W }, (_, i) => N - W + i)]);
  });
}

function adaptiveKept(C) {
  const sel = adaptive.select(sT, { budget: H * C, window: W, minPerHead: Math.floor(0.2 * C) });
  const pos = sel.positions.toArray();
  const ind = sel.indptr.toArray();
  sel.positions.dispose();
  sel.indptr.dispose();
  return Array.from({ length: H }, (_, h) => new Set(pos.subarray(ind[h], ind[h + 1])));
}

const rows = [];
for (const C of LEVELS) {
  const u = keptMass(uniformKept(C));
  const aKept = adaptiveKept(C);
  const a = keptMass(aKept);
  rows.push({ C, u, a, sizes: aKept.map((s) => s.size) });
}

const pct = (x) => (100 * x).toFixed(1);
const mean = (v) => v.reduce((x, y) => x + y, 0) / v.length;
const min = (v) => Math.min(...v);
if (markdown) {
  console.log(`| tokens / head (avg) | budget | selection | ${HEADS.map((_, h) => `head ${h}`).join(' | ')} | mean | worst head |`);
  console.log(`|---|---|---|${HEADS.map(() => '---').join('|')}|---|---|`);
  for (const r of rows) {
    console.log(`| ${r.C} | ${H * r.C} | uniform | ${r.u.map(pct).join(' | ')} | ${pct(mean(r.u))} | ${pct(min(r.u))} |`);
    console.log(`| | | adaptive | ${r.a.map(pct).join(' | ')} | **${pct(mean(r.a))}** | ${pct(min(r.a))} |`);
    console.log(`| | | adaptive tokens | ${r.sizes.join(' | ')} | | |`);
  }
} else {
  for (const r of rows) {
    console.log(`C=${r.C}: uniform mean ${pct(mean(r.u))}% (worst ${pct(min(r.u))}%), adaptive mean ${pct(mean(r.a))}% (worst ${pct(min(r.a))}%); adaptive tokens per head ${r.sizes.join(' ')}`);
  }
}
for (const t of [kT, qT, sT]) t.dispose();
