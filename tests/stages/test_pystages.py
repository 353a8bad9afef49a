#!/usr/bin/python3
"""Python-function stages (servable.json "python_function", and servable_config.py through the
mindspore_serving shim) with real `shardserve serve` and `shardserve agents`: functions before and
after the model, per-instance and batched (MindSpore's batch_size), strings and bytes, and every
error path: an exception fails only its instance with MindSpore's text, a wrong output count / too
few results / an unconvertible output fail the request and the servable keeps serving, a runner
that crashes is restarted and its request fails naming the signal, a hung runner is killed at the
request timeout, and import errors and MindSpore's declaration errors refuse the start. Each case
prints ok/FAIL; the run ends with "N passed, N failed"."""

import concurrent.futures
import json
import os
import sys
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "serving"))
sys.path.insert(0, HERE)
from cluster import Cluster, run_cases  # noqa: E402
from shardserve_client import Client  # noqa: E402
from test_stages import ONES, call_failed, make_model, model_stage  # noqa: E402

FUNCTIONS = '''
import os
import time
import numpy as np

def check(x):
    if x.flat[0] == 99:
        os.kill(os.getpid(), 9)
    if x.flat[0] == 77:
        time.sleep(3600)
    if x.flat[0] < 0:
        raise ValueError("negative input %g" % x.flat[0])
    return x

def top(logits):
    return np.argmax(logits, axis=1), "rows=%d" % logits.shape[0]

def group_size(instances):
    for (x,) in instances:
        if x.flat[0] < 0:
            raise ValueError("negative in a batch")
        yield np.int64(len(instances))

def three(x):
    return x, x, x

def too_few(instances):
    return [instances[0][0]]

def illegal(x):
    return {"not": "a tensor"}

def text(s, b):
    assert isinstance(s, str) and b.dtype == np.uint8 and b.ndim == 1
    return s.upper(), bytes(b[::-1])

def ident(x):
    return x

def tile(x):
    return np.tile(x, (4, 1))

def swap(a, b):
    b.shape = b.shape[::-1]  # the same array as it came in, with another shape
    return b, a
'''


def py_stage(function, inputs, outputs, **extra):
    return dict({"kind": "python_function", "module": "fns.py", "function": function, "inputs": inputs,
                 "outputs": outputs}, **extra)


METHODS = [
    {"name": "classify", "inputs": ["x"], "outputs": ["label", "rows"],
     "stages": [py_stage("check", ["x"], ["checked"]), model_stage(["checked"], ["logits"]),
                py_stage("top", ["logits"], ["label", "rows"])]},
    {"name": "groups", "inputs": ["x"], "outputs": ["g"],
     "stages": [py_stage("group_size", ["x"], ["g"], batch_size=4)]},
    {"name": "wrong", "inputs": ["x"], "outputs": ["a", "b"], "stages": [py_stage("three", ["x"], ["a", "b"])]},
    {"name": "few", "inputs": ["x"], "outputs": ["y"], "stages": [py_stage("too_few", ["x"], ["y"], batch_size=0)]},
    {"name": "illegal", "inputs": ["x"], "outputs": ["y"], "stages": [py_stage("illegal", ["x"], ["y"])]},
    {"name": "text", "inputs": ["s", "b"], "outputs": ["s2", "b2"], "stages": [py_stage("text", ["s", "b"], ["s2", "b2"])]},
    {"name": "tile", "inputs": ["x"], "outputs": ["y"], "stages": [py_stage("tile", ["x"], ["y"])]},
    {"name": "swap", "inputs": ["a", "b"], "outputs": ["p", "q"], "stages": [py_stage("swap", ["a", "b"], ["p", "q"])]},
    {"name": "echo", "inputs": ["x", "s"], "outputs": ["s", "x"], "stages": [], "returns": ["s", "x"]},
    {"name": "argmax", "inputs": ["x"], "outputs": ["i"], "stages": [
        {"kind": "python_function", "module": os.path.join(HERE, "..", "..", "python", "shardserve_stages",
                                                           "builtin.py"), "function": "argmax_cpp",
         "inputs": ["x"], "outputs": ["i"]}]},
    {"name": "ident", "inputs": ["x"], "outputs": ["y"],
     "stages": [model_stage(["x"], ["logits"]), py_stage("ident", ["x"], ["y"])]},
]
W = np.tile((np.arange(16, dtype=np.float32) - 7.5) / 96, (96, 1))


