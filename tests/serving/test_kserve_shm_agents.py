#!/usr/bin/python3
"""KServe's system shared-memory extension with real agents: a tensor given by a registered region
reaches a local agent as (key, offset) over the link and the agent reads it in place; a requested
output region is written by the last rank itself. The seed example (8 ranks) answers y all -48
through regions; a 16 MiB Neg answers y == -x while the link carries well under a MiB (the
/metrics link byte counters: the tensor never crossed a socket). Errors: a region too small, an
unregistered region, and a region unregistered (and its object unlinked) while a request that uses
it waits on a stopped agent, which must answer and stay up."""

import json
import os
import signal
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, matmul_neg_model, rest_json, run_cases  # noqa: E402
import grpc_service_pb2 as pb  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
import onnx  # noqa: E402

WORK = __import__("tempfile").mkdtemp(prefix="ss-kserve-shm-")
SEED = os.path.join(WORK, "matmul.onnx")
matmul_neg_model(SEED)
ROWS = 4096  # the large Neg: [4096, 1024] float32 = 16 MiB
NEG = os.path.join(WORK, "neg.onnx")
KEYS = []


def neg_model(path):
    g = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "neg",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, 1024])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [ROWS, 1024])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save_model(m, path)


neg_model(NEG)


def http(c, method, path, body=None):
    return rest_json(c, method, path, body, timeout=60)


def region(c, name, size, data=None):
    """A POSIX shm object of `size` bytes registered as region `name`; its numpy view."""
    key = "/ss-test-shm-agents-%s-%d" % (name, os.getpid())
    path = "/dev/shm" + key
    with open(path, "wb") as f:
        f.truncate(size)
    KEYS.append(path)
    st, body = http(c, "POST", "/v2/systemsharedmemory/region/%s/register" % name,
                    json.dumps({"key": key, "offset": 0, "byte_size": size}).encode())
    assert st == 200, body
    view = np.memmap(path, np.uint8, "r+", shape=(size,))
    if data is not None:
        view[:data.nbytes] = np.frombuffer(data.tobytes(), np.uint8)
    return view


def unregister(c, name):
    return http(c, "POST", "/v2/systemsharedmemory/region/%s/unregister" % name, b"")


def infer(c, model, shape, x_region, x_size, y_region, y_size):
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "parameters": {
        "shared_memory_region": x_region, "shared_memory_byte_size": x_size}}],
        "outputs": [{"name": "y", "parameters": {"shared_memory_region": y_region,
                                                 "shared_memory_byte_size": y_size}}]}
    return http(c, "POST", "/v2/models/%s/infer" % model, json.dumps(body).encode())


