#!/usr/bin/python3
"""Requests whose data asks for too much: one servable, served whole (1 agent) and split over 2
agents, of a model with a while-Loop (x <- x * scale while sum(x) < 100) and a HannWindow whose
length is an input.

- scale = 1 never ends the loop. The worker gives up at the request timeout (3 s here) and tells
  the agents so in every PREDICT; the agents stop the run there. The next request is answered at
  once (before, the agent kept looping and every later request timed out too). Split over 2
  agents, the ranks leave the group (they may have stopped at different iterations) and the
  launcher starts it again at once; then it answers. Three such requests in a row do not use up
  `agents --max-restarts 1`: they are the requests' doing, not failures of the group.
- a window of 2^25 floats (128 MiB) under SHARDSERVE_RANK_RUN_MB=64 is refused with an error
  naming the limit and the node, and the next request is answered.

With --mpi, the same 2 ranks run under one mpirun (`agents --comm mpi`, MPI restricted to
loopback): the endless requests restart the whole job at once, uncounted (mpirun exits with the
status of the rank that left, 76), and a rank SIGKILLed afterwards restarts it as a failure
(counted: try 1 of 1), after which the group answers again. Last, with rank 1's model file made
garbage, a new launcher stops at once (78: not restarting), although rank 0 loaded and serves;
and so does one that cannot run mpirun (not on PATH: 127). Then the model served whole by one
rank under mpirun: that rank stopped (SIGSTOP), no other rank fails to end the job, so the
launcher's own hang check must see it (the rank stamps the launcher's liveness page as a local
agent does), SIGKILL it and start the job again; stopped again, and the launcher sent SIGTERM
while mpirun is still ending that job, it exits 0 instead of starting it again.

Usage: test_run_bounds.py [--mpi] [case...]; prints ok/FAIL per case and "N passed, N failed"."""

import os
import signal
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "serving"))
from cluster import Cluster, run_cases  # noqa: E402
import shardserve_client as ssc  # noqa: E402

