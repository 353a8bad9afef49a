#!/usr/bin/python3
"""Backend-test cases for onnxruntime's quantized com.microsoft ops, as its static and dynamic
quantization write them: QLinearAdd and QLinearMul (broadcasting, scalar operands, no output zero
point), QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax (opset 12 rows, opset 13 along an axis),
QLinearGlobalAveragePool (NCHW and channels_last),
QLinearAveragePool (pads, strides, count_include_pad, ceil_mode; NCHW and channels_last),
NhwcMaxPool, QLinearWhere, QAttention, QEmbedLayerNormalization and a quantized BERT layer made
of them (float32 outputs compared with onnx-test's default tolerance),
QLinearConcat (operands quantized like the output and not), QGemm (float or quantized out,
transposes, per-column B, int32 C), MatMulIntegerToFloat (per-tensor and per-column B, bias),
DynamicQuantizeMatMul, and the com.microsoft QuantizeLinear/DequantizeLinear (16-bit types, per
axis, float16 scales); uint8 and int8.

Writes OUTDIR/test_<name>/model.onnx + test_data_set_0/input_N.pb: onnxruntime-node is the
oracle and writes the outputs (ort_oracle.js), which onnx-test compares exactly (quantized
outputs are integers). Usage: ort_qlinear_cases.py OUTDIR
"""
import os
import shutil
import sys

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contrib_cases import case, node  # noqa: E402

rng = np.random.default_rng(2028)
F = TensorProto.FLOAT
Q = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


def q(dt, *shape):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def scale(v):
    return np.array(v, np.float32)


def zp(dt, v):
    return np.array(v, dt)


def qbinary_cases(out):
    for op in ("QLinearAdd", "QLinearMul"):
        for dt, zs in ((np.uint8, (128, 120, 131)), (np.int8, (3, -5, 0))):
            name = op[7:].lower() + "_" + np.dtype(dt).name
            sa, sb, sc = (0.02, 0.03, 0.05) if op == "QLinearAdd" else (0.02, 0.03, 0.2)
            ins = ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"]
            inits = [("sa", scale(sa)), ("za", zp(dt, zs[0])), ("sb", scale(sb)),
                     ("zb", zp(dt, zs[1])), ("sc", scale(sc)), ("zc", zp(dt, zs[2]))]
            case(out, "ms_q" + name, [node(op, ins, ["y"])],
                 [("a", q(dt, 2, 3, 8)), ("b", q(dt, 2, 3, 8))], [("y", Q[dt])], inits)
            case(out, "ms_q" + name + "_broadcast", [node(op, ins, ["y"])],
                 [("a", q(dt, 2, 3, 8)), ("b", q(dt, 3, 1))], [("y", Q[dt])], inits)
            case(out, "ms_q" + name + "_scalar", [node(op, ins, ["y"])],
                 [("a", q(dt, 4, 5)), ("b", q(dt))], [("y", Q[dt])], inits)
        # no C_zero_point (7 inputs): 0
        ins = ["a", "sa", "za", "b", "sb", "zb", "sc"]
        case(out, "ms_q%s_no_output_zero_point" % op[7:].lower(), [node(op, ins, ["y"])],
             [("a", q(np.uint8, 3, 7)), ("b", q(np.uint8, 3, 7))], [("y", TensorProto.UINT8)],
             [("sa", scale(0.01)), ("za", zp(np.uint8, 128)), ("sb", scale(0.02)),
              ("zb", zp(np.uint8, 128)), ("sc", scale(0.04 if op == "QLinearAdd" else 0.5))])


def qunary_cases(out):
    for dt, zx, zy in ((np.uint8, 128, 0), (np.int8, 0, -128)):
        inits = [("sx", scale(0.05)), ("zx", zp(dt, zx)), ("sy", scale(1 / 256)), ("zy", zp(dt, zy))]
        ins = ["x", "sx", "zx", "sy", "zy"]
        case(out, "ms_qsigmoid_" + np.dtype(dt).name, [node("QLinearSigmoid", ins, ["y"])],
             [("x", q(dt, 2, 4, 16))], [("y", Q[dt])], inits)
        inits[2:] = [("sy", scale(0.04)), ("zy", zp(dt, zx))]
        case(out, "ms_qleakyrelu_" + np.dtype(dt).name,
             [node("QLinearLeakyRelu", ins, ["y"], alpha=0.1)], [("x", q(dt, 3, 40))],
             [("y", Q[dt])], inits)
    case(out, "ms_qleakyrelu_default_alpha", [node("QLinearLeakyRelu", ["x", "sx", "zx", "sy", "zy"],
                                                   ["y"])],
         [("x", q(np.uint8, 64))], [("y", TensorProto.UINT8)],
         [("sx", scale(0.1)), ("zx", zp(np.uint8, 100)), ("sy", scale(0.05)), ("zy", zp(np.uint8, 10))])


