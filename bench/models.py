#!/usr/bin/python3
"""Models and inputs for bench/run_runtime.sh (Debian's numpy, onnx and torch only).

Usage: /usr/bin/python3 bench/models.py OUTDIR [--only seed,mlp,mlpgemm,bert,gpt2,bertbase,gpt2small,mobilenet,resnet,big]

Writes, each into OUTDIR/<name>/ with model.onnx and one .npy per graph input:
  seed   the MatMul+Neg seed model (examples/matmul_distributed/make_model.py), x[128,96]
  mlp    4 x (MatMul 4096x4096 -> Relu), float32, input x[batch,4096] with a symbolic batch;
         weights (256 MiB) are ONNX external data in weights.bin; inputs x_b1.npy and x_b32.npy
  mlpgemm  the same MLP as torch.onnx exports nn.Linear on 2-D input: Gemm(transB=1) with a bias,
         the weight stored [out, in]; inputs x_b1.npy and x_b8.npy
  bert   BERT-tiny and GPT-2-tiny as exported by torch.onnx (opset 17), from
  gpt2   onnx_export_families.py --fixtures (shared/reference, next to the repository; set
         SS_REFERENCE_DIR to point elsewhere); inputs are the fixture's test inputs
  bertbase   a BERT-base-sized encoder (12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522) and
  gpt2small  a GPT-2-small-sized decoder (vocab 50257, hidden 768, 12 heads, 2 of its 12 blocks,
             final LayerNorm, no LM head), both built from the same reference classes as
             BERT-tiny/GPT-2-tiny at seed 0 and exported by torch.onnx (opset 17, dynamic batch
             and sequence); inputs batch 1, sequence 128
  mobilenet  MobileNetV2 (width 1.0, 224x224, ReLU6, 1000 classes) and
  resnet     ResNet-50 (bottleneck blocks 3-4-6-3, 224x224, 1000 classes), written in plain torch
             (torchvision is not a dependency); BatchNorm statistics are calibrated on random
             images so every layer's activations stay O(1), then torch.onnx folds BN into the
             Convs (opset 17, dynamic batch); input x[1,3,224,224]
             These four also write flops.txt: the multiply-add work of their MatMuls/Convs per
             call (x2), which compare.py quotes as GFLOP/s and % of the FMA peak.
  big    16 x MatMul 4096x4096 float32 = 1 GiB of external weights, x[1,4096] static, for the
         load-time / memory check; the weights are streamed to disk one layer at a time

External weight files are evicted from the page cache at the end of every run (fsync, then
POSIX_FADV_DONTNEED on that file only), so each benchmark run starts as a freshly deployed model
does: the first read fills the page cache. This matters for shardserve, which maps the weights
instead of copying them: pages cached by the write() that created the file are mostly small
folios, whereas pages faulted in through a mapping come in large folios that the kernel can map
with 2 MiB entries (fewer TLB misses in the GEMM; see bench/RUNTIME.md). --no-evict skips it.

Weights are He-scaled normals, so activations stay O(1) through the layers and the checksum that
run_runtime.sh compares between runtimes is meaningful. Existing outputs are reused when their
stamp matches this script's version of them.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VERSION = "1"
ALIGN = 1 << 16  # external tensors start on 64 KiB boundaries (mmap-friendly for both runtimes)


def stamped(d, what):
    p = os.path.join(d, "STAMP")
    return os.path.exists(p) and open(p).read() == f"{what} {VERSION}\n"


def stamp(d, what):
    with open(os.path.join(d, "STAMP"), "w") as f:
        f.write(f"{what} {VERSION}\n")


def save_npy(d, name, arr):
    np.save(os.path.join(d, name), np.ascontiguousarray(arr))


def seed(out):
    d = os.path.join(out, "seed")
    if stamped(d, "seed"):
        return
    os.makedirs(d, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(REPO, "examples", "matmul_distributed", "make_model.py"),
                    os.path.join(d, "model.onnx")], check=True)
    save_npy(d, "x.npy", np.random.default_rng(0).standard_normal((128, 96), dtype=np.float32))
    stamp(d, "seed")


def matmul_chain(d, name, layers, n, in_dims, relu, data_file, linear=False):
    """MatMul chain with weights streamed into one external file, one layer at a time; linear:
    each layer a Gemm(transB=1) with a bias, as torch.onnx exports nn.Linear on 2-D input."""
    inits, nodes, offset = [], [], 0
    path = os.path.join(d, data_file)
    scale = np.float32(np.sqrt(2.0 / n) if relu else np.sqrt(1.0 / n))
    with open(path, "wb") as f:
        for i in range(layers):
            w = np.random.default_rng(100 + i).standard_normal((n, n), dtype=np.float32)
            w *= scale
            if linear:
                w = np.ascontiguousarray(w.T)  # nn.Linear's weight is [out, in]
            f.seek(offset)
            w.tofile(f)
            t = TensorProto()
            t.name, t.data_type = f"W{i}", TensorProto.FLOAT
            t.dims.extend([n, n])
            for k, v in (("location", data_file), ("offset", str(offset)), ("length", str(w.nbytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            t.data_location = TensorProto.EXTERNAL
            inits.append(t)
            offset = (offset + w.nbytes + ALIGN - 1) // ALIGN * ALIGN
            del w
            src = "x" if i == 0 else f"h{i - 1}"
            last = i == layers - 1
            mm = "y" if last and not relu else (f"m{i}" if relu else f"h{i}")
            if linear:
                bias = np.random.default_rng(200 + i).standard_normal(n, dtype=np.float32) * np.float32(0.1)
                inits.append(numpy_helper.from_array(bias, f"b{i}"))
                nodes.append(helper.make_node("Gemm", [src, f"W{i}", f"b{i}"], [mm], name=f"gemm{i}", transB=1))
            else:
                nodes.append(helper.make_node("MatMul", [src, f"W{i}"], [mm], name=f"matmul{i}"))
            if relu:
                nodes.append(helper.make_node("Relu", [mm], ["y" if last else f"h{i}"], name=f"relu{i}"))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [in_dims[0], n])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="shardserve-bench")
    model.ir_version = 8
    onnx.save_model(model, os.path.join(d, "model.onnx"))  # tensors already external: small file
    onnx.checker.check_model(os.path.join(d, "model.onnx"))


def mlp(out):
    d = os.path.join(out, "mlp")
    if stamped(d, "mlp"):
        return
    os.makedirs(d, exist_ok=True)
    matmul_chain(d, "mlp_4x4096_relu", 4, 4096, ["batch", 4096], True, "weights.bin")
    rng = np.random.default_rng(1)
    for b in (1, 32):
        save_npy(d, f"x_b{b}.npy", rng.standard_normal((b, 4096), dtype=np.float32))
    stamp(d, "mlp")


def mlpgemm(out):
    d = os.path.join(out, "mlpgemm")
    if stamped(d, "mlpgemm"):
        return
    os.makedirs(d, exist_ok=True)
    matmul_chain(d, "mlp_4x4096_linear_relu", 4, 4096, ["batch", 4096], True, "weights.bin", linear=True)
    rng = np.random.default_rng(1)
    for b in (1, 8):
        save_npy(d, f"x_b{b}.npy", rng.standard_normal((b, 4096), dtype=np.float32))
    stamp(d, "mlpgemm")


def big(out):
    d = os.path.join(out, "big")
    if stamped(d, "big"):
        return
    os.makedirs(d, exist_ok=True)
    matmul_chain(d, "matmul_16x4096_1gib", 16, 4096, [1, 4096], False, "weights.bin")
    save_npy(d, "x.npy", np.random.default_rng(2).standard_normal((1, 4096), dtype=np.float32))
    stamp(d, "big")


def reference_script():
    ref = os.environ.get("SS_REFERENCE_DIR") or os.path.join(REPO, "..", "shared", "reference")
    p = os.path.join(ref, "onnx_export_families.py")
    if not os.path.exists(p):
        sys.exit(f"models.py: {p} not found (set SS_REFERENCE_DIR)")
    return p


def fixtures(out, names):
    todo = [n for n in names if not stamped(os.path.join(out, n), n)]
    if not todo:
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, reference_script(), "--fixtures", tmp], check=True,
                       stdout=subprocess.DEVNULL)
        for n in todo:
            src = os.path.join(tmp, f"test_{n}_tiny_op17")
            d = os.path.join(out, n)
            os.makedirs(d, exist_ok=True)
            shutil.copy(os.path.join(src, "model.onnx"), os.path.join(d, "model.onnx"))
            m = onnx.load(os.path.join(d, "model.onnx"))
            for i, vi in enumerate(m.graph.input):
                t = onnx.load_tensor(os.path.join(src, "test_data_set_0", f"input_{i}.pb"))
                save_npy(d, f"{vi.name}.npy", numpy_helper.to_array(t))
            stamp(d, n)


def reference_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("onnx_export_families", reference_script())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def export_torch(d, name, model, inputs, in_names, out_names, dyn, flops):
    """torch.onnx.export at opset 17 with the inputs saved as .npy, and the stamp."""
    import torch
    os.makedirs(d, exist_ok=True)
    model.eval()
    path = os.path.join(d, "model.onnx")
    with torch.no_grad():
        torch.onnx.export(model, inputs, path, input_names=in_names, output_names=out_names,
                          dynamic_axes=dyn, opset_version=17, do_constant_folding=True)
    onnx.checker.check_model(path)
    for n, t in zip(in_names, inputs):
        save_npy(d, f"{n}.npy", t.numpy())
    with open(os.path.join(d, "flops.txt"), "w") as f:
        f.write(f"{int(flops)}\n")
    stamp(d, name)


def transformer_flops(S, H, I, layers):
    """2 x multiply-adds of one sequence of S tokens: Q/K/V/output projections, the FFN, and the
    two attention products (scores Q K^T and probabilities x V)."""
    return layers * 2 * (S * (4 * H * H + 2 * H * I) + 2 * S * S * H)


def bertbase(out):
    d = os.path.join(out, "bertbase")
    if stamped(d, "bertbase"):
        return
    import torch
    ref = reference_module()
    torch.manual_seed(0)
    model = ref.Bert(V=30522, H=768, L=12, nh=12, I=3072, P=512)
    S = 128
    ids = torch.randint(0, 30522, (1, S))
    am = torch.ones(1, S, dtype=torch.long)
    am[0, 112:] = 0  # 16 padded positions
    tt = torch.zeros(1, S, dtype=torch.long)
    tt[0, 64:] = 1
    names = ["input_ids", "attention_mask", "token_type_ids"]
    export_torch(d, "bertbase", model, (ids, am, tt), names, ["last_hidden_state", "pooler_output"],
                 {k: {0: "batch", 1: "seq"} for k in names},
                 transformer_flops(S, 768, 3072, 12) + 2 * 768 * 768)


def gpt2small(out):
    d = os.path.join(out, "gpt2small")
    if stamped(d, "gpt2small"):
        return
    import torch
    import torch.nn as nn
    ref = reference_module()
    V, H, nh, P, L, S = 50257, 768, 12, 1024, 2, 128

    class Decoder(nn.Module):  # the reference GPT2 without its (tied) LM head, L blocks
        def __init__(s):
            super().__init__()
            s.wte, s.wpe = nn.Embedding(V, H), nn.Embedding(P, H)
            s.h = nn.ModuleList([ref.GPT2Block(H, nh, P) for _ in range(L)])
            s.ln_f = nn.LayerNorm(H, eps=1e-5)

        def forward(s, input_ids, attention_mask):
            pos = torch.arange(0, input_ids.size(-1), dtype=torch.long).unsqueeze(0)
            am = attention_mask[:, None, None, :].to(torch.float32)
            am = (1.0 - am) * torch.finfo(torch.float32).min
            h = s.wte(input_ids) + s.wpe(pos)
            for b in s.h:
                h = b(h, am)
            return s.ln_f(h)

    torch.manual_seed(0)
    model = Decoder()
    ids = torch.randint(0, V, (1, S))
    am = torch.ones(1, S, dtype=torch.long)
    names = ["input_ids", "attention_mask"]
    export_torch(d, "gpt2small", model, (ids, am), names, ["hidden_states"],
                 {k: {0: "batch", 1: "seq"} for k in names}, transformer_flops(S, H, 4 * H, L))


def cnn_flops(model, x):
    """2 x multiply-adds of the model's Conv2d and Linear layers on x, by forward hooks."""
    import torch
    import torch.nn as nn
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            total[0] += 2 * out.numel() * k
        else:
            total[0] += 2 * out.numel() * m.in_features
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total[0]


