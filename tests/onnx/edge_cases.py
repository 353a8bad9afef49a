#!/usr/bin/python3
"""Backend-test cases at the edges a fuzzer found (tests/onnx.cmake runs them in every build, so the
sanitizer build checks them too): tensors with a zero dimension through the ops that copy rows
(their buffers may be empty, and C's memcpy wants valid pointers even for zero bytes), integer
reductions that overflow (they wrap, as numpy's do, instead of being undefined), GridSample
coordinates far outside the image (converted to integers only after clamping) and a RoiAlign roi
with a NaN corner (its samples are outside the image).

numpy is the oracle. Usage: edge_cases.py OUTDIR  (writes OUTDIR/test_<name>/model.onnx +
test_data_set_0)
"""
import sys

import numpy as np
from onnx import helper

from opset_cases import case as opset_case  # this folder is on sys.path


def case(out, name, nodes, inputs, outputs, inits=(), opset=17):
    opset_case(out, name, opset, nodes, inputs, outputs, inits)


def empty_cases(out):
    node = helper.make_node
    x = np.zeros((3, 3, 0), np.float32)
    c = np.array([True, False, True])
    case(out, "compress_empty_rows", [node("Compress", ["x", "c"], ["y"], axis=0)],
         [("x", x), ("c", c)], [("y", np.compress(c, x, axis=0))])
    # an empty initializer as the data: no buffer behind it
    data = np.zeros((1, 0), np.float32)
    ind = np.zeros((1, 2, 1), np.int64)
    case(out, "gathernd_empty_initializer", [node("GatherND", ["x", "i"], ["y"])], [("i", ind)],
         [("y", np.zeros((1, 2, 0), np.float32))], inits=[("x", data)])
    e = np.zeros((0, 3), np.float32)
    case(out, "scatterelements_empty", [node("ScatterElements", ["x", "i", "u"], ["y"], axis=0)],
         [("x", e), ("i", np.zeros((0, 3), np.int64)), ("u", e)], [("y", e)])
    a, b = np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32)
    case(out, "matmul_empty_k", [node("MatMul", ["a", "b"], ["y"])], [("a", a), ("b", b)],
         [("y", a @ b)])
    a = np.zeros((0, 5), np.float32)
    b = np.arange(10, dtype=np.float32).reshape(5, 2)
    case(out, "matmul_empty_m", [node("MatMul", ["a", "b"], ["y"])], [("a", a), ("b", b)],
         [("y", a @ b)])
    # a batch of 0 against a batch of 1 broadcasts to 0 (it became 1: a product read past A)
    a, b = np.zeros((0, 4, 8), np.float32), np.ones((8, 4), np.float32)
    case(out, "matmul_empty_batch", [node("MatMul", ["a", "b"], ["y"])], [("a", a), ("b", b)],
         [("y", a @ b)])
    b1 = np.ones((1, 8, 4), np.float32)
    case(out, "matmul_empty_batch_b1", [node("MatMul", ["a", "b"], ["y"])], [("a", a), ("b", b1)],
         [("y", a @ b1)])
    au, bu = np.zeros((0, 4, 8), np.uint8), np.ones((8, 4), np.uint8)
    case(out, "matmulinteger_empty_batch", [node("MatMulInteger", ["a", "b"], ["y"])],
         [("a", au), ("b", bu)], [("y", np.zeros((0, 4, 4), np.int32))])
    e3, o3 = np.zeros((0, 3), np.float32), np.ones((1, 3), np.float32)
    case(out, "add_empty_broadcast", [node("Add", ["a", "b"], ["y"])], [("a", e3), ("b", o3)],
         [("y", e3 + o3)])
    # a batch of none through an LSTM: its state buffers are empty
    X = np.zeros((1, 0, 2), np.float32)
    W = np.ones((1, 8, 2), np.float32)
    R = np.ones((1, 8, 2), np.float32)
    case(out, "lstm_empty_batch", [node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=2)],
         [("X", X), ("W", W), ("R", R)], [("Y", np.zeros((1, 1, 0, 2), np.float32))])


def overflow_cases(out):
    node = helper.make_node
    big = np.array([[93, -5979372758783424000, 3], [2**62, 2**62, 1]], np.int64)
    with np.errstate(over="ignore"):
        for op, f in (("ReduceProd", lambda v: np.prod(v, axis=1)),
                      ("ReduceSum", lambda v: np.sum(v, axis=1)),
                      ("ReduceSumSquare", lambda v: np.sum(v * v, axis=1)),
                      ("ReduceL1", lambda v: np.sum(np.abs(v), axis=1))):
            case(out, op.lower() + "_int64_wraps", [node(op, ["x"], ["y"], axes=[1], keepdims=0)],
                 [("x", big)], [("y", f(big).astype(np.int64))], opset=12)
    lo = np.array([[np.iinfo(np.int64).min, 1]], np.int64)
    case(out, "reducel1_int64_min", [node("ReduceL1", ["x"], ["y"], axes=[1], keepdims=0)],
         [("x", lo)], [("y", np.array([np.iinfo(np.int64).min + 1], np.int64))], opset=12)


def gridsample_cases(out):
    node = helper.make_node
    img = np.array([[[[1, 2], [3, 4]]]], np.float32)
    # normalized (x, y): far right at mid height, far left, far below; huge beyond int64
    grid = np.array([[[[1e30, 0.0], [-1e30, 0.0], [0.0, 3e38]]]], np.float32)
    case(out, "gridsample_far_zeros", [node("GridSample", ["x", "g"], ["y"], padding_mode="zeros")],
         [("x", img), ("g", grid)], [("y", np.zeros((1, 1, 1, 3), np.float32))], opset=16)
    # border: the edge pixels, blended at mid height ((2 + 4) / 2 on the right, (1 + 3) / 2 on the
    # left) and the bottom row's mean at mid width ((3 + 4) / 2)
    case(out, "gridsample_far_border", [node("GridSample", ["x", "g"], ["y"], padding_mode="border")],
         [("x", img), ("g", grid)], [("y", np.array([[[[3, 2, 3.5]]]], np.float32))], opset=16)
    case(out, "gridsample_far_nearest", [node("GridSample", ["x", "g"], ["y"], mode="nearest",
                                              padding_mode="zeros")],
         [("x", img), ("g", grid)], [("y", np.zeros((1, 1, 1, 3), np.float32))], opset=16)


def roialign_cases(out):
    # a NaN corner with a fixed sampling grid: every sample falls outside the image (0), never an
    # integer conversion of NaN
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    rois = np.array([[0, 0, np.nan, 2]], np.float32)
    case(out, "roialign_nan_roi", [helper.make_node("RoiAlign", ["x", "r", "b"], ["y"], sampling_ratio=2,
                                                    output_height=2, output_width=2)],
         [("x", x), ("r", rois), ("b", np.zeros(1, np.int64))], [("y", np.zeros((1, 1, 2, 2), np.float32))],
         opset=16)


def main(out):
    roialign_cases(out)
    empty_cases(out)
    overflow_cases(out)
    gridsample_cases(out)


if __name__ == "__main__":
    main(sys.argv[1])