def qsoftmax_cases(out):
    ins = ["x", "sx", "zx", "sy", "zy"]
    for dt, zx, zy in ((np.uint8, 128, 0), (np.int8, 0, -128)):
        name = np.dtype(dt).name
        inits = [("sx", scale(0.08)), ("zx", zp(dt, zx)), ("sy", scale(1 / 256)), ("zy", zp(dt, zy))]
        case(out, "ms_qsoftmax_last_axis_" + name,
             [node("QLinearSoftmax", ins, ["y"], opset=13)], [("x", q(dt, 3, 4, 10))],
             [("y", Q[dt])], inits)
        case(out, "ms_qsoftmax_axis1_" + name,
             [node("QLinearSoftmax", ins, ["y"], axis=1, opset=13)], [("x", q(dt, 2, 7, 5))],
             [("y", Q[dt])], inits)
        case(out, "ms_qsoftmax_opset12_flat_" + name,
             [node("QLinearSoftmax", ins, ["y"], axis=1, opset=12)], [("x", q(dt, 2, 3, 4))],
             [("y", Q[dt])], inits)
        case(out, "ms_qsoftmax_opset12_default_axis_" + name,
             [node("QLinearSoftmax", ins, ["y"], opset=12)], [("x", q(dt, 2, 3, 4))],
             [("y", Q[dt])], inits)


def qgap_cases(out):
    for dt, zx, zy in ((np.uint8, 7, 3), (np.int8, -4, 2)):
        inits = [("sx", scale(0.03)), ("zx", zp(dt, zx)), ("sy", scale(0.02)), ("zy", zp(dt, zy))]
        ins = ["x", "sx", "zx", "sy", "zy"]
        case(out, "ms_qglobalavgpool_" + np.dtype(dt).name,
             [node("QLinearGlobalAveragePool", ins, ["y"])], [("x", q(dt, 2, 5, 7, 6))],
             [("y", Q[dt])], inits)
        case(out, "ms_qglobalavgpool_nhwc_" + np.dtype(dt).name,
             [node("QLinearGlobalAveragePool", ins, ["y"], channels_last=1)],
             [("x", q(dt, 2, 7, 6, 5))], [("y", Q[dt])], inits)


def qavgpool_cases(out):
    ins = ["x", "sx", "zx", "sy", "zy"]
    for dt, zx, zy in ((np.uint8, 128, 120), (np.int8, 0, -3)):
        name = np.dtype(dt).name
        inits = [("sx", scale(0.03)), ("zx", zp(dt, zx)), ("sy", scale(0.025)), ("zy", zp(dt, zy))]
        case(out, "ms_qavgpool_" + name,
             [node("QLinearAveragePool", ins, ["y"], kernel_shape=[3, 3], strides=[2, 2],
                   pads=[1, 1, 1, 1])], [("x", q(dt, 2, 3, 9, 8))], [("y", Q[dt])], inits)
        case(out, "ms_qavgpool_include_pad_" + name,
             [node("QLinearAveragePool", ins, ["y"], kernel_shape=[2, 3], pads=[1, 0, 1, 1],
                   count_include_pad=1)], [("x", q(dt, 1, 4, 6, 7))], [("y", Q[dt])], inits)
    case(out, "ms_qavgpool_1d_ceil", [node("QLinearAveragePool", ins, ["y"], kernel_shape=[3],
                                           strides=[2], ceil_mode=1)],
         [("x", q(np.uint8, 2, 2, 10))], [("y", TensorProto.UINT8)],
         [("sx", scale(0.05)), ("zx", zp(np.uint8, 10)), ("sy", scale(0.05)), ("zy", zp(np.uint8, 10))])


def qavgpool_nhwc_cases(out):
    ins = ["x", "sx", "zx", "sy", "zy"]
    for dt, zx, zy in ((np.uint8, 128, 120), (np.int8, 0, -3)):
        inits = [("sx", scale(0.03)), ("zx", zp(dt, zx)), ("sy", scale(0.025)), ("zy", zp(dt, zy))]
        case(out, "ms_qavgpool_nhwc_" + np.dtype(dt).name,
             [node("QLinearAveragePool", ins, ["y"], kernel_shape=[3, 2], strides=[2, 1],
                   pads=[1, 0, 1, 1], channels_last=1)], [("x", q(dt, 2, 9, 7, 3))],
             [("y", Q[dt])], inits)


