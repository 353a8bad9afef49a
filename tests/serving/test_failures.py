#!/usr/bin/python3
"""Failures with real processes: an agent SIGKILLed under load, an agent that hangs (SIGSTOP; in a
group of two, and as the only rank, where the launcher must notice it itself),
the server SIGKILLed and started again. In-flight requests must get an error within 2 s, new
requests a clear "not available" while the group is down, and serving must come back without
restarting `shardserve serve`; nothing may be left behind. Ends with "N passed, N failed"."""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, children, leftover_shm, matmul_neg_model, run_cases  # noqa: E402
from shardserve_client import Client  # noqa: E402

ONES = np.ones((128, 96), np.float32)
HEARTBEAT_MS = 1500
# Under the sanitizers (and a neighbouring test on 2 cores) requests take longer: the bounds on how
# soon an in-flight request is answered after a fault scale with it (not the heartbeat itself).
SLOW = 2 if os.environ.get("SS_SANITIZED", "0") in ("1", "ON", "TRUE", "true") else 1


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def setup(c, ranks=2, extra_serve=(), agent_extra=(), address="127.0.0.1:0", backoff_ms=200, heartbeat_ms=5000):
    """Only the hung-agent case wants a short heartbeat bound: on a loaded 2-core machine a short
    bound also trips on healthy agents, which would restart the group in the other cases."""
    model = os.path.join(c.dir, "matmul.onnx")
    matmul_neg_model(model)
    models = c.add_servable("matmul", model, ranks, 1)
    table = c.write_rank_table(ranks)
    args = ["--heartbeat-timeout-ms", str(heartbeat_ms)] + list(extra_serve)
    c.serve_args = ([("matmul", 1, table, address)], args, address)
    _start_server(c, address)
    agents = c.agents(c.worker_addresses["matmul"][-1], models,
                      extra=["--restart-backoff-ms", str(backoff_ms)] + list(agent_extra))
    c.wait_ready(1)
    return models, agents


def _start_server(c, address):
    groups, args, _ = c.serve_args
    # the distributed address is fixed when given, so agents can find a restarted server
    c.serve(groups, extra=args)


class Load:
    """Client threads sending back to back; records (start, end, outcome) per request."""

    def __init__(self, c, threads=3):
        self.c, self.stop, self.log = c, False, []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        cl = Client(self.c.grpc, "matmul", "predict")
        while not self.stop:
            t0 = time.time()
            r = cl.infer({"x": ONES})
            t1 = time.time()
            ok = isinstance(r, list) and "y" in r[0] and (r[0]["y"] == -48).all()
            err = None if ok else (r.get("error") if isinstance(r, dict) else r[0].get("error"))
            with self.lock:
                self.log.append((t0, t1, ok, err))
            if err and err.startswith("Grpc Error, 14,"):
                time.sleep(0.05)  # the server is gone: do not spin (and flood the log)

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join(timeout=30)


