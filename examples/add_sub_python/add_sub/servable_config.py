"""An unchanged MindSpore Serving servable_config.py (shardserve runs it through its
mindspore_serving shim): Python functions before and after one model, MindSpore's tensor_add
(y = x1 + x2 over 2x2 float32, no batch dim), in the three forms MindSpore users write."""
import numpy as np
from mindspore_serving.server import register

tensor_add = register.declare_model(model_file="tensor_add.mindir", model_format="MindIR", with_batch_dim=False)


def add_cast(x1, x2):
    """Per instance: clients may send int32; the model wants float32."""
    return x1.astype(np.float32), x2.astype(np.float32)


def add_1(y):
    return y + 1


def sub_and_describe(instances):
    """Batched (batch_size): one call for several instances, one result per instance."""
    for y, x3 in instances:
        z = y - x3
        yield z, "sum=%g" % float(z.sum())


@register.register_method(output_names=["y"])
def add_common(x1, x2):
    y = register.add_stage(tensor_add, x1, x2, outputs_count=1)
    return y


@register.register_method(output_names=["y", "text"])
def add_sub(x1, x2, x3):
    """(x1 + x2) + 1 - x3, and a string describing it."""
    x1, x2 = register.add_stage(add_cast, x1, x2, outputs_count=2)
    y = register.add_stage(tensor_add, x1, x2, outputs_count=1)
    y = register.add_stage(add_1, y, outputs_count=1)
    y, text = register.add_stage(sub_and_describe, y, x3, outputs_count=2, batch_size=4)
    return y, text


@register.register_method(output_names=["y"])
def add_cast_old(x1, x2):
    """MindSpore's older form: output counts come from the assignments."""
    x1, x2 = register.call_preprocess(add_cast, x1, x2)
    y = register.call_servable(x1, x2)
    return y
