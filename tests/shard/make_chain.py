#!/usr/bin/python3
"""A MatMul -> Relu chain for the sharding tests: y = L layers of Relu(x @ W_i), x[batch, dim].

Usage: /usr/bin/python3 make_chain.py OUT.onnx --dim D --layers L --batch B [--seed S]
Weights are He-scaled normals (activations stay O(1)), stored as external data next to the model
(OUT.onnx.data). Also writes OUT_x.npy, a float32 input of shape [batch, dim].
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    nodes, inits, prev = [], [], "x"
    for i in range(a.layers):
        w = (rng.standard_normal((a.dim, a.dim), dtype=np.float32) * np.float32(np.sqrt(2.0 / a.dim)))
        inits.append(numpy_helper.from_array(w, name=f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"))
        out = "y" if i == a.layers - 1 else f"h{i}"
        nodes.append(helper.make_node("Relu", [f"mm{i}"], [out], name=f"relu{i}"))
        prev = out
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [a.batch, a.dim])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [a.batch, a.dim])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="shardserve-test")
    model.ir_version = 8
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    onnx.save_model(model, a.out, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(a.out) + ".data", size_threshold=0)
    np.save(a.out[:-5] + "_x.npy" if a.out.endswith(".onnx") else a.out + "_x.npy",
            rng.uniform(-1, 1, (a.batch, a.dim)).astype(np.float32))


if __name__ == "__main__":
    main()
