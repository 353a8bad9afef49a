#!/usr/bin/python3
"""Distributed serving end to end, with real processes and sockets: `shardserve serve` and
`shardserve agents` as users start them, queried through the Python client, the C client
(`shardserve infer`) and REST. Each case prints ok/FAIL; the run ends with "N passed, N failed"."""

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import SHARDSERVE, Cluster, children, leftover_shm, matmul_neg_model, rank_table, run_cases  # noqa: E402
from shardserve_client import Client  # noqa: E402

WORK = tempfile.mkdtemp(prefix="ss-serving-models-")
SEED = os.path.join(WORK, "matmul.onnx")
matmul_neg_model(SEED)
ONES = np.ones((128, 96), np.float32)


def rest_predict(c, servable, method, body, version=None):
    url = "http://%s/model/%s%s:%s" % (c.rest, servable, "/version/%d" % version if version else "", method)
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def http_get(c, path):
    try:
        with urllib.request.urlopen("http://%s%s" % (c.rest, path), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def start(c, groups_models, wait=60, extra=()):
    """groups_models: list of (servable, version, models)."""
    tables = []
    for name, version, models in groups_models:
        tables.append((name, version, c.write_rank_table(len(models), "rt-%s-%d.json" % (name, version))))
    c.serve(tables, wait_agents=wait, extra=extra)
    # worker addresses are printed in servable order; match them up
    seen = {}
    for name, version, models in groups_models:
        i = seen.get(name, 0)
        seen[name] = i + 1
        c.agents(c.worker_addresses[name][i], models)
    c.wait_ready(len(groups_models))


# ---------------------------------------------------------------- cases
def test_seed_example_three_clients():
    with Cluster() as c:
        strategy = os.path.join(c.dir, "strategy.json")
        with open(strategy, "w") as f:
            json.dump({"matmul": [[1, 1], [1, 8]]}, f)
        models = c.add_servable("matmul", SEED, 8, 1, strategy)
        start(c, [("matmul", 1, models)])
        # Python client (MindSpore's API)
        result = Client(c.grpc, "matmul", "predict").infer({"x": ONES})
        assert len(result) == 1 and "y" in result[0], result
        y = result[0]["y"]
        assert y.dtype == np.float32 and y.shape == (128, 16) and (y == -48).all(), y
        # async
        y2 = Client(c.grpc, "matmul", "predict").infer_async([{"x": ONES}, {"x": ONES * 2}]).result()
        assert (y2[0]["y"] == -48).all() and (y2[1]["y"] == -96).all()
        # C client through the CLI
        np.save(os.path.join(c.dir, "x.npy"), ONES)
        out = os.path.join(c.dir, "out")
        os.makedirs(out)
        subprocess.run([SHARDSERVE, "infer", "--address", c.grpc, "--servable", "matmul", "--method", "predict",
                        "--input", "x=" + os.path.join(c.dir, "x.npy"), "--output-dir", out], check=True,
                       capture_output=True, timeout=30)
        yc = np.load(os.path.join(out, "y.npy"))
        assert yc.shape == (128, 16) and (yc == -48).all()
        # curl, as a user would
        body = json.dumps({"instances": [{"x": ONES.tolist()}]})
        r = subprocess.run(["curl", "-s", "-X", "POST", "-H", "Content-Type: application/json", "-d", body,
                            "http://%s/model/matmul:predict" % c.rest], check=True, capture_output=True, timeout=30)
        yr = np.array(json.loads(r.stdout)["instances"][0]["y"], np.float32)
        assert yr.shape == (128, 16) and (yr == -48).all()


def wait_ready_cli(rest, timeout_s):
    r = subprocess.run([SHARDSERVE, "wait-ready", "--rest", rest, "--timeout-s", str(timeout_s)],
                       capture_output=True, text=True, timeout=timeout_s + 30)
    return r.returncode, r.stdout + r.stderr


def test_wait_ready_cli():
    """`shardserve wait-ready` waits for /health/ready, by host name too (localhost used to be
    refused silently, so it polled until the timeout), and says why it gave up."""
    with Cluster() as c:
        models = c.add_servable("matmul", SEED, 2, 1)
        table = c.write_rank_table(2)
        c.serve([("matmul", 1, table)])
        port = c.rest.rsplit(":", 1)[1]
        rc, out = wait_ready_cli("localhost:" + port, 1)  # no agents yet
        assert rc == 1 and "answered not ready" in out, (rc, out)
        rc, out = wait_ready_cli("no-such-host.invalid:" + port, 1)
        assert rc == 1 and "no-such-host.invalid" in out, (rc, out)
        c.agents(c.worker_addresses["matmul"][0], models)
        rc, out = wait_ready_cli("localhost:" + port, 60)
        assert rc == 0 and out.strip() == "ready", (rc, out)
        assert "is ready" in c.log(c.server)


def test_errors_and_versions():
    with Cluster() as c:
        m1 = c.add_servable("matmul", SEED, 2, 1)
        v2 = os.path.join(WORK, "matmul_v2.onnx")
        matmul_neg_model(v2, w_value=1.0)
        m2 = c.shard(v2, "v2", 2)
        start(c, [("matmul", 1, m1), ("matmul", 2, m2)])
        cl = lambda v=0, m="predict", s="matmul": Client(c.grpc, s, m, v)  # noqa: E731
        # version 0 is the latest (2: W = 1.0 -> -96), explicit versions select
        assert (cl().infer({"x": ONES})[0]["y"] == -96).all()
        assert (cl(1).infer({"x": ONES})[0]["y"] == -48).all()
        assert (cl(2).infer({"x": ONES})[0]["y"] == -96).all()
        e = cl(3).infer({"x": ONES})
        assert "error" in e and "servable(matmul) method(predict) version(3), servable is not available" in e["error"], e
        e = cl(s="nope").infer({"x": ONES})
        assert "servable(nope) method(predict), servable is not available" in e["error"], e
        e = cl(m="nope").infer({"x": ONES})
        assert "method is not available" in e["error"] or "not available" in e["error"], e
        e = cl().infer({"z": ONES})
        assert "Cannot find input x in instance input" in e["error"], e
        # an extra input is ignored
        assert (cl(1).infer({"x": ONES, "extra": ONES})[0]["y"] == -48).all()
        # mixed results: one good instance, one wrong dtype, one wrong size
        r = cl(1).infer([{"x": ONES}, {"x": ONES.astype(np.int32)}, {"x": np.ones((3, 96), np.float32)}])
        assert len(r) == 3 and (r[0]["y"] == -48).all(), r
        assert "data type kMSI_Int32 not match the data type kMSI_Float32" in r[1]["error"], r[1]
        assert "size 1152 not match the size 49152 defined in model" in r[2]["error"], r[2]
        # every instance failing the same way collapses into one error
        e = cl(1).infer([{"x": ONES.astype(np.int32)}, {"x": ONES.astype(np.int32)}])
        assert isinstance(e, dict) and "kMSI_Int32" in e["error"], e
        # REST: version in the URL, errors as error_msg with HTTP 200
        d = rest_predict(c, "matmul", "predict", {"instances": [{"x": ONES.tolist()}]}, version=1)
        assert np.array(d["instances"][0]["y"]).min() == -48
        d = rest_predict(c, "matmul", "predict", {"instances": [{"z": 1}]})
        assert "Cannot find input x" in d["error_msg"], d
        # MindSpore's order: the size is checked before the dtype (both wrong: the size is named)
        r = cl(1).infer({"x": np.ones((3, 96), np.int32)})
        assert "size 1152 not match the size 49152 defined in model" in r["error"], r
        # without a batch dim the right bytes in another shape take the model's shape (MindSpore)
        y = cl(1).infer({"x": np.ones((96, 128), np.float32)})[0]["y"]
        assert y.shape == (128, 16) and (y == -48).all(), y.shape
        # version 0 is the highest *running* version: with version 2's agents gone it is 1
        v2_agents = c.procs[-1]
        v2_agents.terminate()
        v2_agents.wait(timeout=30)
        deadline = time.time() + 30
        while True:
            r = cl().infer({"x": ONES})
            if isinstance(r, list) and (r[0]["y"] == -48).all():
                break
            assert time.time() < deadline, r
            time.sleep(0.1)
        e = cl(2).infer({"x": ONES})
        assert "version(2), servable is not available: not ready" in e["error"], e


def two_matmul_model(path, rows=64, width=256):
    """y = Neg(Relu(x @ W1) @ W2): a MatMul for each of two pipeline stages, so both do real work.
    W1 = 1/width and W2 = 0.5 keep the result exact: x = k everywhere gives y = -width/2 * k."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w1 = numpy_helper.from_array(np.full((width, width), 1.0 / width, np.float32), name="W1")
    w2 = numpy_helper.from_array(np.full((width, width), 0.5, np.float32), name="W2")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "W2"], ["z"], name="mm2"), helper.make_node("Neg", ["z"], ["y"], name="neg")],
        "two_matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, width])], initializer=[w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save_model(m, path)


def pipelined_requests(agent_log, ranks_per_stage):
    """Requests whose stage 0 started while the last stage was still running another request: the
    overlap a pipeline exists for. Back to back (one request in flight) there are none: a request
    reaches stage 0 only after the rank that answers (the last one, the only one with outputs) has
    finished the request before it. The other ranks of the last stage answer nothing and may still
    be finishing when the next request arrives, so only the answering rank's runs count. Read from
    the agents' DEBUG lines, which carry each run as CLOCK_MONOTONIC times (one clock on one host)."""
    first, answering = [], []
    for m in re.finditer(r"rank (\d+): request_id (\d+): .*?\(monotonic (\d+)\.\.(\d+) ns\), "
                         r"answered in \S+ ms \((\d+) outputs\)", agent_log):
        rank, rid, t0, t1, outputs = (int(v) for v in m.groups())
        if rank < ranks_per_stage:
            first.append((rid, t0))
        elif outputs:
            answering.append((rid, t0, t1))
    assert first and answering, "no per-request DEBUG lines from the agents:\n" + agent_log[-2000:]
    return {rid for rid, t0 in first if any(r1 != rid and s1 <= t0 <= e1 for r1, s1, e1 in answering)}


def test_pipeline_stage_size_2():
    """2 stages x 4 ranks under concurrent requests: every answer right, and stage 0 takes the next
    request while stage 1 still runs the last one (enable_pipeline_infer, on by default)."""
    model = os.path.join(WORK, "two_matmul.onnx")
    two_matmul_model(model)
    with Cluster() as c:
        models = c.add_servable("mlp", model, 8, 2)
        tables = [("mlp", 1, c.write_rank_table(8))]
        c.serve(tables)
        agents = c.agents(c.worker_addresses["mlp"][0], models, env={"SHARDSERVE_LOG": "debug"})
        c.wait_ready()
        cl = Client(c.grpc, "mlp", "predict")
        n = 32
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(cl.infer, {"x": np.full((64, 256), float(i % 5), np.float32)}) for i in range(n)]
            for i, f in enumerate(futs):
                y = f.result()[0]["y"]
                assert (y == -128 * (i % 5)).all(), (i, y[0, :4])
        overlapped = pipelined_requests(c.log(agents), 4)
        print("pipeline: %d of %d requests entered stage 0 while stage 1 ran another" % (len(overlapped), n))
        assert len(overlapped) >= n // 4, "stages did not overlap: %d of %d requests" % (len(overlapped), n)


