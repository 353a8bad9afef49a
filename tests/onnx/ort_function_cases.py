#!/usr/bin/python3
"""Backend-test cases for model-local functions (ModelProto.functions), which the runtime inlines
at load: torch.onnx's export_modules_as_functions (one module class, and classes nested in each
other), and hand-built functions with attributes bound from the caller (ref_attr_name, left out
when the caller has none), an output the caller does not use,
a function calling another, a function importing a domain the model does not, and a call inside
an If branch. (onnxruntime 1.30 crashes on a call that leaves out an optional input, so no case
does.)

Writes OUTDIR/test_<name>/model.onnx + test_data_set_0/input_N.pb without outputs:
onnxruntime-node is the oracle and writes them (ort_oracle.js). Usage: ort_function_cases.py OUTDIR
"""
import io
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(2029)
F = TensorProto.FLOAT
DOM = "custom.functions"


def x(*shape):
    return rng.uniform(-2, 2, shape).astype(np.float32)


def write(out, name, model, inputs):
    d = os.path.join(out, "test_" + name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    for i, (n, a) in enumerate(inputs):
        with open(os.path.join(d, "test_data_set_0", f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())


def model(nodes, inputs, outputs, functions, inits=(), extra_opsets=()):
    vi = lambda n, a: helper.make_tensor_value_info(n, F, list(a.shape))  # noqa: E731
    g = helper.make_graph(nodes, "g", [vi(n, a) for n, a in inputs],
                          [helper.make_tensor_value_info(n, F, None) for n in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOM, 1),
                                            *extra_opsets], functions=functions)
    m.ir_version = 8
    return m


def torch_cases(out):
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)
            self.norm = torch.nn.LayerNorm(8)

        def forward(self, v):
            return torch.relu(self.norm(self.lin(v))) + v

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = Block(), Block()

        def forward(self, v):
            return self.b(self.a(v)) * 0.5

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p, self.q = Pair(), Pair()
            self.head = torch.nn.Linear(8, 3)

        def forward(self, v):
            return self.head(self.q(self.p(v)))

    v = x(4, 8)
    for name, mods in (("torch_block_functions", {Block}), ("torch_nested_functions", {Block, Pair})):
        torch.manual_seed(0)
        net = Net().eval()  # a fresh module per export: torch 1.13's function extraction keeps
        buf = io.BytesIO()  # state in the modules it traced
        torch.onnx.export(net, torch.from_numpy(v), buf, opset_version=15, input_names=["x"],
                          output_names=["y"], export_modules_as_functions=mods)
        m = onnx.load_from_string(buf.getvalue())
        assert len(m.functions) == len(mods), "torch exported %d functions" % len(m.functions)
        write(out, name, m, [("x", v)])


def attribute_cases(out):
    # Leaky(X) = LeakyRelu(X, alpha = the caller's 'slope') * 2
    leaky = helper.make_function(
        DOM, "Leaky", ["X"], ["Y"],
        [helper.make_node("Constant", [], ["two"], value_float=2.0),
         helper.make_node("LeakyRelu", ["X"], ["l"]),
         helper.make_node("Mul", ["l", "two"], ["Y"])],
        [helper.make_opsetid("", 17)], attributes=["slope"])
    relu_node = leaky.node[1]
    relu_node.attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="slope",
                                                   type=onnx.AttributeProto.FLOAT))
    nodes = [helper.make_node("Leaky", ["x"], ["a"], domain=DOM, slope=0.1),
             helper.make_node("Leaky", ["a"], ["b"], domain=DOM, slope=0.3),
             helper.make_node("Leaky", ["b"], ["y"], domain=DOM)]  # alpha left out: 0.01
    write(out, "function_attribute_refs", model(nodes, [("x", x(3, 5))], ["y"], [leaky]),
          [("x", x(3, 5))])


