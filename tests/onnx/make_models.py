#!/usr/bin/python3
"""Writes the models the onnx/runtime tests load: good ones (inline and external weights) and
bad ones (each must give a clear error). Usage: make_models.py OUTDIR"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def matmul_neg(w, x_shape=(128, 96), opset=13):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
         helper.make_node("Neg", ["xw"], ["y"], name="neg")],
        "matmul_neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x_shape[0], w.shape[1]])],
        initializer=[numpy_helper.from_array(w, name="W")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def collectives_model():
    """x[4,6] -> MatMul(W0) -> AllReduce -> Relu -> AllGather(axis 1) -> Neg -> y, and
    z = Sigmoid(x): what ss_session_run_effects runs (the AllReduce and what it reads), contributes
    to (the AllGather) and skips (Neg, Sigmoid)."""
    w0 = (np.arange(36, dtype=np.float32).reshape(6, 6) - 17) / 10
    coll = "ai.shardserve"
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W0"], ["a"], name="matmul"),
         helper.make_node("AllReduce", ["a"], ["b"], name="allreduce", domain=coll, group="world"),
         helper.make_node("Relu", ["b"], ["c"], name="relu"),
         helper.make_node("AllGather", ["c"], ["d"], name="allgather", domain=coll, group="world",
                          axis=1),
         helper.make_node("Neg", ["d"], ["y"], name="neg"),
         helper.make_node("Sigmoid", ["x"], ["z"], name="sigmoid")],
        "collectives",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 12]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 6])],
        initializer=[numpy_helper.from_array(w0, name="W0")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                helper.make_opsetid(coll, 1)])
    m.ir_version = 8
    return m


def collectives_partial_model():
    """A plan that must wait for a run-time value: Range's limit comes out of an AllReduce. x[4] ->
    Neg -> h; k -> AllReduce -> Range(0, k, 1) -> Cast -> ReduceSum -> s; AllReduce(h + s) -> w."""
    coll = "ai.shardserve"
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["h"], name="neg"),
         helper.make_node("AllReduce", ["k"], ["kk"], name="allreduce_k", domain=coll, group="world"),
         helper.make_node("Range", ["zero", "kk", "one"], ["r"], name="range"),
         helper.make_node("Cast", ["r"], ["rf"], name="cast", to=TensorProto.FLOAT),
         helper.make_node("ReduceSum", ["rf"], ["sm"], name="sum", keepdims=0),
         helper.make_node("Add", ["h", "sm"], ["z"], name="add"),
         helper.make_node("AllReduce", ["z"], ["w"], name="allreduce_z", domain=coll, group="world")],
        "collectives_partial",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])],
        initializer=[numpy_helper.from_array(np.array(0, np.int64), name="zero"),
                     numpy_helper.from_array(np.array(1, np.int64), name="one")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                helper.make_opsetid(coll, 1)])
    m.ir_version = 8
    return m


def gemm_transb_model(tied):
    """y = x W^T + b with W [128, 96] (a torch Linear on 2-D input); tied: W is also an embedding
    the graph looks up rows of (Gather), as a tied LM head shares it."""
    w = np.random.default_rng(3).standard_normal((128, 96)).astype(np.float32)
    b = np.arange(128, dtype=np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="head", transB=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 96])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 128])]
    if tied:
        nodes.append(helper.make_node("Gather", ["W", "ids"], ["e"], name="embed", axis=0))
        inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [2]))
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 96]))
    graph = helper.make_graph(nodes, "gemm_transb", inputs, outputs,
                              initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def random_model(seeded):
    """n = RandomNormalLike(x) (x's dims are free, so a new shape re-plans) and u =
    RandomUniform(shape [1000]) (constant-shaped: must not be folded), seeded or not."""
    seed = {"seed": 3.0} if seeded else {}
    useed = {"seed": 4.0} if seeded else {}
    nodes = [helper.make_node("RandomNormalLike", ["x"], ["n"], name="normal", **seed),
             helper.make_node("RandomUniform", [], ["u"], name="uniform", shape=[1000], **useed)]
    graph = helper.make_graph(nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                              [helper.make_tensor_value_info("n", TensorProto.FLOAT, ["N"]),
                               helper.make_tensor_value_info("u", TensorProto.FLOAT, [1000])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def save_external(model, path, location):
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)


def edit_location(model_path, key, value):
    m = onnx.load(model_path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == key:
                e.value = value
    onnx.save_model(m, model_path)


def main(out):
    os.makedirs(out, exist_ok=True)
    w = np.full((96, 16), 0.5, dtype=np.float32)
    onnx.save_model(matmul_neg(w), f"{out}/good.onnx")
    onnx.save_model(collectives_model(), f"{out}/collectives.onnx")
    onnx.save_model(collectives_partial_model(), f"{out}/collectives_partial.onnx")
    onnx.save_model(gemm_transb_model(False), f"{out}/gemm_transb.onnx")
    onnx.save_model(gemm_transb_model(True), f"{out}/gemm_transb_tied.onnx")
    onnx.save_model(random_model(True), f"{out}/random_seeded.onnx")
    onnx.save_model(random_model(False), f"{out}/random_unseeded.onnx")
    os.makedirs(f"{out}/ext", exist_ok=True)
    save_external(matmul_neg(w), f"{out}/ext/good_ext.onnx", "good_ext.data")

    good = open(f"{out}/good.onnx", "rb").read()
    open(f"{out}/truncated.onnx", "wb").write(good[: len(good) // 2])
    open(f"{out}/text.onnx", "wb").write(b"this is not an onnx model\n" * 10)
    open(f"{out}/empty.onnx", "wb").write(b"")
    open(f"{out}/random.onnx", "wb").write(np.random.default_rng(7).bytes(4096))

    # external-data failures, each in its own folder
    for name in ("missing", "short", "escape", "absolute", "badoffset"):
        d = f"{out}/{name}"
        os.makedirs(d, exist_ok=True)
        save_external(matmul_neg(w), f"{d}/model.onnx", "weights.data")
    os.remove(f"{out}/missing/weights.data")
    data = open(f"{out}/short/weights.data", "rb").read()
    open(f"{out}/short/weights.data", "wb").write(data[:100])
    os.makedirs(f"{out}/outside", exist_ok=True)
    open(f"{out}/outside/secret.data", "wb").write(data)
    edit_location(f"{out}/escape/model.onnx", "location", "../outside/secret.data")
    edit_location(f"{out}/absolute/model.onnx", "location", os.path.abspath(f"{out}/outside/secret.data"))
    edit_location(f"{out}/badoffset/model.onnx", "offset", "-5")

    # an op we do not implement, and a graph whose input is never produced
    g = helper.make_graph([helper.make_node("Foo", ["x"], ["y"], name="mystery", domain="")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save_model(m, f"{out}/unsupported_op.onnx")
    # several missing ops, one inside a subgraph attribute: all named in one error
    body = helper.make_graph([helper.make_node("Zap", [], ["z"], name="deep")], "body", [],
                             [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    g = helper.make_graph([helper.make_node("Foo", ["x"], ["a"], name="mystery"),
                           helper.make_node("Foo", ["a"], ["b"]),
                           helper.make_node("Relu", ["b"], ["c"]),
                           helper.make_node("Bar", ["c"], ["d"], name="odd", domain="com.example"),
                           helper.make_node("Qux", ["d"], ["y"], name="holder", body=body)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    onnx.save_model(m, f"{out}/unsupported_ops.onnx")
    g = helper.make_graph([helper.make_node("Neg", ["nowhere"], ["y"], name="orphan")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]),
                    f"{out}/dangling_input.onnx")

    # If on a shape: D == 4 picks then (Neg x), else adds B[3], which cannot broadcast with D = 4:
    # the untaken branch is never planned
    F = TensorProto.FLOAT
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", F, None)])
    else_g = helper.make_graph([helper.make_node("Add", ["x", "B"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, None)])
    g = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "one"], ["d"]),
         helper.make_node("Equal", ["d", "four"], ["c"]),
         helper.make_node("If", ["c"], ["y"], name="by_width", then_branch=then_g, else_branch=else_g)],
        "if_shape", [helper.make_tensor_value_info("x", F, ["N", "D"])],
        [helper.make_tensor_value_info("y", F, None)],
        [numpy_helper.from_array(np.array(1, np.int64), "one"), numpy_helper.from_array(np.array(4, np.int64), "four"),
         numpy_helper.from_array(np.array([1, 2, 3], np.float32), "B")])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), f"{out}/if_shape.onnx")

    # If on a bool input: then = If(c){ (x+W)*two } else { -(x+W) } nested, reading names from one and
    # two scopes out; else = x - W
    inner_then = helper.make_graph([helper.make_node("Mul", ["a", "two"], ["it"])], "it", [],
                                   [helper.make_tensor_value_info("it", F, None)])
    inner_else = helper.make_graph([helper.make_node("Neg", ["a"], ["ie"])], "ie", [],
                                   [helper.make_tensor_value_info("ie", F, None)])
    then_g = helper.make_graph([helper.make_node("Add", ["x", "W"], ["a"]),
                                helper.make_node("If", ["c"], ["t"], then_branch=inner_then, else_branch=inner_else)],
                               "then", [], [helper.make_tensor_value_info("t", F, None)])
    else_g = helper.make_graph([helper.make_node("Sub", ["x", "W"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, None)])
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="by_flag", then_branch=then_g, else_branch=else_g)],
        "if_data", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                    helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [2, 3])],
        [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "W"),
         numpy_helper.from_array(np.array(2, np.float32), "two")])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), f"{out}/if_data.onnx")

    # a run-time condition whose branches give different shapes ([2,3] and [3,2]): the plan follows c
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", F, None)])
    else_g = helper.make_graph([helper.make_node("Transpose", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, None)])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], name="ragged", then_branch=then_g, else_branch=else_g)],
                          "if_ragged", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                        helper.make_tensor_value_info("x", F, [2, 3])],
                          [helper.make_tensor_value_info("y", F, None)])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), f"{out}/if_ragged.onnx")

    # a bool input picks the branch its shapes fit (silero VAD picks its STFT by sample rate): then
    # reshapes x to [-1, 4], else to [-1, 3]; an x of 8 elements plans only then_branch
    then_g = helper.make_graph([helper.make_node("Reshape", ["x", "by4"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", F, None)])
    else_g = helper.make_graph([helper.make_node("Reshape", ["x", "by3"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, None)])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], name="fit", then_branch=then_g, else_branch=else_g)],
                          "if_fit", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                     helper.make_tensor_value_info("x", F, ["N"])],
                          [helper.make_tensor_value_info("y", F, None)],
                          [numpy_helper.from_array(np.array([-1, 4], np.int64), "by4"),
                           numpy_helper.from_array(np.array([-1, 3], np.int64), "by3")])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), f"{out}/if_fit.onnx")

    # a dynamic batch dim, for re-planning: y = Neg(MatMul(x[N,96], W))
    m = matmul_neg(w, x_shape=("N", 96))
    onnx.save_model(m, f"{out}/dynamic.onnx")

    # a data-dependent shape mid-graph: NonZero's [1, nnz] feeds Cast and Neg, and Mul reads a
    # value computed before NonZero (it must survive the re-plan for a new nnz)
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("NonZero", ["a"], ["nz"]),
             helper.make_node("Cast", ["nz"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Neg", ["f"], ["idx"]), helper.make_node("Mul", ["a", "a"], ["sq"])]
    g = helper.make_graph(nodes, "nonzero", [helper.make_tensor_value_info("x", F, [6])],
                          [helper.make_tensor_value_info("idx", F, [1, None]),
                           helper.make_tensor_value_info("sq", F, [6])])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), f"{out}/nonzero.onnx")

    # shapes computed at run time: Range's limits are n + 1 and 2n for an input n (the plan stops
    # at the first Range until a run computes its limit; 2n is computed before that point, so the
    # re-plan must record it too)
    nodes = [helper.make_node("Mul", ["n", "two"], ["limit2"]),
             helper.make_node("Add", ["n", "one"], ["limit"]),
             helper.make_node("Range", ["zero", "limit", "one"], ["r"]),
             helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
             helper.make_node("Neg", ["rf"], ["y"]),
             helper.make_node("Range", ["zero", "limit2", "one"], ["y2"])]
    g = helper.make_graph(nodes, "computed_limit", [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("y", F, [None]),
                           helper.make_tensor_value_info("y2", TensorProto.INT64, [None])],
                          [numpy_helper.from_array(np.array(0, np.int64), "zero"),
                           numpy_helper.from_array(np.array(1, np.int64), "one"),
                           numpy_helper.from_array(np.array(2, np.int64), "two")])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), f"{out}/computed_limit.onnx")

    # a chain of 16 Neg nodes over [256,256]: the arena must reuse buffers
    nodes = [helper.make_node("Neg", [f"t{i}"], [f"t{i + 1}"], name=f"neg{i}") for i in range(16)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [256, 256])],
                          [helper.make_tensor_value_info("t16", TensorProto.FLOAT, [256, 256])])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), f"{out}/chain.onnx")


if __name__ == "__main__":
    main(sys.argv[1])
