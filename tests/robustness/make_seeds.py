#!/usr/bin/python3
"""Seed corpora for the rank-table and servable-config fuzz targets, written at test time into
OUTDIR/rank_table and OUTDIR/servable: the example files shipped in examples/matmul_distributed,
both rank-table forms (server_list, group_list) at several sizes, and servable configs using every
field. (The ONNX target is seeded by tests/onnx/make_models.py's good and bad models.)
Usage: make_seeds.py OUTDIR"""
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "matmul_distributed")


def server_list(n, per_server=8):
    servers = []
    for s in range((n + per_server - 1) // per_server):
        devs = [{"device_id": str(i % per_server), "device_ip": "192.1.27.%d" % i, "rank_id": str(i)}
                for i in range(s * per_server, min(n, (s + 1) * per_server))]
        servers.append({"server_id": "10.0.0.%d" % (s + 1), "device": devs, "host_nic_ip": "reserve"})
    return {"version": "1.0", "server_count": str(len(servers)), "server_list": servers,
            "status": "completed"}


def group_list(n):
    return {"board_id": "0x0000", "status": "completed", "group_count": "1", "group_list": [
        {"group_name": "hccl_world_group", "device_num": str(n), "server_num": "1",
         "instance_count": str(n), "instance_list": [
             {"devices": [{"device_id": str(i), "device_ip": "192.1.27.%d" % i}],
              "rank_id": str(i), "server_id": "127.0.0.1"} for i in range(n)]}]}


def main(out):
    rt = os.path.join(out, "rank_table")
    sv = os.path.join(out, "servable")
    os.makedirs(rt, exist_ok=True)
    os.makedirs(sv, exist_ok=True)
    shutil.copy(os.path.join(EXAMPLE, "rank_table_8pcs.json"), os.path.join(rt, "example_8pcs.json"))
    shutil.copy(os.path.join(EXAMPLE, "matmul", "servable.json"), os.path.join(sv, "example.json"))
    for n in (1, 2, 8, 16):
        json.dump(server_list(n), open(os.path.join(rt, "server_list_%d.json" % n), "w"))
        json.dump(group_list(n), open(os.path.join(rt, "group_list_%d.json" % n), "w"))
    full = {"distributed": {"rank_size": 16, "stage_size": 2, "with_batch_dim": True,
                            "without_batch_dim_inputs": ["mask"]},
            "batching": {"max_batch_size": 8, "max_queue_delay_us": 2000},
            "methods": [{"name": "predict", "inputs": ["x", "mask"], "outputs": ["y"]},
                        {"name": "embed", "inputs": ["x"], "outputs": ["h", "y"]}]}
    json.dump(full, open(os.path.join(sv, "full.json"), "w"), indent=1)
    json.dump({"distributed": {"rank_size": 1}, "methods": [{"name": "m", "inputs": ["a"], "outputs": ["b"]}]},
              open(os.path.join(sv, "minimal.json"), "w"))


if __name__ == "__main__":
    main(sys.argv[1])
