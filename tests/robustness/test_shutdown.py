#!/usr/bin/python3
"""A bounded shutdown: serve (request timeout 60 s, --shutdown-grace-ms 1000) gets SIGTERM while a
gRPC and a REST request wait on an agent stopped with SIGSTOP. Both clients get an error saying
the server is shutting down, and serve exits 0, within the grace period plus a few seconds (before
--shutdown-grace-ms it waited out the request timeout: about 60 s).

Usage: test_shutdown.py; prints ok/FAIL per case and "N passed, N failed"."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "serving"))
from cluster import Cluster, children, matmul_neg_model, run_cases  # noqa: E402
import shardserve_client as ssc  # noqa: E402

SANITIZED = os.environ.get("SS_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
SLOW = 3 if SANITIZED else 1
ROWS, K, N = 4, 16, 8
GRACE_MS = 1000
C = None


def grpc_call(out):
    x = np.ones((ROWS, K), np.float32)
    out["grpc"] = ssc.Client(C.grpc, "matmul", "predict").infer({"x": x})


def rest_call(out):
    body = json.dumps({"instances": [{"x": np.ones((ROWS, K)).tolist()}]}).encode()
    req = urllib.request.Request("http://%s/model/matmul:predict" % C.rest, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            out["rest"] = r.read().decode()
    except OSError as e:
        out["rest"] = "connection error: %s" % e


def test_sigterm_with_requests_on_a_stopped_agent():
    agents = children(C.procs[1].pid)
    assert agents, "the launcher has no agent process"
    for pid in agents:
        os.kill(pid, signal.SIGSTOP)
    out = {}
    calls = [threading.Thread(target=f, args=(out,)) for f in (grpc_call, rest_call)]
    try:
        for t in calls:
            t.start()
        time.sleep(1.0)  # both requests are with the (stopped) agent now
        t0 = time.time()
        C.server.send_signal(signal.SIGTERM)
        try:
            code = C.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = "still running after 30 s"
        elapsed = time.time() - t0
        for t in calls:
            t.join(10)
    finally:
        for pid in agents:
            os.kill(pid, signal.SIGCONT)
    log = C.log(C.server)
    assert code == 0, "serve: exit %s after %.1f s\n%s" % (code, elapsed, log[-3000:])
    bound = GRACE_MS / 1000 + 4 * SLOW
    assert elapsed < bound, "serve took %.1f s to exit (grace %d ms)" % (elapsed, GRACE_MS)
    assert "shutting down" in str(out.get("grpc")), "gRPC client got: %s" % str(out.get("grpc"))[:300]
    assert "shutting down" in str(out.get("rest")), "REST client got: %s" % str(out.get("rest"))[:300]
    assert "grace period" in log, log[-2000:]
    print("    serve exited %.1f s after SIGTERM (grace %d ms, request timeout 60 s)" % (elapsed, GRACE_MS))


def main():
    global C
    with Cluster() as c:
        C = c
        model = os.path.join(c.dir, "matmul.onnx")
        matmul_neg_model(model, rows=ROWS, k=K, n=N)
        models = c.add_servable("matmul", model, 1, 1)
        table = c.write_rank_table(1)
        c.serve([("matmul", 1, table)], wait_agents=60,
                extra=("--request-timeout-ms", "60000", "--heartbeat-timeout-ms", "60000",
                       "--shutdown-grace-ms", str(GRACE_MS)))
        c.agents(c.worker_addresses["matmul"][0], models)
        c.wait_ready(1)
        return run_cases([test_sigterm_with_requests_on_a_stopped_agent], sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
