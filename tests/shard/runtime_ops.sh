#!/bin/bash
# The shard tool takes its elementwise ops from the runtime's op table: an op the runtime knows
# as elementwise stays on split tensors. y = Sin(Softsign(x @ W1)) @ W2 over 2 ranks (neither op
# was on the shard tool's old list of its own): column-parallel W1, both ops on the split, then
# row-parallel W2, so each rank holds exactly one AllReduce and no AllGather; y matches numpy.
# usage: runtime_ops.sh shm|mpi
. "$(dirname "$0")/common.sh"
backend=$1
[ "$backend" = mpi ] && mpi_setup
$PY - "$WORK" <<'PY' || fail "making the model"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
out = sys.argv[1]
rng = np.random.default_rng(7)
w1 = rng.standard_normal((16, 32)).astype(np.float32) * 0.25
w2 = rng.standard_normal((32, 16)).astype(np.float32) * 0.25
x = rng.standard_normal((8, 16)).astype(np.float32)
g = helper.make_graph(
    [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
     helper.make_node("Softsign", ["h"], ["a"], name="softsign"),
     helper.make_node("Sin", ["a"], ["b"], name="sin"),
     helper.make_node("MatMul", ["b", "W2"], ["y"], name="mm2")],
    "runtime_ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 16])],
    initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 8
onnx.save_model(m, out + "/model.onnx")
np.save(out + "/x.npy", x)
h = x @ w1
np.save(out + "/y_ref.npy", np.sin(h / (1 + np.abs(h))) @ w2)
PY
shard_and_run 2 "$backend" "--ranks 2" --input "x=$WORK/x.npy" || finish "$backend"
$PY - "$WORK" <<'PY' || fail "collectives or outputs wrong"
import sys
import numpy as np
import onnx
work, ok = sys.argv[1], True
for r in range(2):
    ops = [n.op_type for n in onnx.load(f"{work}/shards-2/device{r}/model.onnx", load_external_data=False).graph.node]
    good = ops.count("AllReduce") == 1 and "AllGather" not in ops
    print(f"{'ok  ' if good else 'FAIL'} rank {r}: {ops}, want one AllReduce and no AllGather")
    ok &= good
y, ref = np.load(f"{work}/out-2/y.npy"), np.load(f"{work}/y_ref.npy")
good = y.shape == ref.shape and np.allclose(y, ref, atol=1e-5)
print(f"{'ok  ' if good else 'FAIL'} y {y.shape}: max |y - numpy| {np.abs(y - ref).max() if y.shape == ref.shape else 'shape'}")
sys.exit(0 if ok and good else 1)
PY
finish "$backend"
