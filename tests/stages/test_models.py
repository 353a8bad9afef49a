#!/usr/bin/python3
"""Servables with several models, with real `shardserve serve`: MindSpore's servable_config.py with
two declared models and a model of two subgraphs, all local (serve starts each model's 1-rank
group itself, no rank table); one method runs model A then model B, another B only, a third
subgraph 0 as a stage and subgraph 1 through Model.call, each through gRPC and REST and checked
against numpy; a subgraph out of range gets MindSpore's text. servable.json's "models" with a
distributed model (its own rank table and `shardserve agents`) beside a local one: not ready,
naming the model, until its agents come, and back after its local model's rank is killed (the
group serve started restarts it); a stage naming an undeclared model, a distributed model without
a rank table and a --model naming no declared model refuse the start. Each case prints ok/FAIL;
the run ends with "N passed, N failed"."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serving"))
from cluster import SHARDSERVE, Cluster, run_cases  # noqa: E402
from shardserve_client import Client  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "examples", "two_models_python")
RNG = np.random.default_rng(3)

# The example's servable_config.py, and a method whose function asks for a subgraph that is not there.
EXTRA_METHOD = '''

def times_by_subgraph_2(y, x2):
    return graphs.call(y, x2, subgraph=2)


@register.register_method(output_names=["z"])
def no_subgraph_2(x1, x2):
    return register.add_stage(times_by_subgraph_2, x1, x2, outputs_count=1)
'''


def instances(names, n=3):
    return [{k: RNG.standard_normal((2, 2)).astype(np.float32) for k in names} for _ in range(n)]


def serve(c, servable, args=(), ready=True):
    """`serve` of one servable with the given group flags (none: every model local)."""
    cmd = [SHARDSERVE, "serve", "--servable-dir", c.servables, "--grpc", "127.0.0.1:0", "--rest", "127.0.0.1:0",
           "--servable", servable, "--wait-agents", "60"] + list(args)
    c.server = c._spawn(cmd, "serve.log")
    if not ready:
        return c.server
    c.grpc = c.wait_log(c.server, r"(?m)^Serving: Serving gRPC server start success, listening on (\S+)").group(1)
    c.rest = c.wait_log(c.server, r"(?m)^Serving: Serving RESTful server start success, listening on (\S+)").group(1)
    return c.server


def rest(c, servable, method, insts):
    body = {"instances": [{k: v.tolist() for k, v in inst.items()} for inst in insts]}
    req = urllib.request.Request("http://%s/model/%s:%s" % (c.rest, servable, method), json.dumps(body).encode(),
                                 {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


class ConfigServed:
    """The example's servable_config.py (plus no_subgraph_2), every model local."""

    def __init__(self):
        self.c = Cluster()
        folder = os.path.join(self.c.servables, "two_models")
        os.makedirs(os.path.join(folder, "1"))
        with open(os.path.join(EXAMPLE, "two_models", "servable_config.py")) as f:
            text = f.read()
        with open(os.path.join(folder, "servable_config.py"), "w") as f:
            f.write(text + EXTRA_METHOD)
        subprocess.run([sys.executable, os.path.join(EXAMPLE, "make_models.py"), os.path.join(folder, "1")],
                       check=True)
        serve(self.c, "two_models")
        self.c.wait_ready()


SERVED = None


def served():
    global SERVED
    if SERVED is None:
        SERVED = ConfigServed()
    return SERVED


# ---------------------------------------------------------------- cases

def test_two_models_in_one_method_grpc():
    insts = instances(("x1", "x2", "x3"))
    got = Client(served().c.grpc, "two_models", "add_then_mul").infer(insts)
    assert len(got) == 3, got
    for g, i in zip(got, insts):
        assert np.allclose(g["y"], (i["x1"] + i["x2"]) * i["x3"]), (g, i)


def test_second_model_alone_grpc_and_rest():
    insts = instances(("x1", "x2"))
    got = Client(served().c.grpc, "two_models", "mul_only").infer(insts)
    for g, i in zip(got, insts):
        assert np.allclose(g["y"], i["x1"] * i["x2"]), (g, i)
    reply = rest(served().c, "two_models", "mul_only", insts)
    for g, i in zip(reply["instances"], insts):
        assert np.allclose(np.array(g["y"], np.float32), i["x1"] * i["x2"], atol=1e-6), reply


def test_two_models_in_one_method_rest():
    insts = instances(("x1", "x2", "x3"))
    reply = rest(served().c, "two_models", "add_then_mul", insts)
    for g, i in zip(reply["instances"], insts):
        assert np.allclose(np.array(g["y"], np.float32), (i["x1"] + i["x2"]) * i["x3"], atol=1e-5), reply


