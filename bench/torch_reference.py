#!/usr/bin/env python3
"""PyTorch baselines for `kvsift bench`, on the same inputs and timed the same way.

What is timed (eager PyTorch, bf16 on CUDA, as the published code runs):
  snapkv.update_kv  the seed's SnapKV `KVCluster.update_kv` (/work/shared/seeds/002_*: the SnapKV
                    repository's code), called as the SnapKV integration calls it for a GQA
                    model: K and V go through `repeat_kv` first (update_kv's matmul needs one key
                    head per query head), so its cache grows by G = Hq / Hkv. Both the repeat and
                    update_kv are timed. window W, max_capacity_prompt C, kernel 7, max pooling.
  knorm             the L2-norm ("Knorm") selection as kvpress writes it:
                    torch.linalg.vector_norm + topk of the negated norms + gather of K and V.
  keyformer.step    one eager Keyformer decode step (T = 1): logits of the new query against the
                    repeated keys, Gumbel noise -log(-log U), softmax((logits + g) / tau) in fp32,
                    summed over the G heads of each group into the layer's running scores.

Inputs: generated here from the same formula and seeds as bench/inputs.js, bit for bit:
  value(i, seed) = 2 * (lowbias32((i + seed * 0x9E3779B9) mod 2^32) >> 8) / 2^24 - 1,
  element e of a tensor = value(e mod 1048573, seed), rounded to bf16 (round to nearest even).
update_kv needs the full query states ([B, Hq, N, D]; it asserts q_len == k_len and reads only the
last W rows): they are zeros except for the last W rows, which hold the window queries kvsift
gets. Inputs are allocated before timing and are not part of the peak.

Timing: torch.cuda.Event around each run, the L2 flushed before each run by copying a buffer of
twice the L2 size, warm-up first, the median (and p10/p90) over `reps` runs. Peak memory:
torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before.

Usage: python3 bench/torch_reference.py --spec SPEC.json   (written by bench/bench.js)
       prints {"torch", "device", "reps", "results": [...]} as JSON on stdout; progress on stderr.
"""
import argparse
import json
import math
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

PERIOD = 1048573
MASK32 = 0xFFFFFFFF


# ---------------------------------------------------------------- inputs (= bench/inputs.js)

