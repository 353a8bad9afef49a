#!/usr/bin/python3
"""The Open Inference Protocol (KServe v2) end to end: `shardserve serve` + `shardserve agents` as
users start them, queried with clients written from the specification alone — curl for REST JSON,
urllib for the binary tensor extension, grpcio generic calls with grpc_service_pb2 (protoc
--python_out of proto/grpc_service.proto) for gRPC. The seed example answers y all -48 through
each; a with_batch_dim servable shows the batch-dim rule against the real worker. The extensions
against the real worker: ModelStreamInfer, statistics equal to /metrics, and the model repository
unloading a version while a request is in flight (the agent SIGSTOPped holds it)."""

import json
import os
import struct
import subprocess
import sys
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, children, matmul_neg_model, run_cases  # noqa: E402
import grpc_service_pb2 as pb  # noqa: E402

WORK = tempfile.mkdtemp(prefix="ss-kserve-models-")
SEED = os.path.join(WORK, "matmul.onnx")
matmul_neg_model(SEED)
ONES = np.ones((128, 96), np.float32)


def start(c, groups_models):
    tables = [(name, 1, c.write_rank_table(len(models), "rt-%s.json" % name))
              for name, models in groups_models]
    c.serve(tables, wait_agents=60)
    for name, models in groups_models:
        c.agents(c.worker_addresses[name][0], models)
    c.wait_ready(len(groups_models))


def http(c, method, path, body=None, headers=None):
    req = urllib.request.Request("http://%s%s" % (c.rest, path), data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def grpc_call(c, rpc, req, resp_type):
    ch = grpc.insecure_channel(c.grpc, options=[("grpc.enable_http_proxy", 0)])
    try:
        return ch.unary_unary("/inference.GRPCInferenceService/" + rpc,
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=resp_type.FromString)(req, timeout=30)
    finally:
        ch.close()


def check_seed_rest(c):
    status, _, body = http(c, "GET", "/v2/models/matmul")
    meta = json.loads(body)
    assert status == 200, body
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [128, 96]}], meta
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [128, 16]}], meta
    assert http(c, "GET", "/v2/models/matmul.predict/ready")[0] == 200
    assert http(c, "GET", "/v2/health/ready")[0] == 200
    # JSON with curl, as a user would
    req = {"id": "seed", "inputs": [{"name": "x", "datatype": "FP32", "shape": [128, 96],
                                     "data": ONES.tolist()}]}
    r = subprocess.run(["curl", "-s", "-X", "POST", "-H", "Content-Type: application/json",
                        "-d", json.dumps(req), "http://%s/v2/models/matmul/infer" % c.rest],
                       check=True, capture_output=True, timeout=60)
    reply = json.loads(r.stdout)
    assert reply["id"] == "seed" and reply["model_name"] == "matmul", reply
    out = reply["outputs"][0]
    y = np.array(out["data"], np.float32)
    assert out["shape"] == [128, 16] and y.size == 128 * 16 and (y == -48).all(), out["shape"]
    # the binary tensor extension
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [128, 96],
                                   "parameters": {"binary_data_size": ONES.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    status, headers, body = http(c, "POST", "/v2/models/matmul/infer", head + (ONES * 2).tobytes(),
                                 {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, body[:300]
    n = int(headers["Inference-Header-Content-Length"])
    out = json.loads(body[:n])["outputs"][0]
    y = np.frombuffer(body[n:], np.float32)
    assert out["parameters"]["binary_data_size"] == 128 * 16 * 4 and (y == -96).all(), out
    # a wrong shape is refused before the worker
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [96, 128], "data": [0] * 12288}]}
    status, _, body = http(c, "POST", "/v2/models/matmul/infer", json.dumps(bad).encode())
    assert status == 400 and "shape [96,128]" in json.loads(body)["error"], body


