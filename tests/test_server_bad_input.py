"""A table of malformed requests over gRPC and REST against one test server: each gets a clear
error (gRPC status or MindSpore error_msg, never a crash or a hang), the server still answers a
valid request afterwards, and its memory does not grow when the whole table is replayed."""

import base64
import socket
import struct

import grpc
import numpy as np
import json
import urllib.request

import ms_service_pb2 as pb
from server_harness import Checker, TestServer

PREDICT = "/mindspore.serving.proto.MSService/Predict"
server = None
channel = None


def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    if wire == 0:
        return varint(num << 3) + varint(payload)
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def tensor_bytes(dtype=pb.MS_FLOAT32, dims=(2,), data=b"\0" * 8, bytes_val=None, raw_dims=None):
    shape = b"".join(field(1, 0, d & (2**64 - 1)) for d in dims) if raw_dims is None else raw_dims
    t = field(1, 2, shape) + field(2, 0, dtype)
    if data is not None:
        t += field(3, 2, data)
    for b in bytes_val or []:
        t += field(4, 2, b)
    return t


def request_bytes(items, servable=b"echo", method=b"echo", instances=1):
    spec = field(1, 2, field(1, 2, servable) + field(2, 2, method))
    inst = b"".join(field(1, 2, field(1, 2, k) + field(2, 2, v)) for k, v in items)
    return spec + b"".join(field(2, 2, inst) for _ in range(instances))


SPEC = field(1, 2, field(1, 2, b"echo") + field(2, 2, b"echo"))


def tensor_msg(**kw):
    return request_bytes([(b"x", tensor_bytes(**kw))])