def calibrated(model, seed):
    """He-initialised Convs, BatchNorm running statistics taken from a batch of random images (as
    training would leave them, so each BN output is ~N(0,1) x gamma + beta), random affine."""
    import torch
    import torch.nn as nn
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one batch sets the statistics
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 224, 224))
    model.eval()
    return model


def conv_bn(nn, cin, cout, k, stride=1, groups=1, act=None):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(act())
    return nn.Sequential(*layers)


def mobilenet(out):
    d = os.path.join(out, "mobilenet")
    if stamped(d, "mobilenet"):
        return
    import torch
    import torch.nn as nn

    class InvertedResidual(nn.Module):
        def __init__(s, cin, cout, stride, t):
            super().__init__()
            hid = cin * t
            layers = [conv_bn(nn, cin, hid, 1, act=nn.ReLU6)] if t != 1 else []
            layers += [conv_bn(nn, hid, hid, 3, stride, groups=hid, act=nn.ReLU6), conv_bn(nn, hid, cout, 1)]
            s.conv = nn.Sequential(*layers)
            s.res = stride == 1 and cin == cout

        def forward(s, x):
            return x + s.conv(x) if s.res else s.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(s):
            super().__init__()
            layers, cin = [conv_bn(nn, 3, 32, 3, 2, act=nn.ReLU6)], 32
            for t, c, n, st in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                                (6, 160, 3, 2), (6, 320, 1, 1)):
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, st if i == 0 else 1, t))
                    cin = c
            layers.append(conv_bn(nn, cin, 1280, 1, act=nn.ReLU6))
            s.features = nn.Sequential(*layers)
            s.classifier = nn.Linear(1280, 1000)

        def forward(s, x):
            return s.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(s.features(x), 1), 1))

    model = calibrated(MobileNetV2(), 0)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 3, 224, 224), dtype=np.float32))
    export_torch(d, "mobilenet", model, (x,), ["x"], ["y"], {"x": {0: "batch"}}, cnn_flops(model, x))


