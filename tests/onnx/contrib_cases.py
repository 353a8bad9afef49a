#!/usr/bin/python3
"""Backend-test cases for onnxruntime's com.microsoft contrib ops (and the default-domain
SimplifiedLayerNormalization / pre-17 LayerNormalization it accepts), one per op and attribute
combination that matters: biases, broadcast skips, optional outputs, masks of every supported form,
past/present, cross attention, interleaved rotary, 2/4/8-bit weights with and without zero points;
FusedConv / FusedGemm / TransposeMatMul of onnxruntime's saved optimized models, Inverse, CDist,
ExpandDims, and its own Trilu and Range.

Writes OUTDIR/test_<name>/model.onnx + test_data_set_0/input_N.pb: onnxruntime-node is the
oracle and writes the outputs (ort_oracle.js), except for BiasAdd, which onnxruntime runs on GPUs
only: its case comes with numpy's outputs. Usage: contrib_cases.py OUTDIR
"""
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(2026)
MS = "com.microsoft"
T = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
     np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
     np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
     np.dtype(np.uint16): TensorProto.UINT16, np.dtype(np.int16): TensorProto.INT16,
     np.dtype(np.bool_): TensorProto.BOOL, np.dtype(np.float64): TensorProto.DOUBLE}


def f32(*shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def case(out, name, nodes, inputs, outputs, inits=(), opset=17, expected=None):
    """inputs: (name, array); outputs: (name, elem type); inits: (name, array) constants.
    expected: numpy outputs, only for ops onnxruntime has no CPU kernel for (BiasAdd)."""
    vi = lambda n, a: helper.make_tensor_value_info(n, T[a.dtype], list(a.shape))
    g = helper.make_graph(nodes, name, [vi(n, a) for n, a in inputs],
                          [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                            helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    d = os.path.join(out, "test_" + name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(m.SerializeToString())
    for i, (n, a) in enumerate(inputs):
        with open(os.path.join(d, "test_data_set_0", f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())
    for i, a in enumerate(expected or ()):
        with open(os.path.join(d, "test_data_set_0", f"output_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(a, outputs[i][0]).SerializeToString())


F, H16 = TensorProto.FLOAT, TensorProto.FLOAT16


def node(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, domain=MS, **attrs)


def gelu_cases(out):
    x = f32(2, 3, 8, lo=-3, hi=3)
    b = f32(8)
    case(out, "ms_gelu", [node("Gelu", ["x"], ["y"])], [("x", x)], [("y", F)])
    case(out, "ms_gelu_f16", [node("Gelu", ["x"], ["y"])], [("x", x.astype(np.float16))],
         [("y", H16)])
    case(out, "ms_fastgelu", [node("FastGelu", ["x"], ["y"])], [("x", x)], [("y", F)])
    case(out, "ms_fastgelu_bias", [node("FastGelu", ["x", "b"], ["y"])], [("x", x)], [("y", F)],
         [("b", b)])
    case(out, "ms_biasgelu", [node("BiasGelu", ["x", "b"], ["y"])], [("x", x), ("b", b)],
         [("y", F)])
    case(out, "ms_quickgelu", [node("QuickGelu", ["x"], ["y"])], [("x", x)], [("y", F)])
    s = f32(2, 3, 8)
    case(out, "ms_biasadd", [node("BiasAdd", ["x", "b", "s"], ["y"])],
         [("x", x), ("b", b), ("s", s)], [("y", F)], expected=[x + b + s])
    case(out, "ms_quickgelu_alpha", [node("QuickGelu", ["x"], ["y"], alpha=1.0)], [("x", x)],
         [("y", F)])


def norm_cases(out):
    x, skip = f32(2, 3, 16, lo=-2, hi=2), f32(2, 3, 16)
    g, b, bias = f32(16, lo=0.5, hi=1.5), f32(16), f32(16)
    case(out, "ms_skiplayernorm_full",
         [node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"],
               ["y", "mean", "inv", "sum"], epsilon=1e-6)],
         [("x", x), ("s", skip)], [("y", F), ("mean", F), ("inv", F), ("sum", F)],
         [("g", g), ("b", b), ("bias", bias)])
    case(out, "ms_skiplayernorm_gamma_only",
         [node("SkipLayerNormalization", ["x", "s", "g"], ["y"])], [("x", x), ("s", skip)],
         [("y", F)], [("g", g)])
    case(out, "ms_skiplayernorm_f16",
         [node("SkipLayerNormalization", ["x", "s", "g", "b"], ["y"])],
         [("x", x.astype(np.float16)), ("s", skip.astype(np.float16))], [("y", H16)],
         [("g", g.astype(np.float16)), ("b", b.astype(np.float16))])
    case(out, "ms_skiplayernorm_skip_broadcast",
         [node("SkipLayerNormalization", ["x", "s", "g", "b"], ["y"])],
         [("x", x), ("s", skip[0])], [("y", F)], [("g", g), ("b", b)])
    case(out, "ms_skipsimplifiedlayernorm",
         [node("SkipSimplifiedLayerNormalization", ["x", "s", "g", "bias"],
               ["y", "mean", "inv", "sum"], epsilon=1e-5)],
         [("x", x), ("s", skip)], [("y", F), ("mean", F), ("inv", F), ("sum", F)],
         [("g", g), ("bias", bias)])
    case(out, "ms_simplifiedlayernorm",
         [helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y", "inv"], axis=-1,
                           epsilon=1e-6)],
         [("x", x)], [("y", F), ("inv", F)], [("g", g)])
    g2 = f32(3, 16, lo=0.5, hi=1.5).reshape(-1)
    case(out, "ms_layernorm_opset13_axis1",
         [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean", "inv"], axis=1)],
         [("x", x)], [("y", F), ("mean", F), ("inv", F)],
         [("g", g2.reshape(3, 16)), ("b", f32(3, 16))], opset=13)


def embed_cases(out):
    B, S, D, V = 2, 5, 16, 30
    ids = rng.integers(0, V, (B, S)).astype(np.int32)
    seg = rng.integers(0, 2, (B, S)).astype(np.int32)
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], np.int32)
    tables = [("word", f32(V, D)), ("pos", f32(8, D)), ("segt", f32(2, D)),
              ("g", f32(D, lo=0.5, hi=1.5)), ("b", f32(D))]
    case(out, "ms_embedlayernorm_full",
         [node("EmbedLayerNormalization", ["ids", "seg", "word", "pos", "segt", "g", "b", "mask"],
               ["y", "mask_index", "sum"], epsilon=1e-5)],
         [("ids", ids), ("seg", seg), ("mask", mask)],
         [("y", F), ("mask_index", TensorProto.INT32), ("sum", F)], tables)
    case(out, "ms_embedlayernorm_no_segment_position_ids",
         [node("EmbedLayerNormalization",
               ["ids", "", "word", "pos", "", "g", "b", "", "pids"], ["y", "mask_index"])],
         [("ids", ids), ("pids", rng.integers(0, 8, (1, S)).astype(np.int32))],
         [("y", F), ("mask_index", TensorProto.INT32)],
         [t for t in tables if t[0] != "segt"])


def fusedmatmul_cases(out):
    a, b = f32(2, 4, 6), f32(2, 6, 5)
    case(out, "ms_fusedmatmul_alpha", [node("FusedMatMul", ["a", "b"], ["y"], alpha=0.5)],
         [("a", a), ("b", b)], [("y", F)])
    case(out, "ms_fusedmatmul_trans",
         [node("FusedMatMul", ["a", "b"], ["y"], transA=1, transB=1, alpha=2.0)],
         [("a", a.transpose(0, 2, 1).copy()), ("b", b.transpose(0, 2, 1).copy())], [("y", F)])
    case(out, "ms_fusedmatmul_trans_batch_a",
         [node("FusedMatMul", ["a", "b"], ["y"], transBatchA=1)],
         [("a", f32(4, 2, 6)), ("b", f32(2, 6, 5))], [("y", F)])
    case(out, "ms_fusedmatmul_trans_batch_both_trans",
         [node("FusedMatMul", ["a", "b"], ["y"], transBatchA=1, transBatchB=1, transA=1, transB=1)],
         [("a", f32(6, 3, 2, 4)), ("b", f32(5, 3, 2, 6))], [("y", F)])
    case(out, "ms_fusedmatmul_broadcast", [node("FusedMatMul", ["a", "b"], ["y"], transB=1)],
         [("a", f32(3, 1, 4, 6)), ("b", f32(2, 5, 6))], [("y", F)])


def nbits_case(out, name, K, N, block, bits, zp=None, bias=False, M=3):
    blocks = (K + block - 1) // block
    blob = block * bits // 8
    B = rng.integers(0, 256, (N, blocks, blob), dtype=np.uint8)
    scales = f32(N * blocks, lo=0.01, hi=0.1)
    ins = ["a", "B", "scales"]
    inits = [("B", B), ("scales", scales)]
    if zp == "packed":
        zp_arr = rng.integers(0, 256, (N * ((blocks * bits + 7) // 8),), dtype=np.uint8)
        ins.append("zp"), inits.append(("zp", zp_arr))
    if bias:
        ins += ["", "", "bias"] if zp is None else ["", "bias"]
        inits.append(("bias", f32(N)))
    case(out, name, [node("MatMulNBits", ins, ["y"], K=K, N=N, bits=bits, block_size=block)],
         [("a", f32(M, K))], [("y", F)], inits)


def nbits_f16_case(out):
    """float16 activations and scales: the weights are dequantized at run time."""
    K, N, block = 64, 8, 32
    B = rng.integers(0, 256, (N, K // block, block // 2), dtype=np.uint8)
    case(out, "ms_matmulnbits_4bit_f16",
         [node("MatMulNBits", ["a", "B", "scales"], ["y"], K=K, N=N, bits=4, block_size=block)],
         [("a", f32(3, K).astype(np.float16))], [("y", H16)],
         [("B", B), ("scales", f32(N * K // block, lo=0.01, hi=0.05).astype(np.float16))])


def nbits_cases(out):
    nbits_f16_case(out)
    nbits_case(out, "ms_matmulnbits_4bit", 64, 8, 32, 4)
    nbits_case(out, "ms_matmulnbits_4bit_zp_bias", 40, 6, 16, 4, zp="packed", bias=True)
    nbits_case(out, "ms_matmulnbits_8bit_zp", 64, 5, 32, 8, zp="packed")
    nbits_case(out, "ms_matmulnbits_4bit_m1", 128, 16, 64, 4, zp="packed", M=1)


def attention_case(out, name, B=2, S=4, D=16, heads=2, mask=None, past=0, inputs_extra=(),
                   **attrs):
    sizes = attrs.get("qkv_hidden_sizes", [D, D, D])
    w, bias = f32(D, sum(sizes), lo=-0.5, hi=0.5), f32(sum(sizes))
    ins, feeds = ["x", "w", "bias", "", "", ""], [("x", f32(B, S, D))]
    outs = [("y", F)]
    if mask is not None:
        ins[3] = "mask"
        feeds.append(("mask", mask))
    if past:
        ins[4] = "past"
        feeds.append(("past", f32(2, B, heads, past, D // heads)))
        outs.append(("present", F))
    for i, n, a in inputs_extra:
        ins[i] = n
        feeds.append((n, a))
    while ins and not ins[-1]:
        ins.pop()
    case(out, name, [node("Attention", ins, [o for o, _ in outs], num_heads=heads, **attrs)],
         feeds, outs, [("w", w), ("bias", bias)])


def attention_cases(out):
    attention_case(out, "ms_attention_nomask")
    attention_case(out, "ms_attention_mask_raw2d",
                   mask=np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int32))
    attention_case(out, "ms_attention_mask_raw3d",
                   mask=rng.integers(0, 2, (2, 4, 4)).astype(np.int32) | np.eye(4, dtype=np.int32))
    attention_case(out, "ms_attention_mask_lengths", mask=np.array([3, 2], np.int32))
    attention_case(out, "ms_attention_mask_left_padding", mask=np.array([4, 4, 1, 2], np.int32))
    attention_case(out, "ms_attention_unidirectional", unidirectional=1)
    attention_case(out, "ms_attention_past_present", past=3, unidirectional=1,
                   mask=np.ones((2, 7), np.int32))
    attention_case(out, "ms_attention_vsize_scale", qkv_hidden_sizes=[16, 16, 8], scale=0.3)
    attention_case(out, "ms_attention_bias_input",
                   inputs_extra=[(5, "ab", f32(1, 2, 4, 4, lo=-2, hi=2))])


def mha_case(out, name, B=2, S=3, L=3, D=16, heads=4, past=0, mask=None, bias=True, kv4d=False,
             **attrs):
    ins, feeds, inits = ["q", "k", "v", "", "", "", "", ""], [("q", f32(B, S, D))], []
    if kv4d:
        feeds += [("k", f32(B, heads, L, D // heads)), ("v", f32(B, heads, L, D // heads))]
    else:
        feeds += [("k", f32(B, L, D)), ("v", f32(B, L, D))]
    outs = [("y", F)]
    if bias:
        ins[3] = "bias"
        inits.append(("bias", f32(3 * D)))
    if mask is not None:
        ins[4] = "mask"
        feeds.append(("mask", mask))
    if past:
        ins[6], ins[7] = "pk", "pv"
        feeds += [("pk", f32(B, heads, past, D // heads)), ("pv", f32(B, heads, past, D // heads))]
        outs += [("present_k", F), ("present_v", F)]
    while ins and not ins[-1]:
        ins.pop()
    case(out, name, [node("MultiHeadAttention", ins, [o for o, _ in outs], num_heads=heads,
                          **attrs)], feeds, outs, inits)


def mha_cases(out):
    mha_case(out, "ms_mha_self")
    mha_case(out, "ms_mha_cross_nobias", S=2, L=5, bias=False)
    mha_case(out, "ms_mha_key_padding_mask", L=4,
             mask=np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int32))
    mha_case(out, "ms_mha_past_present_causal", past=2, unidirectional=1)
    mha_case(out, "ms_mha_kv_bnsh", L=5, bias=False, kv4d=True, scale=0.25)


def gqa_case(out, name, B=2, S=3, N=4, NK=2, H=8, past=0, packed=False):
    total = past + S
    ins = ["q", "k", "v", "", "", "seqlens", "total"]
    feeds = [("q", f32(B, S, (N + 2 * NK) * H if packed else N * H))]
    if packed:
        ins[1] = ins[2] = ""
    else:
        feeds += [("k", f32(B, S, NK * H)), ("v", f32(B, S, NK * H))]
    outs = [("y", F), ("present_k", F), ("present_v", F)]
    if past:
        ins[3], ins[4] = "pk", "pv"
        feeds += [("pk", f32(B, NK, past, H)), ("pv", f32(B, NK, past, H))]
    feeds += [("seqlens", np.full((B,), total - 1, np.int32)),
              ("total", np.array(total, np.int32))]
    case(out, name, [node("GroupQueryAttention", ins, [o for o, _ in outs], num_heads=N,
                          kv_num_heads=NK)], feeds, outs)


def gqa_cases(out):
    gqa_case(out, "ms_gqa_prompt")
    gqa_case(out, "ms_gqa_prompt_packed", N=2, NK=1, packed=True)
    gqa_case(out, "ms_gqa_decode_past", S=1, past=4)
    gqa_case(out, "ms_gqa_chunk_past_mha", B=1, S=2, past=3, N=2, NK=2)


def rope_cases(out):
    B, S, N, H, P = 2, 3, 2, 8, 16
    freq = np.arange(P)[:, None] * (1.0 / 10000 ** (np.arange(0, H, 2) / H))[None, :]
    cs, sn = np.cos(freq).astype(np.float32), np.sin(freq).astype(np.float32)
    pos = rng.integers(0, P, (B, S)).astype(np.int64)
    for inter in (0, 1):
        case(out, f"ms_rotary_3d_interleaved{inter}",
             [node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], interleaved=inter)],
             [("x", f32(B, S, N * H)), ("pos", pos)], [("y", F)], [("cos", cs), ("sin", sn)])
    case(out, "ms_rotary_offset_4d",
         [node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"])],
         [("x", f32(B, N, S, H)), ("pos", np.array([5], np.int64))], [("y", F)],
         [("cos", cs), ("sin", sn)])
    half = H // 4
    case(out, "ms_rotary_partial_dim",
         [node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], num_heads=N,
               rotary_embedding_dim=H // 2)],
         [("x", f32(B, S, N * H)), ("pos", pos)], [("y", F)],
         [("cos", cs[:, :half].copy()), ("sin", sn[:, :half].copy())])


def fused_cases(out):
    """FusedConv and FusedGemm, as onnxruntime's optimizer saves them (lowered at load into Conv /
    Gemm and the activation, which the runtime's fusion pass fuses again)."""
    x, w, b = f32(2, 3, 6, 6), f32(4, 3, 3, 3), f32(4)
    convs = [("relu", dict(activation="Relu")),
             ("leakyrelu", dict(activation="LeakyRelu", activation_params=[0.2])),
             ("clip", dict(activation="Clip", activation_params=[-0.3, 0.4])),
             ("hardsigmoid", dict(activation="HardSigmoid", activation_params=[0.3, 0.6])),
             ("sigmoid", dict(activation="Sigmoid")), ("tanh", dict(activation="Tanh")),
             ("none", {})]
    for name, attrs in convs:
        case(out, "ms_fusedconv_" + name,
             [node("FusedConv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1], **attrs)],
             [("x", x)], [("y", F)], [("w", w), ("b", b)])
    case(out, "ms_fusedconv_sum_relu", [node("FusedConv", ["x", "w", "", "z"], ["y"], activation="Relu")],
         [("x", x), ("z", f32(2, 4, 4, 4))], [("y", F)], [("w", w)])
    case(out, "ms_fusedconv_clip_opset10",
         [node("FusedConv", ["x", "w", "b"], ["y"], activation="Clip", activation_params=[0.0, 6.0])],
         [("x", x * 8)], [("y", F)], [("w", w), ("b", b)], opset=10)
    a, bt, c = f32(5, 8), f32(6, 8), f32(6)
    gemms = [("leakyrelu", dict(activation="LeakyRelu", activation_alpha=0.3)),
             ("hardsigmoid", dict(activation="HardSigmoid", activation_alpha=0.3, activation_beta=0.4)),
             ("relu_alpha_beta", dict(activation="Relu", alpha=0.5, beta=2.0))]
    for name, attrs in gemms:
        case(out, "ms_fusedgemm_" + name, [node("FusedGemm", ["a", "b", "c"], ["y"], transB=1, **attrs)],
             [("a", a)], [("y", F)], [("b", bt), ("c", c)])
    case(out, "ms_transposematmul", [node("TransposeMatMul", ["a", "b"], ["y"], transA=1, alpha=0.5)],
         [("a", f32(2, 8, 3)), ("b", f32(2, 8, 4))], [("y", F)])


def misc_cases(out):
    """Inverse, CDist, ExpandDims, and onnxruntime's own Trilu and Range."""
    m = f32(2, 3, 4, 4) + 4 * np.eye(4, dtype=np.float32)
    case(out, "ms_inverse", [node("Inverse", ["x"], ["y"])], [("x", m)], [("y", F)])
    case(out, "ms_inverse_f64", [node("Inverse", ["x"], ["y"])], [("x", m[0].astype(np.float64))],
         [("y", TensorProto.DOUBLE)])
    a, b = f32(5, 7), f32(3, 7)
    case(out, "ms_cdist_sqeuclidean", [node("CDist", ["a", "b"], ["y"])], [("a", a), ("b", b)], [("y", F)])
    case(out, "ms_cdist_euclidean", [node("CDist", ["a", "b"], ["y"], metric="euclidean")],
         [("a", a), ("b", b)], [("y", F)])
    case(out, "ms_expanddims_negative_axis", [node("ExpandDims", ["x", "axis"], ["y"])],
         [("x", f32(3, 4))], [("y", F)], [("axis", np.array(-1, np.int32))])
    case(out, "ms_trilu_lower_k", [node("Trilu", ["x", "k"], ["y"], upper=0)],
         [("x", f32(2, 4, 5))], [("y", F)], [("k", np.array(1, np.int64))])
    case(out, "ms_range_no_delta", [node("Range", ["s", "l"], ["y"])],
         [("s", np.array(-2, np.int32)), ("l", np.array(5, np.int32))], [("y", TensorProto.INT32)])
    case(out, "ms_range_float", [node("Range", ["s", "l", "d"], ["y"])],
         [("s", np.array(1.0, np.float32)), ("l", np.array(-2.0, np.float32)),
          ("d", np.array(-0.75, np.float32))], [("y", F)])


def main():
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for make in (gelu_cases, norm_cases, embed_cases, fusedmatmul_cases, nbits_cases, attention_cases,
                 mha_cases, gqa_cases, rope_cases, fused_cases, misc_cases):
        make(out)


if __name__ == "__main__":
    main()
