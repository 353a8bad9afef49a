"""The REST front end against a real test server on 127.0.0.1 (urllib, raw sockets and curl):
MindSpore's URL rules, request JSON (instances forms, scalars, nested arrays, b64 objects, dtype
inference) and their error texts, reply JSON, size limits, health endpoints, slow clients,
concurrency and shutdown with a request in flight."""

import base64
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np

from server_harness import Checker, TestServer

server = None
ONES = [[1.0, 2.0], [3.0, 4.0]]


def post(path, body, srv=None, method="POST"):
    """Returns (status, content type, parsed JSON body)."""
    srv = srv or server
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(srv.rest_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.headers.get("Content-Type"), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), json.loads(e.read())


def body_of(path, body, srv=None):
    return post(path, body, srv)[2]


def err(path, body):
    return body_of(path, body).get("error_msg")


def add_success(c):
    status, ctype, res = post("/model/add:add_common",
                              {"instances": [{"x1": ONES, "x2": ONES}, {"x1": 1.5, "x2": 2.25}]})
    c.eq((status, ctype), (200, "application/json"), "status and content type")
    c.eq(res, {"instances": [{"y": [[2.0, 4.0], [6.0, 8.0]], "version": 2},
                             {"y": 3.75, "version": 2}]}, "reply")
    c.eq(body_of("/model/add/version/1:add_common", {"instances": {"x1": 1.5, "x2": 1.0}}),
         {"instances": [{"y": 2.5, "version": 1}]}, "version 1, instances as one object")
    c.eq(body_of("/version/1/model/add:add_common", {"instances": {"x1": 1.5, "x2": 1.0}}),
         {"instances": [{"y": 2.5, "version": 1}]}, "version before model")
    c.eq(body_of("/model/add/version/0:add_common", {"instances": {"x1": 1.5, "x2": 1.0}}),
         {"instances": [{"y": 2.5, "version": 2}]}, "version 0 is the latest")
    res = body_of("/model/add:add_common", {"instances": {"x1": 0.1, "x2": 0.2}, "other": 1})
    c.eq(np.float32(res["instances"][0]["y"]), np.float32(0.1) + np.float32(0.2),
         "float32 arithmetic (shortest float32 text), extra top-level keys ignored")


def url_errors(c):
    inst = {"instances": {"x1": 1.0, "x2": 1.0}}
    c.eq(err("/x/:add_common", inst), "please check url, the keyword:[model] must contain.", "model")
    c.eq(err("/model/add", inst), "please check url, the keyword:[service method] must contain.",
         "method")
    c.eq(err("/model/add/version/-1:add_common", inst),
         "please check url, version number range failed, request version number -1", "negative")
    c.eq(err("/model/add/version/4294967295:add_common", inst),
         "please check url, version number range failed, request version number 4294967295",
         "too large")
    c.eq(err("/model/add/version/abc:add_common", inst),
         "please check url, the keyword:[version] value invalid, request version number abc",
         "not a number")
    c.eq(err("/model/add/version/3:add_common", inst),
         "Request servable(add) method(add_common) version(3), servable is not available",
         "unknown version")
    c.eq(err("/model/nope:add_common", inst),
         "Request servable(nope) method(add_common), servable is not available", "servable")
    c.eq(err("/model/add:nope", inst), "Request servable(add) method(nope), method is not available",
         "unknown method")


def http_errors(c):
    status, ctype, res = post("/model/add:add_common", b"", method="PUT")
    c.eq((status, res), (200, {"error_msg": "http message only support POST right now"}), "PUT")
    req = urllib.request.Request(server.rest_url + "/model/add:add_common")
    with urllib.request.urlopen(req, timeout=10) as resp:
        c.eq(json.loads(resp.read()), {"error_msg": "http message only support POST right now"},
             "GET")
    c.eq(err("/model/add:add_common", b""), "http message invalid", "empty body")
    c.check(err("/model/add:add_common", b"{\"instances\": [").startswith("Illegal JSON format."),
            "syntax error")
    c.check(err("/model/add:add_common", b"{\"instances\": 1} x").startswith(
        "Illegal JSON format."), "trailing garbage")
    c.check(err("/model/add:add_common", b"[" * 5000 + b"]" * 5000).startswith(
        "Illegal JSON format."), "deep nesting refused")
    # JSON syntax is checked before the URL, as in MindSpore
    c.check(err("/x", b"{").startswith("Illegal JSON format."), "JSON before URL")