def test_subgraph_1_through_model_call():
    insts = instances(("x1", "x2"))
    got = Client(served().c.grpc, "two_models", "subgraphs").infer(insts)
    for g, i in zip(got, insts):
        assert np.allclose(g["y"], i["x1"] + i["x2"]), (g, i)
        assert np.allclose(g["z"], (i["x1"] + i["x2"]) * i["x2"]), (g, i)
    reply = rest(served().c, "two_models", "subgraphs", insts[:1])
    assert np.allclose(np.array(reply["instances"][0]["z"], np.float32), (insts[0]["x1"] + insts[0]["x2"]) * insts[0]["x2"],
                       atol=1e-5), reply


def test_subgraph_out_of_range():
    reply = rest(served().c, "two_models", "no_subgraph_2", instances(("x1", "x2"), 1))
    text = json.dumps(reply)
    assert "The model does not have subgraph of index 2, the subgraph count of the model is 2" in text, reply
    assert "stage index(begin with 1): 1" in text, reply
    got = Client(served().c.grpc, "two_models", "mul_only").infer(instances(("x1", "x2"), 1))  # still serving
    assert "y" in got[0], got


def json_servable(c, models, methods):
    folder = os.path.join(c.servables, "mixed")
    os.makedirs(os.path.join(folder, "1"), exist_ok=True)
    subprocess.run([sys.executable, os.path.join(EXAMPLE, "make_models.py"), os.path.join(folder, "1")], check=True)
    with open(os.path.join(folder, "servable.json"), "w") as f:
        json.dump({"models": models, "methods": methods}, f)
    return folder


MIXED_MODELS = [{"name": "big", "distributed": {"rank_size": 1, "with_batch_dim": False}},
                {"name": "mul", "files": ["mul.onnx"], "distributed": {"with_batch_dim": False}}]
MIXED_METHODS = [{"name": "chain", "inputs": ["x1", "x2", "x3"], "outputs": ["y"],
                  "stages": [{"kind": "model", "model": "big", "inputs": ["x1", "x2"], "outputs": ["s"]},
                             {"kind": "model", "model": "mul", "inputs": ["s", "x3"], "outputs": ["y"]}]},
                 {"name": "mul", "inputs": ["a", "b"], "outputs": ["y"],
                  "stages": [{"kind": "model", "model": "mul", "inputs": ["a", "b"], "outputs": ["y"]}]}]


def test_distributed_model_beside_local_one():
    with Cluster() as c:
        folder = json_servable(c, MIXED_MODELS, MIXED_METHODS)
        shards = c.shard(os.path.join(folder, "1", "add.onnx"), "big", 1)
        table = c.write_rank_table(1)
        serve(c, "mixed", ["--model", "big", "--rank-table", table, "--distributed-address", "127.0.0.1:0"])
        address = c.wait_log(c.server, r"servable mixed waiting for agents on (\S+) \(model big\)").group(1)
        c.wait_log(c.server, r"all 1 ranks registered")  # mul's group
        reply = rest(c, "mixed", "mul", instances(("a", "b"), 1))  # mul is up, big is not: not ready
        assert "model 'big'" in json.dumps(reply), reply
        c.agents(address, shards)
        c.wait_ready()
        insts = instances(("x1", "x2", "x3"))
        got = Client(c.grpc, "mixed", "chain").infer(insts)
        for g, i in zip(got, insts):
            assert np.allclose(g["y"], (i["x1"] + i["x2"]) * i["x3"]), (g, i)
        reply = rest(c, "mixed", "mul", [{"a": i["x1"], "b": i["x2"]} for i in insts])
        for g, i in zip(reply["instances"], insts):
            assert np.allclose(np.array(g["y"], np.float32), i["x1"] * i["x2"], atol=1e-6), reply
        # requests are counted per front-end method, not per internal model call
        with urllib.request.urlopen("http://%s/metrics" % c.rest, timeout=10) as r:
            text = r.read().decode()
        counted = re.findall(r'shardserve_requests_total\{servable="mixed",version="1",method="([^"]+)",'
                             r'outcome="ok"\} (\d+)', text)
        assert ("chain", "1") in counted and ("mul", "1") in counted, counted
        assert "@call" not in "".join(l for l in text.splitlines() if l.startswith("shardserve_requests_total")), \
            [l for l in text.splitlines() if "@call" in l]
        # the local model's rank dies: its group (serve's child) starts it again, the servable recovers
        pid = int(c.wait_log(c.server, r"rank 0 registered \(pid (\d+)").group(1))  # mul's, the first
        os.kill(pid, signal.SIGKILL)
        c.wait_log(c.server, r"rank 0 \(pid %d\) is gone" % pid)
        deadline = time.time() + 60
        while time.time() < deadline and c.log(c.server).count("registered (pid") < 3:
            time.sleep(0.1)
        deadline = time.time() + 30
        while time.time() < deadline:
            reply = rest(c, "mixed", "mul", [{"a": insts[0]["x1"], "b": insts[0]["x2"]}])
            if "instances" in reply:
                break
            time.sleep(0.1)
        assert "instances" in reply, reply
        assert np.allclose(np.array(reply["instances"][0]["y"], np.float32), insts[0]["x1"] * insts[0]["x2"],
                           atol=1e-6), reply


