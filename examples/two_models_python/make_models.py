#!/usr/bin/python3
"""The two_models example's ONNX files, written into the version folder given: add.onnx (y = a + b)
and mul.onnx (y = a * b) over 2x2 float32, and the same two graphs again as graphs_add.onnx and
graphs_mul.onnx, the subgraphs 0 and 1 of one model (a model file serves one declaration)."""
import os
import sys

import onnx
from onnx import TensorProto, helper


def binary(op, path):
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"], name=op.lower())], op.lower(),
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save_model(model, path)


folder = sys.argv[1]
for op, names in (("Add", ("add.onnx", "graphs_add.onnx")), ("Mul", ("mul.onnx", "graphs_mul.onnx"))):
    for name in names:
        binary(op, os.path.join(folder, name))
