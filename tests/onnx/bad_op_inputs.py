#!/usr/bin/python3
"""Bad attributes and inputs of the recurrent, loop, Einsum and signal ops, of onnxruntime's
quantized com.microsoft ops and of model-local functions, and window attributes or rois of absurd size
(Conv, pooling, ConvTranspose, RoiAlign) get an error naming the node and the problem, never a crash: each case is a one-node model run by `shardserve onnx-test`,
whose line must carry the expected words and whose exit code must be an ordinary failure.
Usage: bad_op_inputs.py SHARDSERVE OUTDIR
"""
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper, numpy_helper

vi = helper.make_tensor_value_info


def f32(*shape):
    return np.ones(shape, np.float32)


def write(out, name, node, feeds, opset=17, functions=()):
    ins = [vi(n, helper.np_dtype_to_tensor_dtype(v.dtype) if hasattr(helper, "np_dtype_to_tensor_dtype")
              else onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[v.dtype], v.shape) for n, v in feeds]
    graph = helper.make_graph([node], name, ins, [vi("y", T.FLOAT, None)])
    d = os.path.join(out, f"test_{name}")
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(node.domain, 1)] * (
        node.domain != "")
    m = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    m.ir_version = 8
    onnx.save(m, os.path.join(d, "model.onnx"))
    for i, (n, v) in enumerate(feeds):
        onnx.save_tensor(numpy_helper.from_array(v, n), os.path.join(d, "test_data_set_0", f"input_{i}.pb"))
    onnx.save_tensor(numpy_helper.from_array(f32(1), "y"), os.path.join(d, "test_data_set_0", "output_0.pb"))
    return d