def _mul32(x, c):
    """(x * c) mod 2^32 for int64 tensors x < 2^32, without int64 overflow."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def _lowbias32(x):
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    x = x ^ (x >> 16)
    return x


def filled(shape, seed, dtype, device):
    numel = math.prod(shape)
    n = min(numel, PERIOD)
    i = torch.arange(n, dtype=torch.int64, device=device)
    h = _lowbias32((i + ((seed * 0x9E3779B9) & MASK32)) & MASK32)
    v = ((h >> 8).to(torch.float64) / 16777216.0 * 2.0 - 1.0).to(torch.float32).to(dtype)
    if numel > n:
        v = v.repeat((numel + n - 1) // n)[:numel]
    return v.reshape(shape).contiguous()


# ---------------------------------------------------------------- the seed's SnapKV (verbatim logic)

# Copied from transformers.models.llama.modeling_llama.repeat_kv
def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """
    This is the equivalent of torch.repeat_interleave(x, dim=1, repeats=n_rep). The hidden states go from (batch,
    num_key_value_heads, seqlen, head_dim) to (batch, num_attention_heads, seqlen, head_dim)
    """
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class KVCluster():
    def __init__(self, window_size=64, max_capacity_prompt=256 + 64, kernel_size=5, pooling='avgpool'):
        self.window_size = window_size
        self.max_capacity_prompt = max_capacity_prompt
        assert self.max_capacity_prompt - self.window_size > 0
        self.kernel_size = kernel_size
        self.pooling = pooling

    def update_kv(self, key_states, query_states, value_states, attention_mask, num_key_value_groups):
        # check if prefix phase
        assert key_states.shape[-2] == query_states.shape[-2]
        bsz, num_heads, q_len, head_dim = query_states.shape
        if q_len < self.max_capacity_prompt:
            return key_states, value_states
        else:
            attn_weights = torch.matmul(query_states[..., -self.window_size:, :], key_states.transpose(2, 3)) / math.sqrt(head_dim)
            mask = torch.full((self.window_size, self.window_size), torch.finfo(attn_weights.dtype).min, device=attn_weights.device)
            mask_cond = torch.arange(mask.size(-1), device=attn_weights.device)
            mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
            mask = mask.to(attn_weights.device)
            attention_mask = mask[None, None, :, :]

            attn_weights[:, :, -self.window_size:, -self.window_size:] += attention_mask

            attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
            attn_weights_sum = attn_weights[:, :, -self.window_size:, : -self.window_size].sum(dim=-2)
            if self.pooling == 'avgpool':
                attn_cache = F.avg_pool1d(attn_weights_sum, kernel_size=self.kernel_size, padding=self.kernel_size // 2, stride=1)
            elif self.pooling == 'maxpool':
                attn_cache = F.max_pool1d(attn_weights_sum, kernel_size=self.kernel_size, padding=self.kernel_size // 2, stride=1)
            else:
                raise ValueError('Pooling method not supported')
            indices = attn_cache.topk(self.max_capacity_prompt - self.window_size, dim=-1).indices
            indices = indices.unsqueeze(-1).expand(-1, -1, -1, head_dim)
            k_past_compress = key_states[:, :, :-self.window_size, :].gather(dim=2, index=indices)
            v_past_compress = value_states[:, :, :-self.window_size, :].gather(dim=2, index=indices)
            k_cur = key_states[:, :, -self.window_size:, :]
            v_cur = value_states[:, :, -self.window_size:, :]
            key_states = torch.cat([k_past_compress, k_cur], dim=2)
            value_states = torch.cat([v_past_compress, v_cur], dim=2)
            return key_states, value_states


def snapkv_update_kv(cluster, k, v, q_full, groups):
    return cluster.update_kv(repeat_kv(k, groups), q_full, repeat_kv(v, groups), None, groups)


# ---------------------------------------------------------------- Knorm and Keyformer, eager

def knorm(k, v, capacity):
    scores = -torch.linalg.vector_norm(k, dim=-1)
    idx = scores.topk(capacity, dim=-1).indices.unsqueeze(-1).expand(-1, -1, -1, k.shape[-1])
    return k.gather(2, idx), v.gather(2, idx)


def keyformer_step(q, k, scores, tau, groups):
    b, hq, t, d = q.shape
    logits = torch.matmul(q, repeat_kv(k, groups).transpose(2, 3)) / math.sqrt(d)
    u = torch.rand(logits.shape, dtype=torch.float32, device=q.device).clamp_(min=torch.finfo(torch.float32).tiny, max=1.0 - 2.0 ** -24)
    g = -torch.log(-torch.log(u))
    f = torch.softmax((logits.float() + g) / tau, dim=-1)
    scores += f.view(b, hq // groups, groups, t, -1).sum(dim=(2, 3))
    return scores


# ---------------------------------------------------------------- timing

class Timer:
    def __init__(self, l2_bytes, reps, warmup):
        n = max(2 * int(l2_bytes), 8 << 20)
        self.src = torch.ones(n, dtype=torch.uint8, device='cuda')
        self.dst = torch.empty_like(self.src)
        self.reps = reps
        self.warmup = warmup

    def measure(self, fn):
        for _ in range(self.warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(self.reps):
            self.dst.copy_(self.src)  # flush the L2
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)  # ms -> us
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        times.sort()
        q = statistics.quantiles(times, n=10, method='inclusive') if len(times) > 1 else [times[0]] * 9
        return {'medianUs': statistics.median(times), 'p10Us': q[0], 'p90Us': q[-1], 'minUs': times[0], 'maxUs': times[-1], 'runs': len(times), 'peakBytes': peak}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--spec', required=True, help='JSON written by bench/bench.js')
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    if not torch.cuda.is_available():
        print(json.dumps({'results': [], 'skipped': f'torch {torch.__version__} sees no CUDA device'}))
        return
    dev = 'cuda'
    seeds = spec['seeds']
    capacity = spec['capacity']
    timer = Timer(spec.get('l2Bytes') or torch.cuda.get_device_properties(0).L2_cache_size, spec['reps'], spec['warmup'])
    pooling = {'max': 'maxpool', 'avg': 'avgpool'}[spec['pooling']]
    results = []
    for c in spec['configs']:
        b, hq, hkv, d, n = c['b'], c['hq'], c['hkv'], c['d'], c['n']
        groups = hq // hkv
        label = f"{c['model']} N={n} B={b}"
        try:
            k = filled([b, hkv, n, d], seeds['keys'], torch.bfloat16, dev)
            v = filled([b, hkv, n, d], seeds['values'], torch.bfloat16, dev)
        except torch.cuda.OutOfMemoryError:
            for op in spec['ops']:
                results.append({'op': op, 'model': c['model'], 'n': n, 'b': b, 'w': None, 'error': 'OOM (inputs)'})
            torch.cuda.empty_cache()
            continue
        jobs = []
        if 'snapkv.update_kv' in spec['ops']:
            for w in spec['windows']:
                jobs.append(('snapkv.update_kv', w))
        if 'knorm' in spec['ops']:
            jobs.append(('knorm', None))
        if 'keyformer.step' in spec['ops']:
            jobs.append(('keyformer.step', None))
        for op, w in jobs:
            print(f'torch_reference: {label}{"" if w is None else f" W={w}"} {op}', file=sys.stderr, flush=True)
            row = {'op': op, 'model': c['model'], 'n': n, 'b': b, 'w': w}
            try:
                if op == 'snapkv.update_kv':
                    q_full = torch.zeros([b, hq, n, d], dtype=torch.bfloat16, device=dev)
                    q_full[:, :, n - w:, :] = filled([b, hq, w, d], seeds['queriesWindow'], torch.bfloat16, dev)
                    cluster = KVCluster(window_size=w, max_capacity_prompt=capacity, kernel_size=spec['kernel'], pooling=pooling)
                    row.update(timer.measure(lambda: snapkv_update_kv(cluster, k, v, q_full, groups)))
                    del q_full
                elif op == 'knorm':
                    row.update(timer.measure(lambda: knorm(k, v, capacity)))
                else:
                    q = filled([b, hq, 1, d], seeds['queriesDecode'], torch.bfloat16, dev)
                    scores = torch.zeros([b, hkv, n], dtype=torch.float32, device=dev)
                    row.update(timer.measure(lambda: keyformer_step(q, k, scores, 1.5, groups)))
                    del q, scores
            except torch.cuda.OutOfMemoryError:
                row['error'] = 'OOM'
            torch.cuda.empty_cache()
            results.append(row)
        del k, v
        torch.cuda.empty_cache()
    print(json.dumps({'torch': torch.__version__, 'device': torch.cuda.get_device_name(0), 'reps': spec['reps'], 'results': results}))


if __name__ == '__main__':
    main()
