#!/bin/bash
# shard --weights DTYPE: every rank holds its MatMul/Gemm weights as DTYPE where the CPU has the
# math for it (bf16: AVX512-BF16 or AMX; int8: AVX512-VNNI). For each exported case: the group
# configs say so, and the sharded outputs stay within BOUND of the largest magnitude of the
# unsharded f32 outputs; on a CPU with the math they must also differ from them (the option took
# effect), elsewhere equal them.
# usage: weights.sh DTYPE BOUND CASE... (e.g. bf16 1e-2 mlp_op17 bert_tiny_op17 gpt2_tiny_op17)
. "$(dirname "$0")/common.sh"
need_data
dtype=$1 bound=$2
shift 2
case $dtype in
  bf16) has_math() { grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; } ;;
  int8) has_math() { grep -qw avx512_vnni /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo; } ;;
  *) echo "weights.sh: unknown dtype '$dtype'"; exit 2 ;;
esac
if has_math; then native=1; else native=0; fi
echo "CPU $dtype math: $([ $native = 1 ] && echo yes || echo no, weights stay f32)"
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
  if ! "$SS" shard "$model" --ranks 2 --weights "$dtype" $shapes --out "$shards" >"$WORK/shard-$case.log" 2>&1; then
    cat "$WORK/shard-$case.log"
    fail "$case: shard --weights $dtype"
    continue
  fi
  for r in 0 1; do
    grep -q "\"weights\":[[:space:]]*\"$dtype\"" "$shards/device$r/group_config.json" ||
      fail "$case: device$r/group_config.json does not say $dtype"
  done
  # shellcheck disable=SC2086
  run_group 90 "$WORK/run-$case.log" "$SS" run --shards "$shards" --comm shm $inputs --output-dir "$out"
  [ "$GROUP_RC" -eq 0 ] || { cat "$WORK/run-$case.log"; fail "$case: run --shards ($dtype)"; continue; }
  check_clean "$GROUP_PID"
  $PY "$TOOL" compare_rel "$ref" "$bound" "$native" "$outs" "$out" || fail "$case: $dtype outputs"
done
finish "weights $dtype $*"