def check_seed_grpc(c):
    assert grpc_call(c, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
    meta = grpc_call(c, "ModelMetadata", pb.ModelMetadataRequest(name="matmul"),
                     pb.ModelMetadataResponse)
    assert [(t.name, list(t.shape)) for t in meta.inputs] == [("x", [128, 96])], meta
    req = pb.ModelInferRequest(model_name="matmul", id="g")
    req.inputs.add(name="x", datatype="FP32", shape=[128, 96]).contents.fp32_contents.extend(
        ONES.ravel().tolist())
    resp = grpc_call(c, "ModelInfer", req, pb.ModelInferResponse)
    y = np.array(resp.outputs[0].contents.fp32_contents, np.float32)
    assert list(resp.outputs[0].shape) == [128, 16] and y.size == 2048 and (y == -48).all()
    req = pb.ModelInferRequest(model_name="matmul.predict")
    req.inputs.add(name="x", datatype="FP32", shape=[128, 96])
    req.raw_input_contents.append((ONES * 3).tobytes())
    resp = grpc_call(c, "ModelInfer", req, pb.ModelInferResponse)
    y = np.frombuffer(resp.raw_output_contents[0], np.float32)
    assert y.size == 2048 and (y == -144).all(), y[:4]


def test_seed_example_over_kserve():
    with Cluster() as c:
        strategy = os.path.join(c.dir, "strategy.json")
        with open(strategy, "w") as f:
            json.dump({"matmul": [[1, 1], [1, 8]]}, f)
        start(c, [("matmul", c.add_servable("matmul", SEED, 8, 1, strategy))])
        check_seed_rest(c)
        check_seed_grpc(c)


def affine_model():
    path = os.path.join(WORK, "affine.onnx")
    w = numpy_helper.from_array(np.full((8, 4), 0.5, np.float32), name="W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="mm"),
         helper.make_node("Add", ["xw", "b"], ["y"], name="add")],
        "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8]),
                   helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save_model(m, path)
    return path


def test_batch_dim_rule():
    """x is batched (per instance [8]), b is not (without_batch_dim_inputs): KServe sends x as
    [N,8] and b as [4]; y comes back stacked [N,4]."""
    with Cluster() as c:
        models = c.add_servable(
            "affine", affine_model(), 2, 1, with_batch_dim=True,
            methods=[{"name": "run", "inputs": ["x", "b"], "outputs": ["y"]}],
            extra={"distributed": {"rank_size": 2, "stage_size": 1, "with_batch_dim": True,
                                   "without_batch_dim_inputs": ["b"]}})
        start(c, [("affine", models)])
        status, _, body = http(c, "GET", "/v2/models/affine")
        meta = json.loads(body)
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 8]},
                                  {"name": "b", "datatype": "FP32", "shape": [4]}], meta
        assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}], meta
        x = np.repeat(np.arange(6, dtype=np.float32)[:, None], 8, axis=1)  # row i = i
        b = np.array([1, 2, 3, 4], np.float32)
        req = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [6, 8], "data": x.tolist()},
                          {"name": "b", "datatype": "FP32", "shape": [4], "data": b.tolist()}]}
        status, _, body = http(c, "POST", "/v2/models/affine.run/infer", json.dumps(req).encode())
        assert status == 200, body
        out = json.loads(body)["outputs"][0]
        y = np.array(out["data"], np.float32).reshape(out["shape"])
        want = 4.0 * np.arange(6, dtype=np.float32)[:, None] + b
        assert out["shape"] == [6, 4] and np.allclose(y, want), (out["shape"], y)
        req = pb.ModelInferRequest(model_name="affine")
        req.inputs.add(name="x", datatype="FP32", shape=[6, 8])
        req.inputs.add(name="b", datatype="FP32", shape=[4])
        req.raw_input_contents.extend([x.tobytes(), b.tobytes()])
        resp = grpc_call(c, "ModelInfer", req, pb.ModelInferResponse)
        y = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(6, 4)
        assert list(resp.outputs[0].shape) == [6, 4] and np.allclose(y, want), y
        req.inputs[1].shape[0] = 5
        req.raw_input_contents[1] = b"\0" * 20
        try:
            grpc_call(c, "ModelInfer", req, pb.ModelInferResponse)
            raise AssertionError("a wrong shape was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'b'" in e.details(), e


def json_infer(c, scale=1.0):
    req = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [128, 96],
                       "data": (ONES * scale).ravel().tolist()}]}
    status, _, body = http(c, "POST", "/v2/models/matmul/infer", json.dumps(req).encode())
    return status, json.loads(body)


