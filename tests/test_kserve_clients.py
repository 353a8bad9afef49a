"""The project's own KServe clients against ss_test_server: the Python KServe class
(shardserve_client.kserve) over gRPC, REST JSON and REST binary, its stream, its errors, and
`shardserve infer --protocol kserve*` (the C client library) when SHARDSERVE is set."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from server_harness import Checker, TestServer
from shardserve_client import KServe, KServeError

srv = None
PROTOCOLS = ("grpc", "rest", "rest-binary")


def client(protocol, model="add", version=""):
    address = "127.0.0.1:%d" % (srv.grpc_port if protocol == "grpc" else srv.rest_port)
    return KServe(address, model, version, protocol=protocol, timeout=20)


def python_infer(c):
    x1 = np.arange(6, dtype=np.float32).reshape(2, 3)
    x2 = np.full((2, 3), 0.5, np.float32)
    for p in PROTOCOLS:
        with client(p) as k:
            out = k.infer({"x1": x1, "x2": x2})
            c.check(np.array_equal(out["y"], x1 + x2) and out["y"].dtype == np.float32,
                    "%s: y %r" % (p, out.get("y")))
            c.eq(out["version"].ravel().tolist(), [2, 2], "%s: latest version answered" % p)
        with client(p, version="1") as k:
            c.eq(k.infer({"x1": x1, "x2": x2}, outputs=["version"])["version"].ravel().tolist(),
                 [1, 1], "%s: version 1" % p)
        with client(p, model="typed.int16") as k:
            v = np.array([[-3, 7, 300]], np.int16)
            c.check(np.array_equal(k.infer({"x": v})["x"], v), "%s: INT16 round trip" % p)
        with client(p, model="typed.bytes") as k:
            word = b"ab\x00c" if p != "rest" else b"abc"  # JSON strings cannot carry NUL (refused)
            got = k.infer({"x": np.array([word], dtype=object)})["x"]
            c.eq(got.ravel().tolist(), [word], "%s: BYTES round trip" % p)


def python_errors(c):
    x = np.zeros((1, 2), np.float32)
    for p in PROTOCOLS:
        cases = [(client(p, model="nope"), {"x1": x, "x2": x}, "nope"),
                 (client(p), {"x1": x.astype(np.float64), "x2": x}, "datatype FP64"),
                 (client(p), {"x1": x}, "expects input 'x2'")]
        for k, inputs, fragment in cases:
            try:
                k.infer(inputs)
                c.check(False, "%s: %r succeeded" % (p, fragment))
            except KServeError as e:
                c.check(fragment in e.message, "%s: %r lacks %r" % (p, e.message, fragment))
            k.close()
    try:
        KServe("127.0.0.1:1", "add", protocol="soap")
        c.check(False, "a bad protocol was accepted")
    except KServeError as e:
        c.check("grpc, rest or rest-binary" in e.message, e.message)


def python_stream_and_rest_calls(c):
    with client("grpc") as k:
        x = np.ones((1, 2), np.float32)
        got = dict(k.stream([{"x1": x, "x2": x}, {"x1": x}, {"x1": 2 * x, "x2": x}]))
        c.eq(sorted(got), ["0", "1", "2"], "stream ids")
        c.check(np.array_equal(got["0"]["y"], 2 * x) and np.array_equal(got["2"]["y"], 3 * x),
                "stream outputs %r" % got)
        c.check(isinstance(got["1"], KServeError) and "x2" in got["1"].message,
                "stream error %r" % got["1"])
    with client("rest") as k:
        c.check(k.ready(), "ready")
        c.eq([t["name"] for t in k.metadata()["inputs"]], ["x1", "x2"], "metadata inputs")
        c.eq(k.stats()[0]["name"], "add", "stats")
    c.check(not client("rest", model="notready").ready(), "notready is not ready")


def c_client_cli(c):
    """shardserve infer --protocol kserve-grpc|kserve-rest|kserve-binary (the C client)."""
    exe = os.environ.get("SHARDSERVE")
    c.check(exe, "SHARDSERVE is set (the C client CLI is tested)")
    if not exe:
        return
    d = tempfile.mkdtemp(prefix="ss-kserve-cli-")
    x1, x2 = os.path.join(d, "x1.npy"), os.path.join(d, "x2.npy")
    np.save(x1, np.arange(6, dtype=np.float32).reshape(2, 3))
    np.save(x2, np.full((2, 3), 0.25, np.float32))
    for p, port in (("kserve-grpc", srv.grpc_port), ("kserve-rest", srv.rest_port),
                    ("kserve-binary", srv.rest_port)):
        out = os.path.join(d, "out-%s" % p)
        os.makedirs(out)
        r = subprocess.run([exe, "infer", "--address", "127.0.0.1:%d" % port, "--protocol", p,
                            "--servable", "add", "--method", "add_common",
                            "--input", "x1=" + x1, "--input", "x2=" + x2, "--output-dir", out],
                           capture_output=True, text=True, timeout=60)
        c.eq(r.returncode, 0, "%s exit (%s)" % (p, r.stderr.strip()[-300:]))
        y = os.path.join(out, "y.npy")
        got = np.load(y) if os.path.exists(y) else None
        c.check(got is not None and np.array_equal(got, np.arange(6, dtype=np.float32).reshape(2, 3)
                                                     + 0.25), "%s: y %r" % (p, got))
        r = subprocess.run([exe, "infer", "--address", "127.0.0.1:%d" % port, "--protocol", p,
                            "--servable", "nope", "--method", "m", "--input", "x1=" + x1],
                           capture_output=True, text=True, timeout=60)
        c.check(r.returncode != 0 and "nope" in r.stderr, "%s: unknown model: %r" % (p, r.stderr))


def c_bench_cli(c):
    """shardserve bench --protocol kserve* loads the server with no failed request."""
    exe = os.environ.get("SHARDSERVE")
    if not exe:
        c.check(False, "SHARDSERVE is set")
        return
    for p, port in (("kserve", srv.grpc_port), ("kserve-rest", srv.rest_port),
                    ("kserve-binary", srv.rest_port)):
        r = subprocess.run([exe, "bench", "--address", "127.0.0.1:%d" % port, "--protocol", p,
                            "--servable", "add", "--method", "add_common", "--input",
                            "x1=float32[1,3]", "--input", "x2=float32[1,3]", "--requests", "100",
                            "--concurrency", "1,2", "--warmup", "5", "--json"],
                           capture_output=True, text=True, timeout=120)
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        c.check(r.returncode == 0 and len(rows) == 2 and
                all(x["protocol"] == p and x["failures"] == 0 and x["requests"] == 100
                    for x in rows), "bench %s: %s %r %s" % (p, r.returncode, rows, r.stderr[-300:]))


def main():
    global srv
    srv = TestServer(rest="127.0.0.1:0")
    Checker().run([python_infer, python_errors, python_stream_and_rest_calls, c_client_cli,
                   c_bench_cli],
                  server=srv)


if __name__ == "__main__":
    sys.exit(main())