DETAIL = "Instances input x check failed, detail: "
# (name, raw request bytes, expected: ("status", grpc code) or ("error", substring))
GRPC_CASES = [
    ("garbage", b"\xff\xff\xff\xff", ("status", grpc.StatusCode.INTERNAL)),
    ("truncated", tensor_msg()[:-3], ("status", grpc.StatusCode.INTERNAL)),
    ("spec as varint", field(1, 0, 5), ("status", grpc.StatusCode.INTERNAL)),
    ("instances as varint", field(2, 0, 5), ("status", grpc.StatusCode.INTERNAL)),
    ("bad length prefix", b"\x12\xff\xff\xff\xff\x0f", ("status", grpc.StatusCode.INTERNAL)),
    ("invalid UTF-8 servable", request_bytes([(b"x", tensor_bytes())], servable=b"\xff\xfe"),
     ("status", grpc.StatusCode.INTERNAL)),
    ("invalid UTF-8 method", request_bytes([(b"x", tensor_bytes())], method=b"a\xc3"),
     ("status", grpc.StatusCode.INTERNAL)),
    ("invalid UTF-8 input name", request_bytes([(b"\xc0\xaf", tensor_bytes())]),
     ("status", grpc.StatusCode.INTERNAL)),
    ("shape as varint", request_bytes([(b"x", field(1, 0, 5) + field(2, 0, 11))]),
     ("status", grpc.StatusCode.INTERNAL)),
    ("packed dims are fine", tensor_msg(raw_dims=field(1, 2, b"\x02")), ("ok", None)),
    ("no instances", request_bytes([], instances=0),
     ("error", "Instances count of request cannot be 0")),
    ("absurd dims", tensor_msg(dims=(1 << 62, 4)), ("error", DETAIL + "Tensor check failed: input data size 8 invalid")),
    ("dims overflow", tensor_msg(dims=(1 << 40, 1 << 40, 1 << 40)), ("error", "data size 8 invalid")),
    ("negative dim", tensor_msg(dims=(-1, 2)), ("error", "shape [-1, 2] invalid")),
    ("most negative dim", tensor_msg(dims=(-(1 << 63),)), ("error", "invalid")),
    ("dim after zero", tensor_msg(dims=(0, 2), data=b""), ("error", "shape [0, 2] invalid")),
    ("nine dims", tensor_msg(dims=(1,) * 9, data=b"\0" * 4), ("error", "invalid")),
    ("data too short", tensor_msg(data=b"\0" * 7), ("error", "data size 7 invalid")),
    ("data too long", tensor_msg(data=b"\0" * 9), ("error", "data size 9 invalid")),
    ("no data", tensor_msg(data=None), ("error", "data size 0 invalid")),
    ("dtype 0", tensor_msg(dtype=0), ("error", "data type proto::MS_UNKNOWN invalid")),
    ("dtype 99", tensor_msg(dtype=99), ("error", "data type proto::MS_UNKNOWN invalid")),
    ("dtype negative", tensor_msg(dtype=2**64 - 1), ("error", "data type proto::MS_UNKNOWN invalid")),
    ("string without bytes_val", tensor_msg(dtype=pb.MS_STRING, dims=(), data=None),
     ("error", "bytes or string type shape batch size can only be 1")),
    ("string with two values", tensor_msg(dtype=pb.MS_STRING, dims=(), data=None,
                                          bytes_val=[b"a", b"b"]),
     ("error", "bytes or string type shape batch size can only be 1")),
    ("string shape [2]", tensor_msg(dtype=pb.MS_BYTES, dims=(2,), data=None, bytes_val=[b"a"]),
     ("error", "shape can only be (1,) or empty, but given shape is [2]")),
    ("string shape [-1]", tensor_msg(dtype=pb.MS_BYTES, dims=(-1,), data=None, bytes_val=[b"a"]),
     ("error", "but given shape is [-1]")),
    ("shared memory data", request_bytes([(b"x", field(1, 2, field(1, 0, 2)) + field(2, 0, 11)
                                           + field(5, 2, field(1, 2, b"k") + field(4, 0, 8)))]),
     ("error", "shared memory data is not supported")),
    ("unknown servable", request_bytes([(b"x", tensor_bytes())], servable=b"zz"),
     ("error", "Request servable(zz) method(echo), servable is not available")),
    ("missing inputs", request_bytes([(b"x", tensor_bytes())], servable=b"add",
                                     method=b"add_common"), ("error", "Cannot find input x1")),
    ("a million dims", tensor_msg(raw_dims=field(1, 2, b"\x01" * 1000000)),
     ("status", grpc.StatusCode.RESOURCE_EXHAUSTED)),
    ("2000 unpacked dims", tensor_msg(raw_dims=b"".join(field(1, 0, 1) for _ in range(2000))),
     ("status", grpc.StatusCode.RESOURCE_EXHAUSTED)),
    ("many strings", tensor_msg(dtype=pb.MS_BYTES, dims=(), data=None, bytes_val=[b""] * 5000),
     ("status", grpc.StatusCode.RESOURCE_EXHAUSTED)),
    ("two million instances", field(2, 2, b"") * 2000000, ("status", grpc.StatusCode.RESOURCE_EXHAUSTED)),
    ("a million inputs", SPEC + field(2, 2, field(1, 2, b"") * 1100000),
     ("status", grpc.StatusCode.RESOURCE_EXHAUSTED)),
    ("unknown fields are ignored", tensor_msg() + field(15, 2, b"junk"), ("ok", None)),
    ("map entry with an empty value", request_bytes([(b"x", b"")]),
     ("error", "data type proto::MS_UNKNOWN invalid")),
    ("map entry without value", SPEC + field(2, 2, field(1, 2, field(1, 2, b"x"))),
     ("error", "data type proto::MS_UNKNOWN invalid")),
]