def structure_cases(out):
    # Affine(X, B) -> (Y, Z): Y = X * 3 + B, Z = X - 1 (not every caller uses Z)
    affine = helper.make_function(
        DOM, "Affine", ["X", "B"], ["Y", "Z"],
        [helper.make_node("Constant", [], ["three"], value_float=3.0),
         helper.make_node("Constant", [], ["one"], value_float=1.0),
         helper.make_node("Mul", ["X", "three"], ["t"]),
         helper.make_node("Add", ["t", "B"], ["Y"]),
         helper.make_node("Sub", ["X", "one"], ["Z"])],
        [helper.make_opsetid("", 17)])
    # Twice(X) = Affine(Affine(X, X)) : a function calling another one
    twice = helper.make_function(
        DOM, "Twice", ["X"], ["Y"],
        [helper.make_node("Affine", ["X", "X"], ["t", "unused"], domain=DOM),
         helper.make_node("Affine", ["t", "X"], ["Y", ""], domain=DOM)],
        [helper.make_opsetid("", 17), helper.make_opsetid(DOM, 1)])
    nodes = [helper.make_node("Affine", ["x", "b"], ["y0", ""], domain=DOM),
             helper.make_node("Affine", ["b", "x"], ["y1", "z1"], domain=DOM),
             helper.make_node("Twice", ["y1"], ["y2"], domain=DOM),
             helper.make_node("Add", ["y0", "y2"], ["s"]),
             helper.make_node("Add", ["s", "z1"], ["y"])]
    write(out, "function_outputs_nested", model(nodes, [("x", x(2, 6)), ("b", x(2, 6))], ["y"],
                                                 [affine, twice]),
          [("x", x(2, 6)), ("b", x(2, 6))])

    # a function whose body uses com.microsoft (Gelu), a domain only the function imports
    gelu = helper.make_function(
        DOM, "MsGelu", ["X"], ["Y"], [helper.make_node("Gelu", ["X"], ["Y"], domain="com.microsoft")],
        [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    write(out, "function_own_domain",
          model([helper.make_node("MsGelu", ["x"], ["y"], domain=DOM)], [("x", x(4, 4))], ["y"],
                [gelu]), [("x", x(4, 4))])

    # a function whose name is longer than any fixed buffer: every call still gets its own prefix
    long_name = "Long" + "g" * 196
    longf = helper.make_function(DOM, long_name, ["X"], ["Y"],
                                 [helper.make_node("Neg", ["X"], ["n"]),
                                  helper.make_node("Mul", ["n", "X"], ["Y"])],
                                 [helper.make_opsetid("", 17)])
    write(out, "function_long_name",
          model([helper.make_node(long_name, ["x"], ["a"], domain=DOM),
                 helper.make_node(long_name, ["a"], ["y"], domain=DOM)], [("x", x(3, 4))], ["y"],
                [longf]), [("x", x(3, 4))])

    # a call inside an If branch
    neg = helper.make_function(DOM, "Neg2", ["X"], ["Y"],
                               [helper.make_node("Neg", ["X"], ["n"]),
                                helper.make_node("Add", ["n", "n"], ["Y"])],
                               [helper.make_opsetid("", 17)])
    out_vi = [helper.make_tensor_value_info("r", F, None)]
    then_g = helper.make_graph([helper.make_node("Neg2", ["x"], ["r"], domain=DOM)], "then", [],
                               out_vi)
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["r"])], "else", [], out_vi)
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Constant", [], ["zero"], value_float=0.0),
             helper.make_node("Less", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    for sign, name in ((-1, "function_in_if_then"), (1, "function_in_if_else")):
        v = np.abs(x(3, 3)) * sign
        write(out, name, model(nodes, [("x", v)], ["y"], [neg]), [("x", v)])


def main():
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch_cases(out)
    attribute_cases(out)
    structure_cases(out)
    print("ort_function_cases: %d cases in %s" % (len(os.listdir(out)), out))


if __name__ == "__main__":
    main()
