#!/usr/bin/python3
"""Composed servables (servable.json "stages") with real `shardserve serve` and `shardserve agents`:
the C-plugin example's pipeline (scale -> model -> argmax) through gRPC and REST, strings and bytes
through a C stage, and every error path of a C-function stage: a library that is missing, a symbol
that is missing, another ABI version, init refusing, run() failing one instance or the whole batch,
and a plugin that gives the wrong number of outputs (the request fails, the servable keeps serving). Each case prints ok/FAIL;
the run ends with "N passed, N failed"."""

import json
import os
import sys
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serving"))
from cluster import Cluster, run_cases  # noqa: E402
from shardserve_client import Client  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "examples", "stages_plugin")
PLUGINS = os.environ["SS_EXAMPLE_PLUGINS"]
TESTS = os.environ["SS_TEST_PLUGINS"]
ONES = np.ones((128, 96), np.float32)


def c_stage(symbol, inputs, outputs, library=TESTS, **extra):
    return dict({"kind": "c_function", "library": library, "symbol": symbol, "inputs": inputs,
                 "outputs": outputs}, **extra)


def model_stage(inputs, outputs):
    return {"kind": "model", "model": "stages", "inputs": inputs, "outputs": outputs}


METHODS = [
    {"name": "classify", "inputs": ["x"], "outputs": ["label", "score"],
     "stages": [c_stage("ss_example_scale", ["x"], ["xs"], PLUGINS, config={"scale": 2.0}, tag="Preprocess"),
                model_stage(["xs"], ["logits"]),
                c_stage("ss_example_argmax", ["logits"], ["label", "score"], PLUGINS, tag="Postprocess")]},
    {"name": "predict", "inputs": ["x"], "outputs": ["logits"]},
    {"name": "guarded", "inputs": ["x"], "outputs": ["y"],
     "stages": [c_stage("ss_test_fail_negative", ["x"], ["checked"]), model_stage(["checked"], ["y"])]},
    {"name": "refused", "inputs": ["x"], "outputs": ["y"],
     "stages": [model_stage(["x"], ["logits"]), c_stage("ss_test_run_error", ["logits"], ["y"])]},
    {"name": "broken", "inputs": ["x"], "outputs": ["a", "b"],
     "stages": [model_stage(["x"], ["logits"]), c_stage("ss_test_one_output", ["logits"], ["a", "b"])]},
    {"name": "strings", "inputs": ["x", "s", "b"], "outputs": ["logits", "s2", "b2"],
     "stages": [model_stage(["x"], ["logits"]), c_stage("ss_test_fail_negative", ["s"], ["s2"]),
                c_stage("ss_test_fail_negative", ["b"], ["b2"])]},
    {"name": "both", "inputs": ["x"], "outputs": ["logits", "again", "x"],
     "stages": [model_stage(["x"], ["logits"])], "returns": ["logits", "logits", "x"]},
]


def make_model(path):
    import subprocess
    subprocess.run([sys.executable, os.path.join(EXAMPLE, "make_model.py"), path], check=True)


class Served:
    """One `serve` of the servable "stages" with the given methods, and its agent."""

    def __init__(self, methods, expect_ready=True, with_batch_dim=False):
        self.c = Cluster()
        model = os.path.join(self.c.dir, "stages.onnx")
        make_model(model)
        self.models = self.c.add_servable("stages", model, 1, methods=methods, with_batch_dim=with_batch_dim)
        table = self.c.write_rank_table(1)
        self.server = self.c.serve([("stages", 1, table)], expect_ready=expect_ready)
        if expect_ready:
            self.c.agents(self.c.worker_addresses["stages"][0], self.models)
            self.c.wait_ready()

    def grpc(self, method, instances):
        return Client(self.c.grpc, "stages", method).infer(instances)

    def rest(self, method, instances):
        return self.rest_raw(method, {"instances": [{k: v.tolist() for k, v in inst.items()} for inst in instances]})

    def rest_raw(self, method, body):
        req = urllib.request.Request("http://%s/model/stages:%s" % (self.c.rest, method),
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())


