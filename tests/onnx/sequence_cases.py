#!/usr/bin/python3
"""Backend-test cases for sequence ops beyond the node cases (which cover SequenceInsert and
sequences in If/Loop only): SplitToSequence (no split, keepdims 0, a scalar split with a short
last piece, split sizes), ConcatFromSequence (axis, new_axis), SequenceConstruct/Erase/Length/At
with negative positions, SequenceEmpty, sequence graph outputs, and a Loop whose carried sequence
grows by a data-dependent count (two data sets of different lengths: the plan must follow the
sequence's shapes). numpy is the oracle. Usage: sequence_cases.py OUTDIR
"""
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)
F = TensorProto.FLOAT


def seq_type(elem=F):
    return helper.make_sequence_type_proto(helper.make_tensor_type_proto(elem, None))


def write(d, kind, i, name, value):
    path = os.path.join(d, f"{kind}_{i}.pb")
    if isinstance(value, list):
        proto = numpy_helper.from_list(value, name)
    else:
        proto = numpy_helper.from_array(value, name)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def case(out, name, nodes, inputs, outputs, sets, inits=()):
    """inputs/outputs: (name, TypeProto); sets: list of (input values, output values)."""
    vi = lambda n, t: helper.make_value_info(n, t)
    g = helper.make_graph(nodes, name, [vi(n, t) for n, t in inputs],
                          [vi(n, t) for n, t in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    d = os.path.join(out, "test_" + name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(m.SerializeToString())
    for k, (ins, outs) in enumerate(sets):
        sd = os.path.join(d, f"test_data_set_{k}")
        os.makedirs(sd, exist_ok=True)
        for i, ((n, _), v) in enumerate(zip(inputs, ins)):
            write(sd, "input", i, n, v)
        for i, ((n, _), v) in enumerate(zip(outputs, outs)):
            write(sd, "output", i, n, v)


def tensor(elem=F):
    return helper.make_tensor_type_proto(elem, None)


def split_cases(out):
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    case(out, "split_to_sequence_default", [helper.make_node("SplitToSequence", ["x"], ["s"])],
         [("x", tensor())], [("s", seq_type())], [([x], [[x[i:i + 1] for i in range(4)]])])
    case(out, "split_to_sequence_nokeepdims",
         [helper.make_node("SplitToSequence", ["x"], ["s"], axis=1, keepdims=0)],
         [("x", tensor())], [("s", seq_type())], [([x], [[x[:, i] for i in range(5)]])])
    case(out, "split_to_sequence_scalar_split",
         [helper.make_node("SplitToSequence", ["x", "n"], ["s"], axis=-2)],
         [("x", tensor())], [("s", seq_type())],
         [([x], [[x[:, 0:2], x[:, 2:4], x[:, 4:5]]])], [("n", np.array(2, np.int64))])
    case(out, "split_to_sequence_sizes",
         [helper.make_node("SplitToSequence", ["x", "n"], ["s"], axis=1)],
         [("x", tensor())], [("s", seq_type())], [([x], [[x[:, 0:1], x[:, 1:5]]])],
         [("n", np.array([1, 4], np.int64))])


def concat_cases(out):
    a, b = (rng.standard_normal((2, n)).astype(np.float32) for n in (3, 4))
    c = rng.standard_normal((2, 3)).astype(np.float32)
    case(out, "concat_from_sequence_axis1",
         [helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=1)],
         [("s", seq_type())], [("y", tensor())], [([[a, b]], [np.concatenate([a, b], 1)])])
    case(out, "concat_from_sequence_new_axis_last",
         [helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=-1, new_axis=1)],
         [("s", seq_type())], [("y", tensor())], [([[a, c]], [np.stack([a, c], -1)])])


def construct_cases(out):
    a, b, c = (rng.standard_normal((2, 2)).astype(np.float32) for _ in range(3))
    nodes = [helper.make_node("SequenceConstruct", ["a", "b", "c"], ["s"]),
             helper.make_node("SequenceErase", ["s"], ["s1"]),
             helper.make_node("SequenceErase", ["s1", "zero"], ["s2"]),
             helper.make_node("SequenceLength", ["s1"], ["n"]),
             helper.make_node("SequenceAt", ["s", "minus1"], ["last"])]
    case(out, "sequence_construct_erase_length_at", nodes,
         [("a", tensor()), ("b", tensor()), ("c", tensor())],
         [("s2", seq_type()), ("n", tensor(TensorProto.INT64)), ("last", tensor())],
         [([a, b, c], [[b], np.array(2, np.int64), c])],
         [("zero", np.array(0, np.int64)), ("minus1", np.array(-1, np.int64))])
    nodes = [helper.make_node("SequenceEmpty", [], ["e"], dtype=TensorProto.FLOAT),
             helper.make_node("SequenceInsert", ["e", "a"], ["s1"]),
             helper.make_node("SequenceInsert", ["s1", "b", "zero"], ["s2"]),
             helper.make_node("ConcatFromSequence", ["s2"], ["y"], axis=0)]
    case(out, "sequence_empty_insert_concat", nodes, [("a", tensor()), ("b", tensor())],
         [("y", tensor())], [([a, b], [np.concatenate([b, a], 0)])],
         [("zero", np.array(0, np.int64))])


def loop_case(out):
    """seq = []; for i in range(M): seq.insert(x * i); concat(seq, axis 0), len(seq)."""
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["fi"], to=F),
         helper.make_node("Mul", ["x", "fi"], ["xi"]),
         helper.make_node("SequenceInsert", ["s_in", "xi"], ["s_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_value_info("s_in", seq_type())],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_value_info("s_out", seq_type())])
    nodes = [helper.make_node("SequenceEmpty", [], ["e"], dtype=F),
             helper.make_node("Loop", ["m", "", "e"], ["s"], body=body),
             helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0),
             helper.make_node("SequenceLength", ["s"], ["n"])]
    x = rng.standard_normal((1, 3)).astype(np.float32)
    sets = [([np.array(m, np.int64), x], [np.concatenate([x * i for i in range(m)], 0),
                                          np.array(m, np.int64)]) for m in (3, 5)]
    case(out, "loop_sequence_grows", nodes,
         [("m", tensor(TensorProto.INT64)), ("x", tensor())],
         [("y", tensor()), ("n", tensor(TensorProto.INT64))], sets)


def main():
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for make in (split_cases, concat_cases, construct_cases, loop_case):
        make(out)


if __name__ == "__main__":
    main()
