#!/bin/bash
# The sharding benchmark: a 512 MB MLP (8 x MatMul 4096x4096 float32 -> Relu, weights as external
# data, batch 32; bench/bench_shard_model.py) split with `shardserve shard --strategy auto` over 1,
# 2, 4 and 8 ranks, then bench_shard runs every split and the unsharded model in one process,
# interleaved in the same run, and prints throughput and peak RSS per rank vs shard bytes.
# The model and splits are kept in DATA_DIR (default BUILD_DIR/bench-shard-data, ~2.6 GB) and
# reused while the model is unchanged. Before timing, every weight file is evicted from the page
# cache (as bench/models.py does): a freshly written file sits in small page-cache folios, which
# makes the GEMMs of whichever variant reads it slower (TLB misses) and would bias the comparison.
# usage: bench/run_shard.sh [BUILD_DIR] [bench_shard options, e.g. --rounds 5 --iters 3]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build-shardtest}
[ $# -gt 0 ] && shift
ss=$build/src/cli/shardserve
bench=$build/bench/bench_shard
for f in "$ss" "$bench"; do [ -x "$f" ] || { echo "no $f: build shardserve and bench_shard first" >&2; exit 1; }; done
data=${DATA_DIR:-$build/bench-shard-data}
mkdir -p "$data"
/usr/bin/python3 "$here/bench_shard_model.py" "$data/model" --dim 4096 --layers 8 --batch 32 >&2
splits=""
for n in 1 2 4 8; do
  dir=$data/split$n
  if [ ! -f "$dir/manifest.json" ] || [ "$data/model/mlp.onnx" -nt "$dir/manifest.json" ] || [ "$ss" -nt "$dir/manifest.json" ]; then
    rm -rf "$dir"
    echo "sharding over $n rank(s) into $dir" >&2
    "$ss" shard "$data/model/mlp.onnx" --ranks "$n" --strategy auto --out "$dir" >&2
  fi
  splits="$splits --split $n=$dir"
done
/usr/bin/python3 - "$data" <<'PY'
import glob, os, sys
for path in glob.glob(os.path.join(sys.argv[1], "**", "*.data"), recursive=True):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# shellcheck disable=SC2086
"$bench" --model "$data/model/mlp.onnx" --input "x=$data/model/x.npy" $splits "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
