"""A real shardserve deployment for tests: models made with onnx.helper, split with
`shardserve shard`, a servable folder and rank table written to a temporary folder, then
`shardserve serve` and `shardserve agents` started as users start them, on 127.0.0.1 with ports
picked by the OS. Everything started here is stopped again on success, on failure and on an
exception (and dies with the test process: PR_SET_PDEATHSIG, set by setpriv before it execs)."""

import faulthandler
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHARDSERVE = os.environ.get("SHARDSERVE", "shardserve")
_started_pids = set()  # every process a Cluster started, for leftover_shm()

# children start through DIE_WITH_PARENT (see there); tests/ goes last, shadowing nothing
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from server_harness import DIE_WITH_PARENT  # noqa: E402


def matmul_neg_model(path, w_value=0.5, rows=128, k=96, n=16, batch_dim=None):
    """y = Neg(MatMul(x[rows,k], W = w_value)): the seed model (or a batched variant)."""
    w = numpy_helper.from_array(np.full((k, n), w_value, dtype=np.float32), name="W")
    x_shape = [batch_dim or rows, k]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
         helper.make_node("Neg", ["xw"], ["y"], name="neg")],
        "matmul_neg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x_shape[0], n])], initializer=[w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save_model(m, path)


def rank_table(n, ip="127.0.0.1"):
    return {"version": "1.0", "server_count": "1", "status": "completed",
            "server_list": [{"server_id": ip, "host_nic_ip": "reserve",
                             "device": [{"device_id": str(i % 8), "device_ip": "192.1.27.%d" % i,
                                         "rank_id": str(i)} for i in range(n)]}]}


