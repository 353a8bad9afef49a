#!/bin/bash
# shard --weights bf16: every rank holds its MatMul/Gemm weights as bf16 (f32 accumulation) where
# the CPU has bf16 math. For each exported case: the group configs say so, and the sharded bf16
# outputs stay within 1e-2 of the largest magnitude of the unsharded f32 outputs; on a CPU with
# bf16 math they must also differ from them (the option took effect), elsewhere equal them.
# usage: bf16.sh CASE... (e.g. mlp_op17 bert_tiny_op17 gpt2_tiny_op17)
. "$(dirname "$0")/common.sh"
need_data
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then native=1; else native=0; fi
echo "CPU bf16 math: $([ $native = 1 ] && echo yes || echo no, weights stay f32)"
for case in "$@"; do
  model=$DATA/fx/test_$case/model.onnx
  inputs=$(case_inputs "$case")
  shapes=$(case_shapes "$case")
  outs=$(case_outputs "$case" | paste -sd,)
  ref=$WORK/ref-$case shards=$WORK/shards-$case out=$WORK/out-$case
  mkdir -p "$ref" "$out"
  # shellcheck disable=SC2086
  run_group 60 "$WORK/ref-$case.log" "$SS" run "$model" $inputs --output-dir "$ref"
  [ "$GROUP_RC" -eq 0 ] || { cat "$WORK/ref-$case.log"; fail "unsharded run of $case"; continue; }
  # shellcheck disable=SC2086
  if ! "$SS" shard "$model" --ranks 2 --weights bf16 $shapes --out "$shards" >"$WORK/shard-$case.log" 2>&1; then
    cat "$WORK/shard-$case.log"
    fail "$case: shard --weights bf16"
    continue
  fi
  for r in 0 1; do
    grep -q '"weights":[[:space:]]*"bf16"' "$shards/device$r/group_config.json" ||
      fail "$case: device$r/group_config.json does not say bf16"
  done
  # shellcheck disable=SC2086
  run_group 90 "$WORK/run-$case.log" "$SS" run --shards "$shards" --comm shm $inputs --output-dir "$out"
  [ "$GROUP_RC" -eq 0 ] || { cat "$WORK/run-$case.log"; fail "$case: run --shards (bf16)"; continue; }
  check_clean "$GROUP_PID"
  $PY "$TOOL" compare_rel "$ref" 1e-2 "$native" "$outs" "$out" || fail "$case: bf16 outputs"
done
finish "weights $*"
