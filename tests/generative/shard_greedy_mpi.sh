#!/bin/sh
# The sharded greedy run of shard_greedy.sh over the mpi backend: mpirun starts one gen_greedy per
# rank (inside a private network namespace holding only loopback when one can be made, as the
# other mpi tests do), each running the token loop on its shard; every rank's 64 tokens must
# equal PyTorch's (--kv-pool: the cache in each rank's KV block pool, see shard_greedy.sh).
#   shard_greedy_mpi.sh SHARDSERVE GEN_GREEDY CASE_DIR RANKS STAGES [--kv-pool]
set -u
here=$(cd "$(dirname "$0")" && pwd)
ss=$1 gen=$2 dir=$3 ranks=$4 stages=$5 kv=${6:-}
out=$dir/shards_mpi_${ranks}x$stages${kv:+_kvpool}
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
rm -rf "$out"
"$ss" shard "$dir/model.onnx" --ranks "$ranks" --stages "$stages" $kv --out "$out" >"$work/shard.log" 2>&1 ||
  { cat "$work/shard.log"; echo "FAIL shardserve shard"; exit 1; }
wrap=""
if unshare -n true 2>/dev/null; then wrap="unshare -n $here/../shard/in_loopback_ns.sh"; fi
mkdir -p "$work/ompi"
$wrap timeout 120 mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 \
  --mca btl self,vader,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
  --mca orte_tmpdir_base "$work/ompi" --mca btl_vader_backing_directory "$work/ompi" \
  -np "$ranks" "$gen" --mpi-shards "$out" "$dir/prompt.npy" "$dir/ref_tokens.npy" >"$work/run.log" 2>&1
rc=$?
cat "$work/run.log"
equal=$(grep -c "equal PyTorch" "$work/run.log")
[ "$rc" -eq 0 ] && [ "$equal" -eq "$ranks" ] || { echo "FAIL mpirun exit $rc, $equal of $ranks ranks equal"; exit 1; }
