#!/usr/bin/env bash
# gpu-check.sh: everything a GPU host should run in one go: the CUDA build, the whole test suite
# (CUDA suites included), compute-sanitizer memcheck and racecheck over the CUDA suites, and the
# benchmark with --check. Logs go to ${OUT:-gpu-logs}/.
#
# On the workplace's lent GPU machine (no network, no Node), after `npm ci` and
# `bash ../shared/offline-bundle.sh` here:
#   run(carry: [".offline"], command: "source .offline/env.sh && bash scripts/gpu-check.sh")
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
export NO_COLOR=1
status=0
step() { echo "== $1" | tee -a "$out/summary.txt"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee -a "$out/summary.txt"
git rev-parse --short HEAD 2>/dev/null | sed 's/^/commit /' | tee -a "$out/summary.txt"

step "build (sm_90 only, to save time)"
KVSIFT_CUDA_ARCHITECTURES=${KVSIFT_CUDA_ARCHITECTURES:-90} npx cmake-js rebuild > "$out/build.log" 2>&1 || { echo "build FAILED"; tail -40 "$out/build.log"; exit 1; }
npm run build:ts > "$out/tsc.log" 2>&1 || { echo "tsc FAILED"; tail -20 "$out/tsc.log"; exit 1; }
node -e "const k=require('./dist');console.log(JSON.stringify(k.buildInfo), JSON.stringify(k.devices()))" | tee -a "$out/summary.txt"

step "tests"
npx vitest run > "$out/test.log" 2>&1 || status=1
tail -15 "$out/test.log" | tee -a "$out/summary.txt"

step "compute-sanitizer memcheck (CUDA suites)"
compute-sanitizer --tool memcheck --target-processes all --error-exitcode 86 \
  npx vitest run --pool forks test/snapkv.test.ts test/select.test.ts test/l2.test.ts test/keyformer.test.ts test/baselines.test.ts \
  > "$out/memcheck.log" 2>&1 || status=1
grep -E "ERROR SUMMARY|Tests|passed|failed" "$out/memcheck.log" | tail -5 | tee -a "$out/summary.txt"

step "compute-sanitizer racecheck (CUDA suites)"
compute-sanitizer --tool racecheck --target-processes all --error-exitcode 86 \
  npx vitest run --pool forks test/snapkv.test.ts test/select.test.ts test/keyformer.test.ts \
  > "$out/racecheck.log" 2>&1 || status=1
grep -E "RACECHECK SUMMARY|ERROR SUMMARY|Tests|passed|failed" "$out/racecheck.log" | tail -5 | tee -a "$out/summary.txt"

step "benchmark"
node bin/kvsift.js bench --check > "$out/bench.txt" 2> "$out/bench.err" || status=1
node bin/kvsift.js bench --json "$out/bench.json" >> "$out/bench.txt" 2>> "$out/bench.err" || status=1
tail -60 "$out/bench.txt" | tee -a "$out/summary.txt"
node bench/plot.js "$out/bench.json" "$out/bench-gpu.svg" >/dev/null 2>&1 || true
exit $status