class Cluster:
    """One servable (possibly several versions) served by one `shardserve serve`."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ss-serving-")
        self.procs = []
        self.servables = os.path.join(self.dir, "servables")
        os.makedirs(self.servables)
        self.grpc = self.rest = None
        self.worker_addresses = {}

    # ---------------------------------------------------------------- setup
    def add_servable(self, name, model_path, ranks, stages=1, strategy="auto", with_batch_dim=False,
                     methods=None, extra=None, input_shapes=(), shard_args=()):
        sv = os.path.join(self.servables, name)
        os.makedirs(sv, exist_ok=True)
        cfg = {"distributed": {"rank_size": ranks, "stage_size": stages,
                               "with_batch_dim": with_batch_dim},
               "methods": methods or [{"name": "predict", "inputs": ["x"], "outputs": ["y"]}]}
        cfg.update(extra or {})
        with open(os.path.join(sv, "servable.json"), "w") as f:
            json.dump(cfg, f)
        return self.shard(model_path, name, ranks, stages, strategy, input_shapes, shard_args)

    def shard(self, model_path, tag, ranks, stages=1, strategy="auto", input_shapes=(), shard_args=()):
        out = os.path.join(self.dir, "shards-" + tag)
        cmd = [SHARDSERVE, "shard", model_path, "--ranks", str(ranks), "--stages", str(stages),
               "--strategy", strategy, "--out", out, "--quiet"]
        for s in input_shapes:
            cmd += ["--input-shape", s]
        cmd += list(shard_args)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        base = os.path.splitext(os.path.basename(model_path))[0]
        return [os.path.join(out, "device%d" % i, base + ".onnx") for i in range(ranks)]

    def write_rank_table(self, n, name="rank_table.json", table=None):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            json.dump(table or rank_table(n), f)
        return path

    # ---------------------------------------------------------------- processes
    def _spawn(self, args, log, env=None):
        logf = open(os.path.join(self.dir, log), "w+")
        p = subprocess.Popen(DIE_WITH_PARENT + list(args), stdout=logf, stderr=subprocess.STDOUT,
                             cwd=self.dir, env=dict(os.environ, **env) if env else None)
        p.argv = list(args)
        p.logf = logf
        p.logname = log
        self.procs.append(p)
        _started_pids.add(p.pid)
        return p

    def log(self, p):
        p.logf.flush()
        with open(os.path.join(self.dir, p.logname)) as f:
            return f.read()

    def stacks(self, p):
        """Every thread's stack of a live process (gdb), for a test that finds it hung."""
        try:
            r = subprocess.run(["gdb", "-p", str(p.pid), "-batch", "-ex", "thread apply all bt"],
                               capture_output=True, text=True, timeout=120)
            return "\n".join(line for line in r.stdout.splitlines() if line.startswith(("Thread", "#")))
        except (OSError, subprocess.TimeoutExpired) as e:
            return "(no stacks: %s)" % e

    def wait_log(self, p, pattern, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.log(p))
            if m:
                return m
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("no %r in the log of %s (exit %s):\n%s" % (pattern, p.argv[:2], p.poll(), self.log(p)))

    def serve(self, groups, wait_agents=60, extra=(), rest=True, expect_ready=True):
        """groups: list of (servable, version, rank_table_path)."""
        args = [SHARDSERVE, "serve", "--servable-dir", self.servables, "--grpc", "127.0.0.1:0"]
        if rest:
            args += ["--rest", "127.0.0.1:0"]
        for g in groups:  # (servable, version, rank table[, distributed address])
            name, version, table = g[:3]
            address = g[3] if len(g) > 3 else "127.0.0.1:0"
            args += ["--servable", name, "--version", str(version), "--rank-table", table,
                     "--distributed-address", address, "--wait-agents", str(wait_agents)]
        args += list(extra)
        self.server = self._spawn(args, "serve.log")
        if not expect_ready:
            return self.server
        m = self.wait_log(self.server, r"(?m)^Serving: Serving gRPC server start success, listening on (\S+)")
        self.grpc = m.group(1)
        if rest:
            self.rest = self.wait_log(self.server, r"(?m)^Serving: Serving RESTful server start success, listening on (\S+)").group(1)
        self.worker_addresses = {}
        for m in re.finditer(r"servable (\S+) waiting for agents on (\S+)", self.log(self.server)):
            self.worker_addresses.setdefault(m.group(1), []).append(m.group(2))
        return self.server

    def agents(self, address, models, extra=(), log=None, env=None):
        args = [SHARDSERVE, "agents", "--distributed-address", address, "--model-files", ",".join(models)]
        args += list(extra)
        return self._spawn(args, log or "agents-%d.log" % len(self.procs), env)

    def wait_ready(self, count=1, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.log(self.server).count(" is ready") >= count:
                return
            if self.server.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("server not ready:\n" + self.log(self.server) + "".join(
            "\n--- %s\n%s" % (p.logname, self.log(p)) for p in self.procs[1:]))

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.logf.close()
        self.procs = []

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def children(pid):
    """The child processes of pid (e.g. the rank processes of a `shardserve agents` launcher)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def rest_json(c, method, path, body=None, timeout=60):
    """One REST call to serve (c.rest): (status, the JSON answer or None), errors included."""
    req = urllib.request.Request("http://%s%s" % (c.rest, path), data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def leftover_shm():
    """The /dev/shm segments (shardserve-agents-PID-GENERATION) still there of the `shardserve
    agents` launchers this test started. Segments of other launchers (another test running at
    the same time, a run killed earlier on this machine) are not this test's to judge."""
    left = []
    for f in os.listdir("/dev/shm"):
        m = re.match(r"shardserve-agents-(\d+)-\d+$", f)
        if m and int(m.group(1)) in _started_pids:
            left.append(f)
    return left


def run_cases(cases, only=()):
    """Run test functions in order, print ok/FAIL per case and the closing "N passed, N failed"
    line; returns the process exit status (non-zero if any failed or none ran). `only` names the
    cases to run (default: all); a name with a leading '-' leaves that case out instead."""
    skip = [n[1:] for n in only if n.startswith("-")]
    pick = [n for n in only if not n.startswith("-")]
    unknown = sorted(set(skip + pick) - {case.__name__ for case in cases})
    if unknown:  # a renamed case would otherwise run everywhere (or nowhere) without a word
        print("no such case: %s" % ", ".join(unknown))
        print("0 passed, 1 failed")
        return 1
    passed = failed = 0
    # A case that hangs prints every thread's Python stack and ends the test after this many
    # seconds (the slowest case takes ~13 s under ASan), instead of a silent CTest timeout.
    # SS_CASE_TIMEOUT_S=0 turns it off (e.g. a case stopped in a debugger): faulthandler refuses a
    # timeout <= 0 with a ValueError, which would end run_cases before its first case.
    case_timeout = float(os.environ.get("SS_CASE_TIMEOUT_S") or "180")
    for case in cases:
        if (pick and case.__name__ not in pick) or case.__name__ in skip:
            continue
        t0 = time.time()
        if case_timeout > 0:
            faulthandler.dump_traceback_later(case_timeout, exit=True)
        try:
            case()
            passed += 1
            print("ok   %s (%.1f s)" % (case.__name__, time.time() - t0), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s (%.1f s)" % (case.__name__, time.time() - t0), flush=True)
            traceback.print_exc()
        finally:
            faulthandler.cancel_dump_traceback_later()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0