def gone(pid):
    """The process has ended (a zombie waiting for its reaper counts)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            return re.search(r"State:\s+Z", f.read()) is not None
    except FileNotFoundError:
        return True


def test_local_agents_end_with_a_killed_serve():
    """serve's own agents (a local model) end when serve dies, even by SIGKILL: they used to retry
    the dead worker for ever."""
    with Cluster() as c:
        json_servable(c, MIXED_MODELS, MIXED_METHODS)
        table = c.write_rank_table(1)
        serve(c, "mixed", ["--model", "big", "--rank-table", table, "--distributed-address", "127.0.0.1:0"])
        launcher = int(c.wait_log(c.server, r"local model mul \(\S+\) started as agents pid (\d+)").group(1))
        rank = int(c.wait_log(c.server, r"rank 0 registered \(pid (\d+)").group(1))
        c.server.kill()
        c.server.wait()
        deadline = time.time() + 20
        while time.time() < deadline and not (gone(launcher) and gone(rank)):
            time.sleep(0.1)
        assert gone(launcher) and gone(rank), ("still running 20 s after serve was killed", launcher, rank)


def test_local_model_that_never_loads_fails_the_start():
    """A local model whose file does not load: its agents give up after their restarts and serve
    fails the start naming the model (it used to wait for ever, not ready)."""
    with Cluster() as c:
        folder = json_servable(c, [MIXED_MODELS[1]], [MIXED_METHODS[1]])
        with open(os.path.join(folder, "1", "mul.onnx"), "r+b") as f:
            f.truncate(40)
        p = serve(c, "mixed", ready=False)
        rc = p.wait(timeout=120)
        log = c.log(p)
        assert rc != 0 and re.search(r"local model \S*mul\.onnx\)?: its agents \(pid \d+\) exited", log), \
            (rc, log[-3000:])


def refused(models, methods, args, expect):
    with Cluster() as c:
        json_servable(c, models, methods)
        p = serve(c, "mixed", args, ready=False)
        p.wait(timeout=60)
        log = c.log(p)
        assert p.returncode != 0 and expect in log, (p.returncode, log)


def test_undeclared_model_refused():
    methods = [{"name": "m", "inputs": ["a", "b"], "outputs": ["y"],
                "stages": [{"kind": "model", "model": "nope", "inputs": ["a", "b"], "outputs": ["y"]}]}]
    refused(MIXED_MODELS, methods, [], "'model' must name a model the servable declares, got 'nope' (declared: "
                                       "'big', 'mul')")


def test_distributed_model_needs_rank_table():
    refused(MIXED_MODELS, MIXED_METHODS, [], "model 'big' needs a rank table and a distributed address")


def test_unknown_model_flag_refused():
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"server_list": [{"server_id": "127.0.0.1", "device": [{"device_id": "0", "rank_id": "0"}]}]}, f)
        table = f.name
    try:
        refused(MIXED_MODELS, MIXED_METHODS,
                ["--model", "big", "--rank-table", table, "--distributed-address", "127.0.0.1:0",
                 "--model", "mull", "--rank-table", table, "--distributed-address", "127.0.0.1:0"],
                "--model mull: the servable declares no model of that name")
    finally:
        os.unlink(table)


CASES = [test_two_models_in_one_method_grpc, test_second_model_alone_grpc_and_rest,
         test_two_models_in_one_method_rest, test_subgraph_1_through_model_call, test_subgraph_out_of_range,
         test_distributed_model_beside_local_one, test_local_agents_end_with_a_killed_serve,
         test_local_model_that_never_loads_fails_the_start,
         test_undeclared_model_refused,
         test_distributed_model_needs_rank_table, test_unknown_model_flag_refused]

if __name__ == "__main__":
    try:
        rc = run_cases(CASES, sys.argv[1:])
    finally:
        if SERVED:
            SERVED.c.close()
    sys.exit(rc)