def test_batching_with_batch_dim():
    with Cluster() as c:
        model = os.path.join(WORK, "batched.onnx")
        matmul_neg_model(model, rows=4, k=8, n=4)
        models = c.add_servable("bm", model, 2, 1, with_batch_dim=True,
                                extra={"batching": {"max_queue_delay_us": 2000}})
        start(c, [("bm", 1, models)])
        cl = Client(c.grpc, "bm", "predict")
        # instances are rows: x[8] -> y[4]; 4 rows per model call, merged across requests and padded
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            futs = [ex.submit(cl.infer, [{"x": np.full((8,), float(i + j), np.float32)} for j in range(1 + i % 3)])
                    for i in range(30)]
            for i, f in enumerate(futs):
                r = f.result()
                assert len(r) == 1 + i % 3, r
                for j, inst in enumerate(r):
                    assert inst["y"].shape == (4,) and (inst["y"] == -0.5 * 8 * (i + j)).all(), (i, j, inst)
        # a wrong per-instance size is reported for that instance only
        r = cl.infer([{"x": np.ones((8,), np.float32)}, {"x": np.ones((9,), np.float32)}])
        assert (r[0]["y"] == -4).all() and "size 36 not match the size 32" in r[1]["error"], r


def save_graph(g, name):
    """A graph as an opset-13 model file in WORK; its path."""
    import onnx
    from onnx import helper
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = os.path.join(WORK, name)
    onnx.save(m, path)
    return path


