"""The Open Inference Protocol (KServe v2) over REST against ss_test_server, with a client written
from the specification alone (urllib + json + struct): health, server and model metadata, model
readiness, inference with JSON tensors and with the binary tensor extension, the batch-dim rule
and the model-name rule, and every error the protocol defines a status for."""

import json
import struct
import sys
import urllib.error
import urllib.request

from server_harness import Checker, TestServer

srv = None


def call(method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request."""
    req = urllib.request.Request(srv.rest_url + path, data=body, headers=headers or {},
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def jcall(method, path, body=None):
    status, _, reply = call(method, path, body)
    return status, json.loads(reply)


def get(path):
    status, _, body = call("GET", path)
    return status, json.loads(body)


def infer(model, request, version=None, path=None):
    url = path or "/v2/models/%s%s/infer" % (model, "/versions/%s" % version if version else "")
    status, _, body = call("POST", url, json.dumps(request).encode(),
                           {"Content-Type": "application/json"})
    return status, json.loads(body)


def infer_binary(model, header, blobs, header_len=None):
    """A binary-extension request; returns (status, reply JSON, {output: raw bytes})."""
    head = json.dumps(header).encode()
    hl = str(len(head)) if header_len is None else header_len
    status, headers, body = call("POST", "/v2/models/%s/infer" % model, head + b"".join(blobs),
                                 {"Inference-Header-Content-Length": hl,
                                  "Content-Type": "application/octet-stream"})
    n = int(headers.get("Inference-Header-Content-Length") or len(body))
    reply = json.loads(body[:n])
    raw, off = {}, n
    for o in reply.get("outputs", []):
        size = o.get("parameters", {}).get("binary_data_size")
        if size is not None:
            raw[o["name"]] = body[off:off + size]
            off += size
    if off != len(body):
        raise AssertionError("reply has %d bytes, its header accounts for %d" % (len(body), off))
    return status, reply, raw


def fp32(name, shape, data):
    return {"name": name, "datatype": "FP32", "shape": shape, "data": data}


def outputs_by_name(reply):
    return {o["name"]: o for o in reply["outputs"]}


def err_of(c, got, status, fragment, what):
    """An error reply: the status and {"error": text containing fragment}."""
    code, body = got
    c.eq(code, status, what + " status")
    c.check(fragment in body.get("error", ""), "%s: %r lacks %r" % (what, body, fragment))


# ------------------------------------------------------------------ health and metadata

def health(c):
    c.eq(get("/v2/health/live"), (200, {"live": True}), "live")
    c.eq(get("/v2/health/ready"), (200, {"ready": True}), "ready")
    # readiness follows the server's: control.set_ready takes a BOOL without batch dim
    status, _ = infer("control", {"inputs": [{"name": "value", "datatype": "BOOL", "shape": [],
                                              "data": [False]}]})
    c.eq(status, 200, "set_ready(false)")
    c.eq(get("/v2/health/ready")[0], 503, "not ready")
    c.eq(get("/v2/health/live")[0], 200, "still live")
    infer("control", {"inputs": [{"name": "value", "datatype": "BOOL", "shape": [], "data": [True]}]})
    c.eq(get("/v2/health/ready")[0], 200, "ready again")


def server_metadata(c):
    status, meta = get("/v2")
    c.eq(status, 200, "status")
    c.eq(meta.get("name"), "shardserve", "name")
    c.check(isinstance(meta.get("version"), str), "version is a string: %r" % meta)
    c.check("binary_tensor_data" in meta.get("extensions", []), "extensions: %r" % meta)


def model_metadata(c):
    status, meta = get("/v2/models/add")
    c.eq(status, 200, "add")
    c.eq(meta["name"], "add", "name")
    c.eq(meta["versions"], ["2"], "latest version")
    c.eq(meta["platform"], "onnx_onnxv1", "platform")
    c.eq(meta["inputs"], [{"name": "x1", "datatype": "FP32", "shape": [-1, -1]},
                          {"name": "x2", "datatype": "FP32", "shape": [-1, -1]}], "inputs")
    c.eq(meta["outputs"], [{"name": "y", "datatype": "FP32", "shape": [-1, -1]},
                           {"name": "version", "datatype": "INT64", "shape": [-1]}], "outputs")
    c.eq(get("/v2/models/add/versions/1")[1]["versions"], ["1"], "version 1")
    c.eq(get("/v2/models/add.add_common")[1]["name"], "add.add_common", "NAME.METHOD always works")
    status, meta = get("/v2/models/mixed.scale")
    c.eq(status, 200, "mixed.scale")
    c.eq(meta["inputs"], [{"name": "x", "datatype": "FP32", "shape": [-1, 2]},
                          {"name": "w", "datatype": "FP32", "shape": [2]}],
         "batched and whole inputs")
    c.eq(get("/v2/models/typed.bytes")[1]["inputs"], [{"name": "x", "datatype": "BYTES",
                                                      "shape": [-1]}], "BYTES")
    err_of(c, get("/v2/models/mixed"), 404, "mixed.METHOD", "several methods need NAME.METHOD")
    err_of(c, get("/v2/models/nope"), 404, "nope", "unknown model")
    err_of(c, get("/v2/models/mixed.nope"), 404, "no method 'nope'", "unknown method")
    err_of(c, get("/v2/models/add/versions/3"), 404, "add", "unknown version")
    err_of(c, get("/v2/models/add/versions/x1"), 404, "unknown version", "version not a number")
    err_of(c, get("/v2/models/notready"), 503, "not ready", "not ready")


def model_ready(c):
    c.eq(get("/v2/models/add/ready"), (200, {"name": "add", "ready": True}), "add")
    c.eq(get("/v2/models/add/versions/1/ready")[0], 200, "add v1")
    c.eq(get("/v2/models/mixed.echo_bytes/ready")[0], 200, "mixed.echo_bytes")
    status, body = get("/v2/models/notready/ready")
    c.eq((status, body.get("ready")), (503, False), "not ready")
    err_of(c, get("/v2/models/nope/ready"), 404, "nope", "unknown model")
    err_of(c, get("/v2/models/add/versions/9/ready"), 404, "add", "unknown version")


# ------------------------------------------------------------------ inference, JSON

def infer_json(c):
    req = {"id": "req-1", "inputs": [fp32("x1", [2, 3], [[1, 2, 3], [4, 5, 6]]),
                                     fp32("x2", [2, 3], [0.5] * 6)]}
    status, reply = infer("add", req)
    c.eq(status, 200, "status")
    c.eq(reply.get("id"), "req-1", "id echoed")
    c.eq(reply.get("model_name"), "add", "model_name")
    c.eq(reply.get("model_version"), "2", "model_version")
    outs = outputs_by_name(reply)
    c.eq(outs["y"], {"name": "y", "datatype": "FP32", "shape": [2, 3],
                     "data": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]}, "y stacked [N]+S")
    c.eq(outs["version"], {"name": "version", "datatype": "INT64", "shape": [2], "data": [2, 2]},
         "per-instance scalars stacked into [N]")
    status, reply = infer("add", req, version=1)
    c.eq(outputs_by_name(reply)["version"]["data"], [1, 1], "version 1 answers")
    c.eq(reply.get("model_version"), "1", "model_version 1")
    # only the requested outputs, in the requested order
    req["outputs"] = [{"name": "version"}]
    status, reply = infer("add.add_common", req)
    c.eq([o["name"] for o in reply["outputs"]], ["version"], "requested outputs")
    c.check("id" in reply, "id kept")


def batch_rule(c):
    # x is batched [2] per instance (3 instances); w is taken whole and goes with each instance
    req = {"inputs": [fp32("x", [3, 2], [1, 2, 3, 4, 5, 6]), fp32("w", [2], [10, -1])]}
    status, reply = infer("mixed.scale", req)
    c.eq(status, 200, "status")
    c.eq(outputs_by_name(reply)["y"]["shape"], [3, 2], "y shape")
    c.eq(outputs_by_name(reply)["y"]["data"], [10, -2, 30, -4, 50, -6], "y")
    req = {"inputs": [fp32("x", [1, 2], [1, 2]), fp32("w", [2], [3, 3])]}
    c.eq(outputs_by_name(infer("mixed.scale", req)[1])["y"]["shape"], [1, 2], "batch of one")
    err_of(c, infer("mixed.scale", {"inputs": [fp32("x", [2], [1, 2]), fp32("w", [2], [1, 1])]}),
           400, "shape [2] does not match the model's [-1,2]", "batched input without batch dim")
    err_of(c, infer("mixed.scale", {"inputs": [fp32("x", [1, 2], [1, 2]),
                                               fp32("w", [1, 2], [1, 1])]}),
           400, "input 'w'", "whole input with a batch dim")
    err_of(c, infer("add", {"inputs": [fp32("x1", [2, 1], [1, 2]), fp32("x2", [3, 1], [1, 2, 3])]}),
           400, "batch size 3 differs", "batch sizes differ")
    err_of(c, infer("add", {"inputs": [fp32("x1", [0, 1], []), fp32("x2", [0, 1], [])]}),
           400, "batch size 0", "empty batch")


TYPED = [  # datatype, JSON values, struct format (None: no struct code)
    ("BOOL", [True, False, True], "?"),
    ("UINT8", [0, 7, 255], "B"),
    ("UINT16", [0, 7, 65535], "H"),
    ("UINT32", [0, 7, 4294967295], "I"),
    ("UINT64", [0, 7, 2 ** 40], "Q"),
    ("INT8", [-128, 0, 127], "b"),
    ("INT16", [-32768, 0, 32767], "h"),
    ("INT32", [-2147483648, 0, 2147483647], "i"),
    ("INT64", [-(2 ** 40), 0, 2 ** 40], "q"),
    ("FP16", [1.5, -2.0, 0.25], "e"),
    ("FP32", [1.5, -2.0, 0.1], "f"),
    ("FP64", [1.5, -2.0, 0.1], "d"),
    ("BF16", [1.5, -2.0, 0.25], None),
]


def typed_json(c):
    for dt, values, _ in TYPED:
        status, reply = infer("typed." + dt.lower(), {
            "inputs": [{"name": "x", "datatype": dt, "shape": [1, 3], "data": values}]})
        c.eq(status, 200, dt + " status")
        out = reply["outputs"][0] if status == 200 else {}
        got = out.get("data")
        if dt == "FP32" and got:
            got = [round(v, 6) for v in got]
        c.eq((out.get("datatype"), out.get("shape"), got), (dt, [1, 3], values), dt)
    # 64-bit integers in JSON: exact up to 2^53 - 1; beyond, refused (they used to be rounded)
    edge = [2 ** 53 - 1, -(2 ** 53 - 1), 3]
    status, reply = infer("typed.int64", {"inputs": [{"name": "x", "datatype": "INT64",
                                                      "shape": [1, 3], "data": edge}]})
    c.eq((status, reply.get("outputs", [{}])[0].get("data")), (200, edge), "INT64 up to 2^53 - 1")
    for dt, big in (("INT64", 2 ** 53 + 1), ("INT64", 1234567890123456789), ("UINT64", 2 ** 63)):
        status, reply = infer("typed." + dt.lower(), {"inputs": [{"name": "x", "datatype": dt,
                                                                  "shape": [1, 3], "data": [1, big, 2]}]})
        c.eq((status, "element 1" in str(reply) and "2^53" in str(reply)), (400, True),
             "%s %d refused, not rounded: %s" % (dt, big, reply))
    status, reply = infer("typed.bytes", {"inputs": [{"name": "x", "datatype": "BYTES",
                                                      "shape": [2], "data": ["ab", "c\"d\u00e9"]}]})
    c.eq(reply["outputs"][0], {"name": "x", "datatype": "BYTES", "shape": [2],
                               "data": ["ab", "c\"d\u00e9"]}, "BYTES")
    status, reply = infer("mixed.echo_bytes", {"inputs": [{"name": "s", "datatype": "BYTES",
                                                           "shape": [3], "data": ["", "x", "yz"]}]})
    c.eq(outputs_by_name(reply)["s"]["data"], ["", "x", "yz"], "echo_bytes")


def json_errors(c):
    add = "add"
    good = [fp32("x1", [1, 2], [1, 2]), fp32("x2", [1, 2], [1, 2])]
    err_of(c, infer(add, {"inputs": [dict(good[0], datatype="FP64"), good[1]]}), 400,
           "datatype FP64 does not match the model's FP32", "wrong datatype")
    err_of(c, infer(add, {"inputs": [dict(good[0], datatype="FLOAT"), good[1]]}), 400,
           "unknown datatype 'FLOAT'", "unknown datatype")
    err_of(c, infer(add, {"inputs": [good[0]]}), 400, "expects input 'x2'", "missing input")
    err_of(c, infer(add, {"inputs": good + [fp32("x3", [1], [1])]}), 400,
           "unexpected inference input 'x3'", "unknown input")
    err_of(c, infer(add, {"inputs": good + [good[0]]}), 400, "given twice", "duplicate input")
    err_of(c, infer(add, {"inputs": [fp32("x1", [1, 3], [1, 2]), good[1]]}), 400,
           "data has 2 elements, shape needs 3", "data count")
    err_of(c, infer(add, {"inputs": [fp32("x1", [1, 2], [1, "a"]), good[1]]}), 400,
           "element 1 is not a valid FP32", "string in FP32")
    err_of(c, infer("typed.int8", {"inputs": [{"name": "x", "datatype": "INT8", "shape": [1, 1],
                                               "data": [300]}]}), 400, "not a valid INT8",
           "out of range")
    err_of(c, infer("typed.int32", {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 1],
                                                "data": [1.5]}]}), 400, "not a valid INT32",
           "fraction for an integer")
    err_of(c, infer("typed.bool", {"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1, 1],
                                               "data": [1]}]}), 400, "not a valid BOOL",
           "number for BOOL")
    err_of(c, infer(add, {"inputs": [dict(good[0], shape=[1, -2]), good[1]]}), 400,
           "shape holds a size", "negative dim")
    err_of(c, infer(add, {"inputs": [{"name": "x1", "datatype": "FP32", "shape": [1, 2]},
                                     good[1]]}), 400, "neither", "no data")
    err_of(c, infer(add, {"inputs": good, "outputs": [{"name": "z"}]}), 400,
           "unexpected inference output 'z'", "unknown output")
    err_of(c, infer(add, {"inputs": good, "id": 5}), 400, "\"id\" must be a string", "id type")
    err_of(c, infer(add, {"inputs": "x"}), 400, "\"inputs\" must be an array", "inputs type")
    status, _, body = call("POST", "/v2/models/add/infer", b"{\"inputs\": [")
    err_of(c, (status, json.loads(body)), 400, "not a JSON object", "broken JSON")
    status, _, body = call("POST", "/v2/models/add/infer", b"[]")
    err_of(c, (status, json.loads(body)), 400, "not a JSON object", "JSON array")
    status, _, body = call("POST", "/v2/models/add/infer", b"")
    err_of(c, (status, json.loads(body)), 400, "empty", "empty body")
    # the handler's own verdicts keep their meaning
    err_of(c, infer(add, {"inputs": [fp32("x1", [1, 2], [1, 2]), fp32("x2", [1, 3], [1, 2, 3])]}),
           400, "not match the size", "handler: invalid inputs -> 400")
    err_of(c, infer("error.fail", {"inputs": []}), 500, "fixed failure", "handler failure -> 500")


def model_and_route_errors(c):
    good = {"inputs": [fp32("x1", [1, 1], [1]), fp32("x2", [1, 1], [1])]}
    err_of(c, infer("nope", good), 404, "nope", "unknown model")
    err_of(c, infer("add", good, version=7), 404, "add", "unknown version")
    err_of(c, infer("add", good, version="latest"), 404, "unknown version", "version text")
    err_of(c, infer("mixed", good), 404, "mixed.METHOD", "several methods")
    err_of(c, infer("notready", good), 503, "not ready", "not ready")
    for method, path in [("GET", "/v2/nope"), ("POST", "/v2/models/add/predict"),
                         ("GET", "/v2/models/add/infer"), ("DELETE", "/v2/models/add"),
                         ("POST", "/v2"), ("GET", "/v2/models/add/versions/1/config"),
                         ("POST", "/v2/repository/nope")]:
        status, _, body = call(method, path, b"{}" if method == "POST" else None)
        c.eq(status, 404, "%s %s status" % (method, path))
        c.check("error" in json.loads(body), "%s %s: %r" % (method, path, body))


def stats_and_repository(c):
    """This handler keeps no /metrics counters and has no repository: zeros, and 501."""
    status, _, body = call("GET", "/v2/models/add/versions/2/stats")
    c.eq(status, 200, "stats status")
    st = json.loads(body)["model_stats"]
    c.eq([(m["name"], m["version"]) for m in st], [("add", "2")], "stats entries")
    c.eq(st[0]["inference_stats"]["success"], {"count": 0, "ns": 0}, "zero success")
    c.eq(sorted(st[0]["inference_stats"]), sorted(["success", "fail", "queue", "compute_input",
                                                   "compute_infer", "compute_output",
                                                   "cache_hit", "cache_miss"]), "Triton's fields")
    err_of(c, jcall("GET", "/v2/models/nope/stats"), 404, "nope", "stats of an unknown model")
    err_of(c, jcall("GET", "/v2/models/add/versions/7/stats"), 404, "add", "stats, unknown version")
    err_of(c, jcall("GET", "/v2/models/notready/stats"), 503, "not ready", "stats, not ready")
    meta = get("/v2")[1]
    c.check("statistics" in meta["extensions"] and "model_repository" not in meta["extensions"],
            "extensions: %r" % meta)
    err_of(c, jcall("POST", "/v2/repository/index", b""), 501, "no model repository",
           "index without a repository")
    err_of(c, jcall("POST", "/v2/repository/models/add/unload", b"{}"), 501, "no model repository",
           "unload without a repository")


# ------------------------------------------------------------------ inference, binary

def infer_binary_add(c):
    x = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    header = {"id": "bin", "inputs": [
        {"name": "x1", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
        {"name": "x2", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}],
        "parameters": {"binary_data_output": True}}
    status, reply, raw = infer_binary("add", header, [x, x])
    c.eq(status, 200, "status")
    c.eq(reply["id"], "bin", "id")
    outs = outputs_by_name(reply)
    c.eq((outs["y"]["shape"], outs["y"]["parameters"]), ([2, 3], {"binary_data_size": 24}), "y")
    c.check("data" not in outs["y"], "binary output has no data")
    c.eq(struct.unpack("<6f", raw["y"]), (2, 4, 6, 8, 10, 12), "y bytes")
    c.eq(struct.unpack("<2q", raw["version"]), (2, 2), "version bytes")
    # binary in, one output binary and one JSON
    header = dict(header, parameters={},
                  outputs=[{"name": "y", "parameters": {"binary_data": True}}, {"name": "version"}])
    status, reply, raw = infer_binary("add", header, [x, x])
    outs = outputs_by_name(reply)
    c.eq(outs["version"].get("data"), [2, 2], "JSON output beside a binary one")
    c.eq(struct.unpack("<6f", raw["y"]), (2, 4, 6, 8, 10, 12), "binary output")
    # binary_data_output for the request, an explicit binary_data false for one output: it wins
    header = dict(header, parameters={"binary_data_output": True},
                  outputs=[{"name": "y", "parameters": {"binary_data": False}}, {"name": "version"}])
    status, reply, raw = infer_binary("add", header, [x, x])
    outs = outputs_by_name(reply)
    c.eq((outs["y"].get("data"), "y" in raw), ([2, 4, 6, 8, 10, 12], False),
         "binary_data false beats binary_data_output")
    c.eq(struct.unpack("<2q", raw["version"]), (2, 2), "the other output stays binary")
    # JSON and binary inputs mixed
    header = {"inputs": [fp32("x1", [1, 2], [1, 2]),
                         {"name": "x2", "datatype": "FP32", "shape": [1, 2],
                          "parameters": {"binary_data_size": 8}}]}
    status, reply, raw = infer_binary("add", header, [struct.pack("<2f", 10, 20)])
    c.eq(outputs_by_name(reply)["y"].get("data"), [11, 22], "JSON + binary inputs")


def bf16_bytes(values):
    return b"".join(struct.pack("<f", v)[2:] for v in values)


def typed_binary(c):
    # An INT8 input first puts the next input at an odd offset: rows that cannot be borrowed
    # aligned are copied, and the values must still be right.
    for dt, values, fmt in TYPED:
        blob = bf16_bytes(values) if fmt is None else struct.pack("<3" + fmt, *values)
        header = {"inputs": [{"name": "x", "datatype": dt, "shape": [3, 1],
                              "parameters": {"binary_data_size": len(blob)}}],
                  "outputs": [{"name": "x", "parameters": {"binary_data": True}}]}
        pad = json.dumps(header).encode()
        for extra in (b"", b" "):  # a trailing space shifts the binary part by one byte
            head = pad + extra
            status, headers, body = call("POST", "/v2/models/typed.%s/infer" % dt.lower(),
                                         head + blob,
                                         {"Inference-Header-Content-Length": str(len(head))})
            n = int(headers.get("Inference-Header-Content-Length") or 0)
            c.eq((status, body[n:]), (200, blob), "%s binary round trip (offset %d)" %
                 (dt, len(head)))
    strings = [b"", b"\x00\xff", b"hello"]
    blob = b"".join(struct.pack("<I", len(s)) + s for s in strings)
    header = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [3],
                          "parameters": {"binary_data_size": len(blob)}}],
              "parameters": {"binary_data_output": True}}
    status, reply, raw = infer_binary("typed.bytes", header, [blob])
    c.eq((status, reply["outputs"][0]["shape"], raw.get("x")), (200, [3], blob),
         "BYTES binary (not UTF-8)")
    header["parameters"] = {}
    status, reply, _ = infer_binary("typed.bytes", header, [blob])
    err_of(c, (status, reply), 500, "not UTF-8", "non-UTF-8 BYTES asked as JSON")


def binary_errors(c):
    x = struct.pack("<2f", 1, 2)
    def header(size1=8, size2=8):
        return {"inputs": [
            {"name": "x1", "datatype": "FP32", "shape": [1, 2],
             "parameters": {"binary_data_size": size1}},
            {"name": "x2", "datatype": "FP32", "shape": [1, 2],
             "parameters": {"binary_data_size": size2}}]}
    head_len = len(json.dumps(header()).encode())
    status, reply, _ = infer_binary("add", header(), [x, x], header_len=str(head_len + 17 + 100))
    err_of(c, (status, reply), 400, "larger than the body", "header length > body")
    status, reply, _ = infer_binary("add", header(), [x, x], header_len="12abc")
    err_of(c, (status, reply), 400, "not a byte count", "header length not a number")
    status, reply, _ = infer_binary("add", header(), [x, x], header_len="-5")
    err_of(c, (status, reply), 400, "not a byte count", "negative header length")
    status, reply, _ = infer_binary("add", header(), [x, x], header_len=str(head_len - 1))
    err_of(c, (status, reply), 400, "not a JSON object", "header length cuts the JSON")
    status, reply, _ = infer_binary("add", header(), [x, x], header_len="0")
    err_of(c, (status, reply), 400, "raw binary request", "header length 0")
    status, reply, _ = infer_binary("add", header(), [x, x, b"zz"])
    err_of(c, (status, reply), 400, "18 bytes after the JSON header", "bytes left over")
    status, reply, _ = infer_binary("add", header(), [x])
    err_of(c, (status, reply), 400, "runs past the end of the body", "binary part too short")
    status, reply, _ = infer_binary("add", header(8, 4), [x, x[:4]])
    err_of(c, (status, reply), 400, "4 bytes of data do not hold shape [1,2]",
           "binary_data_size does not fit the shape")
    status, reply, _ = infer_binary("add", header(8, 12), [x, x + x[:4]])
    err_of(c, (status, reply), 400, "12 bytes of data", "binary_data_size too big for the shape")
    h = header()
    h["inputs"][0]["parameters"]["binary_data_size"] = -8
    status, reply, _ = infer_binary("add", h, [x, x])
    err_of(c, (status, reply), 400, "must be a byte count", "negative binary_data_size")
    h = header()
    h["inputs"][0]["data"] = [1, 2]
    status, reply, _ = infer_binary("add", h, [x, x])
    err_of(c, (status, reply), 400, "both", "data and binary_data_size")
    bad = struct.pack("<I", 50) + b"abc"
    status, reply, _ = infer_binary("typed.bytes", {"inputs": [
        {"name": "x", "datatype": "BYTES", "shape": [1],
         "parameters": {"binary_data_size": len(bad)}}]}, [bad])
    err_of(c, (status, reply), 400, "do not hold shape [1]", "BYTES length prefix past the end")


def mindspore_alongside(c):
    body = json.dumps({"instances": [{"x1": [1.0, 2.0], "x2": [3.0, 4.0]}]}).encode()
    status, _, reply = call("POST", "/model/add:add_common", body)
    c.eq((status, json.loads(reply)["instances"][0]["y"]), (200, [4.0, 6.0]),
         "MindSpore REST on the same port")


def body_limit(c):
    with TestServer(grpc=None, rest="127.0.0.1:0", extra=["--rest-max-mb", "1"]) as small:
        global srv
        big, srv = srv, small
        try:
            data = [0.0] * (300 * 1024)
            status, reply = infer("add", {"inputs": [fp32("x1", [1, len(data)], data),
                                                     fp32("x2", [1, len(data)], data)]})
            err_of(c, (status, reply), 413, "bigger than", "body over the limit")
        finally:
            srv = big


def main():
    global srv
    srv = TestServer(grpc=None, rest="127.0.0.1:0")
    Checker().run([health, server_metadata, model_metadata, model_ready, infer_json, batch_rule,
                   typed_json, json_errors, model_and_route_errors, stats_and_repository, infer_binary_add,
                   typed_binary, binary_errors, mindspore_alongside, body_limit], server=srv)


if __name__ == "__main__":
    sys.exit(main())
