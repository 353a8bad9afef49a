#!/usr/bin/python3
"""A client that shrinks (ftruncate) its shared-memory object must cost only its own request.

Before the guard (src/link/shm_guard.c) a shrink while the agent read an input or wrote an output
in the mapped region killed the agent with SIGBUS. The model here runs a long MatMul chain on `s`
and only then reads `x` and writes `y` (y = s @ I @ ... @ I + x), so a shrink a little after the
request starts can land while the agent computes; a shrink while the agent is held (SIGSTOP) with
the request waiting for it lands inside the request every time. Either way the request fails with
an error naming the object, serve and the agent stay up, and after the client grows the object back
the same regions answer again. A shrink before the request is refused up front, naming the
region."""

import json
import os
import signal
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, rest_json, run_cases  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
import onnx  # noqa: E402

WORK = __import__("tempfile").mkdtemp(prefix="ss-kserve-shrink-")
MODEL = os.path.join(WORK, "chain.onnx")
ROWS, COLS, CHAIN = 1024, 512, 12
NBYTES = ROWS * COLS * 4
KEYS = []


def chain_model(path):
    eye = numpy_helper.from_array(np.eye(COLS, dtype=np.float32), name="I")
    nodes, prev = [], "s"
    for i in range(CHAIN):
        nodes.append(helper.make_node("MatMul", [prev, "I"], ["m%d" % i]))
        prev = "m%d" % i
    nodes.append(helper.make_node("Add", [prev, "x"], ["y"]))
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [ROWS, COLS]) for n in "sxy"]
    g = helper.make_graph(nodes, "chain", info[:2], info[2:], initializer=[eye])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save_model(m, path)


chain_model(MODEL)


def http(c, method, path, body=None):
    return rest_json(c, method, path, body, timeout=120)


def region(c, name):
    """A registered region `name` over a fresh POSIX shm object of NBYTES; its file path."""
    key = "/ss-test-shrink-%s-%d" % (name, os.getpid())
    path = "/dev/shm" + key
    with open(path, "wb") as f:
        f.truncate(NBYTES)
    KEYS.append(path)
    st, body = http(c, "POST", "/v2/systemsharedmemory/region/%s/register" % name,
                    json.dumps({"key": key, "offset": 0, "byte_size": NBYTES}).encode())
    assert st == 200, body
    return path


def fill(path, arr):
    with open(path, "r+b") as f:
        f.truncate(NBYTES)  # grown back to full size when a case shrank it
        f.write(arr.tobytes())


def shrink(path, size=0):
    with open(path, "r+b") as f:
        f.truncate(size)


def infer(c):
    shm = lambda r: {"shared_memory_region": r, "shared_memory_byte_size": NBYTES}  # noqa: E731
    body = {"inputs": [{"name": n, "datatype": "FP32", "shape": [ROWS, COLS], "parameters": shm(n)}
                       for n in ("s", "x")],
            "outputs": [{"name": "y", "parameters": shm("y")}]}
    return http(c, "POST", "/v2/models/chain/infer", json.dumps(body).encode())


def rank_pids(c):
    """The agent processes (children of `shardserve agents`)."""
    pids = []
    for p in c.procs[1:]:
        with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
            pids += [int(x) for x in f.read().split()]
    return [pid for pid in pids if _running(pid)]


def _running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def logs(c):
    return "".join("\n--- %s\n%s" % (p.logname, c.log(p)[-3000:]) for p in c.procs)


def alive(c, ranks):
    for p in c.procs:
        assert p.poll() is None, "%s exited with %s:%s" % (p.argv[:2], p.returncode, logs(c))
    assert rank_pids(c) == ranks, "an agent died (%s, now %s):%s" % (ranks, rank_pids(c), logs(c))


def answers_right(c, paths, s, x):
    fill(paths["s"], s)
    fill(paths["x"], x)
    fill(paths["y"], np.zeros_like(x))
    st, body = infer(c)
    assert st == 200, (st, body)
    with open(paths["y"], "rb") as f:
        y = np.frombuffer(f.read(), np.float32).reshape(ROWS, COLS)
    assert np.allclose(y, s + x), "y != s + x"