def instances_errors(c):
    p = "Parser request failed, "
    u = "/model/echo:echo"
    for body, want in [
            ({"x": 1}, "key 'instances' expects to exist once, but actually 0 times"),
            (b'{"instances": {"a": 1}, "instances": {"a": 2}}',
             "key 'instances' expects to exist once, but actually 2 times"),
            ({"instances": []}, "instances value is array type, but no value"),
            ({"instances": [1, 2]}, "instances no key mode is not supported"),
            ({"instances": 1}, "instances no key mode is not supported"),
            ({"instances": {}}, "json object, value is empty"),
            ({"instances": [{"a": 1}, {}]}, "json array, instance is object type, but no value"),
            ({"instances": [{"a": 1}, 2]}, "json array, instance is not object type"),
            ({"instances": {"": 1}}, "string key is empty"),
            ({"instances": {"a": None}}, "json value is null, it is not supported"),
            ({"instances": {"a": [1, 2.0]}}, "json array, elements type is not equal"),
            ({"instances": {"a": [1, True]}}, "json array, elements type is not equal"),
            ({"instances": {"a": [[1, 2], [3]]}},
             "invalid json array: json size is 1, the dim 1 expected to be 2"),
            ({"instances": {"a": [[1, 2], 3]}}, "invalid json array: json type is not array"),
            ({"instances": {"a": [[1], [[2]]]}},
             "json array, data should be number, bool, string or bytes"),
            ({"instances": {"a": []}}, "json array, shape is empty"),
            ({"instances": {"a": [[]]}}, "json array, data type is unknown"),
            ({"instances": {"a": [None]}}, "json array, data type is unknown"),
            ({"instances": {"a": ["a", "b"]}}, "json array, string or bytes type only support one item"),
            ({"instances": {"a": 4294967296}}, "json value 4294967296 is out of the range of int32"),
    ]:
        c.eq(err(u, body), p + want, want)
    c.eq(err(u, {"instances": {"a": [["abc"]]}}),
         "Instances input a check failed, detail: Instance tensor check failed: bytes or string "
         "type input  shape can only be (1,) or empty, but given shape is [1, 1]", "[[str]]")


def b64_errors(c):
    p = "Parser request failed, "
    u = "/model/echo:echo"
    b = base64.b64encode(np.ones(3, np.float32).tobytes()).decode()
    for obj, want in [
            ({"b64": b, "type": "fp32", "shape": [4]},
             "size is not matched, decode base64 size:12; Given info: type:float32; type size:4; "
             "element nums:4"),
            ({"b64": "abc"}, "'abc' is illegal b64 encode string"),
            ({"b64": "ab$="}, "'ab$=' is illegal b64 encode string"),
            ({"b64": 12}, "get scalar data failed, type is string, but json is not string type"),
            ({"b64": b, "type": "int3"}, "json object, specified type:'int3' is illegal"),
            ({"b64": b, "type": 1}, "json object, key is 'type', value should be string type"),
            ({"b64": b, "shape": 3}, "json object, key is 'shape', value should be array type"),
            ({"b64": b, "shape": [-1]},
             "json object, key is 'shape', array value should be unsigned integer"),
            ({"b64": b, "shape": [1.5]},
             "json object, key is 'shape', array value should be unsigned integer"),
            ({"b64": b, "shape": ["1"]},
             "json object, key is 'shape', array value should be unsigned integer"),
            ({"b64": b, "shape": [0, 2]}, "json object, key is 'shape', invalid shape value [0,2]"),
            ({"b64": b, "x": 1}, "json object, key is not ['b64', 'type', 'shape'], fail key:x"),
            ({"b64": b, "type": "fp32", "shape": [3], "x": 1},
             "json object, items size is more than 3, only support specified ['b64', 'type', "
             "'shape']"),
            ({"type": "fp32"}, "json object, 'b64' should be specified only one time"),
            ({}, "json object, value is empty"),
            ({"b64": b, "type": "str", "shape": [2]},
             "json object, only support scalar when data type is string or bytes, please check "
             "'type' or 'shape'"),
    ]:
        c.eq(err(u, {"instances": {"a": obj}}), p + want, want)
    c.eq(err(u, {"instances": {"a": [{"b64": b, "type": "fp32"}]}}),
         p + "json array, item is object type, object only support string or bytes type",
         "array of numeric objects")
    c.eq(err(u, b'{"instances": {"a": {"b64": "AA==", "b64": "AA=="}}}'),
         p + "json object, 'b64' should be specified only one time", "two b64 keys")


