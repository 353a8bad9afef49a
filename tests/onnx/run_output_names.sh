#!/usr/bin/env bash
# run_output_names.sh SHARDSERVE PYTHON WORKDIR
# `shardserve run --output-dir` writes an output named like tf2onnx's "model/dense:0" as one
# escaped file (model%2Fdense%3A0.npy) holding the right values, and never a path.
set -eu
bin=$1 py=$2 work=$3
rm -rf "$work" && mkdir -p "$work/out"
"$py" - "$work" <<'PY'
import sys, numpy as np, onnx
from onnx import helper, TensorProto
w = sys.argv[1]
g = helper.make_graph([helper.make_node("Neg", ["x"], ["model/dense:0"]),
                       helper.make_node("Relu", ["x"], [".."])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                      [helper.make_tensor_value_info("model/dense:0", TensorProto.FLOAT, [3]),
                       helper.make_tensor_value_info("..", TensorProto.FLOAT, [3])])
onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), w + "/m.onnx")
np.save(w + "/x.npy", np.array([1, -2, 3], np.float32))
PY
"$bin" run "$work/m.onnx" --input "x=$work/x.npy" --output-dir "$work/out"
ls "$work/out"
"$py" - "$work" <<'PY'
import sys, os, numpy as np
w = sys.argv[1]
files = sorted(os.listdir(w + "/out"))
assert files == ["%2E..npy", "model%2Fdense%3A0.npy"], files
assert (np.load(w + "/out/model%2Fdense%3A0.npy") == [-1, 2, -3]).all()
assert (np.load(w + "/out/%2E..npy") == [1, 0, 3]).all()
print("escaped output files ok")
PY