def test_bad_instance_fails_alone_in_its_batch():
    """A batch the model refuses (one client's index is out of range) is run again one instance
    at a time: only that instance fails, naming its index; the others, batched with it, get
    their rows (they used to fail with the other client's error)."""
    from onnx import TensorProto, helper, numpy_helper
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    g = helper.make_graph([helper.make_node("Gather", ["T", "idx"], ["y"], axis=0)], "gather",
                          [helper.make_tensor_value_info("idx", TensorProto.INT64, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
                          [numpy_helper.from_array(table, "T")])
    model = save_graph(g, "gather.onnx")
    with Cluster() as c:
        models = c.add_servable("gat", model, 1, 1, with_batch_dim=True,
                                methods=[{"name": "predict", "inputs": ["idx"], "outputs": ["y"]}],
                                extra={"batching": {"max_queue_delay_us": 300000}})
        start(c, [("gat", 1, models)])
        cl = Client(c.grpc, "gat", "predict")
        wanted = [0, 1, 99, 3]
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            futs = [ex.submit(cl.infer, [{"idx": np.array(i, np.int64)}]) for i in wanted]
            got = [f.result() for f in futs]
        for i, r in zip(wanted, got):
            if i == 99:
                assert isinstance(r, dict) and "99" in r["error"], r
            else:
                assert isinstance(r, list) and (r[0]["y"] == table[i]).all(), (i, r)
                assert "99" not in str(r), r
        assert "running each alone" in c.log(c.server), "the four were not batched together"


def test_without_batch_dim_inputs_and_two_servables():
    """y = x @ W + b: x batched (4 rows per call), b not (MindSpore's without_batch_dim_inputs);
    served next to the seed servable in the same server."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    path = os.path.join(WORK, "affine.onnx")
    w = numpy_helper.from_array(np.full((8, 4), 0.5, np.float32), name="W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="mm"), helper.make_node("Add", ["xw", "b"], ["y"], name="add")],
        "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8]),
                   helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save_model(m, path)
    with Cluster() as c:
        affine = c.add_servable("affine", path, 2, 1, with_batch_dim=True,
                                methods=[{"name": "run", "inputs": ["x", "b"], "outputs": ["y"]}],
                                extra={"distributed": {"rank_size": 2, "stage_size": 1, "with_batch_dim": True,
                                                       "without_batch_dim_inputs": ["b"]}})
        seed = c.add_servable("matmul", SEED, 2, 1)
        start(c, [("affine", 1, affine), ("matmul", 1, seed)])
        b = np.array([1, 2, 3, 4], np.float32)
        r = Client(c.grpc, "affine", "run").infer([{"x": np.full((8,), float(i), np.float32), "b": b}
                                                   for i in range(3)])
        for i, inst in enumerate(r):
            assert np.allclose(inst["y"], 4.0 * i + b), (i, inst)
        status, meta = http_get(c, "/model/affine")  # per-instance shapes: x and y lose the batch dim, b not
        assert status == 200 and meta["with_batch_dim"] and meta["batch_size"] == 4, meta
        assert meta["methods"][0]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [8]},
                                                {"name": "b", "dtype": "float32", "shape": [4]}], meta
        assert meta["methods"][0]["outputs"] == [{"name": "y", "dtype": "float32", "shape": [4]}], meta
        assert (Client(c.grpc, "matmul", "predict").infer({"x": ONES})[0]["y"] == -48).all()


def test_inputs_by_broadcast_and_by_link():
    """The same 4-rank servable twice: stage 0's inputs reach ranks 1..3 through rank 0's broadcast
    (the default) or over the link (broadcast_inputs false). Both answer concurrent, different
    requests right; /metrics shows where the input bytes went."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from test_metrics_format import parse, value
    with Cluster() as c:
        bc = c.add_servable("bc", SEED, 4, 1)
        lk = c.add_servable("lk", SEED, 4, 1, extra={"distributed": {"rank_size": 4, "stage_size": 1,
                                                                     "with_batch_dim": False,
                                                                     "broadcast_inputs": False}})
        start(c, [("bc", 1, bc), ("lk", 1, lk)])
        per_thread = 25

        def worker(args):
            name, t = args
            cl = Client(c.grpc, name, "predict")
            bad = 0
            for i in range(per_thread):
                v = float((t * per_thread + i) % 5 + 1)
                r = cl.infer({"x": np.full((128, 96), v, np.float32)})
                bad += not (isinstance(r, list) and (r[0]["y"] == -48 * v).all())
            return bad

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            wrong = sum(ex.map(worker, [(n, t) for n in ("bc", "lk") for t in range(4)]))
        assert wrong == 0, "%d wrong answers" % wrong
        n, in_bytes = 4 * per_thread, 128 * 96 * 4
        def coll(fams, name, r):
            return value(fams, "shardserve_collective_bytes_total", servable=name, rank=r)

        def both_reported(fams, r):
            bc_r, lk_r = coll(fams, "bc", r), coll(fams, "lk", r)
            return bc_r is not None and lk_r is not None and bc_r - lk_r >= n * in_bytes

        deadline = time.time() + 10  # ranks report collective bytes with their heartbeat answers
        while True:  # wait for both servables' reports: one may come a heartbeat after the other
            with urllib.request.urlopen("http://%s/metrics" % c.rest, timeout=10) as r:
                fams = parse(r.read().decode())
            if time.time() > deadline or all(both_reported(fams, r) for r in (1, 2, 3)):
                break
            time.sleep(0.2)
        for name in ("bc", "lk"):
            sent0 = value(fams, "shardserve_link_sent_bytes_total", servable=name, rank=0)
            assert sent0 >= n * in_bytes, (name, sent0)
        for r in (1, 2, 3):
            by_link = value(fams, "shardserve_link_sent_bytes_total", servable="lk", rank=r)
            by_bcast = value(fams, "shardserve_link_sent_bytes_total", servable="bc", rank=r)
            assert by_link >= n * in_bytes, ("lk", r, by_link)
            assert by_bcast < n * in_bytes / 10, ("bc", r, by_bcast)
            coll_bc, coll_lk = coll(fams, "bc", r), coll(fams, "lk", r)
            assert coll_bc is not None and coll_lk is not None, ("collective bytes never reported",
                                                                 r, coll_bc, coll_lk)
            assert coll_bc - coll_lk >= n * in_bytes, (r, coll_bc, coll_lk)


def test_metadata_and_generated_bench_inputs():
    """GET /model/NAME[/version/N] describes each method's inputs and outputs (per-instance shapes:
    the batch dim is left out with with_batch_dim); `shardserve bench` without --input generates
    requests from it."""
    with Cluster() as c:
        seed = c.add_servable("matmul", SEED, 2, 1)
        c.serve([("matmul", 1, c.write_rank_table(2, "rt-matmul.json"))], wait_agents=60)
        status, body = http_get(c, "/model/matmul")
        assert status == 503 and "not ready" in body["error_msg"], (status, body)
        c.agents(c.worker_addresses["matmul"][0], seed)
        c.wait_ready(1)
        status, body = http_get(c, "/model/matmul")
        assert status == 200, (status, body)
        assert body["servable"] == "matmul" and body["version"] == 1 and body["rank_size"] == 2, body
        m = body["methods"][0]
        assert m["name"] == "predict", m
        assert m["inputs"] == [{"name": "x", "dtype": "float32", "shape": [128, 96]}], m
        assert m["outputs"] == [{"name": "y", "dtype": "float32", "shape": [128, 16]}], m
        assert http_get(c, "/model/matmul/version/1")[1] == body
        for path in ("/model/nope", "/model/matmul/version/7", "/model/matmul/version/x", "/model/"):
            status, err = http_get(c, path)
            assert status == 404 and err.get("error_msg"), (path, status, err)
        r = subprocess.run([SHARDSERVE, "bench", "--address", c.grpc, "--servable", "matmul", "--method", "predict",
                            "--metadata-address", c.rest, "--requests", "20", "--warmup", "2", "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res["failures"] == 0 and res["requests"] == 20, res
        r = subprocess.run([SHARDSERVE, "bench", "--address", c.grpc, "--servable", "matmul", "--method", "predict"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "--metadata-address" in r.stderr, r.stderr
        r = subprocess.run([SHARDSERVE, "bench", "--address", c.grpc, "--servable", "nope", "--method", "predict",
                            "--metadata-address", c.rest], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "HTTP 404" in r.stderr and "not served" in r.stderr, r.stderr


def test_many_clients():
    with Cluster() as c:
        models = c.add_servable("matmul", SEED, 4, 1)
        start(c, [("matmul", 1, models)])
        wrong = []

        def worker(t):
            cl = Client(c.grpc, "matmul", "predict")
            for i in range(200):
                v = float((t * 200 + i) % 7)
                y = cl.infer({"x": np.full((128, 96), v, np.float32)})[0]["y"]
                if not (y == -48 * v).all():
                    wrong.append((t, i))
            return True

        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            assert all(ex.map(worker, range(16)))
        assert not wrong, wrong[:5]


def test_startup_failures():
    # a bad rank table: the server refuses to start, naming the file
    with Cluster() as c:
        c.add_servable("matmul", SEED, 2, 1)
        bad = c.write_rank_table(2, "bad.json", table={"server_list": [{"server_id": "127.0.0.1", "device": [
            {"device_id": "0", "rank_id": "0"}, {"device_id": "1", "rank_id": "2"}]}]})
        p = c.serve([("matmul", 1, bad)], expect_ready=False)
        assert p.wait(timeout=20) != 0
        assert "device size not match rank_id" in c.log(p), c.log(p)
    # rank counts that disagree with the servable
    with Cluster() as c:
        c.add_servable("matmul", SEED, 2, 1)
        p = c.serve([("matmul", 1, c.write_rank_table(3))], expect_ready=False)
        assert p.wait(timeout=20) != 0 and "not equal to 2 declared in servable config" in c.log(p), c.log(p)
    with Cluster() as c:
        models = c.add_servable("matmul", SEED, 2, 1)
        c.serve([("matmul", 1, c.write_rank_table(2))], wait_agents=3)
        addr = c.worker_addresses["matmul"][0]
        # a missing model file
        a = c.agents(addr, [models[0], os.path.join(c.dir, "missing.onnx")])
        assert a.wait(timeout=30) != 0 and "Cannot access model file" in c.log(a), c.log(a)
        # a wrong file count
        a = c.agents(addr, [models[0]])
        assert a.wait(timeout=30) != 0 and "does not equal to model files size 1" in c.log(a), c.log(a)
        # agents that never come: bounded wait, the missing ranks named
        assert c.server.wait(timeout=30) != 0
        log = c.log(c.server)
        assert "Failed to wait for ready of all agents, current agents count: 0, rank size: 2" in log, log
        assert "missing ranks: 0, 1" in log, log


def test_batched_string_input_refused_at_load():
    """A string input with a batch dim cannot be batched: the servable is refused when its agents
    register, naming the input (every request used to fail with 'worker unavailable')."""
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Cast", ["s"], ["t"], to=TensorProto.FLOAT)], "strs",
                          [helper.make_tensor_value_info("s", TensorProto.STRING, [4])],
                          [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])])
    model = save_graph(g, "strs.onnx")
    with Cluster() as c:
        models = c.add_servable("strs", model, 1, 1, with_batch_dim=True,
                                methods=[{"name": "predict", "inputs": ["s"], "outputs": ["t"]}])
        c.serve([("strs", 1, c.write_rank_table(1))], wait_agents=20)
        c.agents(c.worker_addresses["strs"][0], models)
        assert c.server.wait(timeout=40) != 0, c.log(c.server)
        log = c.log(c.server)
        assert "input 's' is a string tensor with a batch dim" in log, log[-3000:]


def wide_model(path, n_inputs, n_outputs):
    """x0..x{n_inputs-1} summed by a chain of Adds, then n_outputs Negs of the sum."""
    import onnx
    from onnx import TensorProto, helper
    ins = ["x%d" % i for i in range(n_inputs)]
    nodes, acc = [], ins[0]
    for i, x in enumerate(ins[1:]):
        nodes.append(helper.make_node("Add", [acc, x], ["s%d" % i], name="add%d" % i))
        acc = "s%d" % i
    outs = ["y%d" % i for i in range(n_outputs)]
    nodes += [helper.make_node("Neg", [acc], [y], name="neg_" + y) for y in outs]
    g = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1]) for x in ins],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1]) for y in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save_model(m, path)
    return ins, outs