def dtype_inference(c):
    f32 = base64.b64encode(np.ones((2, 2), np.float32).tobytes()).decode()
    f16 = base64.b64encode(np.ones(3, np.float16).tobytes()).decode()
    res = body_of("/model/describe:describe", {"instances": {
        "int": 1, "float": 1.0, "exp": 1e3, "bool": True, "str": "abc", "arr": [[1, 2], [3, 4]],
        "farr": [[1.5], [2.0]], "barr": [True, False], "sarr": ["x"],
        "bytes": {"b64": "AAE="}, "f32": {"b64": f32, "type": "fp32", "shape": [2, 2]},
        "f16": {"b64": f16, "type": "float16", "shape": [3]}, "s": {"b64": "YWJj", "type": "str"},
        "barr2": [{"b64": "AAE="}], "u64": {"b64": base64.b64encode(b"\0" * 8).decode(),
                                           "type": "uint64"}}})
    c.eq(res, {"instances": [{
        "int": "int32 []", "float": "float32 []", "exp": "float32 []", "bool": "bool []",
        "str": "str []", "arr": "int32 [2,2]", "farr": "float32 [2,1]", "barr": "bool [2]",
        "sarr": "str [1]", "bytes": "bytes []", "f32": "float32 [2,2]", "f16": "float16 [3]",
        "s": "str []", "barr2": "bytes [1]", "u64": "uint64 []"}]}, "dtype inference")


def round_trip_every_dtype(c):
    names = {np.bool_: "bool", np.int8: "int8", np.uint8: "uint8", np.int16: "int16",
             np.uint16: "uint16", np.int32: "int32", np.uint32: "uint32", np.int64: "int64",
             np.uint64: "uint64", np.float16: "fp16", np.float32: "fp32", np.float64: "fp64"}
    for dt, name in names.items():
        for shape in [(), (3,), (2, 3)]:
            n = int(np.prod(shape))
            arr = (np.arange(n) % 2 == 1) if dt is np.bool_ else (np.arange(n) * 1.5 + 1).astype(dt)
            arr = arr.astype(dt).reshape(shape)
            obj = {"b64": base64.b64encode(arr.tobytes()).decode(), "type": name,
                   "shape": list(shape)}
            res = body_of("/model/echo:echo", {"instances": [{"v": obj}]})
            want = arr.astype(np.float64).tolist() if dt in (np.float16, np.float32, np.float64) \
                else arr.tolist()
            got = res["instances"][0]["v"] if "instances" in res else res
            c.eq(got, want, "%s %s" % (name, shape))
    res = body_of("/model/echo:echo", {"instances": [
        {"s": "héllo \"q\" \\ \n", "b": {"b64": base64.b64encode(b"\x00\xff").decode()},
         "e": {"b64": ""}}]})
    c.eq(res, {"instances": [{"s": "héllo \"q\" \\ \n", "b": {"b64": "AP8="}, "e": {"b64": ""}}]},
         "str and bytes out")