def nhwc_maxpool_cases(out):
    for dt in (np.uint8, np.int8):
        name = np.dtype(dt).name
        case(out, "ms_nhwcmaxpool_" + name,
             [node("NhwcMaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                   pads=[1, 1, 1, 1])], [("x", q(dt, 2, 9, 8, 5))], [("y", Q[dt])])
        case(out, "ms_nhwcmaxpool_dilated_ceil_" + name,
             [node("NhwcMaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                   dilations=[2, 1], ceil_mode=1)], [("x", q(dt, 1, 10, 9, 3))], [("y", Q[dt])])
    case(out, "ms_nhwcmaxpool_same_upper",
         [node("NhwcMaxPool", ["x"], ["y"], kernel_shape=[2, 3], auto_pad="SAME_UPPER")],
         [("x", q(np.uint8, 1, 5, 6, 4))], [("y", TensorProto.UINT8)])


def qwhere_cases(out):
    ins = ["c", "x", "sx", "zx", "y", "sy", "zy", "sz", "zz"]
    for dt, zs in ((np.uint8, (100, 128, 110)), (np.int8, (-3, 5, 0))):
        name = np.dtype(dt).name
        inits = [("sx", scale(0.1)), ("zx", zp(dt, zs[0])), ("sy", scale(0.23)),
                 ("zy", zp(dt, zs[1])), ("sz", scale(0.15)), ("zz", zp(dt, zs[2]))]
        case(out, "ms_qwhere_" + name, [node("QLinearWhere", ins, ["z"])],
             [("c", rng.integers(0, 2, (2, 3, 4)).astype(bool)), ("x", q(dt, 2, 3, 4)),
              ("y", q(dt, 2, 3, 4))], [("z", Q[dt])], inits)
        case(out, "ms_qwhere_broadcast_" + name, [node("QLinearWhere", ins, ["z"])],
             [("c", rng.integers(0, 2, (3, 1)).astype(bool)), ("x", q(dt, 1, 5)),
              ("y", q(dt))], [("z", Q[dt])], inits)
    # X quantized as Z is: copied unchanged
    case(out, "ms_qwhere_same_scale", [node("QLinearWhere", ins, ["z"])],
         [("c", rng.integers(0, 2, 16).astype(bool)), ("x", q(np.uint8, 16)),
          ("y", q(np.uint8, 16))], [("z", TensorProto.UINT8)],
         [("sx", scale(0.15)), ("zx", zp(np.uint8, 110)), ("sy", scale(0.5)),
          ("zy", zp(np.uint8, 0)), ("sz", scale(0.15)), ("zz", zp(np.uint8, 110))])


def qattention_cases(out):
    """onnxruntime's QAttention (quantize_dynamic of a BERT or GPT-2 attention block); outputs are
    float32, compared with onnx-test's default tolerance."""
    B, S, D, N = 2, 5, 16, 4
    ins = ["x", "w", "bias", "sx", "sw", "mask", "zx", "zw", "past"]
    bias = rng.uniform(-0.5, 0.5, 3 * D).astype(np.float32)
    for wdt in (np.int8, np.uint8):
        name = np.dtype(wdt).name
        case(out, "ms_qattention_" + name, [node("QAttention", ins[:8], ["y"], num_heads=N)],
             [("x", q(np.uint8, B, S, D)), ("mask", np.array([5, 3], np.int32))], [("y", F)],
             [("w", q(wdt, D, 3 * D)), ("bias", bias), ("sx", scale(0.02)), ("sw", scale(0.01)),
              ("zx", zp(np.uint8, 128)), ("zw", zp(wdt, 2))])
    case(out, "ms_qattention_per_column_raw_mask",
         [node("QAttention", ins[:8], ["y"], num_heads=N)],
         [("x", q(np.uint8, B, S, D)), ("mask", rng.integers(0, 2, (B, S)).astype(np.int32))],
         [("y", F)],
         [("w", q(np.int8, D, 3 * D)), ("bias", bias), ("sx", scale(0.02)),
          ("sw", rng.uniform(0.005, 0.02, 3 * D).astype(np.float32)), ("zx", zp(np.uint8, 120)),
          ("zw", q(np.int8, 3 * D))])
    P = 3
    case(out, "ms_qattention_unidirectional_past",
         [node("QAttention", ["x", "w", "bias", "sx", "sw", "", "zx", "", "past"], ["y", "present"],
               num_heads=N, unidirectional=1)],
         [("x", q(np.uint8, B, 2, D)),
          ("past", rng.uniform(-1, 1, (2, B, N, P, D // N)).astype(np.float32))],
         [("y", F), ("present", F)],
         [("w", q(np.int8, D, 3 * D)), ("bias", bias), ("sx", scale(0.03)), ("sw", scale(0.01)),
          ("zx", zp(np.uint8, 128))])


def qembed_inits(V, P, D, with_segment):
    u8 = lambda *s: q(np.uint8, *s)
    inits = [("we", u8(V, D)), ("pe", u8(P, D))] + ([("se", u8(2, D))] if with_segment else [])
    inits += [("g", rng.integers(100, 255, D).astype(np.uint8)), ("b", u8(D)),
              ("wes", scale(0.01)), ("pes", scale(0.005))]
    inits += ([("ses", scale(0.02))] if with_segment else [])
    inits += [("gs", scale(0.008)), ("bs", scale(0.004)), ("wez", zp(np.uint8, 128)),
              ("pez", zp(np.uint8, 120))]
    inits += ([("sez", zp(np.uint8, 128))] if with_segment else [])
    return inits + [("gz", zp(np.uint8, 0)), ("bz", zp(np.uint8, 128))]


def qembed_cases(out):
    """onnxruntime's QEmbedLayerNormalization (quantize_dynamic of BERT's embedding block)."""
    V, P, D, B, S = 30, 12, 16, 2, 7
    ids = rng.integers(0, V, (B, S)).astype(np.int32)
    names = ["ids", "seg", "we", "pe", "se", "g", "b", "mask", "wes", "pes", "ses", "gs", "bs",
             "wez", "pez", "sez", "gz", "bz"]
    case(out, "ms_qembedlayernorm", [node("QEmbedLayerNormalization", names, ["y", "mi"],
                                          epsilon=1e-5)],
         [("ids", ids), ("seg", rng.integers(0, 2, (B, S)).astype(np.int32)),
          ("mask", np.array([[1, 2, 1, 1, 0, 1, 1], [1] * 4 + [0] * 3], np.int32))],
         [("y", F), ("mi", TensorProto.INT32)], qembed_inits(V, P, D, True))  # only 1s count
    no_seg = [n if n not in ("seg", "se", "ses", "sez", "mask") else "" for n in names]
    case(out, "ms_qembedlayernorm_no_segment",
         [node("QEmbedLayerNormalization", no_seg, ["y", "mi"])], [("ids", ids)],
         [("y", F), ("mi", TensorProto.INT32)],
         qembed_inits(V, P, D, False))


def quantized_bert_layer_case(out):
    """The pattern of onnxruntime's quantize_dynamic of an optimized BERT: ids into
    QEmbedLayerNormalization, its output quantized (DynamicQuantizeLinear) into QAttention with
    the embedding's mask_index, a residual Add."""
    V, P, D, B, S, N = 30, 12, 16, 2, 6, 2
    names = ["ids", "", "we", "pe", "", "g", "b", "mask", "wes", "pes", "", "gs", "bs", "wez",
             "pez", "", "gz", "bz"]
    nodes = [node("QEmbedLayerNormalization", names, ["e", "mi"]),
             helper.make_node("DynamicQuantizeLinear", ["e"], ["eq", "es", "ez"]),
             node("QAttention", ["eq", "w", "bias", "es", "sw", "mi", "ez", "zw"], ["a"],
                  num_heads=N),
             helper.make_node("Add", ["a", "e"], ["y"])]
    inits = qembed_inits(V, P, D, False) + [
        ("w", q(np.int8, D, 3 * D)), ("bias", rng.uniform(-0.5, 0.5, 3 * D).astype(np.float32)),
        ("sw", scale(0.02)), ("zw", zp(np.int8, 0))]
    case(out, "ms_quantized_bert_layer", nodes,
         [("ids", rng.integers(0, V, (B, S)).astype(np.int32)),
          ("mask", np.array([[1] * 6, [1] * 5 + [0]], np.int32))], [("y", F)], inits)


def qconcat_cases(out):
    for dt, zs in ((np.uint8, (128, 128, 100)), (np.int8, (0, 0, -20))):
        ins = ["sy", "zy", "a", "sa", "za", "b", "sb", "zb", "c", "sc", "zc"]
        inits = [("sy", scale(0.05)), ("zy", zp(dt, zs[0])), ("sa", scale(0.05)),
                 ("za", zp(dt, zs[1])), ("sb", scale(0.11)), ("zb", zp(dt, zs[2])),
                 ("sc", scale(0.02)), ("zc", zp(dt, zs[1]))]
        case(out, "ms_qconcat_" + np.dtype(dt).name, [node("QLinearConcat", ins, ["y"], axis=1)],
             [("a", q(dt, 2, 3, 4)), ("b", q(dt, 2, 2, 4)), ("c", q(dt, 2, 5, 4))],
             [("y", Q[dt])], inits)
        case(out, "ms_qconcat_last_axis_" + np.dtype(dt).name,
             [node("QLinearConcat", ins, ["y"], axis=-1)],
             [("a", q(dt, 3, 2)), ("b", q(dt, 3, 5)), ("c", q(dt, 3, 1))], [("y", Q[dt])], inits)


def qmatmul_cases(out):
    for bdt in (np.uint8, np.int8):
        b = q(bdt, 16, 6)
        bias = rng.uniform(-1, 1, 6).astype(np.float32)
        name = np.dtype(bdt).name
        case(out, "ms_matmulintegertofloat_" + name,
             [node("MatMulIntegerToFloat", ["a", "b", "sa", "sb", "za", "zb", "bias"], ["y"])],
             [("a", q(np.uint8, 2, 3, 16))], [("y", F)],
             [("b", b), ("sa", scale(0.02)), ("sb", scale(0.01)), ("za", zp(np.uint8, 120)),
              ("zb", zp(bdt, 3)), ("bias", bias)])
        case(out, "ms_matmulintegertofloat_per_column_" + name,
             [node("MatMulIntegerToFloat", ["a", "b", "sa", "sb", "", "zb"], ["y"])],
             [("a", q(np.uint8, 4, 16))], [("y", F)],
             [("b", b), ("sa", scale(0.05)), ("sb", rng.uniform(0.005, 0.02, 6).astype(np.float32)),
              ("zb", q(bdt, 6))])
        case(out, "ms_dynamicquantizematmul_" + name,
             [node("DynamicQuantizeMatMul", ["a", "b", "sb", "zb", "bias"], ["y"])],
             [("a", rng.uniform(-2, 3, (5, 16)).astype(np.float32))], [("y", F)],
             [("b", b), ("sb", scale(0.01)), ("zb", zp(bdt, 2)), ("bias", bias)])
    case(out, "ms_dynamicquantizematmul_positive_a",
         [node("DynamicQuantizeMatMul", ["a", "b", "sb"], ["y"])],
         [("a", rng.uniform(0.5, 4, (2, 3, 8)).astype(np.float32))], [("y", F)],
         [("b", q(np.int8, 8, 4)), ("sb", rng.uniform(0.01, 0.03, 4).astype(np.float32))])


def vnni_matmul_cases(out):
    """Shapes that take the int8 VNNI path in several pieces: more rows than one block (64), K not
    a multiple of 4, columns over several 64-column groups, batches, a B that is a graph input
    (packed per run, broadcast over batches), per-row and per-column zero points, and K long
    enough that the int32 sums wrap (onnxruntime's MLAS wraps alike: both are exact mod 2^32)."""
    for adt, bdt in ((np.uint8, np.int8), (np.int8, np.uint8), (np.int8, np.int8), (np.uint8, np.uint8)):
        name = np.dtype(adt).name + "_" + np.dtype(bdt).name
        case(out, "vnni_matmulinteger_" + name,
             [helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])],
             [("a", q(adt, 3, 70, 37))], [("y", TensorProto.INT32)],
             [("b", q(bdt, 37, 130)), ("za", zp(adt, 7)), ("zb", q(bdt, 130))])
    # the spec allows a zero point per row of A; onnxruntime refuses it, so numpy answers
    a, b, za = q(np.uint8, 66, 40), q(np.int8, 40, 70), q(np.uint8, 66)
    case(out, "vnni_matmulinteger_per_row_a_zero_point",
         [helper.make_node("MatMulInteger", ["a", "b", "za"], ["y"])],
         [("a", a)], [("y", TensorProto.INT32)], [("b", b), ("za", za)],
         expected=[((a.astype(np.int64) - za[:, None]) @ b.astype(np.int64)).astype(np.int32)])
    case(out, "vnni_matmulinteger_b_input",
         [helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])],
         [("a", q(np.uint8, 2, 3, 9, 21)), ("b", q(np.int8, 3, 21, 70))], [("y", TensorProto.INT32)],
         [("za", zp(np.uint8, 128)), ("zb", zp(np.int8, -3))])
    case(out, "vnni_matmulinteger_wraps",
         [helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])],
         [("a", np.full((2, 40000), 255, np.uint8))], [("y", TensorProto.INT32)],
         [("b", np.full((40000, 3), -128, np.int8)), ("za", zp(np.uint8, 0)), ("zb", zp(np.int8, 127))])
    case(out, "vnni_qlinearmatmul_per_column",
         [helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])],
         [("a", q(np.uint8, 100, 64))], [("y", TensorProto.UINT8)],
         [("sa", scale(0.02)), ("za", zp(np.uint8, 128)), ("b", q(np.int8, 64, 96)),
          ("sb", rng.uniform(0.002, 0.006, 96).astype(np.float32)), ("zb", zp(np.int8, 0)),
          ("sy", scale(0.5)), ("zy", zp(np.uint8, 128))], opset=21)
    # QGemm and QAttention's projection on the same path: 2 row blocks, 3 column groups, K 37
    case(out, "ms_qgemm_vnni_trans_b",
         [node("QGemm", ["a", "sa", "za", "b", "sb", "zb", "c", "sy", "zy"], ["y"], transB=1)],
         [("a", q(np.uint8, 70, 37))], [("y", TensorProto.UINT8)],
         [("sa", scale(0.02)), ("za", zp(np.uint8, 120)), ("b", q(np.int8, 130, 37)),
          ("sb", rng.uniform(0.002, 0.004, 130).astype(np.float32)), ("zb", q(np.int8, 130)),
          ("c", rng.integers(-3000, 3000, 130).astype(np.int32)), ("sy", scale(0.3)),
          ("zy", zp(np.uint8, 128))])
    B, S, D = 2, 40, 64
    case(out, "ms_qattention_vnni",
         [node("QAttention", ["x", "w", "bias", "sx", "sw", "mask", "zx", "zw"], ["y"], num_heads=4)],
         [("x", q(np.uint8, B, S, D)), ("mask", np.array([40, 23], np.int32))], [("y", F)],
         [("w", q(np.int8, D, 3 * D)), ("bias", rng.uniform(-0.5, 0.5, 3 * D).astype(np.float32)),
          ("sx", scale(0.01)), ("sw", rng.uniform(0.001, 0.003, 3 * D).astype(np.float32)),
          ("zx", zp(np.uint8, 125)), ("zw", zp(np.int8, 0))])
    # quantize_dynamic's own pattern, large enough (81920 values) that DynamicQuantizeLinear and
    # Cast run over the worker pool's parts
    case(out, "vnni_quantize_dynamic_pattern",
         [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
          helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["yi"]),
          helper.make_node("Cast", ["yi"], ["yf"], to=TensorProto.FLOAT),
          helper.make_node("Mul", ["xs", "ws"], ["s"]),
          helper.make_node("Mul", ["yf", "s"], ["y"])],
         [("x", rng.uniform(-3, 2, (320, 256)).astype(np.float32))], [("y", F)],
         [("w", q(np.int8, 256, 300)), ("wz", zp(np.int8, 0)), ("ws", scale(0.004))])
    # A of 76800 values: its range is taken over the pool's parts (the minimum in the last part)
    a = rng.uniform(-2, 3, (600, 128)).astype(np.float32)
    a[599, 100] = -6.5
    case(out, "ms_dynamicquantizematmul_parallel_range",
         [node("DynamicQuantizeMatMul", ["a", "b", "sb", "zb"], ["y"])], [("a", a)], [("y", F)],
         [("b", q(np.int8, 128, 40)), ("sb", scale(0.01)), ("zb", q(np.int8, 40))])
    b = q(np.int8, 64, 200)
    case(out, "ms_dynamicquantizematmul_vnni",
         [node("DynamicQuantizeMatMul", ["a", "b", "sb", "zb", "bias"], ["y"])],
         [("a", rng.uniform(-2, 3, (130, 64)).astype(np.float32))], [("y", F)],
         [("b", b), ("sb", rng.uniform(0.005, 0.02, 200).astype(np.float32)), ("zb", q(np.int8, 200)),
          ("bias", rng.uniform(-1, 1, 200).astype(np.float32))])
    case(out, "ms_matmulintegertofloat_vnni",
         [node("MatMulIntegerToFloat", ["a", "b", "sa", "sb", "za", "zb"], ["y"])],
         [("a", q(np.uint8, 1, 70, 64))], [("y", F)],
         [("b", b), ("sa", scale(0.03)), ("sb", scale(0.01)), ("za", zp(np.uint8, 100)), ("zb", zp(np.int8, 1))])


def qgemm_cases(out):
    ins = ["a", "sa", "za", "b", "sb", "zb", "c", "sy", "zy"]
    for bdt in (np.int8, np.uint8):
        name = np.dtype(bdt).name
        common = [("sa", scale(0.02)), ("za", zp(np.uint8, 128)), ("zb", zp(bdt, 1))]
        case(out, "ms_qgemm_float_out_" + name, [node("QGemm", ins[:7], ["y"], transB=1)],
             [("a", q(np.uint8, 5, 12))], [("y", F)],
             common + [("b", q(bdt, 7, 12)), ("sb", scale(0.01)),
                       ("c", rng.integers(-3000, 3000, 7).astype(np.int32))])
        per_column = [("sa", scale(0.02)), ("za", zp(np.uint8, 128)), ("zb", q(bdt, 6))]
        case(out, "ms_qgemm_quantized_out_" + name,
             [node("QGemm", ins, ["y"], alpha=0.5)], [("a", q(np.uint8, 4, 16))],
             [("y", TensorProto.UINT8)],
             per_column + [("b", q(bdt, 16, 6)), ("sb", rng.uniform(0.005, 0.02, 6).astype(np.float32)),
                       ("c", rng.integers(-3000, 3000, (4, 6)).astype(np.int32)),
                       ("sy", scale(0.05)), ("zy", zp(np.uint8, 100))])
    case(out, "ms_qgemm_int8_out_trans_a",
         [node("QGemm", ["a", "sa", "za", "b", "sb", "zb", "", "sy", "zy"], ["y"], transA=1)],
         [("a", q(np.int8, 9, 3))], [("y", TensorProto.INT8)],
         [("sa", scale(0.03)), ("za", zp(np.int8, -2)), ("b", q(np.int8, 9, 5)),
          ("sb", scale(0.02)), ("zb", zp(np.int8, 0)), ("sy", scale(0.04)), ("zy", zp(np.int8, 5))])


def ms_qdq_cases(out):
    """onnxruntime's com.microsoft QuantizeLinear / DequantizeLinear: 16-bit types, per axis,
    float16 scales."""
    x = rng.uniform(-3, 3, (2, 3, 4)).astype(np.float32)
    for dt, z in ((np.uint16, 30000), (np.int16, -7), (np.uint8, 128), (np.int8, 3)):
        name = np.dtype(dt).name
        case(out, "ms_quantize_" + name, [node("QuantizeLinear", ["x", "s", "z"], ["y"])],
             [("x", x)], [("y", {np.uint16: TensorProto.UINT16, np.int16: TensorProto.INT16,
                                  np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}[dt])],
             [("s", scale(0.001 if dt in (np.uint16, np.int16) else 0.02)), ("z", zp(dt, z))])
    case(out, "ms_dequantize_int16_per_axis",
         [node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=1)],
         [("x", rng.integers(-30000, 30000, (2, 3, 4)).astype(np.int16))], [("y", F)],
         [("s", np.array([0.001, 0.002, 0.0005], np.float32)), ("z", np.array([1, -2, 3], np.int16))])
    case(out, "ms_dequantize_uint8_f16_scale",
         [node("DequantizeLinear", ["x", "s", "z"], ["y"])], [("x", q(np.uint8, 3, 5))],
         [("y", TensorProto.FLOAT16)], [("s", np.array(0.0625, np.float16)), ("z", zp(np.uint8, 120))])


