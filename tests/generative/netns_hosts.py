"""Two namespace "hosts" for the generative tests that run agents over MPI
(test_gen_two_hosts.py, test_gen_cgroup.py): the namespaces, bridge and process handling of
tests/serving/test_two_hosts.py (TwoHosts), plus what a generative servable needs on top of them:
its servable folder, a rank table placing its ranks on hosts A and B, mpirun's remote shell (which
can first move each host's daemon, and so every rank it starts there, into a memory cgroup of
that host), and a client that generates through gRPC and REST from the server namespace."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "serving"))
import test_two_hosts as th  # noqa: E402

SKIP, Failed, TwoHosts = th.SKIP, th.Failed, th.TwoHosts
NS_SERVER, NS_A, NS_B, IP_A, IP_B = th.NS_SERVER, th.NS_A, th.NS_B, th.IP_A, th.IP_B
METHOD = {"name": "generate", "outputs": ["tokens", "finish_reason"],
          "inputs": ["prompt", "max_tokens", "temperature", "top_k", "seed"]}


def shard(t, model, ranks, stages, tag, extra=()):
    """Shards model into t.work/tag; returns the rank model paths."""
    out = os.path.join(t.work, tag)
    th.sh(th.SHARDSERVE, "shard", model, "--ranks", str(ranks), "--stages", str(stages), "--out", out,
          "--quiet", *extra, timeout=600)
    base = os.path.splitext(os.path.basename(model))[0]
    return [os.path.join(out, "device%d" % r, base + ".onnx") for r in range(ranks)]


def servable(t, name, ranks, stages, max_context=256, kv_cache_mb=None):
    folder = os.path.join(t.work, "servables", name)
    os.makedirs(folder, exist_ok=True)
    cfg = {"distributed": {"rank_size": ranks, "stage_size": stages, "with_batch_dim": False},
           "methods": [METHOD], "generate": {"max_running": 8, "max_context": max_context}}
    if kv_cache_mb:
        cfg["generate"]["kv_cache_mb"] = kv_cache_mb
    with open(os.path.join(folder, "servable.json"), "w") as f:
        json.dump(cfg, f)


def rank_table(t, hosts, name):
    """hosts: the host IP of each rank, in rank order."""
    servers = []
    for ip in dict.fromkeys(hosts):
        devices = [{"device_id": str(d), "device_ip": "192.%d.27.%d" % (d + 1, len(servers) + 6),
                    "rank_id": str(r)} for d, r in enumerate(r for r, h in enumerate(hosts) if h == ip)]
        servers.append({"server_id": ip, "host_nic_ip": "reserve", "device": devices})
    path = os.path.join(t.work, name)
    with open(path, "w") as f:
        json.dump({"version": "1.0", "server_count": str(len(servers)), "status": "completed",
                   "server_list": servers}, f)
    return path


def mpirun_args(t, cgroups=None):
    """SHARDSERVE_MPIRUN_ARGS for the two hosts; cgroups: {host IP: cgroup.procs path} that the
    host's daemon joins before it starts its ranks (children inherit the cgroup)."""
    rsh = os.path.join(t.work, "rsh-%d.sh" % len(os.listdir(t.work)))
    hosts = "".join("  %s) ns=%s cg=%s ;;\n" % (ip, ns, (cgroups or {}).get(ip, ""))
                    for ip, ns in th.NS_OF.items())
    with open(rsh, "w") as f:
        f.write("#!/bin/sh\n# mpirun's rsh agent for this test: rsh.sh HOST COMMAND...\nhost=$1\nshift\n"
                "case $host in\n%s  *) echo \"rsh.sh: unknown host $host\" >&2; exit 1 ;;\nesac\n"
                "if [ -n \"$cg\" ]; then echo $$ >\"$cg\" || exit 1; fi\n"
                "exec ip netns exec \"$ns\" unshare -u sh -c \"hostname $ns && exec $*\"\n" % hosts)
    os.chmod(rsh, 0o755)
    ompi = os.path.join(t.work, "ompi")
    os.makedirs(ompi, exist_ok=True)
    return ("--mca plm_rsh_agent %s --mca btl self,vader,tcp --mca btl_tcp_if_include %s "
            "--mca oob_tcp_if_include %s --mca orte_tmpdir_base %s --mca btl_vader_backing_directory %s"
            % (rsh, th.SUBNET, th.SUBNET, ompi, ompi))


