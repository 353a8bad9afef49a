#!/usr/bin/python3
"""Two hosts: distributed serving with the mpi backend across network namespaces made here.

Three network namespaces, each with only loopback and one interface of this test's private
10.203.7.0/24 subnet: "server" (a bridge, 10.203.7.1) and hosts A (10.203.7.2) and B
(10.203.7.3), each joined to the bridge by a veth pair created directly inside the namespaces (no
interface of this test ever exists in the root namespace, and no namespace has a route anywhere
else, so no packet can leave them). `shardserve serve` runs in the server namespace (worker, gRPC
and REST on 10.203.7.1); ONE `shardserve agents --comm mpi`, also in the server namespace, starts
the 8 ranks of the seed example through mpirun from a rank table naming A (ranks 0-3) and B
(ranks 4-7). mpirun's rsh agent is a small script that runs the remote daemon inside the
namespace of the host it is given (with its own UTS namespace and hostname: Open MPI names its
session folders and shared-memory files by hostname); btl/oob are restricted to the test subnet.

Checked: the Python client (run in the server namespace) gets y all -48; ranks 0-3 run in A and
4-7 in B (read from each rank's OMPI_COMM_WORLD_RANK); bytes crossed A's veth and A's ranks hold
TCP connections to B; a wrong model-file count is refused with a clear error, a failing mpirun is
started again by --restart, then given up on naming mpirun;
SIGTERM to the launcher stops every rank (exit 0); the agents exit when the worker is killed; an
interleaved group_list rank table (A: 0,1,4,5, B: 2,3,6,7) places every rank on its own host, and
SIGINT stops it. Whatever happens, every process this test started is killed and the namespaces are
deleted. Exit 77 (SKIP, reason printed) only when namespaces cannot be created here.
"""

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

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(ROOT, "examples", "matmul_distributed")
SHARDSERVE = os.path.abspath(os.environ.get("SHARDSERVE", "shardserve"))
PY = "/usr/bin/python3"
PID = os.getpid()
NET = "10.203.7"
SUBNET = NET + ".0/24"
IP_SERVER, IP_A, IP_B = NET + ".1", NET + ".2", NET + ".3"
NS_SERVER, NS_A, NS_B = "ss2h-srv-%d" % PID, "ss2h-a-%d" % PID, "ss2h-b-%d" % PID
NS_OF = {IP_A: NS_A, IP_B: NS_B}
VETH_A, VETH_B = "s2a%d" % PID, "s2b%d" % PID  # host-side ends (in A and B)
PORT_A, PORT_B = "s2pa%d" % PID, "s2pb%d" % PID  # bridge-side ends (in the server namespace)
WORKER = IP_SERVER + ":6200"
GRPC = IP_SERVER + ":5500"
TOTAL_SECONDS = 420  # below the CTest timeout, so cleanup always runs
# from server_harness (stdlib only), not cluster, which imports numpy and onnx before a SKIP
sys.path.append(os.path.dirname(HERE))
from server_harness import DIE_WITH_PARENT  # noqa: E402


class Failed(Exception):
    pass


