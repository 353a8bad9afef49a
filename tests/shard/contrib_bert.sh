#!/bin/bash
# A BERT-style encoder block written with onnxruntime's fused com.microsoft ops (what its
# transformer optimizer emits): Attention (packed QKV, padding mask), SkipLayerNormalization,
# BiasGelu between plain MatMuls. `shardserve run` on the whole model and over 2 ranks: the shard
# tool cannot split the fused ops, so each rank runs them whole on gathered inputs and the tool
# says so ("replicates ... Attention x1, SkipLayerNormalization x2, BiasGelu x1"); both outputs
# match numpy (the ops themselves are checked against onnxruntime in onnx_contrib_cases).
# usage: contrib_bert.sh shm|mpi
. "$(dirname "$0")/common.sh"
backend=$1
[ "$backend" = mpi ] && mpi_setup
$PY - "$WORK" <<'PY' || fail "making the model"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
out = sys.argv[1]
rng = np.random.default_rng(3)
B, S, D, N, FF = 2, 5, 32, 4, 64
H = D // N
w = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)
W = dict(wqkv=w(D, 3 * D), bqkv=w(3 * D), wo=w(D, D), bo=w(D), g1=1 + w(D), be1=w(D),
         w1=w(D, FF), b1=w(FF), w2=w(FF, D), b2=w(D), g2=1 + w(D), be2=w(D))
ms = lambda op, i, o, **a: helper.make_node(op, i, o, domain="com.microsoft", name=op + "_" + o[0], **a)
nodes = [
    ms("Attention", ["x", "wqkv", "bqkv", "mask"], ["att"], num_heads=N),
    helper.make_node("MatMul", ["att", "wo"], ["proj"], name="attn_out"),
    ms("SkipLayerNormalization", ["proj", "x", "g1", "be1", "bo"], ["ln1"], epsilon=1e-5),
    helper.make_node("MatMul", ["ln1", "w1"], ["h"], name="ffn_in"),
    ms("BiasGelu", ["h", "b1"], ["act"]),
    helper.make_node("MatMul", ["act", "w2"], ["f"], name="ffn_out"),
    ms("SkipLayerNormalization", ["f", "ln1", "g2", "be2", "b2"], ["y"], epsilon=1e-5),
]
g = helper.make_graph(nodes, "bert_block",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, D]),
     helper.make_tensor_value_info("mask", TensorProto.INT32, [B, S])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, D])],
    [numpy_helper.from_array(v, k) for k, v in W.items()])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
m.ir_version = 8
onnx.save_model(m, out + "/model.onnx")
x = rng.standard_normal((B, S, D)).astype(np.float32)
mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
np.save(out + "/x.npy", x); np.save(out + "/mask.npy", mask)
# numpy reference
from math import erf, sqrt
def ln(v, g, b, eps=1e-5):
    m_ = v.mean(-1, keepdims=True); var = ((v - m_) ** 2).mean(-1, keepdims=True)
    return (v - m_) / np.sqrt(var + eps) * g + b
x64 = x.astype(np.float64)
qkv = x64 @ W["wqkv"] + W["bqkv"]
q, k, v = [qkv[..., i * D:(i + 1) * D].reshape(B, S, N, H).transpose(0, 2, 1, 3) for i in range(3)]
sc = q @ k.transpose(0, 1, 3, 2) / np.sqrt(H) + np.where(mask[:, None, None, :] == 0, -10000.0, 0.0)
p = np.exp(sc - sc.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
att = (p @ v).transpose(0, 2, 1, 3).reshape(B, S, D)
ln1 = ln(att @ W["wo"] + W["bo"] + x64, W["g1"], W["be1"])
h = ln1 @ W["w1"] + W["b1"]
act = 0.5 * h * (1 + np.vectorize(erf)(h / sqrt(2)))
y = ln(act @ W["w2"] + W["b2"] + ln1, W["g2"], W["be2"])
np.save(out + "/y_ref.npy", y.astype(np.float32))
PY
mkdir -p "$WORK/out-whole"
run_group 60 "$WORK/run-whole.log" "$SS" run "$WORK/model.onnx" --input "x=$WORK/x.npy" \
  --input "mask=$WORK/mask.npy" --output-dir "$WORK/out-whole"
[ "$GROUP_RC" -eq 0 ] || { cat "$WORK/run-whole.log"; fail "run on the whole model"; }
shard_and_run 2 "$backend" "--ranks 2" --input "x=$WORK/x.npy" --input "mask=$WORK/mask.npy" ||
  finish "$backend"
grep -q "replicates on each of its 2 ranks (not split): Attention x1, SkipLayerNormalization x2, BiasGelu x1" \
  "$WORK/shard-2.log" || { cat "$WORK/shard-2.log"; fail "the shard tool does not say what it replicates"; }
$PY - "$WORK" <<'PY' || fail "layout or outputs wrong"
import sys
import numpy as np
import onnx
work, ok = sys.argv[1], True
for r in range(2):
    ops = [n.op_type for n in onnx.load(f"{work}/shards-2/device{r}/model.onnx", load_external_data=False).graph.node]
    good = ops.count("Attention") == 1 and ops.count("SkipLayerNormalization") == 2
    print(f"{'ok  ' if good else 'FAIL'} rank {r}: {ops}, want the fused ops whole")
    ok &= good
ref = np.load(f"{work}/y_ref.npy")
for name in ("out-whole", "out-2"):
    y = np.load(f"{work}/{name}/y.npy")
    good = y.shape == ref.shape and np.allclose(y, ref, atol=1e-5)
    print(f"{'ok  ' if good else 'FAIL'} {name} y {y.shape}: max |y - numpy| {np.abs(y - ref).max() if y.shape == ref.shape else 'shape'}")
    ok &= good
sys.exit(0 if ok else 1)
PY
finish "$backend"