def resnet(out):
    d = os.path.join(out, "resnet")
    if stamped(d, "resnet"):
        return
    import torch
    import torch.nn as nn

    class Bottleneck(nn.Module):
        def __init__(s, cin, width, stride):
            super().__init__()
            cout = width * 4
            s.branch = nn.Sequential(conv_bn(nn, cin, width, 1, act=nn.ReLU),
                                     conv_bn(nn, width, width, 3, stride, act=nn.ReLU),
                                     conv_bn(nn, width, cout, 1))
            s.down = conv_bn(nn, cin, cout, 1, stride) if stride != 1 or cin != cout else None

        def forward(s, x):
            idt = s.down(x) if s.down is not None else x
            return torch.relu(s.branch(x) + idt)

    class ResNet50(nn.Module):
        def __init__(s):
            super().__init__()
            layers, cin = [conv_bn(nn, 3, 64, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)], 64
            for width, n, st in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for i in range(n):
                    layers.append(Bottleneck(cin, width, st if i == 0 else 1))
                    cin = width * 4
            s.features = nn.Sequential(*layers)
            s.fc = nn.Linear(2048, 1000)

        def forward(s, x):
            return s.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(s.features(x), 1), 1))

    model = calibrated(ResNet50(), 0)
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((1, 3, 224, 224), dtype=np.float32))
    export_torch(d, "resnet", model, (x,), ["x"], ["y"], {"x": {0: "batch"}}, cnn_flops(model, x))