def wait_serving(cl, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = cl.infer({"x": ONES})
        if isinstance(r, list) and (r[0]["y"] == -48).all():
            return time.time()
        time.sleep(0.1)
    raise AssertionError("serving did not come back within %d s" % timeout)


def check_fault_window(load, t_fault, bound_s):
    """Requests in flight at the fault ended within bound_s (x SLOW); wrong answers never happen."""
    bound_s *= SLOW
    for t0, t1, ok, err in load.log:
        if ok:
            continue
        assert err, "a request failed without an error message"
        if t0 <= t_fault:
            assert t1 - t_fault <= bound_s, "in-flight request answered %.2f s after the fault" % (t1 - t_fault)
    failures = [e for _, _, ok, e in load.log if not ok]
    assert failures, "no request saw the fault"
    assert all(("worker unavailable" in e or "not available" in e or "Servable stopped" in e) for e in failures), \
        set(failures)


def test_agent_killed_under_load():
    with Cluster() as c:
        # a 2 s restart backoff leaves a window in which the group is down
        models, agents = setup(c, backoff_ms=2000)
        server_pid = c.server.pid
        load = Load(c)
        try:
            time.sleep(1.0)
            victim = children(agents.pid)[0]
            t_fault = time.time()
            os.kill(victim, signal.SIGKILL)
            time.sleep(0.5)
            e = Client(c.grpc, "matmul", "predict").infer({"x": ONES})
            assert isinstance(e, dict) and "servable is not available: not ready" in e["error"], e
            t_back = wait_serving(Client(c.grpc, "matmul", "predict"))
        finally:
            load.finish()
        check_fault_window(load, t_fault, 2.0)
        assert c.server.pid == server_pid and c.server.poll() is None
        assert victim not in children(agents.pid)
        # the launcher names the killed rank, not one of the ranks that lost the worker after it
        assert re.search(r"agent of rank \d+ \(pid %d\) (was )?killed" % victim, c.log(agents)), \
            c.log(agents)[-2000:]
        print("  killed rank pid %d: serving again after %.1f s" % (victim, t_back - t_fault))
    assert not leftover_shm(), leftover_shm()


def test_recovered_failures_do_not_add_up():
    """With --max-restarts 1 and --recovered-after-ms 2000, an agent killed twice 3 s apart is
    restarted both times: a group that registered and served 2 s has recovered, so the second
    failure is a new first one (they used to add up until 60 s of uptime, and the launcher gave
    up)."""
    with Cluster() as c:
        models, agents = setup(c, agent_extra=["--max-restarts", "1", "--recovered-after-ms", "2000"])
        cl = Client(c.grpc, "matmul", "predict")
        for round in range(2):
            if round:
                time.sleep(3)
            victim = children(agents.pid)[0]
            os.kill(victim, signal.SIGKILL)
            t_fault = time.time()
            wait_serving(cl, timeout=30)
            assert agents.poll() is None, c.log(agents)[-2000:]
            print("  round %d: killed rank pid %d, serving again after %.1f s"
                  % (round, victim, time.time() - t_fault))
        assert "giving up" not in c.log(agents), c.log(agents)[-2000:]


def test_launcher_names_the_killed_rank():
    """8 ranks, one SIGKILLed, three times: the launcher names it, not one of the ranks that lost
    the worker after it (which it did about one time in three: they can be reaped first)."""
    with Cluster() as c:
        models, agents = setup(c, ranks=8, backoff_ms=200)
        cl = Client(c.grpc, "matmul", "predict")
        for round in range(3):
            wait_serving(cl)
            victim = children(agents.pid)[(3 * round + 1) % 8]
            before = c.log(agents)
            os.kill(victim, signal.SIGKILL)
            deadline = time.time() + 20
            while time.time() < deadline and "restarting the group" not in c.log(agents)[len(before):]:
                time.sleep(0.05)
            said = c.log(agents)[len(before):]
            m = re.search(r"agent of rank \d+ \(pid (\d+)\)[^\n]*", said)
            assert m and int(m.group(1)) == victim and "killed" in m.group(0), (victim, said[-1500:])
        wait_serving(cl)


def test_agent_hung():
    with Cluster() as c:
        models, agents = setup(c, heartbeat_ms=HEARTBEAT_MS)
        load = Load(c, threads=2)
        try:
            time.sleep(1.0)
            victim = children(agents.pid)[-1]
            t_fault = time.time()
            os.kill(victim, signal.SIGSTOP)
            try:
                t_back = wait_serving(Client(c.grpc, "matmul", "predict"), timeout=40)
            finally:
                try:
                    os.kill(victim, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        finally:
            load.finish()
        # a hung rank is noticed within the heartbeat bound (+1 s of heartbeat period)
        check_fault_window(load, t_fault, HEARTBEAT_MS / 1000 + 1.5)
        assert "no heartbeat answer" in c.log(c.server), c.log(c.server)[-2000:]
        # the launcher blames the stopped rank, not the ranks that failed waiting for it
        said = c.log(agents)
        assert re.search(r"agent of rank \d+ \(pid %d\)[^\n]* stopped" % victim, said), said[-2000:]
        print("  stopped rank pid %d: serving again after %.1f s" % (victim, t_back - t_fault))
    assert not leftover_shm(), leftover_shm()


def test_single_rank_agent_hung():
    """The only rank of its group stops (SIGSTOP). The worker notices within its heartbeat bound,
    but no other rank of the group exits to bring it down: the launcher itself must see that the
    rank has read nothing from the worker for --heartbeat-timeout-ms, kill it and start the group
    again, so serving comes back without anyone touching the stopped process."""
    with Cluster() as c:
        models, agents = setup(c, ranks=1, heartbeat_ms=HEARTBEAT_MS,
                               agent_extra=["--heartbeat-timeout-ms", str(HEARTBEAT_MS)])
        cl = Client(c.grpc, "matmul", "predict")
        assert (cl.infer({"x": ONES})[0]["y"] == -48).all()
        server_pid = c.server.pid
        victim = children(agents.pid)[0]
        t_fault = time.time()
        os.kill(victim, signal.SIGSTOP)
        try:
            # the fault is seen first: a request fails once the worker's heartbeat bound passes
            deadline = time.time() + HEARTBEAT_MS / 1000 + 5
            while time.time() < deadline and not isinstance(cl.infer({"x": ONES}), dict):
                time.sleep(0.1)
            assert time.time() < deadline, "requests still answered with the only rank stopped"
            t_back = wait_serving(cl, timeout=20)
        finally:
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        r = cl.infer({"x": ONES * 2})
        assert isinstance(r, list) and (r[0]["y"] == -96).all(), r
        assert victim not in children(agents.pid), "the stopped rank was not replaced"
        assert c.server.pid == server_pid and c.server.poll() is None
        log = c.log(agents)
        assert "rank 0" in log and "read nothing from the worker" in log and "stopped" in log, log[-2000:]
        print("  stopped the only rank (pid %d): serving again after %.1f s" % (victim, t_back - t_fault))
    assert not leftover_shm(), leftover_shm()


def test_server_killed_and_restarted():
    with Cluster() as c:
        address = "127.0.0.1:%d" % free_port()
        models, agents = setup(c, address=address)
        # serve listens on the fixed distributed address from the start
        assert c.worker_addresses["matmul"] == [address]
        old = children(agents.pid)
        c.server.kill()
        c.server.wait()
        # agents notice at once (the link closes) and the launcher keeps trying
        deadline = time.time() + 10
        while time.time() < deadline and any(p in children(agents.pid) for p in old):
            time.sleep(0.1)
        assert not any(p in children(agents.pid) for p in old), "agents outlived their server"
        assert agents.poll() is None, "the launcher gave up too early"
        c.procs.remove(c.server)
        _start_server(c, address)
        c.wait_ready(1, timeout=60)
        assert (Client(c.grpc, "matmul", "predict").infer({"x": ONES})[0]["y"] == -48).all()
    assert not leftover_shm(), leftover_shm()


def test_agents_started_beside_a_stale_secret():
    """serve killed leaves its link secret file; agents started then read it, and the serve started
    next writes another. The launcher reads the file again when the worker refuses it and joins
    (it used to exit at once: 'wrong shared secret')."""
    with Cluster() as c:
        address = "127.0.0.1:%d" % free_port()
        models, agents = setup(c, address=address)
        agents.send_signal(signal.SIGTERM)
        agents.wait(timeout=20)
        c.server.kill()
        c.server.wait()
        c.procs.remove(c.server)
        port = address.rsplit(":", 1)[1]
        stale = [f for f in glob.glob("/tmp/shardserve-%d/*port-%s.secret" % (os.getuid(), port))]
        assert stale, "serve killed left no secret file behind"
        late = c.agents(address, models, extra=["--restart-backoff-ms", "200"])
        time.sleep(1.0)  # the launcher has read the stale secret and waits for a worker
        _start_server(c, address)
        c.wait_ready(1, timeout=60)
        assert late.poll() is None, c.log(late)[-2000:]
        assert (Client(c.grpc, "matmul", "predict").infer({"x": ONES})[0]["y"] == -48).all()
        assert "changed since it was read" in c.log(late), c.log(late)[-2000:]


def test_server_killed_restart_never():
    with Cluster() as c:
        models, agents = setup(c, agent_extra=["--restart", "never"])
        kids = children(agents.pid)
        c.server.kill()
        c.server.wait()
        assert agents.wait(timeout=15) != 0, "the launcher should report the lost worker"
        for p in kids:
            assert not os.path.exists("/proc/%d" % p) or open("/proc/%d/stat" % p).read().split()[2] == "Z", p
        assert "lost the worker" in c.log(agents), c.log(agents)
    assert not leftover_shm(), leftover_shm()


def test_killed_launcher_segment_removed():
    """A group killed while joining (SIGKILL to the launcher and its agents, as an OOM kill or a
    host's shutdown does) leaves its /dev/shm segment behind: tmpfs pages, memory until removed.
    The next `shardserve agents` on the host removes it, says so, and serves."""
    with Cluster() as c:
        model = os.path.join(c.dir, "matmul.onnx")
        matmul_neg_model(model)
        models = c.add_servable("matmul", model, 2, 1)
        c.serve([("matmul", 1, c.write_rank_table(2))])
        # rank 1's group config is a FIFO nobody writes: rank 1 blocks reading it, so rank 0 has
        # published the group's segment and waits in the join
        stuck = os.path.join(c.dir, "stuck")
        os.makedirs(stuck)
        shutil.copy(models[1], stuck)
        os.mkfifo(os.path.join(stuck, "group_config.json"))
        agents = c.agents(c.worker_addresses["matmul"][-1],
                          [models[0], os.path.join(stuck, os.path.basename(models[1]))],
                          extra=["--restart", "never"])
        segment = "/dev/shm/shardserve-agents-%d-0" % agents.pid
        deadline = time.time() + 30
        while time.time() < deadline and not os.path.exists(segment):
            time.sleep(0.05)
        assert os.path.exists(segment), "no segment was published: %s" % c.log(agents)[-2000:]
        kids = children(agents.pid)
        for p in kids:  # the agents first: a launcher killed first sends them SIGTERM (their
            os.kill(p, signal.SIGKILL)  # parent-death signal), and one may tidy up in time
        agents.kill()
        agents.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(os.path.exists("/proc/%d" % p) for p in kids):
            time.sleep(0.1)
        assert os.path.exists(segment), "the segment went with its group: nothing to remove"
        again = c.agents(c.worker_addresses["matmul"][-1], models)
        c.wait_ready(1)
        wait_serving(Client(c.grpc, "matmul", "predict"))
        assert not os.path.exists(segment), os.listdir("/dev/shm")
        assert "removed %s" % segment in c.log(again), c.log(again)[-2000:]
    assert not leftover_shm(), leftover_shm()


def test_graceful_shutdown():
    """SIGTERM to serve under load: every request gets an answer (result or error), serve exits 0,
    the agents end in order (their launcher exits 0) and nothing is left."""
    with Cluster() as c:
        models, agents = setup(c)
        load = Load(c, threads=4)
        try:
            time.sleep(1.0)
            c.server.send_signal(signal.SIGTERM)
            try:
                rc = c.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                raise AssertionError("serve still runs 20 s after SIGTERM; its log:\n%s\nits threads:\n%s"
                                     % (c.log(c.server)[-3000:], c.stacks(c.server)))
            assert rc == 0, c.log(c.server)[-3000:]
        finally:
            load.finish()
        assert all(not t.is_alive() for t in load.threads), "a client is still waiting for an answer"
        assert any(ok for _, _, ok, _ in load.log), "no request succeeded before the shutdown"
        for _, _, ok, err in load.log:
            assert ok or err, "a request ended without a result or an error"
        try:
            rc = agents.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the agents still run 20 s after serve stopped; their log:\n%s\nthe launcher's threads:\n%s"
                                 % (c.log(agents)[-3000:], c.stacks(agents)))
        assert rc == 0, c.log(agents)[-3000:]
        assert "Serving: stopped" in c.log(c.server)
    assert not leftover_shm(), leftover_shm()


def test_stop_signals_before_ready_and_during_drain():
    """SIGINT while serve still waits for its agents, and a second SIGTERM during a drain, each
    end serve the graceful way (exit 0, "Serving: stopped"). A thread OpenBLAS starts before main
    does not block them: without a handler the default action there killed serve (rc 130/143)."""
    with Cluster() as c:
        model = os.path.join(c.dir, "matmul.onnx")
        matmul_neg_model(model)
        c.add_servable("matmul", model, 2, 1)
        c.serve([("matmul", 1, c.write_rank_table(2))], expect_ready=True)
        time.sleep(1.5)  # serve waits for agents that never come
        c.server.send_signal(signal.SIGINT)
        rc = c.server.wait(timeout=20)
        assert rc == 0 and "Serving: stopped" in c.log(c.server), (rc, c.log(c.server)[-2000:])
    with Cluster() as c:
        models, agents = setup(c)
        load = Load(c, threads=2)
        try:
            time.sleep(0.5)
            c.server.send_signal(signal.SIGTERM)
            time.sleep(0.02)
            c.server.send_signal(signal.SIGTERM)
            rc = c.server.wait(timeout=20)
        finally:
            load.finish()
        assert rc == 0 and "Serving: stopped" in c.log(c.server), (rc, c.log(c.server)[-2000:])
        assert agents.wait(timeout=20) == 0, c.log(agents)[-2000:]
    print("    SIGINT before ready and SIGTERM twice while draining: serve exits 0, stopped")


def slow_model(path, layers=320, dim=2048, rows=256):
    """y = x @ I @ I ... (layers MatMuls with one shared identity weight): ~2 x rows x dim^2 x
    layers FLOPs (344 GFLOP here: ~2 s on 2 Zen 4 cores, 160 layers gave 1.3 s in CI), 16 MB of weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.eye(dim, dtype=np.float32), name="I")
    nodes, prev = [], "x"
    for i in range(layers):
        out = "y" if i == layers - 1 else "h%d" % i
        nodes.append(helper.make_node("MatMul", [prev, "I"], [out], name="mm%d" % i))
        prev = out
    g = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, dim])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, dim])], initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save_model(m, path)


def test_long_requests_keep_heartbeats():
    """Requests that run longer than the heartbeat bound: the agent's helper thread answers the
    heartbeats and takes the next request off the link meanwhile, so nothing is declared hung and
    both concurrent requests come back right."""
    with Cluster() as c:
        model = os.path.join(c.dir, "slow.onnx")
        slow_model(model)
        models = c.add_servable("slow", model, 1, 1)
        table = c.write_rank_table(1)
        c.serve([("slow", 1, table)], extra=["--heartbeat-timeout-ms", "1000", "--request-timeout-ms", "120000"])
        c.agents(c.worker_addresses["slow"][-1], models)
        c.wait_ready(1)
        x = np.random.default_rng(0).uniform(-1, 1, (256, 2048)).astype(np.float32)
        out = [None, None]

        def call(i):
            t0 = time.time()
            r = Client(c.grpc, "slow", "predict").infer({"x": x * (i + 1)})
            out[i] = (time.time() - t0, r)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        for i, (took, r) in enumerate(out):
            assert isinstance(r, list) and np.allclose(r[0]["y"], x * (i + 1), atol=1e-4), (i, r)
        first = min(took for took, _ in out)
        assert first > 1.5, "a request took %.2f s: too short to test the 1 s heartbeat bound" % first
        assert "no heartbeat answer" not in c.log(c.server), c.log(c.server)[-2000:]
        print("  two requests of %.1f s and %.1f s under a 1 s heartbeat bound" % tuple(t for t, _ in out))
    assert not leftover_shm(), leftover_shm()


CASES = [test_graceful_shutdown, test_stop_signals_before_ready_and_during_drain,
         test_agent_killed_under_load, test_launcher_names_the_killed_rank,
         test_recovered_failures_do_not_add_up, test_agent_hung, test_single_rank_agent_hung,
         test_server_killed_and_restarted, test_agents_started_beside_a_stale_secret,
         test_server_killed_restart_never, test_killed_launcher_segment_removed,
         test_long_requests_keep_heartbeats]


def main():
    return run_cases(CASES, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
