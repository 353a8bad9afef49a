#!/bin/bash
# Impossible splits are refused clearly: `shardserve shard` exits non-zero, its message names the
# problem (the phrase below), and it leaves nothing behind: no --out folder it made, and an earlier
# split in --out as it was.
. "$(dirname "$0")/common.sh"
need_data
seed=$DATA/seed/model.onnx
mlp=$DATA/fx/test_mlp_op17/model.onnx

# refuse NAME PHRASE SHARD-ARGS...
refuse() {
  local name=$1 phrase=$2 out=$WORK/out-$1
  shift 2
  "$SS" shard "$@" --out "$out" >"$WORK/$name.log" 2>&1
  local rc=$?
  local msg
  msg=$(cat "$WORK/$name.log")
  if [ "$rc" -eq 0 ]; then
    fail "$name: shard succeeded; want a refusal mentioning '$phrase'"
  elif ! grep -qF -- "$phrase" "$WORK/$name.log"; then
    fail "$name: exit $rc but the message does not say '$phrase': $msg"
  elif [ -e "$out" ]; then
    fail "$name: refused but left $out: $(find "$out" | head -5 | tr '\n' ' ')"
  else
    ok "$name: exit $rc: $msg"
  fi
}

strategy() { echo "{\"matmul\": $2}" >"$WORK/$1.json"; echo "$WORK/$1.json"; }

# W is [96,16]: 16 columns do not split 5 ways, 96 rows of the reduction dim not 5 ways, x's 128 rows not 3 ways
refuse cols_not_divisible "the weight's columns do not divide" "$seed" --ranks 5 --strategy "$(strategy c5 '[[1,1],[1,5]]')"
refuse reduce_not_divisible "the reduction dim does not divide" "$seed" --ranks 5 --strategy "$(strategy r5 '[[1,5],[5,1]]')"
refuse rows_not_divisible "the rows of input 0 do not divide" "$seed" --ranks 3 --strategy "$(strategy b3 '[[3,1],[1,1]]')"
refuse cols_more_than_columns "the weight's columns do not divide" "$seed" --ranks 32 --strategy "$(strategy c32 '[[1,1],[1,32]]')"
# a strategy that does not match the stage's rank count, or splits two dims at once
refuse strategy_wrong_count "splits one of" "$seed" --ranks 4 --strategy "$(strategy c8 '[[1,1],[1,8]]')"
refuse strategy_two_dims "splits one of" "$seed" --ranks 4 --strategy "$(strategy x4 '[[2,1],[1,2]]')"
refuse strategy_bad_shape "must be [[a0,a1],[b0,b1]]" "$seed" --ranks 8 --strategy "$(strategy bad '[8,1]')"
refuse strategy_unknown_node "no node named 'nosuch'" "$seed" --ranks 8 --strategy "$(echo '{"nosuch": [[1,1],[1,8]]}' >"$WORK/n.json"; echo "$WORK/n.json")"
refuse strategy_not_matmul "strategies apply to MatMul and Gemm" "$seed" --ranks 8 --strategy "$(echo '{"neg": [[1,1],[1,8]]}' >"$WORK/neg.json"; echo "$WORK/neg.json")"
# a Gemm (transB, bias) of the exported MLP: its 10 output columns do not split 4 ways
refuse gemm_cols_not_divisible "the weight's columns do not divide" "$mlp" --ranks 4 --input-shape x=4,784 --strategy "$(echo '{"/net/net.4/Gemm": [[1,1],[1,4]]}' >"$WORK/g.json"; echo "$WORK/g.json")"
# ranks and stages that do not fit
refuse ranks_not_multiple_of_stages "must be a positive multiple of --stages" "$seed" --ranks 3 --stages 2
refuse more_stages_than_nodes "fewer than --stages 3" "$seed" --ranks 3 --stages 3
refuse zero_ranks "--ranks wants 1.." "$seed" --ranks 0
# named dynamic dims stay dynamic, also across a stage cut, as long as the receiving stage can
# compute the crossing tensor's shape from its own inputs: here it is [batch * 8, 4] (a Reshape
# flattens the batch into the rows), which no input dim gives
/usr/bin/python3 - "$WORK/flat.onnx" <<'PY' || fail "writing the flattening model"
import sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper, save
w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
shape = numpy_helper.from_array(np.array([-1, 4], np.int64), "rows")
nodes = [helper.make_node("Reshape", ["x", "rows"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["h"]),
         helper.make_node("Relu", ["h"], ["y"])]
g = helper.make_graph(nodes, "flat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, shape])
save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), sys.argv[1])
PY
refuse dynamic_cut_unknown_dim "follows no dim of the stage's inputs" "$WORK/flat.onnx" --ranks 2 --stages 2
refuse bad_input_shape "dims are comma-separated numbers" "$mlp" --ranks 2 --strategy auto --input-shape x=four,784
refuse unknown_input_shape "the model has no input 'nosuch'" "$seed" --ranks 2 --input-shape nosuch=2,96
# a split into fewer ranks in the folder of an earlier one leaves only its own device folders
again=$WORK/again
if "$SS" shard "$seed" --ranks 4 --out "$again" --quiet && "$SS" shard "$seed" --ranks 2 --out "$again" --quiet; then
  left=$(cd "$again" && echo device*)
  [ "$left" = "device0 device1" ] && ok "re-split 4 -> 2 ranks: $left" || fail "re-split 4 -> 2 ranks left: $left"
else
  fail "re-split 4 -> 2 ranks: shard failed"
fi
# a split refused while it writes its ranks leaves the earlier split in the folder whole
before=$(cd "$again" && find . -type f | sort | xargs md5sum)
if "$SS" shard "$seed" --ranks 5 --out "$again" --quiet \
    --strategy "$(strategy c5again '[[1,1],[1,5]]')" >"$WORK/again5.log" 2>&1; then
  fail "refused re-split: shard succeeded"