SERVED = None


def served():
    global SERVED
    if SERVED is None:
        SERVED = Served(METHODS)
    return SERVED


def alternating():
    x = ONES.copy()
    x[1::2] = -1
    return x


def call_failed(method, stage, tag, msg):
    return "Call %s Failed, method: '%s', stage index(begin with 1): %d, error msg: %s" % (tag, method, stage, msg)


# ---------------------------------------------------------------- cases

def test_classify_grpc():
    got = served().grpc("classify", [{"x": alternating()}, {"x": -alternating()}])
    want = np.where(np.arange(128) % 2 == 0, 15, 0)
    assert got[0]["label"].dtype == np.int64 and (got[0]["label"] == want).all(), got
    assert (got[1]["label"] == 15 - want).all(), got
    assert np.allclose(got[0]["score"], 15.0) and got[0]["score"].dtype == np.float32, got


def test_classify_rest():
    got = served().rest("classify", [{"x": -ONES}, {"x": ONES * 0.5}])
    assert got["instances"][0]["label"] == [0] * 128, got
    assert got["instances"][1]["label"] == [15] * 128, got
    assert np.allclose(got["instances"][1]["score"], 7.5), got["instances"][1]["score"][:3]


def test_plain_method_beside_stages():
    got = served().grpc("predict", [{"x": ONES}])
    want = ONES @ np.tile((np.arange(16, dtype=np.float32) - 7.5) / 96, (96, 1))
    assert np.allclose(got[0]["logits"], want), got


def test_returns_twice_and_method_input():
    got = served().grpc("both", [{"x": ONES}])[0]
    assert np.array_equal(got["logits"], got["again"]) and np.array_equal(got["x"], ONES), got


def test_strings_and_bytes_through_c_stage():
    s = served()
    got = s.grpc("strings", [{"x": ONES, "s": "h\u00e9llo", "b": b"\x00\x01 bytes"}])[0]
    assert got["s2"] == "h\u00e9llo" and got["b2"] == b"\x00\x01 bytes", got
    rest = s.rest_raw("strings", {"instances": [{"x": ONES.tolist(), "s": "text", "b": {"b64": "AAEC"}}]})
    inst = rest["instances"][0]
    assert inst["s2"] == "text" and inst["b2"] == {"b64": "AAEC"}, {k: v for k, v in inst.items() if k != "logits"}


def test_model_stage_checks_instance():
    got = served().grpc("guarded", [{"x": ONES}, {"x": np.ones((4, 4), np.float32)}])
    assert "y" in got[0], got
    assert "Given model input 0 size 64 not match the size 49152 defined in model" in got[1]["error"], got


def test_run_fails_one_instance():
    s = served()
    neg = -ONES
    want = call_failed("guarded", 1, "Function 'stages.ss_test_fail_negative'", "negative input in instance 1")
    got = s.grpc("guarded", [{"x": ONES}, {"x": neg}, {"x": ONES * 2}])
    assert "y" in got[0] and "y" in got[2] and got[1] == {"error": want}, got
    assert np.allclose(got[2]["y"], 2 * got[0]["y"]), got
    rest = s.rest("guarded", [{"x": neg}, {"x": ONES}])
    assert rest["instances"][0] == {"error_msg": want.replace("instance 1", "instance 0")}, rest["instances"][0]
    assert "y" in rest["instances"][1], rest


def test_run_error_fails_batch():
    s = served()
    want = call_failed("refused", 2, "Function 'stages.ss_test_run_error'", "the whole batch is refused")
    assert s.grpc("refused", [{"x": ONES}, {"x": ONES}]) == {"error": want}
    assert s.rest("refused", [{"x": ONES}]) == {"error_msg": want}


def test_wrong_output_count_fails_request_keeps_serving():
    s = served()
    text = ("The outputs number 1 of one instance returned by function 'stages.ss_test_one_output' is not "
            "equal to the outputs number 2  registered in method broken")
    want = call_failed("broken", 2, "Function 'stages.ss_test_one_output'", text)
    assert s.grpc("broken", [{"x": ONES}, {"x": ONES}]) == {"error": want}
    assert s.rest("broken", [{"x": ONES}]) == {"error_msg": want}
    assert "label" in s.grpc("classify", [{"x": ONES}])[0]


