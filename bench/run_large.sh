#!/usr/bin/env bash
# The large-tensor table (issue 12): 1/16/64/256 MiB float32 through a 1-rank Neg servable over
# MindSpore gRPC, KServe gRPC, KServe REST binary and KServe shared memory (from Python, and from the
# C client: bench --shm), against raw loopback TCP, memcpy and the Neg itself (shardserve run), all
# in one run (bench/bench_large.py).
#   bench/run_large.sh [BUILD_DIR (default build)] [--sizes 1,16,64,256] [--rounds N] [--grpc-max-mib M]
# Prints a markdown table (the machine first); bench/RESULTS.md holds the latest one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
shift || true
for t in src/cli/shardserve bench/bench_tcp_echo; do
    [[ -x "$build/$t" ]] || { echo "missing $build/$t: cmake --build $build -j2" >&2; exit 1; }
done
echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm), $(git -C "$here/.." log -1 --format='commit %h' 2>/dev/null || true)"
exec /usr/bin/python3 "$here/bench_large.py" "$build" "$@"
