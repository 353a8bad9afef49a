#!/usr/bin/python3
"""GET /metrics of a real `shardserve serve` + `shardserve agents` (tests/serving/cluster.py) after
known traffic: every scrape parses with the strict parser (test_metrics_format.py), and the values
match what was sent: requests by outcome, latency histograms' counts, batch sizes, in-flight
requests back to 0, ranks up with fresh heartbeats, link bytes at least the tensor bytes moved,
collective bytes at least the inputs broadcast;
slow requests are logged with their request_id by the worker and the agents (DEBUG); when the
agents stop, every rank reads down."""

import json
import os
import re
import signal
import sys
import time
import traceback
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "serving"))
sys.path.insert(0, HERE)
from cluster import Cluster, matmul_neg_model  # noqa: E402
from shardserve_client import Client  # noqa: E402
from test_metrics_format import parse, value  # noqa: E402


def scrape(c):
    with urllib.request.urlopen("http://%s/metrics" % c.rest, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers["Content-Type"]
        return parse(r.read().decode())


def rest_predict(c, body):
    req = urllib.request.Request("http://%s/model/mm:predict" % c.rest, data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    failed = 0
    os.environ["SHARDSERVE_SLOW_REQUEST_MS"] = "0"  # every request is "slow": its log line is checked
    with Cluster() as c:
        try:
            model = os.path.join(c.dir, "matmul.onnx")
            matmul_neg_model(model)  # x[128,96] @ W[96,16] (0.5), negated
            models = c.add_servable("mm", model, 2)
            c.serve([("mm", 1, c.write_rank_table(2))], wait_agents=60)
            os.environ["SHARDSERVE_LOG"] = "debug"  # the agents log request_id timings at DEBUG
            agents = c.agents(c.worker_addresses["mm"][0], models)
            del os.environ["SHARDSERVE_LOG"]
            c.wait_ready()

            fams = scrape(c)
            for r in (0, 1):
                check(value(fams, "shardserve_rank_up", servable="mm", rank=r) == 1, "rank %d up" % r)
                age = value(fams, "shardserve_rank_heartbeat_age_seconds", servable="mm", rank=r)
                check(age is not None and 0 <= age < 5, "rank %d heartbeat age %r" % (r, age))
            print("ok   ranks up with fresh heartbeats before any request")

            client = Client(c.grpc, "mm", "predict")
            x = np.ones((128, 96), np.float32)
            n_ok = 7
            for _ in range(n_ok):
                y = client.infer({"x": x})
                check(np.allclose(y[0]["y"], -48.0), "result")
            bad = client.infer({"x": np.ones((3, 3), np.float32)})  # wrong size: invalid_inputs
            check("error" in bad[0] if isinstance(bad, list) else "error" in bad, "bad input answered with an error")
            r = rest_predict(c, {"instances": [{"x": x.tolist()}]})
            check("instances" in r, "REST predict: %r" % r)
            n_ok += 1
            r = rest_predict(c, {"instances": [{"nope": 1.0}]})
            check("error_msg" in r, "REST bad input")

            fams = scrape(c)
            lv = dict(servable="mm", version=1, method="predict")
            got_ok = value(fams, "shardserve_requests_total", outcome="ok", **lv)
            check(got_ok == n_ok, "requests ok: %r, sent %d" % (got_ok, n_ok))
            got_bad = value(fams, "shardserve_requests_total", outcome="invalid_inputs", **lv)
            check(got_bad == 2, "requests invalid_inputs: %r, sent 2" % got_bad)
            check(value(fams, "shardserve_request_duration_seconds_count", **lv) == n_ok + 1,
                  "total latency count (ok + the instance-level invalid one)")
            check(value(fams, "shardserve_request_queue_seconds_count", **lv) == n_ok, "queue latency count")
            check(value(fams, "shardserve_request_compute_seconds_count", **lv) == n_ok, "compute latency count")
            s_total = value(fams, "shardserve_request_duration_seconds_sum", **lv)
            s_comp = value(fams, "shardserve_request_compute_seconds_sum", **lv)
            check(0 < s_comp <= s_total < 60, "compute %r <= total %r" % (s_comp, s_total))
            check(value(fams, "shardserve_batch_size_count", servable="mm", version=1) == n_ok, "batches")
            check(value(fams, "shardserve_batch_size_bucket", servable="mm", version=1, le=1) == n_ok,
                  "every batch holds 1 instance")
            check(value(fams, "shardserve_inflight_requests", servable="mm", version=1) == 0, "in flight back to 0")
            check(value(fams, "shardserve_queued_instances", servable="mm", version=1) == 0, "queue empty")
            # rank 0 gets the input (128*96*4 bytes) of each request, rank 1 (the last) sends the output back
            in_bytes, out_bytes = 128 * 96 * 4, 128 * 16 * 4
            sent0 = value(fams, "shardserve_link_sent_bytes_total", servable="mm", rank=0)
            recv1 = value(fams, "shardserve_link_received_bytes_total", servable="mm", rank=1)
            check(sent0 >= n_ok * in_bytes, "link bytes to rank 0: %r < %d" % (sent0, n_ok * in_bytes))
            check(sent0 < n_ok * in_bytes * 1.5 + 1e6, "link bytes to rank 0: %r, too many" % sent0)
            check(recv1 >= n_ok * out_bytes, "link bytes from rank 1: %r" % recv1)
            # rank 1 takes its inputs by rank 0's broadcast (the default), not over the link
            sent1 = value(fams, "shardserve_link_sent_bytes_total", servable="mm", rank=1)
            check(sent1 < n_ok * in_bytes / 4, "link bytes to rank 1: %r, the inputs went over the link" % sent1)
            # the last rank reports its collective bytes with its answers, the others (which answer
            # only failures) with their heartbeat answers: within a heartbeat period or two
            deadline, colls = time.time() + 10, {}
            while time.time() < deadline:
                f2 = scrape(c)
                colls = {r: value(f2, "shardserve_collective_bytes_total", servable="mm", rank=r) for r in (0, 1)}
                if all(v is not None and v >= n_ok * in_bytes for v in colls.values()):
                    break
                time.sleep(0.2)
            check(all(v is not None and v >= n_ok * in_bytes for v in colls.values()), "collective bytes %r" % colls)
            # only the last rank answers a request that went well: rank 0's answers are heartbeats
            recv0 = value(fams, "shardserve_link_received_bytes_total", servable="mm", rank=0)
            check(recv0 < n_ok * 100 + 20000, "link bytes from rank 0: %r, it answered every request" % recv0)
            print("ok   values after %d ok and 2 invalid requests (gRPC and REST)" % n_ok)

            log = c.log(c.server)
            check(log.count("slow request: method predict") >= n_ok, "slow-request lines in the worker log")
            ids = [int(m) for m in re.findall(r"slow request: .*request_id (\d+)", log)]
            check(len(set(i for i in ids if i)) == n_ok, "one request_id per dispatched request: %r" % ids)
            alog = c.log(agents)
            for i in set(ids) - {0}:
                check(alog.count("request_id %d: waited" % i) == 2, "both ranks log request_id %d:\n%s" % (i, alog[-3000:]))
            print("ok   slow requests logged with their request_id by the worker and both agents")

            # agents stop: every rank reads down
            agents.send_signal(signal.SIGTERM)
            agents.wait(timeout=30)
            deadline = time.time() + 20
            while time.time() < deadline:
                fams = scrape(c)
                if all(value(fams, "shardserve_rank_up", servable="mm", rank=r) == 0 for r in (0, 1)):
                    break
                time.sleep(0.2)
            check(all(value(fams, "shardserve_rank_up", servable="mm", rank=r) == 0 for r in (0, 1)), "ranks down")
            print("ok   ranks down once the agents stop")
        except Exception:
            traceback.print_exc()
            for p in c.procs:
                print("--- %s\n%s" % (p.logname, c.log(p)[-4000:]))
            failed += 1
    print("%d failed" % failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