class Served:
    """One `serve` of the servable "stages" (servable.json + fns.py) and its agent."""

    def __init__(self, methods=METHODS, runners=None, extra=(), config_py=None, functions=FUNCTIONS,
                 expect_ready=True, exported=False):
        self.c = Cluster()
        model = os.path.join(self.c.dir, "stages.onnx")
        make_model(model)
        self.models = self.c.add_servable("stages", model, 1, methods=methods)
        sv = os.path.join(self.c.servables, "stages")
        with open(os.path.join(sv, "fns.py"), "w") as f:
            f.write(functions)
        if config_py is not None:  # MindSpore's form instead of servable.json
            os.remove(os.path.join(sv, "servable.json"))
            os.makedirs(os.path.join(sv, "1"))
            os.link(model, os.path.join(sv, "1", "stages.onnx"))
            with open(os.path.join(sv, "servable_config.py"), "w") as f:
                f.write(config_py)
        if exported:  # the config converted once into servable.json, which serve then prefers
            import subprocess
            out = subprocess.run(["/usr/bin/python3", "-m", "shardserve_stages.export", self.c.servables, "stages"],
                                 capture_output=True, text=True, check=True).stdout
            with open(os.path.join(sv, "servable.json"), "w") as f:
                f.write(out)
        table = self.c.write_rank_table(1)
        old = os.environ.get("SHARDSERVE_PY_RUNNERS")
        if runners:
            os.environ["SHARDSERVE_PY_RUNNERS"] = str(runners)
        try:
            self.server = self.c.serve([("stages", 1, table)], extra=extra, expect_ready=expect_ready)
        finally:
            if runners:
                os.environ.pop("SHARDSERVE_PY_RUNNERS") if old is None else os.environ.update(SHARDSERVE_PY_RUNNERS=old)
        if expect_ready:
            self.c.agents(self.c.worker_addresses["stages"][0], self.models)
            self.c.wait_ready()

    def grpc(self, method, instances):
        return Client(self.c.grpc, "stages", method).infer(instances)

    def refused(self, expect):
        deadline = time.time() + 60
        while self.server.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        log = self.c.log(self.server)
        assert self.server.poll() not in (None, 0), "serve still running or exited 0:\n" + log
        assert expect in log, "no %r in:\n%s" % (expect, log)


SERVED = {}


def served(kind="main"):
    if kind not in SERVED:
        SERVED[kind] = Served() if kind == "main" else Served(runners=1, extra=("--request-timeout-ms", "2000"))
    return SERVED[kind]


def fn_failed(method, stage, function, msg):
    return call_failed(method, stage, "Function 'stages.%s'" % function, msg)


# ---------------------------------------------------------------- answers

def test_functions_around_the_model():
    got = served().grpc("classify", [{"x": ONES}, {"x": ONES * 0.5}])
    for g in got:
        assert g["label"].dtype == np.int64 and (g["label"] == 15).all() and g["rows"] == "rows=128", g


def test_identity_after_model_returns_the_input():
    x = np.random.RandomState(0).rand(128, 96).astype(np.float32)
    got = served().grpc("ident", [{"x": x}])[0]
    assert got["y"].dtype == np.float32 and np.array_equal(got["y"], x), got


def test_large_tensors_grow_the_segment():
    """4 MiB in, 16 MiB out: both sides grow the runner's 1 MiB segment and keep serving."""
    x = np.random.RandomState(1).rand(1024, 1024).astype(np.float32)
    s = served()
    for _ in range(2):
        got = s.grpc("tile", [{"x": x}])[0]["y"]
        assert got.shape == (4096, 1024) and np.array_equal(got[3072:], x), got.shape
    small = s.grpc("tile", [{"x": ONES}])[0]["y"]
    assert small.shape == (512, 96) and (small == 1).all()


