/**
 * bench --check: before anything is timed, every selected op runs on a small odd shape
 * (shapes.js CHECK) and its output is compared with
 *   - a float64 JavaScript computation of the op (always), and
 *   - the CPU backend on the same inputs (when the bench device is CUDA),
 * so a fast but wrong kernel never makes it into the table. NaN/Inf are checked first, then an
 * element-wise tolerance; selections are accepted when they are a valid top-k of the float64
 * scores up to the tolerance (near-ties may fall either way), and gathered rows must equal the
 * cache rows at the returned positions bit for bit.
 */
'use strict';

const { hostValues, randomPositions, SEEDS } = require('./inputs');
const { CHECK, KERNEL, POOLING } = require('./shapes');

// f32 accumulation against float64: softmax sums over a few hundred keys, dot products of 128.
const TOL = { scores: { rtol: 1e-3, atol: 1e-6 }, norms: { rtol: 1e-4, atol: 1e-6 }, accumulate: { rtol: 1e-3, atol: 1e-6 } };
const KEYFORMER = { tau: [1.5, 1.6], seed: 42, step: [3, 4] };

// ---------------------------------------------------------------- float64 references

/** SnapKV votes (ALGORITHMS.md §1, groupReduce 'mean') and each window row's log-sum-exp. */
function refScores(q, k, c) {
  const { b: B, hq: Hq, hkv: Hkv, n: N, window: W, d: D } = c;
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
  const rows = c.b * c.hkv * c.n;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let d = 0; d < c.d; d++) s += k[r * c.d + d] ** 2;
    out[r] = Math.sqrt(s);
  }
  return out;
}

/** One decode step (T = 1: the query sees every key): per query head, softmax((q.k/sqrt(D) + g)/tau). */
function refDecodeAttention(q, k, c, noise, tau) {
  const { b: B, hq: Hq, hkv: Hkv, n: N, d: D } = c;
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

// ---------------------------------------------------------------- comparisons

/** NaN/Inf first, then |a - ref| <= atol + rtol |ref| everywhere. */
function compareNumeric(what, a, ref, { rtol, atol }) {
  if (a.length !== ref.length) return { ok: false, detail: `${what}: ${a.length} values, expected ${ref.length}` };
  let maxErr = 0;
  let worst = -1;
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return { ok: false, detail: `${what}: non-finite value ${a[i]} at ${i}` };
    const err = Math.abs(a[i] - ref[i]);
    num += err * err;
    den += ref[i] * ref[i];
    if (err > atol + rtol * Math.abs(ref[i]) && (worst < 0 || err > maxErr)) worst = i;
    if (err > maxErr) maxErr = err;
  }
  const nmse = den > 0 ? num / den : num;
  if (worst >= 0) {
    return { ok: false, detail: `${what}: ${a[worst]} at ${worst}, expected ${ref[worst]} (max |err| ${maxErr.toExponential(2)}, nmse ${nmse.toExponential(2)})` };
  }
  return { ok: true, detail: `${what}: max |err| ${maxErr.toExponential(2)}, nmse ${nmse.toExponential(2)}` };
}

function compareExact(what, a, ref) {
  if (a.length !== ref.length) return { ok: false, detail: `${what}: ${a.length} values, expected ${ref.length}` };
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], ref[i])) return { ok: false, detail: `${what}: ${a[i]} at ${i}, expected ${ref[i]}` };
  }
  return { ok: true, detail: `${what}: exact` };
}

/**
 * Each row of `pos` (k positions out of M) must be strictly ascending, in range, and a top-k of
 * `scores` up to `tol`: every chosen score >= t - tol and every other score <= t + tol, where t is
 * the exact k-th largest.
 */