def test_models_over_agent_limits():
    """A model with more inputs (outputs) than an agent carries (SS_AGENT_MAX_INPUTS/OUTPUTS = 64)
    is refused at load with the model, the rank and the limit named, not served with some left out."""
    for tag, n_in, n_out, what in (("wide_in", 65, 1, "65 inputs"), ("wide_out", 1, 65, "65 outputs")):
        path = os.path.join(WORK, tag + ".onnx")
        wide_model(path, 2, 1)
        with Cluster() as c:
            # the shard tool refuses such a model itself: its one-rank output is swapped for the
            # wide model, as anyone may hand an agent a file of their own
            models = c.add_servable(tag, path, 1, 1)
            ins, outs = wide_model(models[0], n_in, n_out)
            with open(os.path.join(c.servables, tag, "servable.json"), "w") as f:
                json.dump({"distributed": {"rank_size": 1, "stage_size": 1, "with_batch_dim": False},
                           "methods": [{"name": "predict", "inputs": ins[:1], "outputs": outs[:1]}]}, f)
            c.serve([(tag, 1, c.write_rank_table(1))], wait_agents=5)
            a = c.agents(c.worker_addresses[tag][0], models)
            limit = "SS_AGENT_MAX_%s = 64" % ("INPUTS" if n_in > 1 else "OUTPUTS")
            want = "rank 0: model %s.onnx has %s, more than an agent serves (%s)" % (tag, what, limit)
            c.wait_log(a, re.escape(want))  # the launcher then retries, and gives up, on its own
            assert " is ready" not in c.log(c.server), c.log(c.server)