def test_runner_killed_while_idle_is_replaced_quietly():
    """A runner that dies between requests fails no request: the next call starts a new one."""
    import re
    import signal
    s = served("one_runner")
    assert (s.grpc("classify", [{"x": ONES}])[0]["label"] == 15).all()
    pids = [int(p) for p in re.findall(r"(\d+)", os.popen("pgrep -f -P %d shardserve_stages.runner" % s.server.pid).read())]
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    time.sleep(0.2)
    assert (s.grpc("classify", [{"x": ONES}])[0]["label"] == 15).all()
    assert "Python stage runner (pid %d) was killed by signal 9 while idle" % pids[0] in s.c.log(s.server)


def test_inputs_returned_as_outputs_keep_their_own_bytes_and_shape():
    """Outputs that are the function's inputs go back without a copy: each output is still the
    right input's bytes, and one reshaped in place has its new shape."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(12, dtype=np.int32).reshape(3, 4)
    got = served().grpc("swap", [{"a": a, "b": b}, {"a": a + 1, "b": b * 2}])
    for inst, k in zip(got, (0, 1)):
        assert inst["p"].dtype == np.int32 and inst["p"].shape == (4, 3), inst
        assert np.array_equal(inst["p"], (b * (k + 1)).reshape(4, 3)), inst
        assert inst["q"].dtype == np.float32 and np.array_equal(inst["q"], a + k), inst


def test_strings_and_bytes_through_python():
    got = served().grpc("text", [{"s": "h\u00e9llo", "b": b"\x00\x01xyz"}])[0]
    assert got["s2"] == "H\u00c9LLO" and got["b2"] == b"zyx\x01\x00", got


def test_method_without_stages_returns_its_inputs_and_builtin_argmax():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = served().grpc("echo", [{"x": x, "s": "text"}])[0]
    assert got["s"] == "text" and np.array_equal(got["x"], x), got
    got = served().grpc("argmax", [{"x": np.array([0.5, 3.0, -1.0], np.float32)}])[0]
    assert got["i"].dtype == np.int64 and got["i"].shape == () and int(got["i"]) == 1, got
    # over KServe too: a method of no model has inputs of no known datatype, which take any
    # (BYTES was refused: "does not match the model's ?")
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2, 3], "data": x.ravel().tolist()},
                       {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["text"]}]}
    req = urllib.request.Request("http://%s/v2/models/stages.echo/infer" % served().c.rest,
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        outs = {o["name"]: o for o in json.loads(r.read())["outputs"]}
    assert outs["s"]["data"] == ["text"] and outs["x"]["data"] == x.ravel().tolist(), outs


def test_batched_groups_by_batch_size():
    got = served().grpc("groups", [{"x": np.full((1, 1), v, np.float32)} for v in range(6)])
    assert [int(g["g"]) for g in got] == [4, 4, 4, 4, 2, 2], got


def test_concurrent_requests_use_the_pool():
    s = served()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: s.grpc("classify", [{"x": ONES * (i + 1)}]), range(48)))
    assert all((r[0]["label"] == 15).all() for r in results), results


# ---------------------------------------------------------------- errors

def test_exception_fails_only_its_instance():
    s = served()
    got = s.grpc("classify", [{"x": ONES}, {"x": -ONES}, {"x": ONES * 2}])
    assert "label" in got[0] and "label" in got[2], got
    assert got[1] == {"error": fn_failed("classify", 1, "check", "negative input -1")}, got[1]
    rest = s_rest(s, "classify", [{"x": -ONES}, {"x": ONES}])
    assert rest["instances"][0] == {"error_msg": fn_failed("classify", 1, "check", "negative input -1")}, rest
    assert rest["instances"][1]["rows"] == "rows=128", rest


def s_rest(s, method, instances):
    import json
    import urllib.request
    body = {"instances": [{k: v.tolist() for k, v in inst.items()} for inst in instances]}
    req = urllib.request.Request("http://%s/model/stages:%s" % (s.c.rest, method), data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_batched_exception_drops_the_instance_and_goes_on():
    vals = [1, -1, 2, 3, 4]
    got = served().grpc("groups", [{"x": np.full((1, 1), v, np.float32)} for v in vals])
    assert int(got[0]["g"]) == 4 and [int(g["g"]) for g in got[2:]] == [3, 3, 3], got
    assert got[1] == {"error": fn_failed("groups", 1, "group_size", "negative in a batch")}, got


def test_wrong_output_count_fails_request_keeps_serving():
    s = served()
    text = ("The outputs number 3 of one instance returned by function 'stages.three' is not equal to the outputs "
            "number 2  registered in method wrong")
    assert s.grpc("wrong", [{"x": ONES}, {"x": ONES}]) == {"error": fn_failed("wrong", 1, "three", text)}
    assert "label" in s.grpc("classify", [{"x": ONES}])[0]


def test_too_few_results_and_illegal_output():
    s = served()
    text = ("The number 1 of instances returned by function 'stages.too_few' is not equal to the number 3 of "
            "instances provided to this function.")
    assert s.grpc("few", [{"x": ONES}] * 3) == {"error": fn_failed("few", 1, "too_few", text)}
    got = s.grpc("illegal", [{"x": ONES}])
    assert got == {"error": fn_failed("illegal", 1, "illegal", "Push py task result cause exception: Get illegal "
                                      "result data with type dict")}, got


def test_crashed_runner_is_restarted_and_its_request_fails():
    s = served("one_runner")
    x = ONES.copy()
    x[0, 0] = 99
    got = s.grpc("classify", [{"x": x}])
    assert "error" in got and "Call Function 'stages.check' Failed, method: 'classify', stage index(begin with " \
        "1): 1, error msg: the Python stage runner (pid " in got["error"], got
    assert "was killed by signal 9 while running this request; a new runner was started" in got["error"], got
    for _ in range(3):  # the only runner is the new one
        assert (s.grpc("classify", [{"x": ONES}])[0]["label"] == 15).all()


def test_hung_runner_is_killed_at_the_request_timeout():
    s = served("one_runner")
    x = ONES.copy()
    x[0, 0] = 77
    t0 = time.time()
    got = s.grpc("classify", [{"x": x}])
    took = time.time() - t0
    assert "error" in got and "the Python function did not finish within the request timeout of 2000 ms: its " \
        "stage runner (pid" in got["error"], got
    assert 1.9 < took < 6, took
    assert (s.grpc("classify", [{"x": ONES}])[0]["label"] == 15).all()


def test_import_error_refuses_start():
    s = Served(functions="import no_such_module_here\n", expect_ready=False)
    try:
        s.refused("import stages.fns failed, No module named 'no_such_module_here'")
    finally:
        s.c.close()


CONFIG_PY = '''
import numpy as np
from mindspore_serving.server import register
model = register.declare_model(model_file="stages.mindir", model_format="MindIR", with_batch_dim=False)

def double(x):
    if x.flat[0] < 0:
        raise RuntimeError("no negatives")
    return x * 2

def label(logits):
    return np.argmax(logits, axis=1)

@register.register_method(output_names=["label"])
def classify(x):
    x = register.add_stage(double, x, outputs_count=1, tag="Preprocess")
    y = register.add_stage(model, x, outputs_count=1)
    return register.add_stage(label, y, outputs_count=1)
'''


def test_servable_config_py_served_and_as_exported_servable_json():
    for exported in (False, True):
        s = Served(config_py=CONFIG_PY, exported=exported)
        try:
            got = s.grpc("classify", [{"x": ONES}, {"x": -ONES}])
            assert (got[0]["label"] == 15).all(), got
            assert got[1] == {"error": call_failed("classify", 1, "Preprocess", "no negatives")}, got
            declared = "declared by %s/stages/servable_config.py" % s.c.servables in s.c.log(s.server)
            assert declared != exported, s.c.log(s.server)  # the second run read servable.json
            assert exported or "model file 'stages.mindir' is served as its ONNX sibling" in s.c.log(s.server)
        finally:
            s.c.close()


CALL_PY = CONFIG_PY + '''

def three_logits(x):
    y = model.call(x)
    ys = model.call([[x], (x * 2,)])
    assert isinstance(ys, tuple) and len(ys) == 2 and isinstance(ys[1], tuple) and len(ys[1]) == 1
    return y + ys[1][0]

def other_subgraph(x):
    return model.call(x, subgraph=1)

def two_inputs(x):
    return model.call(x, x)

def wrong_size(x):
    return model.call(x[:2])

''' + "".join('''
@register.register_method(output_names=["y"])
def %s(x):
    return register.add_stage(%s, x, outputs_count=1)
''' % pair for pair in [("call_model", "three_logits"), ("call_subgraph", "other_subgraph"),
                          ("call_two", "two_inputs"), ("call_wrong_size", "wrong_size")])


def test_model_call_from_a_function():
    s = Served(config_py=CALL_PY)
    try:
        x = np.random.RandomState(2).rand(128, 96).astype(np.float32)
        got = s.grpc("call_model", [{"x": x}, {"x": -x}])
        assert np.allclose(got[0]["y"], 3 * (x @ W), rtol=1e-4, atol=1e-4), got[0]
        assert np.allclose(got[1]["y"], -3 * (x @ W), rtol=1e-4, atol=1e-4), got[1]
        key = "Model(stages.mindir).call() failed: "
        tag = "Function 'stages.%s'"
        assert s.grpc("call_subgraph", [{"x": x}]) == {"error": call_failed(
            "call_subgraph", 1, tag % "other_subgraph", key + "The model does not have subgraph of index 1, the "
            "subgraph count of the model is 1")}
        assert s.grpc("call_two", [{"x": x}]) == {"error": call_failed(
            "call_two", 1, tag % "two_inputs", key + "The inputs count 2 of instance 0 is not equal to the inputs "
            "count 1 of the model")}
        assert s.grpc("call_wrong_size", [{"x": x}]) == {"error": call_failed(
            "call_wrong_size", 1, tag % "wrong_size", key + "Given model input 0 size 768 not match the size 49152 "
            "defined in model")}
        assert (s.grpc("classify", [{"x": ONES}])[0]["label"] == 15).all()
    finally:
        s.c.close()


def test_servable_config_py_error_refuses_start():
    s = Served(config_py=CONFIG_PY.replace("return register.add_stage(label, y, outputs_count=1)", "return y + 1"),
               expect_ready=False)
    try:
        s.refused("servable 'stages': import stages.servable_config failed, unsupported operand type(s) for +: "
                  "'_TensorDef' and 'int'")
    finally:
        s.c.close()


CASES = [test_functions_around_the_model, test_identity_after_model_returns_the_input,
         test_strings_and_bytes_through_python, test_large_tensors_grow_the_segment,
         test_runner_killed_while_idle_is_replaced_quietly,
         test_inputs_returned_as_outputs_keep_their_own_bytes_and_shape,
         test_method_without_stages_returns_its_inputs_and_builtin_argmax, test_batched_groups_by_batch_size, test_concurrent_requests_use_the_pool,
         test_exception_fails_only_its_instance, test_batched_exception_drops_the_instance_and_goes_on,
         test_wrong_output_count_fails_request_keeps_serving, test_too_few_results_and_illegal_output,
         test_crashed_runner_is_restarted_and_its_request_fails, test_hung_runner_is_killed_at_the_request_timeout,
         test_import_error_refuses_start, test_servable_config_py_served_and_as_exported_servable_json, test_model_call_from_a_function,
         test_servable_config_py_error_refuses_start]

if __name__ == "__main__":
    try:
        rc = run_cases(CASES, sys.argv[1:])
    finally:
        for s in SERVED.values():
            s.c.close()
    sys.exit(rc)
