/**
 * Float64 JavaScript computations of the ops, for bench --check. Dims are { B, Hq, Hkv, N, W, D };
 * arrays are bhsd, row-major.
 */
'use strict';

/** SnapKV votes (ALGORITHMS.md §1, groupReduce 'mean') and each window row's log-sum-exp. */
function refScores(q, k, c) {
  const { B, Hq, Hkv, N, W, D } = c;
  const G = Hq / Hkv;
  const P = N - W;
  const scale = 1 / Math.sqrt(D);
  const perHead = new Float64Array(B * Hq * P);
  const lse = new Float64Array(B * Hq * W);
  const logits = new Float64Array(N);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / G);
      for (let r = 0; r < W; r++) {
        const qo = ((b * Hq + h) * W + r) * D;
        const L = N - W + r + 1; // causal: query at N-W+r sees keys 0 .. N-W+r
        let m = -Infinity;
        for (let j = 0; j < L; j++) {
          const ko = ((b * Hkv + kh) * N + j) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d] * k[ko + d];
          logits[j] = dot * scale;
          if (logits[j] > m) m = logits[j];
        }
        let s = 0;
        for (let j = 0; j < L; j++) s += Math.exp(logits[j] - m);
        lse[(b * Hq + h) * W + r] = m + Math.log(s);
        const base = (b * Hq + h) * P;
        for (let j = 0; j < P; j++) perHead[base + j] += Math.exp(logits[j] - m) / s;
      }
    }
  }
  const votes = new Float64Array(B * Hkv * P);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const o = (b * Hkv + Math.floor(h / G)) * P;
      const i = (b * Hq + h) * P;
      for (let j = 0; j < P; j++) votes[o + j] += perHead[i + j] / G;
    }
  }
  return { votes, lse };
}

/** 1-D pooling, stride 1, padding K/2: avg divides by K everywhere, max never picks padding. */
function refPool(x, R, M, K, kind) {
  const out = new Float64Array(R * M);
  const h = (K - 1) / 2;
  for (let r = 0; r < R; r++) {
    for (let j = 0; j < M; j++) {
      let acc = kind === 'max' ? -Infinity : 0;
      for (let i = Math.max(0, j - h); i <= Math.min(M - 1, j + h); i++) {
        acc = kind === 'max' ? Math.max(acc, x[r * M + i]) : acc + x[r * M + i];
      }
      out[r * M + j] = kind === 'max' ? acc : acc / K;
    }
  }
  return out;
}

/** The exact top-k of each row (ties to the lower position), positions ascending. */
function refTopk(x, R, M, k) {
  const out = new Int32Array(R * k);
  const idx = new Array(M);
  for (let r = 0; r < R; r++) {
    for (let j = 0; j < M; j++) idx[j] = j;
    idx.sort((a, b) => x[r * M + b] - x[r * M + a] || a - b);
    const sel = idx.slice(0, k).sort((a, b) => a - b);
    out.set(sel, r * k);
  }
  return out;
}

function refNorms(k, c) {
  const rows = c.B * c.Hkv * c.N;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let d = 0; d < c.D; d++) s += k[r * c.D + d] ** 2;
    out[r] = Math.sqrt(s);
  }
  return out;
}

/** One decode step (T = 1: the query sees every key): per query head, softmax((q.k/sqrt(D) + g)/tau). */
function refDecodeAttention(q, k, c, noise, tau) {
  const { B, Hq, Hkv, N, D } = c;
  const G = Hq / Hkv;
  const scale = 1 / Math.sqrt(D);
  const out = new Float64Array(B * Hq * N);
  const z = new Float64Array(N);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / G);
      const qo = (b * Hq + h) * D;
      let m = -Infinity;
      for (let j = 0; j < N; j++) {
        const ko = ((b * Hkv + kh) * N + j) * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qo + d] * k[ko + d];
        z[j] = (dot * scale + (noise ? noise[(b * Hq + h) * N + j] : 0)) / tau;
        if (z[j] > m) m = z[j];
      }
      let s = 0;
      for (let j = 0; j < N; j++) s += Math.exp(z[j] - m);
      for (let j = 0; j < N; j++) out[(b * Hq + h) * N + j] = Math.exp(z[j] - m) / s;
    }
  }
  return out;
}

module.exports = { refScores, refPool, refTopk, refNorms, refDecodeAttention };