def test_agent_loss_reports_not_ready():
    with Cluster() as c:
        models = c.add_servable("matmul", SEED, 2, 1)
        start(c, [("matmul", 1, models)])
        cl = Client(c.grpc, "matmul", "predict")
        assert (cl.infer({"x": ONES})[0]["y"] == -48).all()
        with urllib.request.urlopen("http://%s/health/ready" % c.rest, timeout=5) as r:
            assert r.status == 200
        agents = c.procs[1]
        agents.terminate()
        agents.wait(timeout=15)
        time.sleep(0.5)
        e = cl.infer({"x": ONES})
        assert "error" in e and "not available" in e["error"], e
        try:
            urllib.request.urlopen("http://%s/health/ready" % c.rest, timeout=5)
            ready = True
        except urllib.error.HTTPError as err:
            ready = err.code == 200
        assert not ready
        # and the agents can come back without restarting the server
        c.agents(c.worker_addresses["matmul"][0], models)
        deadline = time.time() + 30
        while time.time() < deadline:
            r = cl.infer({"x": ONES})
            if isinstance(r, list):
                break
            time.sleep(0.2)
        assert isinstance(r, list) and (r[0]["y"] == -48).all(), r
    assert not leftover_shm(), leftover_shm()


def test_large_inputs_in_order_with_small_ones():
    """PREDICTs over 256 KiB go out from the worker's bulk sender, small ones from its loop; every
    rank must still see one order and every answer must be its own request's. A 2-rank servable
    with 2 MiB inputs (by broadcast) and a 1-rank one with 48 KiB inputs, hit at the same time."""
    with Cluster() as c:
        big = os.path.join(WORK, "big.onnx")
        matmul_neg_model(big, rows=1024, k=512, n=16)
        m_big = c.add_servable("big", big, 2, 1)
        m_small = c.add_servable("matmul", SEED, 1, 1)
        start(c, [("big", 1, m_big), ("matmul", 1, m_small)])
        cb, cs = Client(c.grpc, "big", "predict"), Client(c.grpc, "matmul", "predict")
        xb = np.ones((1024, 512), np.float32)

        def one(i):
            if i % 3 == 0:
                return i, cs.infer({"x": ONES * (i % 7)})[0]["y"], -48.0 * (i % 7)
            return i, cb.infer({"x": xb * (i % 5)})[0]["y"], -256.0 * (i % 5)
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            for i, y, want in ex.map(one, range(48)):
                assert (y == want).all(), (i, want, y.ravel()[:4])
        # a metrics scrape is answered by the loop while it works
        assert b"shardserve_requests_total" in urllib.request.urlopen("http://%s/metrics" % c.rest, timeout=10).read()


