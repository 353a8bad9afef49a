#!/usr/bin/env bash
# Every libFuzzer target, briefly (10 s each, two at a time: about a minute in all), in a separate
# clang build folder configured with -DSS_FUZZ=ON. Only the fuzz targets (and what they link) are
# built. A target missing from the list below still fails: its smoke test's executable is absent.
# Usage: scripts/fuzz-smoke.sh [BUILD_DIR] (default build-fuzz). SS_BUILD_ONLY=1: build, no run.
# A longer run of one target: BUILD_DIR/tests/fuzz_rank_table -max_total_time=120 CORPUS SEEDS
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-fuzz}
jobs=${SS_JOBS:-$(nproc)}
if ! command -v clang >/dev/null; then
  echo "fuzz-smoke: clang is missing (libFuzzer needs it): install clang" >&2
  exit 1
fi
CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSS_FUZZ=ON >/dev/null
targets=(fuzz_core_npy fuzz_link_frame fuzz_server_rest fuzz_server_grpc fuzz_server_gen fuzz_kserve_rest fuzz_kserve_grpc fuzz_onnx_load
         fuzz_rank_table fuzz_servable_config fuzz_tokenizer fuzz_rest_gen)
cmake --build "$dir" -j"$jobs" --target "${targets[@]}"
if [[ ${SS_BUILD_ONLY:-0} == 1 ]]; then exit 0; fi
# fixtures (seed generators) are pulled in by CTest automatically
ctest --test-dir "$dir" --output-on-failure -j2 --timeout 300 -L fuzz
