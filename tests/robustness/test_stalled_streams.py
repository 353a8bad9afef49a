#!/usr/bin/python3
"""Stalled gRPC streams against a real serve + 1 agent (issue 14): bench/bench_stalled_streams.py's
attack, shorter. 10 HTTP/2 connections keep 100 Predict streams open each, every stream announcing
a 95 MB message and sending as much of it as serve's windows allow (up to 4 MB) before going
silent. Before receive slots, libgrpc opened each stream's window to the announced size and parked
1.4-1.9 GB; now at most --grpc-recv-slots calls ask for their message at once and the rest hold
64 KiB each. Checked, same run: serve's peak RSS (VmHWM) <= 3 x the 100 MB message limit + 100 MB;
gRPC health and REST /health/live answer within 1 s and a legitimate Predict on a new connection
within 2 s throughout (each probe's reply checked); serve reset streams (the slots' eviction);
a predict after the attack is answered; SIGTERM ends serve with status 0.
Needs python3-h2 (scripts/install-deps.sh)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "bench"))

import bench_stalled_streams as attack  # noqa: E402

SANITIZED = os.environ.get("SS_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
SLOW = 2 if SANITIZED else 1  # the sanitizers slow serve down; the bounds scale with them
SECONDS = 10


def main():
    attack.setup()
    row = attack.one_config([], SECONDS)
    stats, probes, failures = row["stats"], row["probes"], row["failures"]
    worst = {k: max(v) if v else float("inf") for k, v in probes.items()}
    print("attack: %d streams opened, %d reset by serve, %.0f MB pushed; peak RSS %.0f MB (bound %d)"
          % (stats["opened"], stats["reset"], stats["pushed_mb"], row["peak_mb"], attack.RSS_BOUND_MB))
    print("slowest: gRPC health %.0f ms, legitimate predict %.0f ms, /health/live %.0f ms "
          "(%d probes each)" % (worst["health"] * 1e3, worst["legit"] * 1e3, worst["live"] * 1e3,
                                len(probes["health"])))
    errors = []
    if stats["errors"]:
        errors.append("the attacker's connections failed: %s" % stats["errors"][:3])
    if not SANITIZED and row["peak_mb"] > attack.RSS_BOUND_MB:
        errors.append("peak RSS %.0f MB over %d MB" % (row["peak_mb"], attack.RSS_BOUND_MB))
    for name, bound in (("health", 1.0), ("legit", 2.0), ("live", 1.0)):
        if failures[name]:
            errors.append("%s probes failed: %s" % (name, failures[name][:2]))
        if len(probes[name]) < 5 or worst[name] > bound * SLOW:
            errors.append("%s: %d probes, slowest %.2f s (bound %.0f s)"
                          % (name, len(probes[name]), worst[name], bound * SLOW))
    if stats["opened"] < 1000 or stats["reset"] == 0:
        errors.append("the attack did not run as meant: %s" % stats)
    if not row["after_ok"]:
        errors.append("no answer after the attack")
    if row["exit"] != 0:
        errors.append("serve exited with %s after SIGTERM" % row["exit"])
    for e in errors:
        print("FAIL: " + e)
    print("%d passed, %d failed" % (0 if errors else 1, 1 if errors else 0))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
