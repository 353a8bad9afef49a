#!/usr/bin/python3
"""Loop and Scan cases beyond ONNX's node cases, numpy as the oracle: carried values that swap
(a body output that is another body input), a while loop ended by a condition computed in the
body, a body reading outer-scope values, Scan with reversed directions and non-zero axes, and a
MatMul of an input by its own transpose (for the planner's folding and bound checks).
Usage: loop_cases.py OUTDIR
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper, numpy_helper

rng = np.random.default_rng(14)
F = T.FLOAT


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def save(out, name, nodes, ins, outs, feeds, expected, opset=13, inits=()):
    graph = helper.make_graph(nodes, name, ins, outs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    d = os.path.join(out, f"test_{name}")
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    for kind, vals in (("input", feeds), ("output", expected)):
        for i, (n, t) in enumerate(vals):
            onnx.save_tensor(numpy_helper.from_array(np.asarray(t), n),
                             os.path.join(d, "test_data_set_0", f"{kind}_{i}.pb"))


def fibonacci(out):
    """a, b <- b, a + b; scan output a. The body's output a_out IS its input b."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Identity", ["b"], ["a_out"]),
         helper.make_node("Add", ["a", "b"], ["b_out"]),
         helper.make_node("Identity", ["a"], ["seen"])],
        "fib_body",
        [vi("i", T.INT64, []), vi("cond", T.BOOL, []), vi("a", F, [2]), vi("b", F, [2])],
        [vi("cond_out", T.BOOL, []), vi("a_out", F, [2]), vi("b_out", F, [2]), vi("seen", F, [2])])
    node = helper.make_node("Loop", ["M", "", "a0", "b0"], ["a", "b", "seen"], body=body)
    a0, b0, m = np.array([0, 1], np.float32), np.array([1, 1], np.float32), 7
    a, b, seen = a0.copy(), b0.copy(), []
    for _ in range(m):
        seen.append(a.copy())
        a, b = b, a + b
    save(out, "loop_fibonacci_swap", [node],
         [vi("M", T.INT64, []), vi("a0", F, [2]), vi("b0", F, [2])],
         [vi("a", F, [2]), vi("b", F, [2]), vi("seen", F, [m, 2])],
         [("M", np.int64(m)), ("a0", a0), ("b0", b0)], [("a", a), ("b", b), ("seen", np.stack(seen))])


def while_node(output):
    """Loop(go, x0) -> output: x <- x * scale (scale and limit from the outer graph) while
    sum(x) < limit; no trip count. Also returns the inputs' declarations, the feeds and x."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["x_out"]),
         helper.make_node("ReduceSum", ["x_out"], ["s"], keepdims=0),
         helper.make_node("Less", ["s", "limit"], ["cond_out"])],
        "while_body",
        [vi("i", T.INT64, []), vi("cond", T.BOOL, []), vi("x", F, [3])],
        [vi("cond_out", T.BOOL, []), vi("x_out", F, [3])])
    node = helper.make_node("Loop", ["", "go", "x0"], [output], body=body)
    x0, scale, limit = np.array([1, 2, 3], np.float32), np.array([1.5, 1.1, 2.0], np.float32), np.float32(100)
    x = x0.copy()
    while True:
        x = x * scale
        if not x.sum() < limit:
            break
    ins = [vi("go", T.BOOL, []), vi("x0", F, [3]), vi("scale", F, [3]), vi("limit", F, [])]
    feeds = [("go", np.bool_(True)), ("x0", x0), ("scale", scale), ("limit", limit)]
    return node, ins, feeds, x


def while_loop(out):
    node, ins, feeds, x = while_node("x")
    save(out, "loop_while_outer_scope", [node], ins, [vi("x", F, [3])], feeds, [("x", x)])


def if_while(out):
    """The while loop of while_loop inside an If's then-branch: a Loop two subgraphs deep, whose
    body reads values from the outermost graph (test_runtime_loops: the deadline reaches it)."""
    loop, ins, feeds, x = while_node("x_then")
    then_g = helper.make_graph([loop], "then", [], [vi("x_then", F, [3])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x0"], ["x_else"])],
                               "else", [], [vi("x_else", F, [3])])
    node = helper.make_node("If", ["go"], ["x"], then_branch=then_g, else_branch=else_g)
    save(out, "if_while", [node], ins, [vi("x", F, [3])], feeds, [("x", x)])


def if_model_constant(out):
    """sum(W^T) inside an If's branch, W a 200-byte initializer of the outer graph: the branch
    folds W^T, a constant of the model's own (test_runtime_loops: not bounded as a request's)."""
    w = np.arange(50, dtype=np.float32).reshape(5, 10)
    then_g = helper.make_graph([helper.make_node("Transpose", ["W"], ["wt"]),
                                helper.make_node("ReduceSum", ["wt"], ["s_then"], keepdims=0)],
                               "then", [], [vi("s_then", F, [])])
    else_g = helper.make_graph([helper.make_node("ReduceSum", ["W"], ["s_else"], keepdims=0)],
                               "else", [], [vi("s_else", F, [])])
    node = helper.make_node("If", ["go"], ["s"], then_branch=then_g, else_branch=else_g)
    save(out, "if_model_constant", [node], [vi("go", T.BOOL, [])], [vi("s", F, [])],
         [("go", np.bool_(True))], [("s", np.float32(w.sum()))],
         inits=[numpy_helper.from_array(w, "W")])


def shape_square(out):
    """y = ones(n, n) for x of length n: ConstantOfShape(Concat(Shape(x), Shape(x))), folded at
    plan time from x's shape (test_runtime_loops: bounded by max_run_bytes)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Concat", ["s", "s"], ["ss"], axis=0),
             helper.make_node("ConstantOfShape", ["ss"], ["y"],
                              value=numpy_helper.from_array(np.ones(1, np.float32)))]
    save(out, "shape_square", nodes, [vi("x", F, ["n"])], [vi("y", F, ["n", "n"])],
         [("x", np.zeros(3, np.float32))], [("y", np.ones((3, 3), np.float32))])


