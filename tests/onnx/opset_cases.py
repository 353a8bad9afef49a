#!/usr/bin/python3
"""Backend-test cases for opsets 18-21, hand-built from the operator specification.

Debian's python3-onnx 1.12 stops at opset 17, so these models are ModelProtos with
opset_import 18..21 written with onnx.helper and never passed to the checker; numpy is the
oracle. Usage: opset_cases.py OUTDIR  (writes OUTDIR/test_<name>/model.onnx + test_data_set_0)
"""
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

rng = np.random.default_rng(11)
T = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.int64): onnx.TensorProto.INT64}


def case(out, name, opset, nodes, inputs, outputs, inits=()):
    """inputs/outputs: lists of (name, array); inits: (name, array) constants."""
    vi = lambda n, a: helper.make_tensor_value_info(n, T[a.dtype], list(a.shape))
    g = helper.make_graph(nodes, name, [vi(n, a) for n, a in inputs], [vi(n, a) for n, a in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    d = os.path.join(out, "test_" + name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(m.SerializeToString())
    for kind, vals in (("input", inputs), ("output", outputs)):
        for i, (n, a) in enumerate(vals):
            with open(os.path.join(d, "test_data_set_0", f"{kind}_{i}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(a, n).SerializeToString())


REDUCE = {
    "ReduceMean": lambda x, ax, kd: np.mean(x, axis=ax, keepdims=kd),
    "ReduceMax": lambda x, ax, kd: np.max(x, axis=ax, keepdims=kd),
    "ReduceMin": lambda x, ax, kd: np.min(x, axis=ax, keepdims=kd),
    "ReduceProd": lambda x, ax, kd: np.prod(x, axis=ax, keepdims=kd),
    "ReduceL1": lambda x, ax, kd: np.sum(np.abs(x), axis=ax, keepdims=kd),
    "ReduceL2": lambda x, ax, kd: np.sqrt(np.sum(x * x, axis=ax, keepdims=kd)),
    "ReduceLogSum": lambda x, ax, kd: np.log(np.sum(x, axis=ax, keepdims=kd)),
    "ReduceLogSumExp": lambda x, ax, kd: np.log(np.sum(np.exp(x), axis=ax, keepdims=kd)),
    "ReduceSumSquare": lambda x, ax, kd: np.sum(x * x, axis=ax, keepdims=kd),
    "ReduceSum": lambda x, ax, kd: np.sum(x, axis=ax, keepdims=kd),
}


def reduce_cases(out):
    x = rng.uniform(0.5, 1.5, (3, 4, 5)).astype(np.float32)
    for op, f in REDUCE.items():
        # axes as a constant input, keepdims both ways
        for kd in (0, 1):
            axes = np.array([0, -1], np.int64)
            y = f(x.astype(np.float64), (0, 2), bool(kd)).astype(np.float32)
            case(out, f"{op.lower()}_axes_input_keepdims{kd}_op18", 18,
                 [helper.make_node(op, ["x", "axes"], ["y"], keepdims=kd)],
                 [("x", x)], [("y", y)], [("axes", axes)])
        # no axes: all of them; noop_with_empty_axes: the identity
        y = f(x.astype(np.float64), None, True).astype(np.float32)
        case(out, f"{op.lower()}_no_axes_op18", 18, [helper.make_node(op, ["x"], ["y"])],
             [("x", x)], [("y", y)])
        case(out, f"{op.lower()}_noop_empty_axes_op18", 18,
             [helper.make_node(op, ["x"], ["y"], noop_with_empty_axes=1)], [("x", x)], [("y", x)])
    # axes as a graph input (its value is read at plan time), at the newest opset
    axes = np.array([1], np.int64)
    case(out, "reducemean_axes_graph_input_op21", 21,
         [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)],
         [("x", x), ("axes", axes)], [("y", x.mean(axis=1, keepdims=True))])


def split_cases(out):
    x = rng.standard_normal((2, 7)).astype(np.float32)
    # num_outputs: ceil(7/3) = 3, 3, then the rest (1)
    case(out, "split_num_outputs_uneven_op18", 18,
         [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)],
         [("x", x)], [("a", x[:, 0:3]), ("b", x[:, 3:6]), ("c", x[:, 6:7])])
    x = rng.standard_normal((6, 2)).astype(np.float32)
    case(out, "split_num_outputs_even_op18", 18,
         [helper.make_node("Split", ["x"], ["a", "b"], axis=0, num_outputs=2)],
         [("x", x)], [("a", x[:3]), ("b", x[3:])])
    case(out, "split_input_op18", 18,
         [helper.make_node("Split", ["x", "s"], ["a", "b"], axis=0)],
         [("x", x)], [("a", x[:1]), ("b", x[1:])], [("s", np.array([1, 5], np.int64))])


def pad_cases(out):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    pads = np.array([1, 2, 0, 3], np.int64)  # begins of axes (1, -1), then their ends
    y = np.pad(x, [(0, 0), (1, 0), (2, 3)], constant_values=1.5)
    case(out, "pad_axes_constant_op18", 18,
         [helper.make_node("Pad", ["x", "pads", "v", "axes"], ["y"], mode="constant")],
         [("x", x)], [("y", y)],
         [("pads", pads), ("v", np.array(1.5, np.float32)), ("axes", np.array([1, -1], np.int64))])
    y = np.pad(x, [(0, 0), (0, 0), (2, 1)], mode="reflect")
    case(out, "pad_axes_reflect_no_value_op18", 18,
         [helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], mode="reflect")],
         [("x", x)], [("y", y)], [("pads", np.array([2, 1], np.int64)), ("axes", np.array([2], np.int64))])
    # pads no larger than the dim: numpy 1.24 mis-wraps a pad longer than the axis on both sides
    y = np.pad(x, [(0, 0), (2, 1), (3, 4)], mode="wrap")
    case(out, "pad_wrap_op19", 19, [helper.make_node("Pad", ["x", "pads"], ["y"], mode="wrap")],
         [("x", x)], [("y", y)], [("pads", np.array([0, 2, 3, 0, 1, 4], np.int64))])


def unchanged_cases(out):
    """Ops whose semantics did not change after 17 load and run at 19, 20 and 21."""
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    e = np.exp(x.transpose(0, 2, 1) - x.transpose(0, 2, 1).max(-1, keepdims=True))
    soft = (e / e.sum(-1, keepdims=True))
    for opset in (19, 20, 21):
        nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
                 helper.make_node("Softmax", ["t"], ["s"], axis=-1),
                 helper.make_node("Shape", ["s"], ["shp"]),
                 helper.make_node("Reshape", ["s", "shp"], ["r"]),
                 helper.make_node("Cast", ["r"], ["c"], to=onnx.TensorProto.FLOAT),
                 helper.make_node("Relu", ["c"], ["y"])]
        case(out, f"transpose_softmax_reshape_cast_op{opset}", opset, nodes, [("x", x)],
             [("y", soft.astype(np.float32))])
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    y = x.reshape(1, 2, 3, 2, 3, 2).mean(axis=(3, 5))
    case(out, "averagepool_dilations_one_op19", 19,
         [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                           dilations=[1, 1])], [("x", x)], [("y", y)])


if __name__ == "__main__":
    out = sys.argv[1]
    for f in (reduce_cases, split_cases, pad_cases, unchanged_cases):
        f(out)
