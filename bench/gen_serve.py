#!/usr/bin/python3
"""Generation through a running serve (bench/run_generate_serve.sh starts it): one stream, then
S concurrent streams, each request 64 new tokens from a prompt of the model's test prompt; the
same serve and client for both, rounds interleaved. Prints per-request seconds (p50, p99) and
tokens/s per concurrency, and the aggregate ratio to one stream.

  gen_serve.py GRPC_ADDR PROMPT.npy REF_TOKENS.npy [ROUNDS] [STREAMS ...]

SS_GEN_APPROX=1: bf16 weights; greedy may leave PyTorch's tokens, so they are not checked."""
import os
import statistics
import sys
import threading
import time

import grpc
import numpy as np

import shardserve_client as ssc

ADDR, PROMPT, REF = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 3
LEVELS = [int(a) for a in sys.argv[5:]] or [1, 8, 32]
NEW = 64


def one(i, client, start, out):
    inst = {"prompt": PROMPT.astype(np.int64), "max_tokens": np.int64(NEW),
            "temperature": np.float32(0.0 if i == 0 else 0.8), "seed": np.int64(i)}
    start.wait()
    t0 = time.perf_counter()
    r = client.infer([inst])
    out[i] = (time.perf_counter() - t0, r)


def level(streams):
    """One wave: every client connected first (a channel's connection is not the server's time),
    then all requests let go at once."""
    out = [None] * streams
    clients = [ssc.Client(ADDR, "gen", "generate") for _ in range(streams)]
    for c in clients:
        grpc.channel_ready_future(c.channel).result(timeout=30)
    start = threading.Barrier(streams + 1)
    threads = [threading.Thread(target=one, args=(i, clients[i], start, out))
               for i in range(streams)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    for secs, r in out:
        assert isinstance(r, list) and len(r[0]["tokens"]) == NEW, str(r)[:300]
    if streams == 1 and os.environ.get("SS_GEN_APPROX") != "1":  # greedy: PyTorch's tokens
        got = list(out[0][1][0]["tokens"])
        first = next((i for i, (a, b) in enumerate(zip(got, REF[:NEW])) if a != b), None)
        assert got == list(REF[:NEW]), "tokens differ from PyTorch's from token %s: %s vs %s" % (
            first, got[first:first + 4], list(REF[first:first + 4]))
    return wall, [s for s, _ in out]


def main():
    walls = {s: [] for s in LEVELS}
    lat = {s: [] for s in LEVELS}
    level(1)  # warm-up: the probe and the first plans
    for _ in range(ROUNDS):
        for s in LEVELS:
            wall, secs = level(s)
            walls[s].append(wall)
            lat[s].extend(secs)
    base = NEW / statistics.median(walls[LEVELS[0]]) if LEVELS[0] == 1 else None
    print("| streams | tokens/s (aggregate, median of %d rounds) | vs 1 stream | request s p50 | "
          "request s p99 |" % ROUNDS)
    print("|---:|---:|---:|---:|---:|")
    for s in LEVELS:
        tps = s * NEW / statistics.median(walls[s])
        q = sorted(lat[s])
        p99 = q[min(len(q) - 1, int(0.99 * len(q)))]
        print("| %d | %.1f | %s | %.3f | %.3f |" % (s, tps, "%.2fx" % (tps / base) if base else "-",
                                                  statistics.median(q), p99))


if __name__ == "__main__":
    main()
