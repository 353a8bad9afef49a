#!/bin/bash
# String initializers and string Constants through the shard tool: a model whose outputs include
# a string initializer (through Identity) and a string Constant is split over 2 ranks; each
# shard must carry those values as ONNX strings (string_data). The tool used to write the
# in-memory string records as raw_data (64 bytes of pointers), so no shard held the strings.
# usage: strings.sh
. "$(dirname "$0")/common.sh"
$PY - "$WORK" <<'PY' || fail "making the model"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper
out = sys.argv[1]
S = helper.make_tensor("S", TensorProto.STRING, [4], [b"1.5", b"", b"-3", b"a\x00b"])
K = helper.make_tensor("Kv", TensorProto.STRING, [2], [b"ten", b"twenty"])
g = helper.make_graph(
    [helper.make_node("Constant", [], ["K"], value=K),
     helper.make_node("Identity", ["S"], ["s_out"]),
     helper.make_node("Identity", ["K"], ["k_out"]),
     helper.make_node("Neg", ["x"], ["y"])],
    "strings", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]),
     helper.make_tensor_value_info("s_out", TensorProto.STRING, [4]),
     helper.make_tensor_value_info("k_out", TensorProto.STRING, [2])], initializer=[S])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 8
onnx.save_model(m, out + "/model.onnx")
PY
if ! "$SS" shard "$WORK/model.onnx" --ranks 2 --out "$WORK/shards" >"$WORK/shard.log" 2>&1; then
  cat "$WORK/shard.log"
  fail "shard --ranks 2"
fi
$PY - "$WORK" <<'PY' || fail "string values lost in the shards"
import sys
import onnx
from onnx import numpy_helper
work, ok = sys.argv[1], True
want = {"s_out": [b"1.5", b"", b"-3", b"a\x00b"], "k_out": [b"ten", b"twenty"]}
for r in range(2):
    inits = {i.name: i for i in onnx.load(f"{work}/shards/device{r}/model.onnx").graph.initializer}
    for name, values in want.items():
        t = inits.get(name)
        got = list(t.string_data) if t is not None else None
        good = got == values and t.data_type == onnx.TensorProto.STRING and not t.raw_data
        print(f"{'ok  ' if good else 'FAIL'} rank {r} {name}: {got} (raw_data {len(t.raw_data) if t is not None else '-'} bytes)")
        ok &= good
sys.exit(0 if ok else 1)
PY
finish shm
