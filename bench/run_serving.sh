#!/usr/bin/env bash
# Serving benchmarks side by side (bench/bench_serving.py): the seed and a 1-rank servable vs the
# floor (a bare gRPC core server answering serve's own reply bytes) and vs Python grpcio + numpy,
# REST vs gRPC, large tensors vs a gRPC echo and raw TCP, pipeline, dynamic batching, and (only when
# asked: --only stages) a C-function and a Python-function stage vs the same model without them,
# and (--only pyscale) a ~1 ms Python preprocess at concurrency 16 vs the model alone (the seed-shaped
# model and an MLP of a few ms of CPU, runner pool 1/2/4).
#   bench/run_serving.sh [BUILD_DIR (default build)] [bench_serving.py options, e.g. --only floor --rounds 5]
# Prints markdown tables (the machine first); bench/RESULTS.md holds the latest ones.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
shift || true
for t in src/cli/shardserve bench/bench_floor_server bench/bench_echo_server bench/bench_tcp_echo; do
    [[ -x "$build/$t" ]] || { echo "missing $build/$t: cmake --build $build -j2" >&2; exit 1; }
done
echo "## Machine"
echo
echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm)"
echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores visible"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (the cores are shared with other builds)"
echo "- $(git -C "$here/.." log -1 --format='commit %h (%s)' 2>/dev/null || true)"
exec /usr/bin/python3 "$here/bench_serving.py" "$build" "$@"
