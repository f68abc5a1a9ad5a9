#!/usr/bin/env bash
# gpu-check.sh: everything a lent GPU window runs, in one call that fits in 8 minutes of wall time.
# The GPU host has CUDA, CMake and PyTorch but no Node and no network, so it compiles nothing:
# the sm_90 addon is built here beforehand and carried with the offline Node bundle.
#
# Here (the development machine, nvcc present), once:
#   npm ci && bash scripts/gpu-check.sh --prepare      # builds build-gpu/kvsift.node and .offline/
# Then the device tool's run, with timeout_s 540 (the steps' limits add up to 450 s, 7.5 minutes):
#   run(carry: [".offline", "build-gpu", "dist"], command: "bash scripts/gpu-check.sh")
# The carry limit is 64 MiB in all: the build folder's object files would not fit (~49 MB), so
# --prepare copies the addon alone into build-gpu/ and checks the total.
#
# Each step has its own timeout and its log under $OUT; the files that come back are at most 8:
#   summary.txt (device, commit, pass/fail per step, the key ratios), tests.log, memcheck.log,
#   racecheck.log, bench.txt, bench.json, torch.txt.
# docs/GPU.md explains what to do with the results.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = "--prepare" ]; then
  set -e
  # sm_90 machine code only: the H200 runs it, and no PTX to JIT keeps the addon smaller
  KVSIFT_CUDA_ARCHITECTURES=90-real npx cmake-js compile --out build-sm90
  rm -rf build-gpu && mkdir build-gpu && cp build-sm90/Release/kvsift.node build-gpu/
  npm run build:ts
  bash ../shared/offline-bundle.sh
  du -sh build-gpu .offline dist
  total_kib=$(du -sk build-gpu .offline dist | awk '{ s += $1 } END { print s }')
  echo "carry: $((total_kib / 1024)) MiB of the 64 MiB limit"
  if [ "$total_kib" -gt $((64 * 1024)) ]; then echo "the carry is over 64 MiB" >&2; exit 1; fi
  exit 0
fi

out=${OUT:-gpu-logs}
mkdir -p "$out"
export NO_COLOR=1 CI=1
summary=$out/summary.txt
: > "$summary"
t0=$SECONDS
status=0
note() { echo "$*" | tee -a "$summary"; }
# step NAME SECONDS LOG command...: runs with a timeout, records pass/fail and the time taken.
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local s=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local verdict=PASS
  [ $rc -eq 124 ] && verdict="TIMEOUT (${limit}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="FAIL (exit $rc)"
  [ $rc -ne 0 ] && status=1
  note "$(printf '%-28s %-18s %4ds' "$name" "$verdict" "$((SECONDS - s))")"
}

note "== kvsift GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
note "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/device /' | tee -a "$summary"
if [ ! -f .offline/env.sh ] || [ ! -f build-gpu/kvsift.node ] || [ ! -d dist ]; then
  note "missing .offline/, build-gpu/ or dist/: run 'bash scripts/gpu-check.sh --prepare' here and carry them"
  exit 2
fi
# shellcheck disable=SC1091
source .offline/env.sh
export KVSIFT_ADDON_PATH=$PWD/build-gpu/kvsift.node
node -e "const k=require('./dist');console.log('buildInfo', JSON.stringify(k.buildInfo));console.log('devices', JSON.stringify(k.devices()))" 2>&1 | tee -a "$summary"

CUDA_FILES=(test/snapkv.test.ts test/select.test.ts test/l2.test.ts test/keyformer.test.ts test/baselines.test.ts)
for f in test/decode.test.ts test/quest.test.ts test/adaptive.test.ts test/ragged.test.ts test/kv_cache.test.ts; do
  [ -f "$f" ] && CUDA_FILES+=("$f")
done
step "tests (whole suite)" 150 "$out/tests.log" npx vitest run
grep -E "^ +(Tests|Test Files) " "$out/tests.log" | sed 's/^ */  /' | tee -a "$summary"

# compute-sanitizer on a small subset (the CUDA blocks of the op suites), one tool each.
step "memcheck (CUDA op suites)" 90 "$out/memcheck.log" \
  compute-sanitizer --tool memcheck --target-processes all --error-exitcode 86 \
  npx vitest run --pool forks -t "CUDA" "${CUDA_FILES[@]}"
grep -E "ERROR SUMMARY" "$out/memcheck.log" | tail -1 | sed 's/^/  /' | tee -a "$summary"
step "racecheck (colsum, topk)" 60 "$out/racecheck.log" \
  compute-sanitizer --tool racecheck --target-processes all --error-exitcode 86 \
  npx vitest run --pool forks -t "CUDA" test/snapkv.test.ts test/select.test.ts
grep -E "RACECHECK SUMMARY|ERROR SUMMARY" "$out/racecheck.log" | tail -1 | sed 's/^/  /' | tee -a "$summary"

# bench --quick with the PyTorch side-by-side (the bench spawns bench/torch_reference.py on CUDA).
step "bench --check (CUDA vs f64)" 30 "$out/bench.txt" node bin/kvsift.js bench --check
step "bench --quick (+ PyTorch)" 120 "$out/bench-sweep.txt" node bin/kvsift.js bench --quick --json "$out/bench.json"
cat "$out/bench-sweep.txt" >> "$out/bench.txt"; rm -f "$out/bench-sweep.txt"
python3 bench/torch_reference.py --help > "$out/torch.txt" 2>&1 || true
grep -E "of copy|vs torch|ratio" "$out/bench.txt" | head -20 | sed 's/^/  /' | tee -a "$summary"

note "total $((SECONDS - t0))s, $([ $status -eq 0 ] && echo 'all steps passed' || echo 'some step FAILED')"
exit $status
