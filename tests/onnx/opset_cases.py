#!/usr/bin/python3
"""Backend-test cases for opsets 18-21 (and Resize/Upsample of every opset), hand-built from the
operator specification.

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
T = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.int64): onnx.TensorProto.INT64,
     np.dtype(np.bool_): onnx.TensorProto.BOOL, np.dtype(np.uint8): onnx.TensorProto.UINT8,
     np.dtype(np.int32): onnx.TensorProto.INT32}


def case(out, name, opset, nodes, inputs, outputs, inits=()):
    """inputs/outputs: lists of (name, array); inits: (name, array) constants. edge_cases.py
    writes its cases with it too."""
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


def interp_axis(x, axis, coords):
    """Linear interpolation of x along axis at source coordinates, edges clamped (np.interp)."""
    x = np.moveaxis(x, axis, -1)
    src = np.arange(x.shape[-1])
    flat = x.reshape(-1, x.shape[-1])
    y = np.stack([np.interp(coords, src, row) for row in flat]).reshape(x.shape[:-1] + (len(coords),))
    return np.moveaxis(y, -1, axis)


def half_pixel(n_out, n_in, scale=None):
    s = n_out / n_in if scale is None else scale
    return (np.arange(n_out) + 0.5) / s - 0.5


def resize_cases(out):
    f32, i64 = np.float32, np.int64
    # Resize-10: scales input, asymmetric, nearest floors (np.repeat) and linear
    x = rng.standard_normal((1, 2, 3, 4)).astype(f32)
    case(out, "resize10_nearest_repeat", 10,
         [helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest")], [("x", x)],
         [("y", x.repeat(2, axis=2).repeat(3, axis=3))], [("s", np.array([1, 1, 2, 3], f32))])
    y = interp_axis(interp_axis(x.astype(np.float64), 2, np.arange(6) / 2), 3, np.arange(8) / 2)
    case(out, "resize10_linear_asymmetric", 10,
         [helper.make_node("Resize", ["x", "s"], ["y"], mode="linear")], [("x", x)],
         [("y", y.astype(f32))], [("s", np.array([1, 1, 2, 2], f32))])
    # Upsample-7 (scales attribute) and Resize-11 with an empty scales input and sizes
    case(out, "upsample7_nearest_attr", 7,
         [helper.make_node("Upsample", ["x"], ["y"], mode="nearest", scales=[1.0, 1.0, 2.0, 2.0])],
         [("x", x)], [("y", x.repeat(2, axis=2).repeat(2, axis=3))])
    # trilinear on a 5-D tensor, half_pixel, sizes on axes (opset 18)
    v = rng.standard_normal((1, 1, 3, 4, 5)).astype(f32)
    y = v.astype(np.float64)
    for ax, n in ((2, 5), (3, 7), (4, 3)):
        y = interp_axis(y, ax, half_pixel(n, v.shape[ax]))
    case(out, "resize18_trilinear_axes_sizes", 18,
         [helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear", axes=[2, 3, 4])],
         [("x", v)], [("y", y.astype(f32))], [("sz", np.array([5, 7, 3], i64))])
    # keep_aspect_ratio_policy not_larger: scale min(9/3, 10/4) = 2.5 on both axes (out 8 and 10)
    y = x.astype(np.float64)
    for ax in (2, 3):
        y = interp_axis(y, ax, half_pixel(round(x.shape[ax] * 2.5), x.shape[ax], 2.5))
    case(out, "resize18_linear_not_larger", 18,
         [helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear", axes=[2, 3],
                           keep_aspect_ratio_policy="not_larger")],
         [("x", x)], [("y", y.astype(f32))], [("sz", np.array([9, 10], i64))])
    # half_pixel_symmetric (19), downsampling by 0.6 along the last axis of 10
    w = rng.standard_normal((2, 10)).astype(f32)
    scale, n_out = 0.6, 6
    adj = n_out / (scale * 10)
    coords = 5 * (1 - adj) + (np.arange(n_out) + 0.5) / scale - 0.5
    case(out, "resize19_linear_half_pixel_symmetric", 19,
         [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear",
                           coordinate_transformation_mode="half_pixel_symmetric", axes=[1])],
         [("x", w)], [("y", interp_axis(w.astype(np.float64), 1, coords).astype(f32))],
         [("s", np.array([scale], f32))])
    # nearest on uint8, every nearest_mode, asymmetric: source x / (10 / 7)
    u = rng.integers(0, 255, (1, 7)).astype(np.uint8)
    T[np.dtype(np.uint8)] = onnx.TensorProto.UINT8
    src = np.arange(10) / (10 / 7)  # sizes: scale = out / in
    for mode, pick in (("round_prefer_floor", lambda c: np.where(c - np.floor(c) > 0.5, np.ceil(c), np.floor(c))),
                       ("round_prefer_ceil", lambda c: np.where(c - np.floor(c) >= 0.5, np.ceil(c), np.floor(c))),
                       ("floor", np.floor), ("ceil", np.ceil)):
        idx = np.clip(pick(src), 0, 6).astype(int)
        case(out, f"resize19_nearest_uint8_{mode}", 19,
             [helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="nearest",
                               coordinate_transformation_mode="asymmetric", nearest_mode=mode)],
             [("x", u)], [("y", u[:, idx])], [("sz", np.array([1, 10], i64))])


def row_parallel_cases(out):
    """Softmax, LogSoftmax, LayerNormalization and Transpose large enough (>= 65536 elements) to
    be split over the pool's threads (the test runs with OPENBLAS_NUM_THREADS=2), with row counts
    that do not divide evenly."""
    f32 = np.float32
    x = rng.standard_normal((3, 97, 263)).astype(f32) * 4
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    for op, y in (("Softmax", e / e.sum(axis=-1, keepdims=True)),
                  ("LogSoftmax", np.log(e / e.sum(axis=-1, keepdims=True)))):
        case(out, f"{op.lower()}_rows_parallel", 13, [helper.make_node(op, ["x"], ["y"], axis=-1)],
             [("x", x)], [("y", y.astype(f32))])
    x = rng.standard_normal((293, 257)).astype(f32) * 3 + 1
    sc, b = rng.standard_normal(257).astype(f32), rng.standard_normal(257).astype(f32)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    inv = 1 / np.sqrt(((x64 - mean) ** 2).mean(axis=-1, keepdims=True) + 1e-5)
    case(out, "layernorm_rows_parallel", 17,
         [helper.make_node("LayerNormalization", ["x", "sc", "b"], ["y", "m", "inv"], axis=-1)],
         [("x", x)], [("y", ((x64 - mean) * inv * sc + b).astype(f32)), ("m", mean.astype(f32)),
                      ("inv", inv.astype(f32))], [("sc", sc), ("b", b)])
    x = rng.standard_normal((3, 41, 23, 29)).astype(f32)
    for perm in ((0, 2, 1, 3), (0, 2, 3, 1)):
        case(out, "transpose_parallel_" + "".join(map(str, perm)), 13,
             [helper.make_node("Transpose", ["x"], ["y"], perm=list(perm))],
             [("x", x)], [("y", np.ascontiguousarray(x.transpose(perm)))])
    x = rng.standard_normal((277, 263)).astype(f32)
    case(out, "transpose_parallel_2d", 13, [helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])],
         [("x", x)], [("y", np.ascontiguousarray(x.T))])


if __name__ == "__main__":
    out = sys.argv[1]
    for f in (reduce_cases, split_cases, pad_cases, unchanged_cases, resize_cases,
              row_parallel_cases):
        f(out)
