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

Usage: test_gen_two_hosts.py CASE_DIR"""

import os
import sys
import time

import numpy as np

import netns_hosts as nh

CASE = sys.argv[1]
PROMPT = np.load(os.path.join(CASE, "prompt.npy"))
REF = [int(x) for x in np.load(os.path.join(CASE, "ref_tokens.npy"))]


def one_split(t, ranks, stages):
    tag = "%dx%d" % (ranks, stages)
    models = nh.shard(t, os.path.join(CASE, "model.onnx"), ranks, stages, "model-" + tag, ("--kv-pool",))
    nh.servable(t, "gen", ranks, stages)
    half = ranks // 2
    table = nh.rank_table(t, [nh.IP_A] * half + [nh.IP_B] * half, "rank_table_%s.json" % tag)
    serve, agents = nh.start(t, "gen", table, models, nh.mpirun_args(t), tag)
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
    nh.stop(t, agents, serve)


def run(t):
    one_split(t, 2, 1)
    one_split(t, 4, 1)
    one_split(t, 16, 2)


if __name__ == "__main__":
    sys.exit(nh.main(run, 540, "generation on two hosts"))