function compareSelection(what, pos, scores, R, M, k, rowStride = k, rtol = 1e-4) {
  const sorted = new Float64Array(M);
  for (let r = 0; r < R; r++) {
    const row = scores.subarray(r * M, (r + 1) * M);
    sorted.set(row);
    sorted.sort();
    const t = sorted[M - k];
    const tol = rtol * Math.max(Math.abs(t), Math.abs(sorted[M - 1])) + 1e-9;
    const chosen = new Uint8Array(M);
    for (let i = 0; i < k; i++) {
      const p = pos[r * rowStride + i];
      if (!(p >= 0 && p < M)) return { ok: false, detail: `${what}: row ${r} position ${p} out of [0, ${M})` };
      if (i > 0 && p <= pos[r * rowStride + i - 1]) return { ok: false, detail: `${what}: row ${r} not strictly ascending at ${i}` };
      chosen[p] = 1;
      if (row[p] < t - tol) return { ok: false, detail: `${what}: row ${r} keeps ${p} (score ${row[p]}) below the k-th score ${t}` };
    }
    for (let j = 0; j < M; j++) {
      if (!chosen[j] && row[j] > t + tol) return { ok: false, detail: `${what}: row ${r} drops ${j} (score ${row[j]}) above the k-th score ${t}` };
    }
  }
  return { ok: true, detail: `${what}: a valid top-${k} of every row` };
}

/** out rows [B, H, K, D] must equal cache [B, H / group, N, D] at positions [B, H, K] (bhsd). */
function compareGathered(what, out, cache, pos, B, H, K, N, D, group = 1) {
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < K; i++) {
        const p = pos[(b * H + h) * K + i];
        const src = ((b * (H / group) + Math.floor(h / group)) * N + p) * D;
        const dst = ((b * H + h) * K + i) * D;
        for (let d = 0; d < D; d++) {
          if (!Object.is(out[dst + d], cache[src + d])) return { ok: false, detail: `${what}: row (${b}, ${h}, ${i}) differs from the cache row at position ${p}` };
        }
      }
    }
  }
  return { ok: true, detail: `${what}: rows exact` };
}

function all(results) {
  const bad = results.find((r) => !r.ok);
  return bad ? { ok: false, detail: bad.detail } : { ok: true, detail: results.map((r) => r.detail).join('; ') };
}

// ---------------------------------------------------------------- the checks

/**
 * Runs the check of every op in `ops` (names) on `device` with K/V/Q in `dtype`. Returns
 * [{ op, ok, detail }] and prints PASS/FAIL lines through `print`.
 */