def test_link_closed_by_default():
    """Without flags serve makes a secret only its user can read (0600 file in a 0700 folder) and
    local agents find it by the address; an agent without it, or with another, is refused; both
    sides with --insecure-link work; the secret file goes when serve stops."""
    import stat
    with Cluster() as c:
        models = c.add_servable("matmul", SEED, 1, 1)
        table = c.write_rank_table(1)
        c.serve([("matmul", 1, table)], wait_agents=60)
        addr = c.worker_addresses["matmul"][0]
        path = c.wait_log(c.server, r"link secret for \S+ in (\S+)").group(1)
        st, dst = os.stat(path), os.stat(os.path.dirname(path))
        assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_IMODE(dst.st_mode) == 0o700, (oct(st.st_mode), oct(dst.st_mode))
        assert len(open(path).read().strip()) == 64
        bad = c.agents(addr, models, extra=("--insecure-link", "--restart", "never", "--connect-timeout-ms", "3000"),
                       log="insecure-agents.log")
        assert bad.wait(timeout=60) != 0, c.log(bad)
        assert "requires a shared secret and none is configured" in c.log(bad), c.log(bad)[-2000:]
        wrong = os.path.join(c.dir, "wrong.secret")
        with open(wrong, "w") as f:
            f.write("not the secret\n")
        bad = c.agents(addr, models, extra=("--secret-file", wrong, "--restart", "never", "--connect-timeout-ms", "3000"),
                       log="wrong-agents.log")
        assert bad.wait(timeout=60) != 0, c.log(bad)
        assert "wrong shared secret" in c.log(bad) + c.log(c.server), c.log(bad)[-2000:]
        c.agents(addr, models)  # no flag: the file serve wrote
        c.wait_ready()
        assert (Client(c.grpc, "matmul", "predict").infer({"x": ONES})[0]["y"] == -48).all()
        c.stop()
        assert not os.path.exists(path), path
    with Cluster() as c:
        models = c.add_servable("matmul", SEED, 1, 1)
        c.serve([("matmul", 1, c.write_rank_table(1))], wait_agents=60, extra=("--insecure-link",))
        assert "link secret" not in c.log(c.server)
        c.agents(c.worker_addresses["matmul"][0], models, extra=("--insecure-link",))
        c.wait_ready()
        assert (Client(c.grpc, "matmul", "predict").infer({"x": ONES})[0]["y"] == -48).all()


