#!/usr/bin/python3
"""The mindspore_serving shim and the servable_config.py export (`python3 -m
shardserve_stages.export DIR NAME`, what `shardserve serve` runs): the declarations of MindSpore's
own example configs come out as servable.json's stage pipelines, and every restriction MindSpore
enforces raises MindSpore's error text. No server is started. Each case prints ok/FAIL; the run
ends with "N passed, N failed"."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(HERE, "..", "serving"))
from cluster import run_cases  # noqa: E402

HEADER = """import numpy as np
from mindspore_serving.server import register
from mindspore_serving.server import distributed
"""
MODEL = 'model = register.declare_model(model_file="tensor_add.mindir", model_format="MindIR", with_batch_dim=False)\n'
FUNCS = """
def add_cast(x1, x2):
    return x1.astype(np.float32), x2.astype(np.float32)

def add_1(y):
    return y + 1

def batched(instances):
    for y in instances:
        yield y
"""


def export(body, name="svc", files=("tensor_add.onnx",), versions=("1",)):
    """(exit status, parsed stdout, stderr) of exporting a servable whose config is HEADER + body."""
    d = tempfile.mkdtemp(prefix="ss-shim-")
    try:
        os.makedirs(os.path.join(d, name))
        with open(os.path.join(d, name, "servable_config.py"), "w") as f:
            f.write(HEADER + body)
        for v in versions:
            os.makedirs(os.path.join(d, name, v))
            for fn in files:
                open(os.path.join(d, name, v, fn), "w").close()
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
        p = subprocess.run(["/usr/bin/python3", "-m", "shardserve_stages.export", d, name], capture_output=True,
                           text=True, env=env, timeout=60)
        return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr
    finally:
        shutil.rmtree(d)


def refused(body, text, **kw):
    rc, out, err = export(body, **kw)
    assert rc == 1 and out and text in out["error"], "want %r, got rc %d %r\n%s" % (text, rc, out, err)


def method(body, outputs='"y"', args="x1, x2"):
    lines = "".join("    %s\n" % line for line in body.strip().split("\n"))
    return '\n@register.register_method(output_names=[%s])\ndef m(%s):\n%s' % (outputs, args, lines)


# ---------------------------------------------------------------- what comes out

def test_add_stage_pipeline_exported():
    rc, out, err = export(MODEL + FUNCS + method("""
a, b = register.add_stage(add_cast, x1, x2, outputs_count=2)
y = register.add_stage(model, a, b, outputs_count=1)
y = register.add_stage(add_1, y, outputs_count=1, tag="Plus one")
z = register.add_stage(batched, y, outputs_count=1, batch_size=4)
return z"""))
    assert rc == 0, (out, err)
    assert out["distributed"] == {"rank_size": 1, "stage_size": 1, "with_batch_dim": False,
                                  "enable_pipeline_infer": True}, out
    m = out["methods"][0]
    assert m["name"] == "m" and m["inputs"] == ["x1", "x2"] and m["outputs"] == ["y"], m
    kinds = [(s["kind"], s.get("function"), s.get("batch_size"), s.get("tag")) for s in m["stages"]]
    assert kinds == [("python_function", "add_cast", None, None), ("model", None, None, "Model 'tensor_add.mindir'"),
                     ("python_function", "add_1", None, "Plus one"), ("python_function", "batched", 4, None)], kinds
    assert m["stages"][1]["inputs"] == ["stage1.output0", "stage1.output1"] and m["returns"] == ["stage4.output0"], m


def test_mindir_served_as_onnx_sibling_with_notice():
    rc, out, err = export(MODEL + method("return register.add_stage(model, x1, x2, outputs_count=1)"))
    assert rc == 0 and "model file 'tensor_add.mindir' is served as its ONNX sibling" in err, (out, err)
    assert out["model_files"]["1"][0].endswith("/1/tensor_add.onnx"), out


def test_distributed_declare_servable_and_returning_inputs():
    rc, out, err = export(
        'model = distributed.declare_servable(rank_size=8, stage_size=2, with_batch_dim=False, '
        'without_batch_dim_inputs=[1])\n' +
        method("y = register.add_stage(model, x1, x2, outputs_count=1)\nreturn y, x1", outputs='"y", "x"'),
        files=(), versions=())
    assert rc == 0, (out, err)
    assert out["distributed"] == {"rank_size": 8, "stage_size": 2, "with_batch_dim": False,
                                  "enable_pipeline_infer": False, "without_batch_dim_inputs": ["x2"]}, out
    assert out["methods"][0]["returns"] == ["stage1.output0", "x1"] and out["methods"][0]["stages"][0]["model"] == "svc"


def test_argmax_cpp_and_returning_inputs():
    rc, out, err = export(MODEL + method("y = register.add_stage(model, x1, x2, outputs_count=1)\n"
                                         "return register.add_stage('argmax_cpp', y, outputs_count=1)") +
                          method("return x2, x1", outputs='"a", "b"', args="x1, x2").replace("def m(", "def echo("))
    assert rc == 0, (out, err)
    argmax = out["methods"][0]["stages"][1]
    assert argmax["module"].endswith("shardserve_stages/builtin.py") and argmax["function"] == "argmax_cpp", argmax
    assert argmax["tag"] == "Function 'argmax_cpp'", argmax
    echo = out["methods"][1]
    assert echo["stages"] == [] and echo["returns"] == ["x2", "x1"], echo


def test_older_call_forms():
    rc, out, err = export(MODEL + FUNCS + method("""
