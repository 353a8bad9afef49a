"""An unchanged MindSpore Serving servable_config.py with several models: two declared models
(Add and Mul, each its own group that `shardserve serve` starts, as MindSpore's worker loads its
local models) and one model declared with two files, MindSpore's subgraphs: add_stage runs
subgraph 0, a Python function reaches subgraph 1 with Model.call(..., subgraph=1)."""
from mindspore_serving.server import register

add = register.declare_model(model_file="add.onnx", model_format="MindIR", with_batch_dim=False)
mul = register.declare_model(model_file="mul.onnx", model_format="MindIR", with_batch_dim=False)
graphs = register.declare_model(model_file=["graphs_add.onnx", "graphs_mul.onnx"], model_format="MindIR",
                                with_batch_dim=False)


def times_by_subgraph_1(y, x2):
    """Subgraph 1 of `graphs` (Mul), called from inside a function stage."""
    return graphs.call(y, x2, subgraph=1)


@register.register_method(output_names=["y"])
def add_then_mul(x1, x2, x3):
    """(x1 + x2) * x3: model Add, then model Mul."""
    s = register.add_stage(add, x1, x2, outputs_count=1)
    y = register.add_stage(mul, s, x3, outputs_count=1)
    return y


@register.register_method(output_names=["y"])
def mul_only(x1, x2):
    return register.add_stage(mul, x1, x2, outputs_count=1)


@register.register_method(output_names=["y", "z"])
def subgraphs(x1, x2):
    """y = x1 + x2 (subgraph 0), z = y * x2 (subgraph 1, through Model.call)."""
    y = register.add_stage(graphs, x1, x2, outputs_count=1)
    z = register.add_stage(times_by_subgraph_1, y, x2, outputs_count=1)
    return y, z
