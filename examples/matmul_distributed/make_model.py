#!/usr/bin/python3
"""The seed model (the role of MindSpore's net.py): y = Neg(MatMul(x[128,96], W[96,16] = 0.5)).

Usage: /usr/bin/python3 make_model.py OUT.onnx [--external]
--external stores W as ONNX external data next to the model (as large models do).
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build():
    w = numpy_helper.from_array(np.full((96, 16), 0.5, dtype=np.float32), name="W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
         helper.make_node("Neg", ["xw"], ["y"], name="neg")],
        "matmul_neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [128, 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [128, 16])],
        initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="shardserve-example")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--external", action="store_true")
    args = ap.parse_args()
    model = build()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.external:
        onnx.save_model(model, args.out, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(args.out) + ".data", size_threshold=0)
    else:
        onnx.save_model(model, args.out)


if __name__ == "__main__":
    main()
