#!/usr/bin/python3
"""Generation served over MPI across two network-namespace hosts: a tiny GPT-2 or Llama
(tests/generative/models.py, CASE_DIR from the gen_export_* fixture) sharded with
`shard --kv-pool`, served by `shardserve serve` as a generative servable, its ranks started by
one `shardserve agents --comm mpi` through mpirun on hosts A and B (netns_hosts.py: namespaces
joined by a bridge of a private subnet, MPI restricted to it).

Three splits: 2 ranks (one per host: every collective crosses), 4 ranks (2 on A, 2 on B: the
head-parallel AllReduces and the vocabulary AllGather run within and across the hosts) and 16 ranks
in 2 pipeline stages, stage 0 (ranks 0-7) on A and stage 1 (8-15) on B, so the activations' Send/Recv
between the stages crosses the hosts (MindSpore's rank table rules want each block of 8 ranks of a
pipelined servable on one server, so a pipeline over two hosts needs 8 ranks per stage). For each: the 64 greedy tokens through gRPC and the first
16 through MindSpore REST equal PyTorch's; ranks run where the rank table puts them (read from each
rank's OMPI_COMM_WORLD_RANK); bytes crossed A's veth during generation. Exit 77 only when network
namespaces cannot be made here.

The 2-rank split runs under `agents --restart on-failure`, with the heartbeat and comm timeouts at
30 s; after its check, the rank on host B is stopped, a generation is admitted (it waits on that
rank), and the rank is SIGKILLed: the generation fails within 4 s naming the lost rank (so the kill
was noticed, not a timeout), mpirun is started again by the launcher, the ranks register on both
hosts again and the next generation equals PyTorch.

Usage: test_gen_two_hosts.py CASE_DIR"""

import os
import signal
import subprocess
import sys
import time

import numpy as np

import netns_hosts as nh

CASE = sys.argv[1]
PROMPT = np.load(os.path.join(CASE, "prompt.npy"))
REF = [int(x) for x in np.load(os.path.join(CASE, "ref_tokens.npy"))]


def rank_lost(t, serve, agents):
    """Rank 1 (host B) SIGKILLed while a generation waits on it; the job restarts and serves."""
    victim = [pid for pid, cmd in t.host_processes()[nh.NS_B] if " agent-rank-mpi " in cmd
              and not cmd.startswith("sh ")]
    if len(victim) != 1:
        raise nh.Failed("rank processes on %s: %s" % (nh.NS_B, victim))
    victim = victim[0]
    env = dict(os.environ, PYTHONPATH=os.path.join(nh.th.ROOT, "python"), no_proxy="*", http_proxy="",
               https_proxy="")
    client = subprocess.Popen(["ip", "netns", "exec", nh.NS_SERVER, nh.th.PY, "-c", ONE_GRPC, "gen",
                               ",".join(str(int(x)) for x in PROMPT), str(len(REF)), nh.th.GRPC],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env)
    try:
        line = client.stdout.readline()  # imported and connected: the request goes out on a newline
        if line.strip() != "ready":
            raise nh.Failed("client: %s%s" % (line, client.communicate(timeout=30)[0]))
        os.kill(victim, signal.SIGSTOP)
        client.stdin.write("\n")
        client.stdin.flush()
        deadline = time.time() + 30
        while nh.metric("shardserve_sequences", "running") < 1:
            if time.time() > deadline or client.poll() is not None:
                raise nh.Failed("the generation never ran (client exit %s)" % client.poll())
            time.sleep(0.05)
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        out = client.stdout.read()
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    took = time.time() - t_kill
    if "error" not in out or "pid %d" % victim not in out or took > 4:
        raise nh.Failed("after rank 1 (pid %d) was killed, %.1f s: %s\n%s" % (victim, took, out, t.all_logs()))
    t.wait_log(agents, r"restarting the group in", timeout=60)
    t.wait_log(serve, r"all 2 ranks registered, ready", timeout=180, count=2)
    got = nh.generate(t, "gen", PROMPT, len(REF))
    if got["grpc"] != REF or got["rest"] != REF:
        raise nh.Failed("after the restart: %s\nwant %s\n%s" % (got, REF, t.all_logs()))
    print("ok   rank 1 on %s (pid %d) SIGKILLed while a generation waited on it: failed %.1f s later "
          "(%s); mpirun started again, the next %d tokens equal PyTorch's"
          % (nh.IP_B, victim, took, out.strip()[-160:], len(REF)), flush=True)


