#!/usr/bin/python3
"""Models and inputs for bench/run_runtime.sh (Debian's numpy, onnx and torch only).

Usage: /usr/bin/python3 bench/models.py OUTDIR [--only seed,mlp,bert,gpt2,big]

Writes, each into OUTDIR/<name>/ with model.onnx and one .npy per graph input:
  seed   the MatMul+Neg seed model (examples/matmul_distributed/make_model.py), x[128,96]
  mlp    4 x (MatMul 4096x4096 -> Relu), float32, input x[batch,4096] with a symbolic batch;
         weights (256 MiB) are ONNX external data in weights.bin; inputs x_b1.npy and x_b32.npy
  bert   BERT-tiny and GPT-2-tiny as exported by torch.onnx (opset 17), from
  gpt2   onnx_export_families.py --fixtures (shared/reference, next to the repository; set
         SS_REFERENCE_DIR to point elsewhere); inputs are the fixture's test inputs
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


def matmul_chain(d, name, layers, n, in_dims, relu, data_file):
    """MatMul chain with weights streamed into one external file, one layer at a time."""
    inits, nodes, offset = [], [], 0
    path = os.path.join(d, data_file)
    scale = np.float32(np.sqrt(2.0 / n) if relu else np.sqrt(1.0 / n))
    with open(path, "wb") as f:
        for i in range(layers):
            w = np.random.default_rng(100 + i).standard_normal((n, n), dtype=np.float32)
            w *= scale
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
    ap.add_argument("--only", default="seed,mlp,bert,gpt2,big")
    ap.add_argument("--no-evict", action="store_true", help="leave the weight files in the page cache")
    a = ap.parse_args()
    want = set(a.only.split(","))
    os.makedirs(a.outdir, exist_ok=True)
    if "seed" in want:
        seed(a.outdir)
    if "mlp" in want:
        mlp(a.outdir)
    fx = [n for n in ("bert", "gpt2") if n in want]
    if fx:
        fixtures(a.outdir, fx)
    if "big" in want:
        big(a.outdir)
    if not a.no_evict:
        for name in ("mlp", "big"):
            p = os.path.join(a.outdir, name, "weights.bin")
            if name in want and os.path.exists(p):
                evict(p)


if __name__ == "__main__":
    main()
