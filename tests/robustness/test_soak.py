#!/usr/bin/python3
"""Load and soak: a real `shardserve serve` + `shardserve agents` (2 ranks, tests/serving/cluster.py)
and 64 concurrent clients sending 20,000 requests in total, valid and invalid mixed: valid gRPC and
REST predictions (every answer checked against numpy), wrong dtype, missing input, unknown servable
and REST garbage (each must get its clear error).

Checks: 0 wrong answers, 0 lost replies (every request gets a reply before its deadline), the
server's RSS after 20,000 requests within noise of its RSS after 2,000 (the warm-up), and the
server exits 0 on SIGTERM. In the ASan build (SS_SANITIZED=1) the server runs under LeakSanitizer
and no sanitizer report may appear in any log. Prints the numbers and "N passed, N failed"."""

import concurrent.futures
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "serving"))
from cluster import Cluster, matmul_neg_model  # noqa: E402
import shardserve_client as ssc  # noqa: E402

SANITIZED = os.environ.get("SS_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
TOTAL = int(os.environ.get("SS_SOAK_REQUESTS", "20000"))
WARMUP = TOTAL // 10
CLIENTS = 64
ROWS, K, N = 4, 16, 8
DEADLINE_S = 60 if SANITIZED else 30
SAN_RE = re.compile(r"(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: \w+Sanitizer)")
if SANITIZED:
    # leaks reported at exit; a small quarantine so freed memory is reused and RSS can stay flat
    os.environ["ASAN_OPTIONS"] = "detect_leaks=1:quarantine_size_mb=16:malloc_context_size=20"

KINDS = [("grpc_valid", 55), ("rest_valid", 12), ("wrong_dtype", 8), ("missing_input", 8),
         ("unknown_servable", 7), ("rest_garbage", 10)]

KIND_NAMES = [k for k, _ in KINDS]
KIND_P = np.array([w for _, w in KINDS], float) / sum(w for _, w in KINDS)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0  # a zombie: the server died (the checks below say so, with its log)


class Soak:
    def __init__(self, c):
        self.c = c
        self.lock = threading.Lock()
        self.done = 0
        self.counts = {k: 0 for k, _ in KINDS}
        self.wrong = []
        self.lost = []
        self.rss = {}
        self.channels = [ssc.Client(c.grpc, "matmul", "predict") for _ in range(8)]
        self.unknown = [ssc.Client(c.grpc, "nosuch", "predict") for _ in range(2)]

    def grpc_call(self, client, instances):
        req = client._request(instances)
        try:
            return ssc._parse_reply(client._predict(req, timeout=DEADLINE_S))
        except ssc.grpc.RpcError as e:
            return ssc._grpc_error(e)

    def rest_call(self, path, body, ctype="application/json"):
        req = urllib.request.Request("http://%s%s" % (self.c.rest, path), data=body, method="POST",
                                     headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE_S) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def one(self, i, rng):
        kind = KIND_NAMES[rng.choice(len(KINDS), p=KIND_P)]
        x = rng.integers(0, 10, (ROWS, K)).astype(np.float32)
        want = np.repeat(-0.5 * x.sum(axis=1, keepdims=True), N, axis=1)
        cl = self.channels[i % len(self.channels)]
        if kind == "grpc_valid":
            r = self.grpc_call(cl, {"x": x})
            ok = isinstance(r, list) and len(r) == 1 and "y" in r[0] and r[0]["y"].shape == (ROWS, N) \
                and (r[0]["y"] == want).all()
        elif kind == "rest_valid":
            st, body = self.rest_call("/model/matmul:predict", json.dumps({"instances": [{"x": x.tolist()}]}).encode())
            r = (st, body[:300])
            try:
                y = np.array(json.loads(body)["instances"][0]["y"], np.float32)
                ok = st == 200 and y.shape == (ROWS, N) and (y == want).all()
            except (ValueError, KeyError, IndexError, TypeError):
                ok = False
        elif kind == "wrong_dtype":
            r = self.grpc_call(cl, {"x": x.astype(np.int32)})
            ok = isinstance(r, dict) and "not match the data type" in r.get("error", "")
        elif kind == "missing_input":
            r = self.grpc_call(cl, {"z": x})
            ok = isinstance(r, dict) and "Cannot find input x" in r.get("error", "")
        elif kind == "unknown_servable":
            r = self.grpc_call(self.unknown[i % 2], {"x": x})
            ok = isinstance(r, dict) and "not available" in r.get("error", "")
        else:
            junk = [b"{", b"\xff\xfe\x00garbage", b'{"instances": [{"x": [1, 2, [3]]}]}', b"[]",
                    b'{"instances": "nope"}', rng.bytes(int(rng.integers(1, 200)))][i % 6]
            path = ["/model/matmul:predict", "/model/matmul/version/x:predict", "/model/matmul:predict",
                    "/nowhere", "/model/matmul:predict", "/model/matmul:predict"][i % 6]
            st, body = self.rest_call(path, junk)
            r = (st, body[:300])
            try:
                ok = st >= 400 or (st == 200 and "error_msg" in json.loads(body))
            except ValueError:
                ok = False
        lost = isinstance(r, dict) and r.get("error", "").startswith("Grpc Error, 4,") or \
            isinstance(r, dict) and r.get("error", "").startswith("Grpc Error, 14,")
        with self.lock:
            self.counts[kind] += 1
            if lost:
                self.lost.append((i, kind, r))
            elif not ok:
                self.wrong.append((i, kind, r))
            self.done += 1
            if self.done == WARMUP:
                self.rss["warmup"] = rss_kb(self.c.server.pid)

    def worker(self, t):
        rng = np.random.default_rng(1000 + t)
        for i in range(t, TOTAL, CLIENTS):
            try:
                self.one(i, rng)
            except Exception as e:  # a client-side exception is a lost reply (socket reset, timeout)
                with self.lock:
                    self.lost.append((i, "exception", repr(e)))
                    self.done += 1
        return True


def main():
    results = []

    def check(name, cond, detail=""):
        results.append(bool(cond))
        print("%s %s%s" % ("ok  " if cond else "FAIL", name, (": " + detail) if detail else ""))
        sys.stdout.flush()

    with Cluster() as c:
        model = os.path.join(c.dir, "matmul.onnx")
        matmul_neg_model(model, rows=ROWS, k=K, n=N)
        models = c.add_servable("matmul", model, 2, 1)
        table = c.write_rank_table(2)
        c.serve([("matmul", 1, table)], wait_agents=60)
        c.agents(c.worker_addresses["matmul"][0], models)
        c.wait_ready(1)
        s = Soak(c)
        rss_start = rss_kb(c.server.pid)
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as ex:
            assert all(ex.map(s.worker, range(CLIENTS)))
        elapsed = time.time() - t0
        died = c.server.poll()
        if died is not None:
            time.sleep(1)
        check("server alive after the soak", died is None and rss_kb(c.server.pid) > 0,
              "exit %s; log:\n%s" % (died, c.log(c.server)[-20000:]))
        if died is not None or rss_kb(c.server.pid) == 0:
            print("%d passed, %d failed" % (sum(results), len(results) - sum(results)))
            return 1
        rss_end = rss_kb(c.server.pid)
        rss_warm = s.rss.get("warmup", rss_end)
        print("requests %d in %.1f s (%.0f/s), per kind: %s" % (
            s.done, elapsed, s.done / elapsed, ", ".join("%s %d" % kv for kv in s.counts.items())))
        print("server RSS: start %.1f MB, after %d requests %.1f MB, after %d requests %.1f MB" % (
            rss_start / 1024, WARMUP, rss_warm / 1024, s.done, rss_end / 1024))
        answered = sum(s.counts.values())  # a client-side exception is not an answer
        check("every request answered", answered == TOTAL, "%d of %d" % (answered, TOTAL))
        check("0 lost replies", not s.lost, "%d lost, first: %s" % (len(s.lost), s.lost[:3]))
        check("0 wrong answers", not s.wrong, "%d wrong, first: %s" % (len(s.wrong), s.wrong[:3]))
        # flat after warm-up: 18,000 more requests may not cost more than small noise
        allow_kb = max(4096, rss_warm // 20) if not SANITIZED else max(24576, rss_warm // 10)
        check("server RSS flat after warm-up", rss_end - rss_warm <= allow_kb,
              "grew %d kB (allowed %d kB)" % (rss_end - rss_warm, allow_kb))
        # still serving correctly afterwards
        r = s.grpc_call(s.channels[0], {"x": np.ones((ROWS, K), np.float32)})
        check("a valid request after the soak", isinstance(r, list) and (r[0]["y"] == -0.5 * K).all(), str(r)[:200])

        # SIGTERM to the server: exit 0, no leak or other sanitizer report
        c.server.send_signal(signal.SIGTERM)
        try:
            code = c.server.wait(timeout=60)
        except Exception:
            code = "no exit within 60 s"
        log = c.log(c.server)
        check("server exits 0 on SIGTERM", code == 0, "exit %s; log tail:\n%s" % (code, log[-3000:]))
        m = SAN_RE.search(log)
        check("no sanitizer report from the server", not m, log[m.start() - 200:m.start() + 3000] if m else
              ("(LeakSanitizer on)" if SANITIZED else "(not a sanitizer build)"))
        c.stop()
        for name in os.listdir(c.dir):
            if name.startswith("agents") and name.endswith(".log"):
                alog = open(os.path.join(c.dir, name)).read()
                m = SAN_RE.search(alog)
                check("no sanitizer report from %s" % name, not m, alog[max(0, m.start() - 200):m.start() + 3000] if m else "")
    passed = sum(results)
    print("%d passed, %d failed" % (passed, len(results) - passed))
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        print("0 passed, 1 failed")
        sys.exit(1)
