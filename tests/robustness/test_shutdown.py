#!/usr/bin/python3
"""A bounded shutdown.
- serve (request timeout 60 s, --shutdown-grace-ms 1000) gets SIGTERM while a gRPC and a REST
  request wait on an agent stopped with SIGSTOP. Both clients get an error saying the server is
  shutting down, and serve exits 0, within the grace period plus a few seconds (before
  --shutdown-grace-ms it waited out the request timeout: about 60 s).
- Idle connections do not hold the exit (grace 10 s): a gRPC channel that made a call and stays
  open, and a connection that sent HTTP/2's preface and then nothing. Each waited on its client's
  acknowledgement of the GOAWAY: an idle gRPC core client gives it when its backup poller next runs
  (up to 5 s), the silent one never, so serve waited out the grace period.
- A request in flight at SIGTERM is still answered when its agent resumes within the grace period.

Usage: test_shutdown.py; prints ok/FAIL per case and "N passed, N failed"."""

import contextlib
import json
import os
import signal
import socket
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
IDLE_GRACE_MS = 10000
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


@contextlib.contextmanager
def agents_stopped():
    """The servable's agent processes SIGSTOPped for the block, resumed after it."""
    agents = children(C.procs[1].pid)
    assert agents, "the launcher has no agent process"
    for pid in agents:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in agents:
            os.kill(pid, signal.SIGCONT)


def test_sigterm_with_requests_on_a_stopped_agent():
    out = {}
    calls = [threading.Thread(target=f, args=(out,)) for f in (grpc_call, rest_call)]
    with agents_stopped():
        for t in calls:
            t.start()
        wait_in_flight(2)  # both requests are with the (stopped) agent now
        code, elapsed = sigterm_and_wait(0)
        for t in calls:
            t.join(10)
    log = C.log(C.server)
    assert code == 0, "serve: exit %s after %.1f s\n%s" % (code, elapsed, log[-3000:])
    bound = GRACE_MS / 1000 + 4 * SLOW
    assert elapsed < bound, "serve took %.1f s to exit (grace %d ms)" % (elapsed, GRACE_MS)
    assert "shutting down" in str(out.get("grpc")), "gRPC client got: %s" % str(out.get("grpc"))[:300]
    assert "shutting down" in str(out.get("rest")), "REST client got: %s" % str(out.get("rest"))[:300]
    assert "grace period" in log, log[-2000:]
    print("    serve exited %.1f s after SIGTERM (grace %d ms, request timeout 60 s)" % (elapsed, GRACE_MS))


def sigterm_and_wait(bound_s):
    """SIGTERM serve; its exit code (or why there is none) and the seconds it took."""
    t0 = time.time()
    C.server.send_signal(signal.SIGTERM)
    try:
        code = C.server.wait(timeout=bound_s + 30)
    except subprocess.TimeoutExpired:
        code = "still running after %d s" % (bound_s + 30)
    return code, time.time() - t0


def test_sigterm_with_idle_connections():
    cl = ssc.Client(C.grpc, "matmul", "predict")
    y = cl.infer({"x": np.ones((ROWS, K), np.float32)})[0]["y"]
    assert (y == -0.5 * K).all(), y
    host, port = C.grpc.rsplit(":", 1)
    silent = socket.create_connection((host, int(port)))
    # the client preface and an empty SETTINGS frame; then nothing is ever read or acknowledged
    silent.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    time.sleep(0.5)
    try:
        code, elapsed = sigterm_and_wait(IDLE_GRACE_MS / 1000)
    finally:
        silent.close()
    log = C.log(C.server)
    assert code == 0, "serve: exit %s after %.1f s\n%s" % (code, elapsed, log[-3000:])
    assert elapsed < 2 * SLOW, "serve took %.1f s to exit with idle connections open (grace %d ms)\n%s" % (
        elapsed, IDLE_GRACE_MS, log[-2000:])
    assert "did not finish" not in log and "grace period" not in log, log[-2000:]
    print("    serve exited %.2f s after SIGTERM with 2 idle connections open (grace %d ms)" % (
        elapsed, IDLE_GRACE_MS))


def wait_in_flight(n=1, timeout=30 * SLOW):
    """Until serve counts n requests in flight (its /metrics), not a fixed sleep: on a loaded
    machine the client thread may not have reached serve after 1 s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urllib.request.urlopen("http://%s/metrics" % C.rest, timeout=10) as r:
            text = r.read().decode()
        got = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("shardserve_inflight_requests{"))
        if got >= n:
            return
        time.sleep(0.05)
    raise AssertionError("no request in flight after %d s" % timeout)


def test_sigterm_answers_a_request_in_flight():
    out = {}
    call = threading.Thread(target=grpc_call, args=(out,))
    with agents_stopped():
        call.start()
        wait_in_flight()  # the request is with the (stopped) agent now
        C.server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
    code, elapsed = sigterm_and_wait(IDLE_GRACE_MS / 1000)  # a second SIGTERM changes nothing
    call.join(10)
    log = C.log(C.server)
    assert code == 0, "serve: exit %s after %.1f s\n%s" % (code, elapsed, log[-3000:])
    got = out.get("grpc")
    assert isinstance(got, list) and (got[0]["y"] == -0.5 * K).all(), "the request in flight got: %s\n%s" % (
        str(got)[:300], log[-2000:])
    assert elapsed < 4 * SLOW, "serve took %.1f s to exit after its last request" % elapsed
    print("    the request in flight at SIGTERM was answered; serve exited %.2f s after it resumed" % elapsed)


def start(c, grace_ms):
    global C
    C = c
    model = os.path.join(c.dir, "matmul.onnx")
    matmul_neg_model(model, rows=ROWS, k=K, n=N)
    models = c.add_servable("matmul", model, 1, 1)
    table = c.write_rank_table(1)
    c.serve([("matmul", 1, table)], wait_agents=60,
            extra=("--request-timeout-ms", "60000", "--heartbeat-timeout-ms", "60000",
                   "--shutdown-grace-ms", str(grace_ms)))
    c.agents(c.worker_addresses["matmul"][0], models)
    c.wait_ready(1)


def in_cluster(case, grace_ms):
    def run():
        with Cluster() as c:
            start(c, grace_ms)
            case()
    run.__name__ = case.__name__
    return run


def main():
    return run_cases([in_cluster(test_sigterm_with_requests_on_a_stopped_agent, GRACE_MS),
                      in_cluster(test_sigterm_with_idle_connections, IDLE_GRACE_MS),
                      in_cluster(test_sigterm_answers_a_request_in_flight, IDLE_GRACE_MS)], sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