def sh(*args, check=True, timeout=30):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise Failed("%s -> %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return r


def ns_pids(ns):
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def environ_of(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return {}


class TwoHosts:
    def __init__(self):
        self.work = tempfile.mkdtemp(prefix="ss-two-hosts-")
        self.procs = []
        self.made = []

    # ------------------------------------------------------------ network
    def make_namespaces(self):
        """Returns a SKIP reason when namespaces cannot be made here, else None."""
        if os.geteuid() != 0:
            return "not root: creating network namespaces needs root (CAP_SYS_ADMIN)"
        if not shutil.which("ip"):
            return "no 'ip' command (iproute2): cannot create network namespaces"
        if not shutil.which("unshare"):
            return "no 'unshare' command (util-linux): cannot give each host its own hostname"
        r = subprocess.run(["ip", "netns", "add", NS_SERVER], capture_output=True, text=True)
        if r.returncode != 0:
            return "cannot create a network namespace here (ip netns add: %s)" % r.stderr.strip()
        self.made.append(NS_SERVER)
        for ns in (NS_A, NS_B):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
        srv = ["ip", "-n", NS_SERVER]
        sh(*srv, "link", "set", "lo", "up")
        sh(*srv, "link", "add", "br0", "type", "bridge")
        sh(*srv, "addr", "add", IP_SERVER + "/24", "dev", "br0")
        sh(*srv, "link", "set", "br0", "up")
        for ns, ip, host_end, port in ((NS_A, IP_A, VETH_A, PORT_A), (NS_B, IP_B, VETH_B, PORT_B)):
            # both ends are created inside their namespaces: nothing ever appears in the root one
            sh("ip", "link", "add", port, "netns", NS_SERVER, "type", "veth", "peer", "name", host_end, "netns", ns)
            sh(*srv, "link", "set", port, "master", "br0")
            sh(*srv, "link", "set", port, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", host_end)
            sh("ip", "-n", ns, "link", "set", host_end, "up")
        # the bridge needs a moment to forward; wait until A reaches B and the server
        deadline = time.time() + 20
        while True:
            ok = all(subprocess.run(["ip", "netns", "exec", NS_A, "ping", "-c1", "-W1", dst],
                                    capture_output=True).returncode == 0 for dst in (IP_SERVER, IP_B))
            if ok or not shutil.which("ping"):
                break
            if time.time() > deadline:
                raise Failed("the namespaces cannot reach each other over the bridge")
            time.sleep(0.3)
        for ns in self.made:
            routes = sh("ip", "-n", ns, "route", "show").stdout
            if "default" in routes:
                raise Failed("namespace %s has a default route: %s" % (ns, routes))
        print("ok   namespaces %s (%s, bridge), %s (%s), %s (%s); only %s, no default route"
              % (NS_SERVER, IP_SERVER, NS_A, IP_A, NS_B, IP_B, SUBNET), flush=True)
        return None

    def tx_bytes(self, ns, dev):
        return int(sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/%s/statistics/tx_bytes" % dev).stdout)

    # ------------------------------------------------------------ processes
    def spawn(self, ns, args, log, env=None):
        f = open(os.path.join(self.work, log), "w+")
        # nothing outlives the test; setpriv, not a preexec_fn: see DIE_WITH_PARENT
        p = subprocess.Popen(DIE_WITH_PARENT + ["ip", "netns", "exec", ns] + args, stdout=f,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.work,
                             env=dict(os.environ, **(env or {})))
        p.logf, p.logname = f, log
        self.procs.append(p)
        return p

    def log(self, p):
        p.logf.flush()
        with open(os.path.join(self.work, p.logname)) as f:
            return f.read()

    def wait_log(self, p, pattern, timeout=60, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(re.findall(pattern, self.log(p))) >= count:
                return
            if p.poll() is not None:
                break
            time.sleep(0.1)
        raise Failed("no %r in %s (exit %s):\n%s%s" % (pattern, p.logname, p.poll(), self.log(p), self.all_logs()))

    def all_logs(self):
        return "".join("\n--- %s\n%s" % (q.logname, self.log(q)) for q in self.procs)

    def wait_exit(self, p, timeout):
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failed("%s did not exit within %d s:\n%s" % (p.logname, timeout, self.log(p)))

    def host_processes(self):
        """Processes in the host namespaces (only ours can be there: we made them)."""
        return {ns: [(pid, cmdline(pid)) for pid in ns_pids(ns)] for ns in (NS_A, NS_B)}

    def wait_hosts_empty(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            left = {ns: ps for ns, ps in self.host_processes().items() if ps}
            if not left:
                return
            time.sleep(0.2)
        raise Failed("processes left in the host namespaces: %s" % left)

    # ------------------------------------------------------------ cleanup
    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()
            p.logf.close()
        # whatever is still inside our namespaces was started by this test (orted, ranks)
        for ns in self.made:
            for pid in ns_pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.2)
        for ns in reversed(self.made):
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if r.returncode != 0:
                print("cleanup: could not delete namespace %s: %s" % (ns, r.stderr.strip()), file=sys.stderr)
        if os.environ.get("SS_KEEP_WORK") == "1":
            print("work folder kept: %s" % self.work, file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------- the test
def prepare(t):
    model = os.path.join(t.work, "export", "matmul.onnx")
    sh(PY, os.path.join(EXAMPLE, "make_model.py"), model)
    out = os.path.join(t.work, "model")
    sh(SHARDSERVE, "shard", model, "--ranks", "8", "--strategy", os.path.join(EXAMPLE, "strategy.json"), "--out", out,
       timeout=120)
    models = [os.path.join(out, "device%d" % i, "matmul.onnx") for i in range(8)]
    for m in models:
        if not os.path.exists(m):
            raise Failed("shard wrote no %s" % m)
    sv = os.path.join(t.work, "servables", "matmul")
    os.makedirs(sv)
    shutil.copy(os.path.join(EXAMPLE, "matmul", "servable.json"), sv)
    # rank_table_2hosts.json (server_list form): A holds ranks 0-3, B 4-7
    table = {"version": "1.0", "server_count": "2", "status": "completed", "server_list": [
        {"server_id": ip, "host_nic_ip": "reserve",
         "device": [{"device_id": str(d), "device_ip": "192.%d.27.%d" % (d + 1, h + 6), "rank_id": str(h * 4 + d)}
                    for d in range(4)]} for h, ip in enumerate((IP_A, IP_B))]}
    # rank_table_interleaved.json (group_list form, a server per instance): A holds ranks 0,1,4,5
    # and B 2,3,6,7, so Open MPI's sequential mapper has to place them
    interleaved = {"version": "1.0", "status": "completed", "group_count": "1", "group_list": [
        {"group_name": "hccl_world_group", "instance_count": "8", "device_count": "8", "instance_list": [
            {"rank_id": str(r), "server_id": IP_A if r % 4 < 2 else IP_B,
             "devices": [{"device_id": str(r % 2 + 2 * (r // 4)), "device_ip": "192.%d.27.6" % (r + 1)}]}
            for r in range(8)]}]}
    tables = []
    for name, tab in (("rank_table_2hosts.json", table), ("rank_table_interleaved.json", interleaved)):
        tables.append(os.path.join(t.work, name))
        with open(tables[-1], "w") as f:
            json.dump(tab, f)
    # mpirun's remote shell: run the daemon inside the namespace of the host it names, with a
    # hostname of its own
    rsh = os.path.join(t.work, "rsh.sh")
    with open(rsh, "w") as f:
        f.write("#!/bin/sh\n# mpirun's rsh agent for this test: rsh.sh HOST COMMAND...\nhost=$1\nshift\n"
                "case $host in\n%s  *) echo \"rsh.sh: unknown host $host\" >&2; exit 1 ;;\nesac\n"
                "exec ip netns exec \"$ns\" unshare -u sh -c \"hostname $ns && exec $*\"\n"
                % "".join("  %s) ns=%s ;;\n" % (ip, ns) for ip, ns in NS_OF.items()))
    os.chmod(rsh, 0o755)
    ompi = os.path.join(t.work, "ompi")
    os.makedirs(ompi)
    mpirun_args = ("--mca plm_rsh_agent %s --mca btl self,vader,tcp --mca btl_tcp_if_include %s "
                   "--mca oob_tcp_if_include %s --mca orte_tmpdir_base %s --mca btl_vader_backing_directory %s"
                   % (rsh, SUBNET, SUBNET, ompi, ompi))
    return models, tables, mpirun_args


def start_serve(t, rt, n):
    p = t.spawn(NS_SERVER, [SHARDSERVE, "serve", "--servable-dir", os.path.join(t.work, "servables"),
                            "--servable", "matmul", "--version", "1", "--rank-table", rt,
                            "--distributed-address", WORKER, "--wait-agents", "0", "--grpc", GRPC,
                            "--rest", IP_SERVER + ":1500"], "serve-%d.log" % n)
    t.wait_log(p, r"Serving gRPC server start success")
    return p


def start_agents(t, models, env, log, extra=()):
    return t.spawn(NS_SERVER, [SHARDSERVE, "agents", "--comm", "mpi", "--distributed-address", WORKER,
                               "--model-files", ",".join(models)] + list(extra), log, env=env)


CLIENT = """
import sys
import numpy as np
from shardserve_client import Client
r = Client(sys.argv[1], "matmul", "predict").infer({"x": np.ones((128, 96), np.float32)})
if not isinstance(r, list) or "y" not in r[0]:
    print("client got", r)
    sys.exit(1)
y = r[0]["y"]
print("y", y.dtype, y.shape, float(y.min()), float(y.max()))
sys.exit(0 if y.dtype == np.float32 and y.shape == (128, 16) and (y == -48).all() else 1)
"""


def client(t):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), no_proxy="*", http_proxy="", https_proxy="")
    r = subprocess.run(["ip", "netns", "exec", NS_SERVER, PY, "-c", CLIENT, GRPC], capture_output=True, text=True,
                       env=env, timeout=60)
    if r.returncode != 0:
        raise Failed("client in %s: exit %d\n%s%s%s" % (NS_SERVER, r.returncode, r.stdout, r.stderr, t.all_logs()))
    return r.stdout.strip()


def rank_placement(t):
    """{namespace: sorted world ranks of the agent processes running there}"""
    out = {}
    for ns, procs in t.host_processes().items():
        out[ns] = sorted(int(environ_of(pid).get(b"OMPI_COMM_WORLD_RANK", b"-1")) for pid, cmd in procs
                         if " agent-rank-mpi " in cmd and not cmd.startswith("sh "))
    return out


def run(t):
    models, (rt, rt_interleaved), mpirun_args = prepare(t)
    env = {"SHARDSERVE_MPIRUN_ARGS": mpirun_args}
    serve = start_serve(t, rt, 1)

    # 1. the model-file count is the whole rank table's, MindSpore-style error otherwise
    a = start_agents(t, models[:4], env, "agents-count.log")
    rc = t.wait_exit(a, 60)
    if rc == 0 or "Card count [0,1,2,3,4,5,6,7] described rank table does not equal to model files size 4" \
            not in t.log(a):
        raise Failed("4 model files for 8 ranks: exit %d\n%s" % (rc, t.log(a)))
    print("ok   4 model files for 8 ranks refused: %s" % t.log(a).strip().splitlines()[-1], flush=True)

    # 2. mpirun failing (its remote shell fails) is restarted by --restart, then fails the launcher,
    #    naming mpirun
    a = start_agents(t, models, {"SHARDSERVE_MPIRUN_ARGS": mpirun_args.replace(
        os.path.join(t.work, "rsh.sh"), "/bin/false")}, "agents-badrsh.log",
        ("--max-restarts", "1", "--restart-backoff-ms", "100"))
    rc = t.wait_exit(a, 90)
    if (rc == 0 or not re.search(r"mpirun \(pid \d+\) exited with status", t.log(a))
            or "restarting the group in 100 ms (try 1 of 1)" not in t.log(a)
            or "giving up after 1 restarts in a row" not in t.log(a)):
        raise Failed("mpirun failing: launcher exit %d\n%s" % (rc, t.log(a)))
    print("ok   a failing mpirun is started again, then fails the launcher: %s"
          % t.log(a).strip().splitlines()[-1], flush=True)
    t.wait_hosts_empty()

    # 3. the seed example through 8 ranks on two hosts
    tx0 = t.tx_bytes(NS_A, VETH_A)
    agents = start_agents(t, models, env, "agents-1.log")
    t.wait_log(serve, r" is ready", timeout=120)
    out = client(t)
    tx1 = t.tx_bytes(NS_A, VETH_A)
    print("ok   Python client in %s through 8 ranks on two hosts: %s" % (NS_SERVER, out), flush=True)
    placement = rank_placement(t)
    if placement != {NS_A: [0, 1, 2, 3], NS_B: [4, 5, 6, 7]}:
        raise Failed("rank placement %s, want 0-3 in %s (%s) and 4-7 in %s (%s)" % (placement, NS_A, IP_A, NS_B, IP_B))
    print("ok   ranks 0-3 run in %s (%s), 4-7 in %s (%s)" % (NS_A, IP_A, NS_B, IP_B), flush=True)
    if tx1 - tx0 < 16384:
        raise Failed("only %d bytes left host A over its veth" % (tx1 - tx0))
    print("ok   %d bytes left host A over %s" % (tx1 - tx0, VETH_A), flush=True)
    # the collectives ran over MPI's tcp btl between the hosts: ranks in A hold connections to B
    conns = sh("ip", "netns", "exec", NS_A, "ss", "-Htnp", "state", "established", "dst", IP_B).stdout
    if "shardserve" not in conns:
        raise Failed("no TCP connection from a rank in %s to %s:\n%s" % (NS_A, IP_B, conns))
    print("ok   %d TCP connections between the ranks of A and B" % len(conns.strip().splitlines()), flush=True)
    for _ in range(3):
        client(t)

    # 4. SIGTERM to the launcher is forwarded to mpirun: every rank stops, the launcher exits 0
    agents.send_signal(signal.SIGTERM)
    rc = t.wait_exit(agents, 40)
    if rc != 0:
        raise Failed("launcher after SIGTERM: exit %d\n%s" % (rc, t.log(agents)))
    t.wait_hosts_empty()
    print("ok   SIGTERM to the launcher: exit 0, nothing left in the host namespaces", flush=True)

    # 5. the agents exit when the worker goes away (server SIGKILLed); with --restart never, so
    #    does the launcher
    agents = start_agents(t, models, env, "agents-2.log", ("--restart", "never"))
    deadline = time.time() + 120
    while True:  # the worker printed "is ready" once; now it is ready again when a request succeeds
        try:
            client(t)
            break
        except Failed:
            if time.time() > deadline or agents.poll() is not None:
                raise
            time.sleep(0.5)
    os.killpg(serve.pid, signal.SIGKILL)
    serve.wait()
    rc = t.wait_exit(agents, 60)
    t.wait_hosts_empty()
    print("ok   worker killed: the ranks and the launcher (exit %d) went away" % rc, flush=True)

    # 6. a rank table whose hosts' ranks are not contiguous: world rank r still runs on rank r's IP
    serve = start_serve(t, rt_interleaved, 2)
    agents = start_agents(t, models, env, "agents-3.log")
    t.wait_log(serve, r" is ready", timeout=120)
    out = client(t)
    placement = rank_placement(t)
    if placement != {NS_A: [0, 1, 4, 5], NS_B: [2, 3, 6, 7]}:
        raise Failed("interleaved rank placement %s, want 0,1,4,5 in %s and 2,3,6,7 in %s" % (placement, NS_A, NS_B))
    print("ok   interleaved rank table: ranks 0,1,4,5 in %s, 2,3,6,7 in %s; %s" % (NS_A, NS_B, out), flush=True)
    agents.send_signal(signal.SIGINT)
    rc = t.wait_exit(agents, 40)
    if rc != 0:
        raise Failed("launcher after SIGINT: exit %d\n%s" % (rc, t.log(agents)))
    t.wait_hosts_empty()
    print("ok   SIGINT to the launcher: exit 0, nothing left in the host namespaces", flush=True)


def main(body=run, seconds=TOTAL_SECONDS, cleanup=None, title="two hosts"):
    """Runs body(t) in fresh namespaces (the generative tests bring their own body, time limit
    and cleanup of what they made besides)."""
    t = TwoHosts()
    rc = 1
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(Failed("the test ran over %d s" % seconds)))
    signal.alarm(seconds)
    try:
        reason = t.make_namespaces()
        if reason:
            print("SKIP: %s" % reason, flush=True)
            rc = SKIP
        else:
            body(t)
            rc = 0
    except Exception:
        traceback.print_exc()
    finally:
        signal.alarm(0)
        t.close()
        if cleanup:
            cleanup()
        left = [ns for ns in (NS_SERVER, NS_A, NS_B)
                if ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()]
        if left:
            print("FAIL namespaces left behind: %s" % left)
            rc = 1 if rc == 0 else rc
    if rc != SKIP:
        print("%s: %s" % (title, "passed" if rc == 0 else "FAILED"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
