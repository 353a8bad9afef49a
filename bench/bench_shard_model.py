#!/usr/bin/python3
"""The 512 MB MLP of bench/run_shard.sh: y = L x (MatMul [D,D] -> Relu), float32.

Usage: /usr/bin/python3 bench/bench_shard_model.py OUTDIR [--dim 4096] [--layers 8] [--batch 32]

Writes OUTDIR/mlp.onnx with every weight as ONNX external data in OUTDIR/mlp.data (streamed one
layer at a time, so generating it needs ~one layer of memory), and OUTDIR/x.npy [batch, dim].
Weights are He-scaled normals so activations stay O(1). Reuses existing files when the stamp
(OUTDIR/stamp) matches the arguments.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    stamp = f"v1 dim={a.dim} layers={a.layers} batch={a.batch}"
    stamp_path = os.path.join(a.outdir, "stamp")
    if os.path.exists(stamp_path) and open(stamp_path).read() == stamp:
        print(f"{a.outdir}: up to date ({stamp})")
        return
    rng = np.random.default_rng(0)
    nodes, inits, prev, offset = [], [], "x", 0
    layer_bytes = a.dim * a.dim * 4
    with open(os.path.join(a.outdir, "mlp.data"), "wb") as f:
        for i in range(a.layers):
            w = rng.standard_normal((a.dim, a.dim), dtype=np.float32)
            w *= np.float32(np.sqrt(2.0 / a.dim))
            f.write(w.tobytes())
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[a.dim, a.dim])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", "mlp.data"), ("offset", str(offset)), ("length", str(layer_bytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            offset += layer_bytes
            inits.append(t)
            nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"))
            out = "y" if i == a.layers - 1 else f"h{i}"
            nodes.append(helper.make_node("Relu", [f"mm{i}"], [out], name=f"relu{i}"))
            prev = out
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [a.batch, a.dim])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [a.batch, a.dim])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="shardserve-bench")
    model.ir_version = 8
    with open(os.path.join(a.outdir, "mlp.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    np.save(os.path.join(a.outdir, "x.npy"), rng.uniform(-1, 1, (a.batch, a.dim)).astype(np.float32))
    with open(stamp_path, "w") as f:
        f.write(stamp)
    print(f"{a.outdir}: wrote mlp.onnx + {offset / 1e6:.0f} MB of weights in mlp.data")


if __name__ == "__main__":
    main()