SANITIZED = os.environ.get("SS_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
SLOW = 3 if SANITIZED else 1
TIMEOUT_MS = 3000
HEARTBEAT_MS = 2000 * SLOW  # the lone mpi rank's worker; the launcher's hang check waits 1.5x
RUN_MB = 64
C = None


def write_model(path):
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["x_out"]),
         helper.make_node("ReduceSum", ["x_out"], ["s"], keepdims=0),
         helper.make_node("Less", ["s", "limit"], ["cond_out"])],
        "while_body",
        [vi("i", T.INT64, []), vi("cond", T.BOOL, []), vi("x", T.FLOAT, [3])],
        [vi("cond_out", T.BOOL, []), vi("x_out", T.FLOAT, [3])])
    nodes = [
        helper.make_node("Constant", [], ["limit"], value=helper.make_tensor("l", T.FLOAT, [], [100.0])),
        helper.make_node("Constant", [], ["go"], value=helper.make_tensor("g", T.BOOL, [], [True])),
        helper.make_node("Loop", ["", "go", "x"], ["y"], body=body, name="grow"),
        helper.make_node("HannWindow", ["size"], ["w"], name="window"),
    ]
    graph = helper.make_graph(
        nodes, "bounds",
        [vi("x", T.FLOAT, [3]), vi("scale", T.FLOAT, [3]), vi("size", T.INT32, [])],
        [vi("y", T.FLOAT, [3]), vi("w", T.FLOAT, ["n"])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save_model(m, path)


def call(scale, size):
    inst = {"x": np.ones(3, np.float32), "scale": np.full(3, scale, np.float32),
            "size": np.array(size, np.int32)}
    t0 = time.time()
    r = ssc.Client(C.grpc, "bounds", "predict").infer(inst)
    return (r[0] if isinstance(r, list) else r), time.time() - t0


def assert_answers(within):
    """A normal request (scale 2 ends the loop at 64, a window of 10) is answered correctly."""
    r, took = call(2.0, 10)
    assert "error" not in r, "a normal request failed: %s" % r
    np.testing.assert_allclose(r["y"], [64, 64, 64])
    assert r["w"].shape == (10,), r["w"].shape
    assert took < within, "the normal request took %.1f s" % took


def wait_ready(timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _ = call(2.0, 10)
        if "error" not in r:
            return
        time.sleep(0.2)
    raise AssertionError("not serving again %.0f s after the endless request: %s\nagents:\n%s"
                         % (timeout, r, C.log(C.agent_procs)[-4000:]))


def endless_loop(restarts=0):
    """restarts: how many times the split group must have restarted after this request."""
    r, took = call(1.0, 10)
    assert "error" in r, "the endless loop answered: %s" % r
    assert took < TIMEOUT_MS / 1000 + 5 * SLOW, "the endless request took %.1f s" % took
    if restarts:  # the ranks leave the group: it starts again, then answers
        wait_ready(60 * SLOW)
        log = C.log(C.agent_procs)
        seen = log.count("restarting the group")
        assert seen >= restarts, "%d restarts logged, want %d:\n%s" % (seen, restarts, log[-3000:])
        assert "stopped a request's run at its time limit" in log, log[-3000:]
    assert_answers(2 * SLOW)
    print("    endless loop failed after %.1f s (request timeout %d ms); next request answered"
          % (took, TIMEOUT_MS))


def huge_window():
    r, took = call(2.0, 1 << 25)
    assert "error" in r, "a 128 MiB window under a %d MiB bound answered" % RUN_MB
    for want in ("%d bytes one run may take" % (RUN_MB << 20), "SHARDSERVE_RANK_RUN_MB", "window"):
        assert want in r["error"], "%r not in: %s" % (want, r["error"])
    assert took < 5 * SLOW, "the refusal took %.1f s" % took
    assert_answers(2 * SLOW)
    print("    refused in %.2f s: %s" % (took, r["error"][:200]))


def test_whole_endless_loop():
    endless_loop()


def test_whole_huge_window():
    huge_window()


def test_split_endless_loop():
    for i in range(3):
        endless_loop(restarts=i + 1)
    assert C.agent_procs.poll() is None, "agents exited:\n" + C.log(C.agent_procs)[-3000:]
    assert "giving up" not in C.log(C.agent_procs)


def test_split_huge_window():
    huge_window()


def mpi_ranks():
    """pids of the agent-rank-mpi processes (mpirun's children) of this test's launcher."""
    out = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
            if args[1:2] == [b"agent-rank-mpi"] and any(C.dir.encode() in a for a in args):
                out.append(int(pid))
        except (OSError, ValueError):
            pass
    return out


def test_mpi_rank_killed():
    ranks = mpi_ranks()
    assert len(ranks) == 2, "agent-rank-mpi processes: %s" % ranks
    os.kill(ranks[1], signal.SIGKILL)
    deadline = time.time() + 30 * SLOW
    while "restarting the group in" not in C.log(C.agent_procs):
        assert time.time() < deadline, "no restart after SIGKILL:\n" + C.log(C.agent_procs)[-3000:]
        assert C.agent_procs.poll() is None, "agents exited:\n" + C.log(C.agent_procs)[-3000:]
        time.sleep(0.1)
    wait_ready(60 * SLOW)
    assert_answers(2 * SLOW)
    log = C.log(C.agent_procs)
    assert "(try 1 of 1)" in log, log[-3000:]
    assert "giving up" not in log and C.agent_procs.poll() is None, log[-3000:]
    print("    rank 1 (pid %d) killed: mpirun started again (try 1 of 1), answered again" % ranks[1])


def test_mpi_bad_shard():
    """Rank 1's shard does not load (its model file is garbage): the launcher stops at once,
    not after --max-restarts tries, and not waiting on rank 0, which loaded and registered."""
    C.agent_procs.send_signal(signal.SIGTERM)
    assert C.agent_procs.wait(timeout=30 * SLOW) == 0, C.log(C.agent_procs)[-3000:]
    with open(C.models[1], "wb") as f:
        f.write(b"not an onnx model")
    t0 = time.time()
    a = C.agents(C.worker_addresses["bounds"][0], C.models, extra=("--comm", "mpi"),
                 env=C.agent_env, log="agents-bad-shard.log")
    rc = a.wait(timeout=60 * SLOW)
    log = C.log(a)
    assert rc != 0 and "not restarting the group" in log and "could not load its shard" in log, \
        "exit %d:\n%s" % (rc, log[-3000:])
    assert "restarting the group in" not in log, log[-3000:]
    print("    launcher exit %d after %.1f s: %s" % (rc, time.time() - t0, log.strip().splitlines()[-1]))


def test_mpi_not_found():
    """mpirun not on PATH: the launcher stops at once, not after --max-restarts tries."""
    a = C.agents(C.worker_addresses["bounds"][0], C.models, extra=("--comm", "mpi"),
                 env=dict(C.agent_env, PATH="/nonexistent"), log="agents-no-mpirun.log")
    rc = a.wait(timeout=30 * SLOW)
    log = C.log(a)
    assert rc != 0 and "cannot run mpirun" in log and "not restarting the group" in log, \
        "exit %d:\n%s" % (rc, log[-3000:])
    assert "restarting the group in" not in log, log[-3000:]
    print("    launcher exit %d: %s" % (rc, log.strip().splitlines()[-1]))


def test_mpi_lone_rank_stopped():
    ranks = mpi_ranks()
    assert len(ranks) == 1, "agent-rank-mpi processes: %s" % ranks
    t0 = time.time()
    os.kill(ranks[0], signal.SIGSTOP)
    try:
        deadline = t0 + HEARTBEAT_MS / 1000 * 1.5 + 20 * SLOW
        while "restarting the group in" not in C.log(C.agent_procs):
            assert time.time() < deadline, \
                "no restart after SIGSTOP:\n" + C.log(C.agent_procs)[-3000:]
            assert C.agent_procs.poll() is None, "agents exited:\n" + C.log(C.agent_procs)[-3000:]
            time.sleep(0.1)
        took = time.time() - t0
    finally:  # a rank the launcher did not kill resumes, so that the cluster can end it
        try:
            os.kill(ranks[0], signal.SIGCONT)
        except ProcessLookupError:
            pass
    log = C.log(C.agent_procs)
    for want in ("agent of rank 0 (pid %d) has read nothing from the worker" % ranks[0],
                 "the process is stopped", "which ends mpirun's job", "(try 1 of 1)"):
        assert want in log, "%r not in:\n%s" % (want, log[-3000:])
    wait_ready(60 * SLOW)
    assert_answers(2 * SLOW)
    now = mpi_ranks()
    assert len(now) == 1 and now[0] != ranks[0], "ranks now: %s (stopped: %d)" % (now, ranks[0])
    print("    rank 0 (pid %d) stopped: killed and restarted after %.1f s (worker heartbeat timeout %d "
          "ms), answers again from pid %d" % (ranks[0], took, HEARTBEAT_MS, now[0]))


def dead(pid):
    """Whether pid has exited (gone, or a zombie its parent has not reaped yet)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_mpi_stop_while_hang_ends():
    """SIGTERM to the launcher after it killed a hung rank, while mpirun is still ending the job:
    the launcher stops (exit 0), it does not start the job again."""
    ranks = mpi_ranks()
    assert len(ranks) == 1, "agent-rank-mpi processes: %s" % ranks
    restarts = C.log(C.agent_procs).count("restarting the group in")
    os.kill(ranks[0], signal.SIGSTOP)
    try:
        deadline = time.time() + HEARTBEAT_MS / 1000 * 1.5 + 20 * SLOW
        while not dead(ranks[0]):
            assert time.time() < deadline, \
                "the stopped rank was not killed:\n" + C.log(C.agent_procs)[-3000:]
            time.sleep(0.02)
    finally:
        try:
            os.kill(ranks[0], signal.SIGCONT)
        except ProcessLookupError:
            pass
    C.agent_procs.send_signal(signal.SIGTERM)
    rc = C.agent_procs.wait(timeout=30 * SLOW)
    log = C.log(C.agent_procs)
    assert rc == 0, "launcher exit %d after SIGTERM:\n%s" % (rc, log[-3000:])
    assert log.count("restarting the group in") == restarts, log[-3000:]
    assert "forwarding it to mpirun" in log, log[-3000:]
    print("    rank (pid %d) killed as hung, SIGTERM meanwhile: launcher exit 0, no restart"
          % ranks[0])


def serve(c, ranks, tag, comm="shm", heartbeat_ms=None):
    global C
    C = c
    model = os.path.join(c.dir, "bounds.onnx")
    write_model(model)
    models = c.add_servable("bounds", model, ranks, 1,
                            methods=[{"name": "predict", "inputs": ["x", "scale", "size"],
                                      "outputs": ["y", "w"]}])
    table = c.write_rank_table(ranks)
    extra = ("--request-timeout-ms", str(TIMEOUT_MS))
    if heartbeat_ms:
        extra += ("--heartbeat-timeout-ms", str(heartbeat_ms))
    c.serve([("bounds", 1, table)], wait_agents=60, extra=extra)
    env = {"SHARDSERVE_RANK_RUN_MB": str(RUN_MB)}
    if comm == "mpi":  # loopback only; Open MPI's session files in the test's folder
        ompi = os.path.join(c.dir, "ompi")
        os.makedirs(ompi)
        env["SHARDSERVE_MPIRUN_ARGS"] = (
            "--mca btl self,vader,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo "
            "--mca orte_tmpdir_base %s --mca btl_vader_backing_directory %s -x SHARDSERVE_RANK_RUN_MB"
            % (ompi, ompi))
    c.models, c.agent_env = models, env
    c.agent_procs = c.agents(c.worker_addresses["bounds"][0], models,
                             extra=("--max-restarts", "1", "--comm", comm), env=env,
                             log="agents-%s.log" % tag)
    c.wait_ready(1)


def main():
    args = sys.argv[1:]
    configs = ((1, "shm", [test_whole_endless_loop, test_whole_huge_window]),
               (2, "shm", [test_split_endless_loop, test_split_huge_window]))
    if "--mpi" in args:
        args.remove("--mpi")
        configs = ((2, "mpi", [test_split_endless_loop, test_split_huge_window, test_mpi_rank_killed,
                                 test_mpi_bad_shard, test_mpi_not_found]),
                   (1, "mpi", [test_mpi_lone_rank_stopped, test_mpi_stop_while_hang_ends]))
    unknown = {a.lstrip("-") for a in args} - {case.__name__ for _, _, cases in configs for case in cases}
    if unknown:
        print("no such case: %s\n0 passed, 1 failed" % ", ".join(sorted(unknown)))
        return 1
    status = 0
    for ranks, comm, cases in configs:
        pick = [a for a in args if not a.startswith("-")]
        skip = [a[1:] for a in args if a.startswith("-")]
        if (pick and not any(case.__name__ in pick for case in cases)) or \
                all(case.__name__ in skip for case in cases):
            continue  # none of this set's cases to run: no cluster for it
        names = {case.__name__ for case in cases}
        lone = comm == "mpi" and ranks == 1
        with Cluster() as c:
            serve(c, ranks, "r%d-%s" % (ranks, comm), comm, HEARTBEAT_MS if lone else None)
            # only the names of this set: run_cases refuses names it has no case for
            status |= run_cases(cases, [a for a in args if a.lstrip("-") in names])
    return status


if __name__ == "__main__":
    sys.exit(main())