def cases():
    two = [("x", f32(2, 3)), ("z", f32(3, 2))]
    yield "einsum_extra_term", helper.make_node("Einsum", ["x", "z"], ["y"], equation="ij,jk,kl"), two, \
        "equation has 3 terms for 2 inputs"
    yield "einsum_rank", helper.make_node("Einsum", ["x", "z"], ["y"], equation="i,jk"), two, \
        "equation term 0 does not match input rank 2"
    yield "einsum_sizes", helper.make_node("Einsum", ["x", "z"], ["y"], equation="ij,ij->i"), two, \
        "label sizes"
    # numpy and onnxruntime refuse it; it used to run and give [2,3,1]
    yield "einsum_new_output_label", helper.make_node("Einsum", ["x"], ["y"], equation="ij->ijk"), \
        two[:1], "output label 'k' is in no input term"
    lstm_in = [("X", f32(1, 2, 4)), ("W", f32(1, 11, 4)), ("R", f32(1, 12, 3))]
    yield "lstm_bad_w", helper.make_node("LSTM", ["X", "W", "R"], ["y"], hidden_size=3), lstm_in, \
        "input 'W' has the wrong type or shape"
    gru_in = [("X", f32(1, 2, 4)), ("W", f32(1, 9, 4)), ("R", f32(1, 9, 3))]
    yield "gru_bad_activation", helper.make_node("GRU", ["X", "W", "R"], ["y"], hidden_size=3,
                                                 activations=["Foo", "Tanh"]), gru_in, "activation 'Foo'"
    yield "rnn_bad_direction", helper.make_node("RNN", ["X", "W", "R"], ["y"], hidden_size=3,
                                                direction="sideways"), \
        [("X", f32(1, 2, 4)), ("W", f32(1, 3, 4)), ("R", f32(1, 3, 3))], "direction 'sideways'"
    yield "cumsum_axis", helper.make_node("CumSum", ["x", "a"], ["y"]), [("x", f32(3)), ("a", np.int64(5))], \
        "axis 5 is out of range"
    yield "hann_negative", helper.make_node("HannWindow", ["x"], ["y"]), [("x", np.int32(-3))], \
        "window size -3 is outside"
    yield "stft_frame", helper.make_node("STFT", ["x", "s", "", "l"], ["y"]), \
        [("x", f32(1, 8, 1)), ("s", np.int64(1)), ("l", np.int64(100))], "frame_length (or window) must be"
    yield "reversesequence_lens", helper.make_node("ReverseSequence", ["x", "s"], ["y"]), \
        [("x", f32(4, 2)), ("s", np.array([9, 1], np.int64))], "sequence_lens[0] = 9 is outside [0, 4]"
    body = helper.make_graph([helper.make_node("Identity", ["a"], ["ao"])], "b", [vi("a", T.FLOAT, [2])],
                             [vi("ao", T.FLOAT, [2])])
    yield "scan_axis", helper.make_node("Scan", ["x"], ["y"], body=body, num_scan_inputs=1,
                                        scan_input_axes=[7]), [("x", f32(3, 2))], \
        "'scan_input_axes'[0] is out of range"

    u8 = lambda *shape: np.full(shape, 7, np.uint8)  # noqa: E731
    sc = np.float32(0.1)
    ms = lambda op, ins, **attrs: helper.make_node(op, ins, ["y"], domain="com.microsoft", **attrs)  # noqa: E731
    yield "qgemm_empty_c", ms("QGemm", ["a", "sa", "za", "b", "sb", "zb", "c"]), \
        [("a", u8(2, 4)), ("sa", sc), ("za", np.uint8(1)), ("b", u8(4, 3)), ("sb", sc),
         ("zb", np.uint8(1)), ("c", np.zeros((0, 1), np.int32))], "C must be int32 broadcasting to [2, 3]"
    yield "qsigmoid_no_x", ms("QLinearSigmoid", ["", "sx", "zx", "sy", "zy"]), \
        [("sx", sc), ("zx", np.uint8(0)), ("sy", sc), ("zy", np.uint8(0))], "required input 0 is missing"
    yield "matmulintegertofloat_float_zero_point", ms("MatMulIntegerToFloat", ["a", "b", "sa", "sb", "za"]), \
        [("a", u8(2, 4)), ("b", u8(4, 3)), ("sa", sc), ("sb", sc), ("za", np.float32(1e30))], \
        "a_zero_point is float32, expected uint8"
    yield "qadd_zero_point_type", ms("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc"]), \
        [("a", u8(3)), ("sa", sc), ("za", np.int8(1)), ("b", u8(3)), ("sb", sc), ("zb", np.uint8(1)),
         ("sc", sc)], "A_zero_point is int8, expected uint8"
    yield "qconcat_inputs", ms("QLinearConcat", ["sy", "zy", "a", "sa"], axis=0), \
        [("sy", sc), ("zy", np.uint8(0)), ("a", u8(3)), ("sa", sc)], "has 4 inputs: expected Y_scale"
    yield "qwhere_condition_type", ms("QLinearWhere", ["c", "x", "sx", "zx", "x", "sx", "zx", "sx", "zx"]), \
        [("c", u8(3)), ("x", u8(3)), ("sx", sc), ("zx", np.uint8(0))], "condition is uint8, expected bool"
    yield "nhwcmaxpool_rank", ms("NhwcMaxPool", ["x"], kernel_shape=[2]), [("x", u8(4, 3))], \
        "X must have rank >= 3"
    bias = np.zeros(24, np.float32)
    yield "qattention_weight_rows", ms("QAttention", ["x", "w", "b", "sx", "sw"], num_heads=2), \
        [("x", u8(1, 3, 8)), ("w", u8(6, 24)), ("b", bias), ("sx", sc), ("sw", sc)], \
        "input must be [B, S, D] and weight [D, 3 * hidden]"
    yield "qattention_weight_scales", ms("QAttention", ["x", "w", "b", "sx", "sw"], num_heads=2), \
        [("x", u8(1, 3, 8)), ("w", u8(8, 24)), ("b", bias), ("sx", sc), ("sw", np.ones(5, np.float32))], \
        "weight_scale must be float32, one value or 24"
    qe = ["ids", "", "t", "t", "", "g", "g", "", "s", "s", "", "s", "s", "z", "z", "", "z", "z"]
    yield "qembed_id_out_of_range", ms("QEmbedLayerNormalization", qe), \
        [("ids", np.array([[1, 99]], np.int32)), ("t", u8(4, 8)), ("g", u8(8)), ("s", sc), ("z", np.uint8(0))], \
        "index 99 is outside input 2's 4 rows"
    yield "qembed_scale_type", ms("QEmbedLayerNormalization", qe), \
        [("ids", np.array([[1, 2]], np.int32)), ("t", u8(4, 8)), ("g", u8(8)), ("s", np.uint8(3)),
         ("z", np.uint8(0))], "input 8 (the scale of input 2) must be one float32"

    yield "fusedconv_activation", ms("FusedConv", ["x", "w"], activation="Swish"), \
        [("x", f32(1, 1, 3, 3)), ("w", f32(1, 1, 2, 2))], \
        "activation 'Swish' is not one onnxruntime fuses"
    yield "inverse_not_square", ms("Inverse", ["x"]), [("x", f32(2, 3))], \
        "input must be [..., N, N] (square matrices)"
    yield "cdist_metric", ms("CDist", ["x", "x"], metric="cosine"), [("x", f32(2, 3))], \
        "metric 'cosine' (sqeuclidean or euclidean)"
    yield "attention_bias_type", ms("Attention", ["x", "w", "", "", "", "ab"], num_heads=2), \
        [("x", f32(1, 2, 4)), ("w", f32(4, 12)), ("ab", np.ones((1, 2, 2, 2), np.uint8))], \
        "attention_bias (input 5) must be float32, not uint8"
    yield "fusedconv_params", ms("FusedConv", ["x", "w"], activation="LeakyRelu",
                                 activation_params=[0.1, 0.2, 0.3]), \
        [("x", f32(1, 1, 3, 3)), ("w", f32(1, 1, 2, 2))], \
        "activation 'LeakyRelu' takes 1 activation_params, the node has 3"
    # model-local functions (inlined at load)
    dom = "custom.functions"
    fn = lambda name, nodes, opsets=(("", 17),), ins=("X",): helper.make_function(  # noqa: E731
        dom, name, list(ins), ["Y"], nodes, [helper.make_opsetid(d, v) for d, v in opsets])
    call = lambda op, ins=("x",): helper.make_node(op, list(ins), ["y"], domain=dom)  # noqa: E731
    selfcall = fn("Loops", [helper.make_node("Loops", ["X"], ["Y"], domain=dom)],
                  (("", 17), (dom, 1)))
    yield "function_calls_itself", call("Loops"), [("x", f32(2))], \
        "function 'Loops' calls nest more than 32 deep", [selfcall]
    ident = fn("Ident", [helper.make_node("Identity", ["X"], ["Y"])])
    yield "function_too_many_inputs", call("Ident", ("x", "x")), [("x", f32(2))], \
        "node 'Ident' calls function 'Ident' with 2 inputs and 1 outputs; it has 1 and 1", [ident]
    old_opset = fn("Old", [helper.make_node("Identity", ["X"], ["Y"])], (("", 13),))
    yield "function_opset_differs", call("Old"), [("x", f32(2))], \
        "function 'Old' imports version 13 of domain '', the model 17", [old_opset]
    branch = helper.make_graph([helper.make_node("Identity", ["X"], ["r"])], "b", [],
                               [vi("r", T.FLOAT, None)])
    with_if = fn("Branchy", [helper.make_node("If", ["X"], ["Y"], then_branch=branch,
                                              else_branch=branch)])
    yield "function_with_subgraph", call("Branchy"), [("x", f32(2))], \
        "function 'Branchy': node 'Branchy.1/If' has a subgraph", [with_if]
    # each of 20 levels calls the next 8 times: 8^20 copies if nothing stopped it
    fan = [fn("L%d" % i, [helper.make_node("L%d" % (i + 1), ["X"], ["t%d" % j], domain=dom)
                          for j in range(7)] + [helper.make_node("L%d" % (i + 1), ["X"], ["Y"], domain=dom)],
              (("", 17), (dom, 1))) for i in range(20)]
    fan.append(fn("L20", [helper.make_node("Identity", ["X"], ["Y"])]))
    yield "function_fan_out", call("L0"), [("x", f32(2))], \
        "inlining the model's functions makes more than 524288 nodes", fan
    yield "function_defined_twice", call("Ident"), [("x", f32(2))], \
        "function 'Ident' of domain 'custom.functions' is defined twice", [ident, ident]
    typed = fn("Typed", [helper.make_node("LeakyRelu", ["X"], ["Y"])], ins=("X",))
    typed.node[0].attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="a",
                                                       type=onnx.AttributeProto.FLOAT))
    typed.attribute.append("a")
    yield "function_attribute_type", helper.make_node("Typed", ["x"], ["y"], domain=dom, a=[1, 2]), \
        [("x", f32(2))], "takes attribute 'alpha' from the call's 'a', of another type", [typed]

    # window attributes of absurd size: a clear error, not a signed overflow (UBSan) or hours of work
    conv_in = [("x", f32(1, 1, 4, 4)), ("w", f32(1, 1, 2, 2))]
    yield "conv_pads_huge", helper.make_node("Conv", ["x", "w"], ["y"], pads=[2**63 - 1] * 4), conv_in, \
        "attribute 'pads' value 9223372036854775807 is out of range"
    yield "averagepool_kernel_huge", helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2**40, 1]), \
        [("x", f32(1, 1, 4, 4))], "attribute 'kernel_shape' value 1099511627776 is over"
    yield "convtranspose_output_shape_huge", helper.make_node("ConvTranspose", ["x", "w"], ["y"],
                                                              output_shape=[10**12, 10**12]), conv_in, \
        "attribute 'output_shape' value 1000000000000 is out of range"
    # a pad of 2^62 on a 2-element tensor: the plan's index map would take 2^65 bytes (it wrapped
    # to a small buffer, then was written past its end)
    yield "pad_huge", helper.make_node("Pad", ["x", "p"], ["y"], mode="edge"), \
        [("x", f32(2)), ("p", np.array([-3, 2**62], np.int64))], "output too large"
    yield "gathernd_output_rank", helper.make_node("GatherND", ["x", "i"], ["y"]), \
        [("x", f32(1, 1, 1, 1, 1, 1, 1, 2)), ("i", np.zeros((1, 1, 1, 1, 1, 1, 1, 1), np.int64))], \
        "output rank above the limit of 8"
    yield "maxunpool_stride_huge", helper.make_node("MaxUnpool", ["x", "i"], ["y"], kernel_shape=[2, 2],
                                                    strides=[2**62, 2**62]), \
        [("x", f32(1, 1, 3, 3)), ("i", np.zeros((1, 1, 3, 3), np.int64))], "output size of dim 2 overflows"
    roi_in = lambda roi: [("x", f32(1, 1, 4, 4)), ("r", np.array([roi], np.float32)),  # noqa: E731
                          ("b", np.zeros(1, np.int64))]
    yield "roialign_sampling_huge", helper.make_node("RoiAlign", ["x", "r", "b"], ["y"], sampling_ratio=10**6), \
        roi_in([0, 0, 2, 2]), "sampling_ratio 1000000 is over 4096"
    yield "roialign_roi_huge", helper.make_node("RoiAlign", ["x", "r", "b"], ["y"]), roi_in([0, 0, 1e30, 1e30]), \
        "roi 0 (1e+30 x 1e+30 after spatial_scale) needs more than 16777216 samples a bin"
    yield "roialign_scale_nan", helper.make_node("RoiAlign", ["x", "r", "b"], ["y"], spatial_scale=float("nan")), \
        roi_in([0, 0, 2, 2]), "spatial_scale nan is not a finite number"
    yield "roialign_roi_nan", helper.make_node("RoiAlign", ["x", "r", "b"], ["y"]), roi_in([0, 0, np.nan, 2]), \
        "needs more than 16777216 samples a bin"


def main(ss, out):
    bad = 0
    for name, node, feeds, want, *functions in cases():
        d = write(out, name, node, feeds, functions=functions[0] if functions else ())
        r = subprocess.run([ss, "onnx-test", d], capture_output=True, text=True, timeout=60)
        line = (r.stdout + r.stderr).splitlines()[0] if (r.stdout + r.stderr) else ""
        good = r.returncode in (0, 1) and want in line
        print(f"{'ok  ' if good else 'FAIL'} {name} (exit {r.returncode}): {line[:160]}")
        bad += not good
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