def scan_axes(out):
    """Running max over axis 1 read backwards, stacked on axis 1 forwards and axis 0 reversed."""
    body = helper.make_graph(
        [helper.make_node("Max", ["m", "col"], ["m_out"]),
         helper.make_node("Identity", ["m_out"], ["y1"]),
         helper.make_node("Mul", ["m_out", "col"], ["y2"])],
        "scan_body",
        [vi("m", F, [3]), vi("col", F, [3])],
        [vi("m_out", F, [3]), vi("y1", F, [3]), vi("y2", F, [3])])
    node = helper.make_node("Scan", ["m0", "x"], ["m", "y1", "y2"], body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[1],
                            scan_output_axes=[1, 0], scan_output_directions=[0, 1])
    x = rng.standard_normal((3, 5)).astype(np.float32)
    m0 = np.full(3, -10, np.float32)
    m, y1, y2 = m0.copy(), [], []
    for t in range(4, -1, -1):
        m = np.maximum(m, x[:, t])
        y1.append(m.copy())
        y2.append(m * x[:, t])
    save(out, "scan_reverse_axes", [node], [vi("m0", F, [3]), vi("x", F, [3, 5])],
         [vi("m", F, [3]), vi("y1", F, [3, 5]), vi("y2", F, [5, 3])],
         [("m0", m0), ("x", x)], [("m", m), ("y1", np.stack(y1, 1)), ("y2", np.stack(y2[::-1], 0))],
         opset=11)


def constant_condition(out):
    """PyTorch's for-loop form: the body's condition is an outer constant true (not its input),
    with a scan output whose length is the trip count."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["always"], ["cond_out"]),
         helper.make_node("Tanh", ["h"], ["h_out"]),
         helper.make_node("Identity", ["h_out"], ["seen"])],
        "for_body",
        [vi("i", T.INT64, []), vi("cond", T.BOOL, []), vi("h", F, [2, 3])],
        [vi("cond_out", T.BOOL, []), vi("h_out", F, [2, 3]), vi("seen", F, [2, 3])])
    nodes = [helper.make_node("Constant", [], ["always"], value=numpy_helper.from_array(np.array(True))),
             helper.make_node("Constant", [], ["M"], value=numpy_helper.from_array(np.int64(4))),
             helper.make_node("Loop", ["M", "always", "x"], ["h", "seen"], body=body)]
    x = rng.standard_normal((2, 3)).astype(np.float32)
    h, seen = x.copy(), []
    for _ in range(4):
        h = np.tanh(h)
        seen.append(h)
    save(out, "loop_constant_condition", nodes, [vi("x", F, [2, 3])],
         [vi("h", F, [2, 3]), vi("seen", F, [4, 2, 3])], [("x", x)], [("h", h), ("seen", np.stack(seen))])


def self_product(out):
    """y = x @ x^T: MatMul's second operand is computed from the input; the planner must not fold
    it (test_runtime_loops checks that new x values do not re-plan). x's dims are free, so x^T
    can be made as large as a bound check needs."""
    x = rng.standard_normal((3, 4)).astype(np.float32)
    save(out, "matmul_input_transposed",
         [helper.make_node("Transpose", ["x"], ["xt"]), helper.make_node("MatMul", ["x", "xt"], ["y"])],
         [vi("x", F, ["m", "k"])], [vi("y", F, ["m", "m"])], [("x", x)], [("y", x @ x.T)])


if __name__ == "__main__":
    for make in (fibonacci, while_loop, if_while, if_model_constant, shape_square, scan_axes,
                 constant_condition, self_product):
        make(sys.argv[1])
