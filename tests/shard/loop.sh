#!/bin/bash
# A Loop whose body reads an outer value that the tool splits: h = Relu(x @ W1) (column-parallel),
# acc = 3 x h by a Loop reading h from the outer scope, y = acc @ W2. The body's outer reads must
# be materialized on every rank (under their own names) and sent across a stage cut; y matches
# numpy for 2x1, 4x1, 1x2 and 2x2 (ranks per stage x stages).
# usage: loop.sh shm|mpi
. "$(dirname "$0")/common.sh"
backend=$1
[ "$backend" = mpi ] && mpi_setup
$PY - "$WORK" <<'PY' || fail "making the model"
import sys
import numpy as np
import onnx
from onnx import TensorProto as T, helper, numpy_helper
out = sys.argv[1]
rng = np.random.default_rng(16)
w1 = rng.standard_normal((16, 32)).astype(np.float32) * 0.25
w2 = rng.standard_normal((32, 16)).astype(np.float32) * 0.25
x = rng.standard_normal((8, 16)).astype(np.float32)
f = lambda n, s, e=T.FLOAT: helper.make_tensor_value_info(n, e, s)
body = helper.make_graph(
    [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Add", ["y", "h"], ["y_out"])],
    "body", [f("i", [], T.INT64), f("c", [], T.BOOL), f("y", [8, 32])], [f("c_out", [], T.BOOL), f("y_out", [8, 32])])
g = helper.make_graph(
    [helper.make_node("MatMul", ["x", "W1"], ["m"], name="mm1"),
     helper.make_node("Relu", ["m"], ["h"], name="relu"),
     helper.make_node("Loop", ["M", "", "y0"], ["acc"], body=body, name="loop"),
     helper.make_node("MatMul", ["acc", "W2"], ["y"], name="mm2")],
    "loop_outer_split", [f("x", [8, 16])], [f("y", [8, 16])],
    initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2"),
                 numpy_helper.from_array(np.int64(3), "M"),
                 numpy_helper.from_array(np.zeros((8, 32), np.float32), "y0")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 8
onnx.save_model(m, out + "/model.onnx")
np.save(out + "/x.npy", x)
np.save(out + "/y_ref.npy", (3 * np.maximum(x @ w1, 0)) @ w2)
PY
mkdir -p "$WORK/ref" && mv "$WORK/y_ref.npy" "$WORK/ref/y.npy"
dirs=""
for cfg in 2x1 4x1 1x2 2x2; do
  tp=${cfg%x*} st=${cfg#*x}
  shard_and_run "$cfg" "$backend" "--ranks $((tp * st)) --stages $st" --input "x=$WORK/x.npy" &&
    dirs="$dirs $WORK/out-$cfg"
done
# shellcheck disable=SC2086
[ -n "$dirs" ] && { $PY "$TOOL" compare "$WORK/ref" 1e-5 y $dirs || fail "y differs from numpy"; }
finish "$backend"
