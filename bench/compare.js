/**
 * How bench --check judges an output: NaN/Inf first, then an element-wise tolerance; selections
 * are accepted when they are a valid top-k of the float64 scores up to the tolerance (near-ties
 * may fall either way); gathered rows must equal the cache rows at the returned positions bit for
 * bit. Each comparison returns { ok, detail }.
 */
'use strict';

// f32 accumulation against float64: softmax sums over a few hundred keys, dot products of 128.
const TOL = Object.freeze({ scores: { rtol: 1e-3, atol: 1e-6 }, norms: { rtol: 1e-4, atol: 1e-6 }, accumulate: { rtol: 1e-3, atol: 1e-6 } });

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

module.exports = { TOL, compareNumeric, compareExact, compareSelection, compareGathered, all };