function runCheck(kv, device, dtype, ops, print) {
  const c = { ...CHECK };
  const { b: B, hq: Hq, hkv: Hkv, n: N, d: D, window: W, capacity: C } = c;
  const P = N - W;
  const G = Hq / Hkv;
  const onCuda = device !== 'cpu';
  const live = [];
  const make = (data, shape, dt = dtype) => {
    const t = kv.Tensor.from(data, { shape, dtype: dt, device });
    live.push(t);
    return t;
  };
  const track = (x) => {
    for (const t of Array.isArray(x) ? x : x && x.keys ? [x.keys, x.values, x.positions] : [x]) if (t) live.push(t);
    return x;
  };
  // Q is scaled so each window row's softmax is peaked enough that a wrong mask shows.
  const q = make(hostValues(B * Hq * W * D, SEEDS.queriesWindow, 4), [B, Hq, W, D]);
  const k = make(hostValues(B * Hkv * N * D, SEEDS.keys), [B, Hkv, N, D]);
  const v = make(hostValues(B * Hkv * N * D, SEEDS.values), [B, Hkv, N, D]);
  const qd = make(hostValues(B * Hq * D, SEEDS.queriesDecode, 4), [B, Hq, 1, D]);
  // the references read the values as stored (rounded to the dtype)
  const qa = q.toArray();
  const ka = k.toArray();
  const va = v.toArray();
  const qda = qd.toArray();
  const onCpu = (t) => track(t.to('cpu'));
  const cpuInputs = onCuda ? { q: onCpu(q), k: onCpu(k), v: onCpu(v), qd: onCpu(qd) } : null;

  let scoresRef;
  const getScoresRef = () => (scoresRef ??= refScores(qa, ka, c));
  const f32 = (arr) => Float32Array.from(arr);

  const checks = {
    'snapkv.scores': (run) => {
      const out = run((x) => track(kv.snapkv.scores(x.q, x.k, { window: W })));
      return out.map(([who, t]) => compareNumeric(`${who} votes`, t.toArray(), getScoresRef().votes, TOL.scores));
    },
    'snapkv.scores+lse': (run) => {
      const lse = f32(getScoresRef().lse);
      const out = run((x, dev) => track(kv.snapkv.scores(x.q, x.k, { window: W, lse: track(kv.Tensor.from(lse, { shape: [B, Hq, W], device: dev })) })));
      return out.map(([who, t]) => compareNumeric(`${who} votes`, t.toArray(), getScoresRef().votes, TOL.scores));
    },
    'snapkv.pool': (run) => {
      const votes = f32(getScoresRef().votes);
      const res = [];
      for (const kind of [POOLING, POOLING === 'max' ? 'avg' : 'max']) {
        const ref = refPool(votes, B * Hkv, P, KERNEL, kind);
        const out = run((x, dev) => track(kv.snapkv.pool(track(kv.Tensor.from(votes, { shape: [B, Hkv, P], device: dev })), { kernel: KERNEL, kind })));
        for (const [who, t] of out) {
          res.push(kind === 'max' ? compareExact(`${who} ${kind}`, t.toArray(), f32(ref)) : compareNumeric(`${who} ${kind}`, t.toArray(), ref, { rtol: 1e-6, atol: 1e-9 }));
        }
      }
      return res;
    },
    topk: (run) => {
      const pooled = f32(refPool(f32(getScoresRef().votes), B * Hkv, P, KERNEL, POOLING));
      const kk = C - W;
      const ref = refTopk(pooled, B * Hkv, P, kk);
      const out = run((x, dev) => track(kv.topk(track(kv.Tensor.from(pooled, { shape: [B, Hkv, P], device: dev })), kk)));
      return out.map(([who, t]) => compareExact(`${who} positions`, t.toArray(), ref));
    },
    gather: (run) => {
      const pos = randomPositions(B * Hkv, N, C, SEEDS.positions);
      const out = run((x, dev) => track(kv.gather(x.k, track(kv.Tensor.from(pos, { shape: [B, Hkv, C], device: dev })))));
      return out.map(([who, t]) => compareGathered(`${who} rows`, t.toArray(), ka, pos, B, Hkv, C, N, D));
    },
    'snapkv.compress': (run) => {
      const pooled = refPool(getScoresRef().votes, B * Hkv, P, KERNEL, POOLING);
      const out = run((x) => track(kv.snapkv.compress(x.q, x.k, x.v, { window: W, capacity: C, kernel: KERNEL, pooling: POOLING })));
      const res = [];
      for (const [who, r] of out) {
        const pos = r.positions.toArray();
        res.push(compareSelection(`${who} selection`, pos, pooled, B * Hkv, P, C - W, C));
        let windowOk = true;
        for (let row = 0; row < B * Hkv; row++) for (let i = 0; i < W; i++) if (pos[row * C + C - W + i] !== P + i) windowOk = false;
        res.push({ ok: windowOk, detail: windowOk ? `${who} window kept` : `${who}: the last ${W} positions of a row are not ${P}..${N - 1}` });
        res.push(compareGathered(`${who} keys`, r.keys.toArray(), ka, pos, B, Hkv, C, N, D));
        res.push(compareGathered(`${who} values`, r.values.toArray(), va, pos, B, Hkv, C, N, D));
      }
      return res;
    },
    'l2.norms': (run) => {
      const ref = refNorms(ka, c);
      return run((x) => track(kv.l2.norms(x.k))).map(([who, t]) => compareNumeric(`${who} norms`, t.toArray(), ref, TOL.norms));
    },
    'l2.compress': (run) => {
      const neg = refNorms(ka, c).map((x) => -x);
      const res = [];
      for (const [who, r] of run((x) => track(kv.l2.compress(x.k, x.v, { capacity: C })))) {
        const pos = r.positions.toArray();
        res.push(compareSelection(`${who} selection`, pos, neg, B * Hkv, N, C));
        res.push(compareGathered(`${who} keys`, r.keys.toArray(), ka, pos, B, Hkv, C, N, D));
        res.push(compareGathered(`${who} values`, r.values.toArray(), va, pos, B, Hkv, C, N, D));
      }
      return res;
    },
    'keyformer.accumulate': (run) => {
      // two steps, so '+=' is checked too; the noise is the op's own Philox draw (keyformer.gumbel)
      const ref = new Float64Array(B * Hkv * N);
      for (let s = 0; s < 2; s++) {
        const g = track(kv.keyformer.gumbel([B, Hq, 1, N], { seed: KEYFORMER.seed, step: KEYFORMER.step[s], device: 'cpu' })).toArray();
        const f = refDecodeAttention(qda, ka, c, g, KEYFORMER.tau[s]);
        for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) for (let j = 0; j < N; j++) ref[(b * Hkv + Math.floor(h / G)) * N + j] += f[(b * Hq + h) * N + j];
      }
      const out = run((x, dev) => {
        const scores = track(kv.Tensor.zeros([B, Hkv, N], 'f32', dev));
        for (let s = 0; s < 2; s++) kv.keyformer.accumulate(x.qd, x.k, scores, { tau: KEYFORMER.tau[s], seed: KEYFORMER.seed, step: KEYFORMER.step[s] });
        return scores;
      });
      return out.map(([who, t]) => compareNumeric(`${who} scores`, t.toArray(), ref, TOL.accumulate));
    },
    'tova.select': (run) => {
      const f = refDecodeAttention(qda, ka, c, null, 1);
      const layer = new Float64Array(B * N);
      for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) for (let j = 0; j < N; j++) layer[b * N + j] += f[(b * Hq + h) * N + j] / Hq;
      return run((x) => track(kv.tova.select(x.qd, x.k, { capacity: C }))).map(([who, t]) => compareSelection(`${who} selection`, t.toArray(), layer, B, N, C));
    },
    copy: (run) => run((x, dev) => track(x.k.to(dev))).map(([who, t]) => compareExact(`${who} copy`, t.toArray(), ka)),
  };

  const results = [];
  try {
    for (const op of ops) {
      const check = checks[op];
      if (!check) continue;
      // run(fn) -> [[who, output]]: the bench device's output, then the CPU backend's
      const run = (fn) => {
        const out = [[device, fn({ q, k, v, qd }, device)]];
        if (cpuInputs) out.push(['cpu backend', fn(cpuInputs, 'cpu')]);
        return out;
      };
      let r;
      try {
        r = all(check(run));
        if (r.ok && onCuda && ['snapkv.scores', 'snapkv.scores+lse', 'l2.norms', 'keyformer.accumulate'].includes(op)) {
          // numeric outputs: the device also against the CPU backend directly
          const both = direct[op](kv, { q, k, qd }, cpuInputs, { W, B, Hkv, N, track });
          r = all([r, compareNumeric(`${device} vs cpu backend`, both[0], both[1], TOL[op === 'l2.norms' ? 'norms' : 'scores'])]);
        }
      } catch (e) {
        r = { ok: false, detail: `threw ${e && e.message ? e.message : e}` };
      }
      results.push({ op, ...r });
      print(`check ${op.padEnd(22)} ${r.ok ? 'PASS' : 'FAIL'}  ${r.detail}`);
    }
  } finally {
    for (const t of live) t.dispose();
  }
  return results;
}

/** Device output and CPU-backend output of the numeric ops, as arrays, for a direct comparison. */
const direct = {
  'snapkv.scores': (kv, d, h, o) => [o.track(kv.snapkv.scores(d.q, d.k, { window: o.W })).toArray(), o.track(kv.snapkv.scores(h.q, h.k, { window: o.W })).toArray()],
  'snapkv.scores+lse': (kv, d, h, o) => direct['snapkv.scores'](kv, d, h, o),
  'l2.norms': (kv, d, h, o) => [o.track(kv.l2.norms(d.k)).toArray(), o.track(kv.l2.norms(h.k)).toArray()],
  'keyformer.accumulate': (kv, d, h, o) =>
    [d, h].map((x) => {
      const s = o.track(kv.Tensor.zeros([o.B, o.Hkv, o.N], 'f32', x.k.device));
      kv.keyformer.accumulate(x.qd, x.k, s, { tau: KEYFORMER.tau[0], seed: KEYFORMER.seed, step: KEYFORMER.step[0] });
      return s.toArray();
    }),
};

module.exports = { runCheck, refScores, refPool, refTopk, refNorms, refDecodeAttention, compareNumeric, compareSelection };