def qconv_vnni_cases(out):
    """QLinearConv and ConvInteger wide enough (16+ output channels per group) for the runtime's
    VNNI path (exact int8 sums; other CPUs take the float64 path), and depthwise ones (the direct
    int32 kernel): uint8 and int8 activations,
    int8 and uint8 weights, per-channel scales and zero points, pads, strides, dilations, groups,
    1-D, uint8 and int8 outputs. Compared exactly, as every case here."""
    ins = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"]

    def qconv(name, x, w, zx, zw, sw, zy, attrs, bias=True, b=None):
        M = w.shape[0]
        inits = [("sx", scale(0.02)), ("zx", zx), ("w", w), ("sw", sw), ("zw", zw),
                 ("sy", scale(0.6)), ("zy", zy)]
        if bias:
            inits.append(("b", rng.integers(-2000, 2000, M).astype(np.int32) if b is None else b))
        case(out, name, [helper.make_node("QLinearConv", ins if bias else ins[:8], ["y"], **attrs)],
             [("x", x)], [("y", Q[zy.dtype.type])], inits)

    per_ch = rng.uniform(0.005, 0.02, 32).astype(np.float32)
    qconv("qlinearconv_vnni_u8_s8", q(np.uint8, 2, 24, 9, 11), q(np.int8, 32, 24, 3, 3),
          zp(np.uint8, 131), np.zeros(32, np.int8), per_ch, zp(np.uint8, 100),
          dict(pads=[1, 1, 1, 1], strides=[2, 1]))
    qconv("qlinearconv_vnni_s8_s8", q(np.int8, 1, 20, 8, 8), q(np.int8, 32, 20, 3, 3),
          zp(np.int8, -7), zp(np.int8, 0), scale(0.01), zp(np.int8, 3),
          dict(pads=[2, 2, 2, 2], dilations=[2, 2]))
    qconv("qlinearconv_vnni_u8_u8_group", q(np.uint8, 1, 8, 7, 7), q(np.uint8, 32, 4, 3, 3),
          zp(np.uint8, 120), zp(np.uint8, 126), scale(0.01), zp(np.uint8, 128),
          dict(group=2, pads=[1, 0, 1, 0]), bias=False)
    qconv("qlinearconv_vnni_1d", q(np.uint8, 2, 17, 30), q(np.int8, 48, 17, 5),
          zp(np.uint8, 128), zp(np.int8, 0), scale(0.01), zp(np.uint8, 128),
          dict(strides=[3], pads=[2, 1]))
    # one channel's bias near int32's limit: the requantization cannot use int32 sums for this
    # call (qconv_requant's wide path), the other channels' values check it
    big = rng.integers(-2000, 2000, 32).astype(np.int32)
    big[5] = 2146000000  # + this channel's sums stays below 2^31 (onnxruntime adds in int32)
    qconv("qlinearconv_vnni_wide_sums", q(np.uint8, 1, 24, 8, 8), q(np.uint8, 32, 24, 3, 3),
          zp(np.uint8, 131), zp(np.uint8, 126), per_ch, zp(np.uint8, 100),
          dict(pads=[1, 1, 1, 1]), b=big)
    # depthwise (one channel per group): the direct int32 kernel, on every CPU
    dw_ch = rng.uniform(0.005, 0.02, 12).astype(np.float32)
    qconv("qlinearconv_depthwise_u8_s8", q(np.uint8, 2, 12, 9, 10), q(np.int8, 12, 1, 3, 3),
          zp(np.uint8, 119), q(np.int8, 12), dw_ch, zp(np.uint8, 128),
          dict(group=12, pads=[1, 1, 1, 1], strides=[2, 2]))
    qconv("qlinearconv_depthwise_s8_dilated", q(np.int8, 1, 8, 11, 11), q(np.int8, 8, 1, 3, 3),
          zp(np.int8, 5), zp(np.int8, 0), scale(0.01), zp(np.int8, -4),
          dict(group=8, pads=[2, 1, 2, 3], dilations=[2, 2]), bias=False)
    qconv("qlinearconv_depthwise_1d", q(np.uint8, 1, 6, 20), q(np.uint8, 6, 1, 5),
          zp(np.uint8, 128), zp(np.uint8, 130), scale(0.01), zp(np.uint8, 128),
          dict(group=6, pads=[2, 2], strides=[3]))
    case(out, "convinteger_depthwise", [helper.make_node("ConvInteger", ["x", "w", "zx"], ["y"],
                                                         group=4, pads=[1, 1, 1, 1])],
         [("x", q(np.uint8, 1, 4, 5, 6))], [("y", TensorProto.INT32)],
         [("w", q(np.uint8, 4, 1, 3, 3)), ("zx", zp(np.uint8, 100))])
    case(out, "convinteger_vnni", [helper.make_node("ConvInteger", ["x", "w", "zx", "zw"], ["y"],
                                                    pads=[1, 1, 1, 1])],
         [("x", q(np.uint8, 1, 16, 6, 6))], [("y", TensorProto.INT32)],
         [("w", q(np.uint8, 16, 16, 3, 3)), ("zx", zp(np.uint8, 200)), ("zw", zp(np.uint8, 7))])


