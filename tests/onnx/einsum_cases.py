#!/usr/bin/python3
"""Einsum cases beyond ONNX's five node cases, numpy.einsum as the oracle: attention-shaped
contractions, three operands, implicit outputs, "..." broadcast between operands, a trace,
integer inputs, and products in permuted output order (the batched-GEMM path). Usage: einsum_cases.py OUTDIR
"""
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

rng = np.random.default_rng(13)

CASES = [
    ("attention_scores", "bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)], np.float32),
    ("attention_values", "bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)], np.float32),
    ("chain_three", "ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)], np.float64),
    ("implicit_matmul", "ij,jk", [(3, 4), (4, 2)], np.float32),
    ("ellipsis_broadcast", "...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)], np.float32),
    ("trace", "ii", [(4, 4)], np.float32),
    ("outer", "i,j->ij", [(3,), (4,)], np.int64),
    ("sum_all", "ijk->", [(2, 3, 4)], np.int32),
    ("permuted_output", "bij,bjk->kbi", [(3, 4, 5), (3, 5, 2)], np.float32),
    ("outer_float", "i,j->ji", [(3,), (4,)], np.float32),
    ("summed_in_one", "ij,jk->k", [(3, 4), (4, 2)], np.float32),
    # ONNX allows spaces anywhere (they are dropped before parsing), even inside "..." and "->",
    # which numpy does not: its reference gets the equation without them
    ("spaces", " . . .ij , ...jk - > ...ik", [(2, 1, 3, 4), (5, 4, 2)], np.float32),
]


def main(out):
    for name, eq, shapes, dt in CASES:
        ins = [(rng.standard_normal(s) * 3).astype(dt) for s in shapes]
        y = np.asarray(np.einsum(eq.replace(" ", ""), *ins)).astype(dt)
        names = [f"x{i}" for i in range(len(ins))]
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dt)) if hasattr(helper, "np_dtype_to_tensor_dtype") \
            else onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[np.dtype(dt)]
        node = helper.make_node("Einsum", names, ["y"], equation=eq)
        graph = helper.make_graph(
            [node], name,
            [helper.make_tensor_value_info(n, elem, x.shape) for n, x in zip(names, ins)],
            [helper.make_tensor_value_info("y", elem, y.shape)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
        d = os.path.join(out, f"test_einsum_{name}")
        os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
        onnx.save(model, os.path.join(d, "model.onnx"))
        for kind, ns, ts in (("input", names, ins), ("output", ["y"], [y])):
            for i, (n, t) in enumerate(zip(ns, ts)):
                onnx.save_tensor(numpy_helper.from_array(t, n),
                                 os.path.join(d, "test_data_set_0", f"{kind}_{i}.pb"))


if __name__ == "__main__":
    main(sys.argv[1])
