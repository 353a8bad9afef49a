#!/usr/bin/python3
"""The C-plugin example's model: logits = MatMul(x[128,96], W[96,16]) with W[i, j] = (j - 7.5) / 96,
so a row's argmax is class 15 when its sum is positive and class 0 when negative. The seed's shape
(a 48 KiB input), with weights that make the postprocess's answer depend on the input."""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

w = np.tile((np.arange(16, dtype=np.float32) - 7.5) / 96, (96, 1))
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "W"], ["logits"], name="matmul")], "classify",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [128, 96])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [128, 16])],
    initializer=[numpy_helper.from_array(w, name="W")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.save_model(model, sys.argv[1])