def agent_env(launcher):
    """The environment of each rank process a `shardserve agents` launcher started."""
    envs = []
    for pid in children(launcher.pid):
        with open("/proc/%d/environ" % pid, "rb") as f:
            envs.append(dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv))
    return envs


def agent_policies(launcher):
    """The scheduling policy of every thread of the rank processes a launcher started (a thread
    that ends while they are read is skipped)."""
    policies = set()
    for pid in children(launcher.pid):
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                policies.add(os.sched_getscheduler(int(tid)))
            except ProcessLookupError:
                pass
    return policies


def test_agent_wait_policy():
    """Ranks that fit the host's cores let their OpenMP workers spin for a bounded time and run in
    the default scheduling policy; ranks that outnumber the cores sleep at once and run
    SCHED_BATCH (no wake-up preemption among them); a user's choices reach the ranks unchanged."""
    cores = os.cpu_count()
    fits = {b"GOMP_SPINCOUNT": b"30000"} if cores >= 2 else {b"OMP_WAIT_POLICY": b"PASSIVE"}
    saved = {k: os.environ.pop(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "SHARDSERVE_AGENT_SCHED")
             if k in os.environ}
    user = {"OMP_WAIT_POLICY": "ACTIVE", "SHARDSERVE_AGENT_SCHED": "batch"}
    inherited = os.sched_getscheduler(0)  # what ranks left alone run in (the launcher's policy)
    try:
        for ranks, env, want, policy in ((1, None, fits, inherited),
                                         (cores + 1, None, {b"OMP_WAIT_POLICY": b"PASSIVE"}, os.SCHED_BATCH),
                                         (1, user, {b"OMP_WAIT_POLICY": b"ACTIVE"}, os.SCHED_BATCH)):
            with Cluster() as c:
                models = c.add_servable("matmul", SEED, ranks, 1)
                c.serve([("matmul", 1, c.write_rank_table(ranks))], wait_agents=60)
                launcher = c.agents(c.worker_addresses["matmul"][0], models, env=env)
                c.wait_ready()
                envs = agent_env(launcher)
                assert len(envs) == ranks, (ranks, envs)
                for e in envs:
                    got = {k: e[k] for k in (b"OMP_WAIT_POLICY", b"GOMP_SPINCOUNT") if k in e}
                    assert got == want, (ranks, env, got)
                assert (Client(c.grpc, "matmul", "predict").infer({"x": ONES})[0]["y"] == -48).all()
                # After a request, so the OpenMP team and the runtime's helper threads exist too.
                assert agent_policies(launcher) == {policy}, (ranks, env, agent_policies(launcher))
    finally:
        os.environ.update(saved)


CASES = [test_seed_example_three_clients, test_wait_ready_cli, test_errors_and_versions, test_pipeline_stage_size_2,
         test_batching_with_batch_dim, test_bad_instance_fails_alone_in_its_batch,
         test_without_batch_dim_inputs_and_two_servables,
         test_inputs_by_broadcast_and_by_link, test_metadata_and_generated_bench_inputs, test_many_clients, test_startup_failures,
         test_batched_string_input_refused_at_load,
         test_models_over_agent_limits, test_agent_loss_reports_not_ready,
         test_large_inputs_in_order_with_small_ones, test_link_closed_by_default, test_agent_wait_policy]


def main():
    return run_cases(CASES, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