def qconv_replanned_case(out):
    """8 QLinearConvs whose weights are folded at plan time (Transpose of an int8 initializer), a
    dynamic batch and 16 data sets of changing batch: every data set re-plans. A packed copy keyed
    by a folded value's address once served another conv after a re-plan (found by review)."""
    import onnx
    from onnx import numpy_helper
    inits = [("xs", scale(0.02)), ("xz", zp(np.uint8, 100)), ("ws", scale(0.03)),
             ("wz", zp(np.int8, 0)), ("ys", scale(0.5)), ("yz", zp(np.uint8, 128))]
    nodes, outs = [], []
    for c in range(8):
        inits.append(("w%d" % c, q(np.int8, 4, 16, 1, 1)))
        nodes += [helper.make_node("Transpose", ["w%d" % c], ["W%d" % c], perm=[1, 0, 2, 3]),
                  helper.make_node("QLinearConv", ["x", "xs", "xz", "W%d" % c, "ws", "wz", "ys",
                                                   "yz"], ["y%d" % c])]
        outs.append("y%d" % c)
    g = helper.make_graph(nodes, "replanned",
                          [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 4, 3, 3])],
                          [helper.make_tensor_value_info(o, TensorProto.UINT8, None) for o in outs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    d = os.path.join(out, "test_qlinearconv_folded_weights_replanned")
    os.makedirs(d, exist_ok=True)
    onnx.save(m, os.path.join(d, "model.onnx"))
    for k, n in enumerate([1, 2, 3, 1, 4, 2, 5, 1, 3, 6, 2, 1, 7, 3, 2, 1]):
        os.makedirs(os.path.join(d, "test_data_set_%d" % k), exist_ok=True)
        with open(os.path.join(d, "test_data_set_%d" % k, "input_0.pb"), "wb") as f:
            f.write(numpy_helper.from_array(q(np.uint8, n, 4, 3, 3), "x").SerializeToString())


def qoperator_cnn_case(out):
    """The pattern of onnxruntime's static quantization of a CNN (QOperator format): float in,
    QuantizeLinear, QLinearConv, a residual QLinearAdd, QLinearGlobalAveragePool, DequantizeLinear."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "sx", "zx", "w", "sw", "zw", "sh", "zh", "bias"],
                              ["hq"], pads=[1, 1, 1, 1]),
             node("QLinearAdd", ["hq", "sh", "zh", "xq", "sx", "zx", "ss", "zs"], ["sq"]),
             node("QLinearGlobalAveragePool", ["sq", "ss", "zs", "sp", "zp"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "sp", "zp"], ["y"])]
    inits = [("sx", scale(0.02)), ("zx", zp(np.uint8, 128)), ("w", q(np.int8, 4, 4, 3, 3)),
             ("sw", scale(0.01)), ("zw", zp(np.int8, 0)), ("sh", scale(0.05)), ("zh", zp(np.uint8, 120)),
             ("bias", rng.integers(-500, 500, 4).astype(np.int32)), ("ss", scale(0.06)),
             ("zs", zp(np.uint8, 125)), ("sp", scale(0.01)), ("zp", zp(np.uint8, 128))]
    case(out, "ms_qoperator_cnn", nodes, [("x", rng.uniform(-2, 2, (2, 4, 6, 6)).astype(np.float32))],
         [("y", F)], inits)


def main():
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    qbinary_cases(out)
    qunary_cases(out)
    qsoftmax_cases(out)
    qgap_cases(out)
    qconcat_cases(out)
    qavgpool_cases(out)
    qavgpool_nhwc_cases(out)
    nhwc_maxpool_cases(out)
    qwhere_cases(out)
    qattention_cases(out)
    qembed_cases(out)
    quantized_bert_layer_case(out)
    qmatmul_cases(out)
    vnni_matmul_cases(out)
    qgemm_cases(out)
    ms_qdq_cases(out)
    qoperator_cnn_case(out)
    qconv_vnni_cases(out)
    qconv_replanned_case(out)
    print("ort_qlinear_cases: %d cases in %s" % (len(os.listdir(out)), out))


if __name__ == "__main__":
    main()
