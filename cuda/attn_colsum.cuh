// kvsift/cuda/attn_colsum.cuh: the fused "softmax over keys, then column sums over a group of
// query rows" kernel family behind SnapKV scoring (snapkv_scores.cu) and Keyformer/H2O
// accumulation (keyformer.cu). Both ops are the same computation for a KV head (b, hkv): a set
// of query rows (the G heads of the group times T queries: the W window queries or the step's T) each
// takes a causal softmax of its scaled logits, and the probabilities are summed over the rows
// per key. Only what happens to a column sum differs (SnapKV: reduce over heads and store;
// Keyformer: add into the running scores), and Keyformer adds Gumbel noise to the logits.
//
// Layout of the work (ALGORITHMS.md §5 explains why it is memory-bound):
//  - Rows. Row i of a KV head is (g, r) = (i / period, i % period); period = T ("dense" rows,
//    enough when every row's column sums are simply added), or T rounded up to 16 ("per-head"
//    rows, SnapKV max/none) so that a 16-row MMA tile never mixes two heads. rows_p (a multiple
//    of 16) rows exist; the padding rows have no query and never contribute.
//  - Pass 1 (skipped when SnapKV gets the rows' log-sum-exp): item (head, row chunk, key split)
//    streams its split's keys once and writes each row's partial (max, sum of exp) in base 2.
//    The last pass-1 item of a head to finish (an atomic counter) merges the partials into each
//    row's lse and raises the head's ready flag.
//  - Pass 2: item (head, key range of <= 512 keys) waits for its head's flag, recomputes the
//    logits of its keys for every row (looping over row chunks), p = exp2(x - lse), and sums
//    the columns. Each block owns its keys, so every output element is written exactly once by
//    one block in a fixed order: the result is deterministic and needs no float atomics.
//  - Order. Blocks draw tickets from an atomic counter, and a ticket names the item. Tickets run
//    pass 1 of head h+lag, then pass 2 of head h, ...: a head's pass 2 starts shortly after its
//    pass 1 ended, while its keys are still in L2, so K comes from DRAM about once. A pass-2
//    item only waits on pass-1 items with smaller tickets, which belong to blocks that already
//    run and never wait themselves, so the scheme cannot deadlock whatever the residency.
//  - Engines. Tensor cores (mma.sync m16n8k16, fp32 accumulate) for f16/bf16 with D in {64, 128}
//    on sm_80+ (f16 on sm_75 through m16n8k8): K tiles of 64 keys double-buffered with cp.async
//    in swizzled shared memory, Q fragments held in registers. Everything else (f32, bf16 on
//    sm_75, other head dims up to 256) goes through a SIMT engine with the same item structure.
//
// Files: attn_colsum/plan.h (host plan and Args), device.cuh (shared device helpers),
// tc_engine.cuh and simt_engine.cuh (the engines), schedule.cuh (tickets and the kernel),
// launch.cuh (workspace, lag and engine choice).
#pragma once
#include "attn_colsum/launch.cuh"