def qresnet(out):
    """A ResNet stage in onnxruntime's static int8 format (QOperator, as its model-zoo -int8 CNNs):
    QuantizeLinear, 4 residual blocks of two QLinearConv 3x3 64->64 (uint8 activations, int8
    weights per output channel, int32 bias) and a QLinearAdd, QLinearGlobalAveragePool,
    DequantizeLinear; 56x56 like ResNet-50's first stage. Random weights, seed 5."""
    d = os.path.join(out, "qresnet")
    if stamped(d, "qresnet"):
        return
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    C, H = 64, 56
    f = lambda v: np.array(v, np.float32)  # noqa: E731
    inits = [("sa", f(0.05)), ("za", np.array(128, np.uint8)), ("sp", f(0.01)),
             ("zp", np.array(128, np.uint8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["a0"])]
    cur, k = "a0", 0
    for blk in range(4):
        h = cur
        for j in range(2):
            k += 1
            w, ws = "w%d" % k, "ws%d" % k
            inits += [(w, rng.integers(-127, 128, (C, C, 3, 3)).astype(np.int8)),
                      (ws, rng.uniform(0.0005, 0.0015, C).astype(np.float32)),
                      ("wz%d" % k, np.zeros(C, np.int8)),
                      ("b%d" % k, rng.integers(-3000, 3000, C).astype(np.int32))]
            nodes.append(helper.make_node("QLinearConv", [h, "sa", "za", w, ws, "wz%d" % k, "sa", "za",
                                                          "b%d" % k], ["c%d" % k], pads=[1, 1, 1, 1]))
            h = "c%d" % k
        nodes.append(helper.make_node("QLinearAdd", [h, "sa", "za", cur, "sa", "za", "sa", "za"],
                                      ["r%d" % blk], domain="com.microsoft"))
        cur = "r%d" % blk
    nodes += [helper.make_node("QLinearGlobalAveragePool", [cur, "sa", "za", "sp", "zp"], ["g"],
                               domain="com.microsoft"),
              helper.make_node("DequantizeLinear", ["g", "sp", "zp"], ["y"])]
    g = helper.make_graph(nodes, "qresnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             [1, C, H, H])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                            helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    os.makedirs(d, exist_ok=True)
    onnx.save(m, os.path.join(d, "model.onnx"))
    save_npy(d, "x", rng.uniform(-3, 3, (1, C, H, H)).astype(np.float32))
    stamp(d, "qresnet")  # no flops.txt: the table's peak is float32's; these are int8 operations


def qbertbase(out):
    """bertbase quantized the way onnxruntime's quantize_dynamic writes it (QOperator, MatMul with
    a constant B only): each MatMul's weight becomes int8 with one symmetric per-tensor scale and
    its activation is quantized on every call: DynamicQuantizeLinear (one per activation, shared
    by Q/K/V), MatMulInteger, Cast, Mul by activation scale x weight scale. onnxruntime fuses the
    chain into its own int8 GEMM (DynamicQuantizeMatMul / MatMulIntegerToFloat)."""
    d = os.path.join(out, "qbertbase")
    if stamped(d, "qbertbase"):
        return
    bertbase(out)
    src = os.path.join(out, "bertbase")
    m = onnx.load(os.path.join(src, "model.onnx"))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    nodes, quantized, used = [], {}, set()
    for n in g.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" else None
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT:
            nodes.append(n)
            continue
        x, y, tag = n.input[0], n.output[0], "q%d" % len(used)
        if x not in quantized:
            quantized[x] = (tag + "_x", tag + "_xs", tag + "_xz")
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(quantized[x])))
        xq, xs, xz = quantized[x]
        a = numpy_helper.to_array(w)
        scale = np.float32(np.abs(a).max() / 127.0)
        used.add(w.name)
        g.initializer.extend([numpy_helper.from_array(np.clip(np.rint(a / scale), -127, 127).astype(np.int8), tag + "_w"),
                              numpy_helper.from_array(np.array(scale, np.float32), tag + "_ws"),
                              numpy_helper.from_array(np.array(0, np.int8), tag + "_wz")])
        nodes += [helper.make_node("MatMulInteger", [xq, tag + "_w", xz, tag + "_wz"], [tag + "_i"]),
                  helper.make_node("Cast", [tag + "_i"], [tag + "_f"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [xs, tag + "_ws"], [tag + "_s"]),
                  helper.make_node("Mul", [tag + "_f", tag + "_s"], [y])]
    keep = [t for t in g.initializer if t.name not in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(nodes)
    os.makedirs(d, exist_ok=True)
    onnx.save(m, os.path.join(d, "model.onnx"))
    onnx.checker.check_model(os.path.join(d, "model.onnx"))
    for f in ("input_ids.npy", "attention_mask.npy", "token_type_ids.npy"):
        shutil.copy(os.path.join(src, f), os.path.join(d, f))
    stamp(d, "qbertbase")  # no flops.txt: int8 operations, not float32's peak


def mlp4bit(out):
    """The MLP's shape (4 x 4096x4096 + Relu) as int4 LLM exports write their linear layers:
    com.microsoft MatMulNBits, 4-bit weights in blocks of 32 along K with a float32 scale and a
    packed 4-bit zero point each, accuracy_level 4 (int8 math allowed, as onnxruntime-genai's CPU
    models set it). Random weights, seed 7; 32 MiB of 4-bit weights."""
    d = os.path.join(out, "mlp4bit")
    if stamped(d, "mlp4bit"):
        return
    rng = np.random.default_rng(7)
    n, block = 4096, 32
    blocks = n // block
    inits, nodes = [], []
    for i in range(4):
        B = rng.integers(0, 256, (n, blocks, block // 2), dtype=np.uint8)
        sc = (rng.uniform(0.5, 1.5, n * blocks) * (np.sqrt(2.0 / n) / 4)).astype(np.float32)
        zp = np.full(n * blocks // 2, 0x88, np.uint8)  # 8 in both nibbles: symmetric
        inits += [numpy_helper.from_array(B, f"B{i}"), numpy_helper.from_array(sc, f"s{i}"),
                  numpy_helper.from_array(zp, f"z{i}")]
        src = "x" if i == 0 else f"h{i - 1}"
        nodes += [helper.make_node("MatMulNBits", [src, f"B{i}", f"s{i}", f"z{i}"], [f"m{i}"],
                                   domain="com.microsoft", K=n, N=n, bits=4, block_size=block,
                                   accuracy_level=4),
                  helper.make_node("Relu", [f"m{i}"], ["y" if i == 3 else f"h{i}"])]
    g = helper.make_graph(nodes, "mlp4bit", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    os.makedirs(d, exist_ok=True)
    onnx.save(m, os.path.join(d, "model.onnx"))
    x = np.random.default_rng(1)
    for b in (1, 32):
        save_npy(d, f"x_b{b}.npy", x.standard_normal((b, n), dtype=np.float32))
    stamp(d, "mlp4bit")


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--only",
                    default="seed,mlp,mlpgemm,bert,gpt2,bertbase,gpt2small,mobilenet,resnet,qresnet,qbertbase,mlp4bit,big")
    ap.add_argument("--no-evict", action="store_true", help="leave the weight files in the page cache")
    a = ap.parse_args()
    want = set(a.only.split(","))
    os.makedirs(a.outdir, exist_ok=True)
    if "seed" in want:
        seed(a.outdir)
    if "mlp" in want:
        mlp(a.outdir)
    if "mlpgemm" in want:
        mlpgemm(a.outdir)
    fx = [n for n in ("bert", "gpt2") if n in want]
    if fx:
        fixtures(a.outdir, fx)
    for name, make in (("bertbase", bertbase), ("gpt2small", gpt2small), ("mobilenet", mobilenet),
                       ("resnet", resnet), ("qresnet", qresnet),
                       ("qbertbase", qbertbase), ("mlp4bit", mlp4bit)):
        if name in want:
            make(a.outdir)
    if "big" in want:
        big(a.outdir)
    if not a.no_evict:
        for name in ("mlp", "mlpgemm", "big"):
            p = os.path.join(a.outdir, name, "weights.bin")
            if name in want and os.path.exists(p):
                evict(p)


if __name__ == "__main__":
    main()
