#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer (and LeakSanitizer, on by
# default with ASan): a second build folder configured with -DSS_SANITIZE=ON, then ctest there.
# Usage: scripts/asan.sh [BUILD_DIR] (default build-asan). Extra ctest arguments in SS_CTEST_ARGS.
#
# Excluded here, and only here: nothing by default. A test too slow under the sanitizers would get
# the CTest label "asan-slow" in its fragment and be listed in this comment with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-asan}
jobs=${SS_JOBS:-$(nproc)}
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSS_SANITIZE=ON >/dev/null
cmake --build "$dir" -j"$jobs"
# halt_on_error: the first report fails the test; UBSan prints its stack; LSan stays on.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# shellcheck disable=SC2086
ctest --test-dir "$dir" --output-on-failure -j2 --timeout 900 -LE asan-slow ${SS_CTEST_ARGS:-}
