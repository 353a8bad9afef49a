#!/usr/bin/python3
"""Models for test_runtime_layout: Conv networks whose activations the layout pass keeps in
oneDNN's blocked layout between nodes (Conv -> LeakyRelu -> Max -> MaxPool -> Conv, as in
openWakeWord's embedding model), and chains that end in a reader needing plain NCHW (Reshape,
Transpose, Concat, a graph output).

Usage: layout_cases.py OUTDIR. Writes OUTDIR/<name>.onnx, <name>.in.npy, <name>.out<i>.npy (numpy's
float64 reference for the input) and OUTDIR/cases.txt, one line per model:
"<name> <outputs> <most reorders per run with the pass> <fewest reorders it must remove>".
"""
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

rng = np.random.default_rng(11)
F = onnx.TensorProto.FLOAT
N = helper.make_node


def arr(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------ numpy reference (float64)

def ref_conv(x, w, b, pads):
    """pads: top, left, bottom, right (ONNX's begin..., end... for 2 dims)"""
    t, l, bo, r = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, bo), (l, r)))
    m, _, kh, kw = w.shape
    oh, ow = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    y = np.zeros((x.shape[0], m, oh, ow))
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,mc->nmhw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j])
    return y + (b[None, :, None, None] if b is not None else 0)


def ref_maxpool(x, k, s, pads=(0, 0, 0, 0), ceil=False, dil=(1, 1)):
    t, l, bo, r = pads
    ek = [(k[d] - 1) * dil[d] + 1 for d in range(2)]
    oh = [(x.shape[2 + d] + pads[d] + pads[2 + d] - ek[d]) for d in range(2)]
    out = [(o + s[d] - 1) // s[d] + 1 if ceil else o // s[d] + 1 for d, o in enumerate(oh)]
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo + ek[0]), (l, r + ek[1])), constant_values=-np.inf)
    y = np.full(x.shape[:2] + tuple(out), -np.inf)
    for i in range(k[0]):
        for j in range(k[1]):
            a, b = i * dil[0], j * dil[1]
            y = np.maximum(y, xp[:, :, a:a + out[0] * s[0]:s[0], b:b + out[1] * s[1]:s[1]])
    return y


def ref_block(x, w, b, pads, slope=0.2, floor=-0.05):
    c = ref_conv(x, w, b, pads)
    return np.maximum(np.where(c < 0, slope * c, c), floor)


# ------------------------------------------------------------------ models

def block(x, w, b, y, pads, tag):
    """Conv -> LeakyRelu -> Max(scalar): the embedding model's block (post-ops after fusion)"""
    return [N("Conv", [x, w, b], ["c" + tag], pads=pads),
            N("LeakyRelu", ["c" + tag], ["l" + tag], alpha=0.2),
            N("Max", ["l" + tag, "floor"], [y])]


