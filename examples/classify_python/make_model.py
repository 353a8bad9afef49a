#!/usr/bin/python3
"""A small CIFAR-shaped CNN in ONNX for the image-classifier example: x[1,3,32,32] -> Conv 3x3 (8)
-> Relu -> MaxPool 2 -> Conv 3x3 (16) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> logits[1,10].
Seeded random weights: the example checks the served pipeline against the same model called
directly, not against a trained network's labels."""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.RandomState(13)
weights = {"w1": rng.randn(8, 3, 3, 3) * 0.5, "b1": rng.randn(8) * 0.1, "w2": rng.randn(16, 8, 3, 3) * 0.2,
           "b2": rng.randn(16) * 0.1, "w3": rng.randn(10, 16), "b3": rng.randn(10) * 0.1}
nodes = [
    helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c1"], ["r1"]),
    helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c2"], ["r2"]),
    helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
    helper.make_node("Flatten", ["g"], ["f"]),
    helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
]
graph = helper.make_graph(
    nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
    initializer=[numpy_helper.from_array(v.astype(np.float32), name=k) for k, v in weights.items()])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.save_model(model, sys.argv[1])
