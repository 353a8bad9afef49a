#!/usr/bin/env bash
# conformance.sh SHARDSERVE DIR MIN_PASSED [--no-skips]
# Runs `shardserve onnx-test DIR`, prints every case line, and fails unless no case FAILed, at
# least MIN_PASSED passed, and (with --no-skips) none was UNSUPPORTED.
set -u
bin=$1 dir=$2 min=$3 noskip=${4:-}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bin" onnx-test "$dir" | tee "$out"
rc=${PIPESTATUS[0]}
summary=$(tail -n 1 "$out")
read -r passed _ failed _ skipped _ <<<"$summary"
echo "conformance: $passed passed, $failed failed, $skipped skipped (need >= $min passed, 0 failed${noskip:+, 0 skipped})"
[[ $rc -eq 0 && $failed -eq 0 && $passed -ge $min ]] || exit 1
[[ -z "$noskip" || $skipped -eq 0 ]] || exit 1