def mixed_and_collapsed(c):
    res = body_of("/model/add:add_common", {"instances": [
        {"x1": ONES, "x2": ONES}, {"x1": [[1, 2], [3, 4]], "x2": ONES}, {"x1": 1.0, "x2": 2.0}]})
    c.eq(res, {"instances": [
        {"y": [[2.0, 4.0], [6.0, 8.0]], "version": 2},
        {"error_msg": "Given model input 0 data type kMSI_Int32 not match the data type "
                      "kMSI_Float32 defined in model"},
        {"y": 3.0, "version": 2}]}, "mixed")
    res = body_of("/model/add:add_common", {"instances": [{"x1": 1, "x2": 1.0}] * 2})
    c.eq(res, {"error_msg": "Given model input 0 data type kMSI_Int32 not match the data type "
                            "kMSI_Float32 defined in model"}, "all failed alike: one error")
    c.eq(err("/model/add:add_common", {"instances": {"x1": 1.0}}),
         "Cannot find input x2 in instance input , servable add, method add_common", "missing")
    c.eq(body_of("/model/add:add_common", {"instances": {"x1": 1.0, "x2": 1.0, "x3": "extra"}}),
         {"instances": [{"y": 2.0, "version": 2}]}, "extra input ignored")
    c.eq(err("/model/error:fail", {"instances": {"a": 1}}), "fixed failure", "fixed")
    c.eq(err("/model/error:empty", {"instances": {"a": 1}}), "Predict failed", "empty message")


def health(c):
    for path, want in [("/health/live", {"status": "live"}), ("/health/ready", {"status": "ready"})]:
        with urllib.request.urlopen(server.rest_url + path, timeout=10) as resp:
            c.eq((resp.status, json.loads(resp.read())), (200, want), path)
    body_of("/model/control:set_ready", {"instances": {"value": False}})
    try:
        urllib.request.urlopen(server.rest_url + "/health/ready", timeout=10)
        c.check(False, "ready while not ready")
    except urllib.error.HTTPError as e:
        c.eq((e.code, json.loads(e.read())), (503, {"status": "not ready"}), "not ready")
    with urllib.request.urlopen(server.rest_url + "/health/live", timeout=10) as resp:
        c.eq(resp.status, 200, "live while not ready")
    body_of("/model/control:set_ready", {"instances": {"value": True}})
    with urllib.request.urlopen(server.rest_url + "/health/ready", timeout=10) as resp:
        c.eq(resp.status, 200, "ready again")


def with_curl(c):
    curl = shutil.which("curl")
    if not c.check(curl is not None, "curl is installed"):
        return
    out = subprocess.run([curl, "-s", "--noproxy", "*", "-X", "POST",
                          server.rest_url + "/model/add:add_common", "-d",
                          '{"instances":[{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[1.0,2.0],[3.0,4.0]]}]}'],
                         capture_output=True, text=True, timeout=20)
    c.eq(json.loads(out.stdout), {"instances": [{"y": [[2.0, 4.0], [6.0, 8.0]], "version": 2}]},
         "curl")


