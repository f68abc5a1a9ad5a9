/**
 * The op registry of kvsift bench: every timed op, in table order, each with all the bench knows
 * about it. An entry is
 *
 *   name        the op as --op selects it and as the table prints it
 *   usesWindow  timed once per SnapKV window W (default: once per shape, N and batch)
 *   floor(c)    the bytes the op must move at the least, for one sweep config c
 *               { b, hq, hkv, d, n, w, C, esz } (shapes.bytes has the common terms)
 *   graph       whether a CUDA graph can capture the op, read off the implementation: the ops
 *               launch kernels and stream-ordered allocations only; the optional seqLens/lengths
 *               arrays are uploaded with a pageable cudaMemcpyAsync, which a capture rejects
 *               (default 'yes')
 *   torch       its counterpart in torch_reference.py (default null)
 *   runner(kv, x, w, device)  returns a closure that runs the op once on the sweep's inputs x
 *               (bench/sweep.js makeInputs; w is null unless usesWindow) and returns what to
 *               dispose; bind() of bench/timer.js makes one with the inputs looked up beforehand
 *   check(c)    compares the op's output on the --check shape with the float64 reference (and,
 *               on CUDA, with the CPU backend); c is bench/check.js's context; returns
 *               [{ ok, detail }]
 *
 * A new op adds its entries to its family's file here (or a new file, listed below).
 */
'use strict';

const FAMILIES = ['./snapkv', './select', './l2', './keyformer', './baselines', './adaptive', './decode', './copy'];

const DEFAULTS = Object.freeze({ usesWindow: false, graph: 'yes', torch: null });

const OPS = Object.freeze(FAMILIES.flatMap((file) => require(file).map((entry) => Object.freeze({ ...DEFAULTS, ...entry }))));

module.exports = { OPS };