a, b = register.call_preprocess(add_cast, x1, x2)
y = register.call_servable(a, b)
z = register.call_postprocess_pipeline(batched, y)
return z"""))
    assert rc == 0, (out, err)
    st = out["methods"][0]["stages"]
    assert [(s["kind"], s.get("tag"), s.get("batch_size"), len(s["outputs"])) for s in st] == [
        ("python_function", "Preprocess", None, 2), ("model", "Model 'tensor_add.mindir'", None, 1),
        ("python_function", "Postprocess", 0, 1)], st
    assert "'call_preprocess' is deprecated from version" in err, err


# ---------------------------------------------------------------- MindSpore's errors

def test_placeholder_rules():
    refused(MODEL + method("return register.add_stage(model, x1, 1, outputs_count=1)"),
            "Each value of parameter *args is a placeholder for data and must come from the method inputs or the "
            "outputs of add_stage")
    refused(MODEL + method("return x1 + 1"), "unsupported operand type(s) for +: '_TensorDef' and 'int'")
    refused(MODEL + method("a, b = register.add_stage(model, x1, x2, outputs_count=1)\nreturn a"),
            "cannot unpack non-iterable _TensorDef object")
    refused(MODEL + method("a, b = register.add_stage(model, x1, x2, outputs_count=3)\nreturn a"),
            "too many values to unpack (expected 2)")
    refused(MODEL + method("return 3"), "Each value returned is a placeholder for data and must come from the "
                                        "method inputs or the outputs of add_stage")
    refused(MODEL + method("return x1, x2"), "Method return output size 2 not match registered 1")


def test_method_rules():
    refused(MODEL + method("return register.add_stage(model, x1, x2, outputs_count=1)") * 2,
            "Method m has been registered more than once.")
    refused(MODEL + method("return x1", args="x1, *rest"), "'m' input rest cannot be VAR_POSITIONAL !")
    refused(MODEL + method("return x1", args="x1, **kw"), "'m' input kw cannot be VAR_KEYWORD !")
    refused(MODEL, "There is no method registered for servable")
    refused(MODEL + method("return register.add_stage(model, x1, x2, outputs_count=1)", outputs="1"),
            "Parameter 'output_names' should be str, but actually <class 'int'>")


def test_add_stage_rules():
    refused(MODEL + method("return register.add_stage(register.Model('other'), x1, x2, outputs_count=1)"),
            "Check failed in method 'm', the parameter 'stage' of add_stage must be function or Model returned by "
            "declare_model, and ensure that interface 'declare_model' can take effect")
    refused(MODEL + method("return register.add_stage(np.add, x1, x2, outputs_count=1)"),
            "Check failed in method 'm', the parameter 'stage' of add_stage must be function or Model returned by "
            "declare_model, now is <class 'numpy.ufunc'>")
    refused(MODEL + FUNCS + method("return register.add_stage(add_1, x1, x2, outputs_count=1)"),
            "function add_1 input args count 1 not match the count 2 registered in method")
    refused(MODEL + FUNCS + method("register.add_stage(batched, x1, outputs_count=1, batch_size=2)\n"
                                   "return register.add_stage(batched, x1, x2, outputs_count=1, batch_size=2)"),
            "Stage function 'svc.batched' inputs count 2 not match last registered count 1, method name 'm'")
    refused(MODEL + FUNCS + method("register.add_stage(batched, x1, outputs_count=1, batch_size=2)\n"
                                   "return register.add_stage(batched, x1, outputs_count=1)"),
            "Failed to add stage function svc.batched: parameter 'batch_size' in multiple 'add_stage' should be "
            "enabled or disabled consistently")
    refused(MODEL + FUNCS + method("return register.add_stage(batched, x1, outputs_count=1, batch_size=-1)"),
            "Parameter 'batch_size' should be >= 0")
    refused(MODEL + method("register.add_stage(model, x1, x2, outputs_count=1)\n"
                           "return register.add_stage(model, x1, outputs_count=1)"),
            "RegisterInputOutputInfo failed, inputs count 1 not match old count 2, model: tensor_add.mindir")
    refused(MODEL + method("return register.add_stage('argmax_py', x1, outputs_count=1)"),
            "Function 'argmax_py' is not defined")
    refused(MODEL + method("return register.add_stage(model, x1, x2, outputs_count=1, tag='')"),
            "Parameter 'tag' should not be empty str")


def test_declare_model_rules():
    refused('register.declare_model(model_file="a.onnx", model_format="onnx")\n',
            "model format can only be OM, MindIR or MindIR_Lite, case ignored")
    refused('register.declare_model(model_file=["a.mindir", "a.mindir"], model_format="MindIR")\n',
            "The item value 'a.mindir' in parameter 'model_file' should not be repeated")
    refused(MODEL + MODEL, "Declare model tensor_add.mindir failed, model file 'tensor_add.mindir' has already been "
                           "used")
    refused(MODEL + 'distributed.declare_servable(rank_size=8, stage_size=1)\n',
            "Declare distributed model failed, servable has already been declared as local servable")
    refused('distributed.declare_servable(rank_size=8, stage_size=1)\n' + MODEL,
            "Declare model failed, servable has already been declared as distributed servable")
    refused('register.declare_model("tensor_add.mindir", "MindIR", with_batch_dim=1)\n',
            "Parameter 'with_batch_dim' should be bool, but actually <class 'int'>")
    refused('register.declare_model("tensor_add.mindir", "MindIR", options=3)\n',
            "Parameter 'options' should be None, GpuOptions or AclOptions, but gotten <class 'int'>")
    refused('register.declare_model("tensor_add.mindir", "MindIR", context=register.Context(foo=1))\n',
            "Set context failed, unsupported option foo")
    refused('register.CPUDeviceInfo(precision_mode="int8")\n',
            "Cpu device info 'precision_mode' can only be 'origin', 'fp16'. given 'int8'")
    refused('c = register.Context()\nc.append_device_info(register.CPUDeviceInfo())\n'
            'c.append_device_info(register.CPUDeviceInfo())\n', "Device info of type cpu has already been appended")


def test_older_call_rules():
    refused(FUNCS + method("return register.call_servable(x1, x2)"),
            "There is no model declared, you can use declare_model to declare models")
    refused(MODEL + FUNCS + method("y = register.call_servable(x1, x2)\nif y:\n    y = register.call_postprocess("
                                   "add_1, y)\nreturn y"),
            "Failed to parse method 'm', complex statements such as conditions and loops are not supported in "
            "register_method when the interface")
    refused(MODEL + FUNCS + method("y = register.call_postprocess(add_1, x1)\nz = register.call_servable(y, x2)\n"
                                   "return z"),
            "call_postprocess or call_postprocess_pipeline should be invoked after call_servable")
    refused(MODEL + FUNCS + method("a, b = register.call_preprocess(add_cast, x1, x2)\nreturn a"),
            "Not find the invoke of 'call_servable'")


def test_load_rules():
    refused(MODEL + method("return register.add_stage(model, x1, x2, outputs_count=1)"),
            "Load model failed, servable directory: '", files=("other.onnx",))
    refused(MODEL + method("return register.add_stage(model, x1, x2, outputs_count=1)"),
            "There is no valid version directory of models while there are models declared in servable_config.py",
            versions=())
    refused("import mindspore\n", "import svc.servable_config failed, No module named 'mindspore'")
    refused(MODEL + "model.call(np.ones(2))\n", "Model(tensor_add.mindir).call() failed: Model.call runs only inside "
                                                "a function stage, at request time")
    refused(MODEL + "register.Model('x.mindir').call(np.ones(2))\n",
            "Model(x.mindir).call() failed: the model is not declared, ensure that interface 'declare_model' can take "
            "effect")
    refused('register.declare_model("tensor_add.mindir", "MindIR", config_file="mix.cfg")\n' +
            method("return x1"), "Load config file: mix.cfg failed, error details: not supported")


CASES = [test_add_stage_pipeline_exported, test_mindir_served_as_onnx_sibling_with_notice,
         test_distributed_declare_servable_and_returning_inputs, test_argmax_cpp_and_returning_inputs,
         test_older_call_forms, test_placeholder_rules,
         test_method_rules, test_add_stage_rules, test_declare_model_rules, test_older_call_rules, test_load_rules]

if __name__ == "__main__":
    sys.exit(run_cases(CASES, sys.argv[1:]))
