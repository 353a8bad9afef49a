#!/usr/bin/python3
"""MindSpore's tensor_add as ONNX: y = x1 + x2 over 2x2 float32 (the file the example's
servable_config.py declares as tensor_add.mindir, found as its .onnx sibling)."""
import sys

import onnx
from onnx import TensorProto, helper

graph = helper.make_graph(
    [helper.make_node("Add", ["x1", "x2"], ["y"], name="add")], "tensor_add",
    [helper.make_tensor_value_info("x1", TensorProto.FLOAT, [2, 2]),
     helper.make_tensor_value_info("x2", TensorProto.FLOAT, [2, 2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.save_model(model, sys.argv[1])