def write(out, name, nodes, x, outputs, inits, refs, max_on, min_saved, min_in_place=0,
          min_own=0):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", F, list(x.shape))],
                          [helper.make_tensor_value_info(n, F, None) for n in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    with open(os.path.join(out, name + ".onnx"), "wb") as f:
        f.write(m.SerializeToString())
    np.save(os.path.join(out, name + ".in.npy"), x)
    for i, r in enumerate(refs):
        np.save(os.path.join(out, f"{name}.out{i}.npy"), r.astype(np.float32))
    with open(os.path.join(out, "cases.txt"), "a") as f:
        f.write(f"{name} {len(outputs)} {max_on} {min_saved} {min_in_place} {min_own}\n")


def main(out):
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, "cases.txt"), "w").close()
    floor = np.float32(-0.05)
    # Conv -> LeakyRelu -> Max -> MaxPool -> Conv ... -> Conv -> Reshape: channels 8, 12, 20 (not
    # multiples of the 16-channel block), a 2x2/2 and a 1x2/1x2 pool, a ceil_mode pool with pads.
    # Without the pass every Conv reorders in and out (8); with it only the first Conv's input
    # (if its kernel wants another layout) and the last one's output (Reshape reads plain).
    # Sizes keep every Conv above the auto mode's oneDNN threshold.
    x = arr(1, 4, 32, 36)
    w = {"W1": arr(8, 4, 3, 3), "B1": arr(8), "W2": arr(12, 8, 3, 3), "B2": arr(12),
         "W3": arr(20, 12, 1, 3), "B3": arr(20), "W4": arr(24, 20, 3, 1), "B4": arr(24),
         "floor": floor, "shape": np.int64([1, -1])}
    nodes = (block("x", "W1", "B1", "m1", [1, 1, 1, 1], "1") +
             [N("MaxPool", ["m1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2])] +
             block("p1", "W2", "B2", "m2", [1, 1, 1, 1], "2") +
             [N("MaxPool", ["m2"], ["p2"], kernel_shape=[1, 2], strides=[1, 2])] +
             block("p2", "W3", "B3", "m3", [0, 1, 0, 1], "3") +
             [N("MaxPool", ["m3"], ["p3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1],
                ceil_mode=1),
              N("Conv", ["p3", "W4", "B4"], ["c4"]),
              N("Reshape", ["c4", "shape"], ["y"])])
    r = ref_maxpool(ref_block(x, w["W1"], w["B1"], (1, 1, 1, 1)), (2, 2), (2, 2))
    r = ref_maxpool(ref_block(r, w["W2"], w["B2"], (1, 1, 1, 1)), (1, 2), (1, 2))
    r = ref_maxpool(ref_block(r, w["W3"], w["B3"], (0, 1, 0, 1)), (3, 3), (2, 2), (1, 0, 1, 1),
                    ceil=True)
    r = ref_conv(r, w["W4"], w["B4"], (0, 0, 0, 0)).reshape(1, -1)
    write(out, "conv_pool_chain", nodes, x, ["y"], w, [r], max_on=2, min_saved=6)

    # The chain ends in readers that need plain NCHW: the pooled value goes to a Conv and to a
    # Concat (so the pool writes plain), the Conv's output is a graph output and a Transpose's
    # input. Only the first Conv's output (read by the pool alone) stays blocked.
    x = arr(2, 3, 10, 12)
    w = {"W1": arr(16, 3, 3, 3), "B1": arr(16), "W2": arr(24, 16, 3, 3), "B2": arr(24),
         "floor": floor}
    nodes = (block("x", "W1", "B1", "m1", [1, 1, 1, 1], "1") +
             [N("MaxPool", ["m1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
              N("Conv", ["p1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1]),
              N("Transpose", ["c2"], ["t"], perm=[0, 2, 3, 1]),
              N("Concat", ["p1", "p1"], ["cat"], axis=1)])
    p1 = ref_maxpool(ref_block(x, w["W1"], w["B1"], (1, 1, 1, 1)), (2, 2), (2, 2))
    c2 = ref_conv(p1, w["W2"], w["B2"], (1, 1, 1, 1))
    refs = [c2, c2.transpose(0, 2, 3, 1), np.concatenate([p1, p1], axis=1)]
    write(out, "chain_ends_plain", nodes, x, ["c2", "t", "cat"], w, refs, max_on=4, min_saved=0)

    # One spatial dim (silero's Convs are 1-D): Conv -> Relu -> MaxPool with a dilation -> Conv.
    x = arr(1, 6, 300)
    w = {"W1": arr(16, 6, 5), "B1": arr(16), "W2": arr(32, 16, 3), "B2": arr(32)}
    nodes = [N("Conv", ["x", "W1", "B1"], ["c1"], pads=[2, 2]), N("Relu", ["c1"], ["r1"]),
             N("MaxPool", ["r1"], ["p1"], kernel_shape=[3], strides=[2], dilations=[2]),
             N("Conv", ["p1", "W2", "B2"], ["y"], pads=[1, 1])]
    x2 = x[:, :, None, :]
    r = np.maximum(ref_conv(x2, w["W1"][:, :, None, :], w["B1"], (0, 2, 0, 2)), 0)
    r = ref_maxpool(r, (1, 3), (1, 2), dil=(1, 2))
    r = ref_conv(r, w["W2"][:, :, None, :], w["B2"], (0, 1, 0, 1))[:, :, 0, :]
    write(out, "conv1d_dilated_pool", nodes, x, ["y"], w, [r], max_on=2, min_saved=2)

    # ResNet bottlenecks: stem Conv -> Relu, then per block 1x1 -> Relu -> 3x3 -> Relu -> 1x1 whose
    # output is Added to the block's input (the identity shortcut, or a 1x1 projection's output in
    # the first block) -> Relu. The Add (+ Relu) runs as oneDNN's sum post-op, and the shortcut
    # stays in the library layout, so with the pass only the stem's input and the graph output
    # may reorder; without it every oneDNN Conv reorders in and out.
    x = arr(1, 8, 14, 12)
    w = {"W0": arr(32, 8, 3, 3) * 0.3, "B0": arr(32)}
    nodes = [N("Conv", ["x", "W0", "B0"], ["stem"], pads=[1, 1, 1, 1]), N("Relu", ["stem"], ["r0"])]
    r = np.maximum(ref_conv(x, w["W0"], w["B0"], (1, 1, 1, 1)), 0)
    cin = 32
    for blk, cout in enumerate([48, 48]):
        t = str(blk)
        w.update({"Wa" + t: arr(16, cin, 1, 1) * 0.2, "Ba" + t: arr(16),
                  "Wb" + t: arr(16, 16, 3, 3) * 0.1, "Bb" + t: arr(16),
                  "Wc" + t: arr(cout, 16, 1, 1) * 0.2, "Bc" + t: arr(cout)})
        src = "r0" if blk == 0 else "o" + str(blk - 1)
        nodes += [N("Conv", [src, "Wa" + t, "Ba" + t], ["a" + t]), N("Relu", ["a" + t], ["ra" + t]),
                  N("Conv", ["ra" + t, "Wb" + t, "Bb" + t], ["b" + t], pads=[1, 1, 1, 1]),
                  N("Relu", ["b" + t], ["rb" + t]),
                  N("Conv", ["rb" + t, "Wc" + t, "Bc" + t], ["c" + t])]
        ra = np.maximum(ref_conv(r, w["Wa" + t], w["Ba" + t], (0, 0, 0, 0)), 0)
        rb = np.maximum(ref_conv(ra, w["Wb" + t], w["Bb" + t], (1, 1, 1, 1)), 0)
        rc = ref_conv(rb, w["Wc" + t], w["Bc" + t], (0, 0, 0, 0))
        short = src
        if cin != cout:
            w.update({"Wp": arr(cout, cin, 1, 1) * 0.2, "Bp": arr(cout)})
            nodes.append(N("Conv", [src, "Wp", "Bp"], ["p"]))
            short = "p"
            r = ref_conv(r, w["Wp"], w["Bp"], (0, 0, 0, 0))
        # the shortcut first in one block, second in the other (the residual on either side)
        add_in = [short, "c" + t] if blk == 0 else ["c" + t, short]
        nodes += [N("Add", add_in, ["s" + t]), N("Relu", ["s" + t], ["o" + t])]
        r = np.maximum(rc + r, 0)
        cin = cout
    # block 0's output is written into its projection's slot (its sum post-op's operand, last read
    # there); block 1's is the graph output, which keeps a buffer of its own
    write(out, "resnet_residual", nodes, x, ["o1"], w, [r], max_on=2, min_saved=4, min_in_place=1)

    # A Winograd 3x3 Conv (64 channels each way, 16x16: onednn.c's winograd_case) between 1x1
    # Convs, batch 2: on AVX-512 the 1x1 Convs keep channels-last, the Winograd one wants 16-channel
    # blocks, so its input and output are relaid by onednn.c itself (min_own: at least 2 a run
    # there, test_runtime_layout.c), pixel by pixel across both images. min_saved -2: without the
    # pass, the auto mode runs the 1x1 Convs on the own GEMM straight on NCHW (conv.c: pw_chained)
    # and only the Winograd Conv reorders (2 a run); with it they stay on oneDNN, channels-last: 4.
    x = arr(2, 32, 16, 16)
    w = {"Wa": arr(64, 32, 1, 1) * 0.2, "Ba": arr(64), "Wb": arr(64, 64, 3, 3) * 0.05,
         "Bb": arr(64), "Wc": arr(48, 64, 1, 1) * 0.2, "Bc": arr(48)}
    nodes = [N("Conv", ["x", "Wa", "Ba"], ["a"]), N("Relu", ["a"], ["ra"]),
             N("Conv", ["ra", "Wb", "Bb"], ["b"], pads=[1, 1, 1, 1]), N("Relu", ["b"], ["rb"]),
             N("Conv", ["rb", "Wc", "Bc"], ["y"])]
    ra = np.maximum(ref_conv(x, w["Wa"], w["Ba"], (0, 0, 0, 0)), 0)
    rb = np.maximum(ref_conv(ra, w["Wb"], w["Bb"], (1, 1, 1, 1)), 0)
    r = ref_conv(rb, w["Wc"], w["Bc"], (0, 0, 0, 0))
    write(out, "winograd_between_pointwise", nodes, x, ["y"], w, [r], max_on=4, min_saved=-2,
          min_own=2)


if __name__ == "__main__":
    main(sys.argv[1])
