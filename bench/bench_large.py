#!/usr/bin/python3
"""Large tensors through serve, every path side by side in one run (bench/run_large.sh).

  bench_large.py BUILD_DIR [--sizes 1,16,64,256] [--rounds N] [--grpc-max-mib 256]

One 1-rank Neg servable per size (x, y float32 [rows, 1024]), served by one `shardserve serve` +
`shardserve agents` (tests/serving/cluster.py). A round times, interleaved, each of:
  MindSpore gRPC   shardserve bench --protocol grpc (the C client library)
  KServe gRPC      shardserve bench --protocol kserve-grpc
  KServe REST bin  a minimal HTTP/1.1 client here (one keep-alive socket; the tensor sent from and
                   the reply received into buffers made once), so the column measures the server
  KServe shm       the same client; x and y in POSIX shm regions registered once, the request and
                   the reply only JSON (y checked against -x)
  C client shm     shardserve bench --protocol kserve-rest --shm --output y (the C client library
                   with its own region: x written once, y written there by the server)
and, as floors in the same rounds: raw loopback TCP (bench_tcp_echo: the same bytes both ways),
memcpy of the tensor (numpy copyto between touched buffers), and the Neg itself
(`shardserve run --repeat`, the model alone in one process). A cell is the median over rounds of
each round's median; ratios are against raw TCP (REST) and against the Neg (shm).
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "serving"))
sys.path.insert(0, HERE)

from bench_serving import neg_model  # noqa: E402

A = None
SS = None
COLS = 1024


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- a minimal HTTP/1.1 client
class Http:
    """One keep-alive connection; replies are read into a buffer that grows once."""

    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(1 << 16)

    def _head(self):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        return status, headers, rest

    def post(self, path, parts, headers=()):
        total = sum(len(p) for p in parts)
        head = "POST %s HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n" % (path, total)
        head += "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
        self.s.sendall(head.encode())
        for p in parts:
            self.s.sendall(p)
        status, hdrs, rest = self._head()
        n = int(hdrs.get("content-length", "0"))
        if len(self.buf) < n:
            self.buf = bytearray(n)
        view = memoryview(self.buf)
        view[:len(rest)] = rest
        got = len(rest)
        while got < n:
            r = self.s.recv_into(view[got:n])
            if not r:
                raise RuntimeError("connection closed mid-reply")
            got += r
        return status, hdrs, view[:n]

    def close(self):
        self.s.close()


def rest_binary_once(h, x, shape):
    hdr = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(shape),
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    status, hdrs, body = h.post("/v2/models/neg/infer", [hdr, memoryview(x).cast("B")],
                                [("Inference-Header-Content-Length", len(hdr)),
                                 ("Content-Type", "application/octet-stream")])
    if status != 200:
        raise RuntimeError("REST binary: %d %s" % (status, bytes(body[:300])))
    jlen = int(hdrs["inference-header-content-length"])
    y = np.frombuffer(body[jlen:], np.float32)
    if y.size != x.size or y[0] != -x.flat[0] or y[-1] != -x.flat[-1]:
        raise RuntimeError("REST binary: wrong reply")


class Shm:
    """Input and output regions, made and registered once per size."""

    def __init__(self, h, nbytes, tag):
        import mmap
        self.keys, self.maps, self.names = [], [], []
        arrays = []
        for role in ("in", "out"):
            key = "/ss-bench-large-%s-%s-%d" % (tag, role, os.getpid())
            fd = os.open("/dev/shm" + key, os.O_CREAT | os.O_RDWR, 0o600)
            os.ftruncate(fd, nbytes)
            m = mmap.mmap(fd, nbytes)
            os.close(fd)
            self.keys.append(key)
            self.maps.append(m)
            name = "%s-%s" % (role, tag)
            self.names.append(name)
            body = json.dumps({"key": key, "offset": 0, "byte_size": nbytes}).encode()
            status, _, text = h.post("/v2/systemsharedmemory/region/%s/register" % name, [body])
            if status != 200:
                raise RuntimeError("register %s: %s" % (name, bytes(text)))
            arrays.append(np.frombuffer(m, np.float32))
        self.x, self.y = arrays

    def close(self, h):
        for name in self.names:
            h.post("/v2/systemsharedmemory/region/%s/unregister" % name, [b""])
        self.x = self.y = None
        for m, key in zip(self.maps, self.keys):
            m.close()
            os.unlink("/dev/shm" + key)


def shm_once(h, shm, shape):
    n = shm.x.nbytes
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(shape), "parameters": {
        "shared_memory_region": shm.names[0], "shared_memory_offset": 0, "shared_memory_byte_size": n}}],
        "outputs": [{"name": "y", "parameters": {"shared_memory_region": shm.names[1],
                                                 "shared_memory_offset": 0, "shared_memory_byte_size": n}}]})
    status, _, text = h.post("/v2/models/neg/infer", [body.encode()], [("Content-Type", "application/json")])
    if status != 200:
        raise RuntimeError("shm: %d %s" % (status, bytes(text[:300])))
    if shm.y[0] != -shm.x[0] or shm.y[-1] != -shm.x[-1]:
        raise RuntimeError("shm: y is not -x")


def timed(fn, n):
    fn()  # warm-up
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


# ---------------------------------------------------------------- the other paths
def ss_bench(address, protocol, x_path, n, extra=()):
    cmd = [SS, "bench", "--address", address, "--servable", "neg", "--method", "predict", "--json",
           "--concurrency", "1", "--protocol", protocol, "--warmup", "1", "--requests", str(n),
           "--input", "x=" + x_path] + list(extra)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError("%s: %s" % (" ".join(cmd), out.stderr[-2000:]))
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["failures"]:
        raise RuntimeError("%s: %d failures: %s" % (" ".join(cmd), r["failures"], out.stderr[-2000:]))
    return r["p50_us"] / 1e6


def neg_run(model, x_path, n):
    out = subprocess.run([SS, "run", model, "--input", "x=" + x_path, "--repeat", str(n)],
                         capture_output=True, text=True, timeout=1800, check=True)
    return float(re.search(r"median ([0-9.]+) us", out.stdout).group(1)) / 1e6


def memcpy_time(nbytes, n):
    a = np.ones(nbytes // 4, np.float32)
    b = np.zeros_like(a)
    return timed(lambda: np.copyto(b, a), n)


def tcp_time(mib, n):
    out = subprocess.run([os.path.join(A.build, "bench", "bench_tcp_echo"), str(mib), str(max(3, n))],
                         capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.splitlines()[-1])["median_s"]


def start(model, work, tag):
    from cluster import Cluster
    c = Cluster()
    try:
        models = c.add_servable("neg", model, 1)
        mb = str(max(64, min(512, 2 * A.max_size + 16)))
        c.serve([("neg", 1, c.write_rank_table(1))], wait_agents=120,
                extra=("--grpc-max-msg-mb", mb, "--rest-max-msg-mb", mb, "--request-timeout-ms", "600000",
                       "--rest-read-timeout-s", "3600",
                       "--heartbeat-timeout-ms", "60000"))
        c.agents(c.worker_addresses["neg"][0], models)
        c.wait_ready(timeout=120)
        return c
    except Exception:
        for p in c.procs:
            log("--- %s\n%s" % (p.logname, c.log(p)[-3000:]))
        c.close()
        raise


PATHS = ["MindSpore gRPC", "KServe gRPC", "KServe REST binary", "KServe shm", "C client shm"]


def measure_size(mib, work):
    rows = mib * 1048576 // 4 // COLS
    shape = (rows, COLS)
    model = os.path.join(work, "neg%d.onnx" % mib)
    neg_model(model, rows, COLS)
    x = np.random.default_rng(mib).uniform(-1, 1, shape).astype(np.float32)
    x_path = os.path.join(work, "x%d.npy" % mib)
    np.save(x_path, x)
    n = max(2, 32 // mib)
    c = start(model, work, str(mib))
    res = {p: [] for p in PATHS + ["raw TCP", "memcpy", "Neg (shardserve run)"]}
    h = Http(c.rest)
    shm = Shm(h, x.nbytes, str(mib))
    shm.x[:] = x.ravel()
    try:
        for rnd in range(A.rounds):
            if mib <= A.grpc_max_mib:
                res["MindSpore gRPC"].append(ss_bench(c.grpc, "grpc", x_path, n))
                res["KServe gRPC"].append(ss_bench(c.grpc, "kserve-grpc", x_path, n))
            res["KServe REST binary"].append(timed(lambda: rest_binary_once(h, x, shape), n))
            res["KServe shm"].append(timed(lambda: shm_once(h, shm, shape), n))
            res["C client shm"].append(ss_bench(c.rest, "kserve-rest", x_path, n, [
                "--shm", "--output", "y", "--shm-output-size", str(x.nbytes)]))
            res["raw TCP"].append(tcp_time(mib, n))
            res["memcpy"].append(memcpy_time(x.nbytes, n))
            res["Neg (shardserve run)"].append(neg_run(model, x_path, max(5, n + 1)))
            log("large %d MiB round %d: %s" % (mib, rnd, ", ".join(
                "%s %.1f ms" % (k, v[-1] * 1e3) for k, v in res.items() if v)))
    finally:
        shm.close(h)
        h.close()
        c.close()
    out = {k: statistics.median(v) if v else None for k, v in res.items()}
    # ratios within each round, then their median: the load on shared cores moves between rounds
    out["rest_vs_tcp"] = statistics.median(t / r for t, r in zip(res["raw TCP"], res["KServe REST binary"]))
    out["shm_vs_neg"] = statistics.median(s / n for s, n in zip(res["KServe shm"], res["Neg (shardserve run)"]))
    return out


def cpu_line():
    model = "?"
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
           if f in flags]
    return "- CPU: %s, %d cores visible; ISA: %s" % (model, os.cpu_count(), " ".join(isa))


def ms(t):
    return "-" if t is None else "%.1f" % (t * 1e3)


def main():
    global A, SS
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--sizes", default="1,16,64,256")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--grpc-max-mib", type=int, default=256,
                    help="gRPC columns only up to this size (libgrpc grows faster than linearly)")
    A = ap.parse_args()
    A.build = os.path.abspath(A.build)
    sizes = [int(s) for s in A.sizes.split(",")]
    A.max_size = max(sizes)
    SS = os.path.join(A.build, "src", "cli", "shardserve")
    os.environ["SHARDSERVE"] = SS
    os.environ.update({"no_proxy": "*", "http_proxy": "", "https_proxy": ""})
    print(cpu_line())
    print("- load average at start: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    print("- 1-rank Neg servable, x and y float32 [rows, 1024]; medians over %d rounds (each the median "
          "of max(2, 32/MiB) requests after one warm-up), paths interleaved within a round" % A.rounds)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ss-bench-large-") as work:
        for mib in sizes:
            results[mib] = measure_size(mib, work)
    print()
    print("| MiB | raw TCP ms | memcpy ms | Neg ms | MindSpore gRPC ms | KServe gRPC ms | KServe REST binary ms "
          "| KServe shm ms | C client shm ms | REST binary vs TCP | shm / Neg |")
    print("|" + "---|" * 11)
    for mib in sizes:
        r = results[mib]
        t = r["raw TCP"]
        print("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %.2fx |" % (
            mib, ms(t), ms(r["memcpy"]), ms(r["Neg (shardserve run)"]), ms(r["MindSpore gRPC"]),
            ms(r["KServe gRPC"]), ms(r["KServe REST binary"]), ms(r["KServe shm"]), ms(r["C client shm"]),
            100 * r["rest_vs_tcp"], r["shm_vs_neg"]))
    print()
    print("Round trip times (request sent -> reply received; the same bytes go both ways). "
          "'REST binary vs TCP' = raw TCP time / REST binary time (target >= 50% at 64 MiB); "
          "'shm / Neg' = shm round trip / the Neg's own time (target <= 1.5x at 64 MiB); both ratios are "
          "the median of each round's own ratio.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
