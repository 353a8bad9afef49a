#!/usr/bin/python3
"""The project's own clients over KServe's system shared memory, on the seed servable (y all -48):
`shardserve infer --shm` (the C client library) over REST JSON, REST binary and gRPC, with the
output written into the region or answered in the reply, the region unregistered and removed
afterwards (also when the call fails), and `shardserve bench --shm`; the Python KServe class with SharedMemory / ShmTensor over
the three protocols; and the errors a client meets: an unregistered region, a range past the
region's end, an output region too small, --shm with MindSpore's protocol."""

import glob
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import SHARDSERVE, Cluster, matmul_neg_model, run_cases  # noqa: E402
from shardserve_client import KServe, KServeError, SharedMemory, ShmTensor  # noqa: E402

WORK = tempfile.mkdtemp(prefix="ss-kserve-shm-clients-")
SEED = os.path.join(WORK, "matmul.onnx")
matmul_neg_model(SEED)
X = np.ones((128, 96), np.float32)
X_NPY = os.path.join(WORK, "x.npy")
np.save(X_NPY, X)
PROTOCOLS = {"kserve-rest": "rest", "kserve-binary": "rest-binary", "kserve-grpc": "grpc"}


def start(c):
    models = c.add_servable("matmul", SEED, 1)
    c.serve([("matmul", 1, c.write_rank_table(1))], wait_agents=60)
    c.agents(c.worker_addresses["matmul"][0], models)
    c.wait_ready()


def registered(c):
    with urllib.request.urlopen("http://%s/v2/systemsharedmemory/status" % c.rest, timeout=30) as r:
        return json.loads(r.read())


def leftovers():
    return glob.glob("/dev/shm/shardserve-infer-*") + glob.glob("/dev/shm/shardserve-bench-*")


def infer_cli(c, protocol, *extra):
    address = c.grpc if protocol == "kserve-grpc" else c.rest
    out = tempfile.mkdtemp(dir=WORK)
    r = subprocess.run([SHARDSERVE, "infer", "--protocol", protocol, "--address", address,
                        "--servable", "matmul", "--method", "predict", "--input", "x=" + X_NPY,
                        "--output-dir", out] + list(extra),
                       capture_output=True, text=True, timeout=60)
    return r, os.path.join(out, "y.npy")


def check_cli(c):
    before = set(leftovers())
    for protocol in PROTOCOLS:
        for extra in (["--shm", "--output", "y"], ["--shm"]):
            r, y = infer_cli(c, protocol, *extra)
            assert r.returncode == 0, (protocol, extra, r.stdout, r.stderr)
            got = np.load(y)
            assert got.shape == (128, 16) and (got == -48).all(), (protocol, extra, got[:1, :4])
            assert registered(c) == [], (protocol, registered(c))
            assert set(leftovers()) == before, (protocol, leftovers())
        # the output does not fit its room: the server says so, the region still goes away
        r, _ = infer_cli(c, protocol, "--shm", "--output", "y", "--shm-output-size", "64")
        assert r.returncode == 1 and "'y'" in r.stderr and "shardserve-infer-" in r.stderr, \
            (protocol, r.returncode, r.stderr)
        assert registered(c) == [] and set(leftovers()) == before, (registered(c), leftovers())
    r, _ = infer_cli(c, "mindspore", "--shm")
    assert r.returncode != 0 and "kserve" in r.stderr, r.stderr
    for protocol in PROTOCOLS:  # shardserve bench --shm: the same region path under load
        address = c.grpc if protocol == "kserve-grpc" else c.rest
        r = subprocess.run([SHARDSERVE, "bench", "--protocol", protocol, "--address", address,
                            "--servable", "matmul", "--method", "predict", "--input", "x=" + X_NPY,
                            "--shm", "--output", "y", "--requests", "5", "--warmup", "1",
                            "--concurrency", "1,2", "--json"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (protocol, r.stdout, r.stderr)
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        assert len(rows) == 2 and all(row["failures"] == 0 for row in rows), (protocol, r.stdout)
        assert registered(c) == [] and set(leftovers()) == before, (registered(c), leftovers())


def check_python(c, protocol):
    address = c.grpc if protocol == "grpc" else c.rest
    key = "/ss-test-shm-clients-%s-%d" % (protocol, os.getpid())
    with SharedMemory(key, 1 << 16) as shm, KServe(address, "matmul", protocol=protocol,
                                                      timeout=60) as k:
        x = shm.write(0, X)._replace(region="seed")
        k.register_shm("seed", key, 1 << 16)
        assert k.shm_status("seed") == {"seed": {"key": key, "offset": 0, "byte_size": 1 << 16}}, \
            k.shm_status("seed")
        y_at = ShmTensor("seed", 49152, 128 * 16 * 4)
        out = k.infer({"x": x}, outputs={"y": y_at})
        y = out["y"]
        assert isinstance(y, ShmTensor) and y.shape == [128, 16] and y.datatype == "FP32", y
        assert (shm.array(y) == -48).all(), (protocol, y, shm.array(y)[:1, :4])
        # the input from the region, the output in the reply
        assert (k.infer({"x": x}, outputs=["y"])["y"] == -48).all()
        errors = [({"x": x._replace(region="nosuch")}, {"y": y_at}, ["nosuch", "not registered"]),
                  ({"x": x}, {"y": y_at._replace(offset=60000)}, ["seed", "run past", "'y'"]),
                  ({"x": x._replace(offset=30000)}, {"y": y_at}, ["seed", "run past", "'x'"])]
        for inputs, outputs, fragments in errors:
            try:
                k.infer(inputs, outputs=outputs)
                raise AssertionError("%s: %r succeeded" % (protocol, fragments))
            except KServeError as e:
                assert all(f in e.message for f in fragments), (protocol, fragments, e.message)
        k.unregister_shm("seed")
        assert k.shm_status() == {}, k.shm_status()
    assert not os.path.exists("/dev/shm" + key)


def test_clients_through_shared_memory():
    with Cluster() as c:
        start(c)
        check_cli(c)
        for protocol in PROTOCOLS.values():
            check_python(c, protocol)


def main():
    return run_cases([test_clients_through_shared_memory], sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
