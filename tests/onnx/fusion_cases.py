#!/usr/bin/python3
"""Models for test_runtime_fusion: element-wise chains the planner must fuse into their producer,
and the shapes where it must not (the value between has another reader or is a graph output, a
broadcast that changes the shape, an operand computed after the producer).

Usage: fusion_cases.py OUTDIR. Writes OUTDIR/<name>.onnx and OUTDIR/cases.txt, one line per
model: "<name> <nodes fused> <Convs running post-ops> <MatMuls running post-ops> <nodes fused on a
CPU without AVX512-VNNI>", the middle two under SHARDSERVE_KERNELS=onednn (the leading steps of a
chain that oneDNN takes as post-ops; a MatMul's leading bias is its own bias, not a post-op); the
last differs where MatMulInteger writes its Cast's float32 values itself only on the VNNI path.
The test runs each model with fusion off and on and compares.
"""
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

rng = np.random.default_rng(5)
F = onnx.TensorProto.FLOAT


def arr(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def write(out, name, fused, nodes, inputs, outputs, inits, opset=13, postops=0, mm_postops=0,
          fused_no_vnni=None):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, F, None) for n in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                            helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    with open(os.path.join(out, name + ".onnx"), "wb") as f:
        f.write(m.SerializeToString())
    with open(os.path.join(out, "cases.txt"), "a") as f:
        no_vnni = fused if fused_no_vnni is None else fused_no_vnni
        f.write(f"{name} {fused} {postops} {mm_postops} {no_vnni}\n")


def conv(x, w, y, b=None, **kw):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], pads=[1, 1, 1, 1], **kw)