def test_concurrent_requests():
    import concurrent.futures
    s = served()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: s.grpc("classify", [{"x": ONES * (1 if i % 2 else -1)}]), range(64)))
    for i, r in enumerate(results):
        assert (r[0]["label"] == (15 if i % 2 else 0)).all(), (i, r)


def test_batched_model_behind_c_stage():
    """with_batch_dim: rows are instances; the worker batches what the C stage let through."""
    s = Served([METHODS[2]], with_batch_dim=True)
    try:
        rows = [np.full(96, v, np.float32) for v in (1, -1, 2, 0.5)]
        got = s.grpc("guarded", [{"x": r} for r in rows])
        w = (np.arange(16, dtype=np.float32) - 7.5) / 96
        for i in (0, 2, 3):
            assert got[i]["y"].shape == (16,) and np.allclose(got[i]["y"], rows[i] @ np.tile(w, (96, 1))), got[i]
        assert "negative input in instance 1" in got[1]["error"], got[1]
    finally:
        s.c.close()


def refused_at_start(stage, expect):
    s = Served([{"name": "m", "inputs": ["x"], "outputs": ["y"], "stages": [stage, model_stage(["x1"], ["y"])]}],
               expect_ready=False)
    try:
        deadline = time.time() + 30
        while s.server.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        log = s.c.log(s.server)
        assert s.server.poll() not in (None, 0), "serve still running or exited 0:\n" + log
        assert expect in log, "no %r in:\n%s" % (expect, log)
    finally:
        s.c.close()


def test_plugin_missing():
    refused_at_start(c_stage("x", ["x"], ["x1"], library="/nonexistent/libnope.so"),
                     "method 'm' stage 1: cannot load the C function library: /nonexistent/libnope.so")


def test_symbol_missing():
    refused_at_start(c_stage("no_such_symbol", ["x"], ["x1"]),
                     "method 'm' stage 1: library '%s' has no symbol 'no_such_symbol'" % TESTS)


def test_abi_mismatch():
    refused_at_start(c_stage("ss_test_old_abi", ["x"], ["x1"]),
                     "method 'm' stage 1: plugin 'ss_test_old_abi' was built for ABI version 42, this server speaks 1")


def test_init_fails():
    refused_at_start(c_stage("ss_test_init_fails", ["x"], ["x1"], config={"k": 3}),
                     "method 'm' stage 1: plugin 'ss_test_init_fails' init failed: refusing config {\"k\":3}")


def test_bad_reference():
    refused_at_start(c_stage("ss_test_fail_negative", ["nope"], ["x1"]),
                     "method 'm' stage 1: input 'nope' is neither an input of the method nor an output of an "
                     "earlier stage")


def test_bad_kind_and_model():
    refused_at_start({"kind": "python", "inputs": ["x"], "outputs": ["x1"]},
                     "method 'm' stage 1: 'kind' must be \"model\", \"c_function\" or \"python_function\", got 'python'")
    refused_at_start({"kind": "model", "model": "other", "inputs": ["x"], "outputs": ["x1"]},
                     "method 'm' stage 1: 'model' must name a model the servable declares, got 'other'")


CASES = [test_classify_grpc, test_classify_rest, test_plain_method_beside_stages,
         test_returns_twice_and_method_input, test_strings_and_bytes_through_c_stage,
         test_model_stage_checks_instance, test_run_fails_one_instance,
         test_run_error_fails_batch, test_wrong_output_count_fails_request_keeps_serving,
         test_concurrent_requests, test_batched_model_behind_c_stage, test_plugin_missing, test_symbol_missing, test_abi_mismatch, test_init_fails,
         test_bad_reference, test_bad_kind_and_model]

if __name__ == "__main__":
    try:
        rc = run_cases(CASES, sys.argv[1:])
    finally:
        if SERVED:
            SERVED.c.close()
    sys.exit(rc)