def metric(c, name, **labels):
    """Sum of the /metrics samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in http(c, "GET", "/metrics")[2].decode().splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all('%s="%s"' % kv in head for kv in labels.items()):
            total += float(value)
    return total


def check_stream(c):
    ch = grpc.insecure_channel(c.grpc, options=[("grpc.enable_http_proxy", 0)])
    call = ch.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                            request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=pb.ModelStreamInferResponse.FromString)
    reqs = []
    for k in range(3):
        req = pb.ModelInferRequest(model_name="matmul", id="s%d" % k)
        req.inputs.add(name="x", datatype="FP32", shape=[128, 96])
        req.raw_input_contents.append((ONES * (k + 1)).tobytes())
        reqs.append(req)
    reqs.append(pb.ModelInferRequest(model_name="matmul", id="bad"))
    got = list(call(iter(reqs), timeout=60))
    ch.close()
    assert len(got) == 4, got
    for r in got:
        if r.error_message:
            assert "no inputs" in r.error_message or "expects input" in r.error_message, r
            continue
        k = int(r.infer_response.id[1:])
        y = np.frombuffer(r.infer_response.raw_output_contents[0], np.float32)
        assert y.size == 2048 and (y == -48 * (k + 1)).all(), (k, y[:4])
    assert sum(1 for r in got if r.error_message) == 1, got


def check_stats(c, n_ok):
    status, _, body = http(c, "GET", "/v2/models/matmul/stats")
    assert status == 200, body
    st = json.loads(body)["model_stats"]
    assert [(m["name"], m["version"]) for m in st] == [("matmul", "1")], st
    inf = st[0]["inference_stats"]
    lv = {"servable": "matmul", "version": "1", "method": "predict"}
    assert inf["success"]["count"] == n_ok == metric(c, "shardserve_requests_total", outcome="ok",
                                                     **lv), (inf, n_ok)
    assert inf["queue"]["count"] == metric(c, "shardserve_request_queue_seconds_count", **lv)
    assert abs(inf["compute_infer"]["ns"] / 1e9 -
               metric(c, "shardserve_request_compute_seconds_sum", **lv)) < 1e-6, inf
    assert 0 < inf["compute_infer"]["ns"] <= inf["success"]["ns"], inf
    assert st[0]["execution_count"] == metric(c, "shardserve_batch_size_count", servable="matmul")
    assert st[0]["inference_count"] == n_ok, st[0]
    g = grpc_call(c, "ModelStatistics", pb.ModelStatisticsRequest(name="matmul"),
                  pb.ModelStatisticsResponse).model_stats
    assert len(g) == 1 and g[0].inference_stats.success.count == n_ok, g
    assert g[0].inference_stats.compute_infer.ns == inf["compute_infer"]["ns"], g
    every = json.loads(http(c, "GET", "/v2/models/stats")[2])["model_stats"]
    assert [m["name"] for m in every] == ["matmul"], every


def index(c, ready=None):
    body = json.dumps({} if ready is None else {"ready": ready}).encode()
    status, _, reply = http(c, "POST", "/v2/repository/index", body)
    assert status == 200, reply
    return [(m["name"], m["version"], m["state"]) for m in json.loads(reply)]


def check_unload_in_flight(c, agents):
    assert index(c) == [("matmul", "1", "READY")], index(c)
    agent = children(agents.pid)[-1]
    os.kill(agent, signal.SIGSTOP)
    held = {}
    t = threading.Thread(target=lambda: held.update(r=json_infer(c, 2.0)))
    try:
        t.start()
        time.sleep(0.5)  # the request reaches the stopped agent
        status, _, body = http(c, "POST", "/v2/repository/models/matmul/unload", b"")
        assert status == 200, body
        assert index(c) == [("matmul", "1", "UNLOADING")], index(c)
        status, reply = json_infer(c)
        assert status == 503 and "unloaded" in reply["error"], (status, reply)
        assert http(c, "GET", "/v2/models/matmul/ready")[0] == 503
    finally:
        os.kill(agent, signal.SIGCONT)
    t.join(60)
    status, reply = held["r"]
    assert status == 200 and (np.array(reply["outputs"][0]["data"]) == -96).all(), status
    assert index(c) == [("matmul", "1", "UNAVAILABLE")], index(c)
    assert index(c, ready=True) == []
    assert http(c, "GET", "/v2/health/ready")[0] == 503  # nothing loaded
    grpc_call(c, "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="matmul"),
              pb.RepositoryModelLoadResponse)
    assert index(c) == [("matmul", "1", "READY")], index(c)
    status, reply = json_infer(c)
    assert status == 200 and (np.array(reply["outputs"][0]["data"]) == -48).all(), status
    status, _, body = http(c, "POST", "/v2/repository/models/nope/unload", b"")
    assert status == 404 and "nope" in json.loads(body)["error"], body
    status, _, body = http(c, "POST", "/v2/repository/models/matmul/load",
                           b'{"parameters": {"version": 7}}')
    assert status == 404 and "version 7" in json.loads(body)["error"], body


def test_extensions_on_a_real_worker():
    with Cluster() as c:
        models = c.add_servable("matmul", SEED, 1, 1)
        table = c.write_rank_table(1, "rt-matmul.json")
        c.serve([("matmul", 1, table)], wait_agents=60)
        agents = c.agents(c.worker_addresses["matmul"][0], models)
        c.wait_ready(1)
        check_stream(c)
        for k in range(4):
            assert json_infer(c)[0] == 200
        check_stats(c, 4 + 3)
        check_unload_in_flight(c, agents)


def main():
    return run_cases([test_seed_example_over_kserve, test_batch_dim_rule,
                      test_extensions_on_a_real_worker], sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
