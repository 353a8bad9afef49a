#!/usr/bin/python3
"""Backend-test cases for default-domain ops that Debian's onnx 1.12 test data does not cover and
whose arithmetic onnxruntime defines in detail: LpPool (p = 1, 2, 3, 4; 1-D, 2-D, 3-D; pads,
auto_pad, strides; opset 18's dilations and ceil_mode), GlobalLpPool, and MaxRoiPool (Fast
R-CNN's rounding, rois partly or wholly outside the image, malformed rois, spatial_scale).

Writes OUTDIR/test_<name>/model.onnx + test_data_set_0/input_N.pb without outputs:
onnxruntime-node is the oracle and writes them (ort_oracle.js). Usage: ort_op_cases.py OUTDIR
"""
import os
import shutil
import sys

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contrib_cases import case as contrib_case  # noqa: E402

rng = np.random.default_rng(2027)
F = TensorProto.FLOAT


def case(out, name, node, inputs, opset):
    """inputs: (name, float32 array); one float output 'y' (contrib_cases' writer)."""
    contrib_case(out, name, [node], inputs, [("y", F)], opset=opset)


def x(*shape):
    return rng.uniform(-2, 2, shape).astype(np.float32)


def lppool_cases(out):
    def lp(name, shape, opset=11, **attrs):
        case(out, "lppool_" + name, helper.make_node("LpPool", ["x"], ["y"], **attrs),
             [("x", x(*shape))], opset)

    lp("2d_p2_pads_strides", (1, 3, 9, 9), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], p=2)
    lp("2d_p1_same_upper", (2, 2, 7, 6), kernel_shape=[2, 3], auto_pad="SAME_UPPER", p=1)
    lp("2d_p3_asymmetric_pads", (1, 2, 8, 7), kernel_shape=[3, 2], pads=[0, 1, 2, 0], p=3)
    lp("2d_p4_valid", (1, 1, 6, 6), kernel_shape=[4, 4], auto_pad="VALID", p=4)
    lp("1d_p2", (2, 3, 11), kernel_shape=[3], strides=[2], p=2)
    lp("3d_p2", (1, 2, 5, 6, 4), kernel_shape=[2, 3, 2], pads=[1, 0, 1, 0, 1, 1], p=2)
    lp("default_p", (1, 2, 5, 5), kernel_shape=[2, 2])
    lp("opset18_dilations_ceil", (1, 2, 10, 9), opset=18, kernel_shape=[3, 2], strides=[2, 2],
       dilations=[2, 2], ceil_mode=1, p=2)
    lp("opset18_p3_ceil_pads", (1, 1, 7, 7), opset=18, kernel_shape=[2, 2], strides=[2, 2],
       pads=[1, 1, 0, 0], ceil_mode=1, p=3)


def global_lppool_cases(out):
    def glp(name, shape, **attrs):
        case(out, "globallppool_" + name, helper.make_node("GlobalLpPool", ["x"], ["y"], **attrs),
             [("x", x(*shape))], 11)

    glp("p2", (2, 3, 5, 5))
    glp("p1_1d", (1, 4, 9), p=1)
    glp("p3_3d", (1, 2, 3, 4, 5), p=3)


def maxroipool_cases(out):
    def mrp(name, xs, rois, **attrs):
        case(out, "maxroipool_" + name, helper.make_node("MaxRoiPool", ["x", "rois"], ["y"], **attrs),
             [("x", x(*xs)), ("rois", np.array(rois, dtype=np.float32))], 1)

    rois = [[0, 0, 0, 9, 11],      # the whole image
            [1, 2.4, 1.5, 6.5, 7.6],  # fractional corners: rounding half away from zero
            [0, 7, 9, 3, 2],       # malformed (end before start): forced to 1x1
            [1, -4, -3, 2, 3],     # starts outside the image
            [0, 8, 10, 30, 40],    # ends outside the image
            [1, 20, 20, 25, 25]]   # wholly outside: every bin is 0
    mrp("3x2", (2, 3, 12, 10), rois, pooled_shape=[3, 2])
    mrp("1x1", (2, 2, 12, 10), rois, pooled_shape=[1, 1])
    mrp("scale_half_4x5", (2, 2, 8, 9), [[0, 0, 0, 17, 15], [1, 3, 3, 9.5, 12.2], [1, 1, 1, 1, 1]],
        pooled_shape=[4, 5], spatial_scale=0.5)


def main():
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for make in (lppool_cases, global_lppool_cases, maxroipool_cases):
        make(out)


if __name__ == "__main__":
    main()