def shrink_during(c, path, delay, stopped=()):
    """Shrink `path` `delay` seconds into a request; the request's answer. With `stopped` (agent
    pids) the agents are held (SIGSTOP) from before the request until after the shrink, so the
    shrink surely lands after serve accepted the request and before the agent is done with it."""
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=infer(c)))
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        t.start()
        time.sleep(delay)
        shrink(path)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    t.join(120)
    assert "r" in answer, "no answer to a request whose region was shrunk"
    return answer["r"]


def check_shrunk_answer(c, paths, name, st, body):
    """A 400 naming the object and the region, and saying what happened to it: shrunk (serve or
    the agent's guard saw it go) or found empty (the agent mapped it after the shrink)."""
    key = os.path.basename(paths[name])
    e = body.get("error", "")
    assert st == 400 and key in e and "region '%s'" % name in e \
        and ("shrunk" in e or "holds 0 bytes" in e), (st, body, logs(c))


def check_shrink_midway(c, paths, name, s, x, period, ranks):
    """Shrinks `name`'s object inside a request. First with the agent held (SIGSTOP) while the
    request waits for it: the shrink lands inside the request every time. Then while the agent
    computes, a few tries at growing delays: whether one lands inside the computation (the
    agent's SIGBUS guard) rather than after it is the OS's timing, so those tries check only that
    every answer is right (200) or a clear error naming the region, and nothing dies."""
    answers_right(c, paths, s, x)
    st, body = shrink_during(c, paths[name], 0.5, stopped=ranks)
    print("shrink %s while the agent is held: %s %s" % (name, st, body), flush=True)
    check_shrunk_answer(c, paths, name, st, body)
    alive(c, ranks)
    for attempt in range(6):
        answers_right(c, paths, s, x)
        share = 0.1 + 0.15 * attempt
        st, body = shrink_during(c, paths[name], period * share)
        alive(c, ranks)
        print("shrink %s after %.0f%%: %s %s" % (name, 100 * share, st, body), flush=True)
        if st == 200:
            continue  # the request was done before the shrink: nothing to prove here
        check_shrunk_answer(c, paths, name, st, body)
        if "while the request used it" in body["error"]:
            break
    answers_right(c, paths, s, x)  # the same regions, grown back, answer again
    alive(c, ranks)


def test_shrink_before_and_during_requests():
    with Cluster() as c:
        methods = [{"name": "predict", "inputs": ["s", "x"], "outputs": ["y"]}]
        models = c.add_servable("chain", MODEL, 1, methods=methods)
        c.serve([("chain", 1, c.write_rank_table(1))], wait_agents=60)
        c.agents(c.worker_addresses["chain"][0], models)
        c.wait_ready()
        paths = {n: region(c, n) for n in ("s", "x", "y")}
        rng = np.random.default_rng(1)
        s = rng.uniform(-1, 1, (ROWS, COLS)).astype(np.float32)
        x = rng.uniform(-1, 1, (ROWS, COLS)).astype(np.float32)
        answers_right(c, paths, s, x)  # warms the agent's mappings up
        t0 = time.time()
        st, body = infer(c)
        period = time.time() - t0
        assert st == 200, (st, body)
        print("one request: %.0f ms" % (period * 1e3))
        ranks = rank_pids(c)
        assert ranks, "no agent processes found"
        # shrunk before the request: refused up front, naming the region
        shrink(paths["x"], NBYTES // 2)
        st, body = infer(c)
        assert st == 400 and "'x'" in body["error"] and "shrunk" in body["error"], (st, body)
        alive(c, ranks)
        answers_right(c, paths, s, x)
        for name in ("x", "y"):
            check_shrink_midway(c, paths, name, s, x, period, ranks)


def main():
    try:
        return run_cases([test_shrink_before_and_during_requests], sys.argv[1:])
    finally:
        for path in KEYS:
            if os.path.exists(path):
                os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
