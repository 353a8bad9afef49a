#!/bin/bash
# Sharded == unsharded on an exporter-shaped model (MLP, BERT-tiny, GPT-2-tiny).
# usage: family.sh CASE shm|mpi [--strategy FILE] TPxSTAGES...   e.g. family.sh bert_tiny_op17 shm 2x1 4x2
# For every config: `shardserve shard --ranks TP*STAGES --stages STAGES --strategy auto|FILE` with the
# case's concrete input shapes, `shardserve run --shards` with the backend (bounded, in its own
# process group), nothing left behind; then every config's outputs must equal the unsharded
# `shardserve run MODEL` within 1e-4, which itself must match the exporter's reference outputs.
. "$(dirname "$0")/common.sh"
need_data
case=$1 backend=$2
shift 2
strategy=auto
[ "${1:-}" = --strategy ] && { strategy=$2; shift 2; }
model=$DATA/fx/test_$case/model.onnx
inputs=$(case_inputs "$case")
shapes=$(case_shapes "$case")
outs=$(case_outputs "$case" | paste -sd,)
[ "$backend" = mpi ] && mpi_setup

mkdir -p "$WORK/ref"
# shellcheck disable=SC2086
run_group 60 "$WORK/ref.log" "$SS" run "$model" $inputs --output-dir "$WORK/ref"
[ "$GROUP_RC" -eq 0 ] || { cat "$WORK/ref.log"; fail "unsharded run of $case (exit $GROUP_RC)"; finish "$case"; }
$PY "$TOOL" expected "$DATA/fx/test_$case" "$WORK/ref" 1e-4 || fail "unsharded $case differs from the exporter's outputs"

dirs=""
for cfg in "$@"; do
  tp=${cfg%x*} st=${cfg#*x}
  n=$((tp * st))
  shards=$WORK/shards-$cfg out=$WORK/out-$cfg
  mkdir -p "$out"
  # shellcheck disable=SC2086
  if ! "$SS" shard "$model" --ranks "$n" --stages "$st" --strategy "$strategy" $shapes --out "$shards" >"$WORK/shard-$cfg.log" 2>&1; then
    cat "$WORK/shard-$cfg.log"
    fail "$case: shard --ranks $n --stages $st"
    continue
  fi
  t0=$(date +%s%N)
  # shellcheck disable=SC2086
  run_group 90 "$WORK/run-$cfg.log" $MPI_WRAP "$SS" run --shards "$shards" --comm "$backend" $inputs --output-dir "$out"
  ms=$((($(date +%s%N) - t0) / 1000000))
  if [ "$GROUP_RC" -ne 0 ]; then
    cat "$WORK/run-$cfg.log"
    fail "$case $backend ${tp} ranks x ${st} stages: run --shards exit $GROUP_RC"
  else
    echo "ran  $case $backend ${tp} ranks/stage x ${st} stage(s) = $n ranks in ${ms} ms"
    dirs="$dirs $out"
  fi
  check_clean "$GROUP_PID"
done
# shellcheck disable=SC2086
[ -n "$dirs" ] && { $PY "$TOOL" compare "$WORK/ref" 1e-4 "$outs" $dirs || fail "sharded outputs differ from unsharded"; }
finish "$case $backend strategy $(basename "$strategy") $*"
