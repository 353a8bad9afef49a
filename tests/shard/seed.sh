#!/bin/bash
# The seed model y = Neg(MatMul(x[128,96] = 1, W[96,16] = 0.5)) over 8 ranks: every element of y
# must be exactly -48, whatever the split, and each rank must hold the part of W its split says.
# usage: seed.sh shm|mpi KIND...   KIND is one of
#   cols   strategy file {"matmul": [[1,1],[1,8]]}  (weight columns split, outputs gathered): W [96,2]
#   reduce strategy file {"matmul": [[1,8],[8,1]]}  (reduction dim split, partial sums all-reduced): W [12,16]
#   rows   strategy file {"matmul": [[8,1],[1,1]]}  (batch rows split): W [96,16] on every rank
#   auto   --strategy auto (column-parallel, then replicated for Neg's output): W [96,2]
. "$(dirname "$0")/common.sh"
need_data
backend=$1
shift
[ "$backend" = mpi ] && mpi_setup
checks=""
for kind in "$@"; do
  case $kind in
    cols) spec='[[1,1],[1,8]]' ;;
    reduce) spec='[[1,8],[8,1]]' ;;
    rows) spec='[[8,1],[1,1]]' ;;
    auto) spec='' ;;
    *) echo "unknown kind $kind"; exit 2 ;;
  esac
  strategy=auto
  if [ -n "$spec" ]; then
    strategy=$WORK/$kind.json
    echo "{\"matmul\": $spec}" >"$strategy"
  fi
  if ! "$SS" shard "$DATA/seed/model.onnx" --ranks 8 --strategy "$strategy" --out "$WORK/shards-$kind" >"$WORK/shard-$kind.log" 2>&1; then
    cat "$WORK/shard-$kind.log"
    fail "shard --ranks 8 --strategy $kind"
    continue
  fi
  mkdir -p "$WORK/out-$kind"
  run_group 60 "$WORK/run-$kind.log" $MPI_WRAP "$SS" run --shards "$WORK/shards-$kind" --comm "$backend" \
    --input "x=$DATA/seed/x.npy" --output-dir "$WORK/out-$kind"
  if [ "$GROUP_RC" -ne 0 ]; then
    cat "$WORK/run-$kind.log"
    fail "$kind: run --shards --comm $backend exit $GROUP_RC"
  else
    echo "ran  seed, 8 ranks, strategy $kind ${spec:+$spec }over $backend"
    checks="$checks $kind"
  fi
  check_clean "$GROUP_PID"
done
# shellcheck disable=SC2086
[ -n "$checks" ] && { $PY - "$WORK" $checks <<'PY' || fail "seed outputs or weight splits wrong"; }
import sys
import numpy as np
import onnx
work, ok = sys.argv[1], True
want_w = {"cols": [96, 2], "reduce": [12, 16], "rows": [96, 16], "auto": [96, 2]}
for kind in sys.argv[2:]:
    y = np.load(f"{work}/out-{kind}/y.npy")
    good = y.shape == (128, 16) and bool(np.all(y == -48))
    print(f"{'ok  ' if good else 'FAIL'} {kind}: y {y.shape} {y.dtype} min {y.min()} max {y.max()}, want all -48")
    ok &= good
    dims = []
    for r in range(8):
        m = onnx.load(f"{work}/shards-{kind}/device{r}/model.onnx", load_external_data=False)
        dims.append([list(i.dims) for i in m.graph.initializer if i.name.startswith("W")])
    good = all(d == [want_w[kind]] for d in dims)
    print(f"{'ok  ' if good else 'FAIL'} {kind}: W on ranks 0..7 {dims[0]}..{dims[7]}, want {want_w[kind]} on each")
    ok &= good
sys.exit(0 if ok else 1)
PY
finish "$backend $*"
