#!/usr/bin/python3
"""Bad inputs to the real `shardserve` command line, table-driven: rank tables breaking each of
MindSpore's rules, bad servable.json files, bad / missing / truncated model files (for `run`,
`shard` and `agents`), bad .npy files for `run` and `infer`, and bad arguments for every
subcommand (unknown flags, missing values, out-of-range numbers).

Every case must exit non-zero (not by a signal) within its timeout, print a message that names the
input (the file, the flag or the value; checked by a pattern per case), and print no sanitizer
report. Each case prints ok/FAIL; the run ends with "N passed, N failed".

In the ASan build (SS_SANITIZED=1) LeakSanitizer stays on: an error path that leaks fails too."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "onnx"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "serving"))
import make_models  # noqa: E402
from cluster import rank_table  # noqa: E402

SHARDSERVE = os.environ.get("SHARDSERVE", "shardserve")
SANITIZED = os.environ.get("SS_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
TIMEOUT = 60 if SANITIZED else 20
SAN_RE = re.compile(r"(AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|"
                    r"Segmentation fault|core dumped)")

W = tempfile.mkdtemp(prefix="ss-rob-bad-")
MODELS = os.path.join(W, "models")
make_models.main(MODELS)
GOOD = os.path.join(MODELS, "good.onnx")          # y = -(x[128,96] @ W[96,16])
X = os.path.join(W, "x.npy")
np.save(X, np.ones((128, 96), np.float32))
# A free port nobody listens on (bound then closed; agents/infer must fail without hanging).
DEAD = "127.0.0.1:9"


def wfile(name, content):
    path = os.path.join(W, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
    return path


def wjson(name, obj):
    return wfile(name, json.dumps(obj))


# ------------------------------------------------------------------ cases
CASES = []  # (group, name, argv, pattern the combined output must match)


def case(group, name, argv, pattern):
    CASES.append((group, name, [str(a) for a in argv], pattern))


# ---- rank tables: `serve` loads the servable config and the rank table before it listens.
SV = os.path.join(W, "servables")


def servable(name, cfg):
    d = os.path.join(SV, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "servable.json"), "w") as f:
        f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))


def cfg(ranks, stages=1, **extra):
    c = {"distributed": {"rank_size": ranks, "stage_size": stages, "with_batch_dim": False},
         "methods": [{"name": "predict", "inputs": ["x"], "outputs": ["y"]}]}
    c.update(extra)
    return c


servable("two", cfg(2))
servable("one", cfg(1))
servable("pipe2", cfg(2, 2))
servable("pipe16", cfg(16, 2))


def serve_args(servable_name, table, servable_dir=SV):
    return [SHARDSERVE, "serve", "--servable-dir", servable_dir, "--servable", servable_name,
            "--rank-table", table, "--distributed-address", "127.0.0.1:0", "--wait-agents", "1",
            "--grpc", "127.0.0.1:0"]


def rt_case(name, table, servable_name="two", pattern=None):
    if isinstance(table, (dict, list)):
        path = wjson("rt/%s.json" % name, table)
    elif isinstance(table, (str, bytes)) and not (isinstance(table, str) and table.startswith("/")):
        path = wfile("rt/%s.json" % name, table)
    else:
        path = table
    case("rank_table", name, serve_args(servable_name, path), pattern or re.escape(os.path.basename(path)))


def rt2():
    return rank_table(2)


def edit(fn):
    t = rt2()
    fn(t)
    return t


def dev(t, i=0):
    return t["server_list"][0]["device"][i]


rt_case("missing_file", os.path.join(W, "rt", "nope.json"))
rt_case("directory", MODELS, pattern=r"models")
rt_case("empty", "")
rt_case("not_json", "server_list: [oops")
rt_case("truncated", json.dumps(rt2())[:70])
rt_case("array_root", [rt2()])
rt_case("no_server_or_group_list", {"version": "1.0", "status": "completed"})
rt_case("server_list_not_list", edit(lambda t: t.update(server_list={"a": 1})))
rt_case("server_without_device", edit(lambda t: t["server_list"][0].pop("device")))
rt_case("device_not_list", edit(lambda t: t["server_list"][0].update(device="0")))
rt_case("server_id_missing", edit(lambda t: t["server_list"][0].pop("server_id")))
rt_case("server_id_number", edit(lambda t: t["server_list"][0].update(server_id=127)))
rt_case("server_id_too_long", edit(lambda t: t["server_list"][0].update(server_id="1" * 300)))
rt_case("device_id_missing", edit(lambda t: dev(t).pop("device_id")))
rt_case("device_id_number", edit(lambda t: dev(t).update(device_id=0)))
rt_case("device_id_leading_zero", edit(lambda t: dev(t, 1).update(device_id="01")))
rt_case("device_id_negative", edit(lambda t: dev(t).update(device_id="-1")))
rt_case("device_id_huge", edit(lambda t: dev(t).update(device_id="99999999999999999999")))
rt_case("device_id_8", edit(lambda t: dev(t, 1).update(device_id="8")))
rt_case("rank_id_missing", edit(lambda t: dev(t).pop("rank_id")))
rt_case("rank_id_not_string", edit(lambda t: dev(t).update(rank_id=0)))
rt_case("rank_id_out_of_order", edit(lambda t: (dev(t).update(rank_id="1"), dev(t, 1).update(rank_id="0"))))
rt_case("rank_id_gap", edit(lambda t: dev(t, 1).update(rank_id="2")))
rt_case("no_device", edit(lambda t: t["server_list"][0].update(device=[])))
rt_case("same_device_twice", edit(lambda t: dev(t, 1).update(device_id="0")))
rt_case("rank_size_mismatch", rank_table(3))
rt_case("rank_size_mismatch_one", rank_table(2), servable_name="one")
rt_case("stages_need_8_ranks", rank_table(2), servable_name="pipe2")
t16 = rank_table(16)
t16["server_list"][0]["device"][9]["device_id"] = "3"
t16["server_list"][0]["device"][3]["device_id"] = "1"
rt_case("stage_block_device_order", t16, servable_name="pipe16")
t16 = rank_table(16)
t16["server_list"] = [{"server_id": "10.0.0.%d" % (i // 4), "host_nic_ip": "reserve",
                       "device": [t16["server_list"][0]["device"][j] for j in range(i, i + 4)]}
                      for i in range(0, 16, 4)]
rt_case("stage_block_split_servers", t16, servable_name="pipe16")
rt_case("group_list_not_list", {"group_list": {"g": {"instance_list": [
    {"devices": [{"device_id": str(i)}], "rank_id": str(i), "server_id": "127.0.0.1"} for i in range(2)]}}})
rt_case("group_without_instance_list", {"group_list": [{"group_name": "g"}]})
rt_case("group_instance_no_devices", {"group_list": [{"instance_list": [
    {"rank_id": "0", "server_id": "127.0.0.1"}, {"rank_id": "1", "server_id": "127.0.0.1"}]}]})
rt_case("group_rank_order", {"group_list": [{"instance_list": [
    {"devices": [{"device_id": "0"}], "rank_id": "1", "server_id": "127.0.0.1"},
    {"devices": [{"device_id": "1"}], "rank_id": "0", "server_id": "127.0.0.1"}]}]})
rt_case("binary_garbage", bytes(range(256)) * 4)
rt_case("deeply_nested", "[" * 100000 + "]" * 100000)

# ---- servable.json (with a good rank table)
GOOD_RT = wjson("rt/good2.json", rank_table(2))
BAD_SV = os.path.join(W, "bad-servables")


def sv_case(name, content, pattern=None, servable_name=None):
    d = os.path.join(BAD_SV, name)
    os.makedirs(d, exist_ok=True)
    if content is not None:
        with open(os.path.join(d, "servable.json"), "wb") as f:
            f.write(content if isinstance(content, bytes) else
                    (content if isinstance(content, str) else json.dumps(content)).encode())
    sname = servable_name or name
    case("servable", name, serve_args(sname, GOOD_RT, BAD_SV), pattern or re.escape(sname))


def meth(**kw):
    m = {"name": "predict", "inputs": ["x"], "outputs": ["y"]}
    m.update(kw)
    return m


def c2(**kw):
    c = cfg(2)
    for k, v in kw.items():
        if k in ("rank_size", "stage_size", "with_batch_dim", "without_batch_dim_inputs", "broadcast_inputs",
                 "enable_pipeline_infer"):
            if v is None:
                c["distributed"].pop(k)
            else:
                c["distributed"][k] = v
        elif v is None:
            c.pop(k)
        else:
            c[k] = v
    return c


sv_case("models_with_top_level_batching",
        {"models": [{"name": "m", "distributed": {"rank_size": 2, "stage_size": 1}}],
         "methods": [meth(stages=[{"kind": "model", "model": "m", "inputs": ["x"], "outputs": ["y"]}])],
         "batching": {"max_batch_size": 8}}, pattern="goes in each model's entry")
sv_case("missing_json", None)
sv_case("missing_folder", None, servable_name="not_there", pattern="not_there")
sv_case("dotdot", None, servable_name="..", pattern=r"\.\.")
sv_case("slash", None, servable_name="a/b", pattern="a/b")
sv_case("empty", "")
sv_case("not_json", "{distributed: 2}")
sv_case("truncated", json.dumps(cfg(2))[:30])
sv_case("array_root", [cfg(2)])
sv_case("no_distributed", c2(distributed=None))
sv_case("distributed_not_object", c2(distributed=[2, 1]))
sv_case("rank_size_missing", c2(rank_size=None))
sv_case("rank_size_zero", c2(rank_size=0))
sv_case("rank_size_negative", c2(rank_size=-2))
sv_case("rank_size_fraction", c2(rank_size=1.5))
sv_case("rank_size_string", c2(rank_size="2"))
sv_case("rank_size_huge", '{"distributed": {"rank_size": 1e300}, "methods": [{"name": "p", "inputs": ["x"], "outputs": ["y"]}]}')
sv_case("rank_size_over_int", c2(rank_size=2**31))
sv_case("stage_size_not_divisor", c2(stage_size=3))
sv_case("stage_size_huge", '{"distributed": {"rank_size": 2, "stage_size": -1e30}, "methods": [{"name": "p", "inputs": ["x"], "outputs": ["y"]}]}')
sv_case("with_batch_dim_string", c2(with_batch_dim="yes"))
sv_case("broadcast_inputs_number", c2(broadcast_inputs=1), pattern="broadcast_inputs")
sv_case("enable_pipeline_infer_string", c2(enable_pipeline_infer="true"), pattern="enable_pipeline_infer")
sv_case("no_batch_inputs_not_list", c2(without_batch_dim_inputs="x"))
sv_case("no_batch_inputs_dup", c2(without_batch_dim_inputs=["x", "x"]))
# a name no method declares would silently leave that input batched: refused, naming the name
# and the inputs it could have meant
sv_case("no_batch_inputs_unknown", c2(without_batch_dim_inputs=["x", "bias"]),
        pattern=r"without_batch_dim_inputs' names 'bias', which is not an input of any method "
                r"\(method 'predict' has inputs x\)")
sv_case("no_batch_inputs_unknown_two_methods",
        c2(without_batch_dim_inputs=["w"], methods=[meth(inputs=["x", "b"]), meth(name="other")]),
        pattern=r"names 'w', which is not an input of any method \(method 'predict' has inputs x, b; "
                r"method 'other' has inputs x\)")
sv_case("batching_not_object", c2(batching=8))
sv_case("max_batch_size_negative", c2(batching={"max_batch_size": -1}))
sv_case("max_queue_delay_huge", c2(batching={"max_queue_delay_us": 1e12}))
sv_case("methods_missing", c2(methods=None))
sv_case("methods_empty", c2(methods=[]))
sv_case("methods_not_list", c2(methods={"predict": {}}))
sv_case("method_no_name", c2(methods=[{"inputs": ["x"], "outputs": ["y"]}]))
sv_case("method_name_empty", c2(methods=[meth(name="")]))
sv_case("method_name_long", c2(methods=[meth(name="m" * 200)]))
sv_case("method_twice", c2(methods=[meth(), meth()]))
sv_case("method_no_inputs", c2(methods=[meth(inputs=None)]))
sv_case("method_inputs_empty", c2(methods=[meth(inputs=[])]))
sv_case("method_inputs_not_list", c2(methods=[meth(inputs="x")]))
sv_case("method_input_number", c2(methods=[meth(inputs=[1])]))
sv_case("method_input_twice", c2(methods=[meth(inputs=["x", "x"])]))
sv_case("method_too_many_inputs", c2(methods=[meth(inputs=["i%d" % i for i in range(65)])]))
sv_case("too_many_methods", c2(methods=[meth(name="m%d" % i) for i in range(17)]))
sv_case("method_not_object", c2(methods=["predict"]))
sv_case("binary_garbage", bytes(range(256)))
sv_case("deeply_nested", '{"distributed": ' + "[" * 100000 + "]" * 100000 + "}")

# ---- model files: run, shard, agents
BADMODELS = {
    "missing": os.path.join(MODELS, "nope.onnx"),
    "empty": os.path.join(MODELS, "empty.onnx"),
    "truncated": os.path.join(MODELS, "truncated.onnx"),
    "text": os.path.join(MODELS, "text.onnx"),
    "random": os.path.join(MODELS, "random.onnx"),
    "directory": os.path.join(MODELS, "ext"),
    "ext_missing": os.path.join(MODELS, "missing", "model.onnx"),
    "ext_short": os.path.join(MODELS, "short", "model.onnx"),
    "ext_escape": os.path.join(MODELS, "escape", "model.onnx"),
    "ext_absolute": os.path.join(MODELS, "absolute", "model.onnx"),
    "ext_badoffset": os.path.join(MODELS, "badoffset", "model.onnx"),
}
good_bytes = open(GOOD, "rb").read()
for cut in (1, 10, len(good_bytes) - 1):
    BADMODELS["cut_%d" % cut] = wfile("models/cut_%d.onnx" % cut, good_bytes[:cut])
BADMODELS["bad_wire_type"] = wfile("models/bad_wire_type.onnx", b"\x0f" + good_bytes[1:])  # field 1, wire type 7
BADMODELS["huge_length"] = wfile("models/huge_length.onnx", b"\x3a\xff\xff\xff\xff\x0f" + good_bytes)  # graph: 4 GB
BADMODELS["unsupported_op"] = os.path.join(MODELS, "unsupported_op.onnx")
BADMODELS["dangling_input"] = os.path.join(MODELS, "dangling_input.onnx")

AGENT_DIRS = []
for name, path in sorted(BADMODELS.items()):
    ext = name.startswith("ext_") or name in ("unsupported_op", "dangling_input")
    pat = re.escape(os.path.basename(path)) if not ext else r"(model\.onnx|weights\.data|mystery|Foo|nowhere|orphan)"
    case("model_run", name, [SHARDSERVE, "run", path, "--input", "x=" + X], pat)
    if name not in ("unsupported_op", "dangling_input"):
        case("model_shard", name, [SHARDSERVE, "shard", path, "--ranks", "2", "--out",
                                   os.path.join(W, "shard-" + name)], pat)
    if name in ("missing", "empty", "truncated", "text", "directory", "cut_10", "bad_wire_type", "huge_length"):
        # a split's folder (group_config.json next to the model) whose model file is bad, against a
        # live server waiting for this rank (started below, before the cases run)
        d = os.path.join(W, "agents-" + name)
        os.makedirs(d, exist_ok=True)
        AGENT_DIRS.append(d)
        target = os.path.join(d, "model.onnx")
        if os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
        elif os.path.exists(path):
            shutil.copy(path, target)
        # a file that is there but does not load: the launcher stops at once, naming it, instead of
        # restarting the group five times (15 s) to load the same bytes (SS_AGENT_EXIT_SHARD)
        loads = os.path.isfile(target)
        case("model_agents", name, [SHARDSERVE, "agents", "--distributed-address", "@WORKER@", "--model-files",
                                    target, "--connect-timeout-ms", "5000"],
             r"(?s)^(?!.*restarting the group in).*could not load its shard " + re.escape(target)
             + r".*not restarting the group" if loads else re.escape(target))

# ---- npy files for run and infer
good_npy = open(X, "rb").read()
NPY = {
    "missing": os.path.join(W, "npy", "nope.npy"),
    "empty": b"",
    "magic_only": b"\x93NUMPY",
    "bad_magic": b"\x93NUMPX" + good_npy[6:],
    "truncated_header": good_npy[:40],
    "truncated_data": good_npy[:len(good_npy) - 7],
    "extra_data": good_npy + b"\0" * 8,
    "bad_version": good_npy[:6] + b"\x09\x00" + good_npy[8:],
    "header_len_huge": good_npy[:8] + b"\xff\xff" + good_npy[10:],
    "header_garbage": good_npy[:10] + b"{" * (len(good_npy[10:good_npy.index(b"\n") + 1]) - 1) + b"\n" + good_npy[good_npy.index(b"\n") + 1:],
    "text": b"1 2 3\n",
    "directory": os.path.join(W, "npy-dir"),
}


def npy_header(descr, shape, fortran=False, body=b""):
    h = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    h = h.encode()
    pad = 64 - (10 + len(h) + 1) % 64
    h += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + body


NPY["object_dtype"] = npy_header("|O", "(2,)", body=b"\0" * 16)
NPY["unknown_dtype"] = npy_header("<q9", "(2,)", body=b"\0" * 16)
NPY["negative_dim"] = npy_header("<f4", "(-1, 96)")
NPY["overflow_dims"] = npy_header("<f4", "(4294967296, 4294967296, 4294967296)")
NPY["shape_not_tuple"] = npy_header("<f4", "'abc'")
NPY["empty_huge_dims"] = npy_header("<f4", "(1099511627776, 0)")  # no bytes, 2^40 rows to walk
NPY["too_many_dims"] = npy_header("<f4", "(" + "1, " * 40 + ")", body=b"\0" * 4)
NPY["wrong_dtype"] = npy_header("<f8", "(128, 96)", body=b"\0" * 8 * 128 * 96)
NPY["wrong_shape"] = npy_header("<f4", "(96, 128, 1)", body=b"\0" * 4 * 128 * 96)
os.makedirs(NPY["directory"], exist_ok=True)
for name, content in sorted(NPY.items()):
    path = content if isinstance(content, str) else wfile("npy/%s.npy" % name, content)
    pat = re.escape(os.path.basename(path)) if name not in ("wrong_dtype", "wrong_shape") \
        else r"(%s|'x'|\bx\b)" % re.escape(os.path.basename(path))
    case("npy_run", name, [SHARDSERVE, "run", GOOD, "--input", "x=" + path], pat)
    if name not in ("wrong_dtype", "wrong_shape"):  # infer only reads the file; the server checks types
        case("npy_infer", name, [SHARDSERVE, "infer", "--address", DEAD, "--servable", "s", "--method", "m",
                                 "--input", "x=" + path, "--timeout-ms", "2000"], pat)
case("npy_run", "unknown_input_name", [SHARDSERVE, "run", GOOD, "--input", "nosuch=" + X], "nosuch")
case("npy_run", "missing_input", [SHARDSERVE, "run", GOOD], r"(\bx\b|--input|usage)")

# ---- CLI arguments, every subcommand
S = SHARDSERVE
case("cli", "no_command", [S], "usage")
case("cli", "unknown_command", [S, "frobnicate"], "frobnicate")
SUBS = {
    "run": [S, "run", GOOD, "--input", "x=" + X],
    "shard": [S, "shard", GOOD, "--ranks", "2", "--out", os.path.join(W, "shard-ok")],
    "serve": serve_args("two", GOOD_RT),
    "agents": [S, "agents", "--distributed-address", DEAD, "--model-files", GOOD],
    "infer": [S, "infer", "--address", DEAD, "--servable", "s", "--method", "m", "--input", "x=" + X],
    "bench": [S, "bench", "--address", DEAD, "--servable", "s", "--method", "m", "--input", "x=" + X],
    "onnx-test": [S, "onnx-test"],
}
for sub, base in SUBS.items():
    case("cli", sub + "_unknown_flag", base + ["--frobnicate"], "frobnicate")
    case("cli", sub + "_stray_positional", base + ["stray-word"], r"(stray-word|usage)")
# missing values: the flag is the last argument
for sub, flag in [("run", "--input"), ("run", "--repeat"), ("run", "--timeout-ms"), ("run", "--output-dir"),
                  ("run", "--threads"),
                  ("shard", "--ranks"), ("shard", "--out"), ("shard", "--strategy"), ("shard", "--stages"),
                  ("serve", "--servable-dir"), ("serve", "--rank-table"), ("serve", "--grpc"),
                  ("serve", "--max-enqueued"), ("serve", "--rest-read-timeout-s"), ("agents", "--model-files"), ("agents", "--rank-start"),
                  ("infer", "--address"), ("infer", "--input"), ("infer", "--version"),
                  ("bench", "--concurrency"), ("bench", "--requests")]:
    case("cli", "%s_missing_value%s" % (sub, flag.replace("-", "_")), SUBS[sub] + [flag],
         r"(%s|usage)" % re.escape(flag))
# required arguments absent
case("cli", "run_no_model", [S, "run"], "usage")
case("cli", "run_shards_threads", [S, "run", "--shards", W, "--threads", "2", "--input", "x=" + X], "--threads")
case("cli", "shard_no_ranks", [S, "shard", GOOD, "--out", os.path.join(W, "o")], r"(--ranks|usage)")
case("cli", "shard_no_out", [S, "shard", GOOD, "--ranks", "2"], r"(--out|usage)")
case("cli", "serve_nothing", [S, "serve"], "usage")
case("cli", "serve_no_rank_table", [S, "serve", "--servable-dir", SV, "--servable", "two",
                                    "--distributed-address", "127.0.0.1:0"], r"(rank.table|usage)")
case("cli", "agents_nothing", [S, "agents"], "usage")
case("cli", "infer_nothing", [S, "infer"], "usage")
case("cli", "bench_nothing", [S, "bench"], "usage")
case("cli", "onnx_test_missing_dir", [S, "onnx-test", os.path.join(W, "no-such-dir")], "no-such-dir")
# out-of-range and malformed numbers
NUMS = [
    ("run", "--repeat", ["0", "-1", "abc", "1e3", "99999999999999999999"]),
    ("run", "--timeout-ms", ["0", "3600001"]),
    ("run", "--threads", ["0", "257", "two"]),
    ("shard", "--ranks", ["0", "4097", "-2", "2x", ""]),
    ("shard", "--stages", ["0", "99999"]),
    ("serve", "--wait-agents", ["-1", "ten"]),
    ("serve", "--grpc-max-msg-mb", ["0", "513"]),
    ("serve", "--request-timeout-ms", ["0"]),
    ("serve", "--heartbeat-timeout-ms", ["5"]),
    ("serve", "--max-enqueued", ["0", "1000000000000"]),
    ("serve", "--rest-max-connections", ["0", "-1", "many"]),
    ("serve", "--rest-max-per-client", ["0", "1000001"]),
    ("serve", "--rest-read-timeout-s", ["0", "86401"]),
    ("serve", "--grpc-max-streams", ["0", "1e3"]),
    ("serve", "--grpc-recv-timeout-s", ["-3", ""]),
    ("serve", "--grpc-max-buffered-mb", ["0", "1048577", "lots"]),
    ("serve", "--grpc-max-decoded-mb", ["0", "1048577", "2x"]),
    ("serve", "--kserve-max-batch-rows-mb", ["0", "1048577", "64MB"]),
    ("serve", "--rest-max-buffered-mb", ["0", "2e6"]),
    ("serve", "--shutdown-grace-ms", ["0", "-1", "3600001"]),
    ("agents", "--agent-start-port", ["0", "70000"]),
    ("agents", "--comm-timeout-ms", ["0"]),
    ("agents", "--connect-timeout-ms", ["-5"]),
    ("agents", "--heartbeat-timeout-ms", ["5", "forever"]),
    ("agents", "--recovered-after-ms", ["50", "3600001", "soon"]),
    ("infer", "--version", ["-1", "v1"]),
    ("infer", "--timeout-ms", ["0"]),
    ("bench", "--concurrency", ["0", "1,0", "2000", ","]),
    ("bench", "--requests", ["0"]),
    ("bench", "--duration-s", ["0"]),
    ("bench", "--warmup", ["-1"]),
    ("bench", "--version", ["-3"]),
]
for sub, flag, values in NUMS:
    for v in values:
        tag = re.sub(r"[^A-Za-z0-9]", "_", v) or "empty"
        case("cli", "%s%s_%s" % (sub, flag.replace("-", "_"), tag), SUBS[sub] + [flag, v],
             r"(%s|%s)" % (re.escape(flag), re.escape(v) if v else "usage"))
# serve --version belongs after --servable, other malformed values
case("cli", "serve_version_negative", serve_args("two", GOOD_RT) + ["--version", "-1"], "--version")
case("cli", "serve_grpc_bad_address", serve_args("two", GOOD_RT)[:-1] + ["no-port-here"], "no-port-here")
case("cli", "serve_distributed_bad_address", [S, "serve", "--servable-dir", SV, "--servable", "two", "--rank-table",
                                              GOOD_RT, "--distributed-address", "300.1.1.1:x", "--wait-agents", "1",
                                              "--grpc", "127.0.0.1:0"],
     r"(300\.1\.1\.1|address 'x')")
case("cli", "serve_servable_dir_missing", serve_args("two", GOOD_RT, os.path.join(W, "no-sv")), "no-sv")
case("cli", "serve_secret_missing", serve_args("two", GOOD_RT) + ["--secret-file", os.path.join(W, "no-secret")],
     "no-secret")
case("cli", "serve_secret_empty", serve_args("two", GOOD_RT) + ["--secret-file", wfile("empty-secret", "\n")],
     "empty-secret")
case("cli", "run_input_no_equals", [S, "run", GOOD, "--input", X], re.escape(X))
case("cli", "run_comm_unknown", [S, "run", "--shards", W, "--comm", "carrier-pigeon", "--input", "x=" + X],
     "carrier-pigeon")
case("cli", "run_shards_not_a_split", [S, "run", "--shards", os.path.join(W, "npy-dir"), "--input", "x=" + X],
     "npy-dir")
case("cli", "shard_strategy_missing_file", SUBS["shard"] + ["--strategy", os.path.join(W, "nostrat.json")],
     "nostrat")
case("cli", "shard_strategy_bad_json", SUBS["shard"] + ["--strategy", wfile("strat-bad.json", "{[")],
     "strat-bad")
case("cli", "shard_input_shape_unknown_input", SUBS["shard"] + ["--input-shape", "nosuch=2,96"],
     "no input 'nosuch'")
case("cli", "shard_input_shape_bad", SUBS["shard"] + ["--input-shape", "x=1,,-5"], r"(input-shape|x=1,,-5)")
case("cli", "shard_ranks_not_divisible", [S, "shard", GOOD, "--ranks", "3", "--stages", "2", "--out",
                                          os.path.join(W, "o3")], r"(ranks|stages|3)")
case("cli", "agents_comm_unknown", SUBS["agents"] + ["--comm", "smoke-signals"], "smoke-signals")
case("cli", "agents_ip_without_rank_start", SUBS["agents"] + ["--agent-ip", "127.0.0.1"], "--rank-start")
case("cli", "agents_bad_address", [S, "agents", "--distributed-address", "nowhere", "--model-files", GOOD,
                                   "--connect-timeout-ms", "2000"], "nowhere")
case("cli", "agents_group_config_missing", SUBS["agents"] + ["--group-configs", os.path.join(W, "nogc.json"),
                                                             "--connect-timeout-ms", "2000"], r"(nogc|group)")
# group configs listed out of order: model file 0 with rank 1's config (start_worker shards split2)
case("cli", "agents_group_config_of_another_rank",
     [S, "agents", "--distributed-address", "@WORKER@", "--model-files",
      os.path.join(W, "split1", "device0", "good.onnx"), "--group-configs",
      os.path.join(W, "split2", "device1", "group_config.json"), "--connect-timeout-ms", "5000"],
     r"is rank 1's, but it goes with model file 0 .* rank 0")
case("cli", "infer_input_no_equals", [S, "infer", "--address", DEAD, "--servable", "s", "--method", "m",
                                      "--input", X], re.escape(X))
case("cli", "infer_unreachable", SUBS["infer"] + ["--timeout-ms", "2000"], re.escape(DEAD))
case("cli", "infer_bad_address", [S, "infer", "--address", "not an address", "--servable", "s", "--method", "m",
                                  "--input", "x=" + X, "--timeout-ms", "2000"], "not an address")
case("cli", "bench_protocol_unknown", SUBS["bench"] + ["--protocol", "carrier-pigeon"], "carrier-pigeon")
case("cli", "bench_bad_address", [S, "bench", "--address", "noport", "--servable", "s", "--method", "m",
                                  "--input", "x=" + X], "noport")
# internal subcommands started by the launcher: garbage must not crash or hang (no message promised)
case("internal", "run_rank_garbage", [S, "run-rank", "x", "y"], None)
case("internal", "agent_rank_garbage", [S, "agent-rank", "a", "b", "c", "d", "e", "f", "g"], None)
case("internal", "agent_rank_mpi_garbage", [S, "agent-rank-mpi", "1", "2", "3", "4", "5", "6"], None)


# ------------------------------------------------------------------ runner
def run_case(argv, pattern):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.pop("OMPI_COMM_WORLD_RANK", None)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         cwd=W, env=env, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the group we just created: the case and its children
        out, _ = p.communicate()
        return "hang: no exit within %ds" % TIMEOUT, out.decode(errors="replace")
    text = out.decode(errors="replace")
    if p.returncode < 0:
        return "killed by signal %d" % -p.returncode, text
    if p.returncode == 0:
        return "exit status 0", text
    if SAN_RE.search(text):
        return "sanitizer report", text
    if pattern and not re.search(pattern, text, re.I):
        return "message does not name the input (/%s/)" % pattern, text
    if pattern and not text.strip():
        return "no message", text
    return None, text


def start_worker():
    """`serve` for a 1-rank servable waiting (for ever) for its agent; bad agents connect to it."""
    split = os.path.join(W, "split1")
    subprocess.run([SHARDSERVE, "shard", GOOD, "--ranks", "1", "--out", split, "--quiet"], check=True,
                   capture_output=True, timeout=TIMEOUT)
    subprocess.run([SHARDSERVE, "shard", GOOD, "--ranks", "2", "--out", os.path.join(W, "split2"), "--quiet"],
                   check=True, capture_output=True, timeout=TIMEOUT)
    for d in AGENT_DIRS:
        shutil.copy(os.path.join(split, "device0", "group_config.json"), d)
    log = open(os.path.join(W, "worker.log"), "w+")
    p = subprocess.Popen(serve_args("one", wjson("rt/good1.json", rank_table(1)))[:-2] + ["--wait-agents", "0",
                         "--grpc", "127.0.0.1:0"], stdout=log, stderr=subprocess.STDOUT, cwd=W)
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and p.poll() is None:
        log.seek(0)
        m = re.search(r"waiting for agents on (\S+)", log.read())
        if m:
            return p, m.group(1)
        time.sleep(0.05)
    p.kill()
    log.seek(0)
    raise AssertionError("worker for the agents cases did not start:\n" + log.read())


def main():
    only = sys.argv[1:]
    worker, worker_address = start_worker()
    passed = failed = 0
    groups = {}
    for group, name, argv, pattern in CASES:
        if only and not any(o in group + "/" + name for o in only):
            continue
        argv = [worker_address if a == "@WORKER@" else a for a in argv]
        err, text = run_case(argv, pattern)
        groups[group] = groups.get(group, 0) + 1
        if err:
            failed += 1
            print("FAIL %s/%s: %s\n  $ %s\n%s" % (group, name, err, " ".join(argv),
                                                  "\n".join("  | " + l for l in text.splitlines()[-15:])))
        else:
            passed += 1
            first = (text.strip().splitlines() or [""])[0]
            print("ok   %s/%s: %s" % (group, name, first[:150]))
        sys.stdout.flush()
    worker.kill()  # ours; its own shutdown is not under test here
    worker.wait()
    # each bad agent that started (the launcher refuses a missing file or a folder first) connected
    # before loading: the worker's log must say why it never registered
    wlog = open(os.path.join(W, "worker.log")).read()
    for d in AGENT_DIRS if not only or any("model_agents" in o for o in only) else ():
        target = os.path.join(d, "model.onnx")
        if not os.path.isfile(target):
            continue
        if re.search(r"rank 0 \(pid \d+ at [^)]*\) failed to load its shard: .*" + re.escape(target), wlog):
            passed += 1
        else:
            failed += 1
            print("FAIL worker log: no 'failed to load its shard' naming %s" % target)
    print("cases per group: " + ", ".join("%s %d" % kv for kv in sorted(groups.items())))
    print("%d passed, %d failed" % (passed, failed))
    shutil.rmtree(W, ignore_errors=True)
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