else
  after=$(cd "$again" && find . | sort)
  [ "$(cd "$again" && find . -type f | sort | xargs md5sum)" = "$before" ] &&
    ! grep -q partial <<<"$after" &&
    ok "refused re-split (5 ranks) left the 2-rank split as it was" ||
    fail "refused re-split changed the earlier split: $after"
fi
# --out that cannot take the split: refused before any work, and left as it was
touch "$WORK/afile"
if "$SS" shard "$seed" --ranks 2 --out "$WORK/afile" --quiet >"$WORK/afile.log" 2>&1; then
  fail "--out a file: shard succeeded"
else
  grep -q "afile is not a folder" "$WORK/afile.log" && [ -f "$WORK/afile" ] &&
    ok "--out a file: $(cat "$WORK/afile.log")" || fail "--out a file: $(cat "$WORK/afile.log")"
fi
mine=$WORK/mine
mkdir -p "$mine/device1" "$WORK/elsewhere" && echo keep >"$mine/device1/notes.txt" && echo keep >"$WORK/elsewhere/keep.txt"
if "$SS" shard "$seed" --ranks 2 --out "$mine" --quiet >"$WORK/mine.log" 2>&1; then
  fail "a folder of the user's own as device1: shard succeeded"
elif grep -q "device1 is there and is not a rank folder" "$WORK/mine.log" && [ -f "$mine/device1/notes.txt" ] && [ ! -e "$mine/device0" ]; then
  ok "a folder of the user's own as device1: refused, untouched: $(cat "$WORK/mine.log")"
else
  fail "a folder of the user's own as device1: $(cat "$WORK/mine.log"); left $(find "$mine" | tr '\n' ' ')"
fi
rm -rf "$mine/device1" && ln -s "$WORK/elsewhere" "$mine/device1"
if "$SS" shard "$seed" --ranks 2 --out "$mine" --quiet >"$WORK/mine.log" 2>&1; then
  fail "device1 a symlink: shard succeeded"
else
  grep -q "not a rank folder" "$WORK/mine.log" && [ -f "$WORK/elsewhere/keep.txt" ] &&
    ok "device1 a symlink: refused, its target untouched" ||
    fail "device1 a symlink: $(cat "$WORK/mine.log"); target holds $(ls "$WORK/elsewhere")"
fi
# two runs on one --out: the second is refused while the first holds it (here flock(1) does)
flock "$again" sleep 3 &
holder=$!
sleep 0.5
if "$SS" shard "$seed" --ranks 2 --out "$again" --quiet >"$WORK/busy.log" 2>&1; then
  fail "a second run on a busy --out succeeded"
else
  grep -q "another 'shardserve shard' is writing there" "$WORK/busy.log" &&
    ok "a second run on a busy --out: $(cat "$WORK/busy.log")" || fail "busy --out: $(cat "$WORK/busy.log")"
fi
wait "$holder"
# what a run killed while it wrote left (its stage folder) is cleared by the next run; a stage
# folder with anything else in it, one a publish left half done (the earlier split's folders
# inside), or a symlink in its place is refused and kept
mkdir -p "$again/.shard-partial/device0" && touch "$again/.shard-partial/manifest.json" "$again/.shard-partial/device0/x.onnx"
if "$SS" shard "$seed" --ranks 2 --out "$again" --quiet && [ ! -e "$again/.shard-partial" ] && [ -f "$again/manifest.json" ]; then
  ok "a killed run's stage folder: cleared by the next run"
else
  fail "a killed run's stage folder: left $(find "$again" | tr '\n' ' ')"
fi
stage_refused() { # NAME PHRASE: set up .shard-partial first; the run must refuse and keep it
  if "$SS" shard "$seed" --ranks 2 --out "$again" --quiet >"$WORK/$1.log" 2>&1; then
    fail "$1: shard succeeded"
  elif grep -qF -- "$2" "$WORK/$1.log" && [ -e "$again/.shard-partial" ] && [ -f "$again/manifest.json" ]; then
    ok "$1: $(cat "$WORK/$1.log")"
  else
    fail "$1: $(cat "$WORK/$1.log"); left $(find "$again" | tr '\n' ' ')"
  fi
  rm -rf "$again/.shard-partial"
}
mkdir -p "$again/.shard-partial" && echo mine >"$again/.shard-partial/notes.txt"
stage_refused stage_foreign_file "holds files this tool did not write"
mkdir -p "$again/.shard-partial/old-device0" && touch "$again/.shard-partial/old-manifest.json"
stage_refused stage_interrupted_publish "stopped while moving its split in"
ln -s "$WORK/elsewhere" "$again/.shard-partial"
stage_refused stage_symlink "not a folder this tool made"
[ -f "$WORK/elsewhere/keep.txt" ] && ok "the symlinked stage folder's target is untouched" || fail "the symlinked stage folder's target lost keep.txt"
# a rank folder holding a subfolder of the user's is refused, not emptied
mkdir -p "$again/device0/mynotes" && echo mine >"$again/device0/mynotes/a.txt"
if "$SS" shard "$seed" --ranks 2 --out "$again" --quiet >"$WORK/sub.log" 2>&1; then
  fail "a subfolder in device0: shard succeeded"
else
  grep -q "with subfolders" "$WORK/sub.log" && [ -f "$again/device0/mynotes/a.txt" ] && [ -f "$again/device0/group_config.json" ] &&
    ok "a subfolder in device0: refused, untouched" || fail "a subfolder in device0: $(cat "$WORK/sub.log")"
fi
finish