REST_CASES = [
    ("/model/echo:echo", b"{", "Illegal JSON format."),
    ("/model/echo:echo", b'{"instances": {"a": 1},}', "Illegal JSON format."),
    ("/model/echo:echo", b"{'instances': 1}", "Illegal JSON format."),
    ("/model/echo:echo", b'{"instances": {"a": NaN}}', "Illegal JSON format."),
    ("/model/echo:echo", b'{"instances": {"a": "\xff"}}', "Illegal JSON format."),
    ("/model/echo:echo", b'{"instances": {"\xc3": 1}}', "Illegal JSON format."),
    ("/model/echo:echo", b'{"instances": {"a": "x\x01"}}', "Illegal JSON format."),
    # a NUL escape would cut the string short (it came back as "ab"): refused, naming b64
    ("/model/echo:echo", b'{"instances": {"a": "ab\\u0000cd"}}', "u0000 escape"),
    ("/model/echo:echo", b"[" * 100000, "Illegal JSON format."),
    ("/model/echo:echo", b'{"instances": ' + b'[' * 2000 + b']' * 2000 + b'}', "Illegal JSON format."),
    ("/model/echo:echo", b"\x00\x01\x02", "Illegal JSON format."),
    ("/model/echo:echo", b"null", "key 'instances' expects to exist once, but actually 0 times"),
    ("/model/echo:echo", b'{"instances": {"a": [' + b"1," * (1 << 22) + b'1]}}',
     "http message has more than 4194304 JSON values"),
    ("/model/echo:echo", b"123", "key 'instances' expects to exist once"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "AAAA", "type": "int8", '
                         b'"shape": [2147483647, 2147483647, 2147483647]}}}', "product overflows"),
    # 400,000 one-value instances (3.2 MB) would become ~150 MB of serving structs: refused
    # against the row budget before any is built (1 M of them took 1.4 GB)
    ("/model/echo:echo", b'{"instances": [' + b'{"a": 1},' * 399999 + b'{"a": 1}]}',
     "--kserve-max-batch-rows-mb"),
    ("/model/echo:echo", b'{"instances": {"a": 1e400}}', "out of the range of float32"),
    ("/model/echo:echo", b'{"instances": {"a": -1e400}}', "out of the range of float32"),
    ("/model/echo:echo", b'{"instances": {"a": 3.5e38}}', "out of the range of float32"),
    ("/model/echo:echo", b'{"instances": {"a": 2147483648}}', "out of the range of int32"),
    ("/model/echo:echo", b'{"instances": {"a": -2147483649}}', "out of the range of int32"),
    ("/model/echo:echo", b'{"instances": {"a": [[[[[[[[[1]]]]]]]]]}}', "more than 8 dims"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "AAA"}}}', "is illegal b64 encode string"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "A==="}}}', "is illegal b64 encode string"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "====="}}}', "is illegal b64 encode string"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "AA=A"}}}', "is illegal b64 encode string"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "' + b"A" * 5000 + b'="}}}',
     "is illegal b64 encode string"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "AAAA", "type": "fp32", "shape": [4294967296]}}}',
     "array value should be unsigned integer"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "AAAA", "type": "fp32", "shape": [65536, 65536, 65536, 65536, 65536]}}}',
     "size is not matched"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "AAAA", "type": "fp32", "shape": [1,1,1,1,1,1,1,1,1]}}}',
     "more than 8 dims"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "AAAA", "type": ["fp32"]}}}',
     "value should be string type"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": "AAAA", "shape": {"0": 1}}}}',
     "value should be array type"),
    ("/model/echo:echo", b'{"instances": {"a": {"b64": ["AAAA"]}}}', "json is not string type"),
    ("/model/echo:echo", b'{"instances": {"a": [{"b64": "AAAA"}, {"b64": "AAAA"}]}}',
     "string or bytes type only support one item"),
    ("/model/echo:echo", b'{"instances": {"a": [{"b64": "AAAA"}, 1]}}',
     "string or bytes type only support one item"),
    ("/model/echo:echo", b'{"instances": {"a": [[1, 2], [3, "4"]]}}', "elements type is not equal"),
    ("/model/echo:echo", b'{"instances": {"a": [[1, 2], {"b64": "AAAA"}]}}', "json type is not array"),
    ("/model/echo:echo", b'{"instances": [{"a": 1}, []]}', "instance is not object type"),
    ("/model/echo:echo", b'{"instances": "abc"}', "instances no key mode is not supported"),
    ("/model/echo:echo", b'{"instances": null}', "instances no key mode is not supported"),
    ("/mode/echo:echo", b'{"instances": {"a": 1}}', "please check url, the keyword:[model] must contain."),
    ("/model/echo/version/99999999999999999999:echo", b'{"instances": {"a": 1}}',
     "version number range failed"),
    ("/model/echo/version/:echo", b'{"instances": {"a": 1}}', "[version] value invalid"),
    ("/model/echo:", b'{"instances": {"a": 1}}', "[service method] must contain."),
]


BIG = 1 << 20  # the memory replay leaves out multi-MB payloads: they only measure malloc's caching


def grpc_cases(c, small_only=False):
    call = channel.unary_unary(PREDICT)
    for name, payload, (kind, want) in GRPC_CASES:
        if small_only and len(payload) > BIG:
            continue
        try:
            reply = pb.PredictReply.FromString(call(payload, timeout=20))
            msgs = [e.error_msg.decode() for e in reply.error_msg]
            if kind == "error":
                c.check(len(msgs) == 1 and want in msgs[0], "%s: %r" % (name, msgs))
            else:
                c.check(kind == "ok" and not msgs, "%s: %s %r" % (name, kind, msgs))
        except grpc.RpcError as e:
            c.check(kind == "status" and e.code() == want, "%s: %s %s" % (name, e.code(), e.details()))