ONE_GRPC = """
import sys
import numpy as np
import shardserve_client as ssc
inst = {"prompt": np.asarray([int(x) for x in sys.argv[2].split(",")], np.int64),
        "max_tokens": np.int64(int(sys.argv[3])), "temperature": np.float32(0), "top_k": np.int64(0),
        "seed": np.int64(0)}
client = ssc.Client(sys.argv[4], sys.argv[1], "generate")
print("ready", flush=True)
sys.stdin.readline()
print(client.infer([inst]), flush=True)
"""


def one_split(t, ranks, stages, lose_a_rank=False):
    tag = "%dx%d" % (ranks, stages)
    models = nh.shard(t, os.path.join(CASE, "model.onnx"), ranks, stages, "model-" + tag, ("--kv-pool",))
    nh.servable(t, "gen", ranks, stages)
    half = ranks // 2
    table = nh.rank_table(t, [nh.IP_A] * half + [nh.IP_B] * half, "rank_table_%s.json" % tag)
    # losing a rank: the heartbeat and comm timeouts far above the 4 s the failure may take, so
    # that only noticing the kill can fail the generation in time
    slow = ("--heartbeat-timeout-ms", "30000") if lose_a_rank else ()
    serve, agents = nh.start(t, "gen", table, models, nh.mpirun_args(t), tag,
                             restart="on-failure" if lose_a_rank else "never", serve_extra=slow,
                             agents_extra=("--comm-timeout-ms", "30000") if lose_a_rank else ())
    t.wait_log(serve, r" is ready", timeout=180)
    placement = nh.th.rank_placement(t)
    if placement != {nh.NS_A: list(range(half)), nh.NS_B: list(range(half, ranks))}:
        raise nh.Failed("rank placement %s, want 0-%d in %s and the rest in %s" % (
            placement, half - 1, nh.NS_A, nh.NS_B))
    tx0 = t.tx_bytes(nh.NS_A, nh.th.VETH_A)
    started = time.time()
    got = nh.generate(t, "gen", PROMPT, len(REF))
    took = time.time() - started
    crossed = t.tx_bytes(nh.NS_A, nh.th.VETH_A) - tx0
    if got["grpc"] != REF:
        raise nh.Failed("%s gRPC: %s\nwant %s\n%s" % (tag, got["grpc"], REF, t.all_logs()))
    if got["rest"] != REF:
        raise nh.Failed("%s REST: %s\nwant %s" % (tag, got["rest"], REF))
    if crossed < 4096:
        raise nh.Failed("%s: only %d bytes left host A over its veth while generating" % (tag, crossed))
    print("ok   %d ranks in %d stage(s), ranks 0-%d on %s and %d-%d on %s over MPI: %d greedy tokens "
          "equal PyTorch's through gRPC and REST (%.1f s for both; %d bytes left A)"
          % (ranks, stages, half - 1, nh.IP_A, half, ranks - 1, nh.IP_B, len(REF), took, crossed), flush=True)
    if lose_a_rank:
        rank_lost(t, serve, agents)
    nh.stop(t, agents, serve)


def run(t):
    one_split(t, 2, 1, lose_a_rank=True)
    one_split(t, 4, 1)
    one_split(t, 16, 2)


if __name__ == "__main__":
    sys.exit(nh.main(run, 540, "generation on two hosts"))