def start(t, name, table, models, args, tag, wait_agents=0, env=None, restart="never",
          serve_extra=(), agents_extra=()):
    """serve + one `agents --comm mpi --restart RESTART` (with env added) in the server namespace;
    returns (serve, agents)."""
    serve = t.spawn(NS_SERVER, [th.SHARDSERVE, "serve", "--servable-dir", os.path.join(t.work, "servables"),
                                "--servable", name, "--version", "1", "--rank-table", table,
                                "--distributed-address", th.WORKER, "--wait-agents", str(wait_agents),
                                "--grpc", th.GRPC, "--rest", th.IP_SERVER + ":1500"] + list(serve_extra),
                    "serve-%s.log" % tag)
    t.wait_log(serve, r"Serving gRPC server start success")
    agents = t.spawn(NS_SERVER, [th.SHARDSERVE, "agents", "--comm", "mpi", "--restart", restart,
                                 "--distributed-address", th.WORKER, "--model-files", ",".join(models)]
                     + list(agents_extra), "agents-%s.log" % tag, env=dict(env or {}, SHARDSERVE_MPIRUN_ARGS=args))
    return serve, agents


CLIENT = """
import json, sys, urllib.error, urllib.request
import numpy as np
import shardserve_client as ssc
name, prompt, steps = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
inst = {"prompt": np.asarray(prompt, np.int64), "max_tokens": np.int64(steps),
        "temperature": np.float32(0), "top_k": np.int64(0), "seed": np.int64(0)}
r = ssc.Client(sys.argv[4], name, "generate").infer([inst])
grpc = [int(x) for x in r[0]["tokens"]] if isinstance(r, list) and "tokens" in r[0] else str(r)[:400]
body = json.dumps({"instances": [{"prompt": prompt, "max_tokens": steps, "temperature": 0.0,
                                  "top_k": 0, "seed": 0}]}).encode()
req = urllib.request.Request("http://%s/model/%s:generate" % (sys.argv[5], name), data=body, method="POST",
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=120) as f:
        reply = json.loads(f.read())
    rest = reply["instances"][0].get("tokens") if "instances" in reply else "REST: %s" % reply
except urllib.error.HTTPError as e:
    rest = "REST: HTTP %d %s" % (e.code, e.read()[:400])
except Exception as e:
    rest = "REST: %r" % e
print(json.dumps({"grpc": grpc, "rest": rest}))
"""


def generate(t, name, prompt, steps, timeout=300):
    """Greedy tokens through gRPC and through REST, from the server namespace: {grpc:, rest:}."""
    env = dict(os.environ, PYTHONPATH=os.path.join(th.ROOT, "python"), no_proxy="*", http_proxy="",
               https_proxy="")
    r = subprocess.run(["ip", "netns", "exec", NS_SERVER, th.PY, "-c", CLIENT, name,
                        ",".join(str(int(x)) for x in prompt), str(steps), th.GRPC, th.IP_SERVER + ":1500"],
                       capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise Failed("client: exit %d\n%s%s%s" % (r.returncode, r.stdout, r.stderr, t.all_logs()))
    return json.loads(r.stdout.strip().splitlines()[-1])


def metric(name, state):
    """One series of serve's /metrics (REST, from the server namespace), or -1."""
    r = subprocess.run(["ip", "netns", "exec", NS_SERVER, "curl", "-s", "--noproxy", "*", "-m", "5",
                        "http://%s:1500/metrics" % th.IP_SERVER], capture_output=True, text=True, timeout=30)
    for line in r.stdout.splitlines():
        if line.startswith(name + "{") and 'state="%s"' % state in line:
            return float(line.split()[-1])
    return -1


def stop(t, *procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(15)
    for p in procs:
        t.wait_exit(p, 60)
    t.wait_hosts_empty()


def main(run, seconds, title, cleanup=None):
    """Runs run(t) in fresh namespaces with a time limit, then cleanup() (if given) and the
    namespaces' cleanup whatever happened; prints "title: passed/FAILED". Exit status (77: no
    namespaces here)."""
    return th.main(run, seconds, cleanup, title)