def rest_cases(c, small_only=False):
    for url, body, want in REST_CASES:
        if small_only and len(body) > BIG:
            continue
        req = urllib.request.Request(server.rest_url + url, data=body, method="POST")
        with urllib.request.urlopen(req, timeout=20) as resp:
            status, text = resp.status, resp.read()
        res = json.loads(text)
        c.check(status == 200 and want in res.get("error_msg", ""),
                "%s %r...: %r" % (url, body[:40], res))


def raw_http(c):
    """Requests a normal client library would not send."""
    cases = [
        (b"POST /model/echo:echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", None),
        (b"POST /model/echo:echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", None),
        (b"POST /model/echo:echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", None),
        (b"GARBAGE\r\n\r\n", None),
        (b"POST /model/echo:echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 23\r\n\r\n{\"instances\": {\"a\": 1}}", b'{"instances":[{"a":1}]}'),
        (b"POST /model/echo:echo HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 100000 + b"\r\n\r\n", None),
    ]
    for raw, want in cases:
        data = exchange(raw, want)
        if want is not None:
            c.check(want in data, "%r: %r" % (raw[:60], data[:200]))
        else:
            c.check(data == b"" or data.startswith(b"HTTP/1."), "%r answered %r" % (raw[:60], data[:80]))


def exchange(raw, want):
    """Send raw bytes; read until the server closes, `want` arrives or headers are complete."""
    data = b""
    with socket.create_connection(("127.0.0.1", server.rest_port)) as s:
        s.settimeout(10)
        try:
            s.sendall(raw)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if (want is not None and want in data) or (want is None and b"\r\n\r\n" in data):
                    break
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
    return data


def still_serving(c):
    call = channel.unary_unary(PREDICT, request_serializer=pb.PredictRequest.SerializeToString,
                               response_deserializer=pb.PredictReply.FromString)
    req = pb.PredictRequest()
    req.servable_spec.name, req.servable_spec.method_name = "add", "add_common"
    inst = req.instances.add()
    for name in ("x1", "x2"):
        t = inst.items[name]
        t.dtype = pb.MS_FLOAT32
        t.shape.dims.append(2)
        t.data = np.array([1, 2], np.float32).tobytes()
    reply = call(req, timeout=20)
    c.eq(np.frombuffer(reply.instances[0].items["y"].data, np.float32).tolist(), [2.0, 4.0],
         "gRPC still answers")
    req2 = urllib.request.Request(server.rest_url + "/model/add:add_common",
                                  data=b'{"instances": {"x1": 1.0, "x2": 2.0}}', method="POST")
    with urllib.request.urlopen(req2, timeout=20) as resp:
        c.eq(json.loads(resp.read()), {"instances": [{"y": 3.0, "version": 2}]}, "REST still answers")


def rss_kib():
    with open("/proc/%d/status" % server.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory_flat(c):
    """Replay the table (small payloads) and require flat RSS: real leaks would grow it by the
    same amount on every replay (the ASan build's LeakSanitizer checks the rest at exit)."""
    quiet = Checker()
    # warm-up: malloc arenas of gRPC's and libmicrohttpd's threads grow for ~10 replays, then
    # stay put (measured: 17.8 -> 38.5 MB, then +0.02 MB over 15 more replays)
    for _ in range(12):
        grpc_cases(quiet, True)
        rest_cases(quiet, True)
        raw_http(quiet)
    before = rss_kib()
    for _ in range(10):
        grpc_cases(quiet, True)
        rest_cases(quiet, True)
        raw_http(quiet)
    after = rss_kib()
    c.check(after - before < 2048, "RSS grew from %d to %d KiB over 10 replays" % (before, after))
    c.eq(quiet.failures, 0, "replays gave the same answers")


def main():
    global server, channel
    # REST with a pool of 2 threads here (the other tests use one epoll thread)
    with TestServer(rest="127.0.0.1:0", extra=["--rest-timeout", "2", "--rest-threads", "2"]) as s:
        server = s
        channel = grpc.insecure_channel(s.grpc_address, options=[("grpc.enable_http_proxy", 0)])
        print("%d gRPC + %d REST + raw HTTP cases" % (len(GRPC_CASES), len(REST_CASES)))
        Checker().run([grpc_cases, rest_cases, raw_http, still_serving, memory_flat], server=s)


if __name__ == "__main__":
    main()
