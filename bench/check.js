/**
 * bench --check: every selected op runs on a small odd shape (shapes.js CHECK) and its output is
 * compared with
 *   - a float64 JavaScript computation of the op (always), and
 *   - the CPU backend on the same inputs (when the bench device is CUDA),
 * so a fast but wrong kernel is caught before anyone reads its time. Each op's check is in its
 * registry entry (bench/ops/); this file makes the inputs and the context the checks share.
 */
'use strict';

const { hostValues, SEEDS } = require('./inputs');
const { CHECK } = require('./shapes');
const { snapkvScoresRef } = require('../reference/snapkv');
const { compareNumeric, all } = require('./compare');
const { tensorsOf } = require('./timer');

/**
 * Runs the check of every registry entry in `ops` on `device` with K/V/Q in `dtype`. Returns
 * [{ op, ok, detail }] and prints PASS/FAIL lines through `print`.
 */
function runCheck(kv, device, dtype, ops, print) {
  const { b: B, hq: Hq, hkv: Hkv, n: N, d: D, window: W, capacity: C } = CHECK;
  const dims = Object.freeze({ B, Hq, Hkv, N, D, W, C, P: N - W, G: Hq / Hkv });
  const onCuda = device !== 'cpu';
  const live = [];
  const track = (x) => {
    live.push(...tensorsOf(x));
    return x;
  };
  const make = (data, shape) => track(kv.Tensor.from(data, { shape, dtype, device }));
  // Q is scaled so each window row's softmax is peaked enough that a wrong mask shows.
  const inputs = {
    q: make(hostValues(B * Hq * W * D, SEEDS.queriesWindow, 4), [B, Hq, W, D]),
    k: make(hostValues(B * Hkv * N * D, SEEDS.keys), [B, Hkv, N, D]),
    v: make(hostValues(B * Hkv * N * D, SEEDS.values), [B, Hkv, N, D]),
    qd: make(hostValues(B * Hq * D, SEEDS.queriesDecode, 4), [B, Hq, 1, D]),
  };
  const cpuInputs = onCuda ? Object.fromEntries(Object.entries(inputs).map(([name, t]) => [name, track(t.to('cpu'))])) : null;
  let scores;
  /** What a check gets (see bench/ops/index.js). */
  const c = {
    kv,
    device,
    dims,
    /** the inputs as stored (rounded to the dtype): what the references read */
    host: Object.fromEntries(Object.entries(inputs).map(([name, t]) => [name, t.toArray()])),
    track,
    /** a new f32/i32 tensor on dev, disposed after the checks */
    upload: (data, shape, dev) => track(kv.Tensor.from(data, { shape, device: dev })),
    /** the inputs as logical [B, H, S, D] caches (reference/layout.js Cache4) */
    caches: () => ({
      q: { data: c.host.q, B, H: Hq, S: W, D },
      k: { data: c.host.k, B, H: Hkv, S: N, D },
      qd: { data: c.host.qd, B, H: Hq, S: 1, D },
    }),
    refs: { scores: () => (scores ??= snapkvScoresRef(c.host.q, c.host.k, dims)) },
    /** fn(inputs, dev) on the bench device, then on the CPU backend: [[who, output]] */
    run: (fn) => {
      const out = [[device, track(fn(inputs, device))]];
      if (cpuInputs) out.push(['cpu backend', track(fn(cpuInputs, 'cpu'))]);
      return out;
    },
    /** the device's numeric output against the CPU backend's, when there is one */
    vsCpu: (out, tol) => (out.length < 2 ? [] : [compareNumeric(`${device} vs cpu backend`, out[0][1].toArray(), out[1][1].toArray(), tol)]),
  };

  const results = [];
  try {
    for (const op of ops) {
      let r;
      try {
        r = all(op.check(c));
      } catch (e) {
        r = { ok: false, detail: `threw ${e && e.message ? e.message : e}` };
      }
      results.push({ op: op.name, ...r });
      print(`check ${op.name.padEnd(22)} ${r.ok ? 'PASS' : 'FAIL'}  ${r.detail}`);
    }
  } finally {
    for (const t of live) t.dispose();
  }
  return results;
}

module.exports = { runCheck };