def link_bytes(c):
    total = 0.0
    text = urllib.request.urlopen("http://%s/metrics" % c.rest, timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith(("shardserve_link_sent_bytes_total{", "shardserve_link_received_bytes_total{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start(c, name, models):
    c.serve([(name, 1, c.write_rank_table(len(models)))], wait_agents=60)
    c.agents(c.worker_addresses[name][0], models)
    c.wait_ready()


def test_seed_example_through_shared_memory():
    with Cluster() as c:
        strategy = os.path.join(c.dir, "strategy.json")
        with open(strategy, "w") as f:
            json.dump({"matmul": [[1, 1], [1, 8]]}, f)
        start(c, "matmul", c.add_servable("matmul", SEED, 8, 1, strategy))
        region(c, "x", 128 * 96 * 4, np.ones((128, 96), np.float32))
        y = region(c, "y", 128 * 16 * 4)
        st, body = infer(c, "matmul", [128, 96], "x", 128 * 96 * 4, "y", 128 * 16 * 4)
        assert st == 200, body
        assert "data" not in body["outputs"][0], body
        out = np.frombuffer(bytes(y), np.float32)
        assert (out == -48).all(), out[:4]


def test_large_tensor_never_crosses_a_socket():
    with Cluster() as c:
        start(c, "neg", c.add_servable("neg", NEG, 1))
        n = ROWS * 1024 * 4
        x = np.random.default_rng(0).uniform(-1, 1, (ROWS, 1024)).astype(np.float32)
        region(c, "x", n, x)
        y = region(c, "y", n)
        for _ in range(2):  # the first request warms up the agent
            before = link_bytes(c)
            st, body = infer(c, "neg", [ROWS, 1024], "x", n, "y", n)
            assert st == 200, body
            moved = link_bytes(c) - before
        assert np.array_equal(np.frombuffer(bytes(y), np.float32), -x.ravel())
        assert moved < 1 << 20, "the link carried %d bytes for a %d-byte tensor" % (moved, n)
        check_rest_binary_through_the_pool(c, x)
        check_grpc_output_through_the_pool(c, x)
        check_errors(c, n)
        check_unregister_in_flight(c, n, x)


def rest_binary(c, x):
    hdr = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    req = urllib.request.Request("http://%s/v2/models/neg/infer" % c.rest, data=hdr + x.tobytes(),
                                 method="POST",
                                 headers={"Inference-Header-Content-Length": str(len(hdr))})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
        jlen = int(r.headers["Inference-Header-Content-Length"])
    return json.loads(body[:jlen]), np.frombuffer(body[jlen:], np.float32)


def check_rest_binary_through_the_pool(c, x):
    for _ in range(2):
        before = link_bytes(c)
        meta, y = rest_binary(c, x)
        moved = link_bytes(c) - before
        assert meta["outputs"][0]["shape"] == list(x.shape), meta
        assert np.array_equal(y, -x.ravel())
    assert moved < 1 << 20, "REST binary: the link carried %d bytes" % moved


def check_grpc_output_through_the_pool(c, x):
    req = pb.ModelInferRequest(model_name="neg")
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    opts = [("grpc.enable_http_proxy", 0), ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(c.grpc, options=opts) as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=pb.ModelInferResponse.FromString)
        before = link_bytes(c)
        resp = call(req, timeout=60)
        moved = link_bytes(c) - before
    assert np.array_equal(np.frombuffer(resp.raw_output_contents[0], np.float32), -x.ravel())
    # the input crosses the link (gRPC's message is not in shared memory), the output does not
    assert x.nbytes <= moved < x.nbytes + (1 << 20), "gRPC: the link carried %d bytes" % moved


def check_errors(c, n):
    region(c, "small", n // 2)
    st, body = infer(c, "neg", [ROWS, 1024], "x", n, "small", n)
    assert st == 400 and "small" in body["error"] and "y" in body["error"], (st, body)
    st, body = infer(c, "neg", [ROWS, 1024], "small", n, "y", n)
    assert st == 400 and "small" in body["error"] and "'x'" in body["error"], (st, body)
    st, body = infer(c, "neg", [ROWS, 1024], "nosuch", n, "y", n)
    assert st == 400 and "nosuch" in body["error"] and "not registered" in body["error"], (st, body)
    st, body = infer(c, "neg", [ROWS, 1024], "x", n, "nosuch", n)
    assert st == 400 and "nosuch" in body["error"], (st, body)


def agent_pids(c):
    pids = []
    for p in c.procs[1:]:
        try:
            with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return pids


def check_unregister_in_flight(c, n, x):
    """The agent is stopped, the request waits; meanwhile the client unregisters both regions and
    deletes their objects. The request gets an answer, the agent stays up and serves again."""
    xin = region(c, "x2", n, x)
    del xin
    region(c, "y2", n)
    agents = agent_pids(c)
    assert agents, "no agent processes found"
    for pid in agents:
        os.kill(pid, signal.SIGSTOP)
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=infer(c, "neg", [ROWS, 1024], "x2", n, "y2", n)))
    try:
        t.start()
        time.sleep(1.0)
        for name in ("x2", "y2"):
            assert unregister(c, name)[0] == 200
        for path in KEYS[-2:]:
            os.unlink(path)
    finally:
        for pid in agents:
            os.kill(pid, signal.SIGCONT)
    t.join(60)
    assert "r" in answer, "no answer"
    st, body = answer["r"]
    # the client deleted the input's object before the agent could map it: a clear error naming it
    assert st == 200 or ("shared memory" in body["error"] and "x2" in body["error"]), (st, body)
    for pid in agents:
        os.kill(pid, 0)  # still alive
    region(c, "y3", n)
    st, body = infer(c, "neg", [ROWS, 1024], "x", n, "y3", n)
    assert st == 200, body


def main():
    try:
        return run_cases([test_seed_example_through_shared_memory,
                          test_large_tensor_never_crosses_a_socket], sys.argv[1:])
    finally:
        for path in KEYS:
            if os.path.exists(path):
                os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