def main(out):
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, "cases.txt"), "w").close()
    N = helper.make_node
    w8 = {"W": arr(8, 4, 3, 3), "B": arr(8)}
    x4 = [("x", [2, 4, 9, 11])]
    write(out, "conv_relu", 1, [conv("x", "W", "c", "B"), N("Relu", ["c"], ["y"])], x4, ["y"], w8,
          postops=1)
    # Paddle's folded BatchNorm and HardSwish: Mul, Add per channel, Add/Clip/Mul(x), Div
    consts = dict(w8, s=arr(1, 8, 1, 1), t=arr(8, 1, 1), three=np.float32([3]),
                  zero=np.float32(0), six=np.float32(6), six1=np.float32([6]))
    write(out, "conv_affine_hardswish", 6,
          [conv("x", "W", "c", "B"), N("Mul", ["c", "s"], ["m"]), N("Add", ["m", "t"], ["a"]),
           N("Add", ["a", "three"], ["a3"]), N("Clip", ["a3", "zero", "six"], ["cl"]),
           N("Mul", ["a", "cl"], ["h"]), N("Div", ["h", "six1"], ["y"])], x4, ["y"], consts,
          postops=1)
    bn = dict(w8, sc=arr(8), bb=arr(8), mu=arr(8), var=np.abs(arr(8)) + 0.5, mx=np.float32(-0.05))
    write(out, "conv_bn_leaky_max", 3,
          [conv("x", "W", "c"), N("BatchNormalization", ["c", "sc", "bb", "mu", "var"], ["n"]),
           N("LeakyRelu", ["n"], ["l"], alpha=0.1), N("Max", ["l", "mx"], ["y"])], x4, ["y"], bn,
          postops=1)
    # residual: r has two readers (no chain after conv 1); conv 2 takes Add(., r) and Relu, on
    # oneDNN as a sum post-op (the residual copied into Y's buffer) and an eltwise Relu
    res = {"W1": arr(4, 4, 3, 3), "W2": arr(4, 4, 3, 3)}
    write(out, "conv_residual_relu", 2,
          [conv("x", "W1", "r"), conv("r", "W2", "c"), N("Add", ["c", "r"], ["a"]),
           N("Relu", ["a"], ["y"])], x4, ["y"], res, postops=1)
    # two producers into one Add: only the later one (whose operand is ready) takes it (sum and
    # logistic post-ops)
    write(out, "two_convs_add", 2,
          [conv("x", "W1", "p"), conv("x", "W2", "q"), N("Add", ["p", "q"], ["a"]),
           N("Sigmoid", ["a"], ["y"])], x4, ["y"], res, postops=1)
    # must not fuse: the value between is a graph output / has a second reader
    write(out, "intermediate_is_output", 0, [conv("x", "W", "c", "B"), N("Relu", ["c"], ["y"])],
          x4, ["c", "y"], w8)
    write(out, "intermediate_two_readers", 0,
          [conv("x", "W", "c", "B"), N("Relu", ["c"], ["y"]), N("Sigmoid", ["c"], ["z"])],
          x4, ["y", "z"], w8)
    # must not fuse: the constant broadcasts the value to a larger shape
    write(out, "broadcast_grows", 0, [conv("x", "W", "c", "B"), N("Add", ["c", "g"], ["y"])],
          x4, ["y"], dict(w8, g=arr(3, 1, 1, 1, 1)))
    # operands along the last axis (a vector per row), along H, and per channel in one chain
    write(out, "axes_mixed", 4,
          [conv("x", "W", "c", "B"), N("Add", ["c", "lw"], ["a"]), N("Mul", ["a", "lh"], ["m"]),
           N("Sub", ["ch", "m"], ["s"]), N("Div", ["s", "two"], ["y"])], x4, ["y"],
          dict(w8, lw=arr(11), lh=arr(9, 1), ch=arr(8, 1, 1), two=np.float32(2)))
    # oneDNN takes the leading HardSigmoid, then a Clip that would reuse its Clip's bounds stays on
    # the own pass with the operand along W
    write(out, "conv_partial_postops", 4,
          [conv("x", "W", "c", "B"), N("HardSigmoid", ["c"], ["h"], alpha=0.3),
           N("Clip", ["h", "lo", "hi"], ["k"]), N("Add", ["k", "lw"], ["a"]),
           N("Relu", ["a"], ["y"])], x4, ["y"],
          dict(w8, lw=arr(11), lo=np.float32(0.2), hi=np.float32(0.7)), postops=1)
    # Paddle at opset 9 (PP-OCRv4 rec): scalar scale and shift, HardSwish with Clip's bounds as
    # attributes, a scalar scale after: every step a oneDNN post-op
    write(out, "conv_scalars_hardswish_opset9", 7,
          [conv("x", "W", "c", "B"), N("Mul", ["sa", "c"], ["m"]), N("Add", ["m", "sb"], ["a"]),
           N("Add", ["a", "three"], ["a3"]), N("Clip", ["a3"], ["cl"], min=0.0, max=6.0),
           N("Mul", ["a", "cl"], ["h"]), N("Div", ["h", "six"], ["d"]),
           N("Mul", ["sc", "d"], ["y"])], x4, ["y"],
          dict(w8, sa=np.float32([1.4]), sb=np.float32([0.6]), three=np.float32(3),
               six=np.float32(6), sc=np.float32([0.17])), opset=9, postops=1)
    # MatMul + bias + Relu (bias along the last axis; on oneDNN the matmul's bias + a Relu post-op)
    write(out, "matmul_bias_relu", 2,
          [N("MatMul", ["x", "Wm"], ["mm"]), N("Add", ["mm", "bm"], ["a"]), N("Relu", ["a"], ["y"])],
          [("x", [3, 5, 16])], ["y"], {"Wm": arr(16, 24), "bm": arr(24)}, mm_postops=1)
    # BERT's exact GELU as PyTorch exports it: bias, Div by sqrt(2), Erf, Add 1, Mul by the
    # biased value, Mul 0.5: one chain of 6 steps after the MatMul (the Div/Erf/Add/Mul as one);
    # on oneDNN the bias is the matmul's and GELU + Mul 0.5 one gelu_erf post-op
    gelu = {"Wm": arr(16, 24), "bm": arr(24), "r2": np.float32(np.sqrt(2)), "one": np.float32(1),
            "half": np.float32(0.5)}
    write(out, "matmul_bias_gelu", 6,
          [N("MatMul", ["x", "Wm"], ["mm"]), N("Add", ["bm", "mm"], ["a"]),
           N("Div", ["a", "r2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["e1"]),
           N("Mul", ["a", "e1"], ["g"]), N("Mul", ["g", "half"], ["y"])],
          [("x", [3, 5, 16])], ["y"], gelu, mm_postops=1)
    # the same with the operands the other way round (1 + erf, erf-term * a), large enough to be
    # split over threads
    write(out, "matmul_gelu_swapped_large", 6,
          [N("MatMul", ["x", "Wm"], ["mm"]), N("Add", ["mm", "bm"], ["a"]),
           N("Div", ["a", "r2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["one", "e"], ["e1"]),
           N("Mul", ["e1", "a"], ["g"]), N("Mul", ["half", "g"], ["y"])],
          [("x", [4, 1100, 16])], ["y"], gelu, mm_postops=1)
    # not a GELU (the Mul takes another value than the Div's input): the bias stays the MatMul's
    # only step; Erf heads its own chain (Add 1, Mul by the input z, Mul by the biased value)
    write(out, "matmul_not_gelu", 4,
          [N("MatMul", ["x", "Wm"], ["mm"]), N("Add", ["mm", "bm"], ["a"]),
           N("Div", ["a", "r2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["e1"]),
           N("Mul", ["z", "e1"], ["g"]), N("Mul", ["g", "a"], ["y"])],
          [("x", [3, 5, 16]), ("z", [3, 5, 24])], ["y"], gelu)
    # the GELU's 1 is a [1, 1, 1] constant: the Mul's output gains a dim, so no GELU step (the
    # bias is the MatMul's chain; Erf heads its own: Add 1 only, its output being of another shape)
    write(out, "matmul_gelu_rank_grows", 2,
          [N("MatMul", ["x", "Wm"], ["mm"]), N("Add", ["mm", "bm"], ["a"]),
           N("Div", ["a", "r2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one3"], ["e1"]),
           N("Mul", ["a", "e1"], ["g"]), N("Mul", ["g", "half"], ["y"])],
          [("x", [5, 16])], ["y"], dict(gelu, one3=np.ones((1, 1, 1), np.float32)))
    # GPT-2's tanh GELU as its code spells it (x * x * x, the 0.5 last): bias + one step for
    # the 9 nodes; on oneDNN the bias is the matmul's and the GELU a gelu_tanh post-op
    gt = {"Wm": arr(16, 24), "bm": arr(24), "c": np.float32(0.044715),
          "k": np.float32(np.sqrt(2 / np.pi)), "one": np.float32(1), "half": np.float32(0.5),
          "three": np.float32(3)}

    def gelu_tanh_gpt2(a, y, c="c"):
        return [N("Mul", [a, a], ["m0"]), N("Mul", [a, "m0"], ["m1"]), N("Mul", [c, "m1"], ["m2"]),
                N("Add", [a, "m2"], ["a5"]), N("Mul", ["k", "a5"], ["m3"]), N("Tanh", ["m3"], ["t"]),
                N("Add", ["one", "t"], ["a6"]), N("Mul", [a, "a6"], ["m4"]),
                N("Mul", ["half", "m4"], [y])]
    mm = [N("MatMul", ["x", "Wm"], ["mm"]), N("Add", ["mm", "bm"], ["a"])]
    write(out, "matmul_gelu_tanh", 10, mm + gelu_tanh_gpt2("a", "y"), [("x", [3, 5, 16])], ["y"],
          gt, mm_postops=1)
    # as PyTorch's and Hugging Face's exports spell it (the 0.5 first, Pow(x, 3)), split over
    # threads: bias + one step for the 8 nodes
    write(out, "matmul_gelu_tanh_pow_large", 9,
          mm + [N("Mul", ["a", "half"], ["h"]), N("Pow", ["a", "three"], ["p"]),
                N("Mul", ["c", "p"], ["m"]), N("Add", ["a", "m"], ["s"]), N("Mul", ["s", "k"], ["i"]),
                N("Tanh", ["i"], ["t"]), N("Add", ["t", "one"], ["o"]), N("Mul", ["h", "o"], ["y"])],
          [("x", [4, 1100, 16])], ["y"], gt, mm_postops=1)
    # Hugging Face's GPT-2 MLP: Gemm (the bias its C), Reshape to [1, rows, 24], the GELU: the
    # chain goes on through the Reshape (the same bytes renamed): the Reshape + one step for the
    # 8 nodes; Gemm has no post-op hook, so on oneDNN too the step runs on the pass
    hf = {"Wg": arr(16, 24), "bm": arr(24), "shape": np.array([1, 15, 24], np.int64)}
    write(out, "gemm_reshape_gelu_tanh", 9,
          [N("Gemm", ["x", "Wg", "bm"], ["a0"]), N("Reshape", ["a0", "shape"], ["a"]),
           N("Mul", ["a", "half"], ["h"]), N("Pow", ["a", "three"], ["p"]),
           N("Mul", ["c", "p"], ["m"]), N("Add", ["a", "m"], ["s"]), N("Mul", ["s", "k"], ["i"]),
           N("Tanh", ["i"], ["t"]), N("Add", ["t", "one"], ["o"]), N("Mul", ["h", "o"], ["y"])],
          [("x", [15, 16])], ["y"], dict(gt, **hf))
    # through a Reshape only steps with scalar operands go on (a per-column bias is laid out by
    # the alias's shape): the MatMul keeps no step; the Add heads a chain with the Relu
    write(out, "matmul_reshape_bias_stops", 1,
          [N("MatMul", ["x", "Wm"], ["mm"]), N("Reshape", ["mm", "shape"], ["r"]),
           N("Add", ["r", "bm"], ["a"]), N("Relu", ["a"], ["y"])],
          [("x", [15, 16])], ["y"], dict(gt, **hf))
    # another coefficient (0.05): not GELU, so no step for the group; the bias is the MatMul's
    # step, Mul(a, a) heads a chain up to the Tanh (4 steps), the Tanh one to the end (3 steps)
    write(out, "matmul_not_gelu_tanh", 8, mm + gelu_tanh_gpt2("a", "y", c="c5"),
          [("x", [3, 5, 16])], ["y"], dict(gt, c5=np.float32(0.05)))
    # the GELU with a value inside it also a graph output: the group is not closed, so no step;
    # the chains as in the case above, except that the Mul(k, .) value ends the first one
    write(out, "matmul_gelu_tanh_leaks", 7, mm + gelu_tanh_gpt2("a", "y"),
          [("x", [3, 5, 16])], ["y", "a5"], gt)
    # attention scores: the scale and a mask computed at run time from an input ([batch 1, 1, 1,
    # keys]: one value per key), both steps of the QK^T MatMul (on oneDNN the scale a post-op, the
    # mask on the pass); Softmax after
    write(out, "attention_scale_mask", 2,
          [N("Mul", ["m", "big"], ["mask"]), N("MatMul", ["q", "k"], ["s"]),
           N("Div", ["s", "r8"], ["sd"]), N("Add", ["sd", "mask"], ["sm"]),
           N("Softmax", ["sm"], ["y"], axis=-1)],
          [("q", [1, 3, 7, 8]), ("k", [1, 3, 8, 7]), ("m", [1, 1, 1, 7])], ["y"],
          {"big": np.float32(-30), "r8": np.float32(np.sqrt(8))}, mm_postops=1)
    # a transformer's output projection: bias, then the residual (an input of y's shape) added,
    # on oneDNN a binary post-op reading the residual at run time
    write(out, "matmul_bias_residual", 2,
          [N("MatMul", ["x", "Wr"], ["mm"]), N("Add", ["mm", "br"], ["a"]),
           N("Add", ["r", "a"], ["y"])],
          [("x", [2, 70, 32]), ("r", [2, 70, 32])], ["y"], {"Wr": arr(32, 32), "br": arr(32)},
          mm_postops=1)
    # a constant along the MatMul output's axis 1 (rows, not columns) then Relu: no bias, and the
    # primitive's folded dst has no such axis, so both steps stay on the pass
    write(out, "matmul_rowwise_add", 2,
          [N("MatMul", ["x", "Wm"], ["mm"]), N("Add", ["mm", "rb"], ["a"]), N("Relu", ["a"], ["y"])],
          [("x", [2, 5, 16])], ["y"], {"Wm": arr(16, 24), "rb": arr(5, 1)})
    # a chain after an element-wise head, large enough to be split over threads, Clip-6 as attrs
    write(out, "elementwise_chain_large", 4,
          [N("Sigmoid", ["x"], ["s"]), N("Mul", ["s", "k"], ["m"]), N("Sub", ["one", "m"], ["d"]),
           N("HardSigmoid", ["d"], ["h"], alpha=0.3), N("Clip", ["h"], ["y"], min=0.1, max=0.8)],
          [("x", [4, 64, 33, 17])], ["y"], {"k": np.float32(1.5), "one": np.float32(1)}, opset=7)
    # operands of the value's exact shape: a graph input (fused into Relu's chain), one computed
    # after the head (Neg: ends Relu's chain), and an earlier chain's last value (m, for Neg's)
    write(out, "tensor_operands", 2,
          [N("Relu", ["x"], ["r"]), N("Mul", ["r", "z"], ["m"]), N("Neg", ["x"], ["n"]),
           N("Add", ["m", "n"], ["y"])], [("x", [2, 3, 4]), ("z", [2, 3, 4])], ["y"], {})
    quantized_cases(out, gelu)


def quantized_cases(out, gelu):
    """onnxruntime's quantize_dynamic: DynamicQuantizeLinear, MatMulInteger, Cast to float, Mul by
    the activation x weight scale (a Mul written after the MatMulInteger: the planner runs it
    before), then the float chain. On the VNNI path MatMulInteger writes the Cast's values and
    every step runs in its finisher; elsewhere (no VNNI, or BLAS kernels) the Cast runs alone (a
    Cast heads no chain: it may write strings) and the Mul by the scale heads the chain."""
    N = helper.make_node

    def qdyn(x, w, zw, y, tag="q"):
        return [N("DynamicQuantizeLinear", [x], [tag + "x", tag + "s", tag + "z"]),
                N("MatMulInteger", [tag + "x", w, tag + "z", zw], [tag + "i"]),
                N("Cast", [tag + "i"], [tag + "f"], to=F),
                N("Mul", [tag + "s", "ws"], [tag + "m"]),
                N("Mul", [tag + "f", tag + "m"], [y])]
    w8 = rng.integers(-127, 128, (64, 300)).astype(np.int8)
    qc = dict(gelu, W8=w8, wz=np.int8(0), ws=np.float32(0.001), bq=arr(300))
    # 300 columns: two pieces of the int8 product; the bias and BERT's GELU after the scale
    write(out, "qdyn_matmul_bias_gelu", 8,
          qdyn("x", "W8", "wz", "m") +
          [N("Add", ["m", "bq"], ["a"]), N("Div", ["a", "r2"], ["d"]), N("Erf", ["d"], ["e"]),
           N("Add", ["e", "one"], ["e1"]), N("Mul", ["a", "e1"], ["g"]),
           N("Mul", ["g", "half"], ["y"])], [("x", [2, 5, 64])], ["y"], qc, fused_no_vnni=6)
    # uint8 weights with a zero point, 1200 rows over threads; the scale first, then the bias and
    # a residual of y's shape
    u8 = {"U8": rng.integers(0, 256, (48, 40)).astype(np.uint8), "uz": np.uint8(131),
          "ws": np.float32(0.03), "bu": arr(40)}
    nodes = qdyn("x", "U8", "uz", "m")
    nodes[-1] = N("Mul", ["qm", "qf"], ["m"])
    write(out, "qdyn_matmul_residual_large", 4,
          nodes + [N("Add", ["m", "bu"], ["a"]), N("Add", ["r", "a"], ["y"])],
          [("x", [4, 300, 48]), ("r", [4, 300, 40])], ["y"], u8, fused_no_vnni=2)
    # the Cast alone: MatMulInteger writes the graph output's float32 values
    write(out, "qdyn_matmul_cast_only", 1,
          [N("DynamicQuantizeLinear", ["x"], ["qx", "qs", "qz"]),
           N("MatMulInteger", ["qx", "W8", "qz", "wz"], ["qi"]), N("Cast", ["qi"], ["y"], to=F)],
          [("x", [3, 7, 64])], ["y"], {"W8": w8, "wz": np.int8(0)}, fused_no_vnni=0)
    # the scale reads a value computed after MatMulInteger from an input (ReduceMax): the Mul
    # computing it cannot move before MatMulInteger, so the chain stops at the Cast; ReduceMax
    # takes that Mul (a scalar computed before it), and the Mul by the scale heads a chain (Relu)
    nodes = qdyn("x", "W8", "wz", "m")
    nodes[3] = N("Mul", ["qs", "t"], ["qm"])
    write(out, "qdyn_scale_not_ready", 3,
          nodes[:3] + [N("ReduceMax", ["z"], ["t"], keepdims=0)] + nodes[3:] +
          [N("Relu", ["m"], ["y"])], [("x", [2, 5, 64]), ("z", [3])], ["y"],
          {"W8": w8, "wz": np.int8(0)}, fused_no_vnni=2)
    # onnxruntime's fused form (float32 out): the bias and Relu run in its finisher
    write(out, "dynamic_quantize_matmul_relu", 2,
          [N("DynamicQuantizeMatMul", ["x", "W8", "ws", "wz"], ["d"], domain="com.microsoft"),
           N("Add", ["d", "bq"], ["a"]), N("Relu", ["a"], ["y"])], [("x", [70, 64])], ["y"],
          qc)


if __name__ == "__main__":
    main(sys.argv[1])
