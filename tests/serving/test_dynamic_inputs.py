#!/usr/bin/python3
"""Models whose inputs are not all rank 0's fixed shapes, through a real serve + agents:

- dynamic non-batch dims are served: every instance takes its own sequence length (a batch takes
  one shape: instances of different lengths in one request are each answered right), a wrong
  rank or a wrong fixed dim is refused naming both shapes, never answered with garbage;
- a later pipeline stage that reads a graph input of its own (here the bias added in stage 2)
  is sent that input by name (2 stages x 4 ranks, MindSpore's smallest pipeline), and the
  answer is the whole model's.

Usage: test_dynamic_inputs.py [case ...]; prints ok/FAIL per case and "N passed, N failed"."""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cluster import Cluster, run_cases  # noqa: E402
import shardserve_client as ssc  # noqa: E402

D = 8


def save(graph, path):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save_model(m, path)


def seq_model(path, batch):
    """y[b, s] = Neg(Sum over the last axis of x[b, s, D]): s is dynamic (and b when batch)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, "seq", D])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, "seq"])
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
         helper.make_node("Neg", ["s"], ["y"])], "seq", [x], [y], initializer=[axes])
    save(graph, path)


def two_stage_model(path):
    """y = MatMul(Relu(MatMul(x, W1)), W2) + b, n rows (dynamic): b is read only after the cut;
    with dynamic dims the shard tool gives every stage the graph inputs itself."""
    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array(rng.standard_normal((D, D)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((D, D)).astype(np.float32), "W2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "W2"], ["o"]), helper.make_node("Add", ["o", "b"], ["y"])],
        "two_stage",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", D])], initializer=[w1, w2])
    save(graph, path)
    return w1, w2


def serve_one(c, name, model, ranks, stages, **kw):
    models = c.add_servable(name, model, ranks, stages, **kw)
    c.serve([(name, 1, c.write_rank_table(ranks, name + ".json"))])
    c.agents(c.worker_addresses[name][0], models)
    c.wait_ready(1)
    return models


def check_seq(c, name, lead):
    """lead: the instance's leading dims ((1,) where the model's batch of 1 is not batched)."""
    cl = ssc.Client(c.grpc, name, "predict")
    lens = [3, 5, 3, 1, 5]
    xs = [np.arange(n * D, dtype=np.float32).reshape(lead + (n, D)) / 7 for n in lens]
    got = cl.infer([{"x": x} for x in xs])
    assert isinstance(got, list) and len(got) == len(xs), str(got)[:300]
    for x, r in zip(xs, got):
        assert "y" in r, "instance of %s answered %s" % (x.shape, r)
        np.testing.assert_allclose(r["y"], -x.sum(axis=-1), rtol=1e-6)
    bad = cl.infer([{"x": np.ones(lead + (3, D), np.float32)},
                    {"x": np.ones(lead + (3, D + 1), np.float32)}, {"x": np.ones((D,), np.float32)}])
    assert "y" in bad[0], str(bad)[:300]
    for r in bad[1:]:
        assert "error" in r and "shape" in r["error"] and "not match" in r["error"], str(bad)[:400]
    print("    lengths %s answered; wrong shapes: %s" % (lens, bad[1]["error"][:100]))


def test_dynamic_seq_unbatched():
    with Cluster() as c:
        seq_model(os.path.join(c.dir, "seq.onnx"), 1)
        serve_one(c, "seq", os.path.join(c.dir, "seq.onnx"), 1, 1)
        check_seq(c, "seq", (1,))


def test_dynamic_seq_batched():
    with Cluster() as c:
        seq_model(os.path.join(c.dir, "seq.onnx"), "batch")
        serve_one(c, "seq", os.path.join(c.dir, "seq.onnx"), 1, 1, with_batch_dim=True)
        check_seq(c, "seq", ())


def run_two_stage(ranks):
    with Cluster() as c:
        path = os.path.join(c.dir, "two.onnx")
        w1, w2 = two_stage_model(path)
        models = serve_one(c, "two", path, ranks, 2, methods=[
            {"name": "predict", "inputs": ["x", "b"], "outputs": ["y"]}])
        later = onnx.load(models[-1], load_external_data=False)
        assert "b" in [i.name for i in later.graph.input], "the last stage does not declare b"
        x = np.arange(4 * D, dtype=np.float32).reshape(4, D) / 10 - 1
        b = np.full((4, D), 0.25, np.float32)
        want = np.maximum(x @ numpy_helper.to_array(w1), 0) @ numpy_helper.to_array(w2) + b
        got = ssc.Client(c.grpc, "two", "predict").infer({"x": x, "b": b})
        assert isinstance(got, list) and "y" in got[0], str(got)[:300]
        np.testing.assert_allclose(got[0]["y"], want, rtol=1e-5, atol=1e-5)


def test_later_stage_input():
    run_two_stage(8)


CASES = [test_dynamic_seq_unbatched, test_dynamic_seq_batched, test_later_stage_input]

if __name__ == "__main__":
    sys.exit(run_cases(CASES, sys.argv[1:]))