def concurrency_and_suspend(c):
    bad = []

    def worker(k):
        for i in range(30):
            v = float(k * 100 + i)
            res = body_of("/model/add:add_common", {"instances": {"x1": [v], "x2": [v]}})
            if res != {"instances": [{"y": [2 * v], "version": 2}]}:
                bad.append(res)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.eq(bad, [], "8 threads x 30 requests")
    # slow predictions do not hold the (single) HTTP thread: 4 concurrent 300 ms calls, and a
    # fast call made after them finishes before any of them (order, not timing thresholds, so a
    # busy machine does not make this flaky)
    done_at = []
    lock = threading.Lock()

    def call(path, body):
        res = body_of(path, body)
        with lock:
            done_at.append((time.monotonic(), path, res))

    t0 = time.monotonic()
    threads = [threading.Thread(target=call, args=("/model/slow:sleep", {"instances": {"a": 1}}))
               for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    call("/model/add:add_common", {"instances": {"x1": 1.0, "x2": 1.0}})
    for t in threads:
        t.join()
    c.eq([r for _, p, r in done_at if "slow" in p], [{"instances": [{"a": 1}]}] * 4, "slow results")
    c.eq(done_at[0][1], "/model/add:add_common", "the fast call finished first")
    elapsed = max(t for t, _, _ in done_at) - t0
    c.check(elapsed < 1.15, "4 x 300 ms calls overlap (%.3f s, sequential would be 1.2)" % elapsed)


def limits_and_slow_clients(c):
    with TestServer(grpc=None, rest="127.0.0.1:0",
                    extra=["--rest-max-mb", "1", "--rest-timeout", "1"]) as small:
        big = {"instances": {"x1": np.ones((1024, 1024)).tolist()}}
        c.eq(body_of("/model/add:add_common", big, small),
             {"error_msg": "http message is bigger than 1048576"}, "Content-Length over limit")
        # chunked upload crossing the limit
        conn = http.client.HTTPConnection("127.0.0.1", small.rest_port, timeout=20)
        chunks = (b"x" * 65536 for _ in range(20))
        conn.request("POST", "/model/add:add_common", body=chunks, encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        c.eq(json.loads(conn.getresponse().read()),
             {"error_msg": "http message is bigger than 1048576"}, "chunked over limit")
        conn.close()
        c.eq(body_of("/model/add:add_common", {"instances": {"x1": 1.0, "x2": 1.0}}, small),
             {"instances": [{"y": 2.0, "version": 2}]}, "serving after oversize requests")
        # a client that never finishes its body is cut off after the timeout
        s = socket.create_connection(("127.0.0.1", small.rest_port))
        s.sendall(b"POST /model/add:add_common HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        t0 = time.time()
        c.eq(body_of("/model/add:add_common", {"instances": {"x1": 1.0, "x2": 1.0}}, small),
             {"instances": [{"y": 2.0, "version": 2}]}, "served while a slow client waits")
        c.check(time.time() - t0 < 0.5, "not blocked by the slow client")
        s.settimeout(10)
        try:
            data = s.recv(100)
        except (ConnectionResetError, socket.timeout):
            data = b""
        c.eq(data, b"", "slow client disconnected")
        c.check(time.time() - t0 < 5, "within the timeout (%.1f s)" % (time.time() - t0))
        s.close()
    for args, text in [(["--rest", "unix:/tmp/x.sock"], "does not support binding to unix domain"),
                       (["--rest-max-mb", "513"], "outside [1, 512]")]:
        try:
            extra = args if args[0] != "--rest" else []
            rest = args[1] if args[0] == "--rest" else "127.0.0.1:0"
            with TestServer(grpc=None, rest=rest, extra=extra):
                c.check(False, "started with " + str(args))
        except RuntimeError as e:
            c.check(text in str(e), "%s: %s" % (text, e))


def shutdown_answers_in_flight(c):
    srv = TestServer(grpc=None, rest="127.0.0.1:0")
    try:
        results = []
        t = threading.Thread(target=lambda: results.append(
            body_of("/model/slow:sleep", {"instances": {"a": 1}}, srv)))
        t.start()
        time.sleep(0.15)  # well inside the 300 ms the call takes
        c.eq(srv.stop(), 0, "clean exit")
        t.join()
        c.eq(results, [{"instances": [{"a": 1}]}], "in-flight request answered")
    finally:
        srv.stop()


def main():
    global server
    with TestServer(grpc=None, rest="127.0.0.1:0") as s:
        server = s
        Checker().run([add_success, url_errors, http_errors, instances_errors, b64_errors,
                       dtype_inference, round_trip_every_dtype, mixed_and_collapsed, health,
                       with_curl, concurrency_and_suspend, limits_and_slow_clients,
                       shutdown_answers_in_flight], server=s)


if __name__ == "__main__":
    main()
