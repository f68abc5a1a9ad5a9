#!/usr/bin/env python3
"""The CPU yardstick for kvsift's CPU backend: the same SnapKV scoring and Keyformer decode work
in numpy (OpenBLAS matmul, softmax, sums), f32, one layer, on this machine's cores.

    python3 bench/numpy_reference.py [--n 8192] [--reps 10]

Prints the median times; `npm run bench -- --op snapkv.scores,keyformer --n 8k` gives kvsift's on
the same shapes. docs/BENCHMARKS.md records both from one machine."""
import argparse
import time

import numpy as np


def snapkv_scores(q, k, w):
    # q [Hq, W, D], k [Hkv, N, D] -> votes [Hkv, N - W], mean over the group (kvsift's default)
    hq, _, d = q.shape
    hkv, n, _ = k.shape
    g = hq // hkv
    logits = np.einsum("gwd,gnd->gwn", q.reshape(hkv, g * w, d), k, optimize=True).reshape(hkv, g, w, n)
    logits *= np.float32(1.0 / np.sqrt(d))
    causal = np.arange(n)[None, :] > (n - w + np.arange(w))[:, None]
    logits[:, :, causal] = -np.inf
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits[..., : n - w].sum(axis=2).mean(axis=1)


def keyformer_step(q, k, scores, tau, rng):
    # one decode query per head: scores[h] += sum over the group of softmax((q.k/sqrt(D) + g)/tau)
    hq, _, d = q.shape
    hkv, n, _ = k.shape
    g = hq // hkv
    logits = np.einsum("gqd,gnd->gqn", q.reshape(hkv, g, d), k, optimize=True)
    logits *= np.float32(1.0 / np.sqrt(d))
    logits += -np.log(-np.log(rng.random(logits.shape, dtype=np.float32) * 0.999999 + 5e-7))
    logits /= tau
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    scores += logits.sum(axis=1)


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    rng = np.random.default_rng(1)
    hq, hkv, d, w, n = 32, 8, 128, 32, a.n
    q = rng.standard_normal((hq, w, d), dtype=np.float32)
    k = rng.standard_normal((hkv, n, d), dtype=np.float32)
    q1 = rng.standard_normal((hq, 1, d), dtype=np.float32)
    scores = np.zeros((hkv, n), dtype=np.float32)
    print(f"numpy {np.__version__}, llama3-8b shape (Hq 32, Hkv 8, D 128), N {n}, f32")
    print(f"snapkv scores (W 32):         {median_ms(lambda: snapkv_scores(q, k, w), a.reps):8.2f} ms")
    print(f"keyformer decode step (T 1):  {median_ms(lambda: keyformer_step(q1, k, scores, 1.5, rng), a.reps):8.2f} ms")


if __name__ == "__main__":
    main()
